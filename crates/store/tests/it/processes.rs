//! The processes that claim work (`ProcessStore`) and the workers' own
//! connections, on every engine: a dead process's claims become UNKNOWN at
//! once (never PENDING), a live one's are left alone, claims made before a
//! process joined wait for their lease; and on PostgreSQL the workers claim
//! and finish while every connection of the main pool is held.

use recarga_domain::{Currency, ExchangeKind, ExchangeOutcome, Money, TopupStatus};
use recarga_store::testing::{Engine, engines, fresh};
use recarga_store::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a dead PostgreSQL session may take to release its locks.
const LOCK_FREED_WITHIN: Duration = Duration::from_secs(10);
const CHECK_DEADLINE_MS: i64 = 3_600_000;

fn new_topup(reference: &str) -> NewTopup {
    NewTopup {
        id: recarga_domain::new_topup_id(),
        customer_id: "C1".into(),
        reference: reference.into(),
        ref_key: Some(reference.into()),
        idem_key: None,
        restart_failed: false,
        request_hash: format!("hash-{reference}"),
        phone: recarga_domain::Msisdn::parse("5512345678").expect("phone"),
        face_value: Money(2_000),
        product_id: "XOOM_20_MXN".into(),
        amount_sent: Money(2_000),
        vat: Money::ZERO,
        delivered: Money(2_000),
        discount_bps: 0,
        currency: Currency::Mxn,
        fx_rate_micro: None,
        held: Money(2_000),
        sync_wait_until: None,
        request_id: None,
    }
}

async fn setup(store: &dyn Store) {
    let new = NewCustomer {
        initial_credit: Money(100_000),
        ..NewCustomer::new("C1", "Test")
    };
    store.create_customer(&new, "test").await.expect("customer");
}

/// Accepts one top-up and claims it through `claimer`; returns it PROCESSING.
async fn claimed(store: &dyn Store, claimer: &dyn Store, reference: &str) -> Topup {
    store.accept_topup(&new_topup(reference)).await.expect("accept");
    let mut rows = claimer.claim_pending("w", 600_000, 1).await.expect("claim");
    assert_eq!(rows.len(), 1, "claimed {reference}");
    rows.pop().expect("row")
}

async fn status(store: &dyn Store, id: &str) -> TopupStatus {
    store.get_topup(id).await.expect("read").expect("exists").status
}

/// A second store on the same database: another process.
async fn another_process(engine: Engine, url: &str) -> Arc<dyn Store> {
    match engine {
        Engine::Sqlite => {
            let path = url.strip_prefix("sqlite://").expect("sqlite url");
            Arc::new(SqliteStore::open(std::path::Path::new(path)).await.expect("open"))
        }
        Engine::Postgres => Arc::new(PgStore::connect(url).await.expect("connect")),
    }
}

async fn assert_rescued(store: &dyn Store, id: &str, tag: &str) {
    let t = store.get_topup(id).await.expect("read").expect("exists");
    assert_eq!(t.status, TopupStatus::Unknown, "{tag}");
    assert_eq!(t.held, Money(2_000), "{tag}: the hold is kept");
    let events = store.events(id).await.expect("events");
    let path: Vec<&str> = events.iter().map(|e| e.to_status.as_str()).collect();
    assert_eq!(path, ["PENDING", "PROCESSING", "UNKNOWN"], "{tag}: {events:?}");
    assert_eq!(events.last().expect("event").actor, "rescuer", "{tag}");
}

#[tokio::test]
async fn a_dead_process_claims_become_unknown_at_once() {
    for engine in engines() {
        let tag = format!("{engine:?}");
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        setup(s).await;
        // Claimed before any process joined: left to the lease.
        let unjoined = claimed(s, s, "r-unjoined").await;
        let first = another_process(engine, &db.url).await;
        let id1 = first.join("first").await.expect("join");
        assert_eq!(
            first.join("first").await.expect("join again"),
            id1,
            "{tag}: once per store"
        );
        let orphan = claimed(s, first.as_ref(), "r-orphan").await;
        // While the first process lives, nobody rescues its claim.
        assert!(
            first
                .rescue_orphans(CHECK_DEADLINE_MS)
                .await
                .expect("rescue")
                .is_empty(),
            "{tag}"
        );
        if engine == Engine::Postgres {
            s.join("survivor").await.expect("join");
            assert!(
                s.rescue_orphans(CHECK_DEADLINE_MS).await.expect("rescue").is_empty(),
                "{tag}"
            );
            assert_eq!(status(s, &orphan.id).await, TopupStatus::Processing, "{tag}");
        }
        // The first process dies.
        drop(first);
        let survivor: Arc<dyn Store> = match engine {
            Engine::Postgres => db.store.clone(),
            // SQLite: a restart, which owns the database alone.
            Engine::Sqlite => {
                let restarted = another_process(engine, &db.url).await;
                assert_ne!(restarted.join("restarted").await.expect("join"), id1, "{tag}");
                restarted
            }
        };
        let deadline = Instant::now() + LOCK_FREED_WITHIN;
        let rescued = loop {
            let rescued = survivor.rescue_orphans(CHECK_DEADLINE_MS).await.expect("rescue");
            if !rescued.is_empty() || Instant::now() >= deadline {
                break rescued;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(rescued, vec![orphan.id.clone()], "{tag}");
        assert_rescued(s, &orphan.id, &tag).await;
        assert_eq!(
            status(s, &unjoined.id).await,
            TopupStatus::Processing,
            "{tag}: lease only"
        );
        assert!(
            survivor
                .rescue_orphans(CHECK_DEADLINE_MS)
                .await
                .expect("again")
                .is_empty(),
            "{tag}"
        );
        // The survivor's own claims are its own.
        let own = claimed(s, survivor.as_ref(), "r-own").await;
        assert!(
            survivor
                .rescue_orphans(CHECK_DEADLINE_MS)
                .await
                .expect("own")
                .is_empty(),
            "{tag}"
        );
        assert_eq!(status(s, &own.id).await, TopupStatus::Processing, "{tag}");
        let report = s.audit().await.expect("audit");
        assert!(report.is_clean(), "{tag}: {:?}", report.violations);
    }
}

#[tokio::test]
async fn workers_claim_and_finish_while_the_main_pool_is_held() {
    if !engines().contains(&Engine::Postgres) {
        eprintln!("skipped: workers_claim_and_finish_while_the_main_pool_is_held: needs TEST_DATABASE_URL");
        return;
    }
    let db = fresh(Engine::Postgres).await;
    setup(db.store.as_ref()).await;
    let small = PgStore::connect_with(&db.url, 2).await.expect("connect");
    db.store.accept_topup(&new_topup("r-1")).await.expect("accept");
    // Requests hold every connection of the main pool.
    let held = (
        small.pool().acquire().await.expect("1"),
        small.pool().acquire().await.expect("2"),
    );
    let mut rows = small.claim_pending("w", 600_000, 1).await.expect("claim while held");
    let t = rows.pop().expect("claimed");
    let finish = Finish {
        topup_id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        lease_owner: t.lease_owner.clone().expect("leased"),
        outcome: AttemptOutcome::Success {
            trans_id: Some("LT9".into()),
            ven_transid: Some("V9".into()),
        },
        exchange: NewExchange::new(ExchangeKind::Topup, "test", ExchangeOutcome::Success),
    };
    let done = small
        .finish_attempt(&finish)
        .await
        .expect("finish while held")
        .expect("ours");
    drop(held);
    assert_eq!(done.status, TopupStatus::Success);
    assert_eq!(done.upstream_trans_id.as_deref(), Some("LT9"));
}
