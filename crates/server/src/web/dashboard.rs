//! `/dashboard`: a customer's own page — live balance, recent top-ups (with
//! search) updating as they complete, API usage today, CSV of their history,
//! and their statement of a period (`/dashboard/statement`, and as CSV).
//!
//! Every query is scoped by the session's customer id; another customer's
//! top-up is a 404, exactly like an id that does not exist. Live updates are
//! server-sent events from `/dashboard/events`, pushed at once when this
//! process sees a change of this customer's top-ups and otherwise re-read
//! every second (changes by other replicas), sent only when something changed.

use super::admin::{TxQuery, today_start_ms};
use super::auth::CustomerSession;
use super::queue::wait_for_change;
use super::{TopupRow, WebError, money, render, when};
use crate::state::App;
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use recarga_store::TopupSearch;
use serde::Deserialize;
use std::convert::Infallible;

/// Top-ups listed (and kept live) on the dashboard.
pub const RECENT_ROWS: i64 = 25;
/// How often the live stream recounts today's usage (a scan of the day).
pub const USAGE_EVERY_MS: u64 = 5_000;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/events", get(events))
        .route("/dashboard/topups.csv", get(csv))
        .route("/dashboard/topups/{id}", get(topup))
        .route("/dashboard/statement", get(statement))
        .route("/dashboard/statement.csv", get(statement_csv))
}

/// The dashboard's search: reference, phone, status (and a keyset cursor).
#[derive(Deserialize, Default, Clone)]
pub struct Search {
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub after: String,
}

impl Search {
    fn as_tx(&self, customer: &str) -> TxQuery {
        TxQuery {
            customer: customer.to_string(),
            status: self.status.clone(),
            phone: self.phone.clone(),
            reference: self.reference.clone(),
            after: self.after.clone(),
            ..TxQuery::default()
        }
    }

    fn search(&self, customer: &str) -> Result<TopupSearch, WebError> {
        let mut s = self.as_tx(customer).search()?;
        // Scoped by the session, whatever the query says.
        s.customer_id = Some(customer.to_string());
        s.limit = RECENT_ROWS;
        Ok(s)
    }

    fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("reference", &self.reference),
            ("phone", &self.phone),
            ("status", &self.status),
        ] {
            if !v.trim().is_empty() {
                parts.push(format!("{k}={}", super::q(v.trim())));
            }
        }
        parts.join("&")
    }

    fn is_empty(&self) -> bool {
        self.query_string().is_empty()
    }
}

/// What the page shows and each push repeats.
struct View {
    name: String,
    balance: String,
    available: String,
    rows: Vec<TopupRow>,
    next: Option<String>,
    usage: String,
}

#[derive(Template)]
#[template(path = "dashboard_rows.html")]
struct Rows<'a> {
    rows: &'a [TopupRow],
}

/// "12 top-ups today (1 failed, 11 success)": today's top-ups by status (UTC day).
async fn usage_today(app: &App, customer_id: &str) -> Result<String, WebError> {
    let totals = app.store.status_totals(Some(customer_id), today_start_ms()).await?;
    let total: i64 = totals.iter().map(|t| t.count).sum();
    Ok(if total == 0 {
        "0 top-ups today".to_string()
    } else {
        let parts: Vec<String> = totals
            .iter()
            .map(|t| format!("{} {}", t.count, t.status.to_ascii_lowercase()))
            .collect();
        let noun = if total == 1 { "top-up" } else { "top-ups" };
        format!("{total} {noun} today ({})", parts.join(", "))
    })
}

