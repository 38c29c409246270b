//! `/queue`: the live queue monitor (the old system's URL), for operators.
//!
//! Everything on it is read from the database on every push (counts by
//! state, completions per minute, upstream latency percentiles from the
//! stored exchanges, success rate, oldest pending age, recent failures), so
//! it is right whichever replica did the work. Pushes are server-sent events
//! from `/queue/events`: at once when this process sees a top-up change
//! (the hub), and at least every [`PUSH_EVERY_MS`] for changes made by other
//! replicas.

use super::admin::{Chrome, percentiles, upstream_state};
use super::auth::OperatorSession;
use super::{TopupRow, WebError, age, render};
use crate::state::App;
use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::convert::Infallible;
use std::time::Duration;

/// Longest time between two pushes.
pub const PUSH_EVERY_MS: u64 = 1_000;
/// Shortest time between two pushes (bursts of events coalesce).
pub const PUSH_MIN_GAP_MS: u64 = 200;
/// Minutes shown on the throughput chart.
pub const CHART_MINUTES: i64 = 30;
/// Window of the latency percentiles and the success rate.
pub const STATS_WINDOW_MS: i64 = 15 * 60_000;
/// Upstream calls sampled for the percentiles.
pub const LATENCY_SAMPLES_MAX: i64 = 2_000;
/// Failures listed.
pub const RECENT_FAILURES: i64 = 10;
/// A reading younger than this is shared by every viewer of this process.
pub const SNAPSHOT_SHARE_MS: u64 = 250;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/queue", get(page))
        .route("/queue/events", get(events))
}

/// One reading of the queue, rendered for the page and for pushes.
pub struct Snapshot {
    pub waiting: i64,
    pub active: i64,
    pub completed: i64,
    pub failed: i64,
    pub unknown: i64,
    pub delayed: i64,
    pub p50: String,
    pub p95: String,
    pub success_rate: String,
    pub oldest_pending: String,
    pub redis: String,
    pub upstream: String,
    pub chart: String,
    pub failures: Vec<TopupRow>,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "queue_failures.html")]
struct FailuresRows<'a> {
    failures: &'a [TopupRow],
}

impl Snapshot {
    pub async fn load(app: &App) -> Result<Snapshot, recarga_store::StoreError> {
        let now = recarga_store::now_ms();
        let counts = app.store.queue_counts().await?;
        let chart_since = (now / 60_000 - (CHART_MINUTES - 1)) * 60_000;
        let buckets = app.store.throughput(chart_since, 60_000).await?;
        let mut per_minute = vec![(0_i64, 0_i64); CHART_MINUTES as usize];
        for b in &buckets {
            if let Some(slot) = usize::try_from(b.bucket).ok().and_then(|i| per_minute.get_mut(i)) {
                if b.status == "SUCCESS" {
                    slot.0 += b.count;
                } else {
                    slot.1 += b.count;
                }
            }
        }
        let window_start_bucket = (now - STATS_WINDOW_MS - chart_since).max(0) / 60_000;
        let (ok, bad) = per_minute
            .iter()
            .skip(window_start_bucket as usize)
            .fold((0, 0), |acc, m| (acc.0 + m.0, acc.1 + m.1));
        let latencies = app
            .store
            .upstream_latencies(now - STATS_WINDOW_MS, LATENCY_SAMPLES_MAX)
            .await?;
        let (p50, p95) = percentiles(latencies);
        let failures = app
            .store
            .recent_failures(RECENT_FAILURES)
            .await?
            .iter()
            .map(TopupRow::from)
            .collect();
        let redis = match &app.redis {
            None => "not configured".to_string(),
            Some(r) if r.ping().await => "up".to_string(),
            Some(_) => "DOWN (degraded: in-process fallbacks)".to_string(),
        };
        let (state, _) = upstream_state(app, p95);
        let ms = |v: Option<i64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into());
        Ok(Snapshot {
            waiting: counts.pending,
            active: counts.processing,
            completed: counts.success,
            failed: counts.failed,
            unknown: counts.unknown,
            delayed: counts.delayed,
            p50: ms(p50),
            p95: ms(p95),
            success_rate: if ok + bad == 0 {
                "—".into()
            } else {
                format!("{:.1}%", ok as f64 * 100.0 / (ok + bad) as f64)
            },
            oldest_pending: counts.oldest_pending_ms.map(age).unwrap_or_else(|| "none".into()),
            redis,
            upstream: state.to_string(),
            chart: chart_svg(&per_minute),
            failures,
            updated: super::when(now),
        })
    }

    /// A reading at most [`SNAPSHOT_SHARE_MS`] old; one load at a time per process.
    pub async fn shared(
        app: &App,
        pages: &super::PagesState,
    ) -> Result<std::sync::Arc<Snapshot>, recarga_store::StoreError> {
        let mut slot = pages.queue.lock().await;
        if let Some((at, snapshot)) = slot.as_ref()
            && at.elapsed() < Duration::from_millis(SNAPSHOT_SHARE_MS)
        {
            return Ok(snapshot.clone());
        }
        let fresh = std::sync::Arc::new(Snapshot::load(app).await?);
        *slot = Some((std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    fn push(&self) -> Result<serde_json::Value, askama::Error> {
        Ok(serde_json::json!({
            "text": {
                "q-waiting": self.waiting.to_string(),
                "q-active": self.active.to_string(),
                "q-completed": self.completed.to_string(),
                "q-failed": self.failed.to_string(),
                "q-unknown": self.unknown.to_string(),
                "q-delayed": self.delayed.to_string(),
                "latency-p50": self.p50,
                "latency-p95": self.p95,
                "success-rate": self.success_rate,
                "oldest-pending": self.oldest_pending,
                "redis-status": self.redis,
                "upstream-state": self.upstream,
                "updated-at": self.updated,
            },
            "html": {
                "chart-box": self.chart,
                "recent-failures-body": FailuresRows { failures: &self.failures }.render()?,
            },
        }))
    }
}

/// Completions per minute (successes stacked under failures) as inline SVG.
pub fn chart_svg(per_minute: &[(i64, i64)]) -> String {
    const W: i64 = 960;
    const H: i64 = 180;
    const PAD: i64 = 28;
    let max = per_minute.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1);
    let n = per_minute.len().max(1) as i64;
    let slot = (W - PAD) / n;
    let bar = (slot - 2).max(1);
    let plot_h = H - PAD;
    let mut svg = format!(
        "<svg id=\"throughput-chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"Completed top-ups per minute, last {n} minutes (max {max})\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    svg.push_str(&format!(
        "<line x1=\"{PAD}\" y1=\"{plot_h}\" x2=\"{W}\" y2=\"{plot_h}\" class=\"axis\"/>\
         <text x=\"0\" y=\"12\" class=\"tick\">{max}</text><text x=\"0\" y=\"{plot_h}\" class=\"tick\">0</text>"
    ));
    for (i, (ok, bad)) in per_minute.iter().enumerate() {
        let x = PAD + i as i64 * slot + 1;
        let ok_h = ok * plot_h / max;
        let bad_h = bad * plot_h / max;
        let minutes_ago = n - 1 - i as i64;
        if ok_h > 0 {
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{ok_h}\" class=\"bar-ok\"><title>{minutes_ago} min ago: {ok} succeeded</title></rect>",
                plot_h - ok_h
            ));
        }
        if bad_h > 0 {
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{bad_h}\" class=\"bar-bad\"><title>{minutes_ago} min ago: {bad} failed</title></rect>",
                plot_h - ok_h - bad_h
            ));
        }
    }
    svg.push_str(&format!(
        "<text x=\"{PAD}\" y=\"{}\" class=\"tick\">-{}m</text><text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">now</text></svg>",
        H - 6,
        n - 1,
        W,
        H - 6
    ));
    svg
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    chrome: Chrome,
    s: Snapshot,
}

