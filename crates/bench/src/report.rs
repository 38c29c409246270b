//! What a run reports: the machine, the engine, every scenario's settings,
//! figures, target and correctness checks; as a table for people and as JSON.

use serde::Serialize;
use serde_json::{Map, Value};

/// The machine the run happened on (read from /proc).
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started: anything else
    /// busy on the machine (a compiler, say) lowers every figure.
    pub loadavg_at_start: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| format!("Linux {}", s.trim()))
                .unwrap_or_else(|_| std::env::consts::OS.to_string()),
            loadavg_at_start: loadavg(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One correctness check of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// A target from the issue and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub text: String,
    pub met: bool,
    pub measured: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: &'static str,
    /// What the scenario did (concurrency, duration, latency, gateway settings).
    pub settings: Map<String, Value>,
    /// What it measured.
    pub figures: Map<String, Value>,
    pub target: Option<Target>,
    pub checks: Vec<Check>,
    /// Every check passed.
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub started_at: String,
    pub smoke: bool,
    pub machine: Machine,
    /// `sqlite`, `postgres` or `postgres+redis`.
    pub engine: String,
    pub database: String,
    pub redis: Option<String>,
    pub gateway_version: String,
    pub recarga_binary: String,
    pub scenarios: Vec<ScenarioReport>,
    pub all_correct: bool,
}

/// `12345.6` → `12,346`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn num(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64).unwrap_or(0.0)
}

fn ms(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        out.push_str(&format!(
            "recarga-bench{} — {}\n",
            if self.smoke {
                " (smoke: tiny sizes, figures meaningless)"
            } else {
                ""
            },
            self.started_at
        ));
        out.push_str(&format!(
            "machine : {} CPUs ({}), {:.1} GiB RAM, {}, load average at start {}\n",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel, m.loadavg_at_start
        ));
        out.push_str(&format!(
            "engine  : {} — {}{}\n",
            self.engine,
            self.database,
            self.redis.as_ref().map(|r| format!(" + {r}")).unwrap_or_default()
        ));
        out.push_str(&format!(
            "gateway : recarga {} ({}), load generator on the same machine\n\n",
            self.gateway_version, self.recarga_binary
        ));
        let header = format!(
            "{:<14} {:>6} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}  {:<7}",
            "scenario", "C", "ok", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "RSS MiB", "correct"
        );
        out.push_str(&header);
        out.push('\n');
        out.push_str(&"-".repeat(header.chars().count()));
        out.push('\n');
        for s in &self.scenarios {
            let f = &s.figures;
            out.push_str(&format!(
                "{:<14} {:>6} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}  {:<7}\n",
                s.name,
                thousands(num(s.settings.get("concurrency"))),
                thousands(num(f.get("ok"))),
                thousands(num(f.get("rate_per_s"))),
                ms(f.get("p50_ms")),
                ms(f.get("p95_ms")),
                ms(f.get("p99_ms")),
                ms(f.get("max_ms")),
                thousands(num(f.get("errors"))),
                thousands(num(f.get("gateway_peak_rss_mib"))),
                if s.correct { "yes" } else { "NO" },
            ));
        }
        out.push('\n');
        for s in &self.scenarios {
            out.push_str(&format!("[{}] {}\n", s.name, describe(&s.settings)));
            out.push_str(&format!("    figures: {}\n", describe(&s.figures)));
            if let Some(t) = &s.target {
                out.push_str(&format!(
                    "    target : {} — {} (measured {})\n",
                    t.text,
                    if t.met { "MET" } else { "MISSED" },
                    t.measured
                ));
            }
            for c in &s.checks {
                out.push_str(&format!(
                    "    check  : {} {} — {}\n",
                    if c.ok { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                ));
            }
        }
        out.push_str(&format!(
            "\nresult  : {}\n",
            if self.all_correct {
                "every scenario left correct books (audit clean, journal agrees)"
            } else {
                "INCORRECT: at least one check failed (see above)"
            }
        ));
        out
    }
}

/// `k=v, k=v` for a settings or figures map.
pub fn describe(map: &Map<String, Value>) -> String {
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            Value::Number(n) => match n.as_f64() {
                Some(x) if n.is_f64() => format!("{k}={}", trim_float(x)),
                _ => format!("{k}={n}"),
            },
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn trim_float(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
