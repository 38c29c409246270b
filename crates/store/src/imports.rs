//! Imports of the old system: one transaction per customer.
//!
//! [`ImportStore::import_customer`] writes, in one transaction: the customer
//! (or, with `merge`, marks an existing one), its **one** `import` ledger
//! entry (the old balance: the only ledger row an import writes), its
//! imported keys (digests), its old top-ups as read-only `legacy` rows
//! (nothing held, never queued, `ref_key` empty so old references never
//! answer a new request), one event per top-up, the old books in
//! `legacy_history`, and an audit row. A crash anywhere leaves either all of
//! it or none of it. [`ImportStore::legacy_totals`] reads back what was
//! written, for the tie-out report.

use crate::{NewApiKey, Result};
use async_trait::async_trait;
use recarga_domain::{CatalogueRule, Currency, Money, ReferencePolicy};
use serde::Serialize;
use std::collections::BTreeMap;

/// An old customer as Recarga will hold it.
#[derive(Debug, Clone)]
pub struct ImportedCustomer {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    pub min_topup: Money,
    pub max_topup: Money,
    pub daily_limit: Option<Money>,
    pub catalogue: CatalogueRule,
    pub active: bool,
    pub commission_bps: i64,
    pub reference_policy: ReferencePolicy,
    /// Imported disabled, for an operator to check and enable.
    pub ip_allowlist: Option<String>,
}

/// An old top-up as a `legacy` row.
#[derive(Debug, Clone)]
pub struct LegacyTopupRow {
    pub id: String,
    pub number: Option<i64>,
    /// The customer's text; our id when the old row had none.
    pub reference: String,
    pub phone: String,
    pub face_value: i64,
    pub status: &'static str,
    pub legacy_price: i64,
    pub fx_rate_micro: Option<i64>,
    pub upstream_trans_id: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// The old row's facts, as JSON.
    pub legacy: String,
}

#[derive(Debug, Clone)]
pub struct LegacyHistoryRow {
    pub kind: &'static str,
    pub source_id: String,
    pub amount: Option<String>,
    pub detail: String,
    pub created_at: Option<i64>,
}

/// One customer's import, written in one transaction.
#[derive(Debug, Clone)]
pub struct CustomerImport {
    pub run_id: String,
    pub actor: String,
    pub customer: ImportedCustomer,
    /// The old balance, in the customer's currency.
    pub opening_balance: Money,
    pub opening_reason: String,
    /// Add to an existing customer (with its own traffic) instead of creating it.
    pub merge: bool,
    pub keys: Vec<NewApiKey>,
    pub topups: Vec<LegacyTopupRow>,
    pub history: Vec<LegacyHistoryRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportWritten {
    pub topups: u64,
    pub keys: u64,
    pub history: u64,
}

/// What Recarga holds of a customer's import, read back for the tie-out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LegacyTotals {
    pub balance: i64,
    /// The `import` ledger entry's amount, if the customer was imported.
    pub opening: Option<i64>,
    pub import_run: Option<String>,
    /// Per status of the imported top-ups: (count, Σ face value, Σ legacy price).
    pub topups: BTreeMap<String, (i64, i64, i64)>,
    pub keys: i64,
    /// Rows of the old books per kind.
    pub history: BTreeMap<String, i64>,
}

/// Where a customer id stands before an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CustomerImportState {
    Absent,
    Imported {
        run: String,
    },
    /// Created in Recarga; `traffic` when it has ledger entries or top-ups.
    Existing {
        traffic: bool,
    },
}

/// A row of the old books, as shown on the customer's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LegacyHistory {
    pub kind: String,
    pub source_id: String,
    pub amount: Option<String>,
    pub detail: String,
    pub created_at: Option<i64>,
}

