//! Who is looking at a page: operator and customer logins, sessions, CSRF.
//!
//! - A login creates a row in `web_sessions` keyed by the SHA-256 of a random
//!   256-bit token; the browser gets the token in a cookie signed with
//!   HMAC-SHA256 (`token.signature`), `HttpOnly`, `SameSite=Strict`, `Path=/`,
//!   with `Max-Age` = the session TTL. Logout deletes the row, so it holds on
//!   every replica; an expired row opens nothing.
//! - Every session has its own CSRF token, put in a hidden `csrf` field of
//!   every state-changing form and compared in constant time before anything
//!   else is read. The login forms use a double-submit token (a short-lived
//!   cookie + the same value in the form).
//! - Failed logins are counted in the database per (client address, login
//!   name) ([`LOCKOUT`], `crate::throttle`): from the fifth, that pair is
//!   locked for 30 s, doubling, so a stranger cannot lock the owner out.
//!   Login attempts are also limited per client address, and password checks
//!   run in a bounded number of blocking tasks (`RECARGA_LOGIN_*`).
//! - Operators log in with email + argon2 password, or as `admin` with
//!   `ADMIN_KEY` (break-glass, actor `break-glass`). Customers log in with
//!   their id and an API key, checked like the API checks it; the session
//!   remembers the key's prefix, and revoking the key ends the session.

use super::WebError;
use crate::http::extract::ClientIp;
use crate::state::App;
use crate::throttle::{self, Throttle};
use askama::Template;
use axum::Router;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use recarga_service::{keys, operators};
use recarga_store::WebSession;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ADMIN_COOKIE: &str = "recarga_admin";
pub const CUSTOMER_COOKIE: &str = "recarga_customer";
/// Double-submit token of the login forms.
pub const LOGIN_COOKIE: &str = "recarga_login";
/// Lifetime of a login form's token (s).
pub const LOGIN_FORM_TTL_S: u64 = 3_600;
/// The break-glass login name (its password is `ADMIN_KEY`).
pub const BREAK_GLASS_LOGIN: &str = "admin";
pub const BREAK_GLASS_ACTOR: &str = "break-glass";
/// Five failures within an hour lock the (address, name) pair for 30 s, doubling up to 1 h.
pub use crate::throttle::LOCKOUT;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin/login", get(admin_login_page).post(admin_login))
        .route("/admin/logout", post(admin_logout))
        .route("/dashboard/login", get(dashboard_login_page).post(dashboard_login))
        .route("/dashboard/logout", post(dashboard_logout))
}

// ---------------------------------------------------------------- secrets

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex(&bytes)
}

/// The key that signs cookies: `RECARGA_SESSION_SECRET`, else derived from
/// `ADMIN_KEY` (replicas share it either way).
fn cookie_key(app: &App) -> Vec<u8> {
    let base = match &app.config.session_secret {
        Some(secret) => secret.0.as_str(),
        None => app.admin_key.as_str(),
    };
    Sha256::digest(format!("recarga-cookie-v1:{base}").as_bytes()).to_vec()
}

