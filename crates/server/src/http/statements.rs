//! `GET /v1/statements?from=&to=`: the caller's statement of a period (UTC
//! days, both inclusive): opening balance, every movement, closing balance,
//! and `ties_out` (opening + movements = closing to the centavo); as JSON,
//! or with `format=csv` as a CSV of the movements.

use super::error::ApiError;
use super::extract::Caller;
use crate::state::App;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use recarga_domain::Money;
use recarga_store::StatementEntry;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// One movement of the balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct MovementView {
    /// The ledger entry's id.
    pub id: i64,
    /// ISO 8601, UTC.
    pub at: String,
    /// `hold` (a top-up charged), `capture`, `release` (given back),
    /// `credit`, `debit`, `reversal`, `import` (the opening balance brought
    /// over from the old system).
    pub kind: String,
    /// Signed, in the account's currency.
    pub amount: String,
    pub balance_after: String,
    pub topup_id: Option<String>,
    pub reference: Option<String>,
    pub phone: Option<String>,
    /// What the phone received, MXN.
    pub face_value: Option<String>,
    pub status: Option<String>,
    /// MXN per unit of the account's currency, when it is not MXN.
    pub fx_rate: Option<String>,
    pub reason: Option<String>,
}

/// A statement: opening + movements = closing.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementView {
    pub customer_id: String,
    pub currency: &'static str,
    pub from: String,
    pub to: String,
    pub opening_balance: String,
    pub closing_balance: String,
    /// opening + Σ movements = closing, to the centavo.
    pub ties_out: bool,
    pub movements: Vec<MovementView>,
}

fn movement(m: &StatementEntry) -> MovementView {
    MovementView {
        id: m.id,
        at: crate::views::iso(m.created_at),
        kind: m.kind.clone(),
        amount: Money(m.amount).to_decimal_string(),
        balance_after: Money(m.balance_after).to_decimal_string(),
        topup_id: m.topup_id.clone(),
        reference: m.reference.clone(),
        phone: m.phone.clone(),
        face_value: m.face_value.map(|f| Money(f).to_decimal_string()),
        status: m.status.clone(),
        fx_rate: m.fx_rate_micro.map(crate::views::fx_text),
        reason: m.reason.clone(),
    }
}

fn day(params: &HashMap<String, String>, key: &str) -> Result<NaiveDate, ApiError> {
    let value = params
        .get(key)
        .ok_or_else(|| ApiError::new("invalid_query", format!("{key}: required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::new("invalid_query", format!("{key}: a date as YYYY-MM-DD")))
}

fn csv_body(view: &StatementView) -> Result<Vec<u8>, ApiError> {
    let fail = |_| ApiError::internal("writing the CSV failed");
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "at",
        "kind",
        "amount",
        "balance_after",
        "topup_id",
        "reference",
        "phone",
        "face_value",
        "status",
        "fx_rate",
        "reason",
    ])
    .map_err(fail)?;
    for m in &view.movements {
        let cells = [
            m.id.to_string(),
            m.at.clone(),
            m.kind.clone(),
            m.amount.clone(),
            m.balance_after.clone(),
            m.topup_id.clone().unwrap_or_default(),
            m.reference.clone().unwrap_or_default(),
            m.phone.clone().unwrap_or_default(),
            m.face_value.clone().unwrap_or_default(),
            m.status.clone().unwrap_or_default(),
            m.fx_rate.clone().unwrap_or_default(),
            m.reason.clone().unwrap_or_default(),
        ];
        w.write_record(
            cells
                .iter()
                .map(|c| recarga_domain::spreadsheet::guard_cell(c).into_owned()),
        )
        .map_err(fail)?;
    }
    w.into_inner().map_err(|_| ApiError::internal("writing the CSV failed"))
}

/// The caller's statement of a period.
#[utoipa::path(
    get,
    path = "/v1/statements",
    operation_id = "getStatement",
    tag = "v1",
    params(
        ("from" = String, Query, description = "First UTC day, YYYY-MM-DD."),
        ("to" = String, Query, description = "Last UTC day (inclusive), YYYY-MM-DD; at most 366 days after `from`."),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv` (the movements as `text/csv`)."),
    ),
    responses((status = 200, description = "Opening balance, movements, closing balance.", body = StatementView)),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
pub async fn statement(
    State(app): State<App>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(key) = params.keys().find(|k| !matches!(k.as_str(), "from" | "to" | "format")) {
        return Err(ApiError::new("invalid_query", format!("{key}: unknown parameter")));
    }
    let (from, to) = (day(&params, "from")?, day(&params, "to")?);
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::new("invalid_query", "format: json or csv")),
    };
    let from_ms = from.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis());
    let to_ms = to.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()) + 86_400_000;
    let c = &caller.customer;
    let s = recarga_service::statements::statement(app.store.as_ref(), &c.id, from_ms, to_ms)
        .await
        .map_err(|e| match e {
            recarga_service::ServiceError::Invalid { field, message } => {
                ApiError::new("invalid_query", format!("{field}: {message}"))
            }
            other => ApiError::from(other),
        })?;
    let view = StatementView {
        customer_id: c.id.clone(),
        currency: c.currency.as_str(),
        from: from.to_string(),
        to: to.to_string(),
        opening_balance: s.opening.to_decimal_string(),
        closing_balance: s.closing.to_decimal_string(),
        ties_out: s.ties_out,
        movements: s.movements.iter().map(movement).collect(),
    };
    if csv {
        let name = format!("attachment; filename=\"statement-{}-{from}-{to}.csv\"", c.id);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, name),
            ],
            csv_body(&view)?,
        )
            .into_response());
    }
    Ok(Json(view).into_response())
}