/// Balance and rows; the usage line only when `usage` is `None` (it counts
/// the whole day, so the live stream refreshes it every [`USAGE_EVERY_MS`]).
///
/// The rows are read first and the balance after them, so the balance shown
/// is never older than the top-ups shown (no SUCCESS row beside a balance
/// from before its hold).
async fn load(app: &App, customer_id: &str, search: &Search, usage: Option<&str>) -> Result<View, WebError> {
    let mut s = search.search(customer_id)?;
    s.limit = RECENT_ROWS + 1;
    let mut found = app.store.search_topups(&s).await?;
    let c = app
        .store
        .get_customer(customer_id)
        .await?
        .ok_or_else(WebError::not_found)?;
    let cur = c.currency.as_str();
    let next = if found.len() as i64 > RECENT_ROWS {
        found.truncate(RECENT_ROWS as usize);
        found.last().map(|t| {
            let qs = search.query_string();
            let sep = if qs.is_empty() { "" } else { "&" };
            format!("/dashboard?{qs}{sep}after={}", super::q(&t.id))
        })
    } else {
        None
    };
    let usage = match usage {
        Some(u) => u.to_string(),
        None => usage_today(app, customer_id).await?,
    };
    Ok(View {
        name: c.name.clone(),
        balance: money(c.balance, cur),
        available: money(recarga_domain::Money(c.balance.0 + c.credit_limit.0), cur),
        rows: found.iter().map(TopupRow::from).collect(),
        next,
        usage,
    })
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    customer_id: String,
    csrf: String,
    v: View,
    f: Search,
    csv: String,
    events: String,
    statuses: [&'static str; 5],
    filtered: bool,
}

async fn page(State(app): State<App>, me: CustomerSession, Query(f): Query<Search>) -> Result<Response, WebError> {
    let v = load(&app, me.customer_id(), &f, None).await?;
    let qs = f.query_string();
    let with = |base: &str| {
        if qs.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{qs}")
        }
    };
    render(&DashboardPage {
        customer_id: me.customer_id().to_string(),
        csrf: me.csrf().to_string(),
        csv: with("/dashboard/topups.csv"),
        // A later page (`after`) is not live: it would jump back to the top.
        events: if f.after.is_empty() {
            with("/dashboard/events")
        } else {
            String::new()
        },
        filtered: !f.is_empty(),
        v,
        f,
        statuses: ["PENDING", "PROCESSING", "SUCCESS", "FAILED", "UNKNOWN"],
    })
}

struct Pusher {
    app: App,
    customer_id: String,
    search: Search,
    events: tokio::sync::broadcast::Receiver<String>,
    session: recarga_store::WebSession,
    expires_at: i64,
    key_prefix: String,
    last: String,
    first: bool,
    /// The usage line and when it was counted.
    usage: Option<(std::time::Instant, String)>,
    /// Held while the stream lives.
    _place: super::live::StreamPlace,
}

