//! Wiring: the shared state of a process and the tasks it runs.
//!
//! An [`App`] is cheap to clone (all `Arc`s): the HTTP handlers, the worker
//! loop and the scheduler each hold one. [`run`] starts whichever of them a
//! subcommand asks for and stops them together on shutdown.

use crate::config::{DbConfig, RuntimeConfig, UpstreamKind};
use crate::hub::Hub;
use crate::redis_link::{RateDecision, RedisLink};
use anyhow::Context;
use recarga_store::Store;
use recarga_upstream::Provider;
use recarga_upstream::latcom::{Latcom, LatcomConfig};
use recarga_upstream::sim::{SimConfig, Simulator};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Batches of each kind in flight at once on PostgreSQL (see `recarga_store::group_commit`).
pub const ACCEPT_LANES_PG: usize = 4;

#[derive(Clone)]
pub struct App {
    pub store: Arc<dyn Store>,
    /// Accepts go through here: concurrent ones share a transaction.
    pub accepts: recarga_store::AcceptQueue,
    /// Workers record upstream answers through here, batched the same way.
    pub finishes: recarga_store::FinishQueue,
    pub provider: Arc<dyn Provider>,
    pub hub: Arc<Hub>,
    pub config: Arc<RuntimeConfig>,
    pub redis: Option<Arc<RedisLink>>,
    pub limiter: Arc<LocalLimiter>,
    /// The operator secret: `ADMIN_KEY`, or one generated for a sandbox run.
    pub admin_key: Arc<String>,
    /// Shared state of the pages (the live queue reading all viewers share).
    pub pages: Arc<crate::web::PagesState>,
    /// Proxies whose `X-Forwarded-For` names the client (`RECARGA_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<recarga_domain::IpList>,
    /// When this process started (`/health` `uptime`).
    pub started: std::time::Instant,
}

/// Opens the optional Redis link named by the database settings.
pub fn open_redis(db: &DbConfig) -> anyhow::Result<Option<Arc<RedisLink>>> {
    match db.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Ok(Some(Arc::new(RedisLink::connect(url, &db.redis_prefix)?))),
        None => Ok(None),
    }
}

/// Request counters of this process: the fallback when there is no Redis
/// (or it is down). Fixed windows aligned on the epoch, per bucket.
#[derive(Default)]
pub struct LocalLimiter {
    windows: std::sync::Mutex<std::collections::HashMap<(String, u64), (i64, u64)>>,
}

/// Buckets kept before windows that ended are swept.
pub const LOCAL_LIMITER_BUCKETS_MAX: usize = 100_000;

impl LocalLimiter {
    pub fn hit(&self, bucket: &str, limit: u64, window_s: u64) -> RateDecision {
        let now = chrono::Utc::now().timestamp();
        let (start, reset_s) = crate::redis_link::window_of(now, window_s);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > LOCAL_LIMITER_BUCKETS_MAX {
            windows.retain(|(_, w), (s, _)| *s + *w as i64 > now);
        }
        let slot = windows.entry((bucket.to_string(), window_s)).or_insert((start, 0));
        if slot.0 != start {
            *slot = (start, 0);
        }
        slot.1 += 1;
        RateDecision::of(slot.1, limit, window_s, reset_s)
    }
}

