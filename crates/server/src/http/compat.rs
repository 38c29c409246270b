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

use super::error::ApiError;
use super::extract::{AuthRules, Caller, authenticate, header};
use crate::app::App;
use crate::redis_link::RateDecision;
use crate::topups::{self, Door, SubmitError, TopupInput};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use recarga_domain::{Currency, Money, Msisdn, Refusal, TopupStatus, pricing::FX_SCALE};
use recarga_store::{Customer, Topup};
use serde::Serialize;
use serde_json::Value;
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

// ---------------------------------------------------------------- numbers

/// A JSON value from its text (callers pass valid JSON).
fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

/// A JSON number written from centavos: `2050` → `20.50`.
fn number(m: Money) -> Box<RawValue> {
    raw(m.to_decimal_string())
}

/// A JSON string of centavos with `places` decimals: `108` → `"1.0800"`.
fn decimal_text(m: Money, places: usize) -> String {
    let text = m.to_decimal_string();
    format!("{text}{}", "0".repeat(places.saturating_sub(2)))
}

/// USD per MXN × 10⁶ (the old `exchange_rate`), from our MXN per unit × 10⁶,
/// rounded to the nearest. An MXN account's rate is 1.
fn usd_per_mxn_micro(c: Currency, fx_rate_micro: Option<i64>) -> i64 {
    match (c, fx_rate_micro) {
        (Currency::Mxn, _) => FX_SCALE,
        (_, Some(rate)) if rate > 0 => {
            let scale = FX_SCALE as i128 * FX_SCALE as i128;
            ((scale + rate as i128 / 2) / rate as i128) as i64
        }
        _ => 0,
    }
}

/// `57143` → `0.057143`.
fn micro_text(micro: i64) -> String {
    format!("{}.{:06}", micro / FX_SCALE, micro % FX_SCALE)
}

fn key(name: &str, value: Box<RawValue>) -> (String, Box<RawValue>) {
    (name.to_string(), value)
}

fn text_value(s: &str) -> Box<RawValue> {
    raw(serde_json::to_string(s).unwrap_or_default())
}

// ---------------------------------------------------------------- states

/// The state an old client understands: PENDING, SUCCESS or FAILED.
pub fn legacy_status(status: TopupStatus) -> &'static str {
    match status {
        TopupStatus::Success => "SUCCESS",
        TopupStatus::Failed => "FAILED",
        TopupStatus::Pending | TopupStatus::Processing | TopupStatus::Unknown => "PENDING",
    }
}

/// How the provider is named on these routes (the old system's spelling).
fn provider_label(app: &App) -> &'static str {
    match app.provider.name() {
        "latcom" => "Latcom",
        other => other,
    }
}

// ---------------------------------------------------------------- errors

/// Maps an error of the shared layers to the old text and status.
fn legacy_error(e: ApiError, route: Route) -> ApiError {
    if e.legacy.is_some() {
        return e;
    }
    let (status, text): (StatusCode, String) = match e.code {
        "missing_api_key" | "invalid_api_key" | "customer_inactive" => (
            StatusCode::UNAUTHORIZED,
            match route {
                Route::Balance => "Invalid credentials",
                _ => "Invalid API credentials",
            }
            .into(),
        ),
        "ip_not_allowed" => {
            let ip = e
                .details
                .as_ref()
                .and_then(|d| d.get("your_ip"))
                .cloned()
                .unwrap_or(Value::Null);
            let keys = vec![key("your_ip", raw(ip.to_string()))];
            return e.legacy(StatusCode::FORBIDDEN, "IP address not authorized", keys);
        }
        "rate_limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests, please try again later".into(),
        ),
        "not_found" => (StatusCode::NOT_FOUND, "Transaction not found".into()),
        "unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "Database not available".into()),
        "internal_error" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Transaction failed: internal error".into(),
        ),
        "payload_too_large" => (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large".into()),
        "reference_reused" => (
            StatusCode::BAD_REQUEST,
            "Reference already used with a different phone or amount".into(),
        ),
        "request_in_flight" => (
            StatusCode::CONFLICT,
            "A request with this Idempotency-Key is still processing".into(),
        ),
        "invalid_idempotency_key" => (StatusCode::BAD_REQUEST, "Invalid Idempotency-Key header".into()),
        _ if e.status.is_client_error() => (StatusCode::BAD_REQUEST, "Validation failed".into()),
        _ => (e.status, "Transaction failed: internal error".into()),
    };
    let mut keys = Vec::new();
    if let Some(Value::Object(d)) = &e.details
        && let Some(id) = d.get("transaction_id")
    {
        keys.push(key("transaction_id", raw(id.to_string())));
    }
    e.legacy(status, text, keys)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Sync,
    Async,
    Balance,
    Status,
}

