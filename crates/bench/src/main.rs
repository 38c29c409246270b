//! `recarga-bench`: how fast the gateway is on this machine, and proof that it
//! stayed correct while being pushed.
//!
//! ```sh
//! cargo build --release -p recarga-server -p recarga-bench
//! target/release/recarga-bench --engine sqlite
//! target/release/recarga-bench --engine postgres --database-url postgres://postgres@127.0.0.1:5432/postgres
//! target/release/recarga-bench --engine postgres --redis-url redis://127.0.0.1:6379 --json
//! target/release/recarga-bench --smoke           # every scenario for ~2 s with tiny sizes (CI)
//! target/release/recarga-bench --engine postgres --import-legacy 100000   # time `recarga import legacy`
//! ```
//!
//! **What it starts**, for each scenario: a fresh database (a temporary SQLite
//! directory, or `CREATE DATABASE recarga_bench_<id>` on the given PostgreSQL
//! server via `psql`, dropped afterwards; with Redis a private key prefix,
//! deleted afterwards), the customers (through `recarga customer create`, with
//! the largest credit it takes), a `recarga latcom-sim`, and a `recarga serve`
//! with `RECARGA_UPSTREAM=latcom` pointed at the simulator, so every top-up
//! crosses the real Latcom adapter and the real HTTP wire. A scenario never
//! runs on another's rows, and its checks see exactly its own top-ups. Every
//! child listens on 127.0.0.1 only, runs with a cleared environment in a
//! private directory, and is killed when its guard drops (also on an error, a
//! panic or Ctrl-C). A database or Redis URL that is not loopback is refused.
//!
//! **How it loads.** A closed loop ([`load`]): `C` tasks share one HTTP client;
//! each sends a request, reads the whole answer, records the latency and sends
//! the next, until the duration ends (or, for `drain`, the budget of `N`
//! top-ups is spent). Latencies are sorted for exact nearest-rank
//! percentiles. The load generator runs on the same machine as the gateway,
//! the simulator and the database, and competes with them for the CPUs.
//!
//! **Scenarios.**
//! - `accept`: async top-ups (`POST /v1/topups`, 202) from one hot customer
//!   at concurrency C (64) for 15 s: accepted/s, p50/p95/p99/max, errors. The
//!   simulated upstream answers in 2–7 s during the window (as Latcom does), so
//!   the 64 workers barely touch the database while it is measured; after the
//!   window it answers in 1–5 ms so the queue drains quickly for the checks.
//! - `accept-spread`: the same, spread over 100 customers.
//! - `balance`: `GET /v1/balance` at concurrency 50 for 10 s: reads/s, p50/p99.
//! - `sync`: the compatibility sync route (`POST /api/enviadespensa/topup`,
//!   `x-api-key` + `x-customer-id`) at concurrency 2,000 with every upstream
//!   call taking L = 6.5 s, for 20 s: completions/s against the ideal C/L.
//! - `drain`: a backlog of N = 20,000 accepted top-ups (submitted at C = 64
//!   through a gateway with one upstream call in flight, so the queue is barely
//!   worked, then stopped), drained by a fresh gateway with `QUEUE_CONCURRENCY`
//!   = `LATCOM_MAX_INFLIGHT` = 8,000 and every upstream call taking 6.5 s: time
//!   from its spawn until every one is final, completions/s (backlog / that
//!   time, next to the best the cap allows: ⌈N / cap⌉ waves of L), the peak
//!   1-second rate, peak upstream calls in flight (`recarga_upstream_inflight`)
//!   and the draining gateway's peak RSS (`VmHWM`).
//!
//! **Correctness, after every scenario.** The queue must settle (every
//! accepted top-up final or UNKNOWN, `/api/queue/stats`); the stored top-ups
//! must match what the bench saw accepted; the simulator's journal must show
//! exactly one call per top-up id and no double delivery; its deliveries must
//! match the SUCCESS count (UNKNOWN may go either way); and `recarga audit`
//! must exit 0 within `--audit-timeout-s` (an audit that cannot finish is a
//! failed check, not a pass). A run with a failed check exits 1: a fast but
//! wrong gateway has no figures worth printing.
//!
//! Targets from the issue are evaluated and printed as met or missed; they
//! never change the exit code.

mod import;
mod load;
mod procs;
mod report;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use load::{LoadResult, classify, closed_loop, per_s};
use procs::{Backend, Gateway, GatewaySettings, Queue};
use recarga_testkit::Sim;
use report::{Check, Machine, Report, ScenarioReport, Target};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Opening credit and credit limit of every bench customer (MXN, the largest
/// amounts the CLI takes): about a million 20-MXN top-ups per customer.
const CREDIT_MXN: &str = "9999999";
/// Face value of every bench top-up (MXN).
const AMOUNT_MXN: &str = "20";
/// Client-side bound on one async request or read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Client-side bound on one sync request (the gateway waits at most 25 s).
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The upstream latency used to drain the queue quickly after a window.
const FAST_UPSTREAM_MS: (u64, u64) = (1, 5);
/// Longest `recarga migrate` or `customer create` may run.
const CLI_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Accept,
    AcceptSpread,
    Sync,
    Drain,
    Balance,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Accept,
    AcceptSpread,
    Balance,
    Sync,
    Drain,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Accept,
        Scenario::AcceptSpread,
        Scenario::Balance,
        Scenario::Sync,
        Scenario::Drain,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Accept => "accept",
            Scenario::AcceptSpread => "accept-spread",
            Scenario::Balance => "balance",
            Scenario::Sync => "sync",
            Scenario::Drain => "drain",
        }
    }
}

