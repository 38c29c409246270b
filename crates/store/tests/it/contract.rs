//! The store contract: every `Store` method, run against every engine the
//! environment offers (SQLite always; PostgreSQL when `TEST_DATABASE_URL` is
//! set), each on a fresh database. Both implementations must behave the same.

use recarga_domain::Refusal;
use recarga_domain::{Currency, ExchangeKind, ExchangeOutcome, Money, TopupStatus};
use recarga_store::testing::{Engine, engines, fresh};
use recarga_store::*;
use std::sync::Arc;

fn new_topup(customer: &str, reference: &str, held: i64) -> NewTopup {
    NewTopup {
        id: recarga_domain::new_topup_id(),
        customer_id: customer.into(),
        reference: reference.into(),
        ref_key: Some(reference.into()),
        idem_key: None,
        restart_failed: false,
        request_hash: format!("hash-{reference}"),
        phone: recarga_domain::Msisdn::parse("5512345678").expect("phone"),
        face_value: Money(held),
        product_id: "XOOM_20_MXN".into(),
        amount_sent: Money(held),
        vat: Money::ZERO,
        delivered: Money(held),
        discount_bps: 0,
        currency: Currency::Mxn,
        fx_rate_micro: None,
        held: Money(held),
        sync_wait_until: None,
        request_id: Some(format!("req-{reference}")),
    }
}

async fn customer(store: &dyn Store, id: &str, credit: i64) -> Customer {
    let new = NewCustomer {
        initial_credit: Money(credit),
        ..NewCustomer::new(id, "Test")
    };
    store.create_customer(&new, "test").await.expect("create customer")
}

async fn accept(store: &dyn Store, customer: &str, reference: &str, held: i64) -> Topup {
    match store
        .accept_topup(&new_topup(customer, reference, held))
        .await
        .expect("accept")
    {
        Accepted::New(t) => t,
        Accepted::Existing(t) => panic!("unexpected existing {}", t.id),
    }
}

fn success() -> AttemptOutcome {
    AttemptOutcome::Success {
        trans_id: Some("LT1".into()),
        ven_transid: Some("887766".into()),
    }
}

fn finish(t: &Topup, outcome: AttemptOutcome) -> Finish {
    Finish {
        topup_id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        lease_owner: t.lease_owner.clone().expect("leased"),
        outcome,
        exchange: NewExchange::new(ExchangeKind::Topup, "test", ExchangeOutcome::Unknown),
    }
}

async fn assert_clean(store: &dyn Store, engine: Engine) {
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{engine:?}: {:?}", report.violations);
}

#[tokio::test]
async fn customers_and_adjustments() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        let c = customer(s, "C1", 10_000).await;
        assert_eq!(c.balance, Money(10_000));
        assert!(matches!(
            s.create_customer(&NewCustomer::new("C1", "again"), "test").await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(s.list_customers().await.unwrap().len(), 1);
        assert!(s.get_customer("nope").await.unwrap().is_none());

        let credit = Adjustment {
            customer_id: "C1".into(),
            amount: Money(550),
            actor: "ops".into(),
            reason: "wire".into(),
        };
        let e = s.adjust_balance(&credit).await.unwrap();
        assert_eq!((e.kind.as_str(), e.balance_after), ("credit", Money(10_550)));
        let debit = Adjustment {
            amount: Money(-10_550),
            ..credit.clone()
        };
        assert_eq!(s.adjust_balance(&debit).await.unwrap().kind, "debit");
        let too_much = Adjustment {
            amount: Money(-1),
            ..credit.clone()
        };
        let r = s.adjust_balance(&too_much).await;
        assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{engine:?}: {r:?}");
        let no_reason = Adjustment {
            reason: " ".into(),
            ..credit.clone()
        };
        assert!(matches!(
            s.adjust_balance(&no_reason).await,
            Err(StoreError::Constraint(_))
        ));
        let nobody = Adjustment {
            customer_id: "ghost".into(),
            ..credit.clone()
        };
        assert!(matches!(s.adjust_balance(&nobody).await, Err(StoreError::NotFound)));

        // The credit limit lets the balance go below zero, and no further.
        let patch = CustomerPatch {
            credit_limit: Some(Money(500)),
            ..Default::default()
        };
        assert_eq!(
            s.update_customer("C1", &patch, "ops").await.unwrap().credit_limit,
            Money(500)
        );
        let overdraw = Adjustment {
            amount: Money(-500),
            ..credit.clone()
        };
        assert_eq!(s.adjust_balance(&overdraw).await.unwrap().balance_after, Money(-500));
        assert!(matches!(
            s.adjust_balance(&too_much).await,
            Err(StoreError::InsufficientFunds)
        ));
        // Lowering the limit under the current overdraft is refused by the database.
        let lower = CustomerPatch {
            credit_limit: Some(Money(100)),
            ..Default::default()
        };
        assert!(matches!(
            s.update_customer("C1", &lower, "ops").await,
            Err(StoreError::Constraint(_))
        ));

        let ledger = s.ledger("C1", 10).await.unwrap();
        assert_eq!(ledger.len(), 4);
        assert_eq!(ledger[0].balance_after, Money(-500));
        assert_clean(s, engine).await;
    }
}

