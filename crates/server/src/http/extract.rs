//! Request extractors that answer in the API's own error shape.
//!
//! - [`JsonBody`]: checks the media type and size, parses with serde, and
//!   classifies every failure (`invalid_json`, `missing_field`, …).
//! - [`Caller`]: the authenticated customer, from `Authorization: Bearer` or
//!   `x-api-key` (+ `x-customer-id`, which must then match, and which an
//!   imported key always needs).
//! - [`PreferWait`]: `Prefer: wait=N`, capped at 30 s.

use super::error::ApiError;
use crate::state::App;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use recarga_service::keys;
use recarga_store::{ApiKey, Customer};
use serde::de::DeserializeOwned;
use std::net::IpAddr;
use std::time::Duration;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json") || m.to_ascii_lowercase().ends_with("+json")
            });
        if !json_type {
            return Err(ApiError::new(
                "unsupported_media_type",
                "send the body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    "payload_too_large",
                    format!("the body exceeds {BODY_LIMIT_BYTES} bytes"),
                )
            } else {
                ApiError::new("invalid_json", "the body could not be read")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses and classifies a JSON body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let text = e.to_string();
        let message = text.split(" at line ").next().unwrap_or(&text).to_string();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new("invalid_json", message),
            Category::Data if text.starts_with("missing field") => ApiError::new("missing_field", message),
            Category::Data if text.starts_with("unknown field") => ApiError::new("unknown_field", message),
            Category::Data => ApiError::new("invalid_field", message),
        }
    })
}

/// The authenticated customer of a request.
pub struct Caller {
    pub customer: Customer,
    pub key: ApiKey,
    pub key_prefix: String,
    /// `x-request-id` of this request, carried to the worker's logs.
    pub request_id: Option<String>,
    /// The client's address (behind trusted proxies, the forwarded one).
    pub client_ip: Option<IpAddr>,
}

pub(crate) fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The client's address: the socket peer, or what a trusted proxy forwarded.
pub fn client_ip(parts: &Parts, app: &App) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    Some(recarga_domain::client_ip(
        peer,
        header(parts, "x-forwarded-for"),
        &app.trusted_proxies,
    ))
}

/// The client's address ([`client_ip`]) as an extractor.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<App> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, app)))
    }
}

/// What the authentication of a route allows.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthRules {
    /// A deactivated customer may still read (the old balance route did).
    pub allow_inactive: bool,
}

/// Authenticates a request: the key (issued, by its prefix; imported, by
/// `x-customer-id` and its digest), the customer's IP allow-list, its
/// active flag and its per-second rate limit.
pub async fn authenticate(parts: &Parts, app: &App, rules: AuthRules) -> Result<Caller, ApiError> {
    let bearer = header(parts, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let presented = match (bearer, header(parts, "x-api-key")) {
        // Two different keys: refuse rather than guess which one is meant.
        (Some(b), Some(x)) if b != x => {
            return Err(ApiError::new(
                "invalid_api_key",
                "Authorization and x-api-key name different keys",
            ));
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => {
            return Err(ApiError::new(
                "missing_api_key",
                "present an API key as Authorization: Bearer or x-api-key",
            ));
        }
    };
    let invalid = || ApiError::new("invalid_api_key", "the API key is not valid");
    // The key and the customer's current row in one read: a revocation or
    // a deactivation counts from the next request, on every replica.
    let (stored, customer) = keys::authenticate(app.store.as_ref(), presented, header(parts, "x-customer-id"))
        .await?
        .ok_or_else(invalid)?;
    let client_ip = client_ip(parts, app);
    if customer.ip_allowlist_enabled {
        let list = recarga_domain::IpList::parse(customer.ip_allowlist.as_deref().unwrap_or("")).unwrap_or_default();
        if !client_ip.is_some_and(|ip| list.contains(ip)) {
            let shown = client_ip.map(|ip| recarga_domain::netlist::canonical_ip(ip).to_string());
            return Err(
                ApiError::new("ip_not_allowed", "this address may not use the customer's keys")
                    .with_details(serde_json::json!({ "your_ip": shown })),
            );
        }
    }
    if !customer.active && !rules.allow_inactive {
        return Err(ApiError::new("customer_inactive", "the customer account is inactive"));
    }
    if let Some(rate) = app.rate_hit(&customer).await
        && !rate.allowed
    {
        return Err(
            ApiError::new("rate_limited", format!("more than {} requests per second", rate.limit))
                .with_header("retry-after", 1)
                .with_header("x-ratelimit-limit", rate.limit)
                .with_header("x-ratelimit-remaining", rate.remaining)
                .with_header("x-ratelimit-reset", 1),
        );
    }
    let now = recarga_store::now_ms();
    if stored.last_used_at.is_none_or(|t| t < now - KEY_TOUCH_EVERY_MS) {
        // Best effort, off the request path: "last used" is for operators.
        let store = app.store.clone();
        let key_id = stored.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&key_id, now).await {
                tracing::debug!(error = %e, "recording a key's last use failed");
            }
        });
    }
    let request_id = header(parts, "x-request-id").map(str::to_string);
    Ok(Caller {
        customer,
        key_prefix: stored.prefix.clone(),
        key: stored,
        request_id,
        client_ip,
    })
}

/// A key's `last_used_at` is written at most this often.
pub const KEY_TOUCH_EVERY_MS: i64 = 60_000;

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticate(parts, app, AuthRules::default()).await
    }
}

/// An operator authenticated by `x-admin-key` (scripts; pages use sessions).
///
/// Wrong keys are counted per client address like failed logins
/// (`crate::throttle`): from the fifth within an hour the address is
/// answered 429 `rate_limited` for 30 s, doubling, whatever key it presents.
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        use crate::throttle::{self, Throttle};
        use subtle::ConstantTimeEq;
        let presented = header(parts, "x-admin-key").unwrap_or("");
        let required = || ApiError::new("admin_required", "present the operator key as x-admin-key");
        if presented.is_empty() {
            return Err(required());
        }
        let key = throttle::failure_key("admin-key", client_ip(parts, app), "");
        let locked = |wait_s: i64| {
            ApiError::new(
                "rate_limited",
                format!("too many wrong operator keys from this address; try again in {wait_s} s"),
            )
            .with_header("retry-after", wait_s)
        };
        if let Throttle::Locked { wait_s } = throttle::state(app, &key).await? {
            return Err(locked(wait_s));
        }
        let ok: bool = presented.as_bytes().ct_eq(app.admin_key.as_bytes()).into();
        if !ok {
            return Err(match throttle::count_failure(app, &key).await? {
                Throttle::Locked { wait_s } => locked(wait_s),
                Throttle::Open => required(),
            });
        }
        Ok(Admin)
    }
}

/// `Prefer: wait=N`: how long the client will wait for a final state.
pub struct PreferWait(pub Option<Duration>);

impl<S: Send + Sync> FromRequestParts<S> for PreferWait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let wait = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|pref| pref.trim().strip_prefix("wait="))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .next()
            .map(|s| Duration::from_secs(s.min(crate::config::MAX_PREFER_WAIT_S)));
        Ok(PreferWait(wait))
    }
}
