//! The operator panel: overview, customers (create, credit/debit, keys,
//! limits, ledger), transactions (filters, keyset pages, CSV, detail,
//! UNKNOWN resolution) and the audit log.
//!
//! Reads come from [`recarga_store::OpsStore`]; every change is one existing
//! [`recarga_store::Store`] method (one DB transaction, audited with the
//! operator's email as actor), after the session's CSRF token and role were
//! checked. Bad input is a 4xx page and changes nothing.

use super::auth::OperatorSession;
use super::{TopupRow, WebError, amount, money, render, when};
use crate::app::App;
use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use recarga_domain::{CatalogueRule, Money, TopupStatus};
use recarga_store::{
    Adjustment, AuditEntry, Customer, CustomerPatch, FinalOutcome, NewCustomer, Resolution, TopupSearch,
};
use serde::Deserialize;

/// Rows per page of the transaction list.
pub const TX_PAGE_ROWS: i64 = 50;
/// Ledger entries per page on a customer page.
pub const LEDGER_PAGE_ROWS: i64 = 50;
/// Audit rows per page.
pub const AUDIT_PAGE_ROWS: i64 = 100;
/// A customer whose available funds fall below this is "near its limit".
pub const NEAR_LIMIT_AVAILABLE: Money = Money::major(1_000);
/// … or who used this share (percent) of its rolling 24 h limit.
pub const NEAR_LIMIT_DAILY_PCT: i64 = 80;
/// Above this p95 upstream latency (ms) the upstream counts as slow.
pub const SLOW_P95_MS: i64 = 10_000;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/", get(overview))
        .route("/admin/customers", get(customers).post(create_customer))
        .route("/admin/customers/new", get(new_customer))
        .route("/admin/customers/{id}", get(customer_page))
        .route("/admin/customers/{id}/adjust", post(adjust))
        .route("/admin/customers/{id}/keys", post(issue_key))
        .route("/admin/customers/{id}/keys/{key_id}/revoke", post(revoke_key))
        .route("/admin/customers/{id}/limits", post(limits))
        .route("/admin/customers/{id}/legacy", post(legacy_settings))
        .route("/admin/transactions", get(transactions))
        .route("/admin/transactions.csv", get(transactions_csv))
        .route("/admin/transactions/{id}", get(transaction))
        .route("/admin/transactions/{id}/resolve", post(resolve))
        .route("/admin/audit", get(audit))
}

/// What every operator page shows around its content.
pub struct Chrome {
    pub actor: String,
    pub role: String,
    pub csrf: String,
    pub is_admin: bool,
    /// Which nav entry is current.
    pub tab: &'static str,
    pub sandbox: bool,
}

impl Chrome {
    pub fn new(op: &OperatorSession, app: &App, tab: &'static str) -> Self {
        Chrome {
            actor: op.actor().to_string(),
            role: op.session.role.clone(),
            csrf: op.csrf().to_string(),
            is_admin: op.is_admin(),
            tab,
            sandbox: app.is_sandbox(),
        }
    }
}

/// Midnight UTC of today, in ms.
pub fn today_start_ms() -> i64 {
    let now = chrono::Utc::now();
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// `ok`, `slow`, `ip_blocked` or `down`, from the adapter and recent latency.
pub fn upstream_state(app: &App, p95_ms: Option<i64>) -> (&'static str, String) {
    let h = app.provider.health();
    if !h.ok {
        let state = if h.state.contains("ip_not_authorized") {
            "ip_blocked"
        } else {
            "down"
        };
        return (state, format!("{}: {}", h.state, h.detail));
    }
    if p95_ms.is_some_and(|p| p > SLOW_P95_MS) {
        return ("slow", format!("p95 above {} s", SLOW_P95_MS / 1000));
    }
    ("ok", h.detail)
}

/// p50 and p95 of `samples` (ms).
pub fn percentiles(mut samples: Vec<i64>) -> (Option<i64>, Option<i64>) {
    if samples.is_empty() {
        return (None, None);
    }
    samples.sort_unstable();
    let at = |p: usize| samples[((samples.len() - 1) * p) / 100];
    (Some(at(50)), Some(at(95)))
}

// ---------------------------------------------------------------- overview

struct NearLimit {
    id: String,
    name: String,
    balance: String,
    available: String,
    daily: String,
    why: String,
}

#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage {
    chrome: Chrome,
    volume: String,
    success: i64,
    failed: i64,
    unknown: i64,
    in_flight: i64,
    open_unknown: i64,
    upstream: &'static str,
    upstream_detail: String,
    near: Vec<NearLimit>,
}

