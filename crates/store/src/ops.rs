//! The read models of the operator panel and the customer dashboard:
//! transaction search with date ranges and keyset pagination, ledger pages,
//! and the aggregates of the overview and the live queue monitor. (The
//! pages' own state, operators and sessions, is in `operators.rs`.)
//!
//! It never moves money: credits, debits, key changes and resolutions go
//! through the [`crate::Store`] methods, one DB transaction each, which write
//! their own `audit_log` rows. [`impl_ops!`] expands to one body of SQL for
//! both engines.

use crate::{LedgerEntry, Result, Topup};
use async_trait::async_trait;
use recarga_domain::TopupStatus;
use serde::Serialize;

/// Operator transaction search. Every field narrows; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct TopupSearch {
    pub customer_id: Option<String>,
    pub status: Option<TopupStatus>,
    /// `created_at >= from_ms`.
    pub from_ms: Option<i64>,
    /// `created_at < to_ms`.
    pub to_ms: Option<i64>,
    pub phone: Option<String>,
    pub reference: Option<String>,
    pub id: Option<String>,
    /// Keyset cursor: only ids strictly older (smaller) than this one.
    pub before_id: Option<String>,
    pub limit: i64,
}

/// Largest page [`OpsStore::search_topups`] returns.
pub const SEARCH_PAGE_MAX: i64 = 1000;

/// Top-ups created since some instant, by status: count and face value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StatusTotal {
    pub status: String,
    pub count: i64,
    pub face_value: i64,
}

/// Completed top-ups in one time bucket with one final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ThroughputBucket {
    /// `(completed_at - since) / bucket_ms`.
    pub bucket: i64,
    pub status: String,
    pub count: i64,
}

#[async_trait]
pub trait OpsStore {
    // Read models.
    async fn search_topups(&self, search: &TopupSearch) -> Result<Vec<Topup>>;
    /// Ledger entries of a customer, newest first, keyset by entry id.
    async fn ledger_page(&self, customer_id: &str, before_id: Option<i64>, limit: i64) -> Result<Vec<LedgerEntry>>;
    async fn topup_ledger(&self, topup_id: &str) -> Result<Vec<LedgerEntry>>;
    /// Top-ups created at or after `since_ms` by status (one customer or all).
    async fn status_totals(&self, customer_id: Option<&str>, since_ms: i64) -> Result<Vec<StatusTotal>>;
    /// Face value accepted (not FAILED) per customer since `since_ms`.
    async fn usage_by_customer(&self, since_ms: i64) -> Result<Vec<(String, i64)>>;
    /// SUCCESS / FAILED completions since `since_ms`, bucketed.
    async fn throughput(&self, since_ms: i64, bucket_ms: i64) -> Result<Vec<ThroughputBucket>>;
    /// Durations (ms) of the latest top-up calls to the upstream since `since_ms`.
    async fn upstream_latencies(&self, since_ms: i64, limit: i64) -> Result<Vec<i64>>;
    /// The latest FAILED top-ups.
    async fn recent_failures(&self, limit: i64) -> Result<Vec<Topup>>;
}

