//! Recording an upstream answer: the exchange kept as evidence, and the
//! outcome the pure `recarga_domain::classify_attempt` chose, applied only by
//! the lease holder: settle (capture or release), back to PENDING (provably
//! never sent) or UNKNOWN (hold kept). Every state change checks
//! `TopupStatus::can_become`.

macro_rules! impl_finish {
    ($store:ty, $conn:ty) => {
        impl $store {
            /// One finished attempt, inside the caller's transaction: the
            /// exchange is kept as evidence whatever happens; the outcome is
            /// applied only by the lease holder (or, for a definite answer,
            /// to a top-up a rescuer made UNKNOWN meanwhile).
            async fn finish_in(
                tx: &mut $conn,
                finish: &$crate::Finish,
                now: i64,
            ) -> $crate::Result<Option<$crate::Topup>> {
                use recarga_domain::{AttemptOutcome as O, FinalOutcome, TopupStatus};
                use $crate::settle::Settlement;
                let current = Self::lock_topup(&mut *tx, &finish.topup_id).await?;
                Self::insert_exchange(&mut *tx, &finish.topup_id, &finish.exchange).await?;
                let ours = current.status == TopupStatus::Processing
                    && current.lease_owner.as_deref() == Some(finish.lease_owner.as_str());
                let definite = matches!(finish.outcome, O::Success { .. } | O::Failed { .. });
                if !(ours || (definite && current.status == TopupStatus::Unknown)) {
                    return Ok(None);
                }
                let worker = |outcome, trans_id, ven_transid, failure, reason| Settlement {
                    outcome,
                    trans_id,
                    ven_transid,
                    failure,
                    actor: "worker",
                    reason,
                    now,
                };
                let updated = match &finish.outcome {
                    O::Success {
                        trans_id,
                        ven_transid,
                    } => {
                        let s = worker(
                            FinalOutcome::Success,
                            trans_id.as_deref(),
                            ven_transid.as_deref(),
                            None,
                            None,
                        );
                        Self::settle(&mut *tx, &current, s).await?
                    }
                    O::Failed { code, message } => {
                        let (t, v) = (
                            finish.exchange.trans_id.as_deref(),
                            finish.exchange.ven_transid.as_deref(),
                        );
                        let failure = Some((code.as_str(), message.as_str()));
                        let s = worker(FinalOutcome::Failed, t, v, failure, Some(message.as_str()));
                        Self::settle(&mut *tx, &current, s).await?
                    }
                    O::Retry {
                        next_attempt_at,
                        reason,
                        count_attempt,
                    } => Self::requeue(&mut *tx, &current, *next_attempt_at, reason, *count_attempt, now).await?,
                    O::Unknown {
                        reason,
                        trans_id,
                        next_check_at,
                        check_deadline,
                    } => {
                        let checks = (*next_check_at, *check_deadline);
                        Self::mark_unknown(&mut *tx, &current, reason, trans_id.as_deref(), checks, now).await?
                    }
                };
                Self::notify(&mut *tx, &$crate::StoreEvent::Topup(updated.id.clone())).await?;
                if updated.status == TopupStatus::Pending {
                    Self::notify(&mut *tx, &$crate::StoreEvent::Work).await?;
                }
                Ok(Some(updated))
            }

            /// PROCESSING → PENDING: the request provably never left.
            async fn requeue(
                tx: &mut $conn,
                current: &$crate::Topup,
                next_attempt_at: i64,
                reason: &str,
                count_attempt: bool,
                now: i64,
            ) -> $crate::Result<$crate::Topup> {
                use recarga_domain::TopupStatus;
                if !current.status.can_become(TopupStatus::Pending) {
                    return Err($crate::StoreError::WrongState(format!(
                        "{} cannot become PENDING",
                        current.status
                    )));
                }
                let row = sqlx::query_as::<_, $crate::Topup>(
                    "UPDATE topups SET status = 'PENDING', lease_owner = NULL, lease_until = NULL,
                        next_attempt_at = $2, updated_at = $3,
                        attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END
                     WHERE id = $1 RETURNING *",
                )
                .bind(&current.id)
                .bind(next_attempt_at)
                .bind(now)
                .bind(count_attempt)
                .fetch_one(&mut *tx)
                .await?;
                let event = $crate::common::EventRecord {
                    topup_id: &current.id,
                    from: Some(current.status),
                    to: TopupStatus::Pending,
                    actor: "worker",
                    reason: Some(reason),
                    now,
                };
                Self::insert_event(&mut *tx, event).await?;
                Ok(row)
            }

            /// PROCESSING → UNKNOWN: the hold is kept; checked from `checks.0` until `checks.1`.
            async fn mark_unknown(
                tx: &mut $conn,
                current: &$crate::Topup,
                reason: &str,
                trans_id: Option<&str>,
                checks: (i64, i64),
                now: i64,
            ) -> $crate::Result<$crate::Topup> {
                use recarga_domain::TopupStatus;
                if !current.status.can_become(TopupStatus::Unknown) {
                    return Err($crate::StoreError::WrongState(format!(
                        "{} cannot become UNKNOWN",
                        current.status
                    )));
                }
                let row = sqlx::query_as::<_, $crate::Topup>(
                    "UPDATE topups SET status = 'UNKNOWN', lease_owner = NULL, lease_until = NULL,
                        upstream_trans_id = COALESCE($2, upstream_trans_id),
                        next_check_at = $3, check_deadline = $4, updated_at = $5 WHERE id = $1 RETURNING *",
                )
                .bind(&current.id)
                .bind(trans_id)
                .bind(checks.0)
                .bind(checks.1)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let event = $crate::common::EventRecord {
                    topup_id: &current.id,
                    from: Some(current.status),
                    to: TopupStatus::Unknown,
                    actor: "worker",
                    reason: Some(reason),
                    now,
                };
                Self::insert_event(&mut *tx, event).await?;
                Ok(row)
            }
        }
    };
}

pub(crate) use impl_finish;