async fn overview(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    let since = today_start_ms();
    let totals = app.store.status_totals(None, since).await?;
    let count = |s: &str| totals.iter().filter(|t| t.status == s).map(|t| t.count).sum::<i64>();
    let volume = totals
        .iter()
        .filter(|t| t.status == "SUCCESS")
        .map(|t| t.face_value)
        .sum::<i64>();
    let backlog = app.store.queue_backlog().await?;
    let now = recarga_store::now_ms();
    let (_, p95) = percentiles(app.store.upstream_latencies(now - 15 * 60_000, 2000).await?);
    let (upstream, upstream_detail) = upstream_state(&app, p95);
    let usage: std::collections::HashMap<String, i64> = app
        .store
        .usage_by_customer(now - 24 * 3600 * 1000)
        .await?
        .into_iter()
        .collect();
    let mut near = Vec::new();
    for c in app.store.list_customers().await? {
        let available = Money(c.balance.0 + c.credit_limit.0);
        let used = usage.get(&c.id).copied().unwrap_or(0);
        let mut why = Vec::new();
        if available.0 < NEAR_LIMIT_AVAILABLE.0 {
            why.push(format!("available below {}", amount(NEAR_LIMIT_AVAILABLE)));
        }
        if let Some(limit) = c.daily_limit.filter(|l| *l > 0)
            && used * 100 >= limit * NEAR_LIMIT_DAILY_PCT
        {
            why.push(format!("{}% of the 24 h limit used", used * 100 / limit));
        }
        if c.active && !why.is_empty() {
            near.push(NearLimit {
                daily: match c.daily_limit {
                    Some(l) => format!("{} / {}", amount(Money(used)), amount(Money(l))),
                    None => "no limit".into(),
                },
                id: c.id.clone(),
                name: c.name.clone(),
                balance: money(c.balance, c.currency.as_str()),
                available: money(available, c.currency.as_str()),
                why: why.join("; "),
            });
        }
    }
    render(&OverviewPage {
        chrome: Chrome::new(&op, &app, "overview"),
        volume: money(Money(volume), "MXN"),
        success: count("SUCCESS"),
        failed: count("FAILED"),
        unknown: count("UNKNOWN"),
        in_flight: backlog.pending + backlog.delayed + backlog.processing,
        open_unknown: backlog.unknown,
        upstream,
        upstream_detail,
        near,
    })
}

// ---------------------------------------------------------------- customers

struct CustomerRow {
    id: String,
    name: String,
    balance: String,
    available: String,
    credit_limit: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "admin_customers.html")]
struct CustomersPage {
    chrome: Chrome,
    rows: Vec<CustomerRow>,
}

async fn customers(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    let rows = app
        .store
        .list_customers()
        .await?
        .iter()
        .map(|c| CustomerRow {
            id: c.id.clone(),
            name: c.name.clone(),
            balance: money(c.balance, c.currency.as_str()),
            available: money(Money(c.balance.0 + c.credit_limit.0), c.currency.as_str()),
            credit_limit: money(c.credit_limit, c.currency.as_str()),
            active: c.active,
        })
        .collect();
    render(&CustomersPage {
        chrome: Chrome::new(&op, &app, "customers"),
        rows,
    })
}

#[derive(Template)]
#[template(path = "admin_customer_new.html")]
struct NewCustomerPage {
    chrome: Chrome,
}

async fn new_customer(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    if !op.is_admin() {
        return Err(WebError::forbidden(
            "Your role is viewer: you can look at everything but not change it.",
        ));
    }
    render(&NewCustomerPage {
        chrome: Chrome::new(&op, &app, "customers"),
    })
}

#[derive(Deserialize)]
struct NewCustomerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credit_limit: String,
}

/// A customer id: 1–64 of `A-Z a-z 0-9 _ -`.
fn valid_customer_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A non-negative decimal amount from a form (blank = `default`).
fn form_money(field: &str, text: &str, default: Option<Money>) -> Result<Option<Money>, WebError> {
    let text = text.trim().replace(',', "");
    if text.is_empty() {
        return Ok(default);
    }
    let m = Money::parse_decimal(&text)
        .map_err(|e| WebError::bad_input(format!("{field}: {text:?} is not an amount ({e}).")))?;
    if m.0 < 0 {
        return Err(WebError::bad_input(format!("{field} cannot be negative.")));
    }
    Ok(Some(m))
}

