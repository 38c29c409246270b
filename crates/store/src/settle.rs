//! Settling a top-up: SUCCESS captures its hold, FAILED releases it, each
//! with its ledger entry and state event in the caller's transaction. A
//! top-up imported from the old system (an old PENDING row, UNKNOWN with
//! nothing held) is the exception: FAILED moves no money and SUCCESS debits
//! its price with a `debit` entry naming it. Used
//! by the worker's definite answers ([`crate::queue`]) and by the resolution
//! of an UNKNOWN (status query, reconciliation or an operator), which is
//! audited.

use crate::{Resolution, Result, Topup};
use async_trait::async_trait;
use recarga_domain::FinalOutcome;

#[async_trait]
pub trait SettleStore {
    /// UNKNOWN → SUCCESS | FAILED, by status query or operator.
    async fn resolve_unknown(&self, resolution: &Resolution) -> Result<Topup>;
    /// PENDING top-ups accepted before `created_before` that provably never
    /// left (no upstream answer but "not sent" / "refused before
    /// processing" on record) become FAILED `expired_not_sent`, their holds
    /// released; at most `limit`, in one transaction. Returns them.
    async fn expire_never_sent(&self, created_before: i64, limit: i64) -> Result<Vec<Topup>>;
}

/// The failure code of an expired top-up.
pub const EXPIRED_NOT_SENT: &str = "expired_not_sent";

/// PENDING top-ups old enough to expire and with nothing on record that
/// could mean they reached the provider (defence in depth: the lifecycle
/// only ever puts a never-sent top-up back to PENDING).
pub(crate) const EXPIRABLE: &str = "SELECT t.id FROM topups t
     WHERE t.status = 'PENDING' AND t.created_at < $1
       AND NOT EXISTS (SELECT 1 FROM exchanges e WHERE e.topup_id = t.id
                       AND e.outcome IN ('success', 'failed', 'unknown'))
     ORDER BY t.created_at LIMIT $2";

/// How a locked top-up is settled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settlement<'a> {
    pub outcome: FinalOutcome,
    pub trans_id: Option<&'a str>,
    pub ven_transid: Option<&'a str>,
    /// `(code, message)` of a failure.
    pub failure: Option<(&'a str, &'a str)>,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub now: i64,
}

/// The ledger entry that settles `current` (kind, amount), if any.
pub(crate) fn ledger_entry(outcome: FinalOutcome, current: &Topup) -> Option<(recarga_domain::LedgerKind, i64)> {
    use recarga_domain::LedgerKind;
    match (outcome, current.is_imported()) {
        (FinalOutcome::Success, false) => Some((LedgerKind::Capture, 0)),
        (FinalOutcome::Failed, false) => Some((LedgerKind::Release, current.held.0)),
        (FinalOutcome::Success, true) => Some((LedgerKind::Debit, -current.legacy_price.unwrap_or(0))),
        (FinalOutcome::Failed, true) => None,
    }
}

