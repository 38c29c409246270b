//! The shared state of a process: the services (store, queues, provider,
//! hub, settings) and what the adapters add (configuration, Redis, the local
//! rate limiter, the operator secret, trusted proxies, the login guards). An [`App`] is cheap
//! to clone (all `Arc`s): every handler holds one. It dereferences to its
//! [`Services`], so `app.store` is the store.

use crate::config::{DbConfig, RuntimeConfig, UpstreamKind};
use crate::ratelimit::{LocalLimiter, RateDecision};
use crate::redis_link::RedisLink;
use anyhow::Context;
use recarga_service::{Services, Settings};
use recarga_store::Store;
use recarga_upstream::latcom::{Latcom, LatcomConfig};
use recarga_upstream::sim::{SimConfig, Simulator};
use std::sync::Arc;

#[derive(Clone)]
pub struct App {
    pub svc: Services,
    pub config: Arc<RuntimeConfig>,
    pub redis: Option<Arc<RedisLink>>,
    pub limiter: Arc<LocalLimiter>,
    /// The operator secret: `ADMIN_KEY`, or one generated for a sandbox run.
    pub admin_key: Arc<String>,
    /// Proxies whose `X-Forwarded-For` names the client (`RECARGA_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<recarga_domain::IpList>,
    /// When this process started (`/health` `uptime`).
    pub started: std::time::Instant,
    /// Login and operator-key throttling: password-check slots, purge clock.
    pub guards: Arc<crate::guards::Guards>,
}

impl std::ops::Deref for App {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.svc
    }
}

/// Opens the optional Redis link named by the database settings.
pub fn open_redis(db: &DbConfig) -> anyhow::Result<Option<Arc<RedisLink>>> {
    match db.redis_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Ok(Some(Arc::new(RedisLink::connect(url, &db.redis_prefix)?))),
        None => Ok(None),
    }
}

/// Opens and migrates the configured database.
pub async fn open_store(db: &DbConfig) -> anyhow::Result<Arc<dyn Store>> {
    let url = db.url();
    let store = recarga_store::connect_sized(&url, db.db_pool_max, db.db_worker_pool_max)
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

/// The services' settings from the configuration.
pub fn settings(config: &RuntimeConfig) -> Settings {
    Settings {
        queue_concurrency: config.queue_concurrency,
        lease: config.lease(),
        upstream_timeout: config.upstream_timeout(),
        audit_interval: std::time::Duration::from_secs(config.audit_interval_s),
        policy: Settings::policy(
            config.status_check_base_s,
            config.status_check_max_s,
            config.unknown_deadline_s,
        ),
        pending_max_age: config.pending_max_age(),
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
        let latcom = &config.latcom;
        let adapter = |base_url: String, username: String, password: String, dist_api: String, user_uid: String| {
            Latcom::new(LatcomConfig {
                base_url,
                username,
                password: password.into(),
                dist_api: dist_api.into(),
                user_uid,
                connect_timeout: std::time::Duration::from_millis(latcom.connect_timeout_ms),
                total_timeout: config.upstream_timeout(),
                token_lifetime: std::time::Duration::from_secs(latcom.token_lifetime_s),
                max_inflight: latcom.max_inflight,
                rate_per_s: latcom.rate_per_s,
                slow_fail: std::time::Duration::from_secs(latcom.slow_fail_s),
                wallet_probe_interval: std::time::Duration::from_secs(latcom.wallet_probe_s),
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
                    latcom.base_url.clone().ok_or_else(missing)?,
                    latcom.username.clone().ok_or_else(missing)?,
                    latcom.password.clone().ok_or_else(missing)?.0,
                    latcom.dist_api_key.clone().ok_or_else(missing)?.0,
                    latcom.user_uid.clone().ok_or_else(missing)?,
                )?;
                (latcom, None)
            }
        };
        let admin_key = match &config.admin_key {
            Some(key) => key.0.clone(),
            None => format!("adm_{}", uuid::Uuid::new_v4().simple()),
        };
        let app = App {
            svc: Services::new(store, Arc::new(latcom), settings(&config)),
            redis,
            limiter: Arc::new(LocalLimiter::default()),
            admin_key: Arc::new(admin_key),
            trusted_proxies: Arc::new(
                recarga_domain::IpList::parse(&config.trusted_proxies)
                    .map_err(|e| anyhow::anyhow!("RECARGA_TRUSTED_PROXIES: {e}"))?,
            ),
            guards: Arc::new(crate::guards::Guards::new(config.login_hash_concurrency)),
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

    /// Whether top-ups go to a simulator rather than a live upstream.
    pub fn is_sandbox(&self) -> bool {
        self.config.upstream == UpstreamKind::Sandbox
    }
}