async fn create_customer(
    State(app): State<App>,
    op: OperatorSession,
    Form(f): Form<NewCustomerForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let id = f.id.trim();
    let name = f.name.trim();
    if !valid_customer_id(id) {
        return Err(WebError::bad_input(
            "The customer id must be 1–64 letters, digits, '_' or '-'.",
        ));
    }
    if name.is_empty() || name.len() > 200 {
        return Err(WebError::bad_input("The name is required (at most 200 characters)."));
    }
    let credit_limit = form_money("Credit limit", &f.credit_limit, Some(Money::ZERO))?.unwrap_or(Money::ZERO);
    let new = NewCustomer {
        credit_limit,
        ..NewCustomer::new(id, name)
    };
    app.store.create_customer(&new, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}", super::q(id))).into_response())
}

struct KeyRow {
    id: String,
    prefix: String,
    label: String,
    /// `issued` or `imported`.
    kind: String,
    created: String,
    last_used: String,
    revoked: String,
    /// When a rotated key stops working.
    retiring: String,
}

struct LedgerRow {
    id: i64,
    kind: String,
    topup_id: String,
    amount: String,
    balance_after: String,
    actor: String,
    reason: String,
    at: String,
}

impl LedgerRow {
    fn from(e: &recarga_store::LedgerEntry, currency: &str) -> Self {
        LedgerRow {
            id: e.id,
            kind: e.kind.clone(),
            topup_id: e.topup_id.clone().unwrap_or_default(),
            amount: money(e.amount, currency),
            balance_after: money(e.balance_after, currency),
            actor: e.actor.clone(),
            reason: e.reason.clone().unwrap_or_default(),
            at: when(e.created_at),
        }
    }
}

pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub at: String,
    pub action: String,
    pub subject: String,
    pub before: String,
    pub after: String,
    pub reason: String,
}

/// Row fields that change on every write and say nothing to a reader.
const AUDIT_NOISE: [&str; 3] = ["updated_at", "version", "created_at"];
/// Fields of a customer row that hold minor units.
const AUDIT_MONEY: [&str; 5] = ["balance", "credit_limit", "min_topup", "max_topup", "daily_limit"];

/// Before / after as a person reads them: balances as decimals, and for a
/// changed customer row only the fields that changed.
fn humanize(action: &str, before: Option<&str>, after: Option<&str>) -> (String, String) {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    if action == "balance.adjust" {
        let dec = |v: Option<&str>| {
            v.and_then(|t| t.parse::<i64>().ok())
                .map(|m| amount(Money(m)))
                .unwrap_or_else(|| text(v))
        };
        return (dec(before), dec(after));
    }
    let parse = |v: Option<&str>| v.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    // Customer rows keep money in minor units; show it as people read it.
    let show = |k: &str, v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if AUDIT_MONEY.contains(&k) => {
            n.as_i64().map(|m| amount(Money(m))).unwrap_or_else(|| n.to_string())
        }
        other => other.to_string(),
    };
    match (parse(before), parse(after)) {
        (Some(serde_json::Value::Object(b)), Some(serde_json::Value::Object(a))) => {
            let mut olds = Vec::new();
            let mut news = Vec::new();
            for (k, new) in &a {
                if AUDIT_NOISE.contains(&k.as_str()) {
                    continue;
                }
                let old = b.get(k).cloned().unwrap_or(serde_json::Value::Null);
                if &old != new {
                    olds.push(format!("{k}: {}", show(k, &old)));
                    news.push(format!("{k}: {}", show(k, new)));
                }
            }
            (olds.join(", "), news.join(", "))
        }
        (None, Some(serde_json::Value::Object(a))) => {
            let fields: Vec<String> = a
                .iter()
                .filter(|(k, _)| !AUDIT_NOISE.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}: {}", show(k, v)))
                .collect();
            (text(before), fields.join(", "))
        }
        _ => (text(before), text(after)),
    }
}

