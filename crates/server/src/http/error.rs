//! The one error shape of the HTTP API, and the catalogue of its codes.
//!
//! Every error body is `{"code", "message", "request_id", "details"?}`.
//! `code` is stable and machine-matchable; the catalogue below is the only
//! place codes are defined. Internal causes are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use recarga_service::ServiceError;
use recarga_store::StoreError;
use serde_json::Value;

/// `(code, HTTP status, meaning)` for every error the API can return.
pub const CATALOGUE: &[(&str, u16, &str)] = &[
    ("invalid_json", 400, "The body is not valid JSON."),
    (
        "missing_api_key",
        401,
        "No API key was presented (Authorization: Bearer or x-api-key).",
    ),
    (
        "invalid_api_key",
        401,
        "The API key is unknown, revoked, or belongs to another customer id.",
    ),
    (
        "insufficient_funds",
        402,
        "The balance (plus credit limit) does not cover the price.",
    ),
    (
        "admin_required",
        401,
        "This route needs the operator key (x-admin-key).",
    ),
    ("customer_inactive", 403, "The customer account is deactivated."),
    (
        "ip_not_allowed",
        403,
        "The customer's IP allow-list does not include this address (`details.your_ip`).",
    ),
    ("not_found", 404, "No such resource for this customer."),
    ("method_not_allowed", 405, "The route exists but not with this method."),
    (
        "request_in_flight",
        409,
        "A synchronous request with this reference is still waiting for its outcome.",
    ),
    ("payload_too_large", 413, "The body exceeds 16 KiB."),
    (
        "unsupported_media_type",
        415,
        "The body must be sent as application/json.",
    ),
    ("missing_field", 422, "A required field is absent."),
    ("unknown_field", 422, "The body has a field this route does not accept."),
    ("invalid_field", 422, "A field has the wrong JSON type."),
    (
        "invalid_phone",
        422,
        "phone is not a 10-digit Mexican number (optionally +52 / 52).",
    ),
    (
        "invalid_amount",
        422,
        "amount is not a positive decimal with at most 2 places.",
    ),
    (
        "invalid_reference",
        422,
        "reference must be 1-100 printable ASCII characters.",
    ),
    ("invalid_query", 422, "A query parameter is unknown or malformed."),
    (
        "invalid_idempotency_key",
        422,
        "Idempotency-Key must be 1-255 printable ASCII characters.",
    ),
    (
        "amount_below_minimum",
        422,
        "amount is below this customer's per-top-up minimum.",
    ),
    (
        "amount_above_maximum",
        422,
        "amount is above this customer's per-top-up maximum.",
    ),
    (
        "amount_not_available",
        422,
        "No product this customer may buy delivers exactly this amount (`details.nearest`: the nearest amounts it can buy).",
    ),
    (
        "amount_not_exact",
        422,
        "An open-range amount that no whole-centavo amount plus 16 % VAT delivers exactly; refused, never charged a centavo off (`details.nearest`: the nearest deliverable amounts).",
    ),
    (
        "daily_limit_exceeded",
        422,
        "The rolling 24 h limit of this customer would be exceeded.",
    ),
    (
        "reference_reused",
        422,
        "This reference was already used with a different body.",
    ),
    (
        "rate_limited",
        429,
        "Too many requests for this customer; see Retry-After and X-RateLimit-*.",
    ),
    (
        "topup_failed",
        500,
        "Compatibility routes only: the provider definitely did not deliver; nothing was charged (the old system's answer).",
    ),
    (
        "internal_error",
        500,
        "Something failed on our side; the request id helps us find it.",
    ),
    (
        "unavailable",
        503,
        "A dependency (the database) is unavailable; retry with the same reference.",
    ),
];

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// Rendered in the old system's shape instead (compatibility routes).
    pub legacy: Option<Box<Legacy>>,
}

/// The old system's error body: `{"success": false, "error": <text>, …keys}`,
/// to which `code` and `request_id` are added. Values are JSON text, so
/// amounts keep their exact decimal digits.
#[derive(Debug, Clone)]
pub struct Legacy {
    pub error: String,
    pub keys: Vec<(String, Box<serde_json::value::RawValue>)>,
}

struct LegacyBody<'a> {
    error: &'a ApiError,
    legacy: &'a Legacy,
    request_id: Option<&'a str>,
}

