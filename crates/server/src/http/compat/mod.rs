//! Compatibility routes: the old system's published contract, key by key and
//! type by type, so that a client written from its integration guides runs
//! unchanged (only the base URL changes).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/enviadespensa/topup` | accept and wait (bounded by `RECARGA_SYNC_WAIT_S`, under the guides' 30 s client timeout) |
//! | `POST /api/enviadespensa/topup-async` | accept, answer at once (200, as before) |
//! | `GET /api/balance` | balance |
//! | `GET /api/transaction/{id}` | one transaction: the old row's keys; without credentials only where the customer's `public_status` allows it |
//!
//! What the old code sent wins where its guides differ (numbers vs strings,
//! `exchange_rate` in USD per MXN, HTTP statuses), plus:
//! - both the `RateLimit-*` headers it sent and the `X-RateLimit-*` its guides
//!   documented;
//! - no false success: `success: true` only for SUCCESS (and an accepted async
//!   top-up); a sync wait that ends with the top-up open answers 202 with
//!   `success: false`;
//! - old clients know only PENDING, SUCCESS and FAILED: PROCESSING and UNKNOWN
//!   show as `PENDING`, our state is in an added `state` key;
//! - the `_usd` keys carry the amount in the account's currency (USD for
//!   migrated accounts, MXN for MXN accounts, where `exchange_rate` is 1).
//!
//! Errors are `{"success": false, "error": <the old text>, …the old keys,
//! "code", "request_id"}`. Validation runs before authentication, as in the
//! old system. Every amount is written from integer centavos as exact decimal
//! text, never through a float.

mod errors;
mod reply;
mod request;

pub use reply::{CompatError, CompatFieldError, CompatTransaction, legacy_status};

use super::error::ApiError;
use super::extract::{AuthRules, Caller, authenticate, header};
use crate::ratelimit::RateDecision;
use crate::state::App;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use errors::{Asked, Route, compat_limit, legacy_error, over_limit, rate_headers, submit_error};
use recarga_domain::{Money, TopupStatus};
use recarga_service::accept::{self, Door, Requester, TopupInput};
use reply::{
    CompatBalance, CompatTopupResponse, CompatTransactionResponse, billing, key, number, provider_label, raw,
    response_time_ms, row_view, text_value, transaction_view,
};
use request::{LegacyRequest, parse_request};
use std::time::Duration;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/enviadespensa/topup", post(topup_sync))
        .route("/api/enviadespensa/topup-async", post(topup_async))
        .route("/api/balance", get(balance))
        .route("/api/transaction/{id}", get(transaction))
}

/// Runs a handler body, renders its error in the old shape and adds the rate headers.
async fn finish(result: Result<Response, ApiError>, rate: Option<RateDecision>, route: Route) -> Response {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => legacy_error(e, route).into_response(),
    };
    if let Some(rate) = rate {
        rate_headers(&mut response, &rate);
    }
    response
}

async fn accept(
    app: &App,
    parts: &Parts,
    body: Body,
    route: Route,
) -> (Result<Response, ApiError>, Option<RateDecision>) {
    let bytes = match axum::body::to_bytes(body, super::extract::BODY_LIMIT_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::new("payload_too_large", "the body is too large");
            return (Err(e), None);
        }
    };
    // Validation first, then credentials, as the old system did.
    let request = match parse_request(parts, &bytes) {
        Ok(r) => r,
        Err(e) => return (Err(e), None),
    };
    let caller = match authenticate(parts, app, AuthRules::default()).await {
        Ok(c) => c,
        Err(e) => return (Err(e), None),
    };
    let rate = compat_limit(app, &caller.customer.id, true).await;
    if let Some(r) = rate.filter(|r| !r.allowed) {
        return (Err(over_limit(&r, true)), rate);
    }
    (submit(app, parts, &caller, request, route).await, rate)
}

