//! The ledger audit: every money invariant, checked in the database.
//!
//! - each customer's balance equals the sum of its ledger entries, and is
//!   not below its credit limit;
//! - each customer's last entry's running balance is its balance;
//! - each top-up has exactly one hold of its price, a capture only if it
//!   succeeded and a release of the whole hold only if it failed;
//! - a top-up imported from the old system has no entry, or one `debit`
//!   of its price once its old PENDING row was resolved SUCCESS;
//! - no entry names a top-up that does not exist;
//! - no FAILED top-up has a success on record (late evidence: we released
//!   the hold of something the provider says it delivered). A `Fail` on
//!   record for a SUCCESS top-up is not one: Latcom answers `Fail` for
//!   top-ups the carrier delivered (the sandbox's `989`), and the status
//!   query that found the delivery settled it.

use crate::{AuditReport, Result};
use async_trait::async_trait;

#[async_trait]
pub trait AuditStore {
    /// Every ledger invariant; violations are listed, never fixed.
    async fn audit(&self) -> Result<AuditReport>;
}

/// Top-ups whose holds, captures and releases do not match their state.
/// A top-up imported from the old system has no entry at all, except one
/// `debit` of its price once an operator resolved its old PENDING row
/// SUCCESS (its `import` event says it came in UNKNOWN).
pub(crate) const MISMATCHED_TOPUPS: &str = "SELECT t.id, t.status FROM topups t LEFT JOIN ledger l ON l.topup_id = t.id
     GROUP BY t.id, t.status, t.held, t.origin, t.legacy_price
     HAVING NOT (
        t.origin = 'legacy' AND t.held = 0
        AND SUM(CASE WHEN l.kind IN ('hold', 'capture', 'release') THEN 1 ELSE 0 END) = 0
        AND SUM(CASE WHEN l.kind = 'debit' THEN 1 ELSE 0 END) = (CASE WHEN t.status = 'SUCCESS' AND EXISTS (
            SELECT 1 FROM topup_events e WHERE e.topup_id = t.id AND e.from_status = 'UNKNOWN') THEN 1 ELSE 0 END)
        AND SUM(CASE WHEN l.kind = 'debit' THEN l.amount ELSE 0 END) = (CASE WHEN t.status = 'SUCCESS' AND EXISTS (
            SELECT 1 FROM topup_events e WHERE e.topup_id = t.id AND e.from_status = 'UNKNOWN') THEN -t.legacy_price ELSE 0 END)
        AND SUM(CASE WHEN l.customer_id <> t.customer_id THEN 1 ELSE 0 END) = 0
     ) AND NOT (
        t.origin = 'recarga'
        AND SUM(CASE WHEN l.kind = 'hold' THEN 1 ELSE 0 END) = 1
        AND SUM(CASE WHEN l.kind = 'hold' THEN l.amount ELSE 0 END) = -t.held
        AND SUM(CASE WHEN l.kind = 'capture' THEN 1 ELSE 0 END)
            = (CASE WHEN t.status = 'SUCCESS' THEN 1 ELSE 0 END)
        AND SUM(CASE WHEN l.kind = 'capture' THEN l.amount ELSE 0 END) = 0
        AND SUM(CASE WHEN l.kind = 'release' THEN 1 ELSE 0 END)
            = (CASE WHEN t.status = 'FAILED' THEN 1 ELSE 0 END)
        AND SUM(CASE WHEN l.kind = 'release' THEN l.amount ELSE 0 END)
            = (CASE WHEN t.status = 'FAILED' THEN t.held ELSE 0 END)
        AND SUM(CASE WHEN l.customer_id <> t.customer_id THEN 1 ELSE 0 END) = 0
     ) ORDER BY t.id";

/// FAILED top-ups with a success on record.
pub(crate) const CONTRADICTED_TOPUPS: &str = "SELECT t.id, t.status, e.kind FROM topups t
     JOIN exchanges e ON e.topup_id = t.id
     WHERE t.status = 'FAILED' AND e.outcome = 'success'
     ORDER BY t.id, e.id";

macro_rules! impl_audit {
    ($store:ty) => {
        impl $store {
            async fn audit_balances(&self, report: &mut $crate::AuditReport) -> $crate::Result<()> {
                let sums: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT c.id, c.balance, c.credit_limit, CAST(COALESCE(SUM(l.amount), 0) AS BIGINT)
                     FROM customers c LEFT JOIN ledger l ON l.customer_id = c.id
                     GROUP BY c.id, c.balance, c.credit_limit ORDER BY c.id",
                )
                .fetch_all(self.read())
                .await?;
                for (id, balance, limit, sum) in sums {
                    if balance != sum {
                        report.violations.push(format!(
                            "customer {id}: balance {balance} but ledger sums to {sum}"
                        ));
                    }
                    if balance < -limit {
                        report.violations.push(format!(
                            "customer {id}: balance {balance} below credit limit -{limit}"
                        ));
                    }
                }
                let drift: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT c.id, c.balance, l.balance_after FROM customers c
                     JOIN ledger l ON l.id = (SELECT MAX(id) FROM ledger WHERE customer_id = c.id)
                     WHERE l.balance_after <> c.balance ORDER BY c.id",
                )
                .fetch_all(self.read())
                .await?;
                for (id, balance, after) in drift {
                    report.violations.push(format!(
                        "customer {id}: last ledger entry says {after}, balance is {balance}"
                    ));
                }
                Ok(())
            }

            async fn audit_topups(&self, report: &mut $crate::AuditReport) -> $crate::Result<()> {
                let bad: Vec<(String, String)> = sqlx::query_as($crate::audit::MISMATCHED_TOPUPS)
                    .fetch_all(self.read())
                    .await?;
                for (id, status) in bad {
                    report.violations.push(format!(
                        "top-up {id} ({status}): holds, captures and releases do not match its state"
                    ));
                }
                let orphans: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM ledger WHERE kind IN ('hold', 'capture', 'release')
                     AND topup_id NOT IN (SELECT id FROM topups)",
                )
                .fetch_one(self.read())
                .await?;
                if orphans > 0 {
                    report.violations.push(format!(
                        "{orphans} ledger entries name a top-up that does not exist"
                    ));
                }
                let contradicted: Vec<(String, String, String)> = sqlx::query_as($crate::audit::CONTRADICTED_TOPUPS)
                    .fetch_all(self.read())
                    .await?;
                let mut seen = std::collections::BTreeSet::new();
                for (id, status, kind) in contradicted {
                    if seen.insert(id.clone()) {
                        report.late_evidence += 1;
                        report.violations.push(format!(
                            "top-up {id} is {status} but a later upstream {kind} answer says otherwise \
                             (late evidence: an operator must look)"
                        ));
                    }
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::audit::AuditStore for $store {
            async fn audit(&self) -> $crate::Result<$crate::AuditReport> {
                let pool = self.read();
                let mut report = $crate::AuditReport::default();
                report.customers = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
                    .fetch_one(pool)
                    .await?;
                report.topups = sqlx::query_scalar("SELECT COUNT(*) FROM topups")
                    .fetch_one(pool)
                    .await?;
                report.ledger_entries = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
                    .fetch_one(pool)
                    .await?;
                self.audit_balances(&mut report).await?;
                self.audit_topups(&mut report).await?;
                Ok(report)
            }
        }
    };
}

pub(crate) use impl_audit;
