//! The canonical JSON API under `/v1`.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/topups` | accept a top-up; `Prefer: wait=N` waits up to N s (≤ 30) |
//! | `GET /v1/topups/{id}` | one top-up of the caller |
//! | `GET /v1/topups?reference=&status=&phone=&limit=&cursor=` | the caller's top-ups, newest first |
//! | `GET /v1/balance` | the caller's balance |
//! | `GET /v1/products` | what the caller may buy |

use super::error::ApiError;
use super::extract::{Caller, JsonBody, PreferWait};
use super::views::{BalanceView, TopupView};
use crate::app::App;
use crate::topups::{self, TopupBody};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use recarga_domain::{Msisdn, TopupStatus};
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

async fn create_topup(
    State(app): State<App>,
    caller: Caller,
    PreferWait(wait): PreferWait,
    JsonBody(body): JsonBody<TopupBody>,
) -> Result<Response, ApiError> {
    let input = body.validate()?;
    let submitted = topups::submit(&app, &caller.customer, input, wait).await?;
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

async fn balance(caller: Caller) -> Json<BalanceView> {
    Json(BalanceView::from(&caller.customer))
}

async fn products(caller: Caller) -> Json<serde_json::Value> {
    let products: Vec<_> = caller
        .customer
        .catalogue
        .products()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "product_id": p.id,
                "min_amount": p.min_face_value.to_decimal_string(),
                "max_amount": p.max_face_value.to_decimal_string(),
                "currency": "MXN",
                "vat_bps": p.vat_bps,
            })
        })
        .collect();
    Json(serde_json::json!({ "data": products }))
}
