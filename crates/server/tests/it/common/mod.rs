//! Test harness: a real gateway (HTTP + workers + scheduler) on a random
//! loopback port, over a fresh database of the requested engine, with the
//! sandbox upstream (the Latcom simulator, reached over loopback HTTP by the
//! real adapter) made fast. Tests talk to it over HTTP like a client, and
//! read the simulator's ground-truth journal through `sandbox`.
#![allow(dead_code)]

pub mod pages;
pub mod procs;

/// Says on the terminal that `test` did not run and why: written to stderr
/// directly, past the test harness's capture, so a skipped suite is never
/// mistaken for coverage.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

use recarga_domain::{Money, TopupStatus};
use recarga_server::config::RuntimeConfig;
use recarga_server::serve::{self, Roles};
use recarga_server::state::App;
use recarga_store::testing::{self, Engine, TestDb};
use recarga_store::{Customer, NewCustomer, Store, Topup};
use recarga_upstream::sim::Simulator;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One cell of the test matrix: a database engine, optionally with Redis.
#[derive(Clone, Copy)]
pub struct Setup {
    pub engine: Engine,
    pub redis_url: Option<&'static str>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.redis_url {
            Some(_) => write!(f, "{:?}+Redis", self.engine),
            None => write!(f, "{:?}", self.engine),
        }
    }
}

/// SQLite always; PostgreSQL with `TEST_DATABASE_URL`; and with
/// `TEST_REDIS_URL`, the richest engine again with Redis in front.
pub fn engines() -> Vec<Setup> {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    NOTICE.call_once(|| {
        if std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()) {
            if !std::env::var("TEST_REDIS_URL").is_ok_and(|v| !v.is_empty()) {
                skipped(
                    "the PostgreSQL + Redis runs of every suite",
                    "TEST_REDIS_URL is not set",
                );
            }
        } else {
            skipped(
                "the PostgreSQL and PostgreSQL + Redis runs of every suite",
                "TEST_DATABASE_URL is not set (SQLite only)",
            );
        }
    });
    let engines = testing::engines();
    let mut out: Vec<Setup> = engines
        .iter()
        .map(|&engine| Setup {
            engine,
            redis_url: None,
        })
        .collect();
    if let Some(url) = std::env::var("TEST_REDIS_URL").ok().filter(|u| !u.is_empty()) {
        let engine = *engines.last().expect("at least SQLite");
        // Leaked once per test: keeps `Setup` Copy like the engine it extends.
        out.push(Setup {
            engine,
            redis_url: Some(Box::leak(url.into_boxed_str())),
        });
    }
    out
}