/// A customer names its import run once the old system's import brought it
/// over (`recarga import legacy`); only those count as imported.
#[tokio::test]
async fn imported_customers_are_counted() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "NEW_001", 0).await;
        customer(s, "OLD_001", 0).await;
        customer(s, "OLD_002", 0).await;
        assert_eq!(s.count_imported_customers().await.unwrap(), 0, "{engine:?}");
        let mark = [
            "INSERT INTO import_runs (id, source, started_at) VALUES ('run-1', 'postgres://old', 1)",
            "UPDATE customers SET import_run = 'run-1' WHERE id IN ('OLD_001', 'OLD_002')",
        ];
        for sql in mark {
            match engine {
                Engine::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
                Engine::Postgres => {
                    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
            }
        }
        assert_eq!(s.count_imported_customers().await.unwrap(), 2, "{engine:?}");
    }
}

#[tokio::test]
async fn api_keys_are_found_by_prefix_and_revocable() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 0).await;
        let key = NewApiKey {
            id: "key_1".into(),
            customer_id: "C1".into(),
            prefix: "abcdef012345".into(),
            digest: "d".repeat(64),
            kind: "issued".into(),
            hint: None,
            label: Some("main".into()),
        };
        s.insert_api_key(&key, "ops").await.unwrap();
        assert!(matches!(
            s.insert_api_key(&key, "ops").await,
            Err(StoreError::AlreadyExists(_))
        ));
        let found = s.find_api_key("abcdef012345").await.unwrap().unwrap();
        assert_eq!((found.customer_id.as_str(), found.revoked_at), ("C1", None));
        assert_eq!(s.list_api_keys("C1").await.unwrap().len(), 1);
        // The request path reads the key with its customer's current row.
        let (k, c) = s.find_caller("abcdef012345").await.unwrap().unwrap();
        assert_eq!((k, c), (found.clone(), s.get_customer("C1").await.unwrap().unwrap()));
        assert!(s.find_caller("000000000000").await.unwrap().is_none());
        let revoked = s.revoke_api_key("abcdef012345", "ops").await.unwrap();
        let (k, _) = s.find_caller("abcdef012345").await.unwrap().unwrap();
        assert_eq!(k.revoked_at, revoked.revoked_at);
        assert!(revoked.revoked_at.is_some());
        assert!(
            s.find_api_key("abcdef012345")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert!(matches!(
            s.revoke_api_key("missing", "ops").await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn accept_is_idempotent_and_enforces_funds_limits_and_status() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 5_000).await;
        let t = accept(s, "C1", "r1", 2_000).await;
        assert_eq!(t.status, TopupStatus::Pending);
        assert_eq!(s.get_customer("C1").await.unwrap().unwrap().balance, Money(3_000));
        // Same reference: the existing row, no second hold.
        match s.accept_topup(&new_topup("C1", "r1", 2_000)).await.unwrap() {
            Accepted::Existing(e) => assert_eq!(e.id, t.id),
            Accepted::New(_) => panic!("reference accepted twice"),
        }
        assert_eq!(s.get_customer("C1").await.unwrap().unwrap().balance, Money(3_000));
        assert!(matches!(
            s.accept_topup(&new_topup("C1", "r2", 3_001)).await,
            Err(StoreError::Refused(Refusal::InsufficientFunds { .. }))
        ));
        // A refused accept leaves no row behind, so the reference stays free.
        assert!(s.find_topup_by_reference("C1", "r2").await.unwrap().is_none());

        let daily = CustomerPatch {
            daily_limit: Some(Some(Money(2_500))),
            ..Default::default()
        };
        s.update_customer("C1", &daily, "ops").await.unwrap();
        assert!(matches!(
            s.accept_topup(&new_topup("C1", "r3", 600)).await,
            Err(StoreError::Refused(Refusal::DailyLimit { .. }))
        ));
        accept(s, "C1", "r4", 500).await;
        let off = CustomerPatch {
            active: Some(false),
            daily_limit: Some(None),
            ..Default::default()
        };
        s.update_customer("C1", &off, "ops").await.unwrap();
        assert!(matches!(
            s.accept_topup(&new_topup("C1", "r5", 100)).await,
            Err(StoreError::Refused(Refusal::Inactive))
        ));

        let by_ref = s.find_topup_by_reference("C1", "r1").await.unwrap().unwrap();
        assert_eq!(by_ref.id, t.id);
        let events = s.events(&t.id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].to_status, "PENDING");
        assert_clean(s, engine).await;
    }
}

