//! The canonical JSON API under `/v1`.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/topups` | accept a top-up; `Prefer: wait=N` waits up to N s (≤ 30) |
//! | `GET /v1/topups/{id}` | one top-up of the caller |
//! | `GET /v1/topups?reference=&status=&phone=&limit=&cursor=` | the caller's top-ups, newest first |
//! | `GET /v1/balance` | the caller's balance |
//! | `GET /v1/products` | what the caller may buy |

use super::body::{TopupBody, idempotency_key};
use super::error::ApiError;
use super::extract::{Caller, JsonBody, PreferWait};
use crate::state::App;
use crate::views::{BalanceView, TopupView};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use recarga_domain::{Money, Msisdn, TopupStatus};
use recarga_service::ServiceError;
use recarga_service::accept::{self, Door, Requester};
use recarga_store::Customer;
use recarga_store::TopupFilter;
use std::collections::HashMap;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/topups", post(create_topup).get(list_topups))
        .route("/v1/topups/{id}", get(get_topup))
        .route("/v1/balance", get(balance))
        .route("/v1/products", get(products))
}

/// 200 when final, 202 while the outcome is still open.
pub fn status_code_for(status: TopupStatus) -> StatusCode {
    if status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

/// Accept a top-up.
///
/// Answers at once with 202 and the accepted top-up, unless `Prefer: wait=N`
/// asks to wait up to N seconds (at most 30) for its final state: then 200 if
/// it became final within the wait, else 202 with the same top-up, whose
/// outcome is still open (never a false failure). Sending the same
/// `reference` with the same phone and amount again answers with the
/// original top-up (`idempotent-replayed: true`); nothing is charged twice.
#[utoipa::path(
    post,
    path = "/v1/topups",
    operation_id = "createTopup",
    tag = "v1",
    params(
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds (capped at 30) for a final state.", example = "wait=10"),
        ("Idempotency-Key" = Option<String>, Header, description = "A key of your own (1-255 printable ASCII characters): a repeat with the same phone and amount replays, with another phone or amount is `reference_reused`, during a waiting synchronous request is `request_in_flight`. Under the `free` reference policy it is the only idempotency."),
    ),
    request_body = TopupBody,
    responses(
        (status = 200, description = "Final within the wait: SUCCESS or FAILED (a failure is in `failure`).", body = TopupView, headers(
            ("location" = String, description = "`/v1/topups/{id}` of this top-up."),
            ("idempotent-replayed" = String, description = "`true` when this answers an earlier request with the same reference."),
            ("preference-applied" = String, description = "`wait=N` when `Prefer: wait=N` was honoured (N capped at 30)."),
        )),
        (status = 202, description = "Accepted; the outcome is still open (PENDING, PROCESSING or UNKNOWN). Poll `GET /v1/topups/{id}`.", body = TopupView, headers(
            ("location" = String, description = "`/v1/topups/{id}` of this top-up."),
            ("idempotent-replayed" = String, description = "`true` when this answers an earlier request with the same reference."),
            ("preference-applied" = String, description = "`wait=N` when `Prefer: wait=N` was honoured (N capped at 30)."),
        )),
    ),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
async fn create_topup(
    State(app): State<App>,
    caller: Caller,
    PreferWait(wait): PreferWait,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<TopupBody>,
) -> Result<Response, ApiError> {
    let mut input = body.validate()?;
    input.idempotency_key = idempotency_key(&headers)?;
    let who = Requester {
        customer: &caller.customer,
        request_id: caller.request_id.as_deref(),
    };
    let face = input.amount;
    let submitted = accept::submit(&app.svc, who, input, wait, Door::V1)
        .await
        .map_err(|e| amount_refusal(e, &caller.customer, face))?;
    let mut response = (
        status_code_for(submitted.topup.status),
        Json(TopupView::from(&submitted.topup)),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/topups/{}", submitted.topup.id)) {
        headers.insert("location", location);
    }
    if submitted.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(w) = wait
        && let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs()))
    {
        headers.insert("preference-applied", v);
    }
    Ok(response)
}

