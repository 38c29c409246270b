//! Prometheus metrics at `/metrics`.
//!
//! One process-wide recorder (installed on first use). Names, so dashboards
//! can rely on them:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `recarga_http_request_duration_seconds` | histogram | `route`, `method`, `status` |
//! | `recarga_topups_accepted_total` | counter | `product` |
//! | `recarga_topups_finished_total` | counter | `outcome` (success, failed, unknown, retry), `product` |
//! | `recarga_upstream_call_duration_seconds` | histogram | `provider`, `outcome` |
//! | `recarga_upstream_outcomes_total` | counter | `provider`, `outcome` (incl. `unknown`, `blocked`) |
//! | `recarga_upstream_inflight` | gauge | |
//! | `recarga_upstream_ok` | gauge | 1 when the upstream accepts us (0: IP block, login refused) |
//! | `recarga_queue_depth` | gauge | `state` |
//! | `recarga_queue_oldest_pending_seconds` | gauge | |
//! | `recarga_redis_up` | gauge | |
//! | `recarga_audit_clean` / `recarga_audit_last_run_timestamp_seconds` | gauge | |
//!
//! Recording is a few atomic operations; the bench does not notice it.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) from 1 ms to the upstream's slowest answers.
const BUCKETS_S: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
];

/// The process's recorder, installed on first call.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), BUCKETS_S)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (only possible in tests embedding
        // several gateways): keep the handle; its output is still well formed.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was already installed");
        }
        handle
    })
}

/// Prometheus text for `/metrics`.
pub fn render() -> String {
    let h = handle();
    h.run_upkeep();
    h.render()
}

pub fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    metrics::histogram!("recarga_http_request_duration_seconds",
        "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string())
    .record(seconds);
}

pub fn topup_accepted(product: &str) {
    metrics::counter!("recarga_topups_accepted_total", "product" => product.to_string()).increment(1);
}

pub fn topup_finished(outcome: &'static str, product: &str) {
    metrics::counter!("recarga_topups_finished_total", "outcome" => outcome, "product" => product.to_string())
        .increment(1);
}

pub fn upstream_call(provider: &'static str, outcome: &'static str, seconds: f64) {
    metrics::histogram!("recarga_upstream_call_duration_seconds", "provider" => provider, "outcome" => outcome)
        .record(seconds);
    metrics::counter!("recarga_upstream_outcomes_total", "provider" => provider, "outcome" => outcome).increment(1);
}

pub fn upstream_inflight(delta: f64) {
    metrics::gauge!("recarga_upstream_inflight").increment(delta);
}

pub fn upstream_ok(ok: bool) {
    metrics::gauge!("recarga_upstream_ok").set(if ok { 1.0 } else { 0.0 });
}

pub fn queue(counts: &recarga_store::QueueBacklog) {
    for (state, n) in [
        ("pending", counts.pending),
        ("delayed", counts.delayed),
        ("processing", counts.processing),
        ("unknown", counts.unknown),
    ] {
        metrics::gauge!("recarga_queue_depth", "state" => state).set(n as f64);
    }
    let oldest = counts.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0;
    metrics::gauge!("recarga_queue_oldest_pending_seconds").set(oldest);
}

pub fn redis_up(up: bool) {
    metrics::gauge!("recarga_redis_up").set(if up { 1.0 } else { 0.0 });
}

pub fn audit(clean: bool) {
    metrics::gauge!("recarga_audit_clean").set(if clean { 1.0 } else { 0.0 });
    metrics::gauge!("recarga_audit_last_run_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
}