#[tokio::test]
async fn claim_finish_and_lease_guard() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 10_000).await;
        let a = accept(s, "C1", "a", 1_000).await;
        let b = accept(s, "C1", "b", 1_000).await;
        let c = accept(s, "C1", "c", 1_000).await;
        let d = accept(s, "C1", "d", 1_000).await;
        let claimed = s.claim_pending("w1", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 4);
        assert!(
            claimed
                .iter()
                .all(|t| t.status == TopupStatus::Processing && t.attempts == 1)
        );
        assert!(
            s.claim_pending("w2", 60_000, 10).await.unwrap().is_empty(),
            "nothing claimed twice"
        );
        let by_id = |id: &str| claimed.iter().find(|t| t.id == id).cloned().unwrap();

        // A stranger's lease cannot finish it; the exchange is still kept as evidence.
        let mut stranger = finish(&by_id(&a.id), success());
        stranger.lease_owner = "w2/other".into();
        assert!(s.finish_attempt(&stranger).await.unwrap().is_none());
        assert_eq!(s.exchanges(&a.id).await.unwrap().len(), 1);

        let done = s
            .finish_attempt(&finish(&by_id(&a.id), success()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status, TopupStatus::Success);
        assert_eq!(done.upstream_ven_transid.as_deref(), Some("887766"));
        let failed = AttemptOutcome::Failed {
            code: "-120054".into(),
            message: "Product not Found".into(),
        };
        let f = s.finish_attempt(&finish(&by_id(&b.id), failed)).await.unwrap().unwrap();
        assert_eq!(
            (f.status, f.failure_code.as_deref()),
            (TopupStatus::Failed, Some("-120054"))
        );
        let retry = AttemptOutcome::Retry {
            next_attempt_at: 0,
            reason: "connect refused".into(),
            count_attempt: true,
        };
        assert_eq!(
            s.finish_attempt(&finish(&by_id(&c.id), retry))
                .await
                .unwrap()
                .unwrap()
                .status,
            TopupStatus::Pending
        );
        let unknown = AttemptOutcome::Unknown {
            reason: "timeout".into(),
            trans_id: None,
            next_check_at: 0,
            check_deadline: now_ms() + 60_000,
        };
        assert_eq!(
            s.finish_attempt(&finish(&by_id(&d.id), unknown))
                .await
                .unwrap()
                .unwrap()
                .status,
            TopupStatus::Unknown
        );

        // Finals are final: a second finish changes nothing.
        assert!(
            s.finish_attempt(&finish(&by_id(&a.id), success()))
                .await
                .unwrap()
                .is_none()
        );
        // The retried one is claimable again, with its attempt counted.
        let again = s.claim_pending("w1", 60_000, 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
        // 10.00 captured, 10.00 released, 10.00 + 10.00 held.
        assert_eq!(s.get_customer("C1").await.unwrap().unwrap().balance, Money(7_000));
        let backlog = s.queue_backlog().await.unwrap();
        assert_eq!((backlog.pending, backlog.processing, backlog.unknown), (0, 1, 1));
        assert_eq!(backlog.oldest_pending_ms, None);
        let counts = s.queue_counts().await.unwrap();
        assert_eq!(
            (counts.success, counts.failed, counts.unknown, counts.processing),
            (1, 1, 1, 1)
        );
        assert_clean(s, engine).await;
    }
}