macro_rules! impl_settle {
    ($store:ty, $conn:ty) => {
        impl $store {
            /// Takes a locked top-up to SUCCESS (capture) or FAILED (release).
            async fn settle(
                conn: &mut $conn,
                current: &$crate::Topup,
                s: $crate::settle::Settlement<'_>,
            ) -> $crate::Result<$crate::Topup> {
                use recarga_domain::{FinalOutcome, TopupStatus};
                let to = match s.outcome {
                    FinalOutcome::Success => TopupStatus::Success,
                    FinalOutcome::Failed => TopupStatus::Failed,
                };
                if !current.status.can_become(to) {
                    return Err($crate::StoreError::WrongState(format!(
                        "{} cannot become {}",
                        current.status, to
                    )));
                }
                let updated = sqlx::query_as::<_, $crate::Topup>(
                    "UPDATE topups SET status = $2,
                        upstream_trans_id = COALESCE($3, upstream_trans_id),
                        upstream_ven_transid = COALESCE($4, upstream_ven_transid),
                        failure_code = $5, failure_message = $6,
                        lease_owner = NULL, lease_until = NULL, next_check_at = NULL,
                        completed_at = $7, updated_at = $7
                     WHERE id = $1 AND status = $8 RETURNING *",
                )
                .bind(&current.id)
                .bind(to.as_str())
                .bind(s.trans_id)
                .bind(s.ven_transid)
                .bind(s.failure.map(|f| f.0))
                .bind(s.failure.map(|f| f.1))
                .bind(s.now)
                .bind(current.status.as_str())
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| $crate::StoreError::WrongState("the top-up changed meanwhile".into()))?;
                // A capture moves nothing but still takes the customer's row
                // lock, so the entry's running balance and its id follow the
                // same order as every other money change of this customer. A
                // release only gives back what was held: it can never push the
                // balance past the credit limit.
                //
                // A top-up imported from the old system held nothing: FAILED
                // moves no money, SUCCESS debits its price (the old system
                // never did) with its own entry, within the credit limit.
                if let Some((kind, amount)) = $crate::settle::ledger_entry(s.outcome, current) {
                    let entry = $crate::common::BalanceMove {
                        customer_id: &current.customer_id,
                        topup_id: Some(&current.id),
                        kind,
                        amount,
                        actor: s.actor,
                        reason: Some(s.reason.unwrap_or("imported top-up delivered")),
                        now: s.now,
                    };
                    Self::move_balance(conn, entry).await?;
                }
                let event = $crate::common::EventRecord {
                    topup_id: &current.id,
                    from: Some(current.status),
                    to,
                    actor: s.actor,
                    reason: s.reason,
                    now: s.now,
                };
                Self::insert_event(conn, event).await?;
                Ok(updated)
            }
        }

        #[async_trait::async_trait]
        impl $crate::settle::SettleStore for $store {
            async fn resolve_unknown(&self, r: &$crate::Resolution) -> $crate::Result<$crate::Topup> {
                use recarga_domain::{FinalOutcome, TopupStatus};
                if r.reason.trim().is_empty() {
                    return Err($crate::StoreError::Constraint(
                        "a resolution needs a reason".into(),
                    ));
                }
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let current = Self::lock_topup(&mut tx, &r.topup_id).await?;
                if current.status != TopupStatus::Unknown {
                    return Err($crate::StoreError::WrongState(format!(
                        "top-up is {}, not UNKNOWN",
                        current.status
                    )));
                }
                if let Some(ex) = &r.exchange {
                    Self::insert_exchange(&mut tx, &r.topup_id, ex).await?;
                }
                let settlement = $crate::settle::Settlement {
                    outcome: r.outcome,
                    trans_id: r.trans_id.as_deref(),
                    ven_transid: r.ven_transid.as_deref(),
                    failure: matches!(r.outcome, FinalOutcome::Failed)
                        .then_some(("resolved_failed", r.reason.as_str())),
                    actor: &r.actor,
                    reason: Some(r.reason.as_str()),
                    now,
                };
                let updated = Self::settle(&mut tx, &current, settlement).await?;
                let audit = $crate::common::AuditRecord {
                    actor: &r.actor,
                    action: "topup.resolve",
                    subject: &r.topup_id,
                    before: Some(current.status.as_str().to_string()),
                    after: Some(updated.status.as_str().to_string()),
                    reason: Some(r.reason.as_str()),
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                Self::notify(&mut tx, &$crate::StoreEvent::Topup(updated.id.clone())).await?;
                recarga_domain::failpoint::hit("resolve.before_commit");
                tx.commit().await?;
                Ok(updated)
            }

            async fn expire_never_sent(&self, created_before: i64, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                use recarga_domain::{FinalOutcome, TopupStatus};
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar($crate::settle::EXPIRABLE)
                    .bind(created_before)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut expired = Vec::with_capacity(ids.len());
                let reason = "never sent: the upstream was unreachable or refused us for longer than \
                              RECARGA_PENDING_MAX_AGE_S";
                for id in ids {
                    // A worker may have claimed it since the read: then it is
                    // no longer PENDING and is left alone.
                    let current = Self::lock_topup(&mut tx, &id).await?;
                    if current.status != TopupStatus::Pending {
                        continue;
                    }
                    let settlement = $crate::settle::Settlement {
                        outcome: FinalOutcome::Failed,
                        trans_id: None,
                        ven_transid: None,
                        failure: Some(($crate::settle::EXPIRED_NOT_SENT, reason)),
                        actor: "expirer",
                        reason: Some(reason),
                        now,
                    };
                    let updated = Self::settle(&mut tx, &current, settlement).await?;
                    Self::notify(&mut tx, &$crate::StoreEvent::Topup(updated.id.clone())).await?;
                    expired.push(updated);
                }
                if !expired.is_empty() {
                    recarga_domain::failpoint::hit("expire.before_commit");
                }
                tx.commit().await?;
                Ok(expired)
            }
        }
    };
}

pub(crate) use impl_settle;