#[async_trait]
pub trait ImportStore {
    async fn start_import_run(&self, id: &str, source: &str) -> Result<()>;
    async fn finish_import_run(&self, id: &str, report: &str) -> Result<()>;
    async fn customer_import_state(&self, id: &str) -> Result<CustomerImportState>;
    /// Writes one customer's import in one transaction; `progress` hears
    /// how many top-ups are written so far.
    async fn import_customer(
        &self,
        import: &CustomerImport,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ImportWritten>;
    async fn legacy_totals(&self, customer_id: &str) -> Result<LegacyTotals>;
    /// The old books of a customer, newest first (at most `limit` rows).
    async fn legacy_history(&self, customer_id: &str, limit: i64) -> Result<Vec<LegacyHistory>>;
}

/// Rows per multi-row INSERT (under SQLite's 32,766 bound parameters).
pub(crate) const IMPORT_CHUNK: usize = 500;

macro_rules! impl_imports {
    ($store:ty, $db:ty, $conn:ty, bump_numbers = $bump:literal) => {
        impl $store {
            async fn insert_imported_customer(
                conn: &mut $conn,
                imp: &$crate::imports::CustomerImport,
                now: i64,
            ) -> $crate::Result<()> {
                let c = &imp.customer;
                if imp.merge {
                    let existing: Option<String> =
                        sqlx::query_scalar("SELECT currency FROM customers WHERE id = $1 AND import_run IS NULL")
                            .bind(&c.id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    return match existing {
                        Some(cur) if cur == c.currency.as_str() => {
                            sqlx::query(
                                "UPDATE customers SET import_run = $2, commission_bps = $3, updated_at = $4,
                                        version = version + 1 WHERE id = $1",
                            )
                            .bind(&c.id)
                            .bind(&imp.run_id)
                            .bind(c.commission_bps)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                            Ok(())
                        }
                        Some(cur) => Err($crate::StoreError::Constraint(format!(
                            "customer {} keeps its balance in {cur}, the import says {}",
                            c.id,
                            c.currency.as_str()
                        ))),
                        None => Err($crate::StoreError::NotFound),
                    };
                }
                sqlx::query(
                    "INSERT INTO customers (id, name, currency, fx_rate_micro, balance, credit_limit, discount_bps,
                                            min_topup, max_topup, daily_limit, catalogue, active, created_at, updated_at,
                                            reference_policy, ip_allowlist, ip_allowlist_enabled, import_run,
                                            commission_bps)
                     VALUES ($1, $2, $3, $4, 0, 0, 0, $5, $6, $7, $8, $9, $10, $10, $11, $12, FALSE, $13, $14)",
                )
                .bind(&c.id)
                .bind(&c.name)
                .bind(c.currency.as_str())
                .bind(c.fx_rate_micro)
                .bind(c.min_topup.0)
                .bind(c.max_topup.0)
                .bind(c.daily_limit.map(|m| m.0))
                .bind(c.catalogue.as_str())
                .bind(c.active)
                .bind(now)
                .bind(c.reference_policy.as_str())
                .bind(&c.ip_allowlist)
                .bind(&imp.run_id)
                .bind(c.commission_bps)
                .execute(&mut *conn)
                .await
                .map_err($crate::common::map_db)?;
                Ok(())
            }

            async fn insert_legacy_topups(
                conn: &mut $conn,
                imp: &$crate::imports::CustomerImport,
                now: i64,
                progress: &(dyn Fn(u64) + Send + Sync),
            ) -> $crate::Result<u64> {
                let mut written = 0;
                for chunk in imp.topups.chunks($crate::imports::IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO topups (id, customer_id, reference, request_hash, phone, face_value, product_id,
                            amount_sent, vat, delivered, discount_bps, currency, fx_rate_micro, held, status,
                            next_attempt_at, upstream_trans_id, created_at, updated_at, completed_at, number,
                            origin, import_run, legacy_price, legacy) ",
                    );
                    q.push_values(chunk, |mut b, t| {
                        b.push_bind(&t.id)
                            .push_bind(&imp.customer.id)
                            .push_bind(&t.reference)
                            .push("'legacy'")
                            .push_bind(&t.phone)
                            .push_bind(t.face_value)
                            .push("'legacy'")
                            .push_bind(t.face_value)
                            .push("0")
                            .push_bind(t.face_value)
                            .push("0")
                            .push_bind(imp.customer.currency.as_str())
                            .push_bind(t.fx_rate_micro)
                            .push("0")
                            .push_bind(t.status)
                            .push_bind(t.created_at)
                            .push_bind(&t.upstream_trans_id)
                            .push_bind(t.created_at)
                            .push_bind(now)
                            .push_bind(t.completed_at)
                            .push_bind(t.number)
                            .push("'legacy'")
                            .push_bind(&imp.run_id)
                            .push_bind(t.legacy_price)
                            .push_bind(&t.legacy);
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    written += q.build().execute(&mut *conn).await.map_err($crate::common::map_db)?.rows_affected();
                    progress(written);
                }
                sqlx::query(
                    "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at)
                     SELECT id, NULL, status, $3, 'imported from the old system', created_at
                     FROM topups WHERE customer_id = $1 AND import_run = $2",
                )
                .bind(&imp.customer.id)
                .bind(&imp.run_id)
                .bind(&imp.actor)
                .execute(&mut *conn)
                .await?;
                sqlx::query($bump).execute(&mut *conn).await?;
                Ok(written)
            }

            async fn insert_legacy_history(
                conn: &mut $conn,
                imp: &$crate::imports::CustomerImport,
            ) -> $crate::Result<u64> {
                let mut written = 0;
                for chunk in imp.history.chunks($crate::imports::IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO legacy_history (import_run, customer_id, kind, source_id, amount, detail, created_at) ",
                    );
                    q.push_values(chunk, |mut b, h| {
                        b.push_bind(&imp.run_id)
                            .push_bind(&imp.customer.id)
                            .push_bind(h.kind)
                            .push_bind(&h.source_id)
                            .push_bind(&h.amount)
                            .push_bind(&h.detail)
                            .push_bind(h.created_at);
                    });
                    q.push(" ON CONFLICT (kind, source_id) DO NOTHING");
                    written += q.build().execute(&mut *conn).await?.rows_affected();
                }
                Ok(written)
            }

            async fn insert_imported_keys(
                conn: &mut $conn,
                imp: &$crate::imports::CustomerImport,
                now: i64,
            ) -> $crate::Result<u64> {
                let mut written = 0;
                for k in &imp.keys {
                    written += sqlx::query(
                        "INSERT INTO api_keys (id, customer_id, prefix, digest, label, created_at, kind, hint)
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8
                         WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE customer_id = $2 AND digest = $4
                                           AND revoked_at IS NULL)",
                    )
                    .bind(&k.id)
                    .bind(&k.customer_id)
                    .bind(&k.prefix)
                    .bind(&k.digest)
                    .bind(&k.label)
                    .bind(now)
                    .bind(&k.kind)
                    .bind(&k.hint)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                Ok(written)
            }
        }

        #[async_trait::async_trait]
        impl $crate::imports::ImportStore for $store {
            async fn start_import_run(&self, id: &str, source: &str) -> $crate::Result<()> {
                sqlx::query("INSERT INTO import_runs (id, source, started_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(source)
                    .bind($crate::now_ms())
                    .execute(self.write_pool())
                    .await?;
                Ok(())
            }

            async fn finish_import_run(&self, id: &str, report: &str) -> $crate::Result<()> {
                sqlx::query("UPDATE import_runs SET finished_at = $2, report = $3 WHERE id = $1")
                    .bind(id)
                    .bind($crate::now_ms())
                    .bind(report)
                    .execute(self.write_pool())
                    .await?;
                Ok(())
            }

            async fn customer_import_state(&self, id: &str) -> $crate::Result<$crate::imports::CustomerImportState> {
                self.read_import_state(id).await
            }

            async fn import_customer(
                &self,
                imp: &$crate::imports::CustomerImport,
                progress: &(dyn Fn(u64) + Send + Sync),
            ) -> $crate::Result<$crate::imports::ImportWritten> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                Self::insert_imported_customer(&mut tx, imp, now).await?;
                let opening = $crate::common::BalanceMove {
                    customer_id: &imp.customer.id,
                    topup_id: None,
                    kind: recarga_domain::LedgerKind::Import,
                    amount: imp.opening_balance.0,
                    actor: &imp.actor,
                    reason: Some(&imp.opening_reason),
                    now,
                };
                Self::move_balance(&mut tx, opening).await?;
                let keys = Self::insert_imported_keys(&mut tx, imp, now).await?;
                let topups = Self::insert_legacy_topups(&mut tx, imp, now, progress).await?;
                let history = Self::insert_legacy_history(&mut tx, imp).await?;
                let written = $crate::imports::ImportWritten { topups, keys, history };
                let audit = $crate::common::AuditRecord {
                    actor: &imp.actor,
                    action: "customer.import",
                    subject: &imp.customer.id,
                    before: None,
                    after: serde_json::to_string(&written).ok(),
                    reason: Some(&imp.opening_reason),
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                recarga_domain::failpoint::hit("import.before_commit");
                tx.commit().await?;
                Ok(written)
            }

            async fn legacy_totals(&self, customer_id: &str) -> $crate::Result<$crate::imports::LegacyTotals> {
                self.read_legacy_totals(customer_id).await
            }

            async fn legacy_history(
                &self,
                customer_id: &str,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::imports::LegacyHistory>> {
                Ok(sqlx::query_as::<_, $crate::imports::LegacyHistory>(
                    "SELECT kind, source_id, amount, detail, created_at FROM legacy_history
                     WHERE customer_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(customer_id)
                .bind(limit)
                .fetch_all(self.read())
                .await?)
            }
        }
    };
}

/// The reads behind the tie-out (kept apart so each macro stays short).
macro_rules! impl_import_reads {
    ($store:ty) => {
        impl $store {
            async fn read_import_state(&self, id: &str) -> $crate::Result<$crate::imports::CustomerImportState> {
                use $crate::imports::CustomerImportState;
                let row: Option<(Option<String>,)> = sqlx::query_as("SELECT import_run FROM customers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?;
                Ok(match row {
                    None => CustomerImportState::Absent,
                    Some((Some(run),)) => CustomerImportState::Imported { run },
                    Some((None,)) => {
                        let traffic: bool = sqlx::query_scalar(
                            "SELECT EXISTS (SELECT 1 FROM ledger WHERE customer_id = $1)
                                 OR EXISTS (SELECT 1 FROM topups WHERE customer_id = $1)",
                        )
                        .bind(id)
                        .fetch_one(self.read())
                        .await?;
                        CustomerImportState::Existing { traffic }
                    }
                })
            }

            async fn read_legacy_totals(&self, customer_id: &str) -> $crate::Result<$crate::imports::LegacyTotals> {
                let mut totals = $crate::imports::LegacyTotals::default();
                let row: Option<(i64, Option<String>)> =
                    sqlx::query_as("SELECT balance, import_run FROM customers WHERE id = $1")
                        .bind(customer_id)
                        .fetch_optional(self.read())
                        .await?;
                let Some((balance, run)) = row else {
                    return Ok(totals);
                };
                totals.balance = balance;
                totals.import_run = run;
                totals.opening =
                    sqlx::query_scalar("SELECT amount FROM ledger WHERE customer_id = $1 AND kind = 'import'")
                        .bind(customer_id)
                        .fetch_optional(self.read())
                        .await?;
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*), CAST(COALESCE(SUM(face_value), 0) AS BIGINT),
                            CAST(COALESCE(SUM(legacy_price), 0) AS BIGINT)
                     FROM topups WHERE customer_id = $1 AND origin = 'legacy' GROUP BY status",
                )
                .bind(customer_id)
                .fetch_all(self.read())
                .await?;
                totals.topups = rows.into_iter().map(|(s, n, f, p)| (s, (n, f, p))).collect();
                totals.keys = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE customer_id = $1 AND kind = 'imported' AND revoked_at IS NULL",
                )
                .bind(customer_id)
                .fetch_one(self.read())
                .await?;
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT kind, COUNT(*) FROM legacy_history WHERE customer_id = $1 GROUP BY kind")
                        .bind(customer_id)
                        .fetch_all(self.read())
                        .await?;
                totals.history = rows.into_iter().collect();
                Ok(totals)
            }
        }
    };
}

pub(crate) use {impl_import_reads, impl_imports};
