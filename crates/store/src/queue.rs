//! The queue: claiming PENDING top-ups with a lease, recording what the
//! upstream answered (group commit: many answers in one transaction, each
//! guarded by its lease), rescuing expired leases as UNKNOWN (never resent;
//! a dead process's claims are rescued sooner, see `processes.rs`),
//! and scheduling the status queries of UNKNOWN top-ups. The worker and the
//! scheduler in `recarga-service` drive it.

use crate::{Finish, NewExchange, QueueBacklog, QueueCounts, Result, StoreError, Topup};
use recarga_domain::TopupStatus;

// The bulk transitions below are written in SQL (`WHERE status = …`); these
// make the state machine guard them too, at compile time.
const _: () = assert!(TopupStatus::Pending.can_become(TopupStatus::Processing), "claim");
const _: () = assert!(TopupStatus::Processing.can_become(TopupStatus::Unknown), "rescue");
use async_trait::async_trait;

#[async_trait]
pub trait QueueStore {
    /// PENDING → PROCESSING for up to `limit` due rows, leased to `owner`.
    async fn claim_pending(&self, owner: &str, lease_ms: i64, limit: i64) -> Result<Vec<Topup>>;
    /// Several finished attempts in one transaction (group commit), each
    /// applied as [`QueueStore::finish_attempt`] would; an `Err` writes nothing.
    async fn finish_attempts(&self, batch: &[Finish]) -> Result<Vec<Result<Option<Topup>>>>;
    /// Records one upstream attempt and applies its outcome, guarded by the
    /// lease (or by UNKNOWN, when a rescuer got there first).
    async fn finish_attempt(&self, finish: &Finish) -> Result<Option<Topup>> {
        self.finish_attempts(std::slice::from_ref(finish))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::WrongState("no answer for the attempt".into())))
    }
    /// PROCESSING rows whose lease expired become UNKNOWN (never resent).
    async fn rescue_expired(&self, check_deadline_ms: i64) -> Result<Vec<String>>;
    /// UNKNOWN rows due for a status query; pushes their next check by `hold_ms`.
    async fn claim_status_checks(&self, hold_ms: i64, limit: i64) -> Result<Vec<Topup>>;
    /// Records a status query that settled nothing and schedules the next one.
    async fn record_check(&self, topup_id: &str, exchange: &NewExchange, next_check_at: i64) -> Result<()>;
    async fn list_unknown(&self) -> Result<Vec<Topup>>;
    async fn queue_counts(&self) -> Result<QueueCounts>;
    /// PENDING / PROCESSING / UNKNOWN counts only, from partial indexes.
    async fn queue_backlog(&self) -> Result<QueueBacklog>;
}

