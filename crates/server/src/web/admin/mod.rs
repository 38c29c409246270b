//! The operator panel: overview, customers (create, credit/debit, keys,
//! limits, ledger), transactions (filters, keyset pages, CSV, detail,
//! UNKNOWN resolution) and the audit log.
//!
//! | module | pages |
//! |---|---|
//! | `overview.rs` | `/admin` |
//! | `customers.rs` | customers: list, create, detail (credit/debit, keys, limits, old-system habits, ledger) |
//! | `transactions.rs` | transactions: filters, keyset pages, CSV, detail, UNKNOWN resolution |
//! | `audit.rs` | the audit log |
//! | `reconcile.rs` | reconciliations: statement upload, runs, classes, proposals applied, rows as CSV |
//! | `operators.rs` | operator accounts: list; for admins disable, enable, role, new password |
//!
//! Reads come from the store's read models; every change goes through the
//! services (`recarga_service::customers`, `keys`), the same functions the
//! command line calls, after the session's CSRF token and role were checked;
//! each is one DB transaction, audited with the operator's email as actor.
//! Bad input is a 4xx page and changes nothing.

mod audit;
mod customers;
mod operators;
mod overview;
pub mod reconcile;
mod transactions;

pub use transactions::TxQuery;

use crate::state::App;
use crate::web::auth::OperatorSession;
use axum::Router;
use axum::routing::{get, post};
use recarga_domain::Money;

/// Rows per page of the transaction list.
pub const TX_PAGE_ROWS: i64 = 50;
/// Ledger entries per page on a customer page.
pub const LEDGER_PAGE_ROWS: i64 = 50;
/// Audit rows per page.
pub const AUDIT_PAGE_ROWS: i64 = 100;
/// A customer whose available funds fall below this is "near its limit".
pub const NEAR_LIMIT_AVAILABLE: Money = Money::major(1_000);
/// … or who used this share (percent) of its rolling 24 h limit.
pub const NEAR_LIMIT_DAILY_PCT: i64 = 80;
/// Above this p95 upstream latency (ms) the upstream counts as slow.
pub const SLOW_P95_MS: i64 = 10_000;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(overview::overview))
        .route("/admin/", get(overview::overview))
        .route(
            "/admin/customers",
            get(customers::customers).post(customers::create_customer),
        )
        .route("/admin/customers/new", get(customers::new_customer))
        .route("/admin/customers/{id}", get(customers::customer_page))
        .route("/admin/customers/{id}/adjust", post(customers::adjust))
        .route("/admin/customers/{id}/keys", post(customers::issue_key))
        .route(
            "/admin/customers/{id}/keys/{key_id}/revoke",
            post(customers::revoke_key),
        )
        .route("/admin/customers/{id}/limits", post(customers::limits))
        .route("/admin/customers/{id}/legacy", post(customers::legacy_settings))
        .route("/admin/transactions", get(transactions::transactions))
        .route("/admin/transactions.csv", get(transactions::transactions_csv))
        .route("/admin/transactions/{id}", get(transactions::transaction))
        .route("/admin/transactions/{id}/resolve", post(transactions::resolve))
        .route("/admin/audit", get(audit::audit))
        .route("/admin/operators", get(operators::operators_page))
        .route("/admin/operators/{email}/disable", post(operators::disable))
        .route("/admin/operators/{email}/enable", post(operators::enable))
        .route("/admin/operators/{email}/role", post(operators::set_role))
        .route("/admin/operators/{email}/password", post(operators::reset_password))
        .route("/admin/reconciliations", get(reconcile::runs))
        .route(
            "/admin/reconciliations/upload",
            post(reconcile::upload).layer(axum::extract::DefaultBodyLimit::max(reconcile::UPLOAD_MAX_BYTES)),
        )
        .route("/admin/reconciliations/{id}", get(reconcile::run_page))
        .route("/admin/reconciliations/{id}/rows.csv", get(reconcile::rows_csv))
        .route("/admin/reconciliations/{id}/pack.zip", get(reconcile::pack_zip))
        .route("/admin/reconciliations/{id}/apply", post(reconcile::apply))
}

/// What every operator page shows around its content.
pub struct Chrome {
    pub actor: String,
    pub role: String,
    pub csrf: String,
    pub is_admin: bool,
    /// Which nav entry is current.
    pub tab: &'static str,
    pub sandbox: bool,
}

impl Chrome {
    pub fn new(op: &OperatorSession, app: &App, tab: &'static str) -> Self {
        Chrome {
            actor: op.actor().to_string(),
            role: op.session.role.clone(),
            csrf: op.csrf().to_string(),
            is_admin: op.is_admin(),
            tab,
            sandbox: app.is_sandbox(),
        }
    }
}

/// Midnight UTC of today, in ms.
pub fn today_start_ms() -> i64 {
    let now = chrono::Utc::now();
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// `ok`, `slow`, `ip_blocked` or `down`, from the adapter and recent latency.
pub fn upstream_state(app: &App, p95_ms: Option<i64>) -> (&'static str, String) {
    let h = app.provider.health();
    if !h.ok {
        let state = if h.state.contains("ip_not_authorized") {
            "ip_blocked"
        } else {
            "down"
        };
        return (state, format!("{}: {}", h.state, h.detail));
    }
    if p95_ms.is_some_and(|p| p > SLOW_P95_MS) {
        return ("slow", format!("p95 above {} s", SLOW_P95_MS / 1000));
    }
    ("ok", h.detail)
}

/// p50 and p95 of `samples` (ms).
pub fn percentiles(mut samples: Vec<i64>) -> (Option<i64>, Option<i64>) {
    if samples.is_empty() {
        return (None, None);
    }
    samples.sort_unstable();
    let at = |p: usize| samples[((samples.len() - 1) * p) / 100];
    (Some(at(50)), Some(at(95)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        assert_eq!(percentiles(vec![]), (None, None));
        assert_eq!(percentiles(vec![7]), (Some(7), Some(7)));
        let (p50, p95) = percentiles((1..=100).rev().collect());
        assert_eq!((p50, p95), (Some(50), Some(95)));
    }
}
