//! The top-up lifecycle end to end, on every engine: each sandbox script,
//! its final state, its ledger effect, and the audit afterwards.

use crate::common::{TestApp, body, engines};
use recarga_domain::{Money, TopupStatus};
use reqwest::StatusCode;
use std::time::Duration;

const FINAL_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_success_captures_the_hold() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        let (status, json) = t.topup(&key, body("+52 55 1234 5678", "20", "ref-1"), Some(10)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["status"], "SUCCESS");
        assert_eq!(json["phone"], "5512345678");
        assert_eq!(json["amount"], "20.00");
        assert_eq!(json["currency"], "MXN");
        assert_eq!(json["product_id"], "XOOM_20_MXN");
        assert!(json["id"].as_str().unwrap().starts_with("RLR"));
        assert!(json["upstream_transaction_id"].is_string());
        assert!(json["carrier_transaction_id"].is_string());
        assert_eq!(t.balance("C1").await, Money::major(80));
        let entries = t.store().ledger("C1", 10).await.unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["capture", "hold", "credit"]);
        let id = json["id"].as_str().unwrap();
        let exchanges = t.store().exchanges(id).await.unwrap();
        assert_eq!(exchanges.len(), 1);
        assert_eq!(exchanges[0].outcome, "success");
        assert!(
            exchanges[0].request.as_deref().unwrap().contains(id),
            "dist_transid is our id"
        );
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_accept_answers_202_then_completes() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        let (status, json) = t.topup(&key, body("5512345678", "10.00", "a-1"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert!(
            matches!(json["status"].as_str(), Some("PENDING" | "PROCESSING")),
            "{json}"
        );
        let id = json["id"].as_str().unwrap();
        let done = t.wait_final(id, FINAL_WITHIN).await;
        assert_eq!(done.status, TopupStatus::Success);
        let (status, read) = t.get(&key, &format!("/v1/topups/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["status"], "SUCCESS");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn definite_failures_release_the_hold() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        for (phone, message) in [
            ("5512345991", "Bolton is not allowed for tariff plan"),
            ("5512345992", "Action not allowed"),
        ] {
            let (status, json) = t.topup(&key, body(phone, "50", phone), Some(10)).await;
            assert_eq!(status, StatusCode::OK, "{json}");
            assert_eq!(json["status"], "FAILED");
            assert_eq!(json["failure"]["message"], message);
        }
        assert_eq!(t.balance("C1").await, Money::major(100), "both holds released");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unclear_answers_become_unknown_and_resolve_by_status_query() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "1000").await;
        // 993: timeout, delivered. 994: timeout, not delivered. 996: HTTP 500, delivered.
        let mut ids = Vec::new();
        for phone in ["5512345993", "5512345994", "5512345996"] {
            let (status, json) = t.topup(&key, body(phone, "100", phone), None).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{json}");
            ids.push(json["id"].as_str().unwrap().to_string());
        }
        for id in &ids {
            // Every one of them passes through UNKNOWN (the hold is kept meanwhile).
            t.wait_for(id, FINAL_WITHIN, |x| {
                x.status == TopupStatus::Unknown || x.status.is_final()
            })
            .await;
        }
        let expected = [TopupStatus::Success, TopupStatus::Failed, TopupStatus::Success];
        for (id, want) in ids.iter().zip(expected) {
            let done = t.wait_final(id, FINAL_WITHIN).await;
            assert_eq!(done.status, want, "{id}");
            let events = t.store().events(id).await.unwrap();
            assert!(
                events.iter().any(|e| e.to_status == "UNKNOWN"),
                "{id} went through UNKNOWN: {events:?}"
            );
            let last = events.last().unwrap();
            assert_eq!(last.actor, "status-query");
            // Sent upstream exactly once, whatever happened next.
            assert_eq!(t.sandbox.journal_entry(id).unwrap().calls, 1);
        }
        assert_eq!(t.balance("C1").await, Money::major(800));
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_success_within_the_timeout_is_success() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        let (status, json) = t.topup(&key, body("5512345995", "10", "slow"), Some(10)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["status"], "SUCCESS");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_wait_that_runs_out_answers_202_not_failed() {
    for engine in engines() {
        let opts = crate::common::Opts {
            latency_ms: (2500, 2500),
            upstream_timeout_s: 5,
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let (status, json) = t.topup(&key, body("5512345678", "10", "w"), Some(1)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert!(
            matches!(json["status"].as_str(), Some("PENDING" | "PROCESSING")),
            "{json}"
        );
        let done = t.wait_final(json["id"].as_str().unwrap(), FINAL_WITHIN).await;
        assert_eq!(done.status, TopupStatus::Success);
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_past_its_deadline_waits_for_an_operator() {
    for engine in engines() {
        let opts = crate::common::Opts {
            unknown_deadline_s: 0,
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let (_, json) = t.topup(&key, body("5512345993", "10", "u"), None).await;
        let id = json["id"].as_str().unwrap().to_string();
        t.wait_status(&id, TopupStatus::Unknown, FINAL_WITHIN).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let still = t.store().get_topup(&id).await.unwrap().unwrap();
        assert_eq!(still.status, TopupStatus::Unknown, "no status query after the deadline");
        assert_eq!(
            t.balance("C1").await,
            Money::major(90),
            "the hold is kept while UNKNOWN"
        );
        let listed = t.store().list_unknown().await.unwrap();
        assert_eq!(listed.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);

        let cmd = recarga_server::cli::Command::Topup(recarga_server::cli::TopupCmd::Resolve {
            id: id.clone(),
            outcome: "failed".into(),
            reason: "carrier statement shows no such recharge".into(),
            trans_id: None,
            carrier_id: None,
            actor: "cli:ops".into(),
        });
        let (out, code) = recarga_server::cli::run_operator(t.store(), cmd).await.unwrap();
        assert_eq!(code, 0, "{out}");
        assert_eq!(out["resolved"]["status"], "FAILED");
        assert_eq!(t.balance("C1").await, Money::major(100));
        let events = t.store().events(&id).await.unwrap();
        assert_eq!(events.last().unwrap().actor, "cli:ops");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_wait_completes_when_another_process_finalises() {
    for engine in engines() {
        // This gateway has no workers: only the other one can finish the top-up.
        let t = TestApp::spawn_with(
            engine,
            crate::common::Opts {
                workers: false,
                ..Default::default()
            },
        )
        .await;
        let (_, key) = t.customer("C1", "100").await;
        let other = t.spawn_other_worker(crate::common::Opts::default()).await;
        let (status, json) = t.topup(&key, body("5512345678", "10", "cross"), Some(10)).await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {json}");
        assert_eq!(json["status"], "SUCCESS");
        other.cancel();
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_read_every_exchange_of_a_topup() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        // 996: HTTP 500 (but delivered) → UNKNOWN → status query → SUCCESS.
        let (_, json) = t.topup(&key, body("5512345996", "10", "dispute"), None).await;
        let id = json["id"].as_str().unwrap().to_string();
        t.wait_final(&id, FINAL_WITHIN).await;
        let url = format!("{}/api/admin/topups/{id}", t.base);
        let denied = t.http.get(&url).send().await.unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        let as_customer = t.http.get(&url).header("x-admin-key", &key).send().await.unwrap();
        assert_eq!(
            as_customer.status(),
            StatusCode::UNAUTHORIZED,
            "an API key is not the operator key"
        );
        let res = t
            .http
            .get(&url)
            .header("x-admin-key", t.app.admin_key.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let detail: serde_json::Value = res.json().await.unwrap();
        assert_eq!(detail["topup"]["status"], "SUCCESS");
        let exchanges = detail["exchanges"].as_array().unwrap();
        assert_eq!(exchanges[0]["kind"], "topup");
        assert_eq!(exchanges[0]["http_status"], 500);
        assert_eq!(exchanges[0]["outcome"], "unknown");
        assert!(exchanges[0]["request"].as_str().unwrap().contains(&id));
        let last = exchanges.last().unwrap();
        assert_eq!(
            (last["kind"].as_str(), last["outcome"].as_str()),
            (Some("status"), Some("success"))
        );
        assert!(last["carrier_transaction_id"].is_string());
        let states: Vec<&str> = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["to"].as_str())
            .collect();
        assert_eq!(states, ["PENDING", "PROCESSING", "UNKNOWN", "SUCCESS"]);
        t.stop().await;
    }
}