async fn submit(
    app: &App,
    parts: &Parts,
    caller: &Caller,
    request: LegacyRequest,
    route: Route,
) -> Result<Response, ApiError> {
    let idempotency_key = super::body::idempotency_key(&parts.headers)?;
    let input = TopupInput {
        phone: request.phone.clone(),
        amount: request.amount,
        reference: request.reference.clone(),
        idempotency_key,
    };
    let wait = (route == Route::Sync).then(|| Duration::from_secs(app.config.sync_wait_s));
    let who = Requester {
        customer: &caller.customer,
        request_id: caller.request_id.as_deref(),
    };
    let submitted = accept::submit(&app.svc, who, input, wait, Door::Compat)
        .await
        .map_err(|e| {
            let asked = Asked {
                amount: request.amount,
                amount_as_sent: &request.amount_as_sent,
            };
            submit_error(e, &caller.customer, asked)
        })?;
    let t = &submitted.topup;
    let view = transaction_view(app, t, Some(&request.phone_as_sent));
    let check_status_url = format!("/api/transaction/{}", t.id);
    let billed = billing(app, t).await;
    let retried = submitted
        .restarted_from
        .as_ref()
        .map(|old| format!(" The reference was used by failed top-up {old}; this is a new top-up."))
        .unwrap_or_default();
    let (status, success, message, error) = match (route, t.status) {
        (_, TopupStatus::Success) => (
            StatusCode::OK,
            true,
            format!(
                "Top-up of {} MXN processed successfully via {}. ${} {} deducted from balance.{retried}",
                t.face_value,
                provider_label(app),
                t.held,
                t.currency.as_str()
            ),
            None,
        ),
        (_, TopupStatus::Failed) => {
            // The old system answered every failure after the provider call
            // with 500 and this text; the guides tell clients to retry, and a
            // retry of this reference starts a new top-up.
            let reason = t.failure_message.clone().unwrap_or_else(|| "failed".into());
            let mut keys = vec![
                key("provider", text_value(provider_label(app))),
                key(
                    "response_time_ms",
                    raw(response_time_ms(app, &t.id).await.unwrap_or(0).to_string()),
                ),
            ];
            if let Ok(tx) = serde_json::to_string(&view) {
                keys.push(key("transaction", raw(tx)));
            }
            keys.push(key("check_status_url", text_value(&check_status_url)));
            return Err(ApiError::new("topup_failed", reason.clone()).legacy(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Provider ({}) top-up failed: {reason}", provider_label(app)),
                keys,
            ));
        }
        (Route::Async, _) => (
            StatusCode::OK,
            true,
            format!("Transaction queued for processing{retried}"),
            None,
        ),
        _ => (
            StatusCode::ACCEPTED,
            false,
            format!("Top-up accepted and still processing{retried}"),
            Some(format!(
                "Top-up still processing; check {check_status_url} for the result (do not send it again)"
            )),
        ),
    };
    let (billing, remaining) = match billed {
        Some((b, r)) => (Some(b), Some(r)),
        None => (None, None),
    };
    let body = CompatTopupResponse {
        success,
        message,
        error,
        transaction: view,
        billing,
        remaining_balance: remaining,
        check_status_url,
        replayed: submitted.replayed,
    };
    Ok((status, Json(body)).into_response())
}

