//! Customers: list, create, and the detail page with its forms (credit or
//! debit, keys, limits, the old system's habits), ledger and audit.

use super::Chrome;
use super::LEDGER_PAGE_ROWS;
use super::audit::AuditRow;
use crate::state::App;
use crate::web::auth::OperatorSession;
use crate::web::{WebError, render};
use crate::web::{money, when};
use askama::Template;
use axum::extract::State;
use axum::extract::{Form, Path, Query};
use axum::response::Response;
use axum::response::{IntoResponse, Redirect};
use recarga_domain::{CatalogueRule, Money};
use recarga_service::{customers, keys};
use recarga_store::{Adjustment, Customer, CustomerPatch, NewCustomer};
use serde::Deserialize;

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

pub(super) async fn customers(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
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

pub(super) async fn new_customer(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
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
pub(super) struct NewCustomerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credit_limit: String,
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

pub(super) async fn create_customer(
    State(app): State<App>,
    op: OperatorSession,
    Form(f): Form<NewCustomerForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let id = f.id.trim();
    let name = f.name.trim();
    // The rules (id format, name) are the service's, shared with the command line.
    let credit_limit = form_money("Credit limit", &f.credit_limit, Some(Money::ZERO))?.unwrap_or(Money::ZERO);
    let new = NewCustomer {
        credit_limit,
        ..NewCustomer::new(id, name)
    };
    customers::create(app.store.as_ref(), &new, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}", crate::web::q(id))).into_response())
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

pub(super) struct LedgerRow {
    pub(super) id: i64,
    pub(super) kind: String,
    pub(super) topup_id: String,
    pub(super) amount: String,
    pub(super) balance_after: String,
    pub(super) actor: String,
    pub(super) reason: String,
    pub(super) at: String,
}

impl LedgerRow {
    pub(super) fn from(e: &recarga_store::LedgerEntry, currency: &str) -> Self {
        LedgerRow {
            id: e.id,
            kind: e.kind.as_str().to_string(),
            topup_id: e.topup_id.clone().unwrap_or_default(),
            amount: money(e.amount, currency),
            balance_after: money(e.balance_after, currency),
            actor: e.actor.clone(),
            reason: e.reason.clone().unwrap_or_default(),
            at: when(e.created_at),
        }
    }
}

/// A row of the old system's books (read-only history beside the ledger).
struct OldBookRow {
    kind: String,
    source_id: String,
    amount: String,
    at: String,
    detail: String,
}

/// How many rows of the old books the customer's page shows.
const OLD_BOOK_ROWS: i64 = 100;

#[derive(Template)]
#[template(path = "admin_customer.html")]
struct CustomerPage {
    chrome: Chrome,
    c: CustomerView,
    keys: Vec<KeyRow>,
    /// The import run that brought this customer from the old system.
    import_run: String,
    old_books: Vec<OldBookRow>,
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
pub(super) struct CustomerQuery {
    /// Keyset cursor of the ledger (an entry id); anything else is the first page.
    #[serde(default)]
    ledger_before: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

pub(super) async fn customer_view(
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
    let old_books = match c.import_run {
        Some(_) => app
            .store
            .legacy_history(id, OLD_BOOK_ROWS)
            .await?
            .into_iter()
            .map(|h| OldBookRow {
                kind: h.kind,
                source_id: h.source_id,
                amount: h.amount.unwrap_or_default(),
                at: h.created_at.map(when).unwrap_or_default(),
                detail: h.detail,
            })
            .collect(),
        None => Vec::new(),
    };
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
        import_run: c.import_run.clone().unwrap_or_default(),
        old_books,
        ledger,
        ledger_next,
        audit,
        new_key,
        notice,
    })
}

pub(super) async fn customer_page(
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
pub(super) struct AdjustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn adjust(
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
    let adjustment = Adjustment {
        customer_id: id.clone(),
        amount: Money(sign * value.0),
        actor: op.actor().to_string(),
        reason: reason.to_string(),
    };
    customers::adjust(app.store.as_ref(), &adjustment).await?;
    // Live pages of this process update at once; other replicas within a second.
    app.hub
        .publish(&serde_json::json!({ "type": "balance", "customer_id": id }).to_string());
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=adjusted", crate::web::q(&id))).into_response())
}

#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

pub(super) async fn issue_key(
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
    let (plaintext, _) = keys::issue_key(app.store.as_ref(), &id, label, op.actor())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "issuing a key failed");
            WebError::internal()
        })?;
    // Shown in this response only: never stored, never redirected to.
    customer_view(&app, &op, &id, None, Some(plaintext), "Key issued.".into()).await
}

pub(super) async fn revoke_key(
    State(app): State<App>,
    op: OperatorSession,
    Path((id, key_id)): Path<(String, String)>,
    Form(f): Form<crate::web::auth::CsrfOnly>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let belongs = app.store.list_api_keys(&id).await?.iter().any(|k| k.id == key_id);
    if !belongs {
        return Err(WebError::not_found());
    }
    app.store.revoke_api_key(&key_id, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=revoked", crate::web::q(&id))).into_response())
}

#[derive(Deserialize)]
pub(super) struct LimitsForm {
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

pub(super) async fn limits(
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
    customers::update(app.store.as_ref(), &id, patch, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=limits", crate::web::q(&id))).into_response())
}

#[derive(Deserialize)]
pub(super) struct LegacyForm {
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
pub(super) async fn legacy_settings(
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
    let patch = CustomerPatch {
        reference_policy,
        public_status: flag("Public status", f.public_status.trim())?,
        ip_allowlist: Some(Some(list.to_text()).filter(|t| !t.is_empty())),
        ip_allowlist_enabled: enabled,
        reason: Some(reason.to_string()),
        ..CustomerPatch::default()
    };
    customers::update(app.store.as_ref(), &id, patch, op.actor()).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?notice=legacy", crate::web::q(&id))).into_response())
}