/// Benchmark of the recarga gateway on loopback: starts its own simulator and
/// gateway, runs bounded scenarios, checks the books, prints the figures.
#[derive(Debug, Parser)]
#[command(name = "recarga-bench", version)]
struct Args {
    /// The `recarga` binary [default: target/release/recarga, else target/debug/recarga].
    #[arg(long)]
    recarga: Option<PathBuf>,
    /// The database engine of the gateway.
    #[arg(long, value_enum, default_value = "sqlite")]
    engine: EngineArg,
    /// PostgreSQL server to create the bench database on (loopback only).
    #[arg(long, default_value = DEFAULT_PG_URL)]
    database_url: String,
    /// Redis for the gateway (loopback only); a private key prefix is used and removed.
    #[arg(long)]
    redis_url: Option<String>,
    #[arg(long, value_enum, default_value = "all")]
    scenario: ScenarioArg,
    /// Length of the accept, accept-spread, balance and sync windows (s)
    /// [default: 15, 15, 10, 20; smoke 2].
    #[arg(long)]
    duration_s: Option<f64>,
    /// Concurrent clients of accept, accept-spread, balance and sync
    /// [default: 64, 64, 50, 2000; smoke 16, 16, 16, 50].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Top-ups of the drain scenario [default: 20000; smoke 200].
    #[arg(long)]
    topups: Option<u64>,
    /// Upstream latency of the sync and drain scenarios (ms) [default: 6500; smoke 300].
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Customers of accept-spread [default: 100; smoke 10].
    #[arg(long)]
    customers: Option<usize>,
    /// Upstream calls in flight for sync and drain (QUEUE_CONCURRENCY and
    /// LATCOM_MAX_INFLIGHT) [default: 8000; smoke 512].
    #[arg(long)]
    inflight: Option<usize>,
    /// Longest wait for the queue to settle after a scenario (s) [default: 600; smoke 60].
    #[arg(long)]
    settle_timeout_s: Option<u64>,
    /// Longest `recarga audit` may run after a scenario before the check fails (s)
    /// [default: 600; smoke 60].
    #[arg(long)]
    audit_timeout_s: Option<u64>,
    /// The gateway's RECARGA_LOG during the run (its production default).
    #[arg(long, default_value = "info,sqlx=warn")]
    gateway_log: String,
    /// Print the report as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Every scenario for ~2 s with tiny sizes: proves the program works (CI).
    #[arg(long)]
    smoke: bool,
    /// Instead of the scenarios: time `recarga import legacy` of an old
    /// installation whose busiest customer has N transactions (needs
    /// PostgreSQL at --database-url for the old database; the Recarga side
    /// uses --engine).
    #[arg(long, value_name = "N")]
    import_legacy: Option<i64>,
}

/// What to run, resolved from the arguments.
#[derive(Debug, Clone)]
struct Plan {
    smoke: bool,
    scenarios: Vec<Scenario>,
    accept_s: f64,
    accept_c: usize,
    /// Upstream latency while accept windows are measured.
    accept_hold_ms: (u64, u64),
    spread_customers: usize,
    balance_s: f64,
    balance_c: usize,
    sync_s: f64,
    sync_c: usize,
    sync_latency_ms: u64,
    drain_topups: u64,
    drain_latency_ms: u64,
    drain_submit_c: usize,
    wide_inflight: usize,
    settle: Duration,
    audit_timeout: Duration,
    gateway_log: String,
}

impl Plan {
    fn from(args: &Args) -> Result<Plan> {
        let smoke = args.smoke;
        let pick = |given: Option<f64>, full: f64, small: f64| given.unwrap_or(if smoke { small } else { full });
        let pick_c = |full: usize, small: usize| args.concurrency.unwrap_or(if smoke { small } else { full });
        let latency = args.latency_ms.unwrap_or(if smoke { 300 } else { 6_500 });
        let plan = Plan {
            smoke,
            scenarios: match args.scenario {
                ScenarioArg::All => Scenario::ALL.to_vec(),
                ScenarioArg::Accept => vec![Scenario::Accept],
                ScenarioArg::AcceptSpread => vec![Scenario::AcceptSpread],
                ScenarioArg::Balance => vec![Scenario::Balance],
                ScenarioArg::Sync => vec![Scenario::Sync],
                ScenarioArg::Drain => vec![Scenario::Drain],
            },
            accept_s: pick(args.duration_s, 15.0, 2.0),
            accept_c: pick_c(64, 16),
            accept_hold_ms: if smoke { (200, 300) } else { (2_000, 7_000) },
            spread_customers: args.customers.unwrap_or(if smoke { 10 } else { 100 }),
            balance_s: pick(args.duration_s, 10.0, 2.0),
            balance_c: pick_c(50, 16),
            sync_s: pick(args.duration_s, 20.0, 2.0),
            sync_c: pick_c(2_000, 50),
            sync_latency_ms: latency,
            drain_topups: args.topups.unwrap_or(if smoke { 200 } else { 20_000 }),
            drain_latency_ms: latency,
            drain_submit_c: 64,
            wide_inflight: args.inflight.unwrap_or(if smoke { 512 } else { 8_000 }),
            settle: Duration::from_secs(args.settle_timeout_s.unwrap_or(if smoke { 60 } else { 600 })),
            audit_timeout: Duration::from_secs(args.audit_timeout_s.unwrap_or(if smoke { 60 } else { 600 })),
            gateway_log: args.gateway_log.clone(),
        };
        let windows = [plan.accept_s, plan.balance_s, plan.sync_s];
        if windows.iter().any(|s| !(s.is_finite() && *s > 0.0 && *s <= 3_600.0)) {
            bail!("--duration-s must be in (0, 3600]");
        }
        if plan.accept_c == 0 || plan.balance_c == 0 || plan.sync_c == 0 || plan.sync_c > 10_000 {
            bail!("--concurrency must be in 1..=10000");
        }
        if plan.drain_topups == 0 || plan.drain_topups > 1_000_000 {
            bail!("--topups must be in 1..=1000000");
        }
        if plan.spread_customers == 0 || plan.spread_customers > 1_000 {
            bail!("--customers must be in 1..=1000");
        }
        if latency > 120_000 || plan.wide_inflight == 0 || plan.wide_inflight > 20_000 {
            bail!("--latency-ms must be at most 120000 and --inflight in 1..=20000");
        }
        Ok(plan)
    }

