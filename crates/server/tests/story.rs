//! The seeded story test: a random life of the gateway against real
//! processes, checked against a model at the end.
//!
//! One seed drives one story per engine: SQLite (process kills only), and
//! PostgreSQL on a private cluster of this test (initdb + pg_ctl in a temp
//! dir, run as the `postgres` user; restarted with `pg_ctl restart -m fast`
//! mid-story — the machine's shared server is never touched), with Redis on
//! a database index of its own (from `STORY_REDIS_DB` on) when `TEST_REDIS_URL` is
//! set. The upstream is a standalone `recarga latcom-sim`, whose journal is
//! the ground truth and survives every gateway death.
//!
//! A story is `STORY_OPS` operations drawn from a seeded RNG: customers
//! created and credited/debited with the operator CLI (sometimes with the
//! `adjust.before_commit` crash site armed), an import of a small old-system
//! database at the start (with PostgreSQL; sometimes crashing inside it at
//! `import.before_commit`, then run again) whose old PENDING rows an operator
//! resolves either way, top-ups (async, synchronous with
//! `Prefer: wait=N`, duplicate references with the same or another body, bad
//! inputs) to phones whose last digits pick a sandbox script, SIGKILLs of the
//! gateway, restarts with a crash site of `failpoint::SITES` armed
//! (`site@n`), PostgreSQL restarts, Redis wipes (`FLUSHDB` of our index: a
//! `FLUSHALL` would wipe every index of the shared server) and simulator
//! fault profiles (`POST /__sim/config`: slow, status query off or
//! unrecognised, redelivering duplicates, IP blocked, our wallet empty).
//! Top-ups that stay unsent past `STORY_PENDING_MAX_AGE_S` expire. Requests run concurrently with the
//! faults. Every request and its answer is kept in a model.
//!
//! At the end the faults stop, the gateway settles, and:
//! - every 2xx names a top-up that exists, is final or is an UNKNOWN listed
//!   by `recarga topup unresolved`; a reference always maps to one top-up,
//!   whose body is the one the 2xx answers carried; a bad input stored nothing;
//! - the books agree with the simulator's journal (`check_books`): no id
//!   sent twice, no phone recharged twice, no delivered top-up refunded
//!   (except the documented `989` case), no refund without a definite
//!   failure, balance = Σ ledger, holds settled at most once;
//! - each operator credit is in the ledger once if the CLI said so, never if
//!   it aborted;
//! - `recarga audit` exits 0;
//! - no 5xx at all, except 503 `unavailable` while PostgreSQL restarts;
//! - the gateway never died but by our hand.
//!
//! A failure prints `STORY_SEED=<n> STORY_ENGINE=<e>`, which replays the
//! same operations (the timing of a real system is not replayed).
//!
//! Run more seeds locally with
//! `cargo test -p recarga-server --test story -- --seeds 20` (or
//! `STORY_SEEDS=20`). This target has `harness = false`.

#[path = "it/common/mod.rs"]
mod common;

use common::procs::{CliRun, Gateway, Rig, assert_failpoints_compiled, check_books, client, free_port, start_sim};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use recarga_domain::failpoint::SITES;
use recarga_store::Store;
use recarga_store::testing::{Engine, fresh, temp_dir};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seeds per run when neither `--seeds` nor `STORY_SEEDS` says otherwise;
/// with the stories side by side the default run takes a minute or two on
/// a 2-core CI machine (see the figures printed at the end).
const DEFAULT_SEEDS: u64 = 5;
/// `RECARGA_PENDING_MAX_AGE_S` of a story's gateways: short enough that
/// a blocked spell makes some top-ups expire.
const STORY_PENDING_MAX_AGE_S: u64 = 15;
/// Operations per story.
const STORY_OPS: usize = 150;
/// Credit of each customer at creation (MXN).
const CUSTOMER_CREDIT_MXN: &str = "5000";
/// Most customers in one story.
const CUSTOMERS_MAX: usize = 4;
/// The first Redis database index this test owns (never 0: other suites
/// use it); stories running side by side take the next ones.
const STORY_REDIS_DB: u32 = 7;
/// Redis indexes from `STORY_REDIS_DB` on that this test may use (7–14).
const STORY_REDIS_DBS: u32 = 8;
/// Stories of one engine run side by side (`STORY_PARALLEL` overrides):
/// they mostly wait for the simulator and the settling gateway.
const STORY_PARALLEL: usize = 5;
/// Simulator latency in the calm profile, and how long it holds a call it
/// never answers.
const CALM_LATENCY_MS: (u64, u64) = (50, 400);
const SIM_HANG_MS: u64 = 500;
const SIM_SLOW_MS: u64 = 1_000;
/// After a PostgreSQL restart, how long a 503 is still excused (pools
/// notice dead connections as they use them).
const DB_GRACE: Duration = Duration::from_secs(10);
/// Longest the gateway may take to settle once the faults stopped (the
/// not-sent retry backoff and the 60 s hold of a crashed status query fit).
const SETTLE_WITHIN: Duration = Duration::from_secs(150);
/// After settling, how long UNKNOWN top-ups get to be resolved by the
/// status query before the rest is counted as "UNKNOWN left".
const UNKNOWN_GRACE: Duration = Duration::from_secs(15);
/// Longest one private-cluster command (`initdb`, `pg_ctl restart`) may run.
const PG_CMD_WITHIN: Duration = Duration::from_secs(120);
/// Mixed into the seed of the reactions' RNG.
const REACT_SEED_SALT: u64 = 0x05EE_D0F0_EAC7;
/// SIGABRT: how a failpoint ends a process.
const SIGABRT: i32 = 6;
/// The crash site of the operator CLI; the others belong to the gateway.
const CLI_SITE: &str = "adjust.before_commit";
/// The crash site of `recarga import legacy`.
const IMPORT_SITE: &str = "import.before_commit@2";
/// Transactions of the old system's busiest customer in a story's import.
const OLD_SYSTEM_ROWS: i64 = 60;

