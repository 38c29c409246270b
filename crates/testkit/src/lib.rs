//! The child-process harness shared by the integration tests and the
//! benchmark: the real `recarga` binary as child processes on loopback ports.
//!
//! Every child runs with a cleared environment (only what the caller sets
//! reaches it, so nothing leaks in from the shell), in a working directory of
//! the caller's (no `.env` is picked up), with its output in files next to
//! it, and is killed (SIGKILL) and reaped when its [`Proc`] is dropped, also
//! when a test panics or the bench fails. Every wait is bounded.
//!
//! | item | what |
//! |---|---|
//! | [`command`] | `recarga` with a cleared environment, ready for arguments |
//! | [`Proc`] | a running child: pid, output, signals, bounded waits, peak RSS |
//! | [`run`] / [`CliRun`] | an operator command run to completion |
//! | [`Sim`] | `recarga latcom-sim`, its journal and settings |
//! | [`Gateway`] | `recarga serve`, ready when `/health` answers 200 |
//! | [`free_port`] | a loopback port free at the time of asking |
//! | [`legacy`] | a database in the old system's schema, with its traps |

pub mod legacy;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The simulator's credentials (its defaults), for gateways that sell through it.
pub const SIM_USER: &str = "sim-user";
pub const SIM_PASS: &str = "sim-pass";
pub const SIM_DIST_API: &str = "sim-dist-api";
pub const SIM_UID: &str = "sim-uid";
/// Longest a child may take to answer after it was started (debug build, loaded machine).
pub const READY_WITHIN: Duration = Duration::from_secs(60);
/// Pause between two probes of a wait.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// A loopback port free at the time of asking.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `bin` with a cleared environment, run in `work`: only what the caller sets
/// next reaches it.
pub fn command(bin: &Path, work: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .current_dir(work)
        .env("RECARGA_LOG", "info,sqlx=warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// A child process, killed (SIGKILL) and reaped on drop; its output goes to files.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr in `work/<name>.std{out,err}`.
    pub fn spawn(mut cmd: Command, work: &Path, name: &str) -> Result<Proc> {
        let stdout = work.join(format!("{name}.stdout"));
        let stderr = work.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).context("stdout file")?)
            .stderr(std::fs::File::create(&stderr).context("stderr file")?);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `lines` lines of stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// stdout and the tail of stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            self.stdout_text(),
            self.name,
            self.stderr_tail(80)
        )
    }

    /// SIGKILL: the process dies wherever it is, with calls in flight.
    pub fn sigkill(&mut self) -> Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait().context("reap")?;
        Ok(())
    }

    /// SIGTERM (a graceful drain); does not wait.
    pub fn sigterm(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.name);
        }
        Ok(())
    }

    /// Waits for the process to exit by itself; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// SIGTERM, then waits up to `within` for the exit (SIGKILL on drop otherwise).
    pub async fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let _ = self.sigterm();
        self.wait_exit(within).await
    }

    /// Polls `url` until it answers `want` (any status when `None`) within
    /// [`READY_WITHIN`]; fails early if the process exits first.
    pub async fn wait_http(&mut self, http: &reqwest::Client, url: &str, want: Option<u16>) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.exited() {
                bail!("{} exited before it was ready ({status}):\n{}", self.name, self.logs());
            }
            if let Ok(res) = http.get(url).timeout(Duration::from_secs(2)).send().await
                && want.is_none_or(|w| res.status().as_u16() == w)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not answering {url} within {READY_WITHIN:?}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident set size (`VmHWM`) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
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

/// What an operator command did.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl CliRun {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` to completion within `within`, capturing its output; killed if it outlives it.
pub async fn run(mut cmd: Command, within: Duration) -> Result<CliRun> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .with_context(|| format!("recarga {what} did not finish within {within:?}"))?
        .with_context(|| format!("cannot run recarga {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(CliRun {
        code: out.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A standalone Latcom simulator (`recarga latcom-sim`): its journal, the
/// ground truth of what was submitted and delivered, survives gateway crashes.
pub struct Sim {
    pub proc: Proc,
    pub base: String,
    http: reqwest::Client,
}

impl Sim {
    /// Starts `cmd` (a [`command`] the caller may have given more settings)
    /// as the simulator on a free port with this answer latency (`MIN-MAX`
    /// ms) and, optionally, more settings (`LATCOM_SIM_CONFIG`); waits until
    /// it answers.
    pub async fn start(mut cmd: Command, work: &Path, latency_ms: &str, config: Option<&Value>) -> Result<Sim> {
        let port = free_port()?;
        cmd.args([
            "latcom-sim",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--latency-ms",
            latency_ms,
        ]);
        if let Some(config) = config {
            cmd.env("LATCOM_SIM_CONFIG", config.to_string());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("http client")?;
        let mut sim = Sim {
            proc: Proc::spawn(cmd, work, "latcom-sim")?,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        let journal = format!("{}/__sim/journal", sim.base);
        sim.proc.wait_http(&sim.http, &journal, Some(200)).await?;
        Ok(sim)
    }

    /// `GET /__sim/journal`: `{"logins","entries":{dist_transid:{…}},"totals"}`.
    pub async fn journal(&self) -> Result<Value> {
        let res = self
            .http
            .get(format!("{}/__sim/journal", self.base))
            .send()
            .await
            .context("GET /__sim/journal")?;
        if !res.status().is_success() {
            bail!("GET /__sim/journal: HTTP {}", res.status());
        }
        res.json().await.context("the journal is not JSON")
    }

    /// `POST /__sim/config` with a partial settings object.
    pub async fn configure(&self, patch: &Value) -> Result<()> {
        let res = self
            .http
            .post(format!("{}/__sim/config", self.base))
            .json(patch)
            .send()
            .await
            .context("POST /__sim/config")?;
        if !res.status().is_success() {
            bail!("the simulator refused {patch}: HTTP {}", res.status());
        }
        Ok(())
    }

    /// The settings a gateway needs to sell through this simulator.
    pub fn gateway_env(&self) -> [(&'static str, String); 6] {
        [
            ("RECARGA_UPSTREAM", "latcom".to_string()),
            ("LATCOM_BASE_URL", self.base.clone()),
            ("LATCOM_USERNAME", SIM_USER.to_string()),
            ("LATCOM_PASSWORD", SIM_PASS.to_string()),
            ("LATCOM_DIST_API_KEY", SIM_DIST_API.to_string()),
            ("LATCOM_USER_UID", SIM_UID.to_string()),
        ]
    }
}

/// `recarga serve` on a loopback port.
pub struct Gateway {
    pub proc: Proc,
    pub base: String,
}

impl Gateway {
    /// Starts `cmd` (`serve` or `worker` with the caller's settings) listening
    /// on `port`, and waits until `/health` answers 200.
    pub async fn start(
        mut cmd: Command,
        work: &Path,
        name: &str,
        port: u16,
        http: &reqwest::Client,
    ) -> Result<Gateway> {
        cmd.env("PORT", port.to_string()).env("RECARGA_BIND", "127.0.0.1");
        let mut proc = Proc::spawn(cmd, work, name)?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_http(http, &format!("{base}/health"), Some(200)).await?;
        Ok(Gateway { proc, base })
    }
}