    /// The gateway settings of a scenario: the product defaults, except that
    /// sync and drain get enough upstream calls in flight for their load and
    /// timeouts (and a lease) above their upstream latency.
    fn gateway(&self, s: Scenario) -> GatewaySettings {
        let (inflight, latency_ms) = match s {
            Scenario::Sync => (self.wide_inflight, self.sync_latency_ms),
            Scenario::Drain => (self.wide_inflight, self.drain_latency_ms),
            _ => (64, self.accept_hold_ms.1),
        };
        let upstream_timeout_s = (latency_ms / 1000 + 30).max(40);
        GatewaySettings {
            queue_concurrency: inflight,
            latcom_max_inflight: inflight,
            upstream_timeout_s,
            lease_s: (upstream_timeout_s + 60).max(120),
            log: self.gateway_log.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    key: String,
}

/// Everything a scenario needs. Field order is drop order: the simulator is
/// stopped before the backend (its database, its directory) is removed.
struct Ctx {
    sim: Sim,
    backend: Backend,
    bin: PathBuf,
    http: reqwest::Client,
    admin_key: String,
    plan: Plan,
    postgres: bool,
    hot: Customer,
    spread: Arc<Vec<Customer>>,
    /// Top-ups the bench saw accepted in this scenario.
    accepted: u64,
    /// Top-up requests that got no answer (they may or may not have been accepted).
    unanswered: u64,
    gateway_version: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted: children stopped, bench data removed")),
        }
    });
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Ctrl-C or SIGTERM: returning drops the run, and with it every child guard.
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn say(text: impl AsRef<str>) {
    eprintln!("[bench] {}", text.as_ref());
}

/// The `recarga` binary: the given path, else `target/release/recarga`, else
/// `target/debug/recarga` (under the current directory, then the workspace).
fn find_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            // Absolute: the children run in their own working directory.
            return path
                .canonicalize()
                .with_context(|| format!("--recarga {}", path.display()));
        }
        bail!("--recarga {}: no such file", path.display());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let roots = [PathBuf::from("."), workspace];
    for root in &roots {
        for profile in ["release", "debug"] {
            let candidate = root.join("target").join(profile).join("recarga");
            if candidate.is_file() {
                return Ok(candidate.canonicalize().unwrap_or(candidate));
            }
        }
    }
    bail!("no recarga binary found: run `cargo build --release -p recarga-server` or pass --recarga PATH")
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("build the HTTP client")
}

async fn run(args: Args) -> Result<bool> {
    let bin = find_binary(args.recarga.as_deref())?;
    if let Some(rows) = args.import_legacy {
        let recarga_pg = (args.engine == EngineArg::Postgres).then_some(args.database_url.as_str());
        let (report, ok) = import::run(&bin, &args.database_url, recarga_pg, rows).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ok);
    }
    let plan = Plan::from(&args)?;
    let http = http_client()?;
    let postgres = args.engine == EngineArg::Postgres;
    let pg_url = postgres.then_some(args.database_url.as_str());
    for (what, url) in [("--database-url", pg_url), ("--redis-url", args.redis_url.as_deref())] {
        if let Some(url) = url {
            procs::require_loopback(what, url)?;
        }
    }
    say(format!("recarga binary: {}", bin.display()));
    let machine = Machine::detect();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let admin_key = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
    let mut scenarios = Vec::new();
    let (mut database, mut redis, mut gateway_version) = (String::new(), None, String::new());
    for s in &plan.scenarios {
        say(format!("scenario {} …", s.name()));
        // Each scenario gets its own database and simulator: its checks see
        // exactly its own top-ups, and no scenario runs on another's rows.
        let backend = Backend::create(pg_url, args.redis_url.as_deref())?;
        database = backend.db_version.clone();
        redis = backend.redis_version.clone();
        let migrate = procs::cli(&bin, &backend, &["migrate"], CLI_WITHIN).await?;
        if migrate.code != Some(0) {
            bail!("recarga migrate failed: {}", migrate.stderr.trim());
        }
        let spread_n = if *s == Scenario::AcceptSpread {
            plan.spread_customers
        } else {
            0
        };
        let mut ids = vec!["BENCH_HOT".to_string()];
        ids.extend((0..spread_n).map(|i| format!("BENCH_S{i:04}")));
        let mut customers = create_customers(&bin, &backend, &ids).await?;
        let hot = customers.remove(0);
        let sim = procs::start_sim(&bin, &backend).await?;
        let mut ctx = Ctx {
            sim,
            backend,
            bin: bin.clone(),
            http: http.clone(),
            admin_key: admin_key.clone(),
            plan: plan.clone(),
            postgres,
            hot,
            spread: Arc::new(customers),
            accepted: 0,
            unanswered: 0,
            gateway_version: String::new(),
        };
        let report = run_scenario(&mut ctx, *s).await?;
        gateway_version = ctx.gateway_version.clone();
        say(format!(
            "scenario {} done: {}; {}",
            s.name(),
            if report.correct { "correct" } else { "INCORRECT" },
            report::describe(&report.figures)
        ));
        scenarios.push(report);
    }
    let engine = match (postgres, args.redis_url.is_some()) {
        (false, false) => "sqlite",
        (false, true) => "sqlite+redis",
        (true, false) => "postgres",
        (true, true) => "postgres+redis",
    };
    let all_correct = scenarios.iter().all(|s| s.correct);
    let report = Report {
        tool: "recarga-bench",
        started_at,
        smoke: plan.smoke,
        machine,
        engine: engine.into(),
        database,
        redis,
        gateway_version,
        recarga_binary: bin.display().to_string(),
        scenarios,
        all_correct,
    };
    if args.json {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(all_correct)
}

