//! Child processes and the places they keep their data: the database the
//! bench creates (and removes), `recarga latcom-sim`, `recarga serve` and the
//! operator CLI. Every child runs with a cleared environment in a private
//! working directory (no `.env` is picked up), listens on 127.0.0.1 only, and
//! is killed and reaped when its guard is dropped, also on an error or a panic.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The simulator's credentials (its defaults), handed to the gateway.
pub const SIM_USER: &str = "sim-user";
pub const SIM_PASS: &str = "sim-pass";
pub const SIM_DIST_API: &str = "sim-dist-api";
pub const SIM_UID: &str = "sim-uid";

/// Longest a child may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd child may take to drain before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// A free loopback port (bound and released; a tiny race is acceptable here).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Refuses any URL whose host is not the loopback interface.
pub fn require_loopback(what: &str, url: &str) -> Result<()> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        Ok(())
    } else {
        bail!(
            "{what} must point at the loopback interface (127.0.0.1), not {host:?}: the bench never leaves this machine"
        )
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .with_context(|| format!("{url:?} is not a URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Runs a short helper command (psql, redis-cli) and returns its stdout.
fn helper(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {:?} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The data of one bench run: a fresh SQLite directory or a fresh PostgreSQL
/// database, and optionally a private Redis key prefix. Dropping it removes
/// all of them (the database with `DROP DATABASE … WITH (FORCE)`).
pub struct Backend {
    pub work: PathBuf,
    pub data_dir: PathBuf,
    /// `DATABASE_URL` for the children; `None` is embedded SQLite under `data_dir`.
    pub db_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    /// Server version text, for the report.
    pub db_version: String,
    pub redis_version: Option<String>,
    pg_admin: Option<(String, String)>,
}

impl Backend {
    pub fn create(postgres_url: Option<&str>, redis_url: Option<&str>) -> Result<Backend> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let work = std::env::temp_dir().join(format!("recarga-bench-{}", &run[..12]));
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let mut backend = Backend {
            data_dir: work.join("data"),
            work,
            db_url: None,
            redis_url: None,
            redis_prefix: None,
            db_version: "SQLite (bundled with recarga)".into(),
            redis_version: None,
            pg_admin: None,
        };
        if let Some(url) = postgres_url {
            require_loopback("--database-url", url)?;
            let version = helper("psql", &[url, "-qAtX", "-c", "SHOW server_version"])?;
            let name = format!("recarga_bench_{}", &run[..16]);
            helper("psql", &[url, "-qAtX", "-c", &format!("CREATE DATABASE {name}")])?;
            backend.pg_admin = Some((url.to_string(), name.clone()));
            backend.db_url = Some(with_database(url, &name)?);
            backend.db_version = format!("PostgreSQL {}", version.trim());
        }
        if let Some(url) = redis_url {
            require_loopback("--redis-url", url)?;
            let info = helper("redis-cli", &["-u", url, "INFO", "server"]).unwrap_or_default();
            backend.redis_version = Some(
                info.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .map(|v| format!("Redis {}", v.trim()))
                    .unwrap_or_else(|| "Redis".into()),
            );
            backend.redis_url = Some(url.to_string());
            backend.redis_prefix = Some(format!("recarga-bench-{}:", &run[..12]));
        }
        Ok(backend)
    }

    /// `recarga <…>` with a cleared environment pointing at this backend.
    pub fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .current_dir(&self.work)
            .env("RECARGA_DATA_DIR", &self.data_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(url) = &self.db_url {
            cmd.env("DATABASE_URL", url);
        }
        if let (Some(url), Some(prefix)) = (&self.redis_url, &self.redis_prefix) {
            cmd.env("REDIS_URL", url).env("RECARGA_REDIS_PREFIX", prefix);
        }
        cmd
    }

    fn drop_redis_keys(&self) {
        let (Some(url), Some(prefix)) = (&self.redis_url, &self.redis_prefix) else {
            return;
        };
        let pattern = format!("{prefix}*");
        let Ok(keys) = helper("redis-cli", &["-u", url, "--scan", "--pattern", &pattern]) else {
            return;
        };
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        for chunk in keys.chunks(500) {
            let mut args = vec!["-u", url.as_str(), "DEL"];
            args.extend_from_slice(chunk);
            let _ = helper("redis-cli", &args);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Err(e) = helper(
                "psql",
                &[
                    admin,
                    "-qAtX",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ],
            )
        {
            eprintln!("warning: could not drop the bench database {name}: {e:#}");
        }
        self.drop_redis_keys();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// What an operator command did.
pub struct CliRun {
    pub code: Option<i32>,
    pub json: Value,
    pub stderr: String,
}

/// `recarga <args>` against the backend, ready to run.
fn cli_command(bin: &Path, backend: &Backend, args: &[&str]) -> tokio::process::Command {
    let mut cmd = backend.command(bin);
    cmd.args(args)
        .env("RECARGA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

async fn run_cli(mut cmd: tokio::process::Command, what: String, within: Duration) -> Result<CliRun> {
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .with_context(|| format!("{what} did not finish within {within:?}"))?
        .with_context(|| format!("cannot run {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(CliRun {
        code: out.status.code(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `recarga <args>` against the backend; killed if it outlives `within`.
pub async fn cli(bin: &Path, backend: &Backend, args: &[&str], within: Duration) -> Result<CliRun> {
    run_cli(cli_command(bin, backend, args), format!("recarga {args:?}"), within).await
}

/// [`cli`] as a task, to run several at once.
pub fn cli_task(
    bin: &Path,
    backend: &Backend,
    args: &[&str],
    within: Duration,
) -> tokio::task::JoinHandle<Result<CliRun>> {
    tokio::spawn(run_cli(
        cli_command(bin, backend, args),
        format!("recarga {args:?}"),
        within,
    ))
}

/// A running child, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, work: &Path, tag: &str) -> Result<Proc> {
        let stdout = work.join(format!("{tag}.stdout"));
        let stderr = work.join(format!("{tag}.stderr"));
        cmd.stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name, child, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the child wrote to stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `url` answers 200, failing early if the child exits.
    async fn wait_ready(&mut self, http: &reqwest::Client, url: &str) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited before it was ready ({status}):\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            if let Ok(res) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && res.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer {url} within {READY_WITHIN:?}:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (a graceful drain), then SIGKILL if it takes too long.
    pub async fn stop(mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("warning: {} did not stop within {STOP_WITHIN:?}; killing it", self.name);
    }

    /// Peak resident set size (`VmHWM`) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat` (`"self"` for this process); clock ticks of 1/100 s.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `recarga latcom-sim` on a loopback port.
pub struct Sim {
    /// Held for its drop: the simulator dies with the run.
    _proc: Proc,
    pub base: String,
}

impl Sim {
    pub async fn start(bin: &Path, backend: &Backend, http: &reqwest::Client) -> Result<Sim> {
        let port = free_port()?;
        let mut cmd = backend.command(bin);
        cmd.arg("latcom-sim")
            .env("LATCOM_SIM_BIND", "127.0.0.1")
            .env("LATCOM_SIM_PORT", port.to_string())
            .env("LATCOM_SIM_LATENCY_MS", "1-5")
            .env("RECARGA_LOG", "warn");
        let mut proc = Proc::spawn("recarga latcom-sim", cmd, &backend.work, "sim")?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(http, &format!("{base}/__sim/config")).await?;
        Ok(Sim { _proc: proc, base })
    }

    /// Sets the answer latency (`POST /__sim/config`).
    pub async fn set_latency(&self, http: &reqwest::Client, min_ms: u64, max_ms: u64) -> Result<()> {
        let res = http
            .post(format!("{}/__sim/config", self.base))
            .json(&serde_json::json!({"latency_min_ms": min_ms, "latency_max_ms": max_ms}))
            .send()
            .await
            .context("POST /__sim/config")?;
        if !res.status().is_success() {
            bail!("the simulator refused its config: HTTP {}", res.status());
        }
        Ok(())
    }

    /// `GET /__sim/journal`, the ground truth of every call and delivery.
    pub async fn journal(&self, http: &reqwest::Client) -> Result<Value> {
        let res = http
            .get(format!("{}/__sim/journal", self.base))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .context("GET /__sim/journal")?;
        res.json().await.context("the journal is not JSON")
    }
}

/// The gateway settings a scenario needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewaySettings {
    pub queue_concurrency: usize,
    pub latcom_max_inflight: usize,
    pub upstream_timeout_s: u64,
    pub lease_s: u64,
    pub log: String,
}

/// `recarga serve` on a loopback port, reaching the simulator through the real
/// Latcom adapter (`RECARGA_UPSTREAM=latcom`).
pub struct Gateway {
    pub proc: Proc,
    pub base: String,
}

impl Gateway {
    pub async fn start(
        bin: &Path,
        backend: &Backend,
        sim: &Sim,
        settings: &GatewaySettings,
        admin_key: &str,
        tag: &str,
        http: &reqwest::Client,
    ) -> Result<Gateway> {
        let port = free_port()?;
        let mut cmd = backend.command(bin);
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("RECARGA_ENV", "development")
            .env("ADMIN_KEY", admin_key)
            .env("RECARGA_DEMO", "false")
            .env("RECARGA_UPSTREAM", "latcom")
            .env("LATCOM_BASE_URL", &sim.base)
            .env("LATCOM_USERNAME", SIM_USER)
            .env("LATCOM_PASSWORD", SIM_PASS)
            .env("LATCOM_DIST_API_KEY", SIM_DIST_API)
            .env("LATCOM_USER_UID", SIM_UID)
            .env("QUEUE_CONCURRENCY", settings.queue_concurrency.to_string())
            .env("LATCOM_MAX_INFLIGHT", settings.latcom_max_inflight.to_string())
            .env("RECARGA_UPSTREAM_TIMEOUT_S", settings.upstream_timeout_s.to_string())
            .env("RECARGA_LEASE_S", settings.lease_s.to_string())
            // The bench runs `recarga audit` itself after every scenario.
            .env("RECARGA_AUDIT_INTERVAL_S", "0")
            // The sync scenario drives the compatibility route far above the
            // old system's 200 top-ups a minute: measure the gateway, not that limit.
            .env("RECARGA_COMPAT_TOPUP_PER_MIN", "0")
            .env("RECARGA_COMPAT_API_PER_15MIN", "0")
            .env("RECARGA_LOG", &settings.log);
        let mut proc = Proc::spawn("recarga serve", cmd, &backend.work, tag)?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(http, &format!("{base}/health")).await?;
        Ok(Gateway { proc, base })
    }

    /// `GET /health`.
    pub async fn health(&self, http: &reqwest::Client) -> Result<Value> {
        let res = http.get(format!("{}/health", self.base)).send().await?;
        Ok(res.json().await?)
    }

    /// `GET /api/queue/stats` (operators).
    pub async fn queue(&self, http: &reqwest::Client, admin_key: &str) -> Result<Queue> {
        queue_at(http, &self.base, admin_key).await
    }
}

/// `GET {base}/api/queue/stats` with the operator key.
pub async fn queue_at(http: &reqwest::Client, base: &str, admin_key: &str) -> Result<Queue> {
    let res = http
        .get(format!("{base}/api/queue/stats"))
        .header("x-admin-key", admin_key)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .context("GET /api/queue/stats")?;
    if !res.status().is_success() {
        bail!("GET /api/queue/stats: HTTP {}", res.status());
    }
    let v: Value = res.json().await?;
    let q = &v["queue"];
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    Ok(Queue {
        waiting: n("waiting"),
        active: n("active"),
        delayed: n("delayed"),
        completed: n("completed"),
        failed: n("failed"),
        unknown: n("unknown"),
        total: n("total"),
    })
}

/// `recarga_upstream_inflight` from `GET {base}/metrics`.
pub async fn inflight_at(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("recarga_upstream_inflight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
}

/// The queue counts of `/api/queue/stats` (cumulative over the run).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Queue {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub completed: u64,
    pub failed: u64,
    pub unknown: u64,
    pub total: u64,
}

impl Queue {
    /// Top-ups not yet final nor UNKNOWN.
    pub fn open(&self) -> u64 {
        self.waiting + self.active + self.delayed
    }

    /// Top-ups that are final or UNKNOWN.
    pub fn done(&self) -> u64 {
        self.completed + self.failed + self.unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(require_loopback("x", "postgres://postgres@127.0.0.1:5432/postgres").is_ok());
        assert!(require_loopback("x", "postgres://u:p@localhost/db?sslmode=disable").is_ok());
        assert!(require_loopback("x", "redis://[::1]:6379").is_ok());
        assert!(require_loopback("x", "redis://127.0.0.1:6379/0").is_ok());
        assert!(require_loopback("x", "postgres://db.example.com:5432/postgres").is_err());
        assert!(require_loopback("x", "postgres://127.0.0.1@evil.example/postgres").is_err());
    }

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://127.0.0.1?sslmode=disable", "b1").unwrap(),
            "postgres://127.0.0.1/b1?sslmode=disable"
        );
    }
}
