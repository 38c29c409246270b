//! The review's money findings about the upstream (issue "Hardening"), each
//! on every engine, against the simulator over loopback HTTP:
//!
//! - a call that waited in this process past the timeout was never sent:
//!   back to PENDING, never UNKNOWN;
//! - a `Fail` slower than `LATCOM_SLOW_FAIL_S` is UNKNOWN, then settled by the
//!   status query (the sandbox's `983` was delivered, as in the old dispute);
//! - an empty wallet at the provider (-120008) pauses submission, says so on
//!   `/health`, puts the top-ups back to PENDING, probes with one of them and
//!   resends under a fresh attempt id once funded;
//! - never-sent top-ups older than `RECARGA_PENDING_MAX_AGE_S` fail
//!   `expired_not_sent` with their holds released; UNKNOWN ones never expire;
//! - late evidence that contradicts a settled top-up is an audit violation.

use crate::common::{Opts, TestApp, body, engines};
use recarga_domain::{AttemptPolicy, Money, TopupStatus};
use recarga_service::context::{Services, Settings};
use recarga_store::{Finish, NewExchange};
use recarga_upstream::latcom::{Latcom, LatcomConfig};
use recarga_upstream::sim::{SimConfig, Simulator};
use std::sync::Arc;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(30);

fn extra(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Finding 1: with one call in flight at a time and each taking 1.2 s, the
/// tenth of ten claimed top-ups waits ~11 s. Before the fix the outer bound
/// (timeout 2 s + slack 5 s) also covered that wait: the late ones became
/// UNKNOWN with their holds kept though nothing had left the machine.
#[tokio::test]
async fn calls_queued_past_the_timeout_are_never_sent_not_unknown() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        let (_, key) = t.customer("Q1", "1000").await;
        let mut ids = Vec::new();
        for i in 0..10 {
            let (status, json) = t
                .topup(&key, body(&format!("55123400{i:02}"), "10", &format!("q-{i}")), None)
                .await;
            assert_eq!(status, 202, "{setup:?}: {json}");
            ids.push(json["id"].as_str().expect("id").to_string());
        }
        // One call at a time, 1.2 s each, timeout 2 s.
        let sim_config = SimConfig {
            latency_min_ms: 1_200,
            latency_max_ms: 1_200,
            ..SimConfig::default()
        };
        let (sim, addr) = Simulator::spawn(sim_config.clone(), "127.0.0.1:0").await.expect("sim");
        let latcom = Latcom::new(LatcomConfig {
            base_url: format!("http://{addr}"),
            username: sim_config.username.clone(),
            password: sim_config.password.clone().into(),
            dist_api: sim_config.dist_api.clone().into(),
            user_uid: sim_config.user_uid.clone(),
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(2),
            token_lifetime: Duration::from_secs(600),
            max_inflight: 1,
            rate_per_s: 0,
            slow_fail: Duration::from_secs(7),
            wallet_probe_interval: Duration::from_secs(30),
        })
        .expect("adapter");
        let settings = Settings {
            queue_concurrency: 10,
            lease: Duration::from_secs(120),
            upstream_timeout: Duration::from_secs(2),
            audit_interval: Duration::ZERO,
            policy: AttemptPolicy {
                not_sent_attempts_max: 5,
                not_sent_retry_base_ms: 2_000,
                blocked_pause_ms: 5_000,
                status_check_base_ms: 60_000,
                status_check_max_ms: 60_000,
                unknown_deadline_ms: 86_400_000,
            },
            pending_max_age: None,
        };
        let svc = Services::new(t.db.store.clone(), Arc::new(latcom), settings);
        let claimed = svc.store.claim_pending("queue-test", 120_000, 10).await.expect("claim");
        assert_eq!(claimed.len(), 10, "{setup:?}");
        let mut calls = tokio::task::JoinSet::new();
        for topup in claimed {
            let svc = svc.clone();
            calls.spawn(async move { recarga_service::settle::process(&svc, topup).await });
        }
        while calls.join_next().await.is_some() {}
        let (mut sent, mut pending) = (0, 0);
        for id in &ids {
            let topup = t.store().get_topup(id).await.expect("read").expect("exists");
            let reached = sim.journal_entry(id).is_some_and(|e| e.calls > 0);
            match topup.status {
                TopupStatus::Success => {
                    assert!(reached, "{setup:?}: {id} SUCCESS without a call");
                    sent += 1;
                }
                TopupStatus::Pending => {
                    assert!(!reached, "{setup:?}: {id} went upstream but is PENDING");
                    assert_eq!(topup.attempts, 0, "{setup:?}: a wait in this process is not an attempt");
                    pending += 1;
                }
                other => panic!("{setup:?}: {id} is {other}: a call that waited in this process was never sent"),
            }
        }
        assert!(sent >= 1 && pending >= 1, "{setup:?}: sent {sent}, pending {pending}");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

/// Finding 3: `983` answers `Fail` after the slow delay and was delivered.
/// Before the fix it was FAILED and refunded; now it is UNKNOWN with the
/// failure text kept, and the status query finds it delivered.
#[tokio::test]
async fn a_slow_fail_is_unknown_and_the_status_query_settles_it() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                slow_ms: 1_500,
                upstream_timeout_s: 5,
                extra: extra(&[("--latcom-slow-fail-s", "1")]),
                ..Opts::default()
            },
        )
        .await;
        let (_, key) = t.customer("S1", "1000").await;
        let (status, json) = t.topup(&key, body("5512345983", "10", "slow-1"), None).await;
        assert_eq!(status, 202, "{setup:?}: {json}");
        let id = json["id"].as_str().expect("id").to_string();
        let seen = t
            .wait_for(&id, WITHIN, |x| {
                x.status != TopupStatus::Pending && x.status != TopupStatus::Processing
            })
            .await;
        assert_ne!(seen.status, TopupStatus::Failed, "{setup:?}: a slow Fail was refunded");
        let done = t.wait_final(&id, WITHIN).await;
        assert_eq!(
            done.status,
            TopupStatus::Success,
            "{setup:?}: delivered per the status query"
        );
        let exchanges = t.store().exchanges(&id).await.expect("exchanges");
        let first = exchanges.first().expect("the top-up call");
        assert_eq!(first.outcome, "unknown", "{setup:?}: {exchanges:?}");
        let detail = first.detail.clone().unwrap_or_default();
        assert!(
            detail.contains("slow-fail") && detail.contains("Action not allowed"),
            "{setup:?}: the failure text is kept: {detail}"
        );
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

