//! The HTTP surface: `/v1` (canonical), the compatibility routes, `/health`,
//! and the middleware every route shares (request id, error rendering, body
//! limit and body timeout, request deadline, panic catching, tracing).

pub mod body;
pub mod compat;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod reconcile;
pub mod schema;
pub mod shapes;
pub mod statements;
pub mod v1;

use crate::state::App;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::ApiError;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(app: App) -> Router {
    Router::new()
        .merge(v1::routes())
        .merge(compat::routes())
        .merge(openapi::routes())
        .merge(crate::web::routes())
        .route("/health", get(health))
        .route("/api/queue/stats", get(queue_stats))
        .route("/api/admin/topups/{id}", get(admin_topup))
        .route("/v1/statements", get(statements::statement))
        .route("/api/admin/reconciliations", get(reconcile::admin_reconciliations))
        .route("/api/admin/reconciliations/{id}", get(reconcile::admin_reconciliation))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new("method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT_BYTES))
        .layer(RequestBodyTimeoutLayer::new(app.config.body_timeout()))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(middleware::from_fn_with_state(
            app.config.request_timeout(),
            request_deadline,
        ))
        .layer(middleware::from_fn(render_errors))
        .layer(middleware::from_fn(record_request))
        .layer(
            // Method and path only: query strings may hold phone numbers.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(app)
}

/// Answers 503 `unavailable` when a request takes longer than
/// `RECARGA_REQUEST_TIMEOUT_S` to produce its response (streams count until
/// their first byte; the longest wait a request may ask for is shorter).
async fn request_deadline(State(limit): State<std::time::Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            "unavailable",
            format!(
                "the request took longer than {} s; retry it with the same reference",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Times every request by its route template (never the raw path: ids and
/// phone numbers must not become label values).
async fn record_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    crate::metrics::http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "The Prometheus text exposition format.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)),
)]
async fn metrics_text() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// Adds the request id to every error body.
async fn render_errors(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = next.run(req).await;
    if let Some(err) = response.extensions_mut().remove::<ApiError>() {
        let status = response.status();
        let mut rendered = (status, error::json_response(err.to_json(request_id.as_deref()))).into_response();
        for (name, value) in response.headers() {
            if name != axum::http::header::CONTENT_LENGTH && name != axum::http::header::CONTENT_TYPE {
                rendered.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return rendered;
    }
    response
}

/// Public liveness and readiness: database, upstream, queue. No secrets.
///
/// The old system's keys first (its load balancers and clients read them:
/// `status` `OK` / `DEGRADED`, `timestamp`, `uptime`, `mode`, `instance`,
/// `services`), then ours. Unlike the old system it answers 503 when the
/// database is down, so a load balancer takes the replica out.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers (`status` is `DEGRADED` when the upstream or Redis does not).", body = shapes::Health),
        (status = 503, description = "The database does not answer.", body = shapes::Health),
    ),
)]
async fn health(State(app): State<App>) -> Response {
    let db = app.store.ping().await;
    let queue = match &db {
        Ok(()) => app.store.queue_backlog().await.ok(),
        Err(_) => None,
    };
    let redis_up = match &app.redis {
        Some(r) => Some(r.ping().await),
        None => None,
    };
    let upstream = app.provider.health();
    let ok = db.is_ok();
    let degraded = !ok || !upstream.ok || redis_up == Some(false);
    let instance = std::env::var("RAILWAY_REPLICA_ID")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    let production = app.config.env == crate::config::RunEnv::Production;
    let stats = queue.as_ref().map(|q| {
        serde_json::json!({
            "waiting": q.pending,
            "active": q.processing,
            "delayed": q.delayed,
            "unknown": q.unknown,
            "total": q.pending + q.processing + q.delayed + q.unknown,
        })
    });
    let body = serde_json::json!({
        "status": if degraded { "DEGRADED" } else { "OK" },
        "timestamp": crate::views::iso(recarga_store::now_ms()),
        "uptime": app.started.elapsed().as_secs_f64().floor(),
        "mode": if production { "PRODUCTION" } else { "TEST_MODE" },
        "instance": {
            "id": instance,
            "memory": format!("{}MB", rss_mb()),
            "pid": std::process::id(),
        },
        "services": {
            "database": {
                "connected": ok,
                "status": if ok { "healthy" } else { "disconnected" },
                "engine": app.store.engine(),
            },
            "redis": {
                "connected": redis_up == Some(true),
                "status": match redis_up { Some(true) => "healthy", Some(false) => "disconnected", None => "not configured" },
            },
            "queue": {
                "connected": ok,
                "status": if ok { "healthy" } else { "disconnected" },
                "stats": stats,
            },
            "rateLimiting": {
                "backend": if redis_up == Some(true) { "redis" } else { "memory" },
                "apiLimit": format!("{} per 15 minutes", app.config.compat_api_per_15min),
                "topupLimit": format!("{} per minute per customer", app.config.compat_topup_per_min),
            },
        },
        "database": { "engine": app.store.engine(), "ok": ok },
        "upstream": {
            "provider": app.provider.name(),
            "sandbox": app.is_sandbox(),
            "ok": upstream.ok,
            "state": upstream.state,
            "detail": upstream.detail,
        },
        "queue": queue,
        "redis": { "configured": redis_up.is_some(), "up": redis_up == Some(true) },
        "version": env!("CARGO_PKG_VERSION"),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Resident memory of this process in MiB (Linux `/proc`; 0 elsewhere).
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096 / (1024 * 1024))
        .unwrap_or(0)
}

/// One top-up with everything a dispute needs: its state history and every
/// upstream exchange (request without the token, response, HTTP status,
/// times, Latcom's `transId`, the carrier's `venTransid`). Operators only.
#[utoipa::path(
    get,
    path = "/api/admin/topups/{id}",
    operation_id = "adminTopup",
    tag = "operations",
    params(("id" = String, Path, description = "Our transaction id (RLR…).")),
    responses((status = 200, description = "The top-up, its events and its upstream exchanges.", body = shapes::AdminTopup)),
    security(("adminKey" = [])),
)]
async fn admin_topup(
    State(app): State<App>,
    _admin: extract::Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let topup = app.store.get_topup(&id).await?.ok_or_else(ApiError::not_found)?;
    let exchanges: Vec<serde_json::Value> = app
        .store
        .exchanges(&id)
        .await?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "kind": e.kind,
                "provider": e.provider,
                "outcome": e.outcome,
                "detail": e.detail,
                "http_status": e.http_status,
                "request": e.request,
                "response": e.response,
                "upstream_transaction_id": e.trans_id,
                "carrier_transaction_id": e.ven_transid,
                "started_at": crate::views::iso(e.started_at),
                "ended_at": crate::views::iso(e.ended_at),
                "latency_ms": e.ended_at - e.started_at,
            })
        })
        .collect();
    let events: Vec<serde_json::Value> = app
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "from": e.from_status,
                "to": e.to_status,
                "actor": e.actor,
                "reason": e.reason,
                "at": crate::views::iso(e.created_at),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "customer_id": topup.customer_id,
        "topup": crate::views::TopupView::from(&topup),
        "events": events,
        "exchanges": exchanges,
    })))
}

