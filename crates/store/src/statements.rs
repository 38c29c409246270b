//! A customer's statement, read from the ledger: the running balance just
//! before a period (the last entry's `balance_after`) and every entry in it
//! with the top-up it names. For a customer imported from the old system
//! the first entry is its `import` (its opening balance), so a statement
//! from before it opens at 0.

use crate::Result;
use async_trait::async_trait;

/// One ledger entry of a statement, with its top-up's facts.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatementEntry {
    pub id: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: i64,
    pub topup_id: Option<String>,
    pub reason: Option<String>,
    pub face_value: Option<i64>,
    pub phone: Option<String>,
    pub status: Option<String>,
    pub fx_rate_micro: Option<i64>,
    pub reference: Option<String>,
}

#[async_trait]
pub trait StatementStore {
    /// The balance before `from_ms` (`None`: no entry yet) and the entries
    /// in `[from_ms, to_ms)`, in ledger order.
    async fn statement_entries(
        &self,
        customer_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Option<i64>, Vec<StatementEntry>)>;
}

macro_rules! impl_statements {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::statements::StatementStore for $store {
            async fn statement_entries(
                &self,
                customer_id: &str,
                from_ms: i64,
                to_ms: i64,
            ) -> $crate::Result<(Option<i64>, Vec<$crate::StatementEntry>)> {
                let opening: Option<i64> = sqlx::query_scalar(
                    "SELECT balance_after FROM ledger WHERE customer_id = $1 AND created_at < $2
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(customer_id)
                .bind(from_ms)
                .fetch_optional(self.read())
                .await?;
                let entries = sqlx::query_as::<_, $crate::StatementEntry>(
                    "SELECT l.id, l.kind, l.amount, l.balance_after, l.created_at, l.topup_id, l.reason,
                            t.face_value, t.phone, t.status, t.fx_rate_micro, t.reference
                     FROM ledger l LEFT JOIN topups t ON t.id = l.topup_id
                     WHERE l.customer_id = $1 AND l.created_at >= $2 AND l.created_at < $3
                     ORDER BY l.id",
                )
                .bind(customer_id)
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(self.read())
                .await?;
                Ok((opening, entries))
            }
        }
    };
}

pub(crate) use impl_statements;
