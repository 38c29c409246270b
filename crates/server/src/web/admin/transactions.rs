//! Transactions: filters, keyset pages over the whole history, CSV of
//! exactly the filter, a top-up's detail and the resolution of an UNKNOWN.

use super::Chrome;
use super::TX_PAGE_ROWS;
use super::audit::AuditRow;
use super::customers::LedgerRow;
use crate::state::App;
use crate::web::auth::OperatorSession;
use crate::web::{TopupRow, money, when};
use crate::web::{WebError, render};
use askama::Template;
use axum::extract::State;
use axum::extract::{Form, Path, Query};
use axum::response::Response;
use axum::response::{IntoResponse, Redirect};
use recarga_domain::TopupStatus;
use recarga_store::{FinalOutcome, Resolution, TopupSearch};
use serde::Deserialize;

/// The transaction filter, as the query string carries it.
#[derive(Deserialize, Default, Clone)]
pub struct TxQuery {
    #[serde(default)]
    pub customer: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub after: String,
}

fn day_start_ms(field: &str, text: &str) -> Result<i64, WebError> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .ok_or_else(|| WebError::bad_input(format!("{field}: {text:?} is not a date like 2026-11-30.")))
}

impl TxQuery {
    /// The store search for this filter (without the cursor's page size).
    pub fn search(&self) -> Result<TopupSearch, WebError> {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|v| !v.is_empty());
        let status = match self.status.trim() {
            "" => None,
            s => Some(TopupStatus::parse(s).ok_or_else(|| WebError::bad_input(format!("Unknown status {s:?}.")))?),
        };
        let from_ms = match self.from.trim() {
            "" => None,
            s => Some(day_start_ms("From", s)?),
        };
        let to_ms = match self.to.trim() {
            "" => None,
            s => Some(day_start_ms("To", s)? + 24 * 3600 * 1000),
        };
        // Phones are stored as 10 national digits; accept what people type.
        let phone = opt(&self.phone).map(|p| match recarga_domain::Msisdn::parse(&p) {
            Ok(m) => m.as_str().to_string(),
            Err(_) => p,
        });
        Ok(TopupSearch {
            customer_id: opt(&self.customer),
            status,
            from_ms,
            to_ms,
            phone,
            reference: opt(&self.reference),
            id: opt(&self.id),
            before_id: opt(&self.after),
            limit: TX_PAGE_ROWS,
        })
    }

    /// This filter as a query string, without the cursor.
    pub fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("customer", &self.customer),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("phone", &self.phone),
            ("reference", &self.reference),
            ("id", &self.id),
        ] {
            if !v.trim().is_empty() {
                parts.push(format!("{k}={}", crate::web::q(v.trim())));
            }
        }
        parts.join("&")
    }
}