impl serde::Serialize for LegacyBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("success", &false)?;
        map.serialize_entry("error", &self.legacy.error)?;
        for (k, v) in &self.legacy.keys {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("code", self.error.code)?;
        map.serialize_entry("request_id", &self.request_id)?;
        map.end()
    }
}

impl ApiError {
    /// An error from the catalogue; panics in debug builds on an unknown code.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        let status = CATALOGUE
            .iter()
            .find(|(c, _, _)| *c == code)
            .and_then(|(_, s, _)| StatusCode::from_u16(*s).ok());
        debug_assert!(status.is_some(), "error code {code} is not in the catalogue");
        ApiError {
            status: status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
            legacy: None,
        }
    }

    /// Renders this error in the old system's shape with `status`, the
    /// `error` text and extra keys (JSON text each).
    pub fn legacy(
        mut self,
        status: StatusCode,
        error: impl Into<String>,
        keys: Vec<(String, Box<serde_json::value::RawValue>)>,
    ) -> Self {
        self.status = status;
        self.legacy = Some(Box::new(Legacy {
            error: error.into(),
            keys,
        }));
        self
    }

    /// The body as JSON text, in the shape of the route (see [`ApiError::legacy`]).
    pub fn to_json(&self, request_id: Option<&str>) -> String {
        match &self.legacy {
            Some(legacy) => serde_json::to_string(&LegacyBody {
                error: self,
                legacy,
                request_id,
            })
            .unwrap_or_default(),
            None => self.body(request_id).to_string(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value.to_string()) {
            self.headers.push((axum::http::HeaderName::from_static(name), v));
        }
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `/v1` answer to a refusal of the accept decision.
    pub fn refused(refusal: &recarga_domain::Refusal) -> Self {
        use recarga_domain::Refusal as R;
        match refusal {
            R::UnknownCustomer => ApiError::new("invalid_api_key", "the API key is not valid"),
            R::Inactive => ApiError::new("customer_inactive", "the customer account is inactive"),
            R::InsufficientFunds { .. } => ApiError::new("insufficient_funds", "insufficient funds"),
            R::DailyLimit { .. } => ApiError::new("daily_limit_exceeded", "rolling 24 h limit exceeded"),
        }
    }

    pub fn not_found() -> Self {
        ApiError::new("not_found", "no such resource")
    }

    /// Logs the cause and returns a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        ApiError::new("internal_error", "internal error")
    }

    pub fn body(&self, request_id: Option<&str>) -> Value {
        let mut body = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        });
        if let Some(d) = &self.details {
            body["details"] = d.clone();
        }
        body
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        use ServiceError as E;
        match err {
            E::Invalid { field, message } => ApiError::new("invalid_field", format!("{field}: {message}")),
            E::NotFound => ApiError::not_found(),
            E::BelowMinimum(min) => ApiError::new("amount_below_minimum", format!("the minimum top-up is {min} MXN")),
            E::AboveMaximum(max) => ApiError::new("amount_above_maximum", format!("the maximum top-up is {max} MXN")),
            E::NotAvailable(products) => {
                let allowed: Vec<_> = products.iter().map(crate::views::product_json).collect();
                ApiError::new("amount_not_available", "no product delivers exactly this amount")
                    .with_details(serde_json::json!({ "allowed": allowed }))
            }
            E::ReferenceReused { transaction_id } => ApiError::new(
                "reference_reused",
                "this reference was already used with a different phone or amount",
            )
            .with_details(serde_json::json!({ "transaction_id": transaction_id })),
            E::InFlight { transaction_id } => ApiError::new(
                "request_in_flight",
                "a synchronous request with this reference is still waiting; retry after it answers",
            )
            .with_details(serde_json::json!({ "transaction_id": transaction_id })),
            E::Refused(refusal) => ApiError::refused(&refusal),
            E::InsufficientFunds => ApiError::new("insufficient_funds", "insufficient funds"),
            E::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                ApiError::new("unavailable", "temporarily unavailable, retry with the same reference")
            }
            other @ (E::AlreadyExists(_) | E::Rule(_) | E::WrongState(_) | E::Internal(_)) => ApiError::internal(other),
        }
    }
}

/// Reads go to the store directly; its errors mean what the service's do.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ServiceError::from(err).into()
    }
}

/// A JSON body from its text.
pub fn json_response(text: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request id is added by `render_errors`, which finds this error
        // in the response extensions.
        let mut response = (self.status, json_response(self.to_json(None))).into_response();
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        response.extensions_mut().insert(self);
        response
    }
}
