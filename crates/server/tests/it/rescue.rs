//! Hardening of the money path's two worst moments: a process dying with
//! upstream calls in flight, and an upstream answer arriving while the
//! database will not take the write.
//!
//! **A dead process's claims** (the real binary, a standalone simulator that
//! holds every call for [`SIM_HOLD_MS`], leases of the default 120 s): after
//! `kill -9` its PROCESSING top-ups become UNKNOWN within [`RESCUE_WITHIN`]
//! (10 s, the issue's bound) of the restarted process being up, or, on
//! PostgreSQL, of the kill while another replica stays alive; never PENDING,
//! never resent. A live replica's claims are left alone.
//!
//! **A definite answer while the database is busy** (a gateway in this
//! process): writes of outcomes that fail for longer than the old five tries
//! (a trigger refuses them, on both engines), and on PostgreSQL a main pool
//! whose every connection is held: the top-up still ends SUCCESS with
//! Latcom's `transId`, never UNKNOWN.

use crate::common::procs::{Rig, client, start_sim};
use crate::common::{Opts, TestApp, body, engines, runtime_config, skipped};
use recarga_domain::TopupStatus;
use recarga_server::serve::{self, Roles};
use recarga_server::state::App;
use recarga_store::testing::{Engine, TestDb, fresh, temp_dir};
use recarga_store::{PgStore, Store, Topup};
use recarga_testkit::Gateway;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The issue's bound: a dead owner's top-ups are UNKNOWN within this.
const RESCUE_WITHIN: Duration = Duration::from_secs(10);
/// The simulator holds every call this long, so calls are in flight at the kill.
const SIM_HOLD_MS: u64 = 60_000;
/// Top-ups in flight at the kill.
const IN_FLIGHT: usize = 3;
/// Longest a top-up may take to reach the simulator.
const SENT_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------