/// `amount_not_exact` (an open-range amount no whole-centavo amount delivers
/// exactly once VAT is added) or `amount_not_available`, each with the
/// nearest amounts the caller can buy; any other error as usual.
fn amount_refusal(e: ServiceError, customer: &Customer, face: Money) -> ApiError {
    let ServiceError::NotAvailable(products) = e else {
        return e.into();
    };
    let (inexact, nearest) = crate::views::nearest_amounts(customer, face);
    let nearest: Vec<String> = nearest.iter().map(|m| m.to_decimal_string()).collect();
    let allowed: Vec<_> = products.iter().map(crate::views::product_json).collect();
    let error = if inexact {
        ApiError::new(
            "amount_not_exact",
            format!(
                "{face} MXN cannot be delivered exactly (the open range sends whole centavos plus 16 % VAT); \
                 the nearest amounts that can: {}",
                nearest.join(", ")
            ),
        )
    } else {
        ApiError::new("amount_not_available", "no product delivers exactly this amount")
    };
    error.with_details(serde_json::json!({
        "requested": face.to_decimal_string(),
        "nearest": nearest,
        "allowed": allowed,
    }))
}

/// One top-up of the caller.
///
/// Another customer's top-up answers `not_found`, like a missing one.
#[utoipa::path(
    get,
    path = "/v1/topups/{id}",
    operation_id = "getTopup",
    tag = "v1",
    params(("id" = String, Path, description = "The top-up id (`RLR` + 32 hex digits).", example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")),
    responses((status = 200, description = "The top-up.", body = TopupView)),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
async fn get_topup(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TopupView>, ApiError> {
    if !recarga_domain::valid_topup_id(&id) {
        return Err(ApiError::not_found());
    }
    match app.store.get_topup(&id).await? {
        // Another customer's top-up is indistinguishable from a missing one.
        Some(t) if t.customer_id == caller.customer.id => Ok(Json(TopupView::from(&t))),
        _ => Err(ApiError::not_found()),
    }
}

pub const LIST_LIMIT_DEFAULT: i64 = 50;
pub const LIST_LIMIT_MAX: i64 = 500;

/// The caller's top-ups, newest first.
#[utoipa::path(
    get,
    path = "/v1/topups",
    operation_id = "listTopups",
    tag = "v1",
    params(
        ("reference" = Option<String>, Query, description = "Only the top-up with this reference."),
        ("status" = Option<String>, Query, description = "Only top-ups in this state (`TopupStatus`, any case)."),
        ("phone" = Option<String>, Query, description = "Only top-ups to this phone (any accepted phone format)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size, 1-500 (default 50)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses((status = 200, description = "One page of top-ups.", body = super::shapes::TopupList)),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
async fn list_topups(
    State(app): State<App>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut filter = TopupFilter {
        customer_id: Some(caller.customer.id.clone()),
        limit: LIST_LIMIT_DEFAULT,
        ..Default::default()
    };
    for (key, value) in &params {
        let bad = |what: &str| ApiError::new("invalid_query", format!("{key}: {what}"));
        // `?status=` means "no status filter", as most HTTP clients send it.
        if value.is_empty() && matches!(key.as_str(), "reference" | "status" | "phone" | "cursor") {
            continue;
        }
        match key.as_str() {
            "reference" => filter.reference = Some(value.clone()),
            "status" => filter.status = Some(TopupStatus::parse(value).ok_or_else(|| bad("unknown status"))?),
            "phone" => {
                filter.phone = Some(
                    Msisdn::parse(value)
                        .map_err(|_| bad("invalid phone"))?
                        .as_str()
                        .to_string(),
                )
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                    .ok_or_else(|| bad("must be 1-500"))?
            }
            "cursor" if recarga_domain::valid_topup_id(value) => filter.before_id = Some(value.clone()),
            "cursor" => return Err(bad("not a cursor from this API")),
            _ => return Err(bad("unknown parameter")),
        }
    }
    let rows = app.store.list_topups(&filter).await?;
    let next_cursor = (rows.len() as i64 == filter.limit)
        .then(|| rows.last().map(|t| t.id.clone()))
        .flatten();
    let data: Vec<TopupView> = rows.iter().map(TopupView::from).collect();
    Ok(Json(serde_json::json!({ "data": data, "next_cursor": next_cursor })))
}

/// The caller's balance.
#[utoipa::path(
    get,
    path = "/v1/balance",
    operation_id = "getBalance",
    tag = "v1",
    responses((status = 200, description = "The balance.", body = BalanceView)),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
async fn balance(caller: Caller) -> Json<BalanceView> {
    Json(BalanceView::from(&caller.customer))
}

/// What the caller may buy.
#[utoipa::path(
    get,
    path = "/v1/products",
    operation_id = "listProducts",
    tag = "v1",
    responses((status = 200, description = "The caller's products.", body = super::shapes::ProductList)),
    security(("bearer" = []), ("apiKey" = []), ("apiKey" = [], "customerId" = [])),
)]
async fn products(caller: Caller) -> Json<serde_json::Value> {
    Json(crate::views::product_list_json(caller.customer.catalogue))
}
