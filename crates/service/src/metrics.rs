//! What the services count, by name, so dashboards can rely on them. The
//! server installs the Prometheus recorder and serves `/metrics`; recording
//! here is a few atomic operations.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `recarga_topups_accepted_total` | counter | `product` |
//! | `recarga_topups_finished_total` | counter | `outcome` (success, failed, unknown, retry), `product` |
//! | `recarga_upstream_call_duration_seconds` | histogram | `provider`, `outcome` |
//! | `recarga_upstream_outcomes_total` | counter | `provider`, `outcome` (incl. `unknown`, `blocked`) |
//! | `recarga_upstream_inflight` | gauge | |
//! | `recarga_upstream_ok` | gauge | 1 when the upstream accepts us (0: IP block, login refused, wallet empty) |
//! | `recarga_upstream_state` | gauge | `state`: 1 for the provider's current state (`ok`, `upstream_wallet_empty`, `upstream_ip_not_authorized`, …) |
//! | `recarga_topups_expired_total` | counter | `product`: never sent within `RECARGA_PENDING_MAX_AGE_S` |
//! | `recarga_audit_late_evidence` | gauge | settled top-ups a later upstream answer contradicts (each an audit violation) |
//! | `recarga_queue_depth` | gauge | `state` |
//! | `recarga_queue_oldest_pending_seconds` | gauge | |
//! | `recarga_audit_clean` / `recarga_audit_last_run_timestamp_seconds` | gauge | |

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

/// The provider's state as a one-hot gauge: the previous state is zeroed.
pub fn upstream_state(state: &str) {
    static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = last.as_deref().filter(|p| *p != state) {
        metrics::gauge!("recarga_upstream_state", "state" => previous.to_string()).set(0.0);
    }
    metrics::gauge!("recarga_upstream_state", "state" => state.to_string()).set(1.0);
    *last = Some(state.to_string());
}

pub fn topup_expired(product: &str) {
    metrics::counter!("recarga_topups_expired_total", "product" => product.to_string()).increment(1);
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

pub fn audit(clean: bool, late_evidence: i64) {
    metrics::gauge!("recarga_audit_clean").set(if clean { 1.0 } else { 0.0 });
    metrics::gauge!("recarga_audit_late_evidence").set(late_evidence as f64);
    metrics::gauge!("recarga_audit_last_run_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
}