macro_rules! impl_queue {
    ($store:ty, $conn:ty, skip_locked = $sl:literal) => {
        impl $store {
            /// The events and notifications of top-ups just rescued
            /// (PROCESSING → UNKNOWN, never resent), inside the rescuing
            /// transaction; shared by the lease rescue and the rescue of a
            /// dead process's claims (`crate::processes`).
            pub(crate) async fn record_rescues(
                tx: &mut $conn,
                ids: &[String],
                reason: &str,
                now: i64,
            ) -> $crate::Result<()> {
                use recarga_domain::TopupStatus;
                for id in ids {
                    let event = $crate::common::EventRecord {
                        topup_id: id,
                        from: Some(TopupStatus::Processing),
                        to: TopupStatus::Unknown,
                        actor: "rescuer",
                        reason: Some(reason),
                        now,
                    };
                    Self::insert_event(&mut *tx, event).await?;
                    Self::notify(&mut *tx, &$crate::StoreEvent::Topup(id.clone())).await?;
                }
                if !ids.is_empty() {
                    recarga_domain::failpoint::hit("rescue.before_commit");
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::queue::QueueStore for $store {
            async fn claim_pending(&self, owner: &str, lease_ms: i64, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                let now = $crate::now_ms();
                // A token per claim, so the events below name exactly this batch.
                let token = format!("{owner}/{}", uuid::Uuid::now_v7().simple());
                let mut tx = self.begin_work().await?;
                // The pick is a MATERIALIZED CTE so it runs exactly once: as a
                // plain `IN (SELECT … LIMIT n)` PostgreSQL may re-run the limited
                // subquery per outer row and claim far more than `limit`.
                let rows = sqlx::query_as::<_, $crate::Topup>(concat!(
                    "WITH picked AS MATERIALIZED (
                        SELECT id FROM topups WHERE status = 'PENDING' AND next_attempt_at <= $3
                        ORDER BY next_attempt_at LIMIT $4 ",
                    $sl,
                    ")
                     UPDATE topups SET status = 'PROCESSING', lease_owner = $1, lease_until = $2,
                        attempts = attempts + 1, sends = sends + 1, updated_at = $3, lease_process = $5
                     WHERE status = 'PENDING' AND id IN (SELECT id FROM picked) RETURNING *"
                ))
                .bind(&token)
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit)
                .bind(self.member.id())
                .fetch_all(&mut *tx)
                .await?;
                if !rows.is_empty() {
                    sqlx::query(
                        "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at)
                         SELECT id, 'PENDING', 'PROCESSING', 'worker', NULL, $2 FROM topups WHERE lease_owner = $1",
                    )
                    .bind(&token)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(rows)
            }

            async fn finish_attempts(
                &self,
                batch: &[$crate::Finish],
            ) -> $crate::Result<Vec<$crate::Result<Option<$crate::Topup>>>> {
                let now = $crate::now_ms();
                // One lock order for every batch (customer, then top-up), so
                // concurrent batches wait for each other instead of deadlocking.
                let mut order: Vec<usize> = (0..batch.len()).collect();
                order.sort_by(|&a, &b| {
                    (batch[a].customer_id.as_str(), batch[a].topup_id.as_str())
                        .cmp(&(batch[b].customer_id.as_str(), batch[b].topup_id.as_str()))
                });
                let mut answers: Vec<Option<$crate::Topup>> = batch.iter().map(|_| None).collect();
                let mut tx = self.begin_work().await?;
                for i in order {
                    answers[i] = Self::finish_in(&mut tx, &batch[i], now).await?;
                }
                recarga_domain::failpoint::hit("finish.before_commit");
                tx.commit().await?;
                Ok(answers.into_iter().map(Ok).collect())
            }

            async fn rescue_expired(&self, check_deadline_ms: i64) -> $crate::Result<Vec<String>> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE topups SET status = 'UNKNOWN', lease_owner = NULL, lease_until = NULL,
                        next_check_at = $1, check_deadline = $2, updated_at = $1
                     WHERE status = 'PROCESSING' AND lease_until < $1 RETURNING id",
                )
                .bind(now)
                .bind(now + check_deadline_ms)
                .fetch_all(&mut *tx)
                .await?;
                let reason = "lease expired while the upstream call may have been in flight";
                Self::record_rescues(&mut tx, &ids, reason, now).await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn claim_status_checks(&self, hold_ms: i64, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let rows = sqlx::query_as::<_, $crate::Topup>(concat!(
                    "WITH picked AS MATERIALIZED (
                        SELECT id FROM topups WHERE status = 'UNKNOWN' AND next_check_at <= $1 AND check_deadline > $1
                        ORDER BY next_check_at LIMIT $3 ",
                    $sl,
                    ")
                     UPDATE topups SET next_check_at = $2, checks = checks + 1
                     WHERE status = 'UNKNOWN' AND id IN (SELECT id FROM picked) RETURNING *"
                ))
                .bind(now)
                .bind(now + hold_ms)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows)
            }

            async fn record_check(
                &self,
                topup_id: &str,
                exchange: &$crate::NewExchange,
                next_check_at: i64,
            ) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                Self::insert_exchange(&mut tx, topup_id, exchange).await?;
                sqlx::query("UPDATE topups SET next_check_at = $2 WHERE id = $1 AND status = 'UNKNOWN'")
                    .bind(topup_id)
                    .bind(next_check_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_unknown(&self) -> $crate::Result<Vec<$crate::Topup>> {
                Ok(sqlx::query_as::<_, $crate::Topup>("SELECT * FROM topups WHERE status = 'UNKNOWN' ORDER BY id")
                    .fetch_all(self.read())
                    .await?)
            }

            async fn queue_counts(&self) -> $crate::Result<$crate::QueueCounts> {
                let now = $crate::now_ms();
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT CASE WHEN status = 'PENDING' AND next_attempt_at > $1 THEN 'DELAYED' ELSE status END,
                            COUNT(*)
                     FROM topups GROUP BY 1",
                )
                .bind(now)
                .fetch_all(self.read())
                .await?;
                let mut counts = $crate::QueueCounts::default();
                for (status, n) in rows {
                    match status.as_str() {
                        "PENDING" => counts.pending = n,
                        "DELAYED" => counts.delayed = n,
                        "PROCESSING" => counts.processing = n,
                        "SUCCESS" => counts.success = n,
                        "FAILED" => counts.failed = n,
                        "UNKNOWN" => counts.unknown = n,
                        _ => {}
                    }
                }
                let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(created_at) FROM topups WHERE status = 'PENDING'")
                    .fetch_one(self.read())
                    .await?;
                counts.oldest_pending_ms = oldest.map(|t| ($crate::now_ms() - t).max(0));
                Ok(counts)
            }

            async fn queue_backlog(&self) -> $crate::Result<$crate::QueueBacklog> {
                let now = $crate::now_ms();
                let mut backlog = $crate::QueueBacklog::default();
                backlog.pending = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM topups WHERE status = 'PENDING' AND next_attempt_at <= $1",
                )
                .bind(now)
                .fetch_one(self.read())
                .await?;
                backlog.delayed = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM topups WHERE status = 'PENDING' AND next_attempt_at > $1",
                )
                .bind(now)
                .fetch_one(self.read())
                .await?;
                backlog.processing = sqlx::query_scalar("SELECT COUNT(*) FROM topups WHERE status = 'PROCESSING'")
                    .fetch_one(self.read())
                    .await?;
                backlog.unknown = sqlx::query_scalar("SELECT COUNT(*) FROM topups WHERE status = 'UNKNOWN'")
                    .fetch_one(self.read())
                    .await?;
                let oldest: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(created_at) FROM topups WHERE status = 'PENDING'")
                        .fetch_one(self.read())
                        .await?;
                backlog.oldest_pending_ms = oldest.map(|t| (now - t).max(0));
                Ok(backlog)
            }
        }
    };
}

pub(crate) use impl_queue;