/// `{type, value?, msg, path, location}` of express-validator.
fn field_error(path: &str, value: Option<&Value>, msg: &str) -> Value {
    let mut e = serde_json::json!({ "type": "field", "msg": msg, "path": path, "location": "body" });
    if let Some(v) = value {
        e["value"] = v.clone();
    }
    e
}

fn validation_failed(details: Vec<Value>) -> ApiError {
    let code = match details.first().and_then(|d| d["path"].as_str()) {
        Some("phone") => "invalid_phone",
        Some("reference") => "invalid_reference",
        _ => "invalid_amount",
    };
    let first = details
        .first()
        .and_then(|d| d["msg"].as_str())
        .unwrap_or("")
        .to_string();
    let details = raw(Value::Array(details).to_string());
    ApiError::new(code, first).legacy(
        StatusCode::BAD_REQUEST,
        "Validation failed",
        vec![key("details", details)],
    )
}

// ---------------------------------------------------------------- requests

/// A top-up request as the old system took it.
struct LegacyRequest {
    /// The phone as sent (echoed back as sent).
    phone_as_sent: Value,
    phone: Msisdn,
    amount: Money,
    /// The amount as sent, for `requested_amount`.
    amount_as_sent: Value,
    reference: Option<String>,
}

/// The old body rules: a JSON object (anything else is an empty one, as
/// `express.json()` left it), `phone` 10–15 digits (or our forms: `+52`,
/// separators), `amount` a number or numeric string, `reference` optional
/// free text, other fields ignored.
fn parse_request(parts: &Parts, body: &[u8]) -> Result<LegacyRequest, ApiError> {
    let json_type = header(parts, "content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        });
    let value: Value = if json_type && !body.is_empty() {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new("invalid_json", "the body is not valid JSON").legacy(
                StatusCode::BAD_REQUEST,
                "Invalid JSON body",
                vec![key("reason", text_value(&e.to_string()))],
            )
        })?
    } else {
        Value::Object(Default::default())
    };
    let empty = serde_json::Map::new();
    let obj = value.as_object().unwrap_or(&empty);
    for field in obj.keys() {
        if !matches!(field.as_str(), "phone" | "amount" | "reference") {
            tracing::debug!(field, "compatibility request: unknown field ignored");
        }
    }
    let mut details = Vec::new();
    let phone_value = obj.get("phone").filter(|v| !v.is_null());
    let phone = match phone_value {
        None => {
            details.push(field_error("phone", None, "Phone number is required"));
            details.push(field_error("phone", None, "Phone number must be 10-15 digits"));
            None
        }
        Some(v) => {
            let text = match v {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            match legacy_phone(&text) {
                Some(m) => Some(m),
                None => {
                    let digits_only = (10..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
                    let msg = if text.is_empty() {
                        "Phone number is required"
                    } else if digits_only {
                        "Phone number is not a Mexican mobile number"
                    } else {
                        "Phone number must be 10-15 digits"
                    };
                    details.push(field_error("phone", Some(v), msg));
                    None
                }
            }
        }
    };
    let amount_value = obj.get("amount").filter(|v| !v.is_null());
    let amount = match amount_value {
        None => {
            details.push(field_error("amount", None, "Amount is required"));
            None
        }
        Some(v) => match legacy_amount(v) {
            Ok(m) => Some(m),
            Err(msg) => {
                details.push(field_error("amount", Some(v), msg));
                None
            }
        },
    };
    let reference = match obj.get("reference") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        // The old system stored whatever JSON came as its text.
        Some(other) => Some(other.to_string()),
    };
    if let Some(r) = &reference
        && (r.chars().count() > topups::REFERENCE_MAX_CHARS || r.chars().any(char::is_control))
    {
        details.push(field_error(
            "reference",
            obj.get("reference"),
            "Reference must be at most 100 characters without control characters",
        ));
    }
    match (phone, amount, details.is_empty()) {
        (Some(phone), Some(amount), true) => Ok(LegacyRequest {
            phone_as_sent: phone_value.cloned().unwrap_or(Value::Null),
            phone,
            amount,
            amount_as_sent: amount_value.cloned().unwrap_or(Value::Null),
            reference,
        }),
        _ => Err(validation_failed(details)),
    }
}

