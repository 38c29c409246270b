//! A customer's statement of a period: opening balance, every movement
//! (holds of top-ups, captures, releases, credits, debits, the opening
//! `import` of a migrated customer), closing balance, and the check that
//! opening + movements = closing to the centavo.

use crate::error::{Result, ServiceError};
use recarga_domain::Money;
use recarga_store::{StatementEntry, Store};

/// Longest period one statement covers.
pub const STATEMENT_DAYS_MAX: i64 = 366;

/// What a statement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub opening: Money,
    pub closing: Money,
    pub movements: Vec<StatementEntry>,
    /// opening + Σ movements = closing.
    pub ties_out: bool,
}

/// The statement of `customer_id` for `[from_ms, to_ms)`.
pub async fn statement(store: &dyn Store, customer_id: &str, from_ms: i64, to_ms: i64) -> Result<Statement> {
    if to_ms <= from_ms {
        return Err(ServiceError::invalid("to", "the period ends before it starts"));
    }
    if to_ms - from_ms > STATEMENT_DAYS_MAX * 86_400_000 {
        return Err(ServiceError::invalid(
            "to",
            format!("a statement covers at most {STATEMENT_DAYS_MAX} days"),
        ));
    }
    let (opening, movements) = store.statement_entries(customer_id, from_ms, to_ms).await?;
    let opening = Money(opening.unwrap_or(0));
    let closing = Money(movements.last().map_or(opening.0, |m| m.balance_after));
    let sum: i64 = movements.iter().map(|m| m.amount).sum();
    let ties_out = opening.0 + sum == closing.0;
    if !ties_out {
        tracing::error!(
            customer_id,
            opening = opening.0,
            sum,
            closing = closing.0,
            "a statement does not tie out"
        );
    }
    Ok(Statement {
        opening,
        closing,
        movements,
        ties_out,
    })
}
