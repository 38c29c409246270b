//! The ledger: operator credits and debits, and reading a customer's entries.
//! The ledger is append-only (database triggers refuse UPDATE and DELETE);
//! every entry is written by `move_balance` or the accept batch, in the same
//! transaction as the balance it changes.

use crate::{Adjustment, LedgerEntry, Result};
use async_trait::async_trait;

#[async_trait]
pub trait LedgerStore {
    /// Operator credit (positive) or debit (negative), with its ledger entry.
    async fn adjust_balance(&self, adj: &Adjustment) -> Result<LedgerEntry>;
    /// A customer's newest entries.
    async fn ledger(&self, customer_id: &str, limit: i64) -> Result<Vec<LedgerEntry>>;
}

macro_rules! impl_ledger {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ledger::LedgerStore for $store {
            async fn adjust_balance(&self, adj: &$crate::Adjustment) -> $crate::Result<$crate::LedgerEntry> {
                if adj.reason.trim().is_empty() || adj.amount.0 == 0 {
                    return Err($crate::StoreError::Constraint(
                        "an adjustment needs a non-zero amount and a reason".into(),
                    ));
                }
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let change = $crate::common::BalanceMove {
                    customer_id: &adj.customer_id,
                    topup_id: None,
                    kind: recarga_domain::LedgerKind::adjustment(adj.amount.0),
                    amount: adj.amount.0,
                    actor: &adj.actor,
                    reason: Some(adj.reason.as_str()),
                    now,
                };
                let entry = Self::move_balance(&mut tx, change).await?;
                let audit = $crate::common::AuditRecord {
                    actor: &adj.actor,
                    action: "balance.adjust",
                    subject: &adj.customer_id,
                    before: Some((entry.balance_after.0 - adj.amount.0).to_string()),
                    after: Some(entry.balance_after.0.to_string()),
                    reason: Some(adj.reason.as_str()),
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                recarga_domain::failpoint::hit("adjust.before_commit");
                tx.commit().await?;
                Ok(entry)
            }

            async fn ledger(&self, customer_id: &str, limit: i64) -> $crate::Result<Vec<$crate::LedgerEntry>> {
                Ok(sqlx::query_as::<_, $crate::LedgerEntry>(
                    "SELECT * FROM ledger WHERE customer_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(customer_id)
                .bind(limit)
                .fetch_all(self.read())
                .await?)
            }
        }
    };
}

pub(crate) use impl_ledger;
