//! `/admin`: today's volume and outcomes, upstream state, customers near a limit.

use super::Chrome;
use super::{NEAR_LIMIT_AVAILABLE, NEAR_LIMIT_DAILY_PCT, percentiles, today_start_ms, upstream_state};
use crate::state::App;
use crate::web::auth::OperatorSession;
use crate::web::{WebError, render};
use crate::web::{amount, money};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use recarga_domain::Money;

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

pub(super) async fn overview(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
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