/// Settings for a test gateway; the defaults make the sandbox answer in
/// 20–60 ms and time out after 1 s, with status checks every second.
#[derive(Debug, Clone)]
pub struct Opts {
    pub latency_ms: (u64, u64),
    pub slow_ms: u64,
    pub upstream_timeout_s: u64,
    pub lease_s: u64,
    pub status_check_base_s: u64,
    pub unknown_deadline_s: u64,
    pub concurrency: usize,
    pub sync_wait_s: u64,
    pub workers: bool,
    /// Shared cache, rate limits and events through this Redis.
    pub redis_url: Option<String>,
    pub rate_limit_per_s: u64,
    /// Further settings as flags, e.g. `("--trusted-proxies", "127.0.0.1")`.
    pub extra: Vec<(&'static str, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            latency_ms: (20, 60),
            slow_ms: 300,
            upstream_timeout_s: 1,
            lease_s: 30,
            status_check_base_s: 1,
            unknown_deadline_s: 3600,
            concurrency: 64,
            sync_wait_s: 10,
            workers: true,
            redis_url: None,
            rate_limit_per_s: 0,
            extra: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub app: App,
    pub sandbox: Arc<Simulator>,
    pub db: TestDb,
    pub engine: Engine,
    pub setup: Setup,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

pub fn runtime_config(opts: &Opts) -> RuntimeConfig {
    let latency = format!("{}-{}", opts.latency_ms.0, opts.latency_ms.1);
    let args = [
        "--port".to_string(),
        "0".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--env".into(),
        "development".into(),
        "--queue-concurrency".into(),
        opts.concurrency.to_string(),
        "--lease-s".into(),
        opts.lease_s.to_string(),
        "--upstream".into(),
        "sandbox".into(),
        "--upstream-timeout-s".into(),
        opts.upstream_timeout_s.to_string(),
        "--sandbox-latency-ms".into(),
        latency,
        "--sandbox-slow-ms".into(),
        opts.slow_ms.to_string(),
        "--sync-wait-s".into(),
        opts.sync_wait_s.to_string(),
        "--status-check-base-s".into(),
        opts.status_check_base_s.to_string(),
        "--status-check-max-s".into(),
        (opts.status_check_base_s * 4).to_string(),
        "--unknown-deadline-s".into(),
        opts.unknown_deadline_s.to_string(),
        "--demo".into(),
        "false".into(),
        "--rate-limit-per-s".into(),
        opts.rate_limit_per_s.to_string(),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(opts.extra.iter().flat_map(|(k, v)| [k.to_string(), v.clone()]))
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let rt = RuntimeConfig::from_args(&refs).expect("test config parses");
    rt.validate().expect("test config is valid");
    rt
}

impl TestApp {
    pub async fn spawn(setup: Setup) -> TestApp {
        Self::spawn_with(setup, Opts::default()).await
    }

    pub async fn spawn_with(setup: Setup, mut opts: Opts) -> TestApp {
        let engine = setup.engine;
        if opts.redis_url.is_none() {
            opts.redis_url = setup.redis_url.map(str::to_string);
        }
        let db = testing::fresh(engine).await;
        let redis = opts.redis_url.as_deref().map(|url| {
            let prefix = format!("recarga-test:{}:", uuid::Uuid::now_v7().simple());
            Arc::new(recarga_server::redis_link::RedisLink::connect(url, &prefix).expect("redis link"))
        });
        if let Some(link) = &redis {
            assert!(link.ping().await, "TEST_REDIS_URL is set but Redis does not answer");
        }
        let (app, sim) = App::build(db.store.clone(), runtime_config(&opts), redis)
            .await
            .expect("build the gateway");
        let sandbox = sim.expect("the sandbox upstream runs a simulator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let roles = Roles {
            http: true,
            workers: opts.workers,
        };
        let run = serve::run(app.clone(), Some(listener), roles, shutdown.clone());
        let handle = tokio::spawn(async move {
            run.await.expect("gateway ran");
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        TestApp {
            base,
            app,
            sandbox,
            db,
            engine,
            setup,
            http,
            shutdown,
            handle,
        }
    }

    /// Starts a second process-like worker over the same database: its own
    /// hub, adapter and simulator, no HTTP. It shares nothing in memory with
    /// this gateway, so a waiter here can only learn of its work through the
    /// database (notifications on PostgreSQL, polling on SQLite).
    pub async fn spawn_other_worker(&self, opts: Opts) -> CancellationToken {
        let (other, _sim) = App::build(self.db.store.clone(), runtime_config(&opts), None)
            .await
            .expect("build the other worker");
        let stop = CancellationToken::new();
        let run = serve::run(
            other,
            None,
            Roles {
                http: false,
                workers: true,
            },
            stop.clone(),
        );
        tokio::spawn(async move { run.await.expect("other worker ran") });
        stop
    }

    pub fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    /// Creates a customer with `credit` MXN and returns it with an API key.
    pub async fn customer(&self, id: &str, credit: &str) -> (Customer, String) {
        let new = NewCustomer {
            initial_credit: Money::parse_decimal(credit).expect("credit"),
            ..NewCustomer::new(id, format!("Customer {id}"))
        };
        self.customer_with(new).await
    }

    pub async fn customer_with(&self, new: NewCustomer) -> (Customer, String) {
        let customer = self
            .store()
            .create_customer(&new, "test")
            .await
            .expect("create customer");
        let (key, _) = recarga_service::keys::issue_key(self.store(), &customer.id, None, "test")
            .await
            .expect("key");
        (customer, key)
    }

    pub async fn balance(&self, customer_id: &str) -> Money {
        self.store()
            .get_customer(customer_id)
            .await
            .expect("read")
            .expect("exists")
            .balance
    }

    /// POST /v1/topups; `wait` becomes `Prefer: wait=N`.
    pub async fn topup(&self, key: &str, body: Value, wait: Option<u64>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/topups", self.base))
            .bearer_auth(key)
            .json(&body);
        if let Some(w) = wait {
            req = req.header("Prefer", format!("wait={w}"));
        }
        let res = req.send().await.expect("send");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("send");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Polls the store until the top-up satisfies `done`, or panics after `within`.
    pub async fn wait_for(&self, id: &str, within: Duration, done: impl Fn(&Topup) -> bool) -> Topup {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let t = self.store().get_topup(id).await.expect("read").expect("exists");
            if done(&t) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "top-up {id} stuck in {} ({:?})",
                t.status,
                self.setup
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_final(&self, id: &str, within: Duration) -> Topup {
        self.wait_for(id, within, |t| t.status.is_final()).await
    }

    pub async fn wait_status(&self, id: &str, status: TopupStatus, within: Duration) -> Topup {
        self.wait_for(id, within, |t| t.status == status).await
    }

    pub async fn assert_audit_clean(&self) {
        let report = self.store().audit().await.expect("audit");
        assert!(
            report.is_clean(),
            "audit violations on {:?}: {:?}",
            self.setup,
            report.violations
        );
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
    }
}

pub fn body(phone: &str, amount: &str, reference: &str) -> Value {
    serde_json::json!({ "phone": phone, "amount": amount, "reference": reference })
}