impl From<&AuditEntry> for AuditRow {
    fn from(a: &AuditEntry) -> Self {
        let (before, after) = humanize(&a.action, a.before.as_deref(), a.after.as_deref());
        AuditRow {
            id: a.id,
            actor: a.actor.clone(),
            at: when(a.created_at),
            action: a.action.clone(),
            subject: a.subject.clone().unwrap_or_default(),
            before,
            after,
            reason: a.reason.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_customer.html")]
struct CustomerPage {
    chrome: Chrome,
    c: CustomerView,
    keys: Vec<KeyRow>,
    ledger: Vec<LedgerRow>,
    ledger_next: Option<i64>,
    audit: Vec<AuditRow>,
    new_key: Option<String>,
    notice: String,
}

struct CustomerView {
    id: String,
    name: String,
    currency: String,
    balance: String,
    credit_limit: String,
    credit_limit_plain: String,
    available: String,
    discount: String,
    min_topup: String,
    max_topup: String,
    daily_limit: String,
    daily_limit_plain: String,
    rate_limit: String,
    catalogue: &'static str,
    active: bool,
    used_24h: String,
    reference_policy: &'static str,
    public_status: bool,
    ip_allowlist: String,
    ip_allowlist_enabled: bool,
}

impl CustomerView {
    fn new(c: &Customer, used_24h: i64) -> Self {
        let cur = c.currency.as_str();
        CustomerView {
            id: c.id.clone(),
            name: c.name.clone(),
            currency: cur.into(),
            balance: money(c.balance, cur),
            credit_limit: money(c.credit_limit, cur),
            credit_limit_plain: c.credit_limit.to_decimal_string(),
            available: money(Money(c.balance.0 + c.credit_limit.0), cur),
            discount: format!("{}.{:02}", c.discount_bps / 100, c.discount_bps % 100),
            min_topup: c.min_topup.to_decimal_string(),
            max_topup: c.max_topup.to_decimal_string(),
            daily_limit: c
                .daily_limit
                .map(|l| money(Money(l), "MXN"))
                .unwrap_or_else(|| "none".into()),
            daily_limit_plain: c.daily_limit.map(|l| Money(l).to_decimal_string()).unwrap_or_default(),
            rate_limit: c.rate_limit_per_s.map(|r| r.to_string()).unwrap_or_default(),
            catalogue: c.catalogue.as_str(),
            active: c.active,
            used_24h: money(Money(used_24h), "MXN"),
            reference_policy: c.reference_policy.as_str(),
            public_status: c.public_status,
            ip_allowlist: c.ip_allowlist.clone().unwrap_or_default(),
            ip_allowlist_enabled: c.ip_allowlist_enabled,
        }
    }
}

#[derive(Deserialize, Default)]
struct CustomerQuery {
    /// Keyset cursor of the ledger (an entry id); anything else is the first page.
    #[serde(default)]
    ledger_before: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

async fn customer_view(
    app: &App,
    op: &OperatorSession,
    id: &str,
    ledger_before: Option<i64>,
    new_key: Option<String>,
    notice: String,
) -> Result<Response, WebError> {
    let c = app.store.get_customer(id).await?.ok_or_else(WebError::not_found)?;
    let cur = c.currency.as_str();
    let keys = app
        .store
        .list_api_keys(id)
        .await?
        .iter()
        .rev()
        .map(|k| KeyRow {
            id: k.id.clone(),
            prefix: k.hint.clone().unwrap_or_else(|| format!("rk_{}_…", k.prefix)),
            label: k.label.clone().unwrap_or_default(),
            kind: k.kind.clone(),
            created: when(k.created_at),
            last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            revoked: k
                .revoked_at
                .map(when)
                .or_else(|| {
                    k.expires_at
                        .filter(|t| *t <= recarga_store::now_ms())
                        .map(|t| format!("expired {}", when(t)))
                })
                .unwrap_or_default(),
            retiring: k
                .expires_at
                .filter(|t| *t > recarga_store::now_ms() && k.revoked_at.is_none())
                .map(when)
                .unwrap_or_default(),
        })
        .collect();
    let mut entries = app.store.ledger_page(id, ledger_before, LEDGER_PAGE_ROWS + 1).await?;
    let ledger_next = if entries.len() as i64 > LEDGER_PAGE_ROWS {
        entries.truncate(LEDGER_PAGE_ROWS as usize);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    let ledger = entries.iter().map(|e| LedgerRow::from(e, cur)).collect();
    let audit = app
        .store
        .audit_entries(Some(id), None, 50)
        .await?
        .iter()
        .map(AuditRow::from)
        .collect();
    let used = app
        .store
        .usage_by_customer(recarga_store::now_ms() - 24 * 3600 * 1000)
        .await?
        .into_iter()
        .find(|(cid, _)| cid == id)
        .map(|(_, v)| v)
        .unwrap_or(0);
    render(&CustomerPage {
        chrome: Chrome::new(op, app, "customers"),
        c: CustomerView::new(&c, used),
        keys,
        ledger,
        ledger_next,
        audit,
        new_key,
        notice,
    })
}

async fn customer_page(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Query(q): Query<CustomerQuery>,
) -> Result<Response, WebError> {
    let notice = match q.notice.as_deref() {
        Some("adjusted") => "Balance adjusted.",
        Some("revoked") => "Key revoked.",
        Some("limits") | Some("legacy") => "Settings saved.",
        _ => "",
    };
    let ledger_before = q.ledger_before.and_then(|b| b.parse().ok());
    customer_view(&app, &op, &id, ledger_before, None, notice.into()).await
}

#[derive(Deserialize)]
struct AdjustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    reason: String,
}

async fn adjust(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<AdjustForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let sign = match f.direction.as_str() {
        "credit" => 1,
        "debit" => -1,
        _ => return Err(WebError::bad_input("Choose credit or debit.")),
    };
    let value = form_money("Amount", &f.amount, None)?
        .filter(|m| m.0 > 0)
        .ok_or_else(|| WebError::bad_input("The amount must be a positive decimal, like 1000.00."))?;
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(WebError::bad_input("A reason is required for every credit or debit."));
    }
    if reason.len() > 500 {
        return Err(WebError::bad_input("The reason is too long (at most 500 characters)."));
    }
    if app.store.get_customer(&id).await?.is_none() {
        return Err(WebError::not_found());
    }
    app.store
        .adjust_balance(&Adjustment {
            customer_id: id.clone(),
            amount: Money(sign * value.0),
            actor: op.actor().to_string(),
            reason: reason.to_string(),
        })
        .await?;
    // Live pages of this process update at once; other replicas within a second.
    app.hub
        .publish(&serde_json::json!({ "type": "balance", "customer_id": id }).to_string());
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=adjusted", super::q(&id))).into_response())
}

#[derive(Deserialize)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

async fn issue_key(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<KeyForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    if app.store.get_customer(&id).await?.is_none() {
        return Err(WebError::not_found());
    }
    let label = Some(f.label.trim().to_string()).filter(|l| !l.is_empty());
    let (plaintext, _) = crate::cli::issue_key(app.store.as_ref(), &id, label, op.actor())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "issuing a key failed");
            WebError::internal()
        })?;
    // Shown in this response only: never stored, never redirected to.
    customer_view(&app, &op, &id, None, Some(plaintext), "Key issued.".into()).await
}