/// A small old-system database on the machine's PostgreSQL (read only for
/// the import), or `None` without `TEST_DATABASE_URL`.
async fn old_system_database() -> Option<String> {
    let admin = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty())?;
    let name = format!(
        "{}old_{}",
        recarga_store::testing::TEST_DB_PREFIX,
        uuid::Uuid::now_v7().simple()
    );
    let pool = sqlx::PgPool::connect(&admin).await.expect("connect admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create the old database");
    let url = recarga_store::testing::replace_db_name(&admin, &name);
    let old = sqlx::PgPool::connect(&url).await.expect("connect old");
    let sql = format!(
        "{}{}",
        recarga_testkit::legacy::OLD_SCHEMA,
        recarga_testkit::legacy::old_data(OLD_SYSTEM_ROWS)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&old)
        .await
        .expect("fill the old database");
    Some(url)
}
/// Face values the stories buy (MXN, XOOM denominations).
const FACES: [&str; 4] = ["10", "20", "50", "100"];
/// Sandbox scripts (last three digits) other than plain success.
const SCRIPTS: [&str; 12] = [
    "991", "992", "981", "982", "989", "993", "994", "995", "996", "997", "998", "999",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds_arg: Option<u64> = None;
    let mut filters: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--seeds" => {
                i += 1;
                seeds_arg = args.get(i).and_then(|n| n.parse().ok());
                if seeds_arg.is_none() {
                    eprintln!("--seeds takes a number");
                    return ExitCode::FAILURE;
                }
            }
            "--list" => {
                if !args.iter().any(|a| a == "--ignored") {
                    println!("story: test");
                }
                return ExitCode::SUCCESS;
            }
            // libtest options that take a value: skip it.
            "--test-threads" | "--color" | "--format" | "--skip" | "--logfile" | "-Z" | "--shuffle-seed" => i += 1,
            _ if a.starts_with("--seeds=") => seeds_arg = a["--seeds=".len()..].parse().ok(),
            _ if a.starts_with('-') => {}
            _ => filters.push(a.to_string()),
        }
        i += 1;
    }
    if args.iter().any(|a| a == "--ignored") || filters.iter().any(|f| !"story".contains(f.as_str())) {
        println!("running 0 tests (story: filtered out)");
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run_stories(seeds_arg))
}

/// The engines a story runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoryEngine {
    Sqlite,
    Postgres,
}

impl StoryEngine {
    fn name(self) -> &'static str {
        match self {
            StoryEngine::Sqlite => "sqlite",
            StoryEngine::Postgres => "postgres",
        }
    }
}

/// What the runs did, printed at the end.
#[derive(Debug, Default)]
struct Figures {
    stories: usize,
    ops: usize,
    requests: usize,
    http: BTreeMap<String, usize>,
    kills: usize,
    armed_restarts: usize,
    failpoint_aborts: BTreeMap<String, usize>,
    pg_restarts: usize,
    redis_wipes: usize,
    sim_profiles: usize,
    credits: usize,
    imported_resolutions: usize,
    topups: BTreeMap<String, usize>,
    unknown_left: usize,
    fail_but_delivered: usize,
    seconds: BTreeMap<&'static str, f64>,
}