/// A gateway of the rig with the default lease (120 s: its expiry cannot be
/// what rescues within the bound) and an upstream timeout above the
/// simulator's hold.
async fn start_gateway(rig: &Rig, name: &str) -> Gateway {
    let mut cmd = rig.command(None);
    cmd.arg("serve")
        .env("RECARGA_DEMO", "false")
        .env("RECARGA_LEASE_S", "120")
        .env("RECARGA_UPSTREAM_TIMEOUT_S", "90")
        .env("QUEUE_CONCURRENCY", "8")
        .envs(rig.sim.gateway_env());
    let port = crate::common::procs::free_port();
    Gateway::start(cmd, &rig.work, name, port, &client())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn new_rig(engine: Engine) -> (TestDb, Rig, String) {
    let db = fresh(engine).await;
    let work = temp_dir("rescue");
    let sim = start_sim(&work, &format!("{SIM_HOLD_MS}-{SIM_HOLD_MS}"), None).await;
    let rig = Rig {
        work,
        db_url: db.url.clone(),
        redis: None,
        sim,
        env: Vec::new(),
    };
    let created = rig
        .cli(
            &["customer", "create", "--id", "C1", "--name", "C1", "--credit", "1000"],
            None,
        )
        .await;
    assert!(created.ok(), "{engine:?}: customer create: {created:?}");
    let key = created.json["api_key"].as_str().expect("api_key").to_string();
    (db, rig, key)
}

/// Sends [`IN_FLIGHT`] top-ups through `gw` and waits until the simulator
/// holds every one of them; returns their ids.
async fn send_in_flight(rig: &Rig, gw: &Gateway, key: &str) -> Vec<String> {
    let http = client();
    let mut ids = Vec::new();
    for i in 0..IN_FLIGHT {
        let res = http
            .post(format!("{}/v1/topups", gw.base))
            .bearer_auth(key)
            .json(&body(&format!("551234000{i}"), "20", &format!("r-{i}")))
            .send()
            .await
            .expect("POST /v1/topups");
        assert!(res.status().is_success(), "{}", res.status());
        let json: Value = res.json().await.expect("json");
        ids.push(json["id"].as_str().expect("id").to_string());
    }
    let deadline = Instant::now() + SENT_WITHIN;
    loop {
        let journal = rig.sim.journal().await.expect("journal");
        if ids.iter().all(|id| journal["entries"][id]["calls"].as_u64() == Some(1)) {
            return ids;
        }
        assert!(Instant::now() < deadline, "not all sent: {journal}\n{}", gw.proc.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn statuses(store: &dyn Store, ids: &[String]) -> Vec<TopupStatus> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.get_topup(id).await.expect("read").expect("exists").status);
    }
    out
}

/// Whether `id` was rescued: PROCESSING → UNKNOWN by the rescuer.
async fn rescued(store: &dyn Store, id: &str) -> bool {
    let events = store.events(id).await.expect("events");
    events
        .iter()
        .any(|e| e.actor == "rescuer" && e.from_status.as_deref() == Some("PROCESSING") && e.to_status == "UNKNOWN")
}

/// Waits (at most [`RESCUE_WITHIN`] from `since`) until every one of `ids`
/// was rescued to UNKNOWN (the status query may settle it right after: the
/// simulator knows); then checks none went back to PENDING and each reached
/// the simulator exactly once.
async fn assert_rescued(
    store: &dyn Store,
    rig: &Rig,
    ids: &[String],
    since: Instant,
    tag: &str,
    logs: impl Fn() -> String,
) {
    loop {
        let mut waiting = Vec::new();
        for id in ids {
            if !rescued(store, id).await {
                waiting.push(id.clone());
            }
        }
        if waiting.is_empty() {
            println!(
                "{tag}: {} in-flight top-ups rescued to UNKNOWN within {:.1} s",
                ids.len(),
                since.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            since.elapsed() < RESCUE_WITHIN,
            "{tag}: not rescued within {RESCUE_WITHIN:?}: {waiting:?} {:?}\n{}",
            statuses(store, ids).await,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let journal = rig.sim.journal().await.expect("journal");
    for id in ids {
        let events = store.events(id).await.expect("events");
        let path: Vec<&str> = events.iter().map(|e| e.to_status.as_str()).collect();
        assert_eq!(
            path[..3],
            ["PENDING", "PROCESSING", "UNKNOWN"],
            "{tag}: {id}: {events:?}"
        );
        assert!(
            !path[1..].contains(&"PENDING"),
            "{tag}: {id} back to PENDING: {events:?}"
        );
        assert_eq!(
            journal["entries"][id]["calls"],
            json!(1),
            "{tag}: {id} resent: {journal}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_rescues_in_flight_topups_within_10_s() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        if !recarga_store::testing::engines().contains(&engine) {
            skipped(
                "kill_9_then_restart_rescues_in_flight_topups_within_10_s on PostgreSQL",
                "TEST_DATABASE_URL is not set",
            );
            continue;
        }
        let tag = format!("{engine:?}");
        let (db, rig, key) = new_rig(engine).await;
        let mut first = start_gateway(&rig, "first").await;
        let ids = send_in_flight(&rig, &first, &key).await;
        first.proc.sigkill().expect("SIGKILL");
        assert_eq!(
            statuses(db.store.as_ref(), &ids).await,
            vec![TopupStatus::Processing; IN_FLIGHT],
            "{tag}: in flight at the kill"
        );
        let second = start_gateway(&rig, "second").await;
        let up = Instant::now();
        assert_rescued(db.store.as_ref(), &rig, &ids, up, &tag, || second.proc.logs()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_replica_rescues_a_dead_ones_topups_within_10_s() {
    if !recarga_store::testing::engines().contains(&Engine::Postgres) {
        skipped(
            "a_live_replica_rescues_a_dead_ones_topups_within_10_s",
            "needs TEST_DATABASE_URL (PostgreSQL)",
        );
        return;
    }
    let (db, rig, key) = new_rig(Engine::Postgres).await;
    let mut doomed = start_gateway(&rig, "doomed").await;
    let ids = send_in_flight(&rig, &doomed, &key).await;
    // The survivor starts while the doomed replica lives: its claims are left alone.
    let survivor = start_gateway(&rig, "survivor").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        statuses(db.store.as_ref(), &ids).await,
        vec![TopupStatus::Processing; IN_FLIGHT],
        "a live replica's claims were rescued:\n{}",
        survivor.proc.logs()
    );
    doomed.proc.sigkill().expect("SIGKILL");
    let killed = Instant::now();
    assert_rescued(db.store.as_ref(), &rig, &ids, killed, "Postgres replica", || {
        survivor.proc.logs()
    })
    .await;
}

// ---------------------------------------------------------------------------
// A definite answer while the database is busy
// ---------------------------------------------------------------------------

/// Longer than the old five tries of a finish (1 + 2 + 3 + 4 + 5 s of pauses).
const REFUSE_FOR: Duration = Duration::from_secs(20);
/// Lease of these gateways: longer than [`REFUSE_FOR`] and the wait after it.
const BUSY_LEASE_S: u64 = 90;
/// How long an answer may take to be written once the database takes writes.
const WRITTEN_WITHIN: Duration = Duration::from_secs(30);

const REFUSE_PG: &str = "
CREATE FUNCTION test_refuse_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'test: the database refuses this write'; END $$;
CREATE TRIGGER test_refuse_final BEFORE UPDATE ON topups FOR EACH ROW
    WHEN (NEW.status IN ('SUCCESS', 'FAILED')) EXECUTE FUNCTION test_refuse_final();";
const REFUSE_SQLITE: &str = "
CREATE TRIGGER test_refuse_final BEFORE UPDATE ON topups FOR EACH ROW
    WHEN NEW.status IN ('SUCCESS', 'FAILED')
BEGIN SELECT RAISE(ABORT, 'test: the database refuses this write'); END;";

const ALLOW_PG: &str = "DROP TRIGGER test_refuse_final ON topups";
const ALLOW_SQLITE: &str = "DROP TRIGGER test_refuse_final";

/// Runs `sql` (several statements) on the test database, apart from the gateway's pools.
async fn raw(db: &TestDb, engine: Engine, sql: &'static str) {
    match engine {
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("raw sql");
            pool.close().await;
        }
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&pool).await.expect("raw sql");
            pool.close().await;
        }
    }
}

/// Checks the top-up was settled by its worker's own answer: SUCCESS with the
/// simulator's `transId`, never UNKNOWN, delivered once.
async fn assert_settled_by_its_answer(
    store: &dyn Store,
    sandbox: &recarga_upstream::sim::Simulator,
    t: &Topup,
    tag: &str,
) {
    let entry = sandbox.journal_entry(&t.id).expect("the simulator has it");
    assert_eq!((entry.calls, entry.deliveries), (1, 1), "{tag}");
    assert_eq!(t.status, TopupStatus::Success, "{tag}: {t:?}");
    assert_eq!(
        t.upstream_trans_id.as_deref(),
        Some(entry.trans_id.as_str()),
        "{tag}: {t:?}"
    );
    let events = store.events(&t.id).await.expect("events");
    let path: Vec<&str> = events.iter().map(|e| e.to_status.as_str()).collect();
    assert_eq!(path, ["PENDING", "PROCESSING", "SUCCESS"], "{tag}: {events:?}");
}

/// Waits until the simulator has delivered `id`.
async fn wait_delivered(sandbox: &recarga_upstream::sim::Simulator, id: &str) {
    let deadline = Instant::now() + SENT_WITHIN;
    while sandbox.journal_entry(id).is_none_or(|e| e.deliveries == 0) {
        assert!(Instant::now() < deadline, "{id} never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definite_answer_is_written_once_the_database_takes_writes_again() {
    for setup in engines().into_iter().filter(|s| s.redis_url.is_none()) {
        let tag = format!("{setup:?}");
        let t = TestApp::spawn_with(
            setup,
            Opts {
                latency_ms: (500, 500),
                // Generous: a call timed out on a loaded machine would be an
                // UNKNOWN of its own, not what this test is about.
                upstream_timeout_s: 30,
                lease_s: BUSY_LEASE_S,
                ..Opts::default()
            },
        )
        .await;
        let (_, key) = t.customer("C1", "100").await;
        let refuse = if setup.engine == Engine::Postgres {
            REFUSE_PG
        } else {
            REFUSE_SQLITE
        };
        raw(&t.db, setup.engine, refuse).await;
        let (status, json) = t.topup(&key, body("5512340001", "20", "busy"), None).await;
        assert!(status.is_success(), "{tag}: {json}");
        let id = json["id"].as_str().expect("id").to_string();
        wait_delivered(&t.sandbox, &id).await;
        // Every write of the answer fails, for longer than the old five tries.
        tokio::time::sleep(REFUSE_FOR).await;
        let held = t.store().get_topup(&id).await.expect("read").expect("exists");
        assert_eq!(
            held.status,
            TopupStatus::Processing,
            "{tag}: written though refused: {:?}",
            t.store().events(&id).await
        );
        let allow = if setup.engine == Engine::Postgres {
            ALLOW_PG
        } else {
            ALLOW_SQLITE
        };
        raw(&t.db, setup.engine, allow).await;
        let done = t
            .wait_for(&id, WRITTEN_WITHIN, |x| x.status != TopupStatus::Processing)
            .await;
        assert_settled_by_its_answer(t.store(), &t.sandbox, &done, &tag).await;
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definite_answer_is_written_while_requests_hold_every_pool_connection() {
    if !recarga_store::testing::engines().contains(&Engine::Postgres) {
        skipped(
            "a_definite_answer_is_written_while_requests_hold_every_pool_connection",
            "needs TEST_DATABASE_URL (PostgreSQL; SQLite has one writer, covered above)",
        );
        return;
    }
    let db = fresh(Engine::Postgres).await;
    // RECARGA_DB_POOL_MAX=2, the smallest pool.
    let small = Arc::new(PgStore::connect_with(&db.url, 2).await.expect("connect"));
    let opts = Opts {
        latency_ms: (2_000, 2_000),
        upstream_timeout_s: 30,
        lease_s: BUSY_LEASE_S,
        ..Opts::default()
    };
    let store: Arc<dyn Store> = small.clone();
    let (app, sim) = App::build(store, runtime_config(&opts), None).await.expect("build");
    let sandbox = sim.expect("sandbox");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let roles = Roles {
        http: true,
        workers: true,
    };
    let run = tokio::spawn(serve::run(app, Some(listener), roles, stop.clone()));
    let customer = recarga_store::NewCustomer {
        initial_credit: recarga_domain::Money::major(100),
        ..recarga_store::NewCustomer::new("C1", "C1")
    };
    db.store.create_customer(&customer, "test").await.expect("customer");
    let (key, _) = recarga_service::keys::issue_key(db.store.as_ref(), "C1", None, "test")
        .await
        .expect("key");
    let res = client()
        .post(format!("{base}/v1/topups"))
        .bearer_auth(&key)
        .json(&body("5512340001", "20", "saturated"))
        .send()
        .await
        .expect("POST");
    assert!(res.status().is_success(), "{}", res.status());
    let id = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let deadline = Instant::now() + SENT_WITHIN;
    while sandbox.journal_entry(&id).is_none() {
        assert!(Instant::now() < deadline, "{id} never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Requests (here: the test) hold every connection of the pool while the answer arrives.
    // (The notification listener keeps one of them for itself.)
    let mut held = Vec::new();
    while let Ok(conn) = tokio::time::timeout(Duration::from_secs(1), small.pool().acquire()).await {
        held.push(conn.expect("hold a connection"));
    }
    assert_eq!(small.pool().num_idle(), 0, "the pool is saturated");
    wait_delivered(&sandbox, &id).await;
    let deadline = Instant::now() + WRITTEN_WITHIN;
    let done = loop {
        let t = db.store.get_topup(&id).await.expect("read").expect("exists");
        if t.status != TopupStatus::Processing {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the answer was not written while the pool was held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(held);
    assert_settled_by_its_answer(db.store.as_ref(), &sandbox, &done, "Postgres, pool held").await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), run).await;
}
