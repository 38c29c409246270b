//! Customers: their settings and limits. Creating one with an opening credit
//! writes that credit's ledger entry in the same transaction; every change is
//! audited (before, after, reason) in the transaction that makes it.

use crate::{Customer, CustomerPatch, NewCustomer, Result};
use async_trait::async_trait;

#[async_trait]
pub trait CustomerStore {
    async fn create_customer(&self, new: &NewCustomer, actor: &str) -> Result<Customer>;
    async fn get_customer(&self, id: &str) -> Result<Option<Customer>>;
    async fn list_customers(&self) -> Result<Vec<Customer>>;
    async fn update_customer(&self, id: &str, patch: &CustomerPatch, actor: &str) -> Result<Customer>;
    /// Customers brought over from the old system (`import_run` set): while
    /// any exist, `serve` and `worker` refuse the sandbox upstream.
    async fn count_imported_customers(&self) -> Result<u64>;
}

macro_rules! impl_customers {
    ($store:ty, for_update = $fu:literal) => {
        #[async_trait::async_trait]
        impl $crate::customers::CustomerStore for $store {
            async fn create_customer(&self, new: &$crate::NewCustomer, actor: &str) -> $crate::Result<$crate::Customer> {
                use $crate::common::{AuditRecord, BalanceMove};
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO customers (id, name, currency, fx_rate_micro, balance, credit_limit, discount_bps,
                                            min_topup, max_topup, daily_limit, catalogue, active, created_at, updated_at,
                                            reference_policy)
                     VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, TRUE, $11, $11, $12)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&new.id)
                .bind(&new.name)
                .bind(new.currency.as_str())
                .bind(new.fx_rate_micro)
                .bind(new.credit_limit.0)
                .bind(new.discount_bps)
                .bind(new.min_topup.0)
                .bind(new.max_topup.0)
                .bind(new.daily_limit.map(|m| m.0))
                .bind(new.catalogue.as_str())
                .bind(now)
                .bind(new.reference_policy.as_str())
                .execute(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::StoreError::AlreadyExists(format!("customer {}", new.id)));
                }
                if new.initial_credit.0 != 0 {
                    let opening = BalanceMove {
                        customer_id: &new.id,
                        topup_id: None,
                        kind: recarga_domain::LedgerKind::adjustment(new.initial_credit.0),
                        amount: new.initial_credit.0,
                        actor,
                        reason: Some("initial credit"),
                        now,
                    };
                    Self::move_balance(&mut tx, opening).await?;
                }
                let customer = sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers WHERE id = $1")
                    .bind(&new.id)
                    .fetch_one(&mut *tx)
                    .await?;
                let audit = AuditRecord {
                    actor,
                    action: "customer.create",
                    subject: &new.id,
                    before: None,
                    after: serde_json::to_string(&customer).ok(),
                    reason: None,
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(customer)
            }

            async fn get_customer(&self, id: &str) -> $crate::Result<Option<$crate::Customer>> {
                Ok(sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn list_customers(&self) -> $crate::Result<Vec<$crate::Customer>> {
                Ok(sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers ORDER BY id")
                    .fetch_all(self.read())
                    .await?)
            }

            async fn count_imported_customers(&self) -> $crate::Result<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE import_run IS NOT NULL")
                    .fetch_one(self.read())
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn update_customer(
                &self,
                id: &str,
                patch: &$crate::CustomerPatch,
                actor: &str,
            ) -> $crate::Result<$crate::Customer> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let before = sqlx::query_as::<_, $crate::Customer>(concat!("SELECT * FROM customers WHERE id = $1 ", $fu))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or($crate::StoreError::NotFound)?;
                let after = sqlx::query_as::<_, $crate::Customer>(
                    "UPDATE customers SET
                        name = COALESCE($2, name),
                        credit_limit = COALESCE($3, credit_limit),
                        discount_bps = COALESCE($4, discount_bps),
                        min_topup = COALESCE($5, min_topup),
                        max_topup = COALESCE($6, max_topup),
                        daily_limit = CASE WHEN $7 THEN $8 ELSE daily_limit END,
                        catalogue = COALESCE($9, catalogue),
                        active = COALESCE($10, active),
                        fx_rate_micro = COALESCE($11, fx_rate_micro),
                        rate_limit_per_s = CASE WHEN $13 THEN $14 ELSE rate_limit_per_s END,
                        reference_policy = COALESCE($15, reference_policy),
                        public_status = COALESCE($16, public_status),
                        ip_allowlist = CASE WHEN $17 THEN $18 ELSE ip_allowlist END,
                        ip_allowlist_enabled = COALESCE($19, ip_allowlist_enabled),
                        updated_at = $12, version = version + 1
                     WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(&patch.name)
                .bind(patch.credit_limit.map(|m| m.0))
                .bind(patch.discount_bps)
                .bind(patch.min_topup.map(|m| m.0))
                .bind(patch.max_topup.map(|m| m.0))
                .bind(patch.daily_limit.is_some())
                .bind(patch.daily_limit.flatten().map(|m| m.0))
                .bind(patch.catalogue.map(|c| c.as_str()))
                .bind(patch.active)
                .bind(patch.fx_rate_micro)
                .bind(now)
                .bind(patch.rate_limit_per_s.is_some())
                .bind(patch.rate_limit_per_s.flatten())
                .bind(patch.reference_policy.map(|p| p.as_str()))
                .bind(patch.public_status)
                .bind(patch.ip_allowlist.is_some())
                .bind(patch.ip_allowlist.clone().flatten())
                .bind(patch.ip_allowlist_enabled)
                .fetch_one(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                let audit = $crate::common::AuditRecord {
                    actor,
                    action: "customer.update",
                    subject: id,
                    before: serde_json::to_string(&before).ok(),
                    after: serde_json::to_string(&after).ok(),
                    reason: patch.reason.as_deref(),
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(after)
            }
        }
    };
}

pub(crate) use impl_customers;