async fn events(
    State(app): State<App>,
    axum::Extension(pages): axum::Extension<std::sync::Arc<super::PagesState>>,
    headers: HeaderMap,
    Query(mut f): Query<Search>,
) -> Response {
    let Some(me) = super::auth::customer(&app, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "log in at /dashboard/login").into_response();
    };
    f.after.clear();
    if let Err(e) = f.search(me.customer_id()) {
        return e.into_response();
    }
    let caps = [
        (
            format!("session:{}", me.session.id),
            app.config.live_streams_per_session,
        ),
        (
            format!("customer:{}", me.customer_id()),
            app.config.live_streams_per_customer,
        ),
    ];
    let Some(place) = pages.streams.take(&caps) else {
        return super::live::too_many();
    };
    let start = Pusher {
        events: app.hub.subscribe(),
        app,
        customer_id: me.customer_id().to_string(),
        search: f,
        expires_at: me.session.expires_at,
        key_prefix: me.session.key_prefix.clone().unwrap_or_default(),
        session: me.session.clone(),
        last: String::new(),
        first: true,
        usage: None,
        _place: place,
    };
    let stream = futures_util::stream::unfold(start, |mut p| async move {
        loop {
            if recarga_store::now_ms() >= p.expires_at {
                return None;
            }
            if !p.first {
                wait_for_change(&mut p.events).await;
            }
            p.first = false;
            // Revoking the key (or deactivating the customer) ends the stream.
            if !super::auth::key_still_opens(&p.app, &p.key_prefix, &p.customer_id).await {
                return None;
            }
            // So does logging out.
            if !super::auth::session_still_open(&p.app, &p.session).await {
                return None;
            }
            let stale = p
                .usage
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= std::time::Duration::from_millis(USAGE_EVERY_MS));
            if stale && let Ok(u) = usage_today(&p.app, &p.customer_id).await {
                p.usage = Some((std::time::Instant::now(), u));
            }
            let usage = p.usage.as_ref().map(|(_, u)| u.clone()).unwrap_or_default();
            let data = match load(&p.app, &p.customer_id, &p.search, Some(&usage)).await {
                Ok(v) => {
                    let rows = Rows { rows: &v.rows }.render().unwrap_or_default();
                    serde_json::json!({
                        "text": { "balance": v.balance, "available": v.available, "usage-today": v.usage },
                        "html": { "recent-topups-body": rows },
                    })
                    .to_string()
                }
                // The next tick retries (a database hiccup must not end the page's stream).
                Err(_) => continue,
            };
            if data != p.last {
                p.last = data.clone();
                return Some((Ok::<_, Infallible>(Event::default().data(data)), p));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn csv(State(app): State<App>, me: CustomerSession, Query(f): Query<Search>) -> Result<Response, WebError> {
    let mut s = f.search(me.customer_id())?;
    s.before_id = None;
    Ok(super::export::csv_response(app, s, "topups.csv"))
}

#[derive(Template)]
#[template(path = "dashboard_topup.html")]
struct TopupPage {
    customer_id: String,
    csrf: String,
    t: TopupRow,
    product: String,
    trans_id: String,
    ven_transid: String,
    completed: String,
    events: Vec<(String, String, String)>,
}

async fn topup(State(app): State<App>, me: CustomerSession, Path(id): Path<String>) -> Result<Response, WebError> {
    let t = app
        .store
        .get_topup(&id)
        .await?
        .filter(|t| t.customer_id == me.customer_id())
        .ok_or_else(WebError::not_found)?;
    let events = app
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|e| (when(e.created_at), e.to_status, e.reason.unwrap_or_default()))
        .collect();
    let completed = t.completed_at.map(when).unwrap_or_default();
    render(&TopupPage {
        customer_id: me.customer_id().to_string(),
        csrf: me.csrf().to_string(),
        product: t.product_id.clone(),
        trans_id: t.upstream_trans_id.clone().unwrap_or_default(),
        ven_transid: t.upstream_ven_transid.clone().unwrap_or_default(),
        completed,
        t: TopupRow::from(&t),
        events,
    })
}

/// The statement's period: UTC days, both inclusive; by default this
/// month so far.
#[derive(Deserialize, Default)]
struct Period {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl Period {
    fn days(&self) -> Result<(chrono::NaiveDate, chrono::NaiveDate), WebError> {
        use chrono::Datelike;
        let today = chrono::Utc::now().date_naive();
        let parse = |text: &str, default: chrono::NaiveDate| {
            if text.trim().is_empty() {
                return Ok(default);
            }
            chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map_err(|_| WebError::bad_input("Dates are YYYY-MM-DD."))
        };
        let first = today.with_day(1).unwrap_or(today);
        Ok((parse(&self.from, first)?, parse(&self.to, today)?))
    }
}

async fn statement_of(
    app: &App,
    me: &CustomerSession,
    p: &Period,
) -> Result<crate::http::statements::StatementView, WebError> {
    let (from, to) = p.days()?;
    let (from_ms, to_ms) = crate::http::statements::period_ms(from, to);
    let customer = app
        .store
        .get_customer(me.customer_id())
        .await?
        .ok_or_else(WebError::not_found)?;
    let s = recarga_service::statements::statement(app.store.as_ref(), &customer.id, from_ms, to_ms).await?;
    Ok(crate::http::statements::view(&customer, from, to, &s))
}

#[derive(Template)]
#[template(path = "dashboard_statement.html")]
struct StatementPage {
    customer_id: String,
    csrf: String,
    s: crate::http::statements::StatementView,
}

/// `/dashboard/statement?from=&to=`: opening balance, movements, closing
/// balance, and whether they tie out.
async fn statement(State(app): State<App>, me: CustomerSession, Query(p): Query<Period>) -> Result<Response, WebError> {
    let s = statement_of(&app, &me, &p).await?;
    render(&StatementPage {
        customer_id: me.customer_id().to_string(),
        csrf: me.csrf().to_string(),
        s,
    })
}

async fn statement_csv(
    State(app): State<App>,
    me: CustomerSession,
    Query(p): Query<Period>,
) -> Result<Response, WebError> {
    let s = statement_of(&app, &me, &p).await?;
    let body = crate::http::statements::csv_body(&s).map_err(|_| WebError::internal())?;
    let name = format!("attachment; filename=\"statement-{}-{}.csv\"", s.from, s.to);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}
