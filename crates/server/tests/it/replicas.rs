//! Scale tests: several real `recarga serve` processes on one PostgreSQL and
//! one Redis, all selling through ONE standalone Latcom simulator
//! (`recarga latcom-sim`), whose journal is the ground truth of what was
//! submitted and delivered.
//!
//! - three replicas submit each of 2,000 top-ups exactly once, and all of
//!   them do part of the work;
//! - a replica killed with SIGKILL mid-flight: its leased top-ups are rescued
//!   to UNKNOWN and resolved by the status query, nothing is sent twice;
//! - losing Redis (this test's own `redis-server`, killed and restarted) loses
//!   no top-up, `/health` follows it, and no replica serves a stale balance;
//! - the per-customer rate limit is shared across replicas, with the 429
//!   shape, and a customer's own setting overrides it;
//! - `/api/queue/stats` needs the operator key and keeps the old shape;
//! - a measurement (printed, not asserted): one replica against three, over
//!   a few customers (one customer's row lock caps the rate, see below).
//!
//! They need PostgreSQL and Redis: they run only when `TEST_DATABASE_URL` and
//! `TEST_REDIS_URL` are set, and otherwise say so and return. Every test gets
//! a fresh database, its own Redis key prefix and its own simulator; the tests
//! of this file run one at a time (they load the machine and measure time).
//! Every child gets a cleared environment and is killed on drop, even when a
//! test panics.

use crate::common::procs::{
    CliRun, Proc, Sim, all_topups, client, free_port, recarga, run, spawn, start_sim, wait_ready,
};
use futures::StreamExt;
use recarga_domain::{Money, TopupStatus};
use recarga_store::testing::{Engine, TestDb, fresh, temp_dir};
use recarga_store::{Store, Topup};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The operator secret every replica gets.
const ADMIN_KEY: &str = "replicas-test-admin-key-0123456789";
/// Client-side bound on concurrent requests.
const CLIENT_INFLIGHT_MAX: usize = 64;
/// Face value of every top-up in this file (MXN).
const FACE_MXN: i64 = 10;

/// The tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `TEST_REDIS_URL` when both PostgreSQL and Redis are configured; otherwise
/// prints why the test does nothing.
fn scale_env(test: &str) -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (set("TEST_DATABASE_URL"), set("TEST_REDIS_URL")) {
        (Some(_), Some(redis)) => Some(redis),
        _ => {
            crate::common::skipped(
                test,
                "the replica suite needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL (Redis)",
            );
            None
        }
    }
}

/// Settings of the replicas of one test.
#[derive(Debug, Clone)]
struct ReplicaOpts {
    concurrency: usize,
    lease_s: u64,
    upstream_timeout_s: u64,
    status_check_base_s: u64,
    rate_limit_per_s: u64,
}

impl Default for ReplicaOpts {
    fn default() -> Self {
        ReplicaOpts {
            concurrency: 64,
            lease_s: 30,
            upstream_timeout_s: 10,
            status_check_base_s: 1,
            rate_limit_per_s: 0,
        }
    }
}

/// One running `recarga serve`.
struct Replica {
    proc: Proc,
    base: String,
}

impl Replica {
    /// Its logs, for failure messages.
    fn logs(&self) -> String {
        // These tests only ever SIGKILL; a drain means a signal from outside.
        let note = if self.proc.stderr_text().contains("shutdown requested") {
            format!(
                "NOTE: {} was sent SIGTERM/SIGINT by something outside this test (it drained and exited)\n",
                self.proc.name
            )
        } else {
            String::new()
        };
        format!("{note}{}", self.proc.logs())
    }

    /// The worker owner this process leases top-ups as (`w-…`), from its log.
    fn worker_owner(&self) -> Option<String> {
        let text = self.proc.stderr_text();
        let line = text.lines().find(|l| l.contains("worker started"))?;
        let at = line.find("owner=")? + "owner=".len();
        let owner: String = line[at..]
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        owner.starts_with("w-").then_some(owner)
    }

    /// Lines of its log that record an upstream answer.
    fn upstream_answers(&self) -> usize {
        self.proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains("upstream answered"))
            .count()
    }

    async fn health(&self, http: &reqwest::Client) -> Option<Value> {
        let res = http.get(format!("{}/health", self.base)).send().await.ok()?;
        res.json().await.ok()
    }

    async fn redis_up(&self, http: &reqwest::Client) -> Option<bool> {
        self.health(http).await?["redis"]["up"].as_bool()
    }
}

fn all_logs(replicas: &[Replica]) -> String {
    replicas.iter().map(|r| r.logs()).collect::<Vec<_>>().join("\n")
}

/// One test's world: a fresh PostgreSQL database, a Redis prefix, a simulator.
struct Deployment {
    db: TestDb,
    work: PathBuf,
    redis_url: String,
    prefix: String,
    sim: Sim,
}