async fn revoke_key(
    State(app): State<App>,
    op: OperatorSession,
    Path((id, key_id)): Path<(String, String)>,
    Form(f): Form<super::auth::CsrfOnly>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let belongs = app.store.list_api_keys(&id).await?.iter().any(|k| k.id == key_id);
    if !belongs {
        return Err(WebError::not_found());
    }
    app.store.revoke_api_key(&key_id, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=revoked", super::q(&id))).into_response())
}

#[derive(Deserialize)]
struct LimitsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credit_limit: String,
    #[serde(default)]
    daily_limit: String,
    #[serde(default)]
    rate_limit: String,
    /// Percent with up to two decimals (`1.50` = 150 bps).
    #[serde(default)]
    discount: String,
    #[serde(default)]
    min_topup: String,
    #[serde(default)]
    max_topup: String,
    #[serde(default)]
    products: String,
    #[serde(default)]
    active: String,
    #[serde(default)]
    reason: String,
}

async fn limits(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<LimitsForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(WebError::bad_input(
            "A reason is required for every change of settings.",
        ));
    }
    let before = app.store.get_customer(&id).await?.ok_or_else(WebError::not_found)?;
    let discount_bps = match f.discount.trim() {
        "" => None,
        text => {
            let m = Money::parse_decimal(text)
                .ok()
                .filter(|m| (0..=10_000).contains(&m.0))
                .ok_or_else(|| WebError::bad_input("The discount is a percentage from 0 to 100, like 1.50."))?;
            Some(m.0)
        }
    };
    let rate_limit = match f.rate_limit.trim() {
        "" => Some(None),
        text => Some(Some(text.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
            WebError::bad_input("The rate limit is a whole number of requests per second (0 = unlimited).")
        })?)),
    };
    let daily_limit = match form_money("Daily limit", &f.daily_limit, None)? {
        None => Some(None),
        Some(m) if m.0 > 0 => Some(Some(m)),
        Some(_) => {
            return Err(WebError::bad_input(
                "The daily limit must be positive, or blank for none.",
            ));
        }
    };
    let catalogue = match f.products.trim() {
        "" => None,
        text => Some(
            CatalogueRule::parse(text)
                .ok_or_else(|| WebError::bad_input("Products: choose open_range or xoom_only."))?,
        ),
    };
    let min_topup = form_money("Minimum top-up", &f.min_topup, None)?;
    let max_topup = form_money("Maximum top-up", &f.max_topup, None)?;
    let (lo, hi) = (
        min_topup.unwrap_or(before.min_topup),
        max_topup.unwrap_or(before.max_topup),
    );
    if lo.0 <= 0 || hi.0 < lo.0 {
        return Err(WebError::bad_input(
            "The minimum must be positive and not above the maximum.",
        ));
    }
    let active = match f.active.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        _ => return Err(WebError::bad_input("Active is true or false.")),
    };
    let name = Some(f.name.trim().to_string()).filter(|n| !n.is_empty());
    let patch = CustomerPatch {
        name,
        credit_limit: form_money("Credit limit", &f.credit_limit, None)?,
        discount_bps,
        min_topup,
        max_topup,
        daily_limit,
        catalogue,
        active,
        fx_rate_micro: None,
        rate_limit_per_s: rate_limit,
        reason: Some(reason.to_string()),
        ..CustomerPatch::default()
    };
    // One transaction: the change and its audit entry (before, after, reason).
    app.store.update_customer(&id, &patch, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=limits", super::q(&id))).into_response())
}