/// `recarga customer create` for each id, four at a time.
async fn create_customers(bin: &Path, backend: &Backend, ids: &[String]) -> Result<Vec<Customer>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(4) {
        let mut running = Vec::new();
        for id in chunk {
            let args = [
                "customer",
                "create",
                "--id",
                id,
                "--name",
                id,
                "--credit",
                CREDIT_MXN,
                "--credit-limit",
                CREDIT_MXN,
                "--actor",
                "bench",
            ];
            running.push((id.clone(), procs::cli_task(bin, backend, &args, CLI_WITHIN)));
        }
        for (id, task) in running {
            let run = task.await.context("customer creation task")??;
            let key = run.json["api_key"].as_str().map(str::to_string);
            match (run.code, key) {
                (Some(0), Some(key)) => out.push(Customer { id, key }),
                _ => bail!("recarga customer create --id {id} failed: {}", run.stderr.trim()),
            }
        }
    }
    Ok(out)
}

/// A phone that the simulator's default script delivers (never `…9xx`).
fn phone(task: usize, seq: u64) -> String {
    let mut n = (task as u64 * 1_000_003 + seq) % 100_000_000;
    if n % 1000 >= 900 {
        n -= 500;
    }
    format!("55{n:08}")
}

/// `POST /v1/topups` with `key`; 202 (accepted) is the expected answer.
async fn post_async_topup(http: &reqwest::Client, url: &str, key: &str, body: String) -> load::Verdict {
    let sent = http
        .post(url)
        .bearer_auth(key)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    classify(sent, StatusCode::ACCEPTED, None, None).await
}

fn topup_body(tag: &str, task: usize, seq: u64) -> String {
    format!(
        r#"{{"phone":"{}","amount":"{AMOUNT_MXN}","reference":"{tag}-{task}-{seq}"}}"#,
        phone(task, seq)
    )
}