async fn page(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    let s = Snapshot::load(&app).await?;
    render(&QueuePage {
        chrome: Chrome::new(&op, &app, "queue"),
        s,
    })
}

struct Pusher {
    app: App,
    pages: std::sync::Arc<super::PagesState>,
    events: tokio::sync::broadcast::Receiver<String>,
    session: recarga_store::WebSession,
    expires_at: i64,
    first: bool,
    /// Held while the stream lives.
    _place: super::live::StreamPlace,
}

async fn events(
    State(app): State<App>,
    axum::Extension(pages): axum::Extension<std::sync::Arc<super::PagesState>>,
    headers: HeaderMap,
) -> Response {
    let Some(op) = super::auth::operator(&app, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "log in at /admin/login").into_response();
    };
    let caps = [(
        format!("session:{}", op.session.id),
        app.config.live_streams_per_session,
    )];
    let Some(place) = pages.streams.take(&caps) else {
        return super::live::too_many();
    };
    let start = Pusher {
        events: app.hub.subscribe(),
        app,
        pages,
        expires_at: op.session.expires_at,
        session: op.session,
        first: true,
        _place: place,
    };
    let stream = futures_util::stream::unfold(start, |mut p| async move {
        if recarga_store::now_ms() >= p.expires_at {
            return None;
        }
        if !p.first {
            wait_for_change(&mut p.events).await;
            // Logging out, or the operator disabled, ends the stream.
            if !super::auth::session_still_open(&p.app, &p.session).await {
                return None;
            }
        }
        p.first = false;
        let data = match Snapshot::shared(&p.app, &p.pages).await {
            Ok(s) => s.push().map(|v| v.to_string()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "queue page: reading the queue failed");
                serde_json::json!({ "text": { "updated-at": "database not answering; retrying" } }).to_string()
            }
        };
        Some((Ok::<_, Infallible>(Event::default().data(data)), p))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Waits for a top-up event of this process or the heartbeat, whichever is
/// first, then a short gap so a burst becomes one push.
pub async fn wait_for_change(events: &mut tokio::sync::broadcast::Receiver<String>) {
    let heartbeat = tokio::time::sleep(Duration::from_millis(PUSH_EVERY_MS));
    tokio::select! {
        _ = heartbeat => {}
        r = events.recv() => {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                tokio::time::sleep(Duration::from_millis(PUSH_EVERY_MS)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(PUSH_MIN_GAP_MS)).await;
    // Drop what queued meanwhile: the next read covers it.
    while events.try_recv().is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_inline_svg_with_a_bar_per_outcome() {
        let svg = chart_svg(&[(0, 0), (3, 1), (10, 0)]);
        assert!(svg.starts_with("<svg id=\"throughput-chart\"") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"bar-ok\"").count(), 2);
        assert_eq!(svg.matches("class=\"bar-bad\"").count(), 1);
        assert!(!svg.contains("style="), "CSP allows no inline styles");
        assert!(!chart_svg(&[(0, 0); 30]).contains("<rect"));
    }
}
