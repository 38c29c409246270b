//! What a process runs, and for how long: the HTTP server (API and pages,
//! through [`crate::listen`] with its connection cap and timeouts),
//! the worker pool and the scheduler (from `recarga-service`), and the
//! listener that turns other processes' database notifications into local
//! wake-ups. All stop together on shutdown; in-flight upstream calls finish.

use crate::redis_link::RedisLink;
use crate::state::App;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the Redis gauge of `/metrics` is refreshed.
pub const REDIS_WATCH_MS: u64 = 1_000;

/// Which parts a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub http: bool,
    pub workers: bool,
}

/// Runs the requested roles until `shutdown` is cancelled, then drains them.
pub async fn run(
    app: App,
    listener: Option<TcpListener>,
    roles: Roles,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    // Wake-ups from other processes (PostgreSQL notifications); polling covers the rest.
    if let Some(mut events) = app
        .store
        .subscribe()
        .await
        .context("subscribing to database notifications")?
    {
        let hub = app.hub.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(recarga_store::StoreEvent::Work) => hub.work_available(),
                        Some(recarga_store::StoreEvent::Topup(id)) => {
                            hub.topup_changed(&id);
                            // Live pages here learn of changes made by other replicas.
                            hub.publish(&serde_json::json!({ "type": "topup", "id": id }).to_string());
                        }
                        None => break,
                    },
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    if roles.workers {
        // Claims carry this process's id from now on; a dead process's claims
        // are rescued at once (the scheduler's first tick runs now).
        let label = format!("pid {}", std::process::id());
        app.store
            .join(&label)
            .await
            .context("registering this process as one that claims work")?;
        tasks.spawn(recarga_service::settle::run_workers(app.svc.clone(), shutdown.clone()));
        tasks.spawn(recarga_service::resolve::run_scheduler(
            app.svc.clone(),
            shutdown.clone(),
        ));
        if let Some(redis) = app.redis.clone() {
            tasks.spawn(watch_redis(redis, shutdown.clone()));
        }
    }
    let http = match (roles.http, listener) {
        (true, Some(listener)) => {
            let router = crate::http::router(app.clone());
            let limits = crate::listen::Limits {
                max_connections: app.config.max_connections,
                header_read_timeout: app.config.header_read_timeout(),
            };
            // The peer address feeds the IP allow-lists and per-address limits.
            Some(tokio::spawn(crate::listen::serve(
                listener,
                router,
                limits,
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    shutdown.cancelled().await;
    if let Some(h) = http {
        h.await.context("HTTP task")?;
    }
    while let Some(res) = tasks.join_next().await {
        res.context("background task")?;
    }
    Ok(())
}

/// Keeps the `recarga_redis_up` gauge current.
async fn watch_redis(redis: Arc<RedisLink>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(REDIS_WATCH_MS));
    loop {
        tokio::select! {
            _ = tick.tick() => crate::metrics::redis_up(redis.ping().await),
            _ = shutdown.cancelled() => break,
        }
    }
}
