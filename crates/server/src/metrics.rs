//! Prometheus metrics at `/metrics`.
//!
//! One process-wide recorder (installed on first use). The money path's
//! metrics are named in `recarga_service::metrics`; the adapters add:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `recarga_http_request_duration_seconds` | histogram | `route`, `method`, `status` |
//! | `recarga_redis_up` | gauge | |
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

pub fn redis_up(up: bool) {
    metrics::gauge!("recarga_redis_up").set(if up { 1.0 } else { 0.0 });
}