/// The old phone forms: 10 digits, `52` + 10, the old mobile `521` + 10, and
/// ours (`+52`, separators).
fn legacy_phone(text: &str) -> Option<Msisdn> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if digits_only && text.len() == 13 && text.starts_with("521") {
        return Msisdn::parse(&text[3..]).ok();
    }
    Msisdn::parse(text).ok()
}

/// `isFloat` as the old validator read it: a number, or a numeric string
/// (exponents allowed), positive, with at most 2 decimal places.
fn legacy_amount(v: &Value) -> Result<Money, &'static str> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("Amount must be a number"),
    };
    let decimal = if text.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(&text)
    } else {
        text.parse::<rust_decimal::Decimal>()
    }
    .map_err(|_| "Amount must be a number")?;
    let decimal = decimal.normalize();
    if decimal.scale() > 2 {
        return Err("Amount must have at most 2 decimal places");
    }
    if decimal <= rust_decimal::Decimal::ZERO {
        return Err("Amount must be positive");
    }
    Money::parse_decimal(&decimal.to_string()).map_err(|_| "Amount is too large")
}

// ---------------------------------------------------------------- limits

/// The old limiters: top-ups per minute per customer; other requests per 15
/// minutes per customer (or per address without credentials).
async fn compat_limit(app: &App, bucket: &str, topups: bool) -> Option<RateDecision> {
    if topups {
        app.window_hit(&format!("compat-topup:{bucket}"), app.config.compat_topup_per_min, 60)
            .await
    } else {
        app.window_hit(&format!("compat-api:{bucket}"), app.config.compat_api_per_15min, 900)
            .await
    }
}