#[derive(Template)]
#[template(path = "admin_transactions.html")]
struct TransactionsPage {
    chrome: Chrome,
    f: TxQuery,
    rows: Vec<TopupRow>,
    next: Option<String>,
    csv: String,
    statuses: [&'static str; 5],
    customers: Vec<String>,
}

pub(super) async fn transactions(
    State(app): State<App>,
    op: OperatorSession,
    Query(f): Query<TxQuery>,
) -> Result<Response, WebError> {
    let mut search = f.search()?;
    search.limit = TX_PAGE_ROWS + 1;
    let mut found = app.store.search_topups(&search).await?;
    let qs = f.query_string();
    let next = if found.len() as i64 > TX_PAGE_ROWS {
        found.truncate(TX_PAGE_ROWS as usize);
        found.last().map(|t| {
            let sep = if qs.is_empty() { "" } else { "&" };
            format!("/admin/transactions?{qs}{sep}after={}", crate::web::q(&t.id))
        })
    } else {
        None
    };
    let csv = if qs.is_empty() {
        "/admin/transactions.csv".to_string()
    } else {
        format!("/admin/transactions.csv?{qs}")
    };
    let customers = app.store.list_customers().await?.into_iter().map(|c| c.id).collect();
    render(&TransactionsPage {
        chrome: Chrome::new(&op, &app, "transactions"),
        rows: found.iter().map(TopupRow::from).collect(),
        f,
        next,
        csv,
        statuses: ["PENDING", "PROCESSING", "SUCCESS", "FAILED", "UNKNOWN"],
        customers,
    })
}

pub(super) async fn transactions_csv(
    State(app): State<App>,
    _op: OperatorSession,
    Query(f): Query<TxQuery>,
) -> Result<Response, WebError> {
    let mut search = f.search()?;
    search.before_id = None;
    Ok(crate::web::export::csv_response(app, search, "transactions.csv"))
}

struct EventRow {
    from: String,
    to: String,
    actor: String,
    reason: String,
    at: String,
}

struct ExchangeRow {
    kind: String,
    outcome: String,
    http_status: String,
    detail: String,
    trans_id: String,
    ven_transid: String,
    started: String,
    latency: String,
    request: String,
    response: String,
}

#[derive(Template)]
#[template(path = "admin_transaction.html")]
struct TransactionPage {
    chrome: Chrome,
    t: TopupRow,
    product: String,
    amount_sent: String,
    trans_id: String,
    ven_transid: String,
    completed: String,
    attempts: i64,
    checks: i64,
    unknown: bool,
    events: Vec<EventRow>,
    ledger: Vec<LedgerRow>,
    exchanges: Vec<ExchangeRow>,
    audit: Vec<AuditRow>,
}

pub(super) async fn transaction(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let t = app.store.get_topup(&id).await?.ok_or_else(WebError::not_found)?;
    let events = app
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|e| EventRow {
            from: e.from_status.unwrap_or_else(|| "—".into()),
            to: e.to_status,
            actor: e.actor,
            reason: e.reason.unwrap_or_default(),
            at: when(e.created_at),
        })
        .collect();
    let ledger = app
        .store
        .topup_ledger(&id)
        .await?
        .iter()
        .map(|e| LedgerRow::from(e, t.currency.as_str()))
        .collect();
    let exchanges = app
        .store
        .exchanges(&id)
        .await?
        .into_iter()
        .map(|e| ExchangeRow {
            kind: e.kind.as_str().to_string(),
            outcome: e.outcome.as_str().to_string(),
            http_status: e.http_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            detail: e.detail.unwrap_or_default(),
            trans_id: e.trans_id.unwrap_or_default(),
            ven_transid: e.ven_transid.unwrap_or_default(),
            started: when(e.started_at),
            latency: format!("{} ms", e.ended_at - e.started_at),
            request: e.request.unwrap_or_default(),
            response: e.response.unwrap_or_default(),
        })
        .collect();
    let audit = app
        .store
        .audit_entries(Some(&id), None, 50)
        .await?
        .iter()
        .map(AuditRow::from)
        .collect();
    render(&TransactionPage {
        chrome: Chrome::new(&op, &app, "transactions"),
        product: t.product_id.clone(),
        amount_sent: money(t.amount_sent, "MXN"),
        trans_id: t.upstream_trans_id.clone().unwrap_or_default(),
        ven_transid: t.upstream_ven_transid.clone().unwrap_or_default(),
        completed: t.completed_at.map(when).unwrap_or_default(),
        attempts: t.attempts,
        checks: t.checks,
        unknown: t.status == TopupStatus::Unknown,
        t: TopupRow::from(&t),
        events,
        ledger,
        exchanges,
        audit,
    })
}

#[derive(Deserialize)]
pub(super) struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn resolve(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<ResolveForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let outcome = match f.outcome.as_str() {
        "success" => FinalOutcome::Success,
        "failed" => FinalOutcome::Failed,
        _ => return Err(WebError::bad_input("Choose success or failed.")),
    };
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(WebError::bad_input("A reason is required to resolve a top-up."));
    }
    let resolution = Resolution {
        topup_id: id.clone(),
        outcome,
        actor: op.actor().to_string(),
        reason: reason.to_string(),
        trans_id: None,
        ven_transid: None,
        exchange: None,
    };
    let t = recarga_service::customers::resolve(app.store.as_ref(), &resolution).await?;
    app.hub.topup_event(&t);
    Ok(Redirect::to(&format!("/admin/transactions/{}", crate::web::q(&id))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_dates_inclusively_and_keep_the_query() {
        let f = TxQuery {
            customer: "A B".into(),
            from: "2026-11-30".into(),
            to: "2026-11-30".into(),
            phone: "+52 55 1234 5678".into(),
            status: "success".into(),
            ..TxQuery::default()
        };
        let s = f.search().expect("valid");
        assert_eq!(s.to_ms.zip(s.from_ms).map(|(t, f)| t - f), Some(24 * 3600 * 1000));
        assert_eq!(s.phone.as_deref(), Some("5512345678"));
        assert_eq!(s.status, Some(TopupStatus::Success));
        assert_eq!(
            f.query_string(),
            "customer=A%20B&status=success&from=2026-11-30&to=2026-11-30&phone=%2B52%2055%201234%205678"
        );
        let bad_date = TxQuery {
            from: "30/11/2026".into(),
            ..TxQuery::default()
        };
        let bad_status = TxQuery {
            status: "DONE".into(),
            ..TxQuery::default()
        };
        assert!(bad_date.search().is_err() && bad_status.search().is_err());
    }
}