fn signature(app: &App, name: &str, token: &str) -> String {
    match hmac::Hmac::<Sha256>::new_from_slice(&cookie_key(app)) {
        Ok(mut mac) => {
            mac.update(name.as_bytes());
            mac.update(b"=");
            mac.update(token.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => String::new(),
    }
}

/// The cookie value for `token`: `token.signature`.
pub fn sign_cookie(app: &App, name: &str, token: &str) -> String {
    format!("{token}.{}", signature(app, name, token))
}

/// The token of a signed cookie value, if the signature is right.
pub fn verify_cookie(app: &App, name: &str, value: &str) -> Option<String> {
    let (token, sig) = value.rsplit_once('.')?;
    let expected = signature(app, name, token);
    let ok: bool = sig.as_bytes().ct_eq(expected.as_bytes()).into();
    (ok && !expected.is_empty()).then(|| token.to_string())
}

/// Sessions are stored by the digest of their token.
pub fn session_id(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn secure(app: &App) -> bool {
    app.config
        .cookie_secure
        .unwrap_or(app.config.env == crate::config::RunEnv::Production)
}

fn set_cookie(app: &App, name: &str, value: &str, max_age_s: u64) -> HeaderValue {
    let secure = if secure(app) { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

fn clear_cookie(app: &App, name: &str) -> HeaderValue {
    set_cookie(app, name, "", 0)
}

/// The raw value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

// ---------------------------------------------------------------- passwords

/// A hash to verify against when the login name does not exist, so an
/// unknown name costs the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| operators::hash_password(&random_hex(16)).unwrap_or_default())
}

// ---------------------------------------------------------------- sessions

/// A logged-in operator.
pub struct OperatorSession {
    pub session: WebSession,
}

impl OperatorSession {
    /// The name written to the audit log: the operator's email, or `break-glass`.
    pub fn actor(&self) -> &str {
        &self.session.subject
    }

    pub fn is_admin(&self) -> bool {
        self.session.role == "admin"
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }

    /// Refuses (403) a change without this session's CSRF token or by a viewer.
    pub fn may_change(&self, csrf: &str) -> Result<(), WebError> {
        if !same(csrf, &self.session.csrf) {
            return Err(WebError::forbidden(
                "The form's security token is missing or stale. Reload the page and try again; nothing was changed.",
            ));
        }
        if !self.is_admin() {
            return Err(WebError::forbidden(
                "Your role is viewer: you can look at everything but not change it.",
            ));
        }
        Ok(())
    }
}

/// A logged-in customer (dashboard).
pub struct CustomerSession {
    pub session: WebSession,
}

impl CustomerSession {
    pub fn customer_id(&self) -> &str {
        &self.session.subject
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

async fn load_session(app: &App, headers: &HeaderMap, name: &str, kind: &str) -> Option<WebSession> {
    let token = verify_cookie(app, name, cookie(headers, name)?)?;
    let session = match app
        .store
        .get_session(&session_id(&token), recarga_store::now_ms())
        .await
    {
        Ok(s) => s?,
        Err(e) => {
            tracing::warn!(error = %e, "reading a session failed");
            return None;
        }
    };
    (session.kind == kind).then_some(session)
}

/// The operator session of a request, if any and its operator is still
/// active; the role is the account's current one.
pub async fn operator(app: &App, headers: &HeaderMap) -> Option<OperatorSession> {
    let session = load_session(app, headers, ADMIN_COOKIE, "operator").await?;
    current_operator(app, session)
        .await
        .map(|session| OperatorSession { session })
}

/// `session` with its operator's current role, or `None` if the account is
/// gone or disabled (break-glass sessions have no account).
async fn current_operator(app: &App, mut session: WebSession) -> Option<WebSession> {
    if session.subject == BREAK_GLASS_ACTOR {
        return Some(session);
    }
    match app.store.get_operator(&session.subject).await {
        Ok(Some(op)) if op.active => {
            session.role = op.role;
            Some(session)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "reading an operator failed");
            None
        }
    }
}

/// Whether a live stream opened under `session` may go on: the session was
/// not logged out or ended, and an operator's account is still active.
pub async fn session_still_open(app: &App, session: &WebSession) -> bool {
    let current = match app.store.get_session(&session.id, recarga_store::now_ms()).await {
        Ok(Some(s)) => s,
        Ok(None) => return false,
        // A database hiccup does not end a page's stream; the next tick re-checks.
        Err(_) => return true,
    };
    current.kind != "operator" || current_operator(app, current).await.is_some()
}

/// The customer session of a request, if any and its key is still valid.
pub async fn customer(app: &App, headers: &HeaderMap) -> Option<CustomerSession> {
    let session = load_session(app, headers, CUSTOMER_COOKIE, "customer").await?;
    let prefix = session.key_prefix.as_deref()?;
    key_still_opens(app, prefix, &session.subject)
        .await
        .then_some(CustomerSession { session })
}

/// Whether the key with `prefix` is unrevoked, belongs to `customer_id` and
/// that customer is active: one read, as the API checks its callers.
pub async fn key_still_opens(app: &App, prefix: &str, customer_id: &str) -> bool {
    matches!(
        app.store.find_caller(prefix).await,
        Ok(Some((key, customer))) if key.is_valid_at(recarga_store::now_ms()) && key.customer_id == customer_id && customer.active
    )
}

fn login_redirect(login: &str, parts: &Parts) -> Response {
    // Only a page can be come back to; a form post starts over from the overview.
    let next = match parts.method {
        axum::http::Method::GET => parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/admin"),
        _ => "/admin",
    };
    Redirect::to(&format!("{login}?next={}", super::q(next))).into_response()
}

impl FromRequestParts<App> for OperatorSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match operator(app, &parts.headers).await {
            Some(s) => Ok(s),
            None => Err(login_redirect("/admin/login", parts)),
        }
    }
}

impl FromRequestParts<App> for CustomerSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match customer(app, &parts.headers).await {
            Some(s) => Ok(s),
            None => Err(Redirect::to("/dashboard/login").into_response()),
        }
    }
}

/// Opens a session and returns the `Set-Cookie` header for it.
pub async fn open_session(
    app: &App,
    cookie_name: &str,
    kind: &str,
    subject: &str,
    role: &str,
    key_prefix: Option<String>,
) -> Result<HeaderValue, WebError> {
    let now = recarga_store::now_ms();
    let ttl_s = app.config.session_ttl_s;
    let token = random_hex(32);
    let session = WebSession {
        id: session_id(&token),
        kind: kind.into(),
        subject: subject.into(),
        role: role.into(),
        key_prefix,
        csrf: random_hex(32),
        created_at: now,
        expires_at: now.saturating_add((ttl_s as i64).saturating_mul(1000)),
    };
    if let Err(e) = app.store.purge_sessions(now).await {
        tracing::warn!(error = %e, "purging expired sessions failed");
    }
    app.store.create_session(&session).await?;
    Ok(set_cookie(
        app,
        cookie_name,
        &sign_cookie(app, cookie_name, &token),
        ttl_s,
    ))
}

// ---------------------------------------------------------------- throttling

async fn throttle_state(app: &App, key: &str) -> Result<Throttle, WebError> {
    Ok(throttle::state(app, key).await?)
}

async fn count_failure(app: &App, key: &str) -> Result<Throttle, WebError> {
    Ok(throttle::count_failure(app, key).await?)
}

const TOO_MANY_FROM_HERE: &str = "Too many login attempts from your address. Try again in a minute.";
const HASHING_BUSY: &str = "The server is busy checking other logins. Try again in a few seconds.";

fn locked_message(wait_s: i64) -> String {
    format!("Too many failed logins: this login is locked. Try again in {wait_s} s.")
}

// ---------------------------------------------------------------- login pages

#[derive(Template)]
#[template(path = "admin_login.html")]
struct AdminLoginPage {
    csrf: String,
    next: String,
    email: String,
    error: String,
}

#[derive(Template)]
#[template(path = "dashboard_login.html")]
struct DashboardLoginPage {
    csrf: String,
    customer_id: String,
    error: String,
}

/// The login form's double-submit token: the cookie's, or a new one.
fn login_token(app: &App, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    if let Some(token) = cookie(headers, LOGIN_COOKIE).and_then(|v| verify_cookie(app, LOGIN_COOKIE, v)) {
        return (token, None);
    }
    let token = random_hex(16);
    let value = set_cookie(
        app,
        LOGIN_COOKIE,
        &sign_cookie(app, LOGIN_COOKIE, &token),
        LOGIN_FORM_TTL_S,
    );
    (token, Some(value))
}

fn page_with(status: StatusCode, html: String, cookies: Vec<HeaderValue>) -> Response {
    let mut res = (status, Html(html)).into_response();
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// The pages a login may lead back to (the operator pages).
pub const NEXT_ROOTS: [&str; 2] = ["/admin", "/queue"];

/// `next` only ever leads to a known page of this site: printable ASCII
/// without spaces or backslashes (browsers drop tabs and newlines and read
/// `\` as `/`, so `/%09/evil.example` would become `//evil.example`), whose
/// path is one of [`NEXT_ROOTS`] or below one. Anything else is the overview.
pub fn safe_next(next: &str) -> String {
    let printable = next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let path = next.split(['?', '#']).next().unwrap_or("");
    let known = NEXT_ROOTS.iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if printable && known {
        next.to_string()
    } else {
        "/admin".into()
    }
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

async fn admin_login_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Result<Response, WebError> {
    if operator(&app, &headers).await.is_some() {
        return Ok(Redirect::to(&safe_next(&q.next)).into_response());
    }
    let (csrf, set) = login_token(&app, &headers);
    let page = AdminLoginPage {
        csrf,
        next: safe_next(&q.next),
        email: String::new(),
        error: String::new(),
    };
    Ok(page_with(StatusCode::OK, page.render()?, set.into_iter().collect()))
}

#[derive(Deserialize)]
struct AdminLoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

async fn admin_login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<AdminLoginForm>,
) -> Result<Response, WebError> {
    let (token, set) = login_token(&app, &headers);
    let email = form.email.trim().to_ascii_lowercase();
    let next = safe_next(&form.next);
    let render = |status: StatusCode, error: String| -> Result<Response, WebError> {
        let page = AdminLoginPage {
            csrf: token.clone(),
            next: next.clone(),
            email: email.clone(),
            error,
        };
        Ok(page_with(status, page.render()?, set.clone().into_iter().collect()))
    };
    if set.is_some() || !same(&form.csrf, &token) {
        return render(
            StatusCode::FORBIDDEN,
            "The login form expired. Please try again.".into(),
        );
    }
    if email.is_empty() || form.password.is_empty() {
        return render(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your email and password.".into(),
        );
    }
    if !throttle::login_attempt_allowed(&app, ip).await {
        return render(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_FROM_HERE.into());
    }
    let throttle_key = throttle::failure_key("operator", ip, &email);
    if let Throttle::Locked { wait_s } = throttle_state(&app, &throttle_key).await? {
        return render(StatusCode::TOO_MANY_REQUESTS, locked_message(wait_s));
    }
    let (subject, role) = if email == BREAK_GLASS_LOGIN {
        let ok: bool = form.password.as_bytes().ct_eq(app.admin_key.as_bytes()).into();
        (ok.then(|| BREAK_GLASS_ACTOR.to_string()), "admin".to_string())
    } else {
        let account = app.store.get_operator(&email).await?;
        let stored = account
            .as_ref()
            .filter(|o| o.active)
            .map(|o| o.password_hash.clone())
            .unwrap_or_else(|| decoy_hash().to_string());
        let Ok(matches) = throttle::check_password(&app, form.password.clone(), stored).await else {
            return render(StatusCode::SERVICE_UNAVAILABLE, HASHING_BUSY.into());
        };
        match account.filter(|o| o.active && matches) {
            Some(o) => (Some(o.email), o.role),
            None => (None, String::new()),
        }
    };
    let Some(subject) = subject else {
        return match count_failure(&app, &throttle_key).await? {
            Throttle::Locked { wait_s } => render(StatusCode::TOO_MANY_REQUESTS, locked_message(wait_s)),
            Throttle::Open => render(StatusCode::UNAUTHORIZED, "Wrong email or password.".into()),
        };
    };
    app.store.clear_login_failures(&throttle_key).await?;
    let cookie = open_session(&app, ADMIN_COOKIE, "operator", &subject, &role, None).await?;
    app.store
        .append_audit(&subject, "login", Some(&subject), Some(&format!("role {role}")))
        .await?;
    let mut res = Redirect::to(&next).into_response();
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&app, LOGIN_COOKIE));
    Ok(res)
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

async fn admin_logout(
    State(app): State<App>,
    op: OperatorSession,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    if !same(&form.csrf, op.csrf()) {
        return Err(WebError::forbidden(
            "The form's security token is missing or stale. Reload the page and try again.",
        ));
    }
    app.store.delete_session(&op.session.id).await?;
    app.store
        .append_audit(op.actor(), "logout", Some(op.actor()), None)
        .await?;
    let mut res = Redirect::to("/admin/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&app, ADMIN_COOKIE));
    Ok(res)
}

async fn dashboard_login_page(State(app): State<App>, headers: HeaderMap) -> Result<Response, WebError> {
    if customer(&app, &headers).await.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    let (csrf, set) = login_token(&app, &headers);
    let page = DashboardLoginPage {
        csrf,
        customer_id: String::new(),
        error: String::new(),
    };
    Ok(page_with(StatusCode::OK, page.render()?, set.into_iter().collect()))
}

#[derive(Deserialize)]
struct DashboardLoginForm {
    #[serde(default)]
    customer_id: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    csrf: String,
}

async fn dashboard_login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<DashboardLoginForm>,
) -> Result<Response, WebError> {
    let (token, set) = login_token(&app, &headers);
    let customer_id = form.customer_id.trim().to_string();
    let render = |status: StatusCode, error: String| -> Result<Response, WebError> {
        let page = DashboardLoginPage {
            csrf: token.clone(),
            customer_id: customer_id.clone(),
            error,
        };
        Ok(page_with(status, page.render()?, set.clone().into_iter().collect()))
    };
    if set.is_some() || !same(&form.csrf, &token) {
        return render(
            StatusCode::FORBIDDEN,
            "The login form expired. Please try again.".into(),
        );
    }
    if customer_id.is_empty() || form.api_key.trim().is_empty() {
        return render(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your customer id and API key.".into(),
        );
    }
    if !throttle::login_attempt_allowed(&app, ip).await {
        return render(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_FROM_HERE.into());
    }
    let throttle_key = throttle::failure_key("customer", ip, &customer_id);
    if let Throttle::Locked { wait_s } = throttle_state(&app, &throttle_key).await? {
        return render(StatusCode::TOO_MANY_REQUESTS, locked_message(wait_s));
    }
    let presented = form.api_key.trim();
    // Issued keys and keys imported from the old system alike.
    let mut prefix = None;
    if let Some((stored, customer)) = keys::authenticate(app.store.as_ref(), presented, Some(&customer_id)).await?
        && customer.active
    {
        prefix = Some(stored.prefix);
    }
    let Some(prefix) = prefix else {
        return match count_failure(&app, &throttle_key).await? {
            Throttle::Locked { wait_s } => render(StatusCode::TOO_MANY_REQUESTS, locked_message(wait_s)),
            Throttle::Open => render(StatusCode::UNAUTHORIZED, "Wrong customer id or API key.".into()),
        };
    };
    app.store.clear_login_failures(&throttle_key).await?;
    let cookie = open_session(
        &app,
        CUSTOMER_COOKIE,
        "customer",
        &customer_id,
        "customer",
        Some(prefix),
    )
    .await?;
    let mut res = Redirect::to("/dashboard").into_response();
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&app, LOGIN_COOKIE));
    Ok(res)
}

async fn dashboard_logout(
    State(app): State<App>,
    me: CustomerSession,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    if !same(&form.csrf, me.csrf()) {
        return Err(WebError::forbidden(
            "The form's security token is missing or stale. Reload the page and try again.",
        ));
    }
    app.store.delete_session(&me.session.id).await?;
    let mut res = Redirect::to("/dashboard/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&app, CUSTOMER_COOKIE));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/admin/customers?x=1"), "/admin/customers?x=1");
        assert_eq!(safe_next("/queue"), "/queue");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "",
            "admin",
            "/\t/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/administrator",
            "/dashboard",
            "/nowhere",
        ] {
            assert_eq!(safe_next(bad), "/admin", "{bad}");
        }
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; recarga_admin=tok.sig; b=2"),
        );
        assert_eq!(cookie(&h, ADMIN_COOKIE), Some("tok.sig"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