/// Both header families: `RateLimit-*` (IETF draft 6, reset as seconds
/// left, as the old code sent) and `X-RateLimit-*` (reset as epoch seconds,
/// as its guides documented).
fn rate_headers(response: &mut Response, rate: &RateDecision) {
    let reset_epoch = chrono::Utc::now().timestamp() + rate.reset_s as i64;
    let pairs = [
        ("ratelimit-policy", format!("{};w={}", rate.limit, rate.window_s)),
        ("ratelimit-limit", rate.limit.to_string()),
        ("ratelimit-remaining", rate.remaining.to_string()),
        ("ratelimit-reset", rate.reset_s.to_string()),
        ("x-ratelimit-limit", rate.limit.to_string()),
        ("x-ratelimit-remaining", rate.remaining.to_string()),
        ("x-ratelimit-reset", reset_epoch.to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    if !rate.allowed
        && let Ok(v) = HeaderValue::from_str(&rate.reset_s.to_string())
    {
        response.headers_mut().insert("retry-after", v);
    }
}

fn over_limit(rate: &RateDecision, topups: bool) -> ApiError {
    let text = if topups {
        format!("Too many topup requests. Maximum {} per minute.", rate.limit)
    } else {
        "Too many requests, please try again later".into()
    };
    ApiError::new("rate_limited", text.clone()).legacy(StatusCode::TOO_MANY_REQUESTS, text, Vec::new())
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

// ---------------------------------------------------------------- shapes

/// `transaction` of a top-up answer: the old keys with the old JSON types,
/// plus ours where they do not collide.
#[derive(Serialize, ToSchema)]
pub struct CompatTransaction {
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    id: String,
    #[schema(schema_with = super::openapi::legacy_status)]
    status: &'static str,
    /// Our state: PENDING, PROCESSING, SUCCESS, FAILED or UNKNOWN.
    #[schema(schema_with = super::openapi::topup_status)]
    state: &'static str,
    /// Face value in MXN (the shape before October 2025).
    #[schema(schema_with = super::openapi::decimal_number)]
    amount: Box<RawValue>,
    /// Face value in MXN.
    #[schema(schema_with = super::openapi::decimal_number)]
    amount_mxn: Box<RawValue>,
    /// Charged, in the account's currency (USD for migrated accounts).
    #[schema(schema_with = super::openapi::decimal_number)]
    amount_usd: Box<RawValue>,
    #[schema(schema_with = super::openapi::rate_number)]
    exchange_rate: Box<RawValue>,
    #[schema(schema_with = super::openapi::phone_echo)]
    phone: Value,
    /// As sent, `""` when none was sent.
    reference: String,
    /// The provider's transaction id; absent when there is none.
    #[serde(rename = "operatorTransactionId", skip_serializing_if = "Option::is_none")]
    operator_transaction_id: Option<String>,
    #[schema(example = "Latcom")]
    provider: &'static str,
    #[serde(rename = "processedAt")]
    #[schema(format = DateTime)]
    processed_at: String,
    #[serde(rename = "queuedAt")]
    #[schema(format = DateTime)]
    queued_at: String,
    #[schema(example = "MXN")]
    currency: &'static str,
    product_id: String,
    upstream_transaction_id: Option<String>,
    carrier_transaction_id: Option<String>,
    /// Why it failed, when it did.
    error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    /// The FAILED top-up whose reference this new one reused.
    retry_of: Option<String>,
}

fn transaction_view(app: &App, t: &Topup, phone_as_sent: Option<&Value>) -> CompatTransaction {
    let usd_per_mxn = usd_per_mxn_micro(t.currency, t.fx_rate_micro);
    let now = super::views::iso(recarga_store::now_ms());
    CompatTransaction {
        id: t.id.clone(),
        status: legacy_status(t.status),
        state: t.status.as_str(),
        amount: number(t.face_value),
        amount_mxn: number(t.face_value),
        amount_usd: number(t.held),
        exchange_rate: raw(micro_text(usd_per_mxn)),
        phone: phone_as_sent.cloned().unwrap_or_else(|| Value::String(t.phone.clone())),
        reference: if t.reference_generated() {
            String::new()
        } else {
            t.reference.clone()
        },
        operator_transaction_id: t.upstream_trans_id.clone().or_else(|| t.upstream_ven_transid.clone()),
        provider: provider_label(app),
        processed_at: t.completed_at.map(super::views::iso).unwrap_or(now),
        queued_at: super::views::iso(t.created_at),
        currency: "MXN",
        product_id: t.product_id.clone(),
        upstream_transaction_id: t.upstream_trans_id.clone(),
        carrier_transaction_id: t.upstream_ven_transid.clone(),
        error: t.failure_message.clone(),
        created_at: super::views::iso(t.created_at),
        completed_at: t.completed_at.map(super::views::iso),
        retry_of: t.retry_of.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CompatBilling {
    /// Charged, in the account's currency.
    #[schema(schema_with = super::openapi::decimal_number)]
    deducted_usd: Box<RawValue>,
    #[schema(schema_with = super::openapi::decimal_number)]
    balance_before_usd: Box<RawValue>,
    #[schema(schema_with = super::openapi::decimal_number)]
    balance_after_usd: Box<RawValue>,
    #[schema(schema_with = super::openapi::rate_number)]
    exchange_rate: Box<RawValue>,
}

/// The answer of both top-up routes.
#[derive(Serialize, ToSchema)]
pub struct CompatTopupResponse {
    /// True for SUCCESS, and for an accepted async top-up.
    success: bool,
    message: String,
    /// Present when the answer is not a success: why, and where to look.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    transaction: CompatTransaction,
    /// Present once the hold is taken: what it took from the balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    billing: Option<CompatBilling>,
    /// The balance right after this top-up's hold (account currency).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::decimal_number)]
    remaining_balance: Option<Box<RawValue>>,
    check_status_url: String,
    /// True when this answers an earlier request with the same reference or Idempotency-Key.
    replayed: bool,
}

async fn billing(app: &App, t: &Topup) -> Option<(CompatBilling, Box<RawValue>)> {
    let entries = app.store.topup_ledger(&t.id).await.ok()?;
    let hold = entries.iter().find(|e| e.kind == "hold")?;
    let after = hold.balance_after;
    let before = Money(after.0 + t.held.0);
    let rate = raw(micro_text(usd_per_mxn_micro(t.currency, t.fx_rate_micro)));
    Some((
        CompatBilling {
            deducted_usd: number(t.held),
            balance_before_usd: number(before),
            balance_after_usd: number(after),
            exchange_rate: rate,
        },
        number(after),
    ))
}

async fn response_time_ms(app: &App, id: &str) -> Option<i64> {
    let exchanges = app.store.exchanges(id).await.ok()?;
    exchanges
        .iter()
        .rev()
        .find(|e| e.kind == "topup")
        .map(|e| e.ended_at - e.started_at)
}

// ---------------------------------------------------------------- top-ups

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
    let idempotency_key = topups::idempotency_key(&parts.headers)?;
    let input = TopupInput {
        phone: request.phone.clone(),
        amount: request.amount,
        reference: request.reference.clone(),
        idempotency_key,
    };
    let wait = (route == Route::Sync).then(|| Duration::from_secs(app.config.sync_wait_s));
    let submitted = topups::submit(app, caller, input, wait, Door::Compat)
        .await
        .map_err(|e| submit_error(e, &caller.customer, &request))?;
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

/// The old refusals: 400 validation, 400 invalid product amount, 403
/// insufficient balance, 429 daily limit.
fn submit_error(e: SubmitError, customer: &Customer, request: &LegacyRequest) -> ApiError {
    let amount_range = || {
        validation_failed(vec![field_error(
            "amount",
            Some(&request.amount_as_sent),
            &format!(
                "Amount must be between {} and {} MXN",
                customer.min_topup, customer.max_topup
            ),
        )])
    };
    match e {
        SubmitError::BelowMinimum(_) | SubmitError::AboveMaximum(_) => amount_range(),
        SubmitError::NotAvailable(products) => {
            let fixed: Vec<String> = products
                .iter()
                .filter(|p| p.min_face_value == p.max_face_value)
                .map(|p| p.min_face_value.to_decimal_string())
                .collect();
            let open = products.iter().any(|p| p.min_face_value != p.max_face_value);
            let message = if open {
                "No product delivers exactly this amount"
            } else {
                "Only fixed XOOM products are allowed"
            };
            ApiError::new("amount_not_available", message).legacy(
                StatusCode::BAD_REQUEST,
                "Invalid product amount",
                vec![
                    key("message", text_value(message)),
                    key("allowed_amounts", raw(format!("[{}]", fixed.join(",")))),
                    key("requested_amount", number(request.amount)),
                ],
            )
        }
        SubmitError::Refused(Refusal::InsufficientFunds {
            balance,
            credit_limit,
            required,
        }) => {
            let rate = raw(micro_text(usd_per_mxn_micro(customer.currency, customer.fx_rate_micro)));
            ApiError::new("insufficient_funds", "insufficient funds").legacy(
                StatusCode::FORBIDDEN,
                "Insufficient balance",
                vec![
                    key("current_balance_usd", number(balance)),
                    key("requested_mxn", number(request.amount)),
                    key("required_usd", number(required)),
                    key("exchange_rate", rate),
                    key("current_balance", number(balance)),
                    key("requested", number(request.amount)),
                    key("credit_limit", number(credit_limit)),
                ],
            )
        }
        SubmitError::Refused(Refusal::DailyLimit { limit, used, requested }) => {
            ApiError::new("daily_limit_exceeded", "rolling 24 h limit exceeded").legacy(
                StatusCode::TOO_MANY_REQUESTS,
                "Daily transaction limit exceeded",
                vec![
                    key("daily_limit_mxn", number(limit)),
                    key("used_today_mxn", number(used)),
                    key("requested_mxn", number(requested)),
                    key("available_mxn", number(Money((limit.0 - used.0).max(0)))),
                ],
            )
        }
        other => ApiError::from(other),
    }
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
    request_body = super::openapi::shapes::CompatTopupRequest,
    responses(
        (status = 200, description = "SUCCESS.", body = CompatTopupResponse, headers(
            ("ratelimit-limit" = String, description = "Top-ups allowed per window."),
            ("x-ratelimit-remaining" = String, description = "Left in this window."),
        )),
        (status = 202, description = "Accepted, still open after the wait (`success: false`). Poll `check_status_url`.", body = CompatTopupResponse),
        (status = 400, description = "`Validation failed` (with `details`), `Invalid product amount`.", body = super::openapi::shapes::CompatError),
        (status = 401, description = "`Invalid API credentials` (also for a deactivated customer).", body = super::openapi::shapes::CompatError),
        (status = 403, description = "`Insufficient balance` or `IP address not authorized`.", body = super::openapi::shapes::CompatError),
        (status = 409, description = "A request with this `Idempotency-Key` is still processing.", body = super::openapi::shapes::CompatError),
        (status = 413, description = "`Request body too large`.", body = super::openapi::shapes::CompatError),
        (status = 429, description = "`Daily transaction limit exceeded` or a rate limit (with `Retry-After`).", body = super::openapi::shapes::CompatError),
        (status = 500, description = "`Provider (…) top-up failed: …`: a definite failure, nothing charged.", body = super::openapi::shapes::CompatError),
        (status = 503, description = "`Database not available`: retry with the same reference.", body = super::openapi::shapes::CompatError),
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
    request_body = super::openapi::shapes::CompatTopupRequest,
    responses(
        (status = 200, description = "Accepted (`status` PENDING), or a replay of an earlier request.", body = CompatTopupResponse),
        (status = 400, description = "`Validation failed` (with `details`), `Invalid product amount`.", body = super::openapi::shapes::CompatError),
        (status = 401, description = "`Invalid API credentials` (also for a deactivated customer).", body = super::openapi::shapes::CompatError),
        (status = 403, description = "`Insufficient balance` or `IP address not authorized`.", body = super::openapi::shapes::CompatError),
        (status = 409, description = "A request with this `Idempotency-Key` is still processing.", body = super::openapi::shapes::CompatError),
        (status = 413, description = "`Request body too large`.", body = super::openapi::shapes::CompatError),
        (status = 429, description = "`Daily transaction limit exceeded` or a rate limit (with `Retry-After`).", body = super::openapi::shapes::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = super::openapi::shapes::CompatError),
        (status = 503, description = "`Database not available`: retry with the same reference.", body = super::openapi::shapes::CompatError),
    ),
    security(("apiKey" = [], "customerId" = []), ("apiKey" = []), ("bearer" = [])),
)]
async fn topup_async(State(app): State<App>, parts: Parts, body: Body) -> Response {
    let (result, rate) = accept(&app, &parts, body, Route::Async).await;
    finish(result, rate, Route::Async).await
}

// ---------------------------------------------------------------- balance

#[derive(Serialize, ToSchema)]
pub struct CompatBalance {
    success: bool,
    customer_id: String,
    company_name: Option<String>,
    /// In the account's currency.
    #[schema(schema_with = super::openapi::decimal_number)]
    current_balance: Box<RawValue>,
    #[schema(schema_with = super::openapi::decimal_number)]
    credit_limit: Box<RawValue>,
    /// The account's currency (the old code always said MXN; its guides USD).
    #[schema(example = "MXN")]
    currency: &'static str,
    /// Same as `current_balance`.
    #[schema(schema_with = super::openapi::decimal_number)]
    balance: Box<RawValue>,
    /// What can still be spent: balance + credit limit.
    #[schema(schema_with = super::openapi::decimal_number)]
    available: Box<RawValue>,
}

/// The caller's balance (the old shape).
#[utoipa::path(
    get,
    path = "/api/balance",
    operation_id = "compatBalance",
    tag = "compat",
    responses(
        (status = 200, description = "The balance.", body = CompatBalance),
        (status = 401, description = "`Invalid credentials`.", body = super::openapi::shapes::CompatError),
        (status = 403, description = "`IP address not authorized`.", body = super::openapi::shapes::CompatError),
        (status = 429, description = "`Too many requests, please try again later` (with `Retry-After`).", body = super::openapi::shapes::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = super::openapi::shapes::CompatError),
        (status = 503, description = "`Database not available`.", body = super::openapi::shapes::CompatError),
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

// ---------------------------------------------------------------- status

/// The old status row: its column names and pg's JSON types (NUMERIC as
/// strings, INTEGER as numbers), plus `state`.
#[derive(Serialize, ToSchema)]
pub struct CompatRow {
    /// The row's integer id.
    id: Option<i64>,
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    transaction_id: String,
    customer_id: String,
    phone: String,
    #[schema(schema_with = super::openapi::legacy_status)]
    status: &'static str,
    #[schema(schema_with = super::openapi::topup_status)]
    state: &'static str,
    reference: String,
    /// Charged, in the account's currency, 2 decimals.
    #[schema(example = "20.00")]
    amount: String,
    #[schema(example = "0.00")]
    fee: &'static str,
    #[schema(example = "20.00")]
    amount_mxn: Option<String>,
    /// Charged, in the account's currency, 4 decimals.
    #[schema(example = "20.0000")]
    amount_usd: Option<String>,
    /// Account currency per MXN, 6 decimals.
    #[schema(example = "1.000000")]
    exchange_rate: Option<String>,
    #[schema(example = "MXN")]
    currency: &'static str,
    operator_transaction_id: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    processed_at: Option<String>,
    response_time_ms: Option<i64>,
    latcom_response_code: Option<String>,
    latcom_response_message: Option<String>,
    provider: &'static str,
    provider_transaction_id: Option<String>,
    #[schema(example = "topup")]
    transaction_type: &'static str,
    /// Only while PENDING: `waiting`, `delayed` or `active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_progress: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CompatTransactionResponse {
    success: bool,
    transaction: CompatRow,
}

fn row_view(app: &App, t: &Topup, response_time_ms: Option<i64>) -> CompatRow {
    let operator_id = t.upstream_trans_id.clone().or_else(|| t.upstream_ven_transid.clone());
    let queue_status = match t.status {
        TopupStatus::Pending if t.next_attempt_at > recarga_store::now_ms() => Some("delayed"),
        TopupStatus::Pending => Some("waiting"),
        TopupStatus::Processing | TopupStatus::Unknown => Some("active"),
        _ => None,
    };
    CompatRow {
        id: t.number,
        transaction_id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        phone: t.phone.clone(),
        status: legacy_status(t.status),
        state: t.status.as_str(),
        reference: if t.reference_generated() {
            String::new()
        } else {
            t.reference.clone()
        },
        amount: decimal_text(t.held, 2),
        fee: "0.00",
        amount_mxn: Some(decimal_text(t.face_value, 2)),
        amount_usd: Some(decimal_text(t.held, 4)),
        exchange_rate: Some(micro_text(usd_per_mxn_micro(t.currency, t.fx_rate_micro))),
        currency: "MXN",
        operator_transaction_id: operator_id.clone(),
        created_at: super::views::iso(t.created_at),
        processed_at: t.completed_at.map(super::views::iso),
        response_time_ms,
        latcom_response_code: match t.status {
            TopupStatus::Success => Some("SUCCESS".into()),
            _ => t.failure_code.clone(),
        },
        latcom_response_message: t.failure_message.clone(),
        provider: provider_label(app),
        provider_transaction_id: operator_id,
        transaction_type: "topup",
        queue_status,
        queue_progress: queue_status.map(|_| 0),
    }
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
        (status = 401, description = "No credentials, and the transaction is not publicly readable.", body = super::openapi::shapes::CompatError),
        (status = 403, description = "`IP address not authorized`.", body = super::openapi::shapes::CompatError),
        (status = 404, description = "`Transaction not found`.", body = super::openapi::shapes::CompatError),
        (status = 429, description = "`Too many requests, please try again later` (with `Retry-After`).", body = super::openapi::shapes::CompatError),
        (status = 500, description = "`Transaction failed: …`: something failed on our side.", body = super::openapi::shapes::CompatError),
        (status = 503, description = "`Database not available`.", body = super::openapi::shapes::CompatError),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_decimals_are_exact() {
        assert_eq!(micro_text(usd_per_mxn_micro(Currency::Mxn, None)), "1.000000");
        // 17.50 MXN per USD → 0.057143 USD per MXN.
        assert_eq!(
            micro_text(usd_per_mxn_micro(Currency::Usd, Some(17_500_000))),
            "0.057143"
        );
        assert_eq!(decimal_text(Money(108), 4), "1.0800");
        assert_eq!(decimal_text(Money(2000), 2), "20.00");
        assert_eq!(number(Money(2050)).get(), "20.50");
    }

    #[test]
    fn old_amount_forms_parse() {
        assert_eq!(legacy_amount(&serde_json::json!(20)), Ok(Money(2000)));
        assert_eq!(legacy_amount(&serde_json::json!("20.5")), Ok(Money(2050)));
        assert_eq!(legacy_amount(&serde_json::json!("1e2")), Ok(Money(10_000)));
        assert_eq!(legacy_amount(&serde_json::json!(20.10)), Ok(Money(2010)));
        assert!(legacy_amount(&serde_json::json!("20.001")).is_err());
        assert!(legacy_amount(&serde_json::json!("abc")).is_err());
        assert!(legacy_amount(&serde_json::json!(-5)).is_err());
        assert!(legacy_amount(&serde_json::json!(true)).is_err());
    }

    #[test]
    fn old_phone_forms_parse() {
        for ok in ["5512345678", "525512345678", "5215512345678", "+52 55 1234 5678"] {
            assert_eq!(
                legacy_phone(ok).map(|m| m.as_str().to_string()).as_deref(),
                Some("5512345678"),
                "{ok}"
            );
        }
        for bad in ["123", "1512345678", "15512345678901"] {
            assert!(legacy_phone(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn states_old_clients_do_not_know_show_as_pending() {
        assert_eq!(legacy_status(TopupStatus::Unknown), "PENDING");
        assert_eq!(legacy_status(TopupStatus::Processing), "PENDING");
        assert_eq!(legacy_status(TopupStatus::Success), "SUCCESS");
        assert_eq!(legacy_status(TopupStatus::Failed), "FAILED");
    }
}
