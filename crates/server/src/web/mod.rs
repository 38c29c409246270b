//! The pages: operator panel (`/admin`), live queue monitor (`/queue`) and
//! customer dashboard (`/dashboard`), server-rendered with askama, with their
//! CSS and one small script embedded in the binary (no CDN).
//!
//! - [`auth`]: sessions (random token in a signed, HttpOnly, SameSite=Strict
//!   cookie; the session row lives in the database so logout and expiry hold
//!   on every replica), CSRF tokens, login throttling, argon2 passwords.
//! - [`admin`]: overview, customers, transactions (+ CSV), audit log. Every
//!   change goes through the existing [`recarga_store::Store`] methods, one DB
//!   transaction each, which audit it with the operator's email as actor.
//! - [`queue`]: `/queue` and its server-sent events.
//! - [`dashboard`]: the customer's own page, events and CSV.
//! - [`live`]: the caps on open live streams per session and per customer.
//! - [`export`]: the CSV stream (pages of [`export::CSV_PAGE_ROWS`], never the
//!   whole result in memory).
//!
//! Errors on these routes are HTML pages ([`WebError`]), not the API's JSON.

pub mod admin;
pub mod auth;
pub mod dashboard;
pub mod export;
pub mod live;
pub mod queue;

use crate::state::App;
use askama::Template;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use recarga_domain::Money;
use recarga_service::ServiceError;
use recarga_store::StoreError;

/// State the pages share within a process (an extension of the page routes).
#[derive(Default)]
pub struct PagesState {
    /// The latest `/queue` reading and when it was taken: every viewer's push
    /// within [`queue::SNAPSHOT_SHARE_MS`] reuses it, so the database is read
    /// a bounded number of times per second however many operators watch.
    pub queue: tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<queue::Snapshot>)>>,
    /// Open live streams per session and per customer ([`live`]).
    pub streams: std::sync::Arc<live::StreamCounts>,
}

/// Every page route, CSS and script.
pub fn routes() -> Router<App> {
    Router::new()
        .merge(auth::routes())
        .merge(admin::routes())
        .merge(queue::routes())
        .merge(dashboard::routes())
        .route("/assets/{*path}", get(asset))
        .route("/admin/{*rest}", get(not_found_page))
        .route("/dashboard/{*rest}", get(not_found_page))
        .layer(axum::Extension(std::sync::Arc::new(PagesState::default())))
        .layer(axum::middleware::map_response(security_headers))
}

/// Pages never load anything from elsewhere, never run inline script and are
/// never framed.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

async fn asset(Path(path): Path<String>) -> Response {
    let Some(file) = Assets::get(&path) else {
        return WebError::not_found().into_response();
    };
    let mime = match path.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

async fn not_found_page() -> WebError {
    WebError::not_found()
}

/// An error shown as a page: a status, a title and a sentence.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
    forbidden: bool,
}

impl WebError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        WebError {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Check the form", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The request could not be completed; nothing was changed by this page. Try again.",
        )
    }
}

impl From<ServiceError> for WebError {
    fn from(e: ServiceError) -> Self {
        use ServiceError as E;
        match e {
            E::NotFound => WebError::not_found(),
            E::Invalid { message, .. } => WebError::bad_input(format!("{}.", capitalized(&message))),
            E::InsufficientFunds => WebError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Insufficient funds",
                "The balance plus credit limit does not cover this debit; nothing was changed.",
            ),
            E::AlreadyExists(what) => WebError::new(
                StatusCode::CONFLICT,
                "Already exists",
                format!("{what} already exists."),
            ),
            E::Rule(why) => WebError::bad_input(format!("Refused: {why}. Nothing was changed.")),
            E::WrongState(why) => WebError::new(
                StatusCode::CONFLICT,
                "Changed meanwhile",
                format!("{why}. Reload the page to see the current state."),
            ),
            E::Unavailable(cause) => {
                tracing::error!(error = %cause, "page: database unavailable");
                WebError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database busy",
                    "The database did not answer in time; nothing was changed. Try again.",
                )
            }
            other => {
                tracing::error!(error = %other, "page: service error");
                WebError::internal()
            }
        }
    }
}

/// Reads go to the store directly; its errors mean what the service's do.
impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "page: template error");
        WebError::internal()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            title: self.title,
            message: &self.message,
            forbidden: self.status == StatusCode::FORBIDDEN,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

/// Renders a template as a 200 page.
pub fn render(t: &impl Template) -> Result<Response, WebError> {
    Ok(Html(t.render()?).into_response())
}

/// `123456` centavos → `"1,234.56"`.
pub fn amount(m: Money) -> String {
    let text = m.to_decimal_string();
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, "00"));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{frac}")
}

/// `"1,234.56 MXN"`.
pub fn money(m: Money, currency: &str) -> String {
    format!("{} {currency}", amount(m))
}

/// `2026-11-30 10:15:02 UTC`, for people.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `2 h 5 min`, `40 s`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Status icon + word: colour is never the only signal.
pub fn status_icon(status: &str) -> &'static str {
    match status {
        "SUCCESS" => "✓",
        "FAILED" => "✕",
        "UNKNOWN" => "?",
        "PROCESSING" => "↻",
        "PENDING" => "…",
        _ => "•",
    }
}

/// A value for a query string.
pub fn q(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One table row of a top-up, as every page shows it.
pub struct TopupRow {
    pub id: String,
    pub customer_id: String,
    pub reference: String,
    pub phone: String,
    pub status: &'static str,
    pub status_class: String,
    pub icon: &'static str,
    pub amount: String,
    pub charge: String,
    pub created: String,
    pub failure: String,
}

impl From<&recarga_store::Topup> for TopupRow {
    fn from(t: &recarga_store::Topup) -> Self {
        let status = t.status.as_str();
        TopupRow {
            id: t.id.clone(),
            customer_id: t.customer_id.clone(),
            reference: t.reference.clone(),
            phone: t.phone.as_str().to_string(),
            status,
            status_class: status.to_ascii_lowercase(),
            icon: status_icon(status),
            amount: money(t.face_value, "MXN"),
            charge: money(t.held, t.currency.as_str()),
            created: when(t.created_at),
            failure: t
                .failure_message
                .clone()
                .or_else(|| t.failure_code.clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_group_thousands() {
        assert_eq!(amount(Money(0)), "0.00");
        assert_eq!(amount(Money(100_000)), "1,000.00");
        assert_eq!(amount(Money(-123_456_789)), "-1,234,567.89");
        assert_eq!(amount(Money(99_999)), "999.99");
        assert_eq!(money(Money(12_345_000), "MXN"), "123,450.00 MXN");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(q("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