macro_rules! impl_ops {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::OpsStore for $store {
            async fn search_topups(&self, f: &$crate::TopupSearch) -> $crate::Result<Vec<$crate::Topup>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM topups WHERE 1 = 1");
                if let Some(c) = &f.customer_id {
                    q.push(" AND customer_id = ").push_bind(c.clone());
                }
                if let Some(s) = f.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(from) = f.from_ms {
                    q.push(" AND created_at >= ").push_bind(from);
                }
                if let Some(to) = f.to_ms {
                    q.push(" AND created_at < ").push_bind(to);
                }
                if let Some(p) = &f.phone {
                    q.push(" AND phone = ").push_bind(p.clone());
                }
                if let Some(r) = &f.reference {
                    q.push(" AND reference = ").push_bind(r.clone());
                }
                if let Some(id) = &f.id {
                    q.push(" AND id = ").push_bind(id.clone());
                }
                if let Some(b) = &f.before_id {
                    q.push(" AND id < ").push_bind(b.clone());
                }
                q.push(" ORDER BY id DESC LIMIT ")
                    .push_bind(f.limit.clamp(1, $crate::SEARCH_PAGE_MAX));
                Ok(q.build_query_as::<$crate::Topup>().fetch_all(self.read()).await?)
            }

            async fn ledger_page(
                &self,
                customer_id: &str,
                before_id: Option<i64>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::LedgerEntry>> {
                Ok(sqlx::query_as::<_, $crate::LedgerEntry>(
                    "SELECT * FROM ledger WHERE customer_id = $1 AND ($2 IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(customer_id)
                .bind(before_id)
                .bind(limit.clamp(1, $crate::SEARCH_PAGE_MAX))
                .fetch_all(self.read())
                .await?)
            }

            async fn topup_ledger(&self, topup_id: &str) -> $crate::Result<Vec<$crate::LedgerEntry>> {
                Ok(
                    sqlx::query_as::<_, $crate::LedgerEntry>("SELECT * FROM ledger WHERE topup_id = $1 ORDER BY id")
                        .bind(topup_id)
                        .fetch_all(self.read())
                        .await?,
                )
            }

            async fn status_totals(
                &self,
                customer_id: Option<&str>,
                since_ms: i64,
            ) -> $crate::Result<Vec<$crate::StatusTotal>> {
                Ok(sqlx::query_as::<_, $crate::StatusTotal>(
                    "SELECT status, COUNT(*) AS count, CAST(COALESCE(SUM(face_value), 0) AS BIGINT) AS face_value
                     FROM topups WHERE created_at >= $1 AND ($2 IS NULL OR customer_id = $2)
                     GROUP BY status ORDER BY status",
                )
                .bind(since_ms)
                .bind(customer_id)
                .fetch_all(self.read())
                .await?)
            }

            async fn usage_by_customer(&self, since_ms: i64) -> $crate::Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<_, (String, i64)>(
                    "SELECT customer_id, CAST(COALESCE(SUM(face_value), 0) AS BIGINT) FROM topups
                     WHERE created_at >= $1 AND status <> 'FAILED' GROUP BY customer_id ORDER BY customer_id",
                )
                .bind(since_ms)
                .fetch_all(self.read())
                .await?)
            }

            async fn throughput(&self, since_ms: i64, bucket_ms: i64) -> $crate::Result<Vec<$crate::ThroughputBucket>> {
                Ok(sqlx::query_as::<_, $crate::ThroughputBucket>(
                    "SELECT CAST((completed_at - $1) / $2 AS BIGINT) AS bucket, status, COUNT(*) AS count
                     FROM topups WHERE completed_at IS NOT NULL AND completed_at >= $1
                     GROUP BY 1, 2 ORDER BY 1, 2",
                )
                .bind(since_ms)
                .bind(bucket_ms.max(1))
                .fetch_all(self.read())
                .await?)
            }

            async fn upstream_latencies(&self, since_ms: i64, limit: i64) -> $crate::Result<Vec<i64>> {
                Ok(sqlx::query_scalar::<_, i64>(
                    "SELECT ended_at - started_at FROM exchanges
                     WHERE kind = 'topup' AND started_at >= $1 ORDER BY started_at DESC LIMIT $2",
                )
                .bind(since_ms)
                .bind(limit.max(1))
                .fetch_all(self.read())
                .await?)
            }

            async fn recent_failures(&self, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                Ok(sqlx::query_as::<_, $crate::Topup>(
                    "SELECT * FROM topups WHERE status = 'FAILED' AND completed_at IS NOT NULL
                     ORDER BY completed_at DESC LIMIT $1",
                )
                .bind(limit.clamp(1, 100))
                .fetch_all(self.read())
                .await?)
            }
        }
    };
}

pub(crate) use impl_ops;