#[tokio::test]
async fn expired_leases_become_unknown_and_resolve_once() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 10_000).await;
        let t = accept(s, "C1", "x", 2_500).await;
        let u = accept(s, "C1", "y", 2_500).await;
        let claimed = s.claim_pending("dead-worker", -1, 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let rescued = s.rescue_expired(60_000).await.unwrap();
        assert_eq!(rescued.len(), 2);
        assert_eq!(s.get_topup(&t.id).await.unwrap().unwrap().status, TopupStatus::Unknown);
        assert!(
            s.claim_pending("w", 60_000, 10).await.unwrap().is_empty(),
            "UNKNOWN is never resent"
        );
        // A late definite answer from the dead worker may still settle it.
        let late = finish(&claimed.iter().find(|x| x.id == u.id).cloned().unwrap(), success());
        assert_eq!(
            s.finish_attempt(&late).await.unwrap().unwrap().status,
            TopupStatus::Success
        );

        let due = s.claim_status_checks(60_000, 10).await.unwrap();
        assert_eq!(due.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [t.id.as_str()]);
        assert!(
            s.claim_status_checks(60_000, 10).await.unwrap().is_empty(),
            "held while being checked"
        );
        let ex = NewExchange::new(ExchangeKind::Status, "test", ExchangeOutcome::Unknown);
        s.record_check(&t.id, &ex, 0).await.unwrap();
        assert_eq!(s.claim_status_checks(60_000, 10).await.unwrap()[0].checks, 2);

        let resolution = Resolution {
            topup_id: t.id.clone(),
            outcome: FinalOutcome::Failed,
            actor: "ops".into(),
            reason: "carrier statement: absent".into(),
            trans_id: None,
            ven_transid: None,
            exchange: None,
        };
        let r = s.resolve_unknown(&resolution).await.unwrap();
        assert_eq!(r.status, TopupStatus::Failed);
        assert!(
            matches!(s.resolve_unknown(&resolution).await, Err(StoreError::WrongState(_))),
            "resolved once"
        );
        assert!(s.list_unknown().await.unwrap().is_empty());
        assert_eq!(s.get_customer("C1").await.unwrap().unwrap().balance, Money(7_500));
        assert_clean(s, engine).await;
    }
}