/// Accept a top-up and wait for it (the old shape).
///
/// 200 `success: true` when it succeeded; 500 with the old `Provider (…)
/// top-up failed` text when it definitely failed (nothing charged; a retry
/// with the same reference starts a new top-up); 202 `success: false` when
/// it is still open after `RECARGA_SYNC_WAIT_S` (poll `check_status_url`,
/// never send it again).
#[utoipa::path(
    post,
    path = "/api/enviadespensa/topup",
    operation_id = "compatTopup",
    tag = "compat",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; the only idempotency of a customer with the `free` reference policy.")),
    request_body = super::shapes::CompatTopupRequest,
    responses(
        (status = 200, description = "SUCCESS.", body = CompatTopupResponse, headers(
            ("ratelimit-limit" = String, description = "Top-ups allowed per window."),
            ("x-ratelimit-remaining" = String, description = "Left in this window."),
        )),
        (status = 202, description = "Accepted, still open after the wait (`success: false`). Poll `check_status_url`.", body = CompatTopupResponse),
        (status = 400, description = "`Validation failed` (with `details`), `Invalid product amount`.", body = reply::CompatError),
        (status = 401, description = "`Invalid API credentials` (also for a deactivated customer).", body = reply::CompatError),
        (status = 403, description = "`Insufficient balance` or `IP address not authorized`.", body = reply::CompatError),
        (status = 409, description = "A request with this `Idempotency-Key` is still processing.", body = reply::CompatError),
        (status = 413, description = "`Request body too large`.", body = reply::CompatError),
        (status = 429, description = "`Daily transaction limit exceeded` or a rate limit (with `Retry-After`).", body = reply::CompatError),
        (status = 500, description = "`Provider (…) top-up failed: …`: a definite failure, nothing charged.", body = reply::CompatError),
        (status = 503, description = "`Database not available`: retry with the same reference.", body = reply::CompatError),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn topup_sync(State(app): State<App>, parts: Parts, body: Body) -> Response {
    let (result, rate) = accept(&app, &parts, body, Route::Sync).await;
    finish(result, rate, Route::Sync).await
}

/// Accept a top-up and answer at once (the old shape, 200).
#[utoipa::path(
    post,
    path = "/api/enviadespensa/topup-async",
    operation_id = "compatTopupAsync",
    tag = "compat",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; the only idempotency of a customer with the `free` reference policy.")),
    request_body = super::shapes::CompatTopupRequest,
    responses(
        (status = 200, description = "Accepted (`status` PENDING), or a replay of an earlier request.", body = CompatTopupResponse),
        (status = 400, description = "`Validation failed` (with `details`), `Invalid product amount`.", body = reply::CompatError),
        (status = 401, description = "`Invalid API credentials` (also for a deactivated customer).", body = reply::CompatError),
        (status = 403, description = "`Insufficient balance` or `IP address not authorized`.", body = reply::CompatError),
        (status = 409, description = "A request with this `Idempotency-Key` is still processing.", body = reply::CompatError),
        (status = 413, description = "`Request body too large`.", body = reply::CompatError),
        (status = 429, description = "`Daily transaction limit exceeded` or a rate limit (with `Retry-After`).", body = reply::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = reply::CompatError),
        (status = 503, description = "`Database not available`: retry with the same reference.", body = reply::CompatError),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn topup_async(State(app): State<App>, parts: Parts, body: Body) -> Response {
    let (result, rate) = accept(&app, &parts, body, Route::Async).await;
    finish(result, rate, Route::Async).await
}

/// The caller's balance (the old shape).
#[utoipa::path(
    get,
    path = "/api/balance",
    operation_id = "compatBalance",
    tag = "compat",
    responses(
        (status = 200, description = "The balance.", body = CompatBalance),
        (status = 401, description = "`Invalid credentials`.", body = reply::CompatError),
        (status = 403, description = "`IP address not authorized`.", body = reply::CompatError),
        (status = 429, description = "`Too many requests, please try again later` (with `Retry-After`).", body = reply::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = reply::CompatError),
        (status = 503, description = "`Database not available`.", body = reply::CompatError),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn balance(State(app): State<App>, parts: Parts) -> Response {
    // The old balance route did not check the active flag.
    let caller = match authenticate(&parts, &app, AuthRules { allow_inactive: true }).await {
        Ok(c) => c,
        Err(e) => return finish(Err(e), None, Route::Balance).await,
    };
    let rate = compat_limit(&app, &caller.customer.id, false).await;
    if let Some(r) = rate.filter(|r| !r.allowed) {
        return finish(Err(over_limit(&r, false)), rate, Route::Balance).await;
    }
    let c = &caller.customer;
    let body = CompatBalance {
        success: true,
        customer_id: c.id.clone(),
        company_name: Some(c.name.clone()),
        current_balance: number(c.balance),
        credit_limit: number(c.credit_limit),
        currency: c.currency.as_str(),
        balance: number(c.balance),
        available: number(Money(c.balance.0 + c.credit_limit.0)),
    };
    finish(Ok(Json(body).into_response()), rate, Route::Balance).await
}

/// One transaction (the old row's keys).
///
/// With credentials (`x-api-key` + `x-customer-id`), the caller's own
/// transactions. Without, only where the transaction's customer turned
/// `public_status` on, and only for unguessable ids (`RLR` + 32 hex digits,
/// never the old `RLR` + 13-digit ids): 401 otherwise.
#[utoipa::path(
    get,
    path = "/api/transaction/{id}",
    operation_id = "compatTransaction",
    tag = "compat",
    params(("id" = String, Path, description = "The transaction id.", example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")),
    responses(
        (status = 200, description = "The transaction.", body = CompatTransactionResponse),
        (status = 401, description = "No credentials, and the transaction is not publicly readable.", body = reply::CompatError),
        (status = 403, description = "`IP address not authorized`.", body = reply::CompatError),
        (status = 404, description = "`Transaction not found`.", body = reply::CompatError),
        (status = 429, description = "`Too many requests, please try again later` (with `Retry-After`).", body = reply::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = reply::CompatError),
        (status = 503, description = "`Database not available`.", body = reply::CompatError),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = []), ()),
)]
async fn transaction(State(app): State<App>, Path(id): Path<String>, parts: Parts) -> Response {
    let credentials = header(&parts, "x-api-key").is_some() || header(&parts, "authorization").is_some();
    let (result, rate) = if credentials {
        match authenticate(&parts, &app, AuthRules { allow_inactive: true }).await {
            Ok(caller) => {
                let rate = compat_limit(&app, &caller.customer.id, false).await;
                (read_own(&app, &id, Some(&caller), rate).await, rate)
            }
            Err(e) => (Err(e), None),
        }
    } else {
        let who = super::extract::client_ip(&parts, &app)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "unknown".into());
        let rate = compat_limit(&app, &format!("ip:{who}"), false).await;
        (read_own(&app, &id, None, rate).await, rate)
    };
    finish(result, rate, Route::Status).await
}

async fn read_own(
    app: &App,
    id: &str,
    caller: Option<&Caller>,
    rate: Option<RateDecision>,
) -> Result<Response, ApiError> {
    if let Some(r) = rate.filter(|r| !r.allowed) {
        return Err(over_limit(&r, false));
    }
    let no_credentials = || {
        ApiError::new("missing_api_key", "present x-api-key and x-customer-id").legacy(
            StatusCode::UNAUTHORIZED,
            "Invalid API credentials",
            Vec::new(),
        )
    };
    if !recarga_domain::valid_topup_id(id) {
        return Err(match caller {
            Some(_) => ApiError::not_found(),
            None => no_credentials(),
        });
    }
    let topup = app.store.get_topup(id).await?;
    let topup = match (topup, caller) {
        (Some(t), Some(c)) if t.customer_id == c.customer.id => t,
        (_, Some(_)) => return Err(ApiError::not_found()),
        (Some(t), None) if recarga_domain::is_own_id(&t.id) => {
            // Readable without credentials only where its customer allows it.
            match app.store.get_customer(&t.customer_id).await? {
                Some(c) if c.public_status => t,
                _ => return Err(no_credentials()),
            }
        }
        (_, None) => return Err(no_credentials()),
    };
    let latency = response_time_ms(app, &topup.id).await;
    let body = CompatTransactionResponse {
        success: true,
        transaction: row_view(app, &topup, latency),
    };
    Ok(Json(body).into_response())
}
