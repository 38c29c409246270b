//! Hardening of the money path: an upstream answer arriving while the
//! database will not take the write.
//!
//! **A definite answer while the database is busy** (a gateway in this
//! process): writes of outcomes that fail for longer than the old five tries
//! (a trigger refuses them, on both engines), and on PostgreSQL a main pool
//! whose every connection is held: the top-up still ends SUCCESS with
//! Latcom's `transId`, never UNKNOWN.

use crate::common::procs::client;
use crate::common::{Opts, TestApp, body, engines, runtime_config, skipped};
use recarga_domain::TopupStatus;
use recarga_server::serve::{self, Roles};
use recarga_server::state::App;
use recarga_store::testing::{Engine, TestDb, fresh};
use recarga_store::{PgStore, Store, Topup};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest a top-up may take to reach the simulator.
const SENT_WITHIN: Duration = Duration::from_secs(30);

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
                upstream_timeout_s: 5,
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
        upstream_timeout_s: 10,
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