fn put(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    map.insert(key.to_string(), value.into());
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn load_figures(figures: &mut Map<String, Value>, load: &mut LoadResult) {
    let latency = load.latency();
    put(figures, "ok", load.ok);
    put(figures, "errors", load.errors());
    put(figures, "rate_per_s", round(load.ok_per_s(), 1));
    put(figures, "window_s", round(load.elapsed.as_secs_f64(), 2));
    put(figures, "p50_ms", round(latency.p50_ms, 2));
    put(figures, "p95_ms", round(latency.p95_ms, 2));
    put(figures, "p99_ms", round(latency.p99_ms, 2));
    put(figures, "max_ms", round(latency.max_ms, 2));
    if !load.error_kinds.is_empty() {
        put(figures, "error_kinds", json!(load.error_kinds));
    }
}

async fn run_scenario(ctx: &mut Ctx, s: Scenario) -> Result<ScenarioReport> {
    let gw_settings = ctx.plan.gateway(s);
    let mut settings = Map::new();
    let mut figures = Map::new();
    // The drain is timed on a backlog: accepted first, by a gateway that barely works the queue.
    let backlog = if s == Scenario::Drain {
        Some(preload(ctx, &mut figures).await?)
    } else {
        None
    };
    put(&mut settings, "loadavg_before", report::loadavg());
    let spawned = Instant::now();
    let gw = Gateway::start(
        &ctx.bin,
        &ctx.backend,
        &ctx.sim,
        &gw_settings,
        &ctx.admin_key,
        s.name(),
        &ctx.http,
    )
    .await?;
    if ctx.gateway_version.is_empty() {
        let health = gw.health(&ctx.http).await?;
        ctx.gateway_version = health["version"].as_str().unwrap_or("?").to_string();
    }
    let gw_pid = gw.proc.pid().to_string();
    let cpu_before = (
        recarga_testkit::cpu_seconds(&gw_pid),
        recarga_testkit::cpu_seconds("self"),
    );
    let body_started = Instant::now();
    let ran = match (s, backlog) {
        (Scenario::Accept, _) => accept(ctx, &gw, false, &mut settings, &mut figures).await?,
        (Scenario::AcceptSpread, _) => accept(ctx, &gw, true, &mut settings, &mut figures).await?,
        (Scenario::Balance, _) => balance(ctx, &gw, &mut settings, &mut figures).await?,
        (Scenario::Sync, _) => sync(ctx, &gw, &mut settings, &mut figures).await?,
        (Scenario::Drain, Some(backlog)) => drain(ctx, &gw, spawned, backlog, &mut settings, &mut figures).await?,
        (Scenario::Drain, None) => bail!("the drain needs its backlog"),
    };
    // CPU used while the load ran, in % of one core: where the machine's time went.
    let wall = body_started.elapsed().as_secs_f64();
    if let (Some(g0), Some(g1)) = (cpu_before.0, recarga_testkit::cpu_seconds(&gw_pid)) {
        put(&mut figures, "gateway_cpu_pct", round((g1 - g0) / wall * 100.0, 0));
    }
    if let (Some(b0), Some(b1)) = (cpu_before.1, recarga_testkit::cpu_seconds("self")) {
        put(&mut figures, "loadgen_cpu_pct", round((b1 - b0) / wall * 100.0, 0));
    }
    put(&mut settings, "QUEUE_CONCURRENCY", gw_settings.queue_concurrency);
    put(&mut settings, "LATCOM_MAX_INFLIGHT", gw_settings.latcom_max_inflight);
    put(
        &mut settings,
        "RECARGA_UPSTREAM_TIMEOUT_S",
        gw_settings.upstream_timeout_s,
    );
    put(&mut settings, "RECARGA_LEASE_S", gw_settings.lease_s);
    put(&mut settings, "RECARGA_LOG", gw_settings.log.clone());

    let mut checks = vec![Check {
        name: "load ran",
        ok: ran > 0,
        detail: format!("{ran} requests answered as expected"),
    }];
    checks.extend(verify(ctx, &gw, &mut figures).await?);
    if let Some(kib) = gw.proc.peak_rss_kib() {
        put(&mut figures, "gateway_peak_rss_mib", round(kib as f64 / 1024.0, 1));
    }
    procs::stop(gw.proc).await;
    let audit_started = Instant::now();
    let audit = procs::cli(&ctx.bin, &ctx.backend, &["audit"], ctx.plan.audit_timeout).await;
    put(&mut figures, "audit_s", round(audit_started.elapsed().as_secs_f64(), 1));
    checks.push(match audit {
        Ok(run) if run.code == Some(0) => Check {
            name: "recarga audit",
            ok: true,
            detail: format!("clean (exit 0) in {:.1} s", audit_started.elapsed().as_secs_f64()),
        },
        Ok(run) => Check {
            name: "recarga audit",
            ok: false,
            detail: format!(
                "exit {:?}: {}",
                run.code,
                run.json.to_string().chars().take(400).collect::<String>()
            ),
        },
        Err(e) => Check {
            name: "recarga audit",
            ok: false,
            detail: format!("not verified: {e:#}"),
        },
    });
    let target = if ctx.plan.smoke {
        None
    } else {
        target(ctx, s, &settings, &figures)
    };
    let correct = checks.iter().all(|c| c.ok);
    Ok(ScenarioReport {
        name: s.name(),
        settings,
        figures,
        target,
        checks,
        correct,
    })
}

/// Async top-ups in a closed loop; returns the number accepted.
async fn accept(
    ctx: &mut Ctx,
    gw: &Gateway,
    spread: bool,
    settings: &mut Map<String, Value>,
    figures: &mut Map<String, Value>,
) -> Result<u64> {
    let (lo, hi) = ctx.plan.accept_hold_ms;
    procs::set_latency(&ctx.sim, lo, hi).await?;
    let customers = if spread {
        Arc::clone(&ctx.spread)
    } else {
        Arc::new(vec![ctx.hot.clone()])
    };
    let c = ctx.plan.accept_c;
    put(settings, "route", "POST /v1/topups (202 = accepted)");
    put(settings, "concurrency", c);
    put(settings, "duration_s", ctx.plan.accept_s);
    put(settings, "customers", customers.len());
    put(
        settings,
        "upstream_latency_ms",
        format!(
            "{lo}-{hi} during the window, then {}-{} to drain",
            FAST_UPSTREAM_MS.0, FAST_UPSTREAM_MS.1
        ),
    );
    let url: Arc<str> = format!("{}/v1/topups", gw.base).into();
    let http = ctx.http.clone();
    let tag = if spread { "as" } else { "ah" };
    let until = Instant::now() + Duration::from_secs_f64(ctx.plan.accept_s);
    let mut load = closed_loop(c, until, None, move |task, seq| {
        let http = http.clone();
        let url = Arc::clone(&url);
        let customers = Arc::clone(&customers);
        async move {
            let customer = &customers[(task + seq as usize) % customers.len()];
            post_async_topup(&http, &url, &customer.key, topup_body(tag, task, seq)).await
        }
    })
    .await;
    ctx.accepted += load.ok;
    ctx.unanswered += load.transport_errors;
    procs::set_latency(&ctx.sim, FAST_UPSTREAM_MS.0, FAST_UPSTREAM_MS.1).await?;
    load_figures(figures, &mut load);
    Ok(load.ok)
}

/// Balance reads in a closed loop; returns the number of 200s.
async fn balance(
    ctx: &mut Ctx,
    gw: &Gateway,
    settings: &mut Map<String, Value>,
    figures: &mut Map<String, Value>,
) -> Result<u64> {
    let c = ctx.plan.balance_c;
    put(settings, "route", "GET /v1/balance");
    put(settings, "concurrency", c);
    put(settings, "duration_s", ctx.plan.balance_s);
    let url: Arc<str> = format!("{}/v1/balance", gw.base).into();
    let key: Arc<str> = ctx.hot.key.clone().into();
    let http = ctx.http.clone();
    let until = Instant::now() + Duration::from_secs_f64(ctx.plan.balance_s);
    let mut load = closed_loop(c, until, None, move |_, _| {
        let http = http.clone();
        let url = Arc::clone(&url);
        let key = Arc::clone(&key);
        async move {
            let sent = http.get(&*url).bearer_auth(&*key).timeout(REQUEST_TIMEOUT).send().await;
            classify(sent, StatusCode::OK, None, None).await
        }
    })
    .await;
    load_figures(figures, &mut load);
    Ok(load.ok)
}

/// A 200 of the sync route must carry a SUCCESS (the simulator's default script).
fn sync_body_ok(body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "HTTP 200 not JSON".to_string())?;
    match v["transaction"]["status"].as_str() {
        Some("SUCCESS") => Ok(()),
        other => Err(format!("HTTP 200 {}", other.unwrap_or("without status"))),
    }
}