impl Deployment {
    async fn new(tag: &str, redis_url: &str, sim_latency_ms: &str) -> Deployment {
        let db = fresh(Engine::Postgres).await;
        let work = temp_dir(tag);
        let sim = start_sim(&work, sim_latency_ms, None).await;
        Deployment {
            db,
            work,
            redis_url: redis_url.to_string(),
            prefix: format!("recarga-{tag}-{}:", uuid::Uuid::now_v7().simple()),
            sim,
        }
    }

    fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    /// `recarga` with a cleared environment: this test's database and Redis only.
    fn command(&self) -> std::process::Command {
        let mut cmd = recarga(&self.work);
        cmd.env("RECARGA_DATA_DIR", self.work.join("data"))
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", &self.redis_url)
            .env("RECARGA_REDIS_PREFIX", &self.prefix);
        cmd
    }

    async fn cli(&self, args: &[&str]) -> CliRun {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd).await
    }

    async fn cli_ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args).await;
        assert!(
            out.code == Some(0),
            "recarga {args:?} exited {:?}: {}\n{}",
            out.code,
            out.stderr,
            out.stdout
        );
        assert!(out.json.is_object(), "recarga {args:?} printed no JSON object: {out:?}");
        out.json
    }

    /// Creates a customer with the CLI; returns its API key.
    async fn create_customer(&self, id: &str, credit_mxn: i64) -> String {
        let credit = credit_mxn.to_string();
        let out = self
            .cli_ok(&["customer", "create", "--id", id, "--name", id, "--credit", &credit])
            .await;
        out["api_key"].as_str().expect("api_key").to_string()
    }

    /// `recarga audit` exits 0 and reports a clean ledger.
    async fn assert_audit_clean(&self) {
        let audit = self.cli(&["audit"]).await;
        assert_eq!(audit.code, Some(0), "recarga audit failed: {audit:?}");
        assert_eq!(audit.json["clean"], json!(true), "{}", audit.stdout);
    }

    fn spawn_replica(&self, name: &str, opts: &ReplicaOpts) -> Replica {
        let port = free_port();
        let mut cmd = self.command();
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("ADMIN_KEY", ADMIN_KEY)
            .env("RECARGA_DEMO", "false")
            .envs(self.sim.gateway_env())
            .env("QUEUE_CONCURRENCY", opts.concurrency.to_string())
            .env("RECARGA_LEASE_S", opts.lease_s.to_string())
            .env("RECARGA_UPSTREAM_TIMEOUT_S", opts.upstream_timeout_s.to_string())
            .env("RECARGA_STATUS_CHECK_BASE_S", opts.status_check_base_s.to_string())
            .env("RECARGA_RATE_LIMIT_PER_S", opts.rate_limit_per_s.to_string());
        Replica {
            proc: spawn(cmd, &self.work, name),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts `n` replicas together and waits until each answers `/health`.
    async fn start_replicas(&self, n: usize, opts: &ReplicaOpts) -> Vec<Replica> {
        let mut replicas: Vec<Replica> = (0..n)
            .map(|i| self.spawn_replica(&format!("replica-{i}"), opts))
            .collect();
        for replica in &mut replicas {
            let health = format!("{}/health", replica.base);
            wait_ready(&mut replica.proc, &health, Some(StatusCode::OK)).await;
        }
        replicas
    }

    /// Polls the database until nothing is PENDING (due or delayed) or PROCESSING.
    async fn wait_settled(&self, within: Duration, replicas: &[Replica]) {
        let deadline = Instant::now() + within;
        loop {
            let c = self.store().queue_counts().await.expect("queue counts");
            if c.pending + c.delayed + c.processing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {} PENDING, {} delayed and {} PROCESSING after {within:?}: {c:?}\n{}",
                c.pending,
                c.delayed,
                c.processing,
                all_logs(replicas)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn balance(&self, customer: &str) -> Money {
        self.store()
            .get_customer(customer)
            .await
            .expect("get customer")
            .expect("customer exists")
            .balance
    }
}

fn count_status(topups: &[Topup], status: TopupStatus) -> usize {
    topups.iter().filter(|t| t.status == status).count()
}

fn status_summary(topups: &[Topup]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for t in topups {
        *out.entry(t.status.as_str()).or_insert(0) += 1;
    }
    out
}

/// How many times a top-up was claimed by a worker (PENDING → PROCESSING).
async fn claims(store: &dyn Store, id: &str) -> usize {
    store
        .events(id)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.to_status == "PROCESSING")
        .count()
}

/// Phones the simulator answers with success (last three digits below 900),
/// distinct for distinct `i`.
fn ok_phone(i: usize) -> String {
    format!("55{:05}{:03}", i, i % 900)
}

fn topup_body(phone: &str, reference: &str) -> Value {
    json!({ "phone": phone, "amount": FACE_MXN.to_string(), "reference": reference })
}

/// One request's answer.
#[derive(Debug, Clone)]
struct Answer {
    replica: usize,
    /// Which of the API keys sent it.
    key: usize,
    status: StatusCode,
    body: Value,
}

async fn post_topup(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    match http
        .post(format!("{base}/v1/topups"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status();
            (status, res.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (
            StatusCode::from_u16(599).expect("599"),
            json!({ "client_error": e.to_string() }),
        ),
    }
}

async fn get_json(http: &reqwest::Client, base: &str, key: &str, path: &str) -> (StatusCode, HeaderMap, Value) {
    let res = http
        .get(format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

/// Sends async top-ups `refs` round-robin over `bases` (and over `keys`), at most
/// [`CLIENT_INFLIGHT_MAX`] at once, and returns every answer.
async fn submit_round_robin(
    http: &reqwest::Client,
    bases: &[String],
    keys: &[String],
    tag: &str,
    refs: std::ops::Range<usize>,
) -> Vec<Answer> {
    futures::stream::iter(refs)
        .map(|i| {
            let replica = i % bases.len();
            let key = i % keys.len();
            let base = bases[replica].clone();
            let body = topup_body(&ok_phone(i), &format!("{tag}-{i}"));
            async move {
                let (status, body) = post_topup(http, &base, &keys[key], &body).await;
                Answer {
                    replica,
                    key,
                    status,
                    body,
                }
            }
        })
        .buffer_unordered(CLIENT_INFLIGHT_MAX)
        .collect()
        .await
}

/// The ids of the accepted answers; panics on any answer other than 202.
fn accepted_ids(answers: &[Answer], replicas: &[Replica]) -> BTreeSet<String> {
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != StatusCode::ACCEPTED).collect();
    assert!(
        refused.is_empty(),
        "{} of {} top-ups not accepted with 202; first: {:?}\n{}",
        refused.len(),
        answers.len(),
        &refused[..refused.len().min(5)],
        all_logs(replicas)
    );
    let ids: BTreeSet<String> = answers
        .iter()
        .map(|a| a.body["id"].as_str().expect("id in a 202").to_string())
        .collect();
    assert_eq!(ids.len(), answers.len(), "every accepted top-up has its own id");
    ids
}

/// The simulator received each of `ids` exactly once and delivered it exactly
/// once, and received nothing else.
fn assert_journal_exactly_once(journal: &Value, ids: &BTreeSet<String>) {
    let entries = journal["entries"].as_object().expect("journal entries");
    let mut bad = Vec::new();
    for id in ids {
        match entries.get(id) {
            Some(e) if e["calls"] == json!(1) && e["deliveries"] == json!(1) => {}
            Some(e) => bad.push(format!("{id}: calls {} deliveries {}", e["calls"], e["deliveries"])),
            None => bad.push(format!("{id}: never received")),
        }
    }
    let strangers: Vec<&String> = entries.keys().filter(|k| !ids.contains(*k)).collect();
    assert!(
        bad.is_empty() && strangers.is_empty() && entries.len() == ids.len(),
        "journal has {} entries for {} top-ups; {} not exactly once (first: {:?}); unknown ids: {:?}; totals {}",
        entries.len(),
        ids.len(),
        bad.len(),
        &bad[..bad.len().min(10)],
        &strangers[..strangers.len().min(10)],
        journal["totals"]
    );
}

fn mxn(major: i64) -> Money {
    Money::major(major)
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_submit_each_topup_exactly_once() {
    const N: usize = 2_000;
    const CREDIT: i64 = 100_000;
    let Some(redis_url) = scale_env("three_replicas_submit_each_topup_exactly_once") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let dep = Deployment::new("r3", &redis_url, "200-600").await;
    let key = dep.create_customer("SCALE1", CREDIT).await;
    let replicas = dep.start_replicas(3, &ReplicaOpts::default()).await;
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let http = client();

    let started = Instant::now();
    let answers = submit_round_robin(&http, &bases, std::slice::from_ref(&key), "scale", 0..N).await;
    let submitted_in = started.elapsed();
    let ids = accepted_ids(&answers, &replicas);
    assert_eq!(ids.len(), N);
    let mut per_replica = vec![0usize; replicas.len()];
    for a in &answers {
        per_replica[a.replica] += 1;
    }
    dep.wait_settled(Duration::from_secs(90), &replicas).await;
    let elapsed = started.elapsed();

    let topups = all_topups(dep.store(), "SCALE1").await;
    assert_eq!(topups.len(), N, "{:?}", status_summary(&topups));
    let found: BTreeSet<String> = topups.iter().map(|t| t.id.clone()).collect();
    assert_eq!(found, ids, "the database holds exactly the accepted top-ups");
    let not_success: Vec<(&str, &str)> = topups
        .iter()
        .filter(|t| t.status != TopupStatus::Success)
        .map(|t| (t.id.as_str(), t.status.as_str()))
        .collect();
    assert!(
        not_success.is_empty(),
        "{} top-ups not SUCCESS ({:?}); first: {:?}",
        not_success.len(),
        status_summary(&topups),
        &not_success[..not_success.len().min(10)]
    );

    assert_journal_exactly_once(&dep.sim.journal().await.expect("journal"), &ids);
    // The work was spread: every replica answered some top-ups itself.
    let answered: Vec<usize> = replicas.iter().map(Replica::upstream_answers).collect();
    // Done: stop the replicas (their connections too) before the audit.
    drop(replicas);
    dep.assert_audit_clean().await;
    assert_eq!(
        dep.balance("SCALE1").await,
        mxn(CREDIT - FACE_MXN * N as i64),
        "balance = initial − Σ"
    );
    assert_eq!(
        answered.iter().sum::<usize>(),
        N,
        "one upstream answer per top-up: {answered:?}"
    );
    assert!(
        answered.iter().all(|&n| n > 0),
        "a replica sent nothing upstream: {answered:?}"
    );

    let secs = elapsed.as_secs_f64();
    println!(
        "scale: {N} top-ups on 3 replicas in {secs:.1} s ({:.1} completions/s; submitted in {:.1} s); accepted per replica {per_replica:?}, upstream answers per replica {answered:?}",
        N as f64 / secs,
        submitted_in.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_one_replica_rescues_its_work() {
    const N: usize = 300;
    const CREDIT: i64 = 10_000;
    let Some(redis_url) = scale_env("kill_minus_nine_one_replica_rescues_its_work") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let dep = Deployment::new("r3kill", &redis_url, "1000-2000").await;
    let store = dep.store();
    let key = dep.create_customer("KILL1", CREDIT).await;
    let opts = ReplicaOpts {
        lease_s: 8,
        upstream_timeout_s: 5,
        ..ReplicaOpts::default()
    };
    let mut replicas = dep.start_replicas(3, &opts).await;
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let http = client();

    let answers = submit_round_robin(&http, &bases, std::slice::from_ref(&key), "kill", 0..N).await;
    let ids = accepted_ids(&answers, &replicas);

    // Kill the replica holding the most leases, while they are in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    let owners: Vec<Option<String>> = loop {
        let owners: Vec<Option<String>> = replicas.iter().map(Replica::worker_owner).collect();
        if owners.iter().all(Option::is_some) {
            break owners;
        }
        assert!(
            Instant::now() < deadline,
            "worker owners not logged:\n{}",
            all_logs(&replicas)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let owner_of = |t: &Topup| {
        t.lease_owner
            .as_deref()
            .map(|o| o.split('/').next().unwrap_or(o).to_string())
    };
    let victim = loop {
        let leased: Vec<Topup> = all_topups(store, "KILL1")
            .await
            .into_iter()
            .filter(|t| t.status == TopupStatus::Processing)
            .collect();
        let counts: Vec<usize> = owners
            .iter()
            .map(|o| leased.iter().filter(|t| owner_of(t) == *o).count())
            .collect();
        let (best, most) = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map(|(i, n)| (i, *n))
            .expect("replicas");
        if most > 0 {
            break best;
        }
        assert!(
            Instant::now() < deadline,
            "no top-up in flight on any replica:\n{}",
            all_logs(&replicas)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    replicas[victim].proc.sigkill().expect("SIGKILL");
    let dead_owner = owners[victim].clone();

    // Exactly the state the dead process left behind.
    let at_kill = all_topups(store, "KILL1").await;
    let orphans: BTreeSet<String> = at_kill
        .iter()
        .filter(|t| t.status == TopupStatus::Processing && owner_of(t) == dead_owner)
        .map(|t| t.id.clone())
        .collect();
    assert!(
        !orphans.is_empty(),
        "the killed replica held no lease: {:?}",
        status_summary(&at_kill)
    );
    println!(
        "kill: SIGKILL replica-{victim} holding {} leases; states at the kill {:?}",
        orphans.len(),
        status_summary(&at_kill)
    );

    // The survivors finish the queue and rescue the orphans after the lease.
    let survivors: Vec<Replica> = replicas
        .drain(..)
        .enumerate()
        .filter_map(|(i, r)| (i != victim).then_some(r))
        .collect();
    dep.wait_settled(Duration::from_secs(60), &survivors).await;

    // Rescued top-ups the simulator has seen are resolved by the status query.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (topups, journal) = loop {
        let topups = all_topups(store, "KILL1").await;
        let journal = dep.sim.journal().await.expect("journal");
        let entries = journal["entries"].as_object().expect("entries");
        let pending_resolution = topups
            .iter()
            .filter(|t| t.status == TopupStatus::Unknown && entries.contains_key(&t.id))
            .count();
        if pending_resolution == 0 {
            break (topups, journal);
        }
        assert!(
            Instant::now() < deadline,
            "{pending_resolution} UNKNOWN top-ups known to the simulator were not resolved by the status query: {:?}\n{}",
            status_summary(&topups),
            all_logs(&survivors)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    assert_eq!(topups.len(), N);
    let found: BTreeSet<String> = topups.iter().map(|t| t.id.clone()).collect();
    assert_eq!(found, ids);
    let entries = journal["entries"].as_object().expect("entries");
    let twice: Vec<(&String, &Value)> = entries
        .iter()
        .filter(|(_, e)| e["calls"].as_u64().unwrap_or(0) > 1)
        .collect();
    assert!(twice.is_empty(), "submitted more than once: {twice:?}");
    let mut bad = Vec::new();
    for t in &topups {
        let entry = entries.get(&t.id);
        match t.status {
            TopupStatus::Success => {
                if !entry.is_some_and(|e| e["deliveries"] == json!(1)) {
                    bad.push(format!("{} SUCCESS but journal {entry:?}", t.id));
                }
            }
            // Only a top-up the simulator never received may stay UNKNOWN.
            TopupStatus::Unknown if entry.is_none() => {}
            other => bad.push(format!("{} is {other}; journal {entry:?}", t.id)),
        }
        let n = claims(store, &t.id).await;
        if n != 1 {
            bad.push(format!("{} claimed {n} times", t.id));
        }
    }
    assert!(bad.is_empty(), "{:?}: {bad:?}", status_summary(&topups));
    for id in &orphans {
        let events = store.events(id).await.expect("events");
        assert!(
            events.iter().any(|e| e.actor == "rescuer" && e.to_status == "UNKNOWN"),
            "{id}, leased by the killed replica, was not rescued: {events:?}"
        );
    }
    // What is left UNKNOWN can no longer change: stop the survivors, then audit.
    drop(survivors);
    dep.assert_audit_clean().await;
    let success = count_status(&topups, TopupStatus::Success);
    let unknown = count_status(&topups, TopupStatus::Unknown);
    assert_eq!(
        dep.balance("KILL1").await,
        mxn(CREDIT - FACE_MXN * (success + unknown) as i64),
        "balance = initial − 10 × (#SUCCESS + #UNKNOWN)"
    );
    println!("kill: {} rescued; final {:?}", orphans.len(), status_summary(&topups));
}

/// A `redis-server` of this test only, on a fixed port.
fn spawn_redis(work: &Path, port: u16, name: &str) -> Proc {
    let mut cmd = std::process::Command::new("redis-server");
    cmd.current_dir(work).args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &work.display().to_string(),
    ]);
    spawn(cmd, work, name)
}

async fn redis_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if conn.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}

async fn wait_redis(proc: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_answers(port).await {
        if let Some(status) = proc.exited() {
            panic!("redis-server exited ({status}):\n{}", proc.logs());
        }
        assert!(Instant::now() < deadline, "redis-server not ready:\n{}", proc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loss_loses_nothing_and_serves_no_stale_balance() {
    const CREDIT: i64 = 50_000;
    if scale_env("redis_loss_loses_nothing_and_serves_no_stale_balance").is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    // Our own Redis: the shared one serves other tests and must stay up.
    let redis_work = temp_dir("own-redis");
    let redis_port = free_port();
    let mut redis = spawn_redis(&redis_work, redis_port, "redis-1");
    wait_redis(&mut redis, redis_port).await;
    let dep = Deployment::new("redisloss", &format!("redis://127.0.0.1:{redis_port}"), "200-600").await;
    let key = dep.create_customer("RL1", CREDIT).await;
    let replicas = dep.start_replicas(2, &ReplicaOpts::default()).await;
    let http = client();
    for r in &replicas {
        assert_eq!(r.redis_up(&http).await, Some(true), "{}", r.logs());
    }

    // A steady stream of top-ups over both replicas; phase 0 = Redis up,
    // 1 = Redis down, 2 = Redis back.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (phase, stop, key, http) = (phase.clone(), stop.clone(), key.clone(), http.clone());
        let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
        tokio::spawn(async move {
            let mut out: Vec<(u8, Answer, Duration)> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let batch: Vec<_> = (i..i + 8)
                    .map(|j| {
                        let (http, key) = (&http, &key);
                        let replica = j % bases.len();
                        let base = bases[replica].clone();
                        let phase = phase.load(Ordering::SeqCst);
                        async move {
                            let body = topup_body(&ok_phone(j), &format!("stream-{j}"));
                            let sent = Instant::now();
                            let (status, body) = post_topup(http, &base, key, &body).await;
                            let took = sent.elapsed();
                            (
                                phase,
                                Answer {
                                    replica,
                                    key: 0,
                                    status,
                                    body,
                                },
                                took,
                            )
                        }
                    })
                    .collect();
                out.extend(futures::future::join_all(batch).await);
                i += 8;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            out
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.sigkill().expect("SIGKILL");
    phase.store(1, Ordering::SeqCst);
    let down_at = Instant::now();
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = r.redis_up(&http).await;
            if up == Some(false) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /health still says redis.up = {up:?} with Redis dead",
                r.proc.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Keep going without Redis for a while.
    let down_for = Duration::from_secs(3);
    tokio::time::sleep(down_for.saturating_sub(down_at.elapsed())).await;

    let mut redis = spawn_redis(&redis_work, redis_port, "redis-2");
    wait_redis(&mut redis, redis_port).await;
    let restarted = Instant::now();
    for r in &replicas {
        loop {
            let up = r.redis_up(&http).await;
            if up == Some(true) {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "{}: /health says redis.up = {up:?} {:?} after Redis came back:\n{}",
                r.proc.name,
                restarted.elapsed(),
                r.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let back_after = restarted.elapsed();
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let streamed = stream.await.expect("stream task");

    let answers: Vec<Answer> = streamed.iter().map(|(_, a, _)| a.clone()).collect();
    let per_phase = |p: u8| {
        streamed
            .iter()
            .filter(|(ph, a, _)| *ph == p && a.status == StatusCode::ACCEPTED)
            .count()
    };
    // Mean answer time of the accepts of a phase (ms), for the report.
    let latency_ms = |p: u8| {
        let times: Vec<f64> = streamed
            .iter()
            .filter(|(ph, _, _)| *ph == p)
            .map(|(_, _, t)| t.as_secs_f64() * 1000.0)
            .collect();
        times.iter().sum::<f64>() / times.len().max(1) as f64
    };
    let ids = accepted_ids(&answers, &replicas);
    assert!(
        per_phase(0) > 0 && per_phase(1) > 0 && per_phase(2) > 0,
        "accepted before / while / after Redis was down: {} / {} / {}",
        per_phase(0),
        per_phase(1),
        per_phase(2)
    );

    dep.wait_settled(Duration::from_secs(60), &replicas).await;
    let topups = all_topups(dep.store(), "RL1").await;
    let found: BTreeSet<String> = topups.iter().map(|t| t.id.clone()).collect();
    assert_eq!(found, ids, "every accepted top-up is stored, none lost");
    assert_eq!(
        count_status(&topups, TopupStatus::Success),
        ids.len(),
        "{:?}",
        status_summary(&topups)
    );
    assert_journal_exactly_once(&dep.sim.journal().await.expect("journal"), &ids);
    dep.assert_audit_clean().await;
    let expected = mxn(CREDIT - FACE_MXN * ids.len() as i64);
    assert_eq!(dep.balance("RL1").await, expected);
    println!(
        "redis loss: {} top-ups ({} before, {} while Redis was down, {} after; mean accept {:.0} / {:.0} / {:.0} ms); redis.up again {:.1} s after the restart",
        ids.len(),
        per_phase(0),
        per_phase(1),
        per_phase(2),
        latency_ms(0),
        latency_ms(1),
        latency_ms(2),
        back_after.as_secs_f64()
    );

    // No stale balance: A caches it, the CLI credits (writing through), and
    // both replicas show the new balance at once.
    let (a, b) = (&replicas[0], &replicas[1]);
    let balance_on = |r: &Replica| {
        let (http, key) = (http.clone(), key.clone());
        let base = r.base.clone();
        async move {
            let (status, _, body) = get_json(&http, &base, &key, "/v1/balance").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["balance"].as_str().expect("balance").to_string()
        }
    };
    assert_eq!(balance_on(a).await, expected.to_decimal_string());
    assert_eq!(balance_on(b).await, expected.to_decimal_string());
    let credited = dep
        .cli_ok(&[
            "customer",
            "credit",
            "--id",
            "RL1",
            "--amount",
            "500",
            "--reason",
            "wire received",
        ])
        .await;
    let after_credit = mxn(CREDIT - FACE_MXN * ids.len() as i64 + 500);
    assert_eq!(
        credited["balance"],
        json!(after_credit.to_decimal_string()),
        "{credited}"
    );
    assert_eq!(
        balance_on(b).await,
        after_credit.to_decimal_string(),
        "replica B after the CLI credit"
    );
    assert_eq!(
        balance_on(a).await,
        after_credit.to_decimal_string(),
        "replica A (which had cached the old balance) after the CLI credit"
    );

    // A hold taken on A is seen on B at once.
    let (status, body) = post_topup(&http, &a.base, &key, &topup_body(&ok_phone(90_000), "hold-on-a")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let after_hold = mxn(CREDIT - FACE_MXN * (ids.len() as i64 + 1) + 500);
    assert_eq!(
        balance_on(b).await,
        after_hold.to_decimal_string(),
        "replica B right after a top-up accepted on A"
    );
    dep.wait_settled(Duration::from_secs(30), &replicas).await;
    dep.assert_audit_clean().await;
    drop(replicas);
    drop(redis);
}

/// Waits until the wall clock is just past a second boundary.
async fn sleep_to_next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let to_boundary = Duration::from_millis(1000 - u64::from(now.subsec_millis()));
    tokio::time::sleep(to_boundary + Duration::from_millis(20)).await;
}

/// `n` concurrent `GET /v1/balance`, alternating over `replicas`, fired just
/// after a second boundary.
async fn balance_burst(
    http: &reqwest::Client,
    replicas: &[Replica],
    key: &str,
    n: usize,
) -> Vec<(StatusCode, HeaderMap, Value)> {
    sleep_to_next_second().await;
    let started = Instant::now();
    let calls = (0..n).map(|i| get_json(http, &replicas[i % replicas.len()].base, key, "/v1/balance"));
    let out = futures::future::join_all(calls).await;
    println!(
        "rate limit: burst of {n} answered in {} ms",
        started.elapsed().as_millis()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_shared_across_replicas() {
    const BURST: usize = 30;
    let Some(redis_url) = scale_env("rate_limit_is_shared_across_replicas") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let dep = Deployment::new("ratelimit", &redis_url, "200-600").await;
    let key = dep.create_customer("RATE1", 1_000).await;
    let opts = ReplicaOpts {
        rate_limit_per_s: 10,
        ..ReplicaOpts::default()
    };
    let replicas = dep.start_replicas(2, &opts).await;
    let http = client();
    // Warm up (caches, connections) in an earlier second than the burst.
    for r in &replicas {
        let (status, _, body) = get_json(&http, &r.base, &key, "/v1/balance").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let answers = balance_burst(&http, &replicas, &key, BURST).await;
    let ok = answers.iter().filter(|(s, _, _)| *s == StatusCode::OK).count();
    let per_replica: Vec<usize> = (0..replicas.len())
        .map(|r| {
            answers
                .iter()
                .enumerate()
                .filter(|(i, (s, _, _))| i % replicas.len() == r && *s == StatusCode::OK)
                .count()
        })
        .collect();
    let statuses: BTreeMap<u16, usize> = answers.iter().fold(BTreeMap::new(), |mut m, (s, _, _)| {
        *m.entry(s.as_u16()).or_insert(0) += 1;
        m
    });
    println!(
        "rate limit: {ok} of {BURST} allowed at 10/s over 2 replicas (per replica {per_replica:?}); statuses {statuses:?}"
    );
    assert!(
        ok > 0 && ok <= 20,
        "{ok} of {BURST} allowed with a shared limit of 10/s (per replica {per_replica:?}; statuses {statuses:?})"
    );

    // The customer's own setting (0 = unlimited) overrides the default at once.
    let set = dep
        .cli_ok(&["customer", "set", "--id", "RATE1", "--rate-limit", "0"])
        .await;
    assert_eq!(set["customer"]["rate_limit_per_s"], json!(0), "{set}");
    let unlimited = balance_burst(&http, &replicas, &key, BURST).await;
    let refused: Vec<(u16, &Value)> = unlimited
        .iter()
        .filter(|(s, _, _)| *s != StatusCode::OK)
        .map(|(s, _, b)| (s.as_u16(), b))
        .collect();
    assert!(
        refused.is_empty(),
        "with --rate-limit 0, {} of {BURST} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );

    // Every refusal of the first burst had the rate-limit shape.
    for (status, headers, body) in answers.iter().filter(|(s, _, _)| *s != StatusCode::OK) {
        assert_eq!(
            *status,
            StatusCode::TOO_MANY_REQUESTS,
            "a refused request must be 429 rate_limited: {body}\n{}",
            all_logs(&replicas)
        );
        assert_eq!(body["code"], "rate_limited", "{body}");
        for name in ["retry-after", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            assert!(headers.contains_key(name), "429 without {name}: {headers:?}");
        }
        assert_eq!(
            headers.get("x-ratelimit-limit").and_then(|v| v.to_str().ok()),
            Some("10"),
            "{headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_need_the_admin_key_and_have_the_old_shape() {
    const OK_N: usize = 20;
    const FAIL_N: usize = 5;
    let Some(redis_url) = scale_env("queue_stats_need_the_admin_key_and_have_the_old_shape") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let dep = Deployment::new("qstats", &redis_url, "200-600").await;
    let key = dep.create_customer("QS1", 1_000).await;
    let replicas = dep.start_replicas(2, &ReplicaOpts::default()).await;
    let http = client();
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();

    let mut answers = submit_round_robin(&http, &bases, std::slice::from_ref(&key), "qs", 0..OK_N).await;
    // Phones ending in 991: the simulator answers Fail, nothing delivered.
    for i in 0..FAIL_N {
        let phone = format!("559876{i}991");
        let (status, body) = post_topup(&http, &bases[i % 2], &key, &topup_body(&phone, &format!("qs-fail-{i}"))).await;
        answers.push(Answer {
            replica: i % 2,
            key: 0,
            status,
            body,
        });
    }
    let ids = accepted_ids(&answers, &replicas);
    assert_eq!(ids.len(), OK_N + FAIL_N);
    dep.wait_settled(Duration::from_secs(60), &replicas).await;
    let counts = dep.store().queue_counts().await.expect("queue counts");
    assert_eq!(
        (counts.success, counts.failed),
        (OK_N as i64, FAIL_N as i64),
        "{counts:?}"
    );

    let stats = |admin_key: Option<&'static str>, base: String| {
        let http = http.clone();
        async move {
            let mut req = http.get(format!("{base}/api/queue/stats"));
            if let Some(k) = admin_key {
                req = req.header("x-admin-key", k);
            }
            let res = req.send().await.expect("GET /api/queue/stats");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    for r in &replicas {
        let (status, body) = stats(Some(ADMIN_KEY), r.base.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let keys: BTreeSet<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["success", "queue", "redis"]), "{body}");
        let queue_keys: BTreeSet<&str> = body["queue"]
            .as_object()
            .expect("queue object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            queue_keys,
            BTreeSet::from([
                "waiting",
                "active",
                "completed",
                "failed",
                "delayed",
                "total",
                "unknown",
                "oldest_pending_age_s"
            ]),
            "{body}"
        );
        assert_eq!(
            body,
            json!({
                "success": true,
                "queue": {
                    "waiting": counts.pending,
                    "active": counts.processing,
                    "completed": counts.success,
                    "failed": counts.failed,
                    "delayed": counts.delayed,
                    "total": (OK_N + FAIL_N) as i64,
                    "unknown": counts.unknown,
                    "oldest_pending_age_s": null,
                },
                "redis": true,
            }),
            "{}",
            r.proc.name
        );
    }

    let (status, body) = stats(None, bases[0].clone()).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!("admin_required")),
        "without x-admin-key: {body}\n{}",
        all_logs(&replicas)
    );
    let (status, body) = stats(Some("not-the-admin-key-at-all"), bases[1].clone()).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!("admin_required")),
        "with a wrong x-admin-key: {body}"
    );
}

/// Customers the throughput measurement spreads its top-ups over. Every money
/// change of one customer takes that customer's row lock, so a single customer
/// caps the rate whatever the number of replicas (the 2,000 of
/// `three_replicas_submit_each_topup_exactly_once` show that ceiling); spread
/// over a few, the figure is about the replicas.
const THROUGHPUT_CUSTOMERS: usize = 4;

/// One drain measurement.
struct Drain {
    per_s: f64,
    submitted_s: f64,
}

/// Sends `n` top-ups through `replicas_n` fresh replicas (fresh database) and
/// waits until all are final; checks they all succeeded exactly once.
async fn drain(redis_url: &str, replicas_n: usize, n: usize) -> Drain {
    const CREDIT: i64 = 100_000;
    let dep = Deployment::new(&format!("tput{replicas_n}"), redis_url, "500-500").await;
    let customers: Vec<String> = (0..THROUGHPUT_CUSTOMERS).map(|c| format!("TP{c}")).collect();
    let mut keys = Vec::new();
    for c in &customers {
        keys.push(dep.create_customer(c, CREDIT).await);
    }
    let opts = ReplicaOpts {
        concurrency: 32,
        ..ReplicaOpts::default()
    };
    let replicas = dep.start_replicas(replicas_n, &opts).await;
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    let http = client();
    let started = Instant::now();
    let answers = submit_round_robin(&http, &bases, &keys, "tp", 0..n).await;
    let submitted_s = started.elapsed().as_secs_f64();
    let ids = accepted_ids(&answers, &replicas);
    dep.wait_settled(Duration::from_secs(120), &replicas).await;
    let secs = started.elapsed().as_secs_f64();
    drop(replicas);

    let mut topups = Vec::new();
    for c in &customers {
        topups.extend(all_topups(dep.store(), c).await);
    }
    assert_eq!(topups.len(), n);
    assert_eq!(
        count_status(&topups, TopupStatus::Success),
        n,
        "{replicas_n} replica(s): {:?}",
        status_summary(&topups)
    );
    assert_journal_exactly_once(&dep.sim.journal().await.expect("journal"), &ids);
    dep.assert_audit_clean().await;
    let mut spent = 0;
    for (c, customer) in customers.iter().enumerate() {
        let mine = topups.iter().filter(|t| &t.customer_id == customer).count() as i64;
        assert_eq!(mine, answers.iter().filter(|a| a.key == c).count() as i64, "{customer}");
        spent += mine;
        assert_eq!(dep.balance(customer).await, mxn(CREDIT - FACE_MXN * mine), "{customer}");
    }
    assert_eq!(spent, n as i64);
    Drain {
        per_s: n as f64 / secs,
        submitted_s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vs_three_replicas_throughput() {
    const N: usize = 1_500;
    let Some(redis_url) = scale_env("one_vs_three_replicas_throughput") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let one = drain(&redis_url, 1, N).await;
    let three = drain(&redis_url, 3, N).await;
    println!(
        "throughput: 1 replica {:.1}/s, 3 replicas {:.1}/s ({N} top-ups each over {THROUGHPUT_CUSTOMERS} customers, simulator 500 ms, QUEUE_CONCURRENCY 32; accepted in {:.1} s and {:.1} s)",
        one.per_s, three.per_s, one.submitted_s, three.submitted_s
    );
}