/// One engine's stories, up to [`STORY_PARALLEL`] side by side (each
/// PostgreSQL story on a cluster and a Redis index of its own, so one story's
/// restarts and wipes never reach another); returns the failed ones' replay lines.
async fn run_engine(
    engine: StoryEngine,
    seeds: Vec<u64>,
    pg: Option<PathBuf>,
    redis: Option<RedisDb>,
    figures: Arc<Mutex<Figures>>,
    keep_going: bool,
) -> Vec<String> {
    let mut failed = Vec::new();
    let engine_began = Instant::now();
    let parallel = std::env::var("STORY_PARALLEL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(STORY_PARALLEL)
        .clamp(1, STORY_REDIS_DBS as usize);
    for chunk in seeds.chunks(parallel) {
        let mut runs = tokio::task::JoinSet::new();
        for (slot, &seed) in chunk.iter().enumerate() {
            let pg = pg.clone();
            let redis = redis.as_ref().map(|r| r.with_db(STORY_REDIS_DB + slot as u32));
            let figures = figures.clone();
            runs.spawn(async move {
                let story_began = Instant::now();
                let cluster = match engine {
                    StoryEngine::Postgres => Some(Arc::new(PgCluster::start(pg.expect("binaries found")).await)),
                    StoryEngine::Sqlite => None,
                };
                let outcome = tokio::spawn(story(seed, engine, cluster, redis, figures)).await;
                (seed, story_began.elapsed(), outcome)
            });
        }
        while let Some(joined) = runs.join_next().await {
            let Ok((seed, took, outcome)) = joined else {
                failed.push(format!("a story task of {} panicked", engine.name()));
                continue;
            };
            let replay = format!("STORY_SEED={seed} STORY_ENGINE={}", engine.name());
            match outcome {
                Ok(violations) if violations.is_empty() => {
                    println!("story {} seed {seed}: ok in {:.1} s", engine.name(), took.as_secs_f64())
                }
                Ok(violations) => {
                    eprintln!(
                        "\nstory FAILED: {replay}\n  {}\n\nreplay: {replay} cargo test -p recarga-server --test story -- --nocapture",
                        violations.join("\n  ")
                    );
                    failed.push(replay);
                }
                Err(e) => {
                    eprintln!(
                        "\nstory FAILED (panic: {e}): {replay}\nreplay: {replay} cargo test -p recarga-server --test story -- --nocapture"
                    );
                    failed.push(replay);
                }
            }
        }
        if !failed.is_empty() && !keep_going {
            break;
        }
    }
    let spent = engine_began.elapsed().as_secs_f64();
    figures.lock().expect("figures").seconds.insert(engine.name(), spent);
    failed
}

async fn run_stories(seeds_arg: Option<u64>) -> ExitCode {
    assert_failpoints_compiled();
    let env_u64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env_u64("STORY_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = seeds_arg.or_else(|| env_u64("STORY_SEEDS")).unwrap_or(DEFAULT_SEEDS);
            let base: u64 = rand::random_range(1..1_000_000_000);
            (base..base + n).collect()
        }
    };
    let only = std::env::var("STORY_ENGINE").ok();
    let mut engines = vec![StoryEngine::Sqlite];
    let pg = match PgCluster::find_bin() {
        Some(bin) => {
            engines.push(StoryEngine::Postgres);
            Some(bin)
        }
        None => {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
                eprintln!("story: CI is set but no PostgreSQL binaries under /usr/lib/postgresql/*/bin");
                println!(
                    "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
                );
                return ExitCode::FAILURE;
            }
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 story: SKIPPING the PostgreSQL stories: no initdb/pg_ctl under\n\
                 /usr/lib/postgresql/*/bin (install PostgreSQL; CI fails here)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    };
    engines.retain(|e| only.as_deref().is_none_or(|o| o == e.name()));
    let redis = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| RedisDb::from_url(&u, STORY_REDIS_DB));
    println!(
        "story: seeds {seeds:?} on {:?}{}",
        engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
        if redis.is_some() {
            format!(" (PostgreSQL with Redis dbs from {STORY_REDIS_DB}, one per story running)")
        } else {
            String::new()
        }
    );
    // `STORY_KEEP_GOING=1`: run every seed even after one failed (the run
    // still fails), to see which kinds of violation a change leaves.
    let keep_going = std::env::var("STORY_KEEP_GOING").is_ok_and(|v| v == "1");
    let mut failed: Vec<String> = Vec::new();
    let began = Instant::now();
    let figures = Arc::new(Mutex::new(Figures::default()));
    // The engines run side by side, and so do the seeds of one engine
    // (their stories share nothing: SQLite files, private PostgreSQL
    // clusters, Redis indexes of their own).
    let mut runs = tokio::task::JoinSet::new();
    for engine in engines {
        let seeds = seeds.clone();
        let redis = redis.clone().filter(|_| engine == StoryEngine::Postgres);
        let pg = pg.clone();
        let figures = figures.clone();
        runs.spawn(async move { run_engine(engine, seeds, pg, redis, figures, keep_going).await });
    }
    while let Some(joined) = runs.join_next().await {
        match joined {
            Ok(engine_failed) => failed.extend(engine_failed),
            Err(e) => failed.push(format!("an engine's run panicked: {e}")),
        }
    }
    let f = figures.lock().expect("figures");
    println!(
        "story figures: {} seeds, {} stories in {:.1} s ({}); {} operations, {} top-up requests, HTTP {:?}; \
         {} SIGKILLs, {} armed restarts, failpoint aborts {:?}; {} PostgreSQL restarts; {} Redis wipes; \
         {} simulator profiles; {} operator credits; {} imported UNKNOWNs resolved; top-ups by final status {:?}; \
         {} FAILED-but-delivered (989); {} UNKNOWN left",
        seeds.len(),
        f.stories,
        began.elapsed().as_secs_f64(),
        f.seconds
            .iter()
            .map(|(e, s)| format!("{e} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", "),
        f.ops,
        f.requests,
        f.http,
        f.kills,
        f.armed_restarts,
        f.failpoint_aborts,
        f.pg_restarts,
        f.redis_wipes,
        f.sim_profiles,
        f.credits,
        f.imported_resolutions,
        f.topups,
        f.fail_but_delivered,
        f.unknown_left
    );
    // The closing line of libtest, for whoever reads test output.
    let secs = began.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s");
        ExitCode::SUCCESS
    } else {
        eprintln!("story: {} failed: {}", failed.len(), failed.join(", "));
        println!(
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s"
        );
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------
// Infrastructure of a story: a private PostgreSQL cluster, a Redis index.
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster of this test only, run as the `postgres` user.
struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PgCluster {
    /// The newest `/usr/lib/postgresql/<v>/bin` with `initdb` and `pg_ctl`.
    fn find_bin() -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    }

    fn tool(&self, name: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
        cmd
    }

    /// Runs a cluster tool within [`PG_CMD_WITHIN`]. Its output goes to a
    /// file: a server that `pg_ctl` starts inherits the tool's descriptors,
    /// so a pipe would never reach end-of-file.
    async fn run_ok(&self, mut cmd: std::process::Command, what: &str) {
        let out = self.dir.join("tools.out");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .expect("tools.out");
        cmd.stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let status = tokio::time::timeout(PG_CMD_WITHIN, cmd.status())
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish within {PG_CMD_WITHIN:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(status.success(), "{what} failed ({status}):\n{text}");
    }

    async fn start(bin: PathBuf) -> PgCluster {
        let dir = temp_dir("story-pg");
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown {dir:?} to postgres");
        let cluster = PgCluster {
            bin,
            dir,
            port: free_port(),
        };
        let mut initdb = cluster.tool("initdb");
        initdb.arg("-D").arg(cluster.dir.join("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        cluster.run_ok(initdb, "initdb").await;
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c max_connections=200",
            cluster.port,
            cluster.dir.display()
        );
        let mut start = cluster.pg_ctl();
        start
            .arg("-l")
            .arg(cluster.dir.join("log"))
            .args(["-o", &opts, "start"]);
        cluster.run_ok(start, "pg_ctl start").await;
        cluster
    }

    fn pg_ctl(&self) -> std::process::Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D").arg(self.dir.join("data")).args(["-w", "-t", "60"]);
        cmd
    }

    /// `pg_ctl restart -m fast`: every connection is cut, then it comes back.
    async fn restart(&self) {
        let mut cmd = self.pg_ctl();
        cmd.args(["-m", "fast", "restart"]);
        self.run_ok(cmd, "pg_ctl restart").await;
    }

    /// A new empty database; returns its URL.
    async fn create_db(&self, name: &str) -> String {
        let mut cmd = self.tool("createdb");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name]);
        self.run_ok(cmd, "createdb").await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut cmd = self.pg_ctl();
        cmd.args(["-m", "immediate", "stop"]);
        let _ = cmd.stdout(std::process::Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis database index of this test on the `TEST_REDIS_URL` server.
#[derive(Debug, Clone)]
struct RedisDb {
    url: String,
    addr: String,
    db: u32,
}

impl RedisDb {
    /// The same server, another index.
    fn with_db(&self, db: u32) -> RedisDb {
        let host_port = self
            .url
            .trim_start_matches("redis://")
            .rsplit_once('/')
            .map_or("", |(h, _)| h);
        RedisDb::from_url(&format!("redis://{host_port}"), db)
    }

    fn from_url(url: &str, db: u32) -> RedisDb {
        let rest = url.trim_start_matches("redis://");
        let host_port = rest.split('/').next().unwrap_or(rest);
        let addr = host_port.rsplit('@').next().unwrap_or(host_port).to_string();
        RedisDb {
            url: format!("redis://{host_port}/{db}"),
            addr,
            db,
        }
    }

    /// `FLUSHDB` on our index only (a `FLUSHALL` would empty index 0 too,
    /// which other suites share).
    async fn wipe(&self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&self.addr))
            .await
            .expect("Redis connect within 5 s")
            .expect("Redis connect");
        conn.write_all(format!("SELECT {}\r\nFLUSHDB\r\n", self.db).as_bytes())
            .await
            .expect("write to Redis");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.windows(5).filter(|w| w == b"+OK\r\n").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "Redis FLUSHDB: {:?}",
                String::from_utf8_lossy(&got)
            );
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("Redis answers")
                .expect("read from Redis");
            assert!(n > 0, "Redis closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
}

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------

/// What kind of request the story meant to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// A valid new top-up, or a duplicate of one.
    Topup,
    /// Bad input: must be a 4xx and store nothing.
    Bad,
}

/// One HTTP request and what came back.
#[derive(Debug, Clone)]
struct Req {
    customer: String,
    reference: Option<String>,
    body: Value,
    intent: Intent,
    wait: Option<u64>,
    began: Instant,
    ended: Instant,
    /// `None`: no answer (the process died, or was not there).
    status: Option<u16>,
    answer: Value,
}

/// One operator credit and what the CLI said.
#[derive(Debug, Clone)]
struct Credit {
    customer: String,
    reason: String,
    armed: bool,
    began: Instant,
    ended: Instant,
    out: CliRun,
}

/// One story: one seed on one engine.
struct Story {
    seed: u64,
    engine: StoryEngine,
    /// Draws the operations: the same seed, the same operations.
    rng: StdRng,
    /// Draws reactions to what happened (how to restart a gateway that died
    /// at its crash site), so that timing never shifts the operations.
    react_rng: StdRng,
    rig: Rig,
    store: Option<Arc<dyn Store>>,
    redis: Option<RedisDb>,
    gateway: Option<Gateway>,
    generation: usize,
    customers: Vec<(String, String)>,
    requests: Arc<Mutex<Vec<Req>>>,
    inflight: tokio::task::JoinSet<()>,
    credits: Vec<Credit>,
    /// PostgreSQL restarts: (began, ended).
    db_windows: Vec<(Instant, Instant)>,
    figures: Arc<Mutex<Figures>>,
    violations: Vec<String>,
    http: reqwest::Client,
    next_ref: usize,
    /// Customers imported from an old-system database at the start.
    imported: Vec<String>,
}

async fn story(
    seed: u64,
    engine: StoryEngine,
    cluster: Option<Arc<PgCluster>>,
    redis: Option<RedisDb>,
    figures: Arc<Mutex<Figures>>,
) -> Vec<String> {
    let work = temp_dir("story");
    let (db_url, store) = match (&cluster, engine) {
        (Some(c), StoryEngine::Postgres) => (
            c.create_db(&format!("story_{seed}_{}", uuid::Uuid::now_v7().simple()))
                .await,
            None,
        ),
        _ => {
            let db = fresh(Engine::Sqlite).await;
            (db.url.clone(), Some(db.store.clone()))
        }
    };
    let sim_config = json!({ "hang_ms": SIM_HANG_MS, "slow_ms": SIM_SLOW_MS });
    let latency = format!("{}-{}", CALM_LATENCY_MS.0, CALM_LATENCY_MS.1);
    let sim = start_sim(&work, &latency, Some(&sim_config)).await;
    let rig = Rig {
        work,
        db_url,
        redis: redis.as_ref().map(|r| {
            let prefix = format!("story-{seed}-{}:", uuid::Uuid::now_v7().simple());
            (r.url.clone(), prefix)
        }),
        sim,
        env: vec![
            // Blocked or empty-wallet spells can outlast this: the expiry of
            // never-sent top-ups joins the story.
            ("RECARGA_PENDING_MAX_AGE_S".into(), STORY_PENDING_MAX_AGE_S.to_string()),
            ("LATCOM_WALLET_PROBE_S".into(), "1".into()),
        ],
    };
    let mut s = Story {
        seed,
        engine,
        rng: StdRng::seed_from_u64(seed),
        react_rng: StdRng::seed_from_u64(seed ^ REACT_SEED_SALT),
        rig,
        store,
        redis,
        gateway: None,
        generation: 0,
        customers: Vec::new(),
        requests: Arc::new(Mutex::new(Vec::new())),
        inflight: tokio::task::JoinSet::new(),
        credits: Vec::new(),
        db_windows: Vec::new(),
        figures,
        violations: Vec::new(),
        http: client(),
        next_ref: 0,
        imported: Vec::new(),
    };
    if s.engine == StoryEngine::Postgres {
        let out = s.cli(&["migrate"], None).await;
        assert!(out.ok(), "migrate: {out:?}");
    }
    for _ in 0..2 {
        s.create_customer().await;
    }
    s.import_old_system().await;
    s.start_gateway(None).await;
    for _ in 0..STORY_OPS {
        s.op(cluster.as_deref()).await;
        s.check_gateway().await;
    }
    s.finish().await;
    s.violations
}

impl Story {
    fn tag(&self) -> String {
        format!("seed {} {}", self.seed, self.engine.name())
    }

    async fn cli(&self, args: &[&str], failpoint: Option<&str>) -> CliRun {
        self.rig.cli(args, failpoint).await
    }

    /// The gateways' log lines that mention `needle`, for failure messages.
    fn log_lines(&self, needle: &str) -> String {
        let mut out = String::new();
        for generation in 1..=self.generation {
            let path = self.rig.work.join(format!("gateway-{generation}.stderr"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains(needle)).take(3) {
                out.push_str("\n      ");
                out.push_str(line);
            }
        }
        out
    }

    fn in_db_window(&self, began: Instant, ended: Instant) -> bool {
        self.db_windows
            .iter()
            .any(|&(a, b)| began <= b + DB_GRACE && ended >= a)
    }

    /// Imports a small old-system database (PostgreSQL only), sometimes
    /// crashing inside the second customer's import first; the re-run
    /// must complete it and tie out.
    async fn import_old_system(&mut self) {
        let Some(old) = old_system_database().await else { return };
        let args = [
            "import",
            "legacy",
            "--from",
            &old,
            "--fx-rate-for",
            "USD=17.80",
            "--currency",
            "HAZ_001=MXN",
        ];
        if self.rng.random_bool(0.3) {
            let out = self.cli(&args, Some(IMPORT_SITE)).await;
            if out.signal == Some(SIGABRT) {
                *self
                    .figures
                    .lock()
                    .expect("figures")
                    .failpoint_aborts
                    .entry(IMPORT_SITE.to_string())
                    .or_default() += 1;
            }
        }
        let out = self.cli(&args, None).await;
        if !out.ok() || out.json["ok"] != json!(true) {
            self.violations.push(format!("{}: import legacy: {out:?}", self.tag()));
        }
        self.imported = ["ENVIADESPENSA_001", "HAZ_001", "SMARTBIZ_001"]
            .map(String::from)
            .to_vec();
    }

    /// An operator settles an imported UNKNOWN (an old PENDING row) either
    /// way, sometimes crashing inside the resolution.
    async fn resolve_imported(&mut self) {
        let listed = self.cli(&["topup", "unresolved"], None).await;
        let ids: Vec<String> = listed.json["topups"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|t| t["id"].as_str())
                    .filter(|id| recarga_domain::is_legacy_id(id))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.random_range(0..ids.len())].clone();
        let outcome = if self.rng.random_bool(0.5) { "success" } else { "failed" };
        let armed = self.rng.random_bool(0.25).then_some("resolve.before_commit");
        let args = [
            "topup",
            "resolve",
            "--id",
            &id,
            "--outcome",
            outcome,
            "--reason",
            "story: old statement",
        ];
        let out = self.cli(&args, armed).await;
        if armed.is_none() && !out.ok() {
            self.violations
                .push(format!("{}: resolving imported {id}: {out:?}", self.tag()));
        }
        self.figures.lock().expect("figures").imported_resolutions += 1;
    }

    fn fresh_ref(&mut self) -> String {
        self.next_ref += 1;
        format!("s{}-r{}", self.seed, self.next_ref)
    }

    fn phone(&mut self) -> String {
        let middle: u32 = self.rng.random_range(0..100_000);
        let last3 = if self.rng.random_bool(0.3) {
            SCRIPTS[self.rng.random_range(0..SCRIPTS.len())].to_string()
        } else {
            format!("{:03}", self.rng.random_range(0..900u32))
        };
        format!("55{middle:05}{last3}")
    }

    async fn create_customer(&mut self) {
        if self.customers.len() >= CUSTOMERS_MAX {
            return;
        }
        let id = format!("S{}C{}", self.seed, self.customers.len() + 1);
        let out = self
            .cli(
                &[
                    "customer",
                    "create",
                    "--id",
                    &id,
                    "--name",
                    &id,
                    "--credit",
                    CUSTOMER_CREDIT_MXN,
                ],
                None,
            )
            .await;
        if out.ok() {
            let key = out.json["api_key"].as_str().expect("api_key").to_string();
            self.customers.push((id, key));
        } else {
            // Only a database restart excuses a refusal; the id may then exist.
            assert!(
                !self.db_windows.is_empty(),
                "{}: customer create failed: {out:?}",
                self.tag()
            );
        }
    }

    /// Starts `recarga serve` (armed with `failpoint` if given); it answers
    /// `/health` or has died when this returns.
    async fn start_gateway(&mut self, failpoint: Option<String>) {
        self.generation += 1;
        let name = format!("gateway-{}", self.generation);
        self.gateway = Some(self.rig.start_gateway(&name, failpoint).await);
    }

    /// If the gateway died: by its armed site is fine (counted), anything
    /// else is a violation. Then it is started again.
    async fn check_gateway(&mut self) {
        let Some(gw) = self.gateway.as_mut() else { return };
        let Some(status) = gw.proc.exited() else { return };
        let armed = gw.armed.clone();
        let site = armed.as_deref().map(|a| a.split('@').next().unwrap_or(a).to_string());
        let hit = site
            .as_ref()
            .is_some_and(|s| gw.proc.stderr_text().contains(&format!("failpoint {s} hit")));
        if status.signal() == Some(SIGABRT) && hit {
            let site = site.expect("armed");
            *self
                .figures
                .lock()
                .expect("figures")
                .failpoint_aborts
                .entry(site)
                .or_default() += 1;
        } else {
            let logs = gw.proc.logs();
            self.violations.push(format!(
                "{}: the gateway died by itself ({status}):\n{logs}",
                self.tag()
            ));
        }
        let again = pick_armed_site(&mut self.react_rng, 0.3);
        self.start_gateway(again).await;
    }

    /// Sends one request in the background; the answer goes to the model.
    fn send(&mut self, customer: usize, body: Value, raw: Option<&'static str>, intent: Intent, wait: Option<u64>) {
        let Some(gw) = self.gateway.as_ref() else { return };
        let (customer, key) = self.customers[customer].clone();
        let url = format!("{}/v1/topups", gw.base);
        let http = self.http.clone();
        let requests = self.requests.clone();
        let reference = body["reference"].as_str().map(str::to_string);
        self.inflight.spawn(async move {
            let began = Instant::now();
            let mut req = http.post(url).bearer_auth(key);
            req = match raw {
                Some(text) => req.header("content-type", "application/json").body(text),
                None => req.json(&body),
            };
            if let Some(w) = wait {
                req = req.header("Prefer", format!("wait={w}"));
            }
            let (status, answer) = match req.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    (Some(status), res.json().await.unwrap_or(Value::Null))
                }
                Err(_) => (None, Value::Null),
            };
            requests.lock().expect("model").push(Req {
                customer,
                reference,
                body,
                intent,
                wait,
                began,
                ended: Instant::now(),
                status,
                answer,
            });
        });
        self.figures.lock().expect("figures").requests += 1;
    }

    /// One random operation.
    async fn op(&mut self, cluster: Option<&PgCluster>) {
        self.figures.lock().expect("figures").ops += 1;
        let roll: u32 = self.rng.random_range(0..100);
        let customer = self.rng.random_range(0..self.customers.len());
        match roll {
            // A new top-up, async or synchronous.
            0..=39 => {
                let reference = self.fresh_ref();
                let phone = self.phone();
                let face = FACES[self.rng.random_range(0..FACES.len())];
                let wait = self.rng.random_bool(0.35).then(|| self.rng.random_range(1..=5));
                let body = json!({ "phone": phone, "amount": face, "reference": reference });
                self.send(customer, body, None, Intent::Topup, wait);
            }
            // The same reference again: the same body (a retry) or another.
            40..=51 => {
                let earlier: Vec<Req> = self
                    .requests
                    .lock()
                    .expect("model")
                    .iter()
                    .filter(|r| r.intent == Intent::Topup)
                    .cloned()
                    .collect();
                if earlier.is_empty() {
                    return;
                }
                let r = earlier[self.rng.random_range(0..earlier.len())].clone();
                let at = self
                    .customers
                    .iter()
                    .position(|(id, _)| *id == r.customer)
                    .expect("known customer");
                let mut body = r.body.clone();
                if self.rng.random_bool(0.3) {
                    let other = if body["amount"] == "10" { "20" } else { "10" };
                    body["amount"] = json!(other);
                }
                let wait = self.rng.random_bool(0.3).then(|| self.rng.random_range(1..=3));
                self.send(at, body, None, Intent::Topup, wait);
            }
            // Bad input.
            52..=57 => {
                let reference = self.fresh_ref();
                let bad: [(Value, Option<&'static str>); 8] = [
                    (json!({ "phone": "123", "amount": "20", "reference": reference }), None),
                    (
                        json!({ "phone": "5512345678", "amount": "abc", "reference": reference }),
                        None,
                    ),
                    (
                        json!({ "phone": "5512345678", "amount": "-5", "reference": reference }),
                        None,
                    ),
                    (
                        json!({ "phone": "5512345678", "amount": "10.001", "reference": reference }),
                        None,
                    ),
                    (json!({ "phone": "5512345678", "amount": "20" }), None),
                    (json!({ "phone": "5512345678", "amount": "20", "reference": "" }), None),
                    (
                        json!({ "phone": "5512345678", "amount": "9999999", "reference": reference }),
                        None,
                    ),
                    (json!({ "reference": reference }), Some("{\"phone\": \"55123")),
                ];
                let (body, raw) = bad[self.rng.random_range(0..bad.len())].clone();
                self.send(customer, body, raw, Intent::Bad, None);
            }
            // Operator credit or debit, sometimes crashing inside it.
            58..=64 => {
                let armed = self.rng.random_bool(0.25);
                let amount = ["100", "250", "-20", "-1000000"][self.rng.random_range(0..4)];
                let (id, _) = self.customers[customer].clone();
                let reason = format!("story-{}-{}", self.seed, self.credits.len());
                let began = Instant::now();
                let out = self
                    .cli(
                        &[
                            "customer", "credit", "--id", &id, "--amount", amount, "--reason", &reason,
                        ],
                        armed.then_some(CLI_SITE),
                    )
                    .await;
                if armed && out.signal == Some(SIGABRT) {
                    *self
                        .figures
                        .lock()
                        .expect("figures")
                        .failpoint_aborts
                        .entry(CLI_SITE.to_string())
                        .or_default() += 1;
                }
                self.figures.lock().expect("figures").credits += 1;
                self.credits.push(Credit {
                    customer: id,
                    reason,
                    armed,
                    began,
                    ended: Instant::now(),
                    out,
                });
            }
            65..=66 => self.create_customer().await,
            // SIGKILL the gateway; restart it clean or armed.
            67..=74 => {
                if let Some(mut gw) = self.gateway.take() {
                    if gw.proc.exited().is_none() {
                        gw.proc.sigkill().expect("SIGKILL");
                        self.figures.lock().expect("figures").kills += 1;
                    } else {
                        self.gateway = Some(gw);
                        return;
                    }
                }
                let armed = pick_armed_site(&mut self.rng, 0.5);
                if armed.is_some() {
                    self.figures.lock().expect("figures").armed_restarts += 1;
                }
                self.start_gateway(armed).await;
            }
            // Restart PostgreSQL (top-ups in flight meanwhile).
            75..=79 => {
                let Some(cluster) = cluster else { return };
                for _ in 0..3 {
                    let reference = self.fresh_ref();
                    let phone = self.phone();
                    let body = json!({ "phone": phone, "amount": "10", "reference": reference });
                    self.send(customer, body, None, Intent::Topup, Some(2));
                }
                let began = Instant::now();
                cluster.restart().await;
                self.db_windows.push((began, Instant::now()));
                self.figures.lock().expect("figures").pg_restarts += 1;
            }
            // Wipe Redis.
            80..=83 => {
                let Some(redis) = &self.redis else { return };
                redis.wipe().await;
                self.figures.lock().expect("figures").redis_wipes += 1;
            }
            // A simulator fault profile.
            84..=89 => {
                let profile = match self.rng.random_range(0..8) {
                    0 => json!({ "latency_min_ms": 1500, "latency_max_ms": 2600 }),
                    1 => json!({ "status_mode": "off" }),
                    2 => json!({ "status_mode": "unrecognised" }),
                    3 => json!({ "status_by_dist_transid": false }),
                    4 => json!({ "duplicate_policy": "redeliver" }),
                    5 => json!({ "ip_blocked": true }),
                    6 => json!({ "wallet_empty": true }),
                    _ => calm_profile(),
                };
                self.rig.sim.configure(&profile).await.expect("configure the simulator");
                self.figures.lock().expect("figures").sim_profiles += 1;
            }
            // An operator settles an old PENDING row imported from the old system.
            90..=91 if !self.imported.is_empty() => self.resolve_imported().await,
            // Let things happen.
            _ => {
                let ms = self.rng.random_range(100..1500);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let ms = self.rng.random_range(0..150);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Stops the faults, settles, and checks everything against the model.
    async fn finish(&mut self) {
        let tag = self.tag();
        while self.inflight.join_next().await.is_some() {}
        self.check_gateway().await;
        if self.gateway.as_ref().is_some_and(|g| g.armed.is_some()) {
            let mut gw = self.gateway.take().expect("gateway");
            gw.proc.sigkill().expect("SIGKILL");
            self.check_gateway().await;
            self.start_gateway(None).await;
        }
        self.rig
            .sim
            .configure(&calm_profile())
            .await
            .expect("configure the simulator");
        let store = match &self.store {
            Some(s) => s.clone(),
            None => recarga_store::connect(&self.rig.db_url)
                .await
                .expect("connect to the story database"),
        };
        let gw_logs = || self.gateway.as_ref().map(|g| g.proc.logs()).unwrap_or_default();
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let c = store.queue_counts().await.expect("queue counts");
            if c.pending + c.delayed + c.processing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{tag}: not settled within {SETTLE_WITHIN:?}: {c:?}\n{}",
                gw_logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let grace = Instant::now() + UNKNOWN_GRACE;
        while store.queue_counts().await.expect("queue counts").unknown > 0 && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Some(gw) = self.gateway.as_mut()
            && let Some(status) = gw.proc.exited()
        {
            self.violations.push(format!(
                "{tag}: the gateway died while settling ({status}):\n{}",
                gw.proc.logs()
            ));
        }

        // The books, against the simulator's journal.
        let unresolved = self.cli(&["topup", "unresolved"], None).await;
        assert!(unresolved.ok(), "{tag}: recarga topup unresolved: {unresolved:?}");
        let journal = self.rig.sim.journal().await.expect("journal");
        let mut ids: Vec<String> = self.customers.iter().map(|(id, _)| id.clone()).collect();
        ids.extend(self.imported.iter().cloned());
        let books = check_books(store.as_ref(), &ids, &journal, &unresolved.json).await;
        self.violations
            .extend(books.violations.iter().map(|v| format!("{tag}: {v}")));
        let audit = self.cli(&["audit"], None).await;
        if !audit.ok() || audit.json["clean"] != json!(true) {
            self.violations.push(format!("{tag}: recarga audit: {audit:?}"));
        }

        // Every request against the model.
        let requests = self.requests.lock().expect("model").clone();
        let mut by_ref: BTreeMap<(String, String), Vec<&Req>> = BTreeMap::new();
        for r in &requests {
            let code = r.status.map_or("none".to_string(), |s| s.to_string());
            *self.figures.lock().expect("figures").http.entry(code).or_default() += 1;
            if let Some(status) = r.status
                && status >= 500
            {
                let excused = status == 503 && r.answer["code"] == "unavailable" && self.in_db_window(r.began, r.ended);
                if !excused {
                    let request_id = r.answer["request_id"].as_str().unwrap_or("?");
                    self.violations.push(format!(
                        "{tag}: HTTP {status} {} (only 503 `unavailable` while PostgreSQL restarts is excused): {} -> {}{}",
                        if self.in_db_window(r.began, r.ended) {
                            "during a PostgreSQL restart"
                        } else {
                            "with the database up"
                        },
                        r.body,
                        r.answer,
                        self.log_lines(request_id)
                    ));
                }
            }
            if let Some(reference) = &r.reference {
                by_ref
                    .entry((r.customer.clone(), reference.clone()))
                    .or_default()
                    .push(r);
            }
        }
        for ((customer, reference), reqs) in &by_ref {
            let stored = store
                .find_topup_by_reference(customer, reference)
                .await
                .expect("find by reference");
            for r in reqs {
                let Some(status) = r.status else { continue };
                if r.intent == Intent::Bad && (200..300).contains(&status) {
                    self.violations.push(format!(
                        "{tag}: bad input accepted ({status}): {} -> {}",
                        r.body, r.answer
                    ));
                }
                if (200..300).contains(&status) {
                    let id = r.answer["id"].as_str().unwrap_or_default();
                    match &stored {
                        Some(t) if t.id == id => {
                            let same_body = t.phone.as_str().ends_with(r.body["phone"].as_str().unwrap_or("?"))
                                && r.body["amount"]
                                    .as_str()
                                    .and_then(|a| recarga_domain::Money::parse_decimal(a).ok())
                                    == Some(t.face_value);
                            // A final answer is the final truth (never a false FAILED).
                            let said = r.answer["status"].as_str().unwrap_or_default();
                            if matches!(said, "SUCCESS" | "FAILED") && said != t.status.to_string() {
                                self.violations.push(format!(
                                    "{tag}: {reference}: answered {said} (wait {:?}) but ended {}",
                                    r.wait, t.status
                                ));
                            }
                            if !same_body {
                                self.violations.push(format!(
                                    "{tag}: {reference}: answered {id} for body {} but it stores {} {}",
                                    r.body, t.phone, t.face_value
                                ));
                            }
                        }
                        _ => self.violations.push(format!(
                            "{tag}: {customer}/{reference}: answered {status} {id} but stores {:?}",
                            stored.as_ref().map(|t| &t.id)
                        )),
                    }
                }
            }
            // A retry of the stored body is never refused as a reused reference.
            if let Some(t) = &stored {
                for r in reqs.iter().filter(|r| r.answer["code"] == "reference_reused") {
                    let same = t.phone.as_str().ends_with(r.body["phone"].as_str().unwrap_or("?"))
                        && r.body["amount"]
                            .as_str()
                            .and_then(|a| recarga_domain::Money::parse_decimal(a).ok())
                            == Some(t.face_value);
                    if same {
                        self.violations.push(format!(
                            "{tag}: {reference}: the stored body was refused as reference_reused: {}",
                            r.body
                        ));
                    }
                }
            }
            if reqs.iter().all(|r| r.intent == Intent::Bad) && stored.is_some() {
                self.violations
                    .push(format!("{tag}: {customer}/{reference}: bad input stored a top-up"));
            }
        }

        // Operator credits: once if the CLI said so, never if it aborted.
        for c in &self.credits {
            let n = store
                .ledger(&c.customer, 1_000_000)
                .await
                .expect("ledger")
                .iter()
                .filter(|e| e.reason.as_deref() == Some(c.reason.as_str()))
                .count();
            let aborted = c.out.signal == Some(SIGABRT);
            let excused = self.in_db_window(c.began, c.ended);
            let ok = match (c.out.ok(), aborted) {
                (true, _) => n == 1,
                (false, true) => n == 0,
                (false, false) => n == 0 || (excused && n <= 1),
            };
            if !ok {
                self.violations.push(format!(
                    "{tag}: credit {} (armed {}) left {n} ledger entries after {:?}",
                    c.reason, c.armed, c.out
                ));
            }
            if c.armed && !aborted && c.out.ok() {
                self.violations.push(format!(
                    "{tag}: the armed credit {} did not reach its site: {:?}",
                    c.reason, c.out
                ));
            }
        }

        let mut f = self.figures.lock().expect("figures");
        f.stories += 1;
        for (status, n) in &books.by_status {
            *f.topups.entry(status.clone()).or_default() += n;
        }
        f.unknown_left += books.by_status.get("UNKNOWN").copied().unwrap_or(0);
        f.fail_but_delivered += books.fail_but_delivered;
    }
}

/// With probability `p`, a gateway crash site `site@n`.
fn pick_armed_site(rng: &mut StdRng, p: f64) -> Option<String> {
    if !rng.random_bool(p) {
        return None;
    }
    let sites: Vec<&str> = SITES.iter().copied().filter(|s| *s != CLI_SITE).collect();
    let site = sites[rng.random_range(0..sites.len())];
    let nth: u32 = rng.random_range(1..=3);
    Some(format!("{site}@{nth}"))
}

/// The simulator at its kindest: every fault profile undone.
fn calm_profile() -> Value {
    json!({
        "latency_min_ms": CALM_LATENCY_MS.0,
        "latency_max_ms": CALM_LATENCY_MS.1,
        "status_mode": "normal",
        "status_by_dist_transid": true,
        "duplicate_policy": "replay",
        "ip_blocked": false,
        "wallet_empty": false,
    })
}