/// The compatibility sync route in a closed loop; returns the completions.
async fn sync(
    ctx: &mut Ctx,
    gw: &Gateway,
    settings: &mut Map<String, Value>,
    figures: &mut Map<String, Value>,
) -> Result<u64> {
    let latency_ms = ctx.plan.sync_latency_ms;
    procs::set_latency(&ctx.sim, latency_ms, latency_ms).await?;
    let c = ctx.plan.sync_c;
    put(
        settings,
        "route",
        "POST /api/enviadespensa/topup (x-api-key + x-customer-id; 200 = final)",
    );
    put(settings, "concurrency", c);
    put(settings, "duration_s", ctx.plan.sync_s);
    put(settings, "upstream_latency_ms", latency_ms);
    let url: Arc<str> = format!("{}/api/enviadespensa/topup", gw.base).into();
    let customer = Arc::new(ctx.hot.clone());
    let http = ctx.http.clone();
    let until = Instant::now() + Duration::from_secs_f64(ctx.plan.sync_s);
    let mut load = closed_loop(c, until, None, move |task, seq| {
        let http = http.clone();
        let url = Arc::clone(&url);
        let customer = Arc::clone(&customer);
        async move {
            let sent = http
                .post(&*url)
                .header("x-api-key", &customer.key)
                .header("x-customer-id", &customer.id)
                .header(CONTENT_TYPE, "application/json")
                .body(topup_body("sy", task, seq))
                .timeout(SYNC_REQUEST_TIMEOUT)
                .send()
                .await;
            classify(sent, StatusCode::OK, Some(StatusCode::ACCEPTED), Some(sync_body_ok)).await
        }
    })
    .await;
    // A 200 with a non-SUCCESS final state was accepted too.
    let final_not_success: u64 = load
        .error_kinds
        .iter()
        .filter(|(k, _)| k.starts_with("HTTP 200"))
        .map(|(_, v)| *v)
        .sum();
    ctx.accepted += load.ok + load.open + final_not_success;
    ctx.unanswered += load.transport_errors;
    load_figures(figures, &mut load);
    let ideal = c as f64 / (latency_ms as f64 / 1000.0);
    put(figures, "completions_per_s", round(load.ok_per_s(), 1));
    put(figures, "ideal_c_over_l_per_s", round(ideal, 1));
    put(figures, "open_202", load.open);
    Ok(load.ok)
}

/// One sample of the drain.
struct Sample {
    t: Duration,
    /// Top-ups final or UNKNOWN (the whole database).
    done: u64,
    active: u64,
    inflight: Option<u64>,
}

/// The drain's backlog, as the preloading gateway left it.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    accepted: u64,
    /// Final or UNKNOWN before the measured gateway started (the preloader's
    /// one worker finishes a few; its in-flight call is finished on SIGTERM).
    done_before: u64,
}

/// Accepts the drain's N top-ups through a gateway with one upstream call in
/// flight (so the queue is barely worked), then stops it: what is left is the
/// backlog the measured gateway drains.
async fn preload(ctx: &mut Ctx, figures: &mut Map<String, Value>) -> Result<Backlog> {
    let latency_ms = ctx.plan.drain_latency_ms;
    procs::set_latency(&ctx.sim, latency_ms, latency_ms).await?;
    let mut settings = ctx.plan.gateway(Scenario::Drain);
    settings.queue_concurrency = 1;
    settings.latcom_max_inflight = 1;
    let gw = Gateway::start(
        &ctx.bin,
        &ctx.backend,
        &ctx.sim,
        &settings,
        &ctx.admin_key,
        "drain-preload",
        &ctx.http,
    )
    .await?;
    let n = ctx.plan.drain_topups;
    let url: Arc<str> = format!("{}/v1/topups", gw.base).into();
    let key: Arc<str> = ctx.hot.key.clone().into();
    let http = ctx.http.clone();
    let deadline = Instant::now() + ctx.plan.settle;
    let mut load = closed_loop(ctx.plan.drain_submit_c, deadline, Some(n), move |task, seq| {
        let http = http.clone();
        let url = Arc::clone(&url);
        let key = Arc::clone(&key);
        async move { post_async_topup(&http, &url, &key, topup_body("dr", task, seq)).await }
    })
    .await;
    ctx.accepted += load.ok;
    ctx.unanswered += load.transport_errors;
    let q = gw.queue(&ctx.http, &ctx.admin_key).await?;
    procs::stop(gw.proc).await;
    let latency = load.latency();
    put(figures, "accepted", load.ok);
    put(figures, "errors", load.errors());
    if !load.error_kinds.is_empty() {
        put(figures, "error_kinds", json!(load.error_kinds));
    }
    put(figures, "preload_s", round(load.elapsed.as_secs_f64(), 2));
    put(figures, "preload_per_s", round(load.ok_per_s(), 1));
    put(figures, "preload_p99_ms", round(latency.p99_ms, 2));
    Ok(Backlog {
        accepted: load.ok,
        done_before: q.done() + q.active,
    })
}