#[derive(Deserialize)]
struct LegacyForm {
    csrf: String,
    #[serde(default)]
    reference_policy: String,
    #[serde(default)]
    public_status: String,
    #[serde(default)]
    ip_allowlist: String,
    #[serde(default)]
    ip_allowlist_enabled: String,
    #[serde(default)]
    reason: String,
}

/// The settings that keep the old system's habits (see the README's section
/// for integrations of the old system); audited like every change.
async fn legacy_settings(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<LegacyForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(WebError::bad_input(
            "A reason is required for every change of settings.",
        ));
    }
    let flag = |field: &str, text: &str| match text {
        "" => Ok(None),
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        _ => Err(WebError::bad_input(format!("{field} is true or false."))),
    };
    let reference_policy = match f.reference_policy.trim() {
        "" => None,
        text => Some(
            recarga_domain::ReferencePolicy::parse(text)
                .ok_or_else(|| WebError::bad_input("Reference policy: choose unique or free."))?,
        ),
    };
    let list = recarga_domain::IpList::parse(&f.ip_allowlist)
        .map_err(|e| WebError::bad_input(format!("IP allow-list: {e}.")))?;
    let enabled = flag("Allow-list enforced", f.ip_allowlist_enabled.trim())?;
    if enabled == Some(true) && list.is_empty() {
        return Err(WebError::bad_input(
            "An enforced allow-list without addresses would refuse every request: add addresses or turn it off.",
        ));
    }
    let patch = CustomerPatch {
        reference_policy,
        public_status: flag("Public status", f.public_status.trim())?,
        ip_allowlist: Some(Some(list.to_text()).filter(|t| !t.is_empty())),
        ip_allowlist_enabled: enabled,
        reason: Some(reason.to_string()),
        ..CustomerPatch::default()
    };
    app.store.get_customer(&id).await?.ok_or_else(WebError::not_found)?;
    app.store.update_customer(&id, &patch, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=legacy", super::q(&id))).into_response())
}

// ---------------------------------------------------------------- transactions

/// The transaction filter, as the query string carries it.
#[derive(Deserialize, Default, Clone)]
pub struct TxQuery {
    #[serde(default)]
    pub customer: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub after: String,
}

fn day_start_ms(field: &str, text: &str) -> Result<i64, WebError> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .ok_or_else(|| WebError::bad_input(format!("{field}: {text:?} is not a date like 2026-11-30.")))
}

impl TxQuery {
    /// The store search for this filter (without the cursor's page size).
    pub fn search(&self) -> Result<TopupSearch, WebError> {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|v| !v.is_empty());
        let status = match self.status.trim() {
            "" => None,
            s => Some(TopupStatus::parse(s).ok_or_else(|| WebError::bad_input(format!("Unknown status {s:?}.")))?),
        };
        let from_ms = match self.from.trim() {
            "" => None,
            s => Some(day_start_ms("From", s)?),
        };
        let to_ms = match self.to.trim() {
            "" => None,
            s => Some(day_start_ms("To", s)? + 24 * 3600 * 1000),
        };
        // Phones are stored as 10 national digits; accept what people type.
        let phone = opt(&self.phone).map(|p| match recarga_domain::Msisdn::parse(&p) {
            Ok(m) => m.as_str().to_string(),
            Err(_) => p,
        });
        Ok(TopupSearch {
            customer_id: opt(&self.customer),
            status,
            from_ms,
            to_ms,
            phone,
            reference: opt(&self.reference),
            id: opt(&self.id),
            before_id: opt(&self.after),
            limit: TX_PAGE_ROWS,
        })
    }

    /// This filter as a query string, without the cursor.
    pub fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("customer", &self.customer),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("phone", &self.phone),
            ("reference", &self.reference),
            ("id", &self.id),
        ] {
            if !v.trim().is_empty() {
                parts.push(format!("{k}={}", super::q(v.trim())));
            }
        }
        parts.join("&")
    }
}

