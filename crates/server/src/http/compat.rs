//! Compatibility routes: the exact request and response shapes of the system
//! Recarga replaces, so existing integrations switch without code changes.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/enviadespensa/topup` | accept and wait (bounded by `RECARGA_SYNC_WAIT_S`) |
//! | `POST /api/enviadespensa/topup-async` | accept, answer at once |
//! | `GET /api/balance` | balance |
//! | `GET /api/transaction/{id}` | one transaction (now authenticated) |
//!
//! Authentication is `x-api-key` + `x-customer-id`, as before. Amounts here
//! are JSON numbers, as the old system sent them; they are written from the
//! integer centavos as exact decimal text, never through a float.

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::app::App;
use crate::topups::{self, TopupBody};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use recarga_domain::{Money, TopupStatus};
use recarga_store::Topup;
use serde::Serialize;
use serde_json::value::RawValue;
use std::time::Duration;
use utoipa::ToSchema;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/enviadespensa/topup", post(topup_sync))
        .route("/api/enviadespensa/topup-async", post(topup_async))
        .route("/api/balance", get(balance))
        .route("/api/transaction/{id}", get(transaction))
}

/// A JSON number written from centavos: `2050` → `20.50`.
fn number(m: Money) -> Box<RawValue> {
    RawValue::from_string(m.to_decimal_string())
        .unwrap_or_else(|_| RawValue::from_string("0".into()).unwrap_or_default())
}

#[derive(Serialize, ToSchema)]
struct CompatTransaction {
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    id: String,
    #[schema(schema_with = super::openapi::topup_status)]
    status: &'static str,
    #[schema(schema_with = super::openapi::decimal_number)]
    amount: Box<RawValue>,
    phone: String,
    reference: String,
    product_id: String,
    upstream_transaction_id: Option<String>,
    carrier_transaction_id: Option<String>,
    error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
}

fn transaction_view(t: &Topup) -> CompatTransaction {
    CompatTransaction {
        id: t.id.clone(),
        status: t.status.as_str(),
        amount: number(t.face_value),
        phone: t.phone.clone(),
        reference: t.reference.clone(),
        product_id: t.product_id.clone(),
        upstream_transaction_id: t.upstream_trans_id.clone(),
        carrier_transaction_id: t.upstream_ven_transid.clone(),
        error: t.failure_message.clone(),
        created_at: super::views::iso(t.created_at),
        completed_at: t.completed_at.map(super::views::iso),
    }
}

fn message_for(status: TopupStatus) -> &'static str {
    match status {
        TopupStatus::Success => "Top-up successful",
        TopupStatus::Failed => "Top-up failed",
        TopupStatus::Unknown => "Outcome not yet confirmed by the carrier; check status later",
        TopupStatus::Pending | TopupStatus::Processing => "Top-up is being processed",
    }
}

/// The old top-up answer. A struct, not `json!`: `json!` would turn the
/// exact amount text back into a float.
#[derive(Serialize, ToSchema)]
struct CompatTopupResponse {
    success: bool,
    message: &'static str,
    transaction: CompatTransaction,
    check_status_url: String,
}

fn topup_response(t: &Topup) -> Response {
    let body = CompatTopupResponse {
        success: t.status != TopupStatus::Failed,
        message: message_for(t.status),
        transaction: transaction_view(t),
        check_status_url: format!("/api/transaction/{}", t.id),
    };
    (super::v1::status_code_for(t.status), Json(body)).into_response()
}

/// Accept a top-up and wait for it (old shape).
///
/// Waits up to `RECARGA_SYNC_WAIT_S` for the final state: 200 when final, else
/// 202 with the transaction still open. `success` is false only for FAILED.
#[utoipa::path(
    post,
    path = "/api/enviadespensa/topup",
    operation_id = "compatTopup",
    tag = "compat",
    request_body = TopupBody,
    responses(
        (status = 200, description = "Final: SUCCESS or FAILED.", body = CompatTopupResponse),
        (status = 202, description = "Accepted; the outcome is still open. Check `check_status_url`.", body = CompatTopupResponse),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn topup_sync(
    State(app): State<App>,
    caller: Caller,
    JsonBody(body): JsonBody<TopupBody>,
) -> Result<Response, ApiError> {
    let input = body.validate()?;
    let wait = Duration::from_secs(app.config.sync_wait_s);
    let submitted = topups::submit(&app, &caller, input, Some(wait)).await?;
    Ok(topup_response(&submitted.topup))
}

/// Accept a top-up and answer at once (old shape).
#[utoipa::path(
    post,
    path = "/api/enviadespensa/topup-async",
    operation_id = "compatTopupAsync",
    tag = "compat",
    request_body = TopupBody,
    responses(
        (status = 200, description = "A replay of a top-up that is already final.", body = CompatTopupResponse),
        (status = 202, description = "Accepted; check `check_status_url`.", body = CompatTopupResponse),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn topup_async(
    State(app): State<App>,
    caller: Caller,
    JsonBody(body): JsonBody<TopupBody>,
) -> Result<Response, ApiError> {
    let input = body.validate()?;
    let submitted = topups::submit(&app, &caller, input, None).await?;
    let mut response = topup_response(&submitted.topup);
    if !submitted.topup.status.is_final() {
        *response.status_mut() = StatusCode::ACCEPTED;
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
struct CompatBalance {
    success: bool,
    customer_id: String,
    #[schema(schema_with = super::openapi::decimal_number)]
    balance: Box<RawValue>,
    #[schema(schema_with = super::openapi::decimal_number)]
    credit_limit: Box<RawValue>,
    currency: &'static str,
}

/// The caller's balance (old shape).
#[utoipa::path(
    get,
    path = "/api/balance",
    operation_id = "compatBalance",
    tag = "compat",
    responses((status = 200, description = "The balance.", body = CompatBalance)),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn balance(caller: Caller) -> Json<CompatBalance> {
    let c = &caller.customer;
    Json(CompatBalance {
        success: true,
        customer_id: c.id.clone(),
        balance: number(c.balance),
        credit_limit: number(c.credit_limit),
        currency: c.currency.as_str(),
    })
}

#[derive(Serialize, ToSchema)]
struct CompatTransactionResponse {
    success: bool,
    transaction: CompatTransaction,
}

/// One transaction of the caller (old shape; now authenticated).
#[utoipa::path(
    get,
    path = "/api/transaction/{id}",
    operation_id = "compatTransaction",
    tag = "compat",
    params(("id" = String, Path, description = "The transaction id.", example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")),
    responses((status = 200, description = "The transaction.", body = CompatTransactionResponse)),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn transaction(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CompatTransactionResponse>, ApiError> {
    if !recarga_domain::valid_topup_id(&id) {
        return Err(ApiError::not_found());
    }
    match app.store.get_topup(&id).await? {
        Some(t) if t.customer_id == caller.customer.id => Ok(Json(CompatTransactionResponse {
            success: true,
            transaction: transaction_view(&t),
        })),
        _ => Err(ApiError::not_found()),
    }
}
