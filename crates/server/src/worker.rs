//! The worker pool and the scheduler.
//!
//! **Worker loop**: claims due PENDING top-ups in batches (a lease in the
//! database, committed before anything else happens), calls the upstream for
//! each **outside any transaction**, and finalises the outcome guarded by the
//! lease. At most `QUEUE_CONCURRENCY` calls are in flight per process.
//! Answers that arrive together are written together (`App::finishes`, group
//! commit: one transaction for many outcomes, each still guarded by its lease).
//!
//! **Scheduler**: every tick it rescues expired leases (a top-up whose worker
//! died mid-call becomes UNKNOWN — it may have been delivered, so it is never
//! resent) and asks the upstream about UNKNOWN top-ups that are due, with
//! exponential backoff until the deadline, after which they wait for an
//! operator (`recarga topup unresolved` / `resolve`).

use crate::app::App;
use crate::config::{NOT_SENT_ATTEMPTS_MAX, NOT_SENT_RETRY_BASE_MS};
use recarga_domain::Msisdn;
use recarga_store::{AttemptOutcome, FinalOutcome, Finish, NewExchange, Resolution, Topup, now_ms};
use recarga_upstream::{ExchangeLog, Outcome, StatusAnswer, TopupRequest};
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
/// Scheduler period: lease rescue and status queries.
pub const SCHEDULER_TICK_MS: u64 = 1_000;
/// UNKNOWN rows queried per scheduler tick.
pub const STATUS_CHECKS_PER_TICK: i64 = 32;
/// A status query claims its row for this long, so replicas do not repeat it.
pub const STATUS_CHECK_HOLD_MS: i64 = 60_000;
/// Tries to write a finished attempt before leaving it to the lease rescue.
pub const FINISH_WRITE_TRIES: u32 = 5;
/// How long submission pauses while the upstream refuses us (IP block, login).
pub const BLOCKED_PAUSE_MS: u64 = 5_000;
/// Delay after a database error in a loop.
pub const ERROR_BACKOFF_MS: u64 = 1_000;

