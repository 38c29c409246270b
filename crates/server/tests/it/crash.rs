//! Crash sites: the real `recarga` binary aborted (like `kill -9`) at every
//! named site of `recarga_domain::failpoint::SITES`, restarted without the
//! failpoint, and its books checked.
//!
//! For each site and each engine (SQLite; PostgreSQL with
//! `TEST_DATABASE_URL`; PostgreSQL + Redis with `TEST_REDIS_URL` too) a world
//! of its own: a fresh database, a standalone `recarga latcom-sim` (its
//! journal, the ground truth, survives the gateway's crashes), one customer.
//! The site is armed with `RECARGA_FAILPOINT`, traffic that reaches it is
//! driven (a top-up, an operator credit with `recarga customer credit`, an
//! UNKNOWN top-up for the resolver, an expired lease for the rescue), the
//! abort is observed (the process ends by SIGABRT and says which site), the
//! gateway restarts clean and settles, and then:
//!
//! - the site's own promise holds: an accept that aborted before its commit
//!   left nothing and moved no money; one that aborted after it kept the
//!   top-up; a crash after the upstream answered leaves the top-up UNKNOWN
//!   (never resent) until the status query resolves it; an aborted operator
//!   credit moved nothing and succeeds once when repeated;
//! - retrying every reference after the crash gives the same top-up
//!   (idempotency survives);
//! - every top-up the client got a 2xx for exists and is final, or is an
//!   UNKNOWN listed by `recarga topup unresolved`;
//! - the books (`crate::common::procs::check_books`): balance = Σ ledger, each
//!   top-up's holds settled at most once, no id sent twice, no delivered
//!   top-up refunded, no refund without a definite failure;
//! - `recarga audit` exits 0.
//!
//! The worlds run concurrently (`WORLDS_AT_ONCE`): the resolver sites wait
//! out the 60 s hold a crashed status query leaves on its row
//! (`worker::STATUS_CHECK_HOLD_MS`).