#[tokio::test]
async fn listing_filters_and_pages() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 100_000).await;
        customer(s, "C2", 100_000).await;
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(accept(s, "C1", &format!("r{i}"), 1_000).await.id);
        }
        accept(s, "C2", "r0", 1_000).await;
        let mut seen = Vec::new();
        let mut filter = TopupFilter {
            customer_id: Some("C1".into()),
            limit: 3,
            ..Default::default()
        };
        loop {
            let page = s.list_topups(&filter).await.unwrap();
            seen.extend(page.iter().map(|t| t.id.clone()));
            if page.len() < 3 {
                break;
            }
            filter.before_id = page.last().map(|t| t.id.clone());
        }
        ids.reverse();
        assert_eq!(seen, ids, "newest first, every row once");
        let by_ref = TopupFilter {
            customer_id: Some("C2".into()),
            reference: Some("r0".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(s.list_topups(&by_ref).await.unwrap().len(), 1);
        let pending = TopupFilter {
            status: Some(TopupStatus::Success),
            limit: 10,
            ..Default::default()
        };
        assert!(s.list_topups(&pending).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accepts_never_pass_the_credit_limit() {
    for engine in engines() {
        let db = fresh(engine).await;
        let store = db.store.clone();
        customer(store.as_ref(), "HOT", 50 * 2_000).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s: Arc<dyn Store> = store.clone();
                tokio::spawn(async move { s.accept_topup(&new_topup("HOT", &format!("r{i}"), 2_000)).await })
            })
            .collect();
        let mut accepted = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Accepted::New(_)) => accepted += 1,
                Err(StoreError::Refused(Refusal::InsufficientFunds { .. })) => refused += 1,
                other => panic!("{engine:?}: unexpected {other:?}"),
            }
        }
        assert_eq!((accepted, refused), (50, 150), "{engine:?}");
        assert_eq!(store.get_customer("HOT").await.unwrap().unwrap().balance, Money::ZERO);
        assert_clean(store.as_ref(), engine).await;
    }
}

#[tokio::test]
async fn the_ledger_is_append_only_and_audit_catches_tampering() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "C1", 1_000).await;
        accept(s, "C1", "r", 500).await;
        assert_clean(s, engine).await;
        let tamper: [&str; 3] = [
            "UPDATE ledger SET amount = amount + 1",
            "DELETE FROM ledger",
            "UPDATE customers SET balance = balance + 1",
        ];
        match engine {
            Engine::Sqlite => {
                let path = db.url.trim_start_matches("sqlite://");
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}")).await.unwrap();
                assert!(
                    sqlx::query(tamper[0]).execute(&pool).await.is_err(),
                    "ledger UPDATE refused"
                );
                assert!(
                    sqlx::query(tamper[1]).execute(&pool).await.is_err(),
                    "ledger DELETE refused"
                );
                sqlx::query(tamper[2]).execute(&pool).await.unwrap();
            }
            Engine::Postgres => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                assert!(
                    sqlx::query(tamper[0]).execute(&pool).await.is_err(),
                    "ledger UPDATE refused"
                );
                assert!(
                    sqlx::query(tamper[1]).execute(&pool).await.is_err(),
                    "ledger DELETE refused"
                );
                sqlx::query(tamper[2]).execute(&pool).await.unwrap();
            }
        }
        let report = s.audit().await.unwrap();
        assert!(
            !report.is_clean(),
            "{engine:?}: audit missed a balance changed without a ledger entry"
        );
        assert!(
            report.violations.iter().any(|v| v.contains("C1")),
            "{:?}",
            report.violations
        );
    }
}

