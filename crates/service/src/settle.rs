//! The worker pool: claim, call, record.
//!
//! It claims due PENDING top-ups in batches (a lease in the database,
//! committed before anything else happens), calls the upstream for each
//! **outside any transaction**, lets the pure
//! `recarga_domain::classify_attempt` decide what the answer means, and
//! records it guarded by the lease. At most `queue_concurrency` calls are in
//! flight per process. Answers that arrive together are written together
//! (`Services::finishes`, group commit: one transaction for many outcomes,
//! each still guarded by its lease).

use crate::context::{BLOCKED_PAUSE_MS, Services};
use recarga_domain::{ExchangeKind, ExchangeOutcome, Outcome, TopupStatus, classify_attempt};
use recarga_store::{Finish, NewExchange, Topup, now_ms};
use recarga_upstream::{Attempt, ExchangeLog, TopupRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Most rows claimed in one transaction.
pub const CLAIM_BATCH_MAX: usize = 32;
/// Idle re-check interval when no wake-up signal arrives (other replicas).
pub const IDLE_POLL_MS: u64 = 500;
/// Longest pause between two tries of writing a finished attempt (ms); the
/// tries go on until it is written or the lease is gone (see `record`).
pub const FINISH_RETRY_MAX_MS: u64 = 5_000;
/// Delay after a database error in a loop.
pub const ERROR_BACKOFF_MS: u64 = 1_000;
/// Slack of the outer bound of a call over the provider's own timeout: a
/// quarter of the timeout, at least 1 s and at most 5 s. A lease must outlive
/// timeout + slack (checked at start), or a call still in flight is rescued.
pub fn call_bound_slack(upstream_timeout: Duration) -> Duration {
    (upstream_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// An exchange record from an adapter's log.
pub fn exchange(
    kind: ExchangeKind,
    provider: &str,
    outcome: ExchangeOutcome,
    detail: Option<String>,
    log: ExchangeLog,
) -> NewExchange {
    NewExchange {
        kind,
        provider: provider.to_string(),
        request: log.request,
        response: log.response,
        http_status: log.http_status,
        outcome,
        detail,
        trans_id: log.trans_id,
        ven_transid: log.ven_transid,
        started_at: log.started_at_ms,
        ended_at: log.ended_at_ms,
    }
}

/// Runs the worker loop until `shutdown`; in-flight calls are awaited.
pub async fn run_workers(svc: Services, shutdown: CancellationToken) {
    let owner = format!("w-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let permits = Arc::new(Semaphore::new(svc.settings.queue_concurrency));
    let tracker = TaskTracker::new();
    tracing::info!(owner, inflight_max = svc.settings.queue_concurrency, "worker started");
    while !shutdown.is_cancelled() {
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                p = permits.clone().acquire_owned() => drop(p),
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        if !upstream_ready(&svc, &shutdown).await {
            continue;
        }
        // While the provider pauses us (our wallet there is empty), one
        // waiting top-up at a time goes as the probe.
        let limit = svc.provider.claim_limit().unwrap_or(CLAIM_BATCH_MAX);
        let want = free.min(CLAIM_BATCH_MAX).min(limit) as i64;
        if want == 0 {
            upstream_paused(&svc, "upstream_wallet_empty", &shutdown).await;
            continue;
        }
        let lease_ms = svc.settings.lease.as_millis() as i64;
        let claimed = match svc.store.claim_pending(&owner, lease_ms, want).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "claiming work failed");
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                continue;
            }
        };
        let got = claimed.len() as i64;
        if got > 0 {
            recarga_domain::failpoint::hit("worker.after_claim");
        }
        dispatch(&svc, claimed, &permits, &tracker).await;
        if got < want {
            tokio::select! {
                _ = svc.hub.wait_for_work() => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(owner, "worker stopped");
}

/// Whether the upstream takes top-ups now; while it refuses us (IP block,
/// login) nothing is claimed: top-ups stay PENDING, and the pause ends by
/// itself when a login works again.
async fn upstream_ready(svc: &Services, shutdown: &CancellationToken) -> bool {
    let Err(state) = svc.provider.ready().await else {
        return true;
    };
    upstream_paused(svc, &state, shutdown).await;
    false
}

async fn upstream_paused(svc: &Services, state: &str, shutdown: &CancellationToken) {
    tracing::warn!(
        state,
        provider = svc.provider.name(),
        pause_ms = BLOCKED_PAUSE_MS,
        "upstream not ready: submission paused"
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(BLOCKED_PAUSE_MS)) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// One task per claimed top-up, each holding a permit.
async fn dispatch(svc: &Services, claimed: Vec<Topup>, permits: &Arc<Semaphore>, tracker: &TaskTracker) {
    for topup in claimed {
        // Only the loop takes permits and it claims no more than were free,
        // so this does not wait; if it ever did, waiting is right: a claimed
        // top-up must be sent (or rescued), never dropped.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let svc = svc.clone();
        // The accepting request's id follows the top-up into the worker's logs.
        let span = tracing::info_span!(
            "topup",
            id = %topup.id,
            request_id = %topup.request_id.as_deref().unwrap_or("")
        );
        tracker.spawn(
            async move {
                process(&svc, topup).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// One claimed top-up: call the upstream, decide, record.
pub async fn process(svc: &Services, topup: Topup) {
    let Some(owner) = topup.lease_owner.clone() else { return };
    let clock = std::time::Instant::now();
    let attempt = call(svc, &topup).await;
    recarga_domain::failpoint::hit("worker.after_upstream");
    let (outcome, label) = classify_attempt(attempt.outcome.clone(), topup.attempts, now_ms(), &svc.settings.policy);
    let detail = match &attempt.outcome {
        Outcome::Success { .. } => None,
        Outcome::Failed { code, message } => Some(format!("{code}: {message}")),
        Outcome::NotSent { reason }
        | Outcome::Blocked { reason }
        | Outcome::Queued { reason }
        | Outcome::Unknown { reason, .. } => Some(reason.clone()),
    };
    let provider = svc.provider.name();
    tracing::info!(id = %topup.id, phone = %topup.phone, outcome = label.as_str(), "upstream answered");
    crate::metrics::upstream_call(provider, label.as_str(), clock.elapsed().as_secs_f64());
    crate::metrics::topup_finished(outcome.label(), &topup.product_id);
    let finish = Finish {
        topup_id: topup.id.clone(),
        customer_id: topup.customer_id.clone(),
        lease_owner: owner,
        outcome,
        exchange: exchange(ExchangeKind::Topup, provider, label, detail, attempt.exchange),
    };
    record(svc, finish, topup.lease_until).await;
}

/// The upstream call in two steps. First the provider's admission (its
/// in-flight cap, rate pacer, login): nothing has left the machine yet, so a
/// wait longer than the upstream timeout gives up as **never sent** (the
/// top-up goes back to PENDING, not counted). Then the call itself, bounded
/// from the moment it is dispatched: the provider enforces its own timeout,
/// and this outer bound is a safety net so a stuck call never outlives the
/// lease (whatever it hits is UNKNOWN: the request may have left).
async fn call(svc: &Services, topup: &Topup) -> Attempt {
    let request = TopupRequest {
        topup_id: topup.id.clone(),
        attempt_id: recarga_domain::attempt_id(&topup.id, topup.sends),
        phone: topup.phone.clone(),
        product_id: topup.product_id.clone(),
        amount_sent: topup.amount_sent,
    };
    let timeout = svc.settings.upstream_timeout;
    let queued_at = now_ms();
    let nothing_sent = |outcome| Attempt {
        outcome,
        exchange: ExchangeLog {
            started_at_ms: queued_at,
            ended_at_ms: now_ms(),
            ..Default::default()
        },
    };
    let admission = match tokio::time::timeout(timeout, svc.provider.admit()).await {
        Ok(Ok(admission)) => admission,
        Ok(Err(outcome)) => return nothing_sent(outcome),
        Err(_) => {
            return nothing_sent(Outcome::Queued {
                reason: format!(
                    "waited {} s for a free upstream slot (in-flight cap, rate limit): never sent",
                    timeout.as_secs()
                ),
            });
        }
    };
    let started = now_ms();
    crate::metrics::upstream_inflight(1.0);
    let bound = timeout + call_bound_slack(timeout);
    let attempt = tokio::time::timeout(bound, svc.provider.send(&request, admission)).await;
    crate::metrics::upstream_inflight(-1.0);
    attempt.unwrap_or_else(|_| Attempt {
        outcome: Outcome::Unknown {
            reason: "no answer within the call bound".into(),
            trans_id: None,
        },
        exchange: ExchangeLog {
            started_at_ms: started,
            ended_at_ms: now_ms(),
            ..Default::default()
        },
    })
}

/// Writes a finished attempt. A failed write (a busy pool, a locked
/// database) is retried until it is written or the lease is gone: the answer
/// (a definite one carries Latcom's `transId`) exists only in memory and in
/// the exchange log until then, and giving up would make a settled top-up
/// UNKNOWN. The lease guard of the finish stays: once the top-up is no longer
/// ours (or, for a definite answer, no longer ours nor UNKNOWN) nothing is
/// written, and the UNKNOWN resolver settles it.
async fn record(svc: &Services, finish: Finish, lease_until_ms: Option<i64>) {
    // The claim's own lease deadline (the claim always sets it).
    let left_ms = lease_until_ms.map_or(svc.settings.lease.as_millis() as i64, |until| until - now_ms());
    let lease_gone_at = tokio::time::Instant::now() + Duration::from_millis(left_ms.max(0) as u64);
    let mut failures = 0u32;
    loop {
        match svc.finishes.submit(finish.clone()).await {
            Ok(Some(t)) => {
                svc.hub.topup_changed(&t.id);
                svc.hub.topup_event(&t);
                if t.status == TopupStatus::Pending {
                    svc.hub.work_available();
                }
                if failures > 0 {
                    tracing::info!(id = %t.id, failures, status = %t.status, "outcome written after failed tries");
                }
                return;
            }
            Ok(None) => {
                tracing::warn!(id = %finish.topup_id, failures, "lease lost before the outcome was written; answer kept as evidence, the UNKNOWN resolver settles it");
                return;
            }
            Err(e) => {
                failures += 1;
                let pause = finish_retry_pause(failures);
                if tokio::time::Instant::now() + pause >= lease_gone_at {
                    tracing::error!(id = %finish.topup_id, failures, error = %e, outcome = ?finish.outcome, "outcome not written before the lease ran out; the rescue makes it UNKNOWN and the UNKNOWN resolver settles it");
                    return;
                }
                tracing::error!(id = %finish.topup_id, failures, error = %e, retry_in_ms = pause.as_millis() as u64, "writing the outcome failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The pause after the `failures`-th failed write of an outcome: doubling
/// from [`ERROR_BACKOFF_MS`], at most [`FINISH_RETRY_MAX_MS`].
fn finish_retry_pause(failures: u32) -> Duration {
    let doubled = ERROR_BACKOFF_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_millis(doubled.min(FINISH_RETRY_MAX_MS))
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn finish_retries_back_off_to_a_ceiling() {
        let pauses: Vec<u64> = (1..=6).map(|n| finish_retry_pause(n).as_millis() as u64).collect();
        assert_eq!(pauses, [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
        assert_eq!(finish_retry_pause(u32::MAX), Duration::from_millis(FINISH_RETRY_MAX_MS));
    }
}