/// Queue counts in the old system's shape, plus UNKNOWN and the oldest
/// pending age. Operators only (`x-admin-key`).
#[utoipa::path(
    get,
    path = "/api/queue/stats",
    operation_id = "queueStats",
    tag = "operations",
    responses((status = 200, description = "Queue counts.", body = shapes::QueueStats)),
    security(("adminKey" = [])),
)]
async fn queue_stats(State(app): State<App>, _admin: extract::Admin) -> Result<Json<serde_json::Value>, ApiError> {
    let q = app.store.queue_counts().await?;
    let redis_up = match &app.redis {
        Some(r) => r.ping().await,
        None => false,
    };
    Ok(Json(serde_json::json!({
        "success": true,
        "queue": {
            "waiting": q.pending,
            "active": q.processing,
            "completed": q.success,
            "failed": q.failed,
            "delayed": q.delayed,
            "unknown": q.unknown,
            "total": q.pending + q.delayed + q.processing + q.success + q.failed + q.unknown,
            "oldest_pending_age_s": q.oldest_pending_ms.map(|ms| ms / 1000),
        },
        "redis": redis_up,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_its_deadline_is_answered_503() {
        // Fallbacks, not routes: the OpenAPI test reads every `.route` of src/.
        let within = |wait_ms: u64| {
            Router::new()
                .fallback(move || async move {
                    tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                    "done"
                })
                .layer(middleware::from_fn_with_state(
                    std::time::Duration::from_millis(100),
                    request_deadline,
                ))
        };
        let req = || {
            Request::builder()
                .uri("/")
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let res = within(5_000).oneshot(req()).await.expect("answer");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let res = within(0).oneshot(req()).await.expect("answer");
        assert_eq!(res.status(), StatusCode::OK);
    }
}