/// One batch, one transaction, one answer per request in arrival order: a
/// replay, a duplicate inside the batch, refusals by funds and daily limit
/// that later (smaller) requests may still pass, another customer, an unknown
/// customer.
#[tokio::test]
async fn a_batch_answers_each_request_in_arrival_order() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "A", 5_000).await;
        customer(s, "B", 1_000).await;
        let first = accept(s, "A", "old", 1_000).await;
        let daily = CustomerPatch {
            daily_limit: Some(Some(Money(3_000))),
            ..Default::default()
        };
        s.update_customer("B", &daily, "ops").await.unwrap();

        let batch = vec![
            new_topup("A", "old", 1_000), // 0: replay of a committed row
            new_topup("A", "a1", 2_500),  // 1: new, balance 4,000 → 1,500
            new_topup("B", "b1", 600),    // 2: new for B, 1,000 → 400
            new_topup("A", "a1", 2_500),  // 3: duplicate of 1 inside the batch
            new_topup("A", "a2", 1_600),  // 4: insufficient (1,500 left)
            new_topup("A", "a3", 1_500),  // 5: fits exactly → 0
            new_topup("NOPE", "x", 100),  // 6: unknown customer
            new_topup("B", "b2", 500),    // 7: insufficient (400 left)
            new_topup("B", "b3", 400),    // 8: fits → 0
        ];
        let answers = s.accept_topups(&batch).await.expect("batch");
        assert_eq!(answers.len(), batch.len(), "{engine:?}");
        let new_id = |i: usize| match &answers[i] {
            Ok(Accepted::New(t)) => {
                assert_eq!(t.id, batch[i].id, "{engine:?}: answer {i} is another request's row");
                t.id.clone()
            }
            other => panic!("{engine:?}: answer {i}: {other:?}"),
        };
        match &answers[0] {
            Ok(Accepted::Existing(t)) => assert_eq!(t.id, first.id),
            other => panic!("{engine:?}: replay answered {other:?}"),
        }
        let a1 = new_id(1);
        new_id(2);
        match &answers[3] {
            Ok(Accepted::Existing(t)) => assert_eq!(t.id, a1, "{engine:?}: in-batch duplicate"),
            other => panic!("{engine:?}: in-batch duplicate answered {other:?}"),
        }
        assert!(
            matches!(answers[4], Err(StoreError::Refused(Refusal::InsufficientFunds { .. }))),
            "{engine:?}: {:?}",
            answers[4]
        );
        new_id(5);
        assert!(
            matches!(answers[6], Err(StoreError::Refused(Refusal::UnknownCustomer))),
            "{engine:?}: {:?}",
            answers[6]
        );
        assert!(
            matches!(answers[7], Err(StoreError::Refused(Refusal::InsufficientFunds { .. }))),
            "{engine:?}: {:?}",
            answers[7]
        );
        new_id(8);
        assert_eq!(s.get_customer("A").await.unwrap().unwrap().balance, Money::ZERO);
        assert_eq!(s.get_customer("B").await.unwrap().unwrap().balance, Money::ZERO);
        assert!(s.find_topup_by_reference("A", "a2").await.unwrap().is_none());
        // B's daily limit (3,000) was not reached: 600 + 400.
        // The running balance of each hold follows arrival order.
        let holds: Vec<_> = s
            .ledger("A", 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "hold")
            .map(|e| (e.amount.0, e.balance_after.0))
            .collect();
        assert!(
            holds.contains(&(-2_500, 1_500)) && holds.contains(&(-1_500, 0)),
            "{engine:?}: {holds:?}"
        );

        // The daily limit is applied in order too: 2,000 used of 3,000.
        s.adjust_balance(&Adjustment {
            customer_id: "B".into(),
            amount: Money(10_000),
            actor: "ops".into(),
            reason: "top up".into(),
        })
        .await
        .unwrap();
        let answers = s
            .accept_topups(&[new_topup("B", "b4", 2_500), new_topup("B", "b5", 2_000)])
            .await
            .unwrap();
        assert!(
            matches!(answers[0], Err(StoreError::Refused(Refusal::DailyLimit { .. }))),
            "{engine:?}: {:?}",
            answers[0]
        );
        assert!(
            matches!(answers[1], Ok(Accepted::New(_))),
            "{engine:?}: {:?}",
            answers[1]
        );
        assert_clean(s, engine).await;
    }
}