/// Times a fresh gateway (spawned at `spawned`) until every top-up of the
/// backlog is final or UNKNOWN.
async fn drain(
    ctx: &mut Ctx,
    gw: &Gateway,
    spawned: Instant,
    backlog: Backlog,
    settings: &mut Map<String, Value>,
    figures: &mut Map<String, Value>,
) -> Result<u64> {
    let latency_ms = ctx.plan.drain_latency_ms;
    let todo = backlog.accepted.saturating_sub(backlog.done_before);
    let inflight_cap = ctx.plan.wide_inflight as u64;
    put(
        settings,
        "route",
        "N x POST /v1/topups through a 1-in-flight gateway, then a fresh gateway drains them",
    );
    put(settings, "concurrency", ctx.plan.drain_submit_c);
    put(settings, "topups", ctx.plan.drain_topups);
    put(settings, "upstream_latency_ms", latency_ms);
    put(figures, "backlog", todo);
    let deadline = Instant::now() + ctx.plan.settle;
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        if let Ok(q) = gw.queue(&ctx.http, &ctx.admin_key).await {
            let inflight = procs::inflight_at(&ctx.http, &gw.base).await;
            samples.push(Sample {
                t: spawned.elapsed(),
                done: q.done(),
                active: q.active,
                inflight,
            });
            if q.done() >= backlog.accepted {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = samples.iter().find(|s| s.done >= backlog.accepted);
    let first = samples.iter().find(|s| s.done > backlog.done_before);
    put(figures, "drained", finished.is_some());
    if let Some(end) = finished {
        put(figures, "ok", todo);
        put(figures, "drain_s", round(end.t.as_secs_f64(), 2));
        put(figures, "rate_per_s", round(per_s(todo, end.t), 1));
        if let Some(first) = first {
            put(figures, "first_completion_s", round(first.t.as_secs_f64(), 2));
            put(
                figures,
                "completions_per_s_first_to_last",
                round(per_s(end.done - first.done, end.t.saturating_sub(first.t)), 1),
            );
        }
    } else {
        let done = samples.last().map(|s| s.done).unwrap_or(0);
        put(figures, "ok", done.saturating_sub(backlog.done_before));
        put(
            figures,
            "drain_s",
            format!("> {:.0} (timed out)", ctx.plan.settle.as_secs_f64()),
        );
    }
    // The best any gateway could do with this cap: ceil(N / cap) waves of L.
    let waves = todo.div_ceil(inflight_cap.max(1)).max(1);
    put(
        figures,
        "ideal_per_s",
        round(per_s(todo, Duration::from_millis(waves * latency_ms)), 1),
    );
    put(figures, "peak_completions_per_s_1s", round(peak_rate(&samples), 1));
    put(
        figures,
        "peak_upstream_inflight",
        samples.iter().filter_map(|s| s.inflight).max().unwrap_or(0),
    );
    put(
        figures,
        "peak_processing",
        samples.iter().map(|s| s.active).max().unwrap_or(0),
    );
    if let Some(kib) = gw.proc.peak_rss_kib() {
        put(figures, "peak_rss_mib", round(kib as f64 / 1024.0, 1));
    }
    Ok(finished.map(|_| todo).unwrap_or(0))
}

/// The highest completion rate over any window of at least one second.
fn peak_rate(samples: &[Sample]) -> f64 {
    let mut best = 0.0f64;
    let mut j = 0;
    for i in 0..samples.len() {
        while j + 1 < i && samples[i].t.saturating_sub(samples[j + 1].t) >= Duration::from_secs(1) {
            j += 1;
        }
        let span = samples[i].t.saturating_sub(samples[j].t);
        if span >= Duration::from_secs(1) {
            best = best.max(per_s(samples[i].done.saturating_sub(samples[j].done), span));
        }
    }
    best
}

/// The checks every scenario ends with: the queue settles, the stored top-ups
/// match what was accepted, and the simulator's journal agrees with the books.
async fn verify(ctx: &Ctx, gw: &Gateway, figures: &mut Map<String, Value>) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let started = Instant::now();
    let deadline = started + ctx.plan.settle;
    let (q, settled): (Queue, bool) = loop {
        let q = gw.queue(&ctx.http, &ctx.admin_key).await?;
        if q.open() == 0 {
            break (q, true);
        }
        if Instant::now() > deadline {
            break (q, false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    put(figures, "settle_s", round(started.elapsed().as_secs_f64(), 2));
    checks.push(Check {
        name: "settled",
        ok: settled,
        detail: format!(
            "after {:.1} s: {} SUCCESS, {} FAILED, {} UNKNOWN, {} still open",
            started.elapsed().as_secs_f64(),
            q.completed,
            q.failed,
            q.unknown,
            q.open()
        ),
    });
    checks.push(Check {
        name: "accepted = stored",
        ok: q.total >= ctx.accepted && q.total <= ctx.accepted + ctx.unanswered,
        detail: format!(
            "{} top-ups stored, {} seen accepted, {} requests unanswered",
            q.total, ctx.accepted, ctx.unanswered
        ),
    });
    let journal = ctx.sim.journal().await?;
    let empty = Map::new();
    let entries = journal["entries"].as_object().unwrap_or(&empty);
    let repeated = entries.values().filter(|e| e["calls"].as_u64() != Some(1)).count();
    let deliveries = journal["totals"]["deliveries"].as_u64().unwrap_or(0);
    let doubles = journal["totals"]["duplicates_delivered"].as_u64().unwrap_or(0);
    checks.push(Check {
        name: "one upstream call per top-up",
        ok: repeated == 0 && doubles == 0 && entries.len() as u64 <= q.total,
        detail: format!(
            "{} ids called, {repeated} with calls ≠ 1, {doubles} delivered more than once",
            entries.len()
        ),
    });
    checks.push(Check {
        name: "deliveries = SUCCESS",
        ok: q.completed <= deliveries && deliveries <= q.completed + q.unknown,
        detail: format!(
            "{deliveries} delivered by the simulator, {} SUCCESS, {} UNKNOWN",
            q.completed, q.unknown
        ),
    });
    put(figures, "unknown_total", q.unknown);
    Ok(checks)
}

/// The issue's target for a scenario, if it has one.
fn target(ctx: &Ctx, s: Scenario, settings: &Map<String, Value>, f: &Map<String, Value>) -> Option<Target> {
    let num = |k: &str| f.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let errors = num("errors");
    match s {
        Scenario::Accept if ctx.postgres => {
            let (rate, p99) = (num("rate_per_s"), num("p99_ms"));
            Some(Target {
                text: "PostgreSQL, hot customer, C=64: ≥ 10,000 accepted/s with p99 ≤ 20 ms".into(),
                met: rate >= 10_000.0 && p99 <= 20.0 && errors == 0.0,
                measured: format!("{} /s, p99 {p99:.1} ms", report::thousands(rate)),
            })
        }
        Scenario::Accept => {
            let rate = num("rate_per_s");
            Some(Target {
                text: "SQLite, hot customer, C=64: ≥ 10,000 accepted/s".into(),
                met: rate >= 10_000.0 && errors == 0.0,
                measured: format!("{} /s", report::thousands(rate)),
            })
        }
        Scenario::AcceptSpread => None,
        Scenario::Balance => {
            let (rate, p99) = (num("rate_per_s"), num("p99_ms"));
            Some(Target {
                text: "C=50: ≥ 30,000 reads/s with p99 ≤ 3 ms".into(),
                met: rate >= 30_000.0 && p99 <= 3.0 && errors == 0.0,
                measured: format!("{} /s, p99 {p99:.2} ms", report::thousands(rate)),
            })
        }
        Scenario::Drain => {
            let rate = num("rate_per_s");
            let rss = num("peak_rss_mib");
            let drained = f.get("drained").and_then(Value::as_bool).unwrap_or(false);
            Some(Target {
                text: "L=6.5 s, one process: ≥ 1,000 completions/s, peak RSS ≤ 256 MiB".into(),
                met: drained && rate >= 1_000.0 && rss > 0.0 && rss <= 256.0,
                measured: format!(
                    "{} completions/s (backlog / time to drain; {} at best with this cap), peak RSS {rss:.0} MiB",
                    report::thousands(rate),
                    report::thousands(num("ideal_per_s"))
                ),
            })
        }
        Scenario::Sync => {
            let rate = num("completions_per_s");
            let ideal = num("ideal_c_over_l_per_s");
            let open = num("open_202");
            let c = settings.get("concurrency").and_then(Value::as_u64).unwrap_or(0);
            Some(Target {
                text: format!("C={c}, L=6.5 s: ≈ C/L completions/s (≥ 90 % of {ideal:.0}), 0 errors"),
                met: ideal > 0.0 && rate >= 0.9 * ideal && errors == 0.0 && open == 0.0,
                measured: format!(
                    "{} /s ({:.0} % of C/L), {} errors, {} not final in time",
                    report::thousands(rate),
                    if ideal > 0.0 { rate / ideal * 100.0 } else { 0.0 },
                    errors,
                    open
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_never_hit_a_fault_script() {
        for task in 0..200 {
            for seq in 0..2_000 {
                let p = phone(task, seq);
                assert_eq!(p.len(), 10, "{p}");
                assert!(p.starts_with("55"));
                let last3: u32 = p[7..].parse().unwrap();
                assert!(last3 < 900, "{p}");
            }
        }
    }

    #[test]
    fn the_peak_rate_uses_windows_of_a_second() {
        let samples: Vec<Sample> = (0..=30)
            .map(|i| Sample {
                t: Duration::from_millis(i * 100),
                done: if i <= 10 { 0 } else { (i - 10) * 100 },
                active: 0,
                inflight: None,
            })
            .collect();
        let peak = peak_rate(&samples);
        assert!((peak - 1_000.0).abs() < 1.0, "{peak}");
    }

    #[test]
    fn smoke_plan_is_tiny() {
        let args = Args::parse_from(["recarga-bench", "--smoke"]);
        let plan = Plan::from(&args).unwrap();
        assert_eq!(plan.scenarios.len(), 5);
        assert_eq!(plan.drain_topups, 200);
        assert_eq!(plan.sync_c, 50);
        assert_eq!(plan.sync_latency_ms, 300);
        assert!(plan.accept_s <= 2.0);
        let full = Plan::from(&Args::parse_from(["recarga-bench"])).unwrap();
        assert_eq!(full.gateway(Scenario::Drain).queue_concurrency, 8_000);
        assert!(full.gateway(Scenario::Drain).lease_s > full.gateway(Scenario::Drain).upstream_timeout_s);
    }
}