#[derive(Template)]
#[template(path = "admin_transactions.html")]
struct TransactionsPage {
    chrome: Chrome,
    f: TxQuery,
    rows: Vec<TopupRow>,
    next: Option<String>,
    csv: String,
    statuses: [&'static str; 5],
    customers: Vec<String>,
}

async fn transactions(
    State(app): State<App>,
    op: OperatorSession,
    Query(f): Query<TxQuery>,
) -> Result<Response, WebError> {
    let mut search = f.search()?;
    search.limit = TX_PAGE_ROWS + 1;
    let mut found = app.store.search_topups(&search).await?;
    let qs = f.query_string();
    let next = if found.len() as i64 > TX_PAGE_ROWS {
        found.truncate(TX_PAGE_ROWS as usize);
        found.last().map(|t| {
            let sep = if qs.is_empty() { "" } else { "&" };
            format!("/admin/transactions?{qs}{sep}after={}", super::q(&t.id))
        })
    } else {
        None
    };
    let csv = if qs.is_empty() {
        "/admin/transactions.csv".to_string()
    } else {
        format!("/admin/transactions.csv?{qs}")
    };
    let customers = app.store.list_customers().await?.into_iter().map(|c| c.id).collect();
    render(&TransactionsPage {
        chrome: Chrome::new(&op, &app, "transactions"),
        rows: found.iter().map(TopupRow::from).collect(),
        f,
        next,
        csv,
        statuses: ["PENDING", "PROCESSING", "SUCCESS", "FAILED", "UNKNOWN"],
        customers,
    })
}

async fn transactions_csv(
    State(app): State<App>,
    _op: OperatorSession,
    Query(f): Query<TxQuery>,
) -> Result<Response, WebError> {
    let mut search = f.search()?;
    search.before_id = None;
    Ok(super::export::csv_response(app, search, "transactions.csv"))
}

struct EventRow {
    from: String,
    to: String,
    actor: String,
    reason: String,
    at: String,
}

struct ExchangeRow {
    kind: String,
    outcome: String,
    http_status: String,
    detail: String,
    trans_id: String,
    ven_transid: String,
    started: String,
    latency: String,
    request: String,
    response: String,
}

#[derive(Template)]
#[template(path = "admin_transaction.html")]
struct TransactionPage {
    chrome: Chrome,
    t: TopupRow,
    product: String,
    amount_sent: String,
    trans_id: String,
    ven_transid: String,
    completed: String,
    attempts: i64,
    checks: i64,
    unknown: bool,
    events: Vec<EventRow>,
    ledger: Vec<LedgerRow>,
    exchanges: Vec<ExchangeRow>,
    audit: Vec<AuditRow>,
}

async fn transaction(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let t = app.store.get_topup(&id).await?.ok_or_else(WebError::not_found)?;
    let events = app
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|e| EventRow {
            from: e.from_status.unwrap_or_else(|| "—".into()),
            to: e.to_status,
            actor: e.actor,
            reason: e.reason.unwrap_or_default(),
            at: when(e.created_at),
        })
        .collect();
    let ledger = app
        .store
        .topup_ledger(&id)
        .await?
        .iter()
        .map(|e| LedgerRow::from(e, t.currency.as_str()))
        .collect();
    let exchanges = app
        .store
        .exchanges(&id)
        .await?
        .into_iter()
        .map(|e| ExchangeRow {
            kind: e.kind,
            outcome: e.outcome,
            http_status: e.http_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            detail: e.detail.unwrap_or_default(),
            trans_id: e.trans_id.unwrap_or_default(),
            ven_transid: e.ven_transid.unwrap_or_default(),
            started: when(e.started_at),
            latency: format!("{} ms", e.ended_at - e.started_at),
            request: e.request.unwrap_or_default(),
            response: e.response.unwrap_or_default(),
        })
        .collect();
    let audit = app
        .store
        .audit_entries(Some(&id), None, 50)
        .await?
        .iter()
        .map(AuditRow::from)
        .collect();
    render(&TransactionPage {
        chrome: Chrome::new(&op, &app, "transactions"),
        product: t.product_id.clone(),
        amount_sent: money(t.amount_sent, "MXN"),
        trans_id: t.upstream_trans_id.clone().unwrap_or_default(),
        ven_transid: t.upstream_ven_transid.clone().unwrap_or_default(),
        completed: t.completed_at.map(when).unwrap_or_default(),
        attempts: t.attempts,
        checks: t.checks,
        unknown: t.status == TopupStatus::Unknown,
        t: TopupRow::from(&t),
        events,
        ledger,
        exchanges,
        audit,
    })
}

