//! The old error bodies and statuses, and the old rate limits with both
//! families of headers.

use super::reply::{key, micro_text, number, raw, text_value, usd_per_mxn_micro};
use crate::http::error::ApiError;
use crate::ratelimit::RateDecision;
use crate::state::App;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use recarga_domain::{Money, Refusal};
use recarga_service::ServiceError;
use recarga_store::Customer;
use serde_json::Value;

/// Maps an error of the shared layers to the old text and status.
pub(super) fn legacy_error(e: ApiError, route: Route) -> ApiError {
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
pub(super) enum Route {
    Sync,
    Async,
    Balance,
    Status,
}

/// `{type, value?, msg, path, location}` of express-validator.
pub(super) fn field_error(path: &str, value: Option<&Value>, msg: &str) -> Value {
    let mut e = serde_json::json!({ "type": "field", "msg": msg, "path": path, "location": "body" });
    if let Some(v) = value {
        e["value"] = v.clone();
    }
    e
}

pub(super) fn validation_failed(details: Vec<Value>) -> ApiError {
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

/// The old limiters: top-ups per minute per customer; other requests per 15
/// minutes per customer (or per address without credentials).
pub(super) async fn compat_limit(app: &App, bucket: &str, topups: bool) -> Option<RateDecision> {
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
pub(super) fn rate_headers(response: &mut Response, rate: &RateDecision) {
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

pub(super) fn over_limit(rate: &RateDecision, topups: bool) -> ApiError {
    let text = if topups {
        format!("Too many topup requests. Maximum {} per minute.", rate.limit)
    } else {
        "Too many requests, please try again later".into()
    };
    ApiError::new("rate_limited", text.clone()).legacy(StatusCode::TOO_MANY_REQUESTS, text, Vec::new())
}

/// The old refusals: 400 validation, 400 invalid product amount, 403
/// insufficient balance, 429 daily limit.
/// What a refusal answers: the amount asked for, as a number and as sent.
pub(super) struct Asked<'a> {
    pub amount: Money,
    pub amount_as_sent: &'a Value,
}

/// The old 400 `Invalid product amount` (`message`, `allowed_amounts`,
/// `requested_amount`), with `nearest_amounts` added: the nearest amounts the
/// customer can buy. An open-range amount that cannot be delivered exactly is
/// `amount_not_exact`.
fn invalid_product_amount(products: &[recarga_domain::Product], customer: &Customer, requested: Money) -> ApiError {
    let fixed: Vec<String> = products
        .iter()
        .filter(|p| p.min_face_value == p.max_face_value)
        .map(|p| p.min_face_value.to_decimal_string())
        .collect();
    let open = products.iter().any(|p| p.min_face_value != p.max_face_value);
    let (inexact, nearest) = crate::views::nearest_amounts(customer, requested);
    let nearest: Vec<String> = nearest.iter().map(|m| m.to_decimal_string()).collect();
    let (code, message) = match (inexact, open) {
        (true, _) => (
            "amount_not_exact",
            format!(
                "This amount cannot be delivered exactly; the nearest amounts that can: {}",
                nearest.join(", ")
            ),
        ),
        (false, true) => ("amount_not_available", "No product delivers exactly this amount".into()),
        (false, false) => ("amount_not_available", "Only fixed XOOM products are allowed".into()),
    };
    ApiError::new(code, message.clone()).legacy(
        StatusCode::BAD_REQUEST,
        "Invalid product amount",
        vec![
            key("message", text_value(&message)),
            key("allowed_amounts", raw(format!("[{}]", fixed.join(",")))),
            key("requested_amount", number(requested)),
            key("nearest_amounts", raw(format!("[{}]", nearest.join(",")))),
        ],
    )
}

pub(super) fn submit_error(e: ServiceError, customer: &Customer, request: Asked<'_>) -> ApiError {
    let amount_range = || {
        validation_failed(vec![field_error(
            "amount",
            Some(request.amount_as_sent),
            &format!(
                "Amount must be between {} and {} MXN",
                customer.min_topup, customer.max_topup
            ),
        )])
    };
    match e {
        ServiceError::BelowMinimum(_) | ServiceError::AboveMaximum(_) => amount_range(),
        ServiceError::NotAvailable(products) => invalid_product_amount(&products, customer, request.amount),
        ServiceError::Refused(Refusal::InsufficientFunds {
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
        ServiceError::Refused(Refusal::DailyLimit { limit, used, requested }) => {
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