/// Many requests through the accept queue at once: group commit must give the
/// same answers as one transaction per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_accept_queue_keeps_every_answer_and_the_limit() {
    for engine in engines() {
        let db = fresh(engine).await;
        let store = db.store.clone();
        customer(store.as_ref(), "HOT", 50 * 2_000).await;
        let queue = AcceptQueue::start(store.clone(), 3);
        // 300 requests over 250 references: 50 of them sent twice.
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let q = queue.clone();
                tokio::spawn(async move { q.submit(new_topup("HOT", &format!("r{}", i % 250), 2_000)).await })
            })
            .collect();
        let (mut new, mut existing, mut refused) = (0, 0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(Accepted::New(_)) => new += 1,
                Ok(Accepted::Existing(_)) => existing += 1,
                Err(StoreError::Refused(Refusal::InsufficientFunds { .. })) => refused += 1,
                other => panic!("{engine:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(new, 50, "{engine:?}");
        assert_eq!(new + existing + refused, 300, "{engine:?}");
        assert_eq!(store.get_customer("HOT").await.unwrap().unwrap().balance, Money::ZERO);
        let rows = store
            .list_topups(&TopupFilter {
                customer_id: Some("HOT".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 50, "{engine:?}");
        assert_clean(store.as_ref(), engine).await;
    }
}

/// Finished attempts written together: each is applied as alone (its lease
/// guard, its settlement), answers come back in request order, and the money
/// of every customer in the batch ends right.
#[tokio::test]
async fn a_batch_of_finishes_settles_each_under_its_own_lease() {
    for engine in engines() {
        let db = fresh(engine).await;
        let s = db.store.as_ref();
        customer(s, "B", 10_000).await;
        customer(s, "A", 10_000).await;
        for (c, r) in [("B", "b1"), ("A", "a1"), ("B", "b2"), ("A", "a2")] {
            accept(s, c, r, 1_000).await;
        }
        let claimed = s.claim_pending("w1", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 4);
        let row = |reference: &str| claimed.iter().find(|t| t.reference == reference).cloned().unwrap();
        let mut stranger = finish(&row("a2"), success());
        stranger.lease_owner = "w9/other".into();
        let failed = AttemptOutcome::Failed {
            code: "-1".into(),
            message: "no".into(),
        };
        let batch = vec![
            finish(&row("b1"), success()),
            finish(&row("a1"), failed),
            stranger,
            finish(&row("b2"), success()),
        ];
        let answers = s.finish_attempts(&batch).await.expect("batch");
        let status = |i: usize| {
            answers[i]
                .as_ref()
                .unwrap()
                .as_ref()
                .map(|t| (t.reference.clone(), t.status))
        };
        assert_eq!(status(0), Some(("b1".into(), TopupStatus::Success)), "{engine:?}");
        assert_eq!(status(1), Some(("a1".into(), TopupStatus::Failed)), "{engine:?}");
        assert_eq!(status(2), None, "{engine:?}: a stranger's lease finished a top-up");
        assert_eq!(status(3), Some(("b2".into(), TopupStatus::Success)), "{engine:?}");
        // A: a1 released, a2 still held; B: both captured.
        assert_eq!(s.get_customer("A").await.unwrap().unwrap().balance, Money(9_000));
        assert_eq!(s.get_customer("B").await.unwrap().unwrap().balance, Money(8_000));
        assert_eq!(s.exchanges(&row("a2").id).await.unwrap().len(), 1, "evidence kept");
        assert_clean(s, engine).await;
    }
}

/// Concurrent batches over many customers (several lanes): no deadlock, each
/// customer's limit holds, the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accept_batches_over_many_customers_keep_each_limit() {
    for engine in engines() {
        let db = fresh(engine).await;
        let store = db.store.clone();
        for c in 0..10 {
            customer(store.as_ref(), &format!("C{c}"), 5 * 1_000).await;
        }
        let queue = AcceptQueue::start(store.clone(), 4);
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let q = queue.clone();
                tokio::spawn(async move {
                    q.submit(new_topup(&format!("C{}", i % 10), &format!("r{i}"), 1_000))
                        .await
                })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Accepted::New(_)) => new += 1,
                Err(StoreError::Refused(Refusal::InsufficientFunds { .. })) => {}
                other => panic!("{engine:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(new, 50, "{engine:?}: 5 per customer");
        for c in 0..10 {
            let balance = store.get_customer(&format!("C{c}")).await.unwrap().unwrap().balance;
            assert_eq!(balance, Money::ZERO, "{engine:?}: C{c}");
        }
        assert_clean(store.as_ref(), engine).await;
    }
}
