//! The places the bench's children keep their data (the database it
//! creates and removes, a Redis prefix) and its scenarios' gateways. The
//! children themselves (`recarga latcom-sim`, `recarga serve`, the operator
//! CLI) come from `recarga_testkit`, the harness the tests use too: cleared
//! environment, private working directory, loopback only, killed and reaped
//! on drop, also on an error or a panic.

use anyhow::{Context, Result, bail};
use recarga_testkit::{CliRun, Proc, Sim, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a SIGTERM'd child may take to drain before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(20);

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
pub fn with_database(url: &str, db: &str) -> Result<String> {
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
        let mut cmd = recarga_testkit::command(bin, &self.work);
        cmd.env("RECARGA_DATA_DIR", &self.data_dir);
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

/// `recarga <args>` against the backend, ready to run.
fn cli_command(bin: &Path, backend: &Backend, args: &[&str]) -> Command {
    let mut cmd = backend.command(bin);
    cmd.args(args).env("RECARGA_LOG", "warn");
    cmd
}

/// Runs `recarga <args>` against the backend; killed if it outlives `within`.
pub async fn cli(bin: &Path, backend: &Backend, args: &[&str], within: Duration) -> Result<CliRun> {
    recarga_testkit::run(cli_command(bin, backend, args), within).await
}

/// [`cli`] as a task, to run several at once.
pub fn cli_task(
    bin: &Path,
    backend: &Backend,
    args: &[&str],
    within: Duration,
) -> tokio::task::JoinHandle<Result<CliRun>> {
    tokio::spawn(recarga_testkit::run(cli_command(bin, backend, args), within))
}

/// `recarga latcom-sim` on a loopback port, answering in 1–5 ms until told otherwise.
pub async fn start_sim(bin: &Path, backend: &Backend) -> Result<Sim> {
    let mut cmd = backend.command(bin);
    cmd.env("RECARGA_LOG", "warn");
    Sim::start(cmd, &backend.work, "1-5", None).await
}

/// Sets the simulator's answer latency (`POST /__sim/config`).
pub async fn set_latency(sim: &Sim, min_ms: u64, max_ms: u64) -> Result<()> {
    sim.configure(&serde_json::json!({"latency_min_ms": min_ms, "latency_max_ms": max_ms}))
        .await
}

/// SIGTERM (a graceful drain), then SIGKILL (on drop) if it takes too long.
pub async fn stop(mut proc: Proc) {
    if proc.stop(STOP_WITHIN).await.is_none() {
        eprintln!("warning: {} did not stop within {STOP_WITHIN:?}; killing it", proc.name);
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
            .env("RECARGA_ENV", "development")
            .env("ADMIN_KEY", admin_key)
            .env("RECARGA_DEMO", "false")
            .envs(sim.gateway_env())
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
        let gw = recarga_testkit::Gateway::start(cmd, &backend.work, tag, port, http).await?;
        Ok(Gateway {
            proc: gw.proc,
            base: gw.base,
        })
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