use crate::common::procs::{CliRun, Gateway, Rig, assert_failpoints_compiled, check_books, client, start_sim};
use crate::common::{Setup, engines};
use futures::StreamExt;
use recarga_domain::TopupStatus;
use recarga_domain::failpoint::SITES;
use recarga_store::Store;
use recarga_store::testing::{TestDb, fresh, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const CUSTOMER: &str = "C1";
const CREDIT_MXN: &str = "1000";
const FACE_MXN: &str = "20";
/// Simulator answer latency (ms) and how long it holds an unanswered call.
const SIM_LATENCY_MS: &str = "100-300";
const SIM_HANG_MS: u64 = 500;
/// Longest an armed process may run before it reaches its site.
const ABORT_WITHIN: Duration = Duration::from_secs(45);
/// Longest the restarted gateway may take to settle everything, the 60 s
/// status-query hold of a crashed resolver included.
const SETTLE_WITHIN: Duration = Duration::from_secs(150);
/// Worlds (site × engine) run at once.
const WORLDS_AT_ONCE: usize = 12;
/// Longest a reference stays "in flight" after its synchronous request died
/// (the request's own `Prefer: wait`, plus slack).
const IN_FLIGHT_WITHIN: Duration = Duration::from_secs(20);
/// SIGABRT: what `std::process::abort()` ends a process with.
const SIGABRT: i32 = 6;

/// Phones by sandbox script (last three digits; see `recarga_upstream::sim`).
const PHONE_OK: &str = "5512340001";
const PHONE_OK_2: &str = "5512340002";
const PHONE_FAIL: &str = "5512345991";
const PHONE_500_DELIVERED: &str = "5512345996";
const PHONE_SILENT_UNDELIVERED: &str = "5512345994";

/// One request the client made, and what it heard.
#[derive(Debug, Clone)]
struct Sent {
    reference: String,
    body: Value,
    /// `None`: no answer at all (the process died under it).
    status: Option<StatusCode>,
    id: Option<String>,
}

/// One site on one engine: its own database, simulator and customer.
struct World {
    setup: Setup,
    site: &'static str,
    db: TestDb,
    rig: Rig,
    key: String,
    http: reqwest::Client,
    sent: Vec<Sent>,
    /// Top-ups that must end in this status, with why.
    expect: Vec<(String, TopupStatus, &'static str)>,
    /// Top-ups that must have passed through UNKNOWN (a crash after the
    /// upstream answered, or a rescued lease).
    via_unknown: Vec<String>,
    /// 409 `request_in_flight` answers to retries after the crash.
    in_flight_409: std::sync::atomic::AtomicUsize,
}

impl World {
    async fn new(setup: Setup, site: &'static str) -> World {
        let db = fresh(setup.engine).await;
        let work = temp_dir("crash");
        let sim = start_sim(&work, SIM_LATENCY_MS, Some(&json!({ "hang_ms": SIM_HANG_MS }))).await;
        let redis = setup.redis_url.map(|url| {
            let prefix = format!("recarga-crash-{}:", uuid::Uuid::now_v7().simple());
            (url.to_string(), prefix)
        });
        let rig = Rig {
            work,
            db_url: db.url.clone(),
            redis,
            sim,
            env: Vec::new(),
        };
        let mut world = World {
            setup,
            site,
            db,
            rig,
            key: String::new(),
            http: client(),
            sent: Vec::new(),
            expect: Vec::new(),
            via_unknown: Vec::new(),
            in_flight_409: Default::default(),
        };
        let created = world
            .cli_ok(&[
                "customer", "create", "--id", CUSTOMER, "--name", CUSTOMER, "--credit", CREDIT_MXN,
            ])
            .await;
        world.key = created["api_key"].as_str().expect("api_key").to_string();
        world
    }

    fn tag(&self) -> String {
        format!("{:?} / {}", self.setup, self.site)
    }

    fn store(&self) -> &dyn Store {
        self.db.store.as_ref()
    }

    async fn cli(&self, args: &[&str], failpoint: Option<&str>) -> CliRun {
        self.rig.cli(args, failpoint).await
    }

    async fn cli_ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args, None).await;
        assert!(out.ok(), "{}: recarga {args:?} failed: {out:?}", self.tag());
        out.json
    }

    /// A gateway without failpoint, answering `/health`.
    async fn start_clean(&self, name: &str) -> Gateway {
        let mut gw = self.rig.start_gateway(name, None).await;
        if let Some(status) = gw.proc.exited() {
            panic!(
                "{}: the clean gateway exited ({status}):\n{}",
                self.tag(),
                gw.proc.logs()
            );
        }
        gw
    }

    /// A gateway armed with this world's site: returns once it answers
    /// `/health`, or once it has already died (a site the start-up reaches).
    async fn start_armed(&self, name: &str) -> Gateway {
        self.rig.start_gateway(name, Some(self.site.to_string())).await
    }

    /// Arms the site, sends one async top-up, waits for the abort; returns its id.
    async fn crash_one_topup(&mut self, reference: &str, phone: &str) -> String {
        let mut armed = self.start_armed("armed").await;
        self.topup(&armed, reference, phone, None).await;
        self.expect_abort(&mut armed).await;
        self.id_of(reference).await.expect("accepted")
    }

    /// Waits for the armed process to die at this world's site.
    async fn expect_abort(&self, gw: &mut Gateway) {
        let status = gw.proc.wait_exit(ABORT_WITHIN).await.unwrap_or_else(|| {
            panic!(
                "{}: the armed gateway never reached its site within {ABORT_WITHIN:?}:\n{}",
                self.tag(),
                gw.proc.logs()
            )
        });
        assert_eq!(
            status.signal(),
            Some(SIGABRT),
            "{}: ended {status}, not by SIGABRT:\n{}",
            self.tag(),
            gw.proc.logs()
        );
        let said = format!("failpoint {} hit", self.site);
        assert!(
            gw.proc.stderr_text().contains(&said),
            "{}: aborted elsewhere than at its site:\n{}",
            self.tag(),
            gw.proc.logs()
        );
    }

    /// POST /v1/topups; a transport error (the process died) is `None`.
    async fn post(&self, gw: &Gateway, body: &Value, wait: Option<u64>) -> (Option<StatusCode>, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/topups", gw.base))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(w) = wait {
            req = req.header("Prefer", format!("wait={w}"));
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                (Some(status), res.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (None, Value::Null),
        }
    }

    /// POST /v1/topups, retried while it answers 409 `request_in_flight`: a
    /// synchronous request that died with the process keeps its reference
    /// "in flight" until its own wait would have ended.
    async fn post_settled(&self, gw: &Gateway, body: &Value, wait: Option<u64>) -> (Option<StatusCode>, Value) {
        let deadline = Instant::now() + IN_FLIGHT_WITHIN;
        loop {
            let (status, json) = self.post(gw, body, wait).await;
            if status != Some(StatusCode::CONFLICT) || Instant::now() >= deadline {
                return (status, json);
            }
            assert_eq!(json["code"], "request_in_flight", "{}: {json}", self.tag());
            self.in_flight_409.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Sends a top-up and records it in the model.
    async fn topup(&mut self, gw: &Gateway, reference: &str, phone: &str, wait: Option<u64>) -> Sent {
        let body = json!({ "phone": phone, "amount": FACE_MXN, "reference": reference });
        let (status, json) = self.post_settled(gw, &body, wait).await;
        if let Some(s) = status {
            assert!(
                s.is_success(),
                "{}: {reference} answered {s}: {json}\n{}",
                self.tag(),
                gw.proc.logs()
            );
        }
        let sent = Sent {
            reference: reference.to_string(),
            body,
            status,
            id: json["id"].as_str().map(str::to_string),
        };
        self.sent.push(sent.clone());
        sent
    }

    async fn id_of(&self, reference: &str) -> Option<String> {
        self.store()
            .find_topup_by_reference(CUSTOMER, reference)
            .await
            .expect("find by reference")
            .map(|t| t.id)
    }

    /// Waits until top-up `id` is `want`, within [`SETTLE_WITHIN`].
    async fn wait_status(&self, id: &str, want: TopupStatus) {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let t = self.store().get_topup(id).await.expect("read").expect("exists");
            if t.status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {id} stayed {} (want {want})",
                self.tag(),
                t.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn balance_minor(&self) -> i64 {
        self.store()
            .get_customer(CUSTOMER)
            .await
            .expect("read")
            .expect("exists")
            .balance
            .minor()
    }

    async fn ledger_len(&self) -> usize {
        self.store().ledger(CUSTOMER, 1_000_000).await.expect("ledger").len()
    }

    async fn journal_calls(&self, id: &str) -> u64 {
        self.rig.sim.journal().await.expect("journal")["entries"][id]["calls"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until nothing is PENDING or PROCESSING and every expected status is reached.
    async fn settle(&self, gw: &Gateway) {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let c = self.store().queue_counts().await.expect("queue counts");
            let mut waiting = Vec::new();
            for (id, want, why) in &self.expect {
                let t = self.store().get_topup(id).await.expect("read").expect("exists");
                if t.status != *want {
                    waiting.push(format!("{id} is {} (want {want}: {why})", t.status));
                }
            }
            if c.pending + c.delayed + c.processing == 0 && waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not settled within {SETTLE_WITHIN:?}: {c:?} {waiting:?}\n{}",
                self.tag(),
                gw.proc.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Drives the armed process to its site, observes the abort, restarts clean
/// and checks the site's own promise. Returns the clean gateway.
async fn crash_at_site(w: &mut World) -> Gateway {
    let tag = w.tag();
    match w.site {
        "accept.before_commit" | "accept.after_commit" => {
            let before = (w.balance_minor().await, w.ledger_len().await);
            let mut armed = w.start_armed("armed").await;
            let sent = w.topup(&armed, "r-accept", PHONE_OK, Some(10)).await;
            assert_eq!(sent.status, None, "{tag}: answered though the accept aborted");
            w.expect_abort(&mut armed).await;
            let stored = w.id_of("r-accept").await;
            if w.site == "accept.before_commit" {
                assert_eq!(
                    stored, None,
                    "{tag}: an accept that aborted before its commit left a top-up"
                );
                assert_eq!(
                    (w.balance_minor().await, w.ledger_len().await),
                    before,
                    "{tag}: an aborted accept moved money"
                );
            }
            // The commit's notification can wake the armed process's own
            // worker, which may claim the top-up before the accepting thread
            // reaches its abort: then it is the dead process's claim.
            let mut claimed_by_dead = None;
            if let Some(id) = &stored {
                let t = w.store().get_topup(id).await.expect("read").expect("exists");
                if t.status == TopupStatus::Pending {
                    w.expect
                        .push((id.clone(), TopupStatus::Success, "committed before the crash"));
                } else {
                    claimed_by_dead = Some(id.clone());
                }
            } else if w.site == "accept.after_commit" {
                panic!("{tag}: the committed accept is gone");
            }
            let clean = w.start_clean("clean").await;
            // The client retries the request it never heard back about.
            let retry = w.topup(&clean, "r-accept", PHONE_OK, Some(10)).await;
            assert!(retry.status.is_some(), "{tag}: the retry got no answer");
            let retried = retry.id.clone().expect("id");
            if let Some(id) = &stored {
                assert_eq!(&retried, id, "{tag}: the retry made another top-up");
            } else {
                w.expect.push((retried, TopupStatus::Success, "accepted by the retry"));
            }
            if let Some(id) = claimed_by_dead {
                // Rescued to UNKNOWN at once (its process is dead) and never
                // resent: the status query settles it SUCCESS if the send
                // reached the provider, else it waits for an operator.
                let deadline = Instant::now() + SETTLE_WITHIN;
                while w.store().get_topup(&id).await.expect("read").expect("exists").status == TopupStatus::Processing {
                    assert!(
                        Instant::now() < deadline,
                        "{tag}: the dead process's claim of {id} was never rescued"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let want = if w.journal_calls(&id).await > 0 {
                    TopupStatus::Success
                } else {
                    TopupStatus::Unknown
                };
                w.expect
                    .push((id.clone(), want, "claimed by the dead process's worker"));
                w.via_unknown.push(id);
            }
            clean
        }
        "worker.after_claim" => {
            let mut armed = w.start_armed("armed").await;
            w.topup(&armed, "r-claim", PHONE_OK, None).await;
            w.expect_abort(&mut armed).await;
            let id = w.id_of("r-claim").await.expect("accepted before the claim");
            let t = w.store().get_topup(&id).await.expect("read").expect("exists");
            assert_eq!(t.status, TopupStatus::Processing, "{tag}: claimed at the crash");
            // Leased but never sent: rescued to UNKNOWN, and since it may
            // have been sent it is never resent nor refunded; the status
            // query finds nothing, so it waits for an operator.
            w.expect.push((id.clone(), TopupStatus::Unknown, "claimed, never sent"));
            w.via_unknown.push(id);
            w.start_clean("clean").await
        }
        "worker.after_upstream" | "finish.before_commit" => {
            // A delivered top-up on one site, a definite Fail on the other:
            // both answers are lost with the process.
            let (phone, want) = if w.site == "worker.after_upstream" {
                (PHONE_OK, TopupStatus::Success)
            } else {
                (PHONE_FAIL, TopupStatus::Failed)
            };
            let id = w.crash_one_topup("r-answered", phone).await;
            assert_eq!(w.journal_calls(&id).await, 1, "{tag}: the upstream had the call");
            w.expect
                .push((id.clone(), want, "the status query finds what the lost answer said"));
            w.via_unknown.push(id);
            w.start_clean("clean").await
        }
        "resolver.after_query" | "resolve.before_commit" => {
            // An unclear answer makes it UNKNOWN; the resolver crashes on it.
            let (phone, want) = if w.site == "resolver.after_query" {
                (PHONE_500_DELIVERED, TopupStatus::Success)
            } else {
                (PHONE_SILENT_UNDELIVERED, TopupStatus::Failed)
            };
            let id = w.crash_one_topup("r-unclear", phone).await;
            let t = w.store().get_topup(&id).await.expect("read").expect("exists");
            assert_eq!(t.status, TopupStatus::Unknown, "{tag}: the resolution was not written");
            w.expect
                .push((id.clone(), want, "resolved by the status query after the restart"));
            w.via_unknown.push(id);
            w.start_clean("clean").await
        }
        "rescue.before_commit" => {
            // A worker killed mid-call leaves a lease to expire; the rescue
            // of that lease crashes.
            w.rig
                .sim
                .configure(&json!({ "latency_min_ms": 3000, "latency_max_ms": 3000 }))
                .await
                .expect("configure the simulator");
            let mut first = w.start_clean("first").await;
            w.topup(&first, "r-rescue", PHONE_OK, None).await;
            let id = w.id_of("r-rescue").await.expect("accepted");
            let deadline = Instant::now() + ABORT_WITHIN;
            while w.journal_calls(&id).await == 0 {
                assert!(Instant::now() < deadline, "{tag}: never sent:\n{}", first.proc.logs());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            first.proc.sigkill().expect("SIGKILL");
            w.rig
                .sim
                .configure(&json!({ "latency_min_ms": 100, "latency_max_ms": 300 }))
                .await
                .expect("configure the simulator");
            let mut armed = w.start_armed("armed").await;
            w.expect_abort(&mut armed).await;
            let t = w.store().get_topup(&id).await.expect("read").expect("exists");
            assert_eq!(t.status, TopupStatus::Processing, "{tag}: the rescue was not written");
            w.expect
                .push((id.clone(), TopupStatus::Success, "rescued, then found delivered"));
            w.via_unknown.push(id);
            w.start_clean("clean").await
        }
        "expire.before_commit" => {
            // The upstream refuses us; an accepted top-up outlives its age
            // limit unsent; the expiry crashes before its commit.
            w.rig.env.push(("RECARGA_PENDING_MAX_AGE_S".into(), "2".into()));
            w.rig
                .sim
                .configure(&json!({ "ip_blocked": true }))
                .await
                .expect("configure the simulator");
            let mut first = w.start_clean("first").await;
            w.topup(&first, "r-expire", PHONE_OK, None).await;
            let id = w.id_of("r-expire").await.expect("accepted");
            first.proc.sigkill().expect("SIGKILL");
            let mut armed = w.start_armed("armed").await;
            w.expect_abort(&mut armed).await;
            let t = w.store().get_topup(&id).await.expect("read").expect("exists");
            assert_eq!(t.status, TopupStatus::Pending, "{tag}: the expiry was not written");
            assert_eq!(w.journal_calls(&id).await, 0, "{tag}: never sent");
            // Still blocked: the restarted gateway expires it (a claim would
            // need the upstream), then the block lifts and the age limit is
            // back to its default for the rest of the world.
            let mut expirer = w.start_clean("expirer").await;
            w.wait_status(&id, TopupStatus::Failed).await;
            let t = w.store().get_topup(&id).await.expect("read").expect("exists");
            assert_eq!(t.failure_code.as_deref(), Some("expired_not_sent"), "{tag}: {t:?}");
            expirer.proc.sigkill().expect("SIGKILL");
            w.rig.env.clear();
            w.rig
                .sim
                .configure(&json!({ "ip_blocked": false }))
                .await
                .expect("configure the simulator");
            w.expect
                .push((id.clone(), TopupStatus::Failed, "expired after the restart, never sent"));
            w.start_clean("clean").await
        }
        "adjust.before_commit" => {
            let before = (w.balance_minor().await, w.ledger_len().await);
            let args = [
                "customer", "credit", "--id", CUSTOMER, "--amount", "250", "--reason", "wire-42",
            ];
            let armed = w.cli(&args, Some(w.site)).await;
            assert_eq!(armed.signal, Some(SIGABRT), "{tag}: {armed:?}");
            assert!(
                armed.stderr.contains("failpoint adjust.before_commit hit"),
                "{tag}: {armed:?}"
            );
            assert_eq!(
                (w.balance_minor().await, w.ledger_len().await),
                before,
                "{tag}: an aborted credit moved money"
            );
            let again = w.cli_ok(&args).await;
            assert_eq!(again["entry"]["kind"], "credit", "{tag}: {again}");
            assert_eq!(w.balance_minor().await, before.0 + 25_000, "{tag}: credited once");
            let credits = w
                .store()
                .ledger(CUSTOMER, 1_000_000)
                .await
                .expect("ledger")
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("wire-42"))
                .count();
            assert_eq!(credits, 1, "{tag}: one credit entry");
            w.start_clean("clean").await
        }
        other => panic!("crash site {other} has no scenario in crash.rs: add one"),
    }
}

/// One site on one engine, end to end.
async fn crash_world(setup: Setup, site: &'static str) -> String {
    let began = Instant::now();
    let mut w = World::new(setup, site).await;
    let tag = w.tag();
    let clean = crash_at_site(&mut w).await;
    // The restarted gateway does ordinary work too.
    let after = w.topup(&clean, "r-after", PHONE_OK_2, Some(10)).await;
    w.expect.push((
        after.id.clone().expect("id"),
        TopupStatus::Success,
        "sent after the restart",
    ));
    w.settle(&clean).await;

    // Idempotency survives: every reference gives the same top-up again.
    for sent in w.sent.clone() {
        let stored = w
            .id_of(&sent.reference)
            .await
            .unwrap_or_else(|| panic!("{tag}: {} vanished", sent.reference));
        if let Some(id) = &sent.id {
            assert_eq!(&stored, id, "{tag}: {} answered {id}", sent.reference);
        }
        let (status, json) = w.post_settled(&clean, &sent.body, None).await;
        assert!(
            status.is_some_and(|s| s.is_success()),
            "{tag}: retrying {}: {status:?} {json}",
            sent.reference
        );
        assert_eq!(
            json["id"].as_str(),
            Some(stored.as_str()),
            "{tag}: retrying {}",
            sent.reference
        );
    }
    // Through UNKNOWN, and never resent.
    for id in &w.via_unknown {
        let events = w.store().events(id).await.expect("events");
        assert!(
            events.iter().any(|e| e.to_status == "UNKNOWN"),
            "{tag}: {id} did not pass through UNKNOWN: {events:?}"
        );
        assert!(w.journal_calls(id).await <= 1, "{tag}: {id} resent");
    }
    // Every 2xx answer names a top-up that is final or a listed UNKNOWN.
    let unresolved = w.cli_ok(&["topup", "unresolved"]).await;
    let journal = w.rig.sim.journal().await.expect("journal");
    let books = check_books(w.store(), &[CUSTOMER.to_string()], &journal, &unresolved).await;
    for sent in w.sent.iter().filter(|s| s.status.is_some()) {
        let id = sent.id.as_deref().expect("a 2xx names its top-up");
        assert!(
            books.topups.contains_key(id),
            "{tag}: answered {id}, which does not exist"
        );
    }
    assert!(
        books.violations.is_empty(),
        "{tag}: the books are wrong:\n  {}\n{}",
        books.violations.join("\n  "),
        clean.proc.logs()
    );
    let audit = w.cli(&["audit"], None).await;
    assert!(audit.ok(), "{tag}: recarga audit: {audit:?}");
    assert_eq!(audit.json["clean"], json!(true), "{tag}: {}", audit.stdout);
    format!(
        "{tag}: ok in {:.1} s, top-ups {:?}, 409 request_in_flight on retries {}",
        began.elapsed().as_secs_f64(),
        books.by_status,
        w.in_flight_409.load(std::sync::atomic::Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_site_keeps_the_books() {
    assert_failpoints_compiled();
    let began = Instant::now();
    let worlds: Vec<(Setup, &'static str)> = engines()
        .into_iter()
        .flat_map(|setup| SITES.iter().map(move |&site| (setup, site)))
        .collect();
    let n = worlds.len();
    let lines: Vec<String> = futures::stream::iter(worlds.into_iter().map(|(setup, site)| crash_world(setup, site)))
        .buffer_unordered(WORLDS_AT_ONCE)
        .collect()
        .await;
    for line in lines {
        println!("crash {line}");
    }
    println!(
        "crash: {n} worlds ({} sites × {} engines) in {:.1} s",
        SITES.len(),
        n / SITES.len(),
        began.elapsed().as_secs_f64()
    );
}