async fn health(t: &TestApp) -> serde_json::Value {
    t.http
        .get(format!("{}/health", t.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

/// Finding 4: before the fix every top-up failed with -120008 and was
/// refunded one after another while our wallet at Latcom was empty.
#[tokio::test]
async fn an_empty_wallet_pauses_probes_and_resends_under_a_fresh_attempt_id() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                latency_ms: (100, 100),
                extra: extra(&[("--latcom-wallet-probe-s", "1")]),
                ..Opts::default()
            },
        )
        .await;
        t.sandbox.update(|c| c.wallet_empty = true);
        let (_, key) = t.customer("W1", "1000").await;
        let (status, json) = t.topup(&key, body("5512340001", "10", "w-1"), None).await;
        assert_eq!(status, 202, "{setup:?}: {json}");
        let id = json["id"].as_str().expect("id").to_string();
        // The -120008 answer arrives: the top-up is waiting again, not FAILED.
        let deadline = tokio::time::Instant::now() + WITHIN;
        while t.sandbox.journal_entry(&id).is_none_or(|e| e.calls == 0) {
            assert!(tokio::time::Instant::now() < deadline, "{setup:?}: never sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut state = serde_json::Value::Null;
        while tokio::time::Instant::now() < deadline {
            state = health(&t).await;
            if state.to_string().contains("upstream_wallet_empty") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            state.to_string().contains("upstream_wallet_empty"),
            "{setup:?}: /health says so: {state}"
        );
        // More top-ups arrive while it is empty: at most one call per probe
        // interval goes out for all of them.
        let mut more = Vec::new();
        for i in 2..=4 {
            let (status, json) = t
                .topup(&key, body(&format!("551234000{i}"), "10", &format!("w-{i}")), None)
                .await;
            assert_eq!(status, 202, "{setup:?}: {json}");
            more.push(json["id"].as_str().expect("id").to_string());
        }
        let calls = |t: &TestApp| t.sandbox.journal().values().map(|e| u64::from(e.calls)).sum::<u64>();
        let before = calls(&t);
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let probes = calls(&t) - before;
        assert!(
            probes <= 4,
            "{setup:?}: {probes} calls in 3.5 s with a 1 s probe interval"
        );
        for x in std::iter::once(&id).chain(&more) {
            let topup = t.store().get_topup(x).await.expect("read").expect("exists");
            assert!(
                matches!(topup.status, TopupStatus::Pending | TopupStatus::Processing),
                "{setup:?}: {x} is {} while the wallet is empty",
                topup.status
            );
        }
        assert_eq!(t.balance("W1").await, Money::major(960), "{setup:?}: holds kept");
        // Funded again: the next probe succeeds and everything goes out.
        t.sandbox.update(|c| c.wallet_empty = false);
        for x in std::iter::once(&id).chain(&more) {
            let done = t.wait_final(x, WITHIN).await;
            assert_eq!(done.status, TopupStatus::Success, "{setup:?}: {x}");
        }
        // The first send of `id` was answered -120008; it went out again under
        // a fresh attempt id, and was delivered once.
        let first = t.sandbox.journal_entry(&id).expect("first send");
        assert_eq!((first.calls, first.deliveries), (1, 0), "{setup:?}");
        let resends: Vec<_> = t
            .sandbox
            .journal()
            .into_iter()
            .filter(|(a, _)| a.starts_with(&format!("{id}-")))
            .collect();
        assert!(!resends.is_empty(), "{setup:?}: resent under <id>-<n>");
        assert_eq!(
            resends.iter().map(|(_, e)| u64::from(e.deliveries)).sum::<u64>(),
            1,
            "{setup:?}: delivered once: {resends:?}"
        );
        let state = health(&t).await;
        assert!(
            !state.to_string().contains("upstream_wallet_empty"),
            "{setup:?}: {state}"
        );
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

/// Finding 5: while the upstream blocks us, top-ups used to stay PENDING
/// with no age limit and could be delivered days later.
#[tokio::test]
async fn never_sent_top_ups_expire_and_unknown_ones_never_do() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                extra: extra(&[("--pending-max-age-s", "2")]),
                slow_ms: 300,
                ..Opts::default()
            },
        )
        .await;
        let (_, key) = t.customer("E1", "100").await;
        // An UNKNOWN one first (no answer, the status query finds nothing).
        t.sandbox.update(|c| {
            c.hang_ms = 3_000;
            c.status_mode = recarga_upstream::sim::StatusMode::Off;
        });
        let (_, json) = t.topup(&key, body("5512345994", "10", "e-unknown"), None).await;
        let unknown = json["id"].as_str().expect("id").to_string();
        t.wait_status(&unknown, TopupStatus::Unknown, WITHIN).await;
        // Then the upstream blocks us: this one is never sent.
        t.sandbox.update(|c| c.ip_blocked = true);
        let (status, json) = t.topup(&key, body("5512340001", "20", "e-blocked"), None).await;
        assert_eq!(status, 202, "{setup:?}: {json}");
        let blocked = json["id"].as_str().expect("id").to_string();
        assert_eq!(t.balance("E1").await, Money::major(70), "{setup:?}: both held");
        let done = t.wait_final(&blocked, WITHIN).await;
        assert_eq!(done.status, TopupStatus::Failed, "{setup:?}");
        assert_eq!(done.failure_code.as_deref(), Some("expired_not_sent"), "{setup:?}");
        assert_eq!(t.balance("E1").await, Money::major(90), "{setup:?}: its hold released");
        // The block lifts: the expired one is never sent, the UNKNOWN stays.
        t.sandbox.update(|c| c.ip_blocked = false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            t.sandbox.journal_entry(&blocked).is_none(),
            "{setup:?}: sent after it expired"
        );
        let still = t.store().get_topup(&unknown).await.expect("read").expect("exists");
        assert_eq!(
            still.status,
            TopupStatus::Unknown,
            "{setup:?}: an UNKNOWN may have been delivered"
        );
        let (status, json) = t.get(&key, &format!("/v1/topups/{blocked}")).await;
        assert_eq!(status, 200, "{setup:?}: {json}");
        assert_eq!(json["failure"]["code"], "expired_not_sent", "{setup:?}: {json}");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

/// Finding 2: a success that arrives for a top-up already FAILED (say an
/// operator settled it) used to be kept as a log line only.
#[tokio::test]
async fn late_contradicting_evidence_is_an_audit_violation() {
    for setup in engines() {
        let t = TestApp::spawn_with(setup, Opts::default()).await;
        let (_, key) = t.customer("L1", "100").await;
        let (_, json) = t.topup(&key, body("5512345991", "10", "late-1"), Some(10)).await;
        let id = json["id"].as_str().expect("id").to_string();
        let failed = t.wait_final(&id, WITHIN).await;
        assert_eq!(failed.status, TopupStatus::Failed, "{setup:?}");
        t.assert_audit_clean().await;
        // A worker whose lease was lost long ago writes its answer: a success.
        let late = Finish {
            topup_id: id.clone(),
            customer_id: "L1".into(),
            lease_owner: "w-gone/late".into(),
            outcome: recarga_domain::AttemptOutcome::Success {
                trans_id: Some("LT-late".into()),
                ven_transid: Some("99".into()),
            },
            exchange: NewExchange {
                kind: recarga_domain::ExchangeKind::Topup,
                provider: "latcom".into(),
                request: None,
                response: Some(r#"{"status":"Success","transId":"LT-late"}"#.into()),
                http_status: Some(200),
                outcome: recarga_domain::ExchangeOutcome::Success,
                detail: None,
                trans_id: Some("LT-late".into()),
                ven_transid: Some("99".into()),
                started_at: recarga_store::now_ms(),
                ended_at: recarga_store::now_ms(),
            },
        };
        let written = t.store().finish_attempt(&late).await.expect("finish");
        assert!(written.is_none(), "{setup:?}: a settled top-up is not changed");
        let report = t.store().audit().await.expect("audit");
        assert_eq!(report.late_evidence, 1, "{setup:?}: {report:?}");
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.contains(&id) && v.contains("late evidence")),
            "{setup:?}: {:?}",
            report.violations
        );
        t.stop().await;
    }
}
