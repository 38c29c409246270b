//! The scheduler: lease rescue, outage expiry (`crate::expire`) and status queries.
//!
//! Every tick it rescues the claims of dead processes (at once: another
//! process's advisory lock came free on PostgreSQL, or this process started on
//! SQLite; see `recarga_store::ProcessStore`) and expired leases (a top-up
//! whose worker died mid-call becomes UNKNOWN: it may have been delivered, so
//! it is never resent) and
//! asks the upstream about UNKNOWN top-ups that are due; the pure
//! `recarga_domain::classify_check` decides what an answer settles, with
//! exponential backoff until the deadline, after which they wait for
//! reconciliation or an operator (`recarga topup unresolved` / `resolve`).
//! It also runs the ledger audit for the metrics.

use crate::context::Services;
use crate::settle::exchange;
use recarga_domain::{CheckDecision, ExchangeKind, ExchangeOutcome, FinalOutcome, classify_check};
use recarga_store::{Resolution, StoreError, Topup, now_ms};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Scheduler period: lease rescue and status queries.
pub const SCHEDULER_TICK_MS: u64 = 1_000;
/// UNKNOWN rows queried per scheduler tick.
pub const STATUS_CHECKS_PER_TICK: i64 = 32;
/// A status query claims its row for this long, so replicas do not repeat it.
pub const STATUS_CHECK_HOLD_MS: i64 = 60_000;

/// Runs lease rescue, status queries and the audit until `shutdown`.
pub async fn run_scheduler(svc: Services, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(SCHEDULER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let audit_every = svc.settings.audit_interval;
    let mut last_audit: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if let Err(e) = scheduler_tick(&svc).await {
            tracing::error!(error = %e, "scheduler tick failed");
        }
        if !audit_every.is_zero() && last_audit.is_none_or(|t| t.elapsed() >= audit_every) {
            last_audit = Some(tokio::time::Instant::now());
            audit(&svc).await;
        }
    }
}

async fn audit(svc: &Services) {
    match svc.store.audit().await {
        Ok(report) => {
            if !report.is_clean() {
                tracing::error!(violations = ?report.violations, "ledger audit found violations");
            }
            crate::metrics::audit(report.is_clean(), report.late_evidence);
        }
        Err(e) => tracing::error!(error = %e, "ledger audit could not run"),
    }
}

/// One pass of the scheduler; public so tests can drive it.
pub async fn scheduler_tick(svc: &Services) -> Result<(), StoreError> {
    crate::metrics::queue(&svc.store.queue_backlog().await?);
    let health = svc.provider.health();
    crate::metrics::upstream_ok(health.ok);
    crate::metrics::upstream_state(&health.state);
    rescue(svc).await?;
    crate::expire::expire_never_sent(svc).await?;
    let due = svc
        .store
        .claim_status_checks(STATUS_CHECK_HOLD_MS, STATUS_CHECKS_PER_TICK)
        .await?;
    // Few per tick (bounded above), so they run concurrently without a semaphore.
    let mut checks = tokio::task::JoinSet::new();
    for topup in due {
        let svc = svc.clone();
        checks.spawn(async move { check_status(&svc, topup).await });
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

/// Claims nobody will finish become UNKNOWN (never resent): those of dead
/// processes at once, then any whose lease expired.
async fn rescue(svc: &Services) -> Result<(), StoreError> {
    if let Err(e) = svc.store.heartbeat().await {
        tracing::error!(error = %e, "keeping this process's membership alive failed");
    }
    let deadline = svc.settings.policy.unknown_deadline_ms;
    for id in svc.store.rescue_orphans(deadline).await? {
        tracing::warn!(id, "its process died: top-up is UNKNOWN and will not be resent");
        svc.hub.topup_changed(&id);
    }
    for id in svc.store.rescue_expired(deadline).await? {
        tracing::warn!(id, "lease expired: top-up is UNKNOWN and will not be resent");
        svc.hub.topup_changed(&id);
    }
    Ok(())
}

/// Asks the upstream about one UNKNOWN top-up and records what it settles.
async fn check_status(svc: &Services, topup: Topup) -> Result<(), StoreError> {
    let attempt = recarga_domain::attempt_id(&topup.id, topup.sends);
    let check = svc.provider.status(&attempt, topup.upstream_trans_id.as_deref()).await;
    recarga_domain::failpoint::hit("resolver.after_query");
    let provider = svc.provider.name();
    let decision = classify_check(check.answer, topup.checks, now_ms(), &svc.settings.policy);
    let (outcome, trans_id, ven_transid, reason) = match decision {
        CheckDecision::AskAgain { next_check_at, reason } => {
            let ex = exchange(
                ExchangeKind::Status,
                provider,
                ExchangeOutcome::Unknown,
                Some(reason),
                check.exchange,
            );
            return svc.store.record_check(&topup.id, &ex, next_check_at).await;
        }
        CheckDecision::Resolve {
            outcome,
            trans_id,
            ven_transid,
            reason,
        } => (outcome, trans_id, ven_transid, reason),
    };
    let label = match outcome {
        FinalOutcome::Success => ExchangeOutcome::Success,
        FinalOutcome::Failed => ExchangeOutcome::Failed,
    };
    let resolution = Resolution {
        topup_id: topup.id.clone(),
        outcome,
        actor: "status-query".into(),
        reason: reason.clone(),
        trans_id,
        ven_transid,
        exchange: Some(exchange(
            ExchangeKind::Status,
            provider,
            label,
            Some(reason),
            check.exchange,
        )),
    };
    match svc.store.resolve_unknown(&resolution).await {
        Ok(t) => {
            tracing::info!(id = %t.id, status = %t.status, "UNKNOWN resolved by status query");
            svc.hub.topup_changed(&t.id);
            svc.hub.topup_event(&t);
            Ok(())
        }
        // Resolved meanwhile (by an operator or a late worker answer).
        Err(StoreError::WrongState(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
