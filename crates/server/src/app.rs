//! Wiring: the shared state of a process and the tasks it runs.
//!
//! An [`App`] is cheap to clone (all `Arc`s): the HTTP handlers, the worker
//! loop and the scheduler each hold one. [`run`] starts whichever of them a
//! subcommand asks for and stops them together on shutdown.

use crate::config::{DbConfig, RuntimeConfig, UpstreamKind};
use crate::hub::Hub;
use anyhow::Context;
use recarga_store::Store;
use recarga_upstream::Provider;
use recarga_upstream::sandbox::{Sandbox, SandboxConfig};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    pub provider: Arc<dyn Provider>,
    pub hub: Arc<Hub>,
    pub config: Arc<RuntimeConfig>,
}

/// Opens and migrates the configured database.
pub async fn open_store(db: &DbConfig) -> anyhow::Result<Arc<dyn Store>> {
    let url = db.url();
    let store = recarga_store::connect(&url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact_url(&url)))?;
    store.migrate().await.context("database migration failed")?;
    Ok(store)
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl App {
    /// Builds the state from validated configuration. The sandbox, when it is
    /// the upstream, is returned too so tests can read its journal.
    pub fn new(store: Arc<dyn Store>, config: RuntimeConfig) -> (App, Arc<Sandbox>) {
        let sandbox = match config.upstream {
            UpstreamKind::Sandbox => Arc::new(Sandbox::new(SandboxConfig {
                latency_min_ms: config.sandbox_latency_ms.0,
                latency_max_ms: config.sandbox_latency_ms.1,
                timeout_ms: config.upstream_timeout_s * 1000,
                slow_ms: config.sandbox_slow_ms,
            })),
        };
        let app = App {
            store,
            provider: sandbox.clone(),
            hub: Hub::new(),
            config: Arc::new(config),
        };
        (app, sandbox)
    }
}

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
    if roles.workers {
        tasks.spawn(crate::worker::run_workers(app.clone(), shutdown.clone()));
        tasks.spawn(crate::worker::run_scheduler(app.clone(), shutdown.clone()));
    }
    let http = match (roles.http, listener) {
        (true, Some(listener)) => {
            let router = crate::http::router(app.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        _ => None,
    };
    shutdown.cancelled().await;
    if let Some(h) = http {
        h.await.context("HTTP task")?.context("HTTP server")?;
    }
    while let Some(res) = tasks.join_next().await {
        res.context("background task")?;
    }
    Ok(())
}