fn exchange(
    kind: &'static str,
    provider: &str,
    outcome: &'static str,
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
pub async fn run_workers(app: App, shutdown: CancellationToken) {
    let owner = format!("w-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let permits = Arc::new(Semaphore::new(app.config.queue_concurrency));
    let tracker = TaskTracker::new();
    tracing::info!(owner, inflight_max = app.config.queue_concurrency, "worker started");
    while !shutdown.is_cancelled() {
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                p = permits.clone().acquire_owned() => drop(p),
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        if let Err(state) = app.provider.ready().await {
            // Nothing is claimed while the upstream refuses us: top-ups stay
            // PENDING, and the pause ends by itself when a login works again.
            tracing::warn!(
                state,
                pause_ms = BLOCKED_PAUSE_MS,
                "upstream not ready: submission paused"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(BLOCKED_PAUSE_MS)) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let want = free.min(CLAIM_BATCH_MAX) as i64;
        let lease_ms = app.config.lease().as_millis() as i64;
        let claimed = match app.store.claim_pending(&owner, lease_ms, want).await {
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
        for topup in claimed {
            // Only this loop takes permits and it claims no more than were
            // free, so this does not wait; if it ever did, waiting is right:
            // a claimed top-up must be sent (or rescued), never dropped.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let app = app.clone();
            // The accepting request's id follows the top-up into the worker's logs.
            let span = tracing::info_span!(
                "topup",
                id = %topup.id,
                request_id = %topup.request_id.as_deref().unwrap_or("")
            );
            tracker.spawn(
                async move {
                    process(&app, topup).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        if got < want {
            tokio::select! {
                _ = app.hub.wait_for_work() => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(owner, "worker stopped");
}

/// One claimed top-up: call the upstream, then record what it said.
async fn process(app: &App, topup: Topup) {
    let Some(owner) = topup.lease_owner.clone() else { return };
    let request = TopupRequest {
        topup_id: topup.id.clone(),
        phone: Msisdn::from_trusted(topup.phone.clone()),
        product_id: topup.product_id.clone(),
        amount_sent: topup.amount_sent,
    };
    let provider = app.provider.name();
    // The provider enforces its own timeout; this outer bound is a safety net
    // so that a stuck call can never outlive the lease.
    let bound = app.config.upstream_timeout() + Duration::from_secs(5);
    let started = now_ms();
    let clock = std::time::Instant::now();
    crate::metrics::upstream_inflight(1.0);
    let attempt = tokio::time::timeout(bound, app.provider.topup(&request)).await;
    crate::metrics::upstream_inflight(-1.0);
    let attempt = match attempt {
        Ok(a) => a,
        Err(_) => recarga_upstream::Attempt {
            outcome: Outcome::Unknown {
                reason: "no answer within the call bound".into(),
                trans_id: None,
            },
            exchange: ExchangeLog {
                started_at_ms: started,
                ended_at_ms: now_ms(),
                ..Default::default()
            },
        },
    };
    recarga_domain::failpoint::hit("worker.after_upstream");
    let now = now_ms();
    let (outcome, label, detail) = match attempt.outcome {
        Outcome::Success { trans_id, ven_transid } => {
            (AttemptOutcome::Success { trans_id, ven_transid }, "success", None)
        }
        Outcome::Failed { code, message } => {
            let detail = Some(format!("{code}: {message}"));
            (AttemptOutcome::Failed { code, message }, "failed", detail)
        }
        Outcome::NotSent { reason } if topup.attempts < NOT_SENT_ATTEMPTS_MAX => {
            let delay = NOT_SENT_RETRY_BASE_MS << (topup.attempts.clamp(1, 10) - 1);
            (
                AttemptOutcome::Retry {
                    next_attempt_at: now + delay,
                    reason: reason.clone(),
                    count_attempt: true,
                },
                "not_sent",
                Some(reason),
            )
        }
        Outcome::NotSent { reason } => (
            AttemptOutcome::Failed {
                code: "upstream_unreachable".into(),
                message: reason.clone(),
            },
            "not_sent",
            Some(reason),
        ),
        Outcome::Blocked { reason } => {
            let retry = AttemptOutcome::Retry {
                next_attempt_at: now + BLOCKED_PAUSE_MS as i64,
                reason: reason.clone(),
                count_attempt: false,
            };
            (retry, "blocked", Some(reason))
        }
        Outcome::Unknown { reason, trans_id } => {
            let outcome = AttemptOutcome::Unknown {
                reason: reason.clone(),
                trans_id,
                next_check_at: now + app.config.status_check_base_s as i64 * 1000,
                check_deadline: now + app.config.unknown_deadline_s as i64 * 1000,
            };
            (outcome, "unknown", Some(reason))
        }
    };
    tracing::info!(id = %topup.id, phone = %request.phone, outcome = label, "upstream answered");
    crate::metrics::upstream_call(provider, label, clock.elapsed().as_secs_f64());
    let finished_as = match &outcome {
        AttemptOutcome::Success { .. } => "success",
        AttemptOutcome::Failed { .. } => "failed",
        AttemptOutcome::Unknown { .. } => "unknown",
        AttemptOutcome::Retry { .. } => "retry",
    };
    crate::metrics::topup_finished(finished_as, &topup.product_id);
    let finish = Finish {
        topup_id: topup.id.clone(),
        customer_id: topup.customer_id.clone(),
        lease_owner: owner,
        outcome,
        exchange: exchange("topup", provider, label, detail, attempt.exchange),
    };
    for attempt_no in 1..=FINISH_WRITE_TRIES {
        match app.finishes.submit(finish.clone()).await {
            Ok(Some(t)) => {
                app.hub.topup_changed(&t.id);
                app.publish_topup(&t);
                if t.status == recarga_domain::TopupStatus::Pending {
                    app.hub.work_available();
                }
                return;
            }
            Ok(None) => {
                tracing::warn!(id = %topup.id, "lease lost before the outcome was written; answer kept as evidence");
                return;
            }
            Err(e) => {
                tracing::error!(id = %topup.id, attempt_no, error = %e, "writing the outcome failed");
                tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS * attempt_no as u64)).await;
            }
        }
    }
    tracing::error!(id = %topup.id, "outcome not written; the lease rescue will make it UNKNOWN");
}

/// Runs lease rescue and status queries until `shutdown`.
pub async fn run_scheduler(app: App, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(SCHEDULER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let audit_every = Duration::from_secs(app.config.audit_interval_s);
    let mut last_audit: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if let Err(e) = scheduler_tick(&app).await {
            tracing::error!(error = %e, "scheduler tick failed");
        }
        if !audit_every.is_zero() && last_audit.is_none_or(|t| t.elapsed() >= audit_every) {
            last_audit = Some(tokio::time::Instant::now());
            match app.store.audit().await {
                Ok(report) => {
                    if !report.is_clean() {
                        tracing::error!(violations = ?report.violations, "ledger audit found violations");
                    }
                    crate::metrics::audit(report.is_clean());
                }
                Err(e) => tracing::error!(error = %e, "ledger audit could not run"),
            }
        }
    }
}

/// One pass of the scheduler; public so tests can drive it.
pub async fn scheduler_tick(app: &App) -> Result<(), recarga_store::StoreError> {
    crate::metrics::queue(&app.store.queue_backlog().await?);
    crate::metrics::upstream_ok(app.provider.health().ok);
    if let Some(redis) = &app.redis {
        crate::metrics::redis_up(redis.ping().await);
    }
    let deadline_ms = app.config.unknown_deadline_s as i64 * 1000;
    for id in app.store.rescue_expired(deadline_ms).await? {
        tracing::warn!(id, "lease expired: top-up is UNKNOWN and will not be resent");
        app.hub.topup_changed(&id);
    }
    let due = app
        .store
        .claim_status_checks(STATUS_CHECK_HOLD_MS, STATUS_CHECKS_PER_TICK)
        .await?;
    // Few per tick (bounded above), so they run concurrently without a semaphore.
    let mut checks = tokio::task::JoinSet::new();
    for topup in due {
        let app = app.clone();
        checks.spawn(async move { check_status(&app, topup).await });
    }
    while let Some(joined) = checks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording a status query failed"),
            Err(e) => tracing::error!(error = %e, "a status query task panicked"),
        }
    }
    Ok(())
}

async fn check_status(app: &App, topup: Topup) -> Result<(), recarga_store::StoreError> {
    let check = app.provider.status(&topup.id, topup.upstream_trans_id.as_deref()).await;
    recarga_domain::failpoint::hit("resolver.after_query");
    let provider = app.provider.name();
    let (outcome, trans_id, ven_transid, reason) = match check.answer {
        StatusAnswer::Delivered { trans_id, ven_transid } => (
            FinalOutcome::Success,
            trans_id,
            ven_transid,
            "upstream status query: delivered".to_string(),
        ),
        StatusAnswer::NotDelivered { code, message } => (
            FinalOutcome::Failed,
            None,
            None,
            format!("upstream status query: not delivered ({code}: {message})"),
        ),
        StatusAnswer::StillUnknown { reason } => {
            let shift = topup.checks.clamp(1, 20) - 1;
            let delay_s = (app.config.status_check_base_s << shift).min(app.config.status_check_max_s);
            let ex = exchange("status", provider, "unknown", Some(reason), check.exchange);
            return app
                .store
                .record_check(&topup.id, &ex, now_ms() + delay_s as i64 * 1000)
                .await;
        }
    };
    let label = match outcome {
        FinalOutcome::Success => "success",
        FinalOutcome::Failed => "failed",
    };
    let resolution = Resolution {
        topup_id: topup.id.clone(),
        outcome,
        actor: "status-query".into(),
        reason: reason.clone(),
        trans_id,
        ven_transid,
        exchange: Some(exchange("status", provider, label, Some(reason), check.exchange)),
    };
    match app.store.resolve_unknown(&resolution).await {
        Ok(t) => {
            tracing::info!(id = %t.id, status = %t.status, "UNKNOWN resolved by status query");
            app.hub.topup_changed(&t.id);
            app.publish_topup(&t);
            Ok(())
        }
        // Resolved meanwhile (by an operator or a late worker answer).
        Err(recarga_store::StoreError::WrongState(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