#[derive(Deserialize)]
struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    reason: String,
}

async fn resolve(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Form(f): Form<ResolveForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let outcome = match f.outcome.as_str() {
        "success" => FinalOutcome::Success,
        "failed" => FinalOutcome::Failed,
        _ => return Err(WebError::bad_input("Choose success or failed.")),
    };
    let reason = f.reason.trim();
    if reason.is_empty() {
        return Err(WebError::bad_input("A reason is required to resolve a top-up."));
    }
    let t = app
        .store
        .resolve_unknown(&Resolution {
            topup_id: id.clone(),
            outcome,
            actor: op.actor().to_string(),
            reason: reason.to_string(),
            trans_id: None,
            ven_transid: None,
            exchange: None,
        })
        .await?;
    app.publish_topup(&t);
    Ok(Redirect::to(&format!("/admin/transactions/{}", super::q(&id))).into_response())
}

// ---------------------------------------------------------------- audit

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    chrome: Chrome,
    audit: Vec<AuditRow>,
    subject: String,
    next: Option<String>,
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    subject: String,
    /// Keyset cursor (an audit row id); anything else is the first page.
    #[serde(default)]
    before: Option<String>,
}

async fn audit(
    State(app): State<App>,
    op: OperatorSession,
    Query(aq): Query<AuditQuery>,
) -> Result<Response, WebError> {
    let subject = Some(aq.subject.trim()).filter(|s| !s.is_empty());
    let before = aq.before.as_deref().and_then(|b| b.parse().ok());
    let mut rows = app.store.audit_entries(subject, before, AUDIT_PAGE_ROWS + 1).await?;
    let next = if rows.len() as i64 > AUDIT_PAGE_ROWS {
        rows.truncate(AUDIT_PAGE_ROWS as usize);
        rows.last().map(|r| {
            format!(
                "/admin/audit?subject={}&before={}",
                super::q(subject.unwrap_or("")),
                r.id
            )
        })
    } else {
        None
    };
    render(&AuditPage {
        chrome: Chrome::new(&op, &app, "audit"),
        audit: rows.iter().map(AuditRow::from).collect(),
        subject: aq.subject,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows_read_like_people_write() {
        assert_eq!(
            humanize("balance.adjust", Some("0"), Some("100050")),
            ("0.00".to_string(), "1,000.50".to_string())
        );
        let before = r#"{"id":"C","credit_limit":0,"daily_limit":null,"name":"A","version":1,"updated_at":5}"#;
        let after = r#"{"id":"C","credit_limit":50000,"daily_limit":30000,"name":"A","version":2,"updated_at":9}"#;
        let (b, a) = humanize("customer.update", Some(before), Some(after));
        assert_eq!(b, "credit_limit: 0.00, daily_limit: null");
        assert_eq!(a, "credit_limit: 500.00, daily_limit: 300.00");
        assert_eq!(
            humanize("topup.resolve", Some("UNKNOWN"), Some("FAILED")),
            ("UNKNOWN".to_string(), "FAILED".to_string())
        );
    }

    #[test]
    fn percentiles_pick_ranks() {
        assert_eq!(percentiles(vec![]), (None, None));
        assert_eq!(percentiles(vec![7]), (Some(7), Some(7)));
        let (p50, p95) = percentiles((1..=100).rev().collect());
        assert_eq!((p50, p95), (Some(50), Some(95)));
    }

    #[test]
    fn filters_parse_dates_inclusively_and_keep_the_query() {
        let f = TxQuery {
            customer: "A B".into(),
            from: "2026-11-30".into(),
            to: "2026-11-30".into(),
            phone: "+52 55 1234 5678".into(),
            status: "success".into(),
            ..TxQuery::default()
        };
        let s = f.search().expect("valid");
        assert_eq!(s.to_ms.zip(s.from_ms).map(|(t, f)| t - f), Some(24 * 3600 * 1000));
        assert_eq!(s.phone.as_deref(), Some("5512345678"));
        assert_eq!(s.status, Some(TopupStatus::Success));
        assert_eq!(
            f.query_string(),
            "customer=A%20B&status=success&from=2026-11-30&to=2026-11-30&phone=%2B52%2055%201234%205678"
        );
        let bad_date = TxQuery {
            from: "30/11/2026".into(),
            ..TxQuery::default()
        };
        let bad_status = TxQuery {
            status: "DONE".into(),
            ..TxQuery::default()
        };
        assert!(bad_date.search().is_err() && bad_status.search().is_err());
    }
}