/// Opens and migrates the configured database.
pub async fn open_store(db: &DbConfig) -> anyhow::Result<Arc<dyn Store>> {
    let url = db.url();
    let store = recarga_store::connect_with(&url, db.db_pool_max)
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
    /// Builds the state from validated configuration. With the sandbox
    /// upstream this starts the Latcom simulator on a loopback port and points
    /// the real adapter at it; the simulator is returned so tests can read its
    /// ground-truth journal.
    pub async fn build(
        store: Arc<dyn Store>,
        config: RuntimeConfig,
        redis: Option<Arc<RedisLink>>,
    ) -> anyhow::Result<(App, Option<Arc<Simulator>>)> {
        // Install the metrics recorder before anything is counted.
        crate::metrics::handle();
        let settings = &config.latcom;
        let adapter = |base_url: String, username: String, password: String, dist_api: String, user_uid: String| {
            Latcom::new(LatcomConfig {
                base_url,
                username,
                password: password.into(),
                dist_api: dist_api.into(),
                user_uid,
                connect_timeout: std::time::Duration::from_millis(settings.connect_timeout_ms),
                total_timeout: config.upstream_timeout(),
                token_lifetime: std::time::Duration::from_secs(settings.token_lifetime_s),
                max_inflight: settings.max_inflight,
                rate_per_s: settings.rate_per_s,
            })
            .map_err(|e| anyhow::anyhow!(e))
        };
        let (latcom, sim) = match config.upstream {
            UpstreamKind::Sandbox => {
                let sim_config = SimConfig {
                    latency_min_ms: config.sandbox_latency_ms.0,
                    latency_max_ms: config.sandbox_latency_ms.1,
                    slow_ms: config.sandbox_slow_ms,
                    ..SimConfig::default()
                };
                let (sim, addr) = Simulator::spawn(sim_config.clone(), "127.0.0.1:0")
                    .await
                    .context("cannot start the simulator")?;
                let latcom = adapter(
                    format!("http://{addr}"),
                    sim_config.username,
                    sim_config.password,
                    sim_config.dist_api,
                    sim_config.user_uid,
                )?;
                (latcom, Some(sim))
            }
            UpstreamKind::Latcom => {
                let missing = || anyhow::anyhow!("LATCOM_* settings are incomplete");
                let latcom = adapter(
                    settings.base_url.clone().ok_or_else(missing)?,
                    settings.username.clone().ok_or_else(missing)?,
                    settings.password.clone().ok_or_else(missing)?.0,
                    settings.dist_api_key.clone().ok_or_else(missing)?.0,
                    settings.user_uid.clone().ok_or_else(missing)?,
                )?;
                (latcom, None)
            }
        };
        let admin_key = match &config.admin_key {
            Some(key) => key.0.clone(),
            None => format!("adm_{}", uuid::Uuid::new_v4().simple()),
        };
        // SQLite has one writer, so one lane; PostgreSQL commits batches of
        // different customers in parallel.
        let lanes = if store.engine() == "sqlite" { 1 } else { ACCEPT_LANES_PG };
        let app = App {
            accepts: recarga_store::AcceptQueue::start(store.clone(), lanes),
            finishes: recarga_store::FinishQueue::start(store.clone(), lanes),
            store,
            provider: Arc::new(latcom),
            hub: Hub::new(),
            redis,
            limiter: Arc::new(LocalLimiter::default()),
            admin_key: Arc::new(admin_key),
            pages: Arc::default(),
            trusted_proxies: Arc::new(
                recarga_domain::IpList::parse(&config.trusted_proxies)
                    .map_err(|e| anyhow::anyhow!("RECARGA_TRUSTED_PROXIES: {e}"))?,
            ),
            config: Arc::new(config),
            started: std::time::Instant::now(),
        };
        Ok((app, sim))
    }

    /// Counts a request against the customer's per-second rate limit.
    pub async fn rate_hit(&self, customer: &recarga_store::Customer) -> Option<RateDecision> {
        let limit = customer
            .rate_limit_per_s
            .map(|l| l.max(0) as u64)
            .unwrap_or(self.config.rate_limit_per_s);
        self.window_hit(&customer.id, limit, 1).await
    }

    /// Counts a request in `bucket`'s window (shared by replicas through
    /// Redis when it is up); `None` when `limit` is 0 (unlimited).
    pub async fn window_hit(&self, bucket: &str, limit: u64, window_s: u64) -> Option<RateDecision> {
        if limit == 0 {
            return None;
        }
        if let Some(redis) = &self.redis
            && let Some(decision) = redis.rate_hit(bucket, limit, window_s).await
        {
            return Some(decision);
        }
        Some(self.limiter.hit(bucket, limit, window_s))
    }

    /// Tells this process's live pages that a top-up changed (other replicas'
    /// pages hear of it through PostgreSQL notifications, see [`run`]).
    pub fn publish_topup(&self, t: &recarga_store::Topup) {
        let event = serde_json::json!({
            "type": "topup",
            "id": t.id,
            "customer_id": t.customer_id,
            "status": t.status.as_str(),
            "updated_at": t.updated_at,
        })
        .to_string();
        self.hub.publish(&event);
    }

    /// Whether top-ups go to a simulator rather than a live upstream.
    pub fn is_sandbox(&self) -> bool {
        self.config.upstream == UpstreamKind::Sandbox
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
        tasks.spawn(crate::worker::run_workers(app.clone(), shutdown.clone()));
        tasks.spawn(crate::worker::run_scheduler(app.clone(), shutdown.clone()));
    }
    let http = match (roles.http, listener) {
        (true, Some(listener)) => {
            let router = crate::http::router(app.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                // The peer address feeds the IP allow-lists and per-address limits.
                let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
                axum::serve(listener, service)
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
