//! The load generator: a bounded closed loop. `C` tasks share one HTTP client;
//! each sends a request, waits for the whole answer, records its latency, and
//! sends the next, until the deadline passes or the request budget is spent.
//! Nothing is sent open-loop, so the offered load can never run away: the
//! gateway's own latency paces it.

use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How one request ended.
pub enum Verdict {
    /// The answer the scenario wanted (202 for an async top-up, 200 otherwise).
    Ok,
    /// A sync top-up answered 202: accepted, but not final within the wait.
    Open,
    /// Any other HTTP answer, by a short label (`"429 rate_limited"`).
    Http(String),
    /// No HTTP answer at all (connection refused, reset, client timeout).
    Transport(String),
}

/// What a closed loop measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub open: u64,
    pub http_errors: u64,
    pub transport_errors: u64,
    /// Error labels and how often each was seen.
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency of every `Ok` request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn errors(&self) -> u64 {
        self.http_errors + self.transport_errors
    }

    /// `Ok` answers per second over the whole run.
    pub fn ok_per_s(&self) -> f64 {
        per_s(self.ok, self.elapsed)
    }

    pub fn latency(&mut self) -> Latency {
        Latency::of(&mut self.latencies_us)
    }
}

pub fn per_s(count: u64, over: Duration) -> f64 {
    let s = over.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// Sorts the samples and reads the nearest-rank percentiles.
    pub fn of(samples_us: &mut [u64]) -> Latency {
        if samples_us.is_empty() {
            return Latency::default();
        }
        samples_us.sort_unstable();
        let n = samples_us.len();
        let rank = |p: f64| {
            let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples_us[idx] as f64 / 1000.0
        };
        let sum: u64 = samples_us.iter().sum();
        Latency {
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: samples_us[n - 1] as f64 / 1000.0,
            mean_ms: sum as f64 / n as f64 / 1000.0,
        }
    }
}

/// Runs `concurrency` tasks, each calling `request(task, seq)` in a loop until
/// `until` passes or, with `budget`, that many requests have been started in
/// total. Returns when every task has received its last answer.
pub async fn closed_loop<F, Fut>(concurrency: usize, until: Instant, budget: Option<u64>, request: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Verdict> + Send + 'static,
{
    let request = Arc::new(request);
    let started = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..concurrency.max(1) {
        let request = Arc::clone(&request);
        let started = Arc::clone(&started);
        tasks.spawn(async move {
            let mut mine = LoadResult::default();
            let mut seq = 0u64;
            while Instant::now() < until {
                if let Some(max) = budget
                    && started.fetch_add(1, Ordering::Relaxed) >= max
                {
                    break;
                }
                let t0 = Instant::now();
                let verdict = request(task, seq).await;
                let took = t0.elapsed();
                seq += 1;
                match verdict {
                    Verdict::Ok => {
                        mine.ok += 1;
                        mine.latencies_us.push(took.as_micros() as u64);
                    }
                    Verdict::Open => mine.open += 1,
                    Verdict::Http(kind) => {
                        mine.http_errors += 1;
                        *mine.error_kinds.entry(kind).or_default() += 1;
                    }
                    Verdict::Transport(kind) => {
                        mine.transport_errors += 1;
                        *mine.error_kinds.entry(kind).or_default() += 1;
                    }
                }
            }
            mine
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => {
                total.ok += part.ok;
                total.open += part.open;
                total.http_errors += part.http_errors;
                total.transport_errors += part.transport_errors;
                for (k, v) in part.error_kinds {
                    *total.error_kinds.entry(k).or_default() += v;
                }
                total.latencies_us.extend(part.latencies_us);
            }
            Err(e) => {
                total.transport_errors += 1;
                *total.error_kinds.entry(format!("task failed: {e}")).or_default() += 1;
            }
        }
    }
    total.elapsed = begin.elapsed();
    total
}

/// Checks the body of an `ok` answer; `Err` is the label of the error it is.
pub type BodyCheck = fn(&[u8]) -> Result<(), String>;

/// Reads a response to the end and classifies it: `ok` (passing `check`) is
/// `Ok`, `open` is `Open`, anything else is an HTTP error labelled with its
/// status and the body's `code`.
pub async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    ok: reqwest::StatusCode,
    open: Option<reqwest::StatusCode>,
    check: Option<BodyCheck>,
) -> Verdict {
    let res = match sent {
        Ok(res) => res,
        Err(e) => return Verdict::Transport(transport_label(&e)),
    };
    let status = res.status();
    let body = match res.bytes().await {
        Ok(b) => b,
        Err(e) => return Verdict::Transport(transport_label(&e)),
    };
    if status == ok {
        return match check.map(|c| c(&body)) {
            Some(Err(label)) => Verdict::Http(label),
            _ => Verdict::Ok,
        };
    }
    if Some(status) == open {
        return Verdict::Open;
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    Verdict::Http(format!("HTTP {} {code}", status.as_u16()).trim_end().to_string())
}

pub fn transport_label(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "client timeout".into()
    } else if e.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p95_ms, 95.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(&mut []).p99_ms, 0.0);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_requests() {
        let r = closed_loop(8, Instant::now() + Duration::from_secs(10), Some(50), |_, _| async {
            Verdict::Ok
        })
        .await;
        assert_eq!(r.ok, 50);
        assert!(r.elapsed < Duration::from_secs(5));
    }
}
