//! The HTTP contract, black-box, on every engine: bad input is refused with
//! its catalogued status and stable code (and moves no money), idempotency by
//! `(customer, reference)` (replays, reuse with another body, a sync request
//! still in flight, the same reference under two customers), concurrent
//! duplicates and concurrent spending, customer isolation, listing and
//! pagination, balance / products / health, and pricing. The compatibility
//! routes' own contract is in `compat.rs`.

use crate::common::{Opts, TestApp, body, engines};
use futures::future::join_all;
use recarga_domain::{CatalogueRule, Money, TopupStatus};
use recarga_server::http::error::CATALOGUE;
use recarga_store::{CustomerPatch, NewCustomer, TopupFilter};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

const FINAL_WITHIN: Duration = Duration::from_secs(20);
const PHONE: &str = "5512345678";
const FAILING_PHONE: &str = "5512345991";

/// One HTTP answer, with everything a test may want to look at.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    fn id(&self) -> String {
        self.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.text))
            .to_string()
    }
}

async fn send(req: RequestBuilder) -> Reply {
    let res = req.send().await.expect("send");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("read body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

fn url(t: &TestApp, path: &str) -> String {
    format!("{}{path}", t.base)
}

/// `POST /v1/topups` with a JSON body and a bearer key.
fn post_topup(t: &TestApp, key: &str, body: &Value) -> RequestBuilder {
    t.http.post(url(t, "/v1/topups")).bearer_auth(key).json(body)
}

/// `POST path` with raw bytes and an explicit Content-Type.
fn post_raw(t: &TestApp, path: &str, key: &str, content_type: &str, bytes: impl Into<Vec<u8>>) -> RequestBuilder {
    t.http
        .post(url(t, path))
        .bearer_auth(key)
        .header(CONTENT_TYPE, content_type)
        .body(bytes.into())
}

fn get(t: &TestApp, key: &str, path: &str) -> RequestBuilder {
    t.http.get(url(t, path)).bearer_auth(key)
}

/// A request authenticated the old way: `x-api-key` + `x-customer-id`.
fn compat(t: &TestApp, method: Method, path: &str, key: &str, customer: &str) -> RequestBuilder {
    t.http
        .request(method, url(t, path))
        .header("x-api-key", key)
        .header("x-customer-id", customer)
}

/// The one error shape: catalogued status and code, a message, and the
/// request id both in the body and in the `x-request-id` header.
fn assert_error(r: &Reply, status: u16, code: &str, ctx: &str) {
    assert_eq!(r.status.as_u16(), status, "{ctx}: status; body {}", r.text);
    assert_eq!(r.json["code"], code, "{ctx}: code; body {}", r.text);
    let catalogued = CATALOGUE.iter().find(|(c, _, _)| *c == code);
    assert_eq!(
        catalogued.map(|(_, s, _)| *s),
        Some(status),
        "{ctx}: {code} is catalogued with status {status}"
    );
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: message; body {}",
        r.text
    );
    let request_id = r.json["request_id"].as_str().unwrap_or_default();
    assert!(!request_id.is_empty(), "{ctx}: request_id; body {}", r.text);
    assert_eq!(
        r.header("x-request-id"),
        Some(request_id),
        "{ctx}: x-request-id header equals the body's request_id"
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{ctx}: error bodies are JSON"
    );
}

async fn topups_of(t: &TestApp, customer: &str) -> Vec<recarga_store::Topup> {
    t.store()
        .list_topups(&TopupFilter {
            customer_id: Some(customer.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list top-ups")
}

/// No money moved for `customer`: the balance is as created, there is no
/// top-up row and no ledger entry but the initial credit.
async fn assert_untouched(t: &TestApp, customer: &str, balance: Money, ctx: &str) {
    assert_eq!(t.balance(customer).await, balance, "{ctx}: balance of {customer}");
    let rows = topups_of(t, customer).await;
    assert!(rows.is_empty(), "{ctx}: {customer} has top-up rows {rows:?}");
    let ledger = t.store().ledger(customer, 100).await.expect("ledger");
    assert!(
        ledger.iter().all(|e| e.kind == "credit"),
        "{ctx}: ledger of {customer} moved: {ledger:?}"
    );
}

async fn holds_of(t: &TestApp, customer: &str) -> usize {
    let ledger = t.store().ledger(customer, 1000).await.expect("ledger");
    ledger.iter().filter(|e| e.kind == "hold").count()
}

fn random_hex(len: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    id[..len].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_its_code_and_moves_no_money() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let hundred = Money::major(100);
        let (_, key) = t.customer("C1", "100").await;
        let (_, _key_c2) = t.customer("C2", "100").await;
        let (_, key_xoom) = t
            .customer_with(NewCustomer {
                catalogue: CatalogueRule::XoomOnly,
                initial_credit: hundred,
                ..NewCustomer::new("CX", "Xoom only")
            })
            .await;
        let (_, key_inactive) = t.customer("CI", "100").await;

        // A second key of C1, revoked; it worked before the revocation.
        let (revoked, _) = recarga_service::keys::issue_key(t.store(), "C1", None, "test")
            .await
            .unwrap();
        assert_eq!(send(get(&t, &revoked, "/v1/balance")).await.status, StatusCode::OK);
        t.store().revoke_api_key(&revoked[3..15], "test").await.unwrap();

        // CI's key worked before the deactivation.
        assert_eq!(send(get(&t, &key_inactive, "/v1/balance")).await.status, StatusCode::OK);
        let patch = CustomerPatch {
            active: Some(false),
            ..Default::default()
        };
        t.store().update_customer("CI", &patch, "test").await.unwrap();

        let unknown_key = format!("rk_{}_{}", random_hex(12), random_hex(40));
        let mut tampered = key.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        let big = serde_json::to_vec(&json!({
            "phone": PHONE, "amount": "20", "reference": "x".repeat(17 * 1024)
        }))
        .unwrap();
        assert!(big.len() > 16 * 1024);
        let ok = body(PHONE, "20", "fine");
        let with = |field: &str, value: Value| {
            let mut b = ok.clone();
            b[field] = value;
            b
        };

        let cases: Vec<(&str, RequestBuilder, u16, &str)> = vec![
            (
                "malformed JSON",
                post_raw(
                    &t,
                    "/v1/topups",
                    &key,
                    "application/json",
                    r#"{"phone": "5512345678", "amount": "#,
                ),
                400,
                "invalid_json",
            ),
            (
                "trailing garbage",
                post_raw(
                    &t,
                    "/v1/topups",
                    &key,
                    "application/json",
                    r#"{"phone":"5512345678","amount":"20","reference":"fine"} x"#,
                ),
                400,
                "invalid_json",
            ),
            (
                "empty body",
                post_raw(&t, "/v1/topups", &key, "application/json", ""),
                400,
                "invalid_json",
            ),
            (
                "missing reference",
                post_topup(&t, &key, &json!({"phone": PHONE, "amount": "20"})),
                422,
                "missing_field",
            ),
            ("empty object", post_topup(&t, &key, &json!({})), 422, "missing_field"),
            (
                "unknown field",
                post_topup(&t, &key, &with("carrier", json!("telcel"))),
                422,
                "unknown_field",
            ),
            (
                "phone as object",
                post_topup(&t, &key, &with("phone", json!({"number": PHONE}))),
                422,
                "invalid_phone",
            ),
            (
                "phone as bool",
                post_topup(&t, &key, &with("phone", json!(true))),
                422,
                "invalid_phone",
            ),
            (
                "phone as null",
                post_topup(&t, &key, &with("phone", Value::Null)),
                422,
                "invalid_phone",
            ),
            (
                "phone 123",
                post_topup(&t, &key, &with("phone", json!("123"))),
                422,
                "invalid_phone",
            ),
            (
                "phone +1",
                post_topup(&t, &key, &with("phone", json!("+1 5512345678"))),
                422,
                "invalid_phone",
            ),
            (
                "phone starting with 0",
                post_topup(&t, &key, &with("phone", json!("0512345678"))),
                422,
                "invalid_phone",
            ),
            (
                "phone with letters",
                post_topup(&t, &key, &with("phone", json!("55-1234-567a"))),
                422,
                "invalid_phone",
            ),
            (
                "amount not numeric",
                post_topup(&t, &key, &with("amount", json!("twenty"))),
                422,
                "invalid_amount",
            ),
            (
                "amount negative string",
                post_topup(&t, &key, &with("amount", json!("-20"))),
                422,
                "invalid_amount",
            ),
            (
                "amount negative number",
                post_topup(&t, &key, &with("amount", json!(-20))),
                422,
                "invalid_amount",
            ),
            (
                "amount zero",
                post_topup(&t, &key, &with("amount", json!("0"))),
                422,
                "invalid_amount",
            ),
            (
                "amount zero number",
                post_topup(&t, &key, &with("amount", json!(0))),
                422,
                "invalid_amount",
            ),
            (
                "amount too large",
                post_topup(&t, &key, &with("amount", json!("100000000000000000000"))),
                422,
                "invalid_amount",
            ),
            (
                "amount with 3 decimals",
                post_topup(&t, &key, &with("amount", json!("20.125"))),
                422,
                "invalid_amount",
            ),
            (
                "amount 1e3 string",
                post_topup(&t, &key, &with("amount", json!("1e3"))),
                422,
                "invalid_amount",
            ),
            (
                "amount 1e3 number",
                post_raw(
                    &t,
                    "/v1/topups",
                    &key,
                    "application/json",
                    r#"{"phone":"5512345678","amount":1e3,"reference":"fine"}"#,
                ),
                422,
                "invalid_amount",
            ),
            (
                "amount as bool",
                post_topup(&t, &key, &with("amount", json!(true))),
                422,
                "invalid_amount",
            ),
            (
                "amount below minimum",
                post_topup(&t, &key, &with("amount", json!("9.99"))),
                422,
                "amount_below_minimum",
            ),
            (
                "amount above maximum",
                post_topup(&t, &key, &with("amount", json!("2000.01"))),
                422,
                "amount_above_maximum",
            ),
            (
                "amount no product delivers (open range)",
                post_topup(&t, &key, &with("amount", json!("20.50"))),
                422,
                "amount_not_available",
            ),
            (
                "amount no product delivers (xoom only)",
                post_topup(&t, &key_xoom, &with("amount", json!("25"))),
                422,
                "amount_not_available",
            ),
            (
                "empty reference",
                post_topup(&t, &key, &with("reference", json!(""))),
                422,
                "invalid_reference",
            ),
            (
                "reference of 101 chars",
                post_topup(&t, &key, &with("reference", json!("r".repeat(101)))),
                422,
                "invalid_reference",
            ),
            (
                "reference with surrounding spaces",
                post_topup(&t, &key, &with("reference", json!(" ref "))),
                422,
                "invalid_reference",
            ),
            (
                "reference not ASCII",
                post_topup(&t, &key, &with("reference", json!("añejo"))),
                422,
                "invalid_reference",
            ),
            (
                "reference as number",
                post_topup(&t, &key, &with("reference", json!(12))),
                422,
                "invalid_reference",
            ),
            (
                "body over 16 KiB",
                post_raw(&t, "/v1/topups", &key, "application/json", big.clone()),
                413,
                "payload_too_large",
            ),
            (
                "text/plain",
                post_raw(&t, "/v1/topups", &key, "text/plain", serde_json::to_vec(&ok).unwrap()),
                415,
                "unsupported_media_type",
            ),
            (
                "no Content-Type",
                t.http
                    .post(url(&t, "/v1/topups"))
                    .bearer_auth(&key)
                    .body(serde_json::to_vec(&ok).unwrap()),
                415,
                "unsupported_media_type",
            ),
            (
                "no API key",
                t.http.post(url(&t, "/v1/topups")).json(&ok),
                401,
                "missing_api_key",
            ),
            (
                "Basic credentials are no API key",
                t.http
                    .post(url(&t, "/v1/topups"))
                    .header("authorization", "Basic dXNlcjpwYXNz")
                    .json(&ok),
                401,
                "missing_api_key",
            ),
            (
                "garbage API key",
                post_topup(&t, "not-a-key", &ok),
                401,
                "invalid_api_key",
            ),
            (
                "a valid bearer key next to a different x-api-key",
                post_topup(&t, &key, &ok)
                    .header("x-api-key", "rk_0123456789ab_0123456789012345678901234567890123456789"),
                401,
                "invalid_api_key",
            ),
            (
                "unknown API key",
                post_topup(&t, &unknown_key, &ok),
                401,
                "invalid_api_key",
            ),
            (
                "known prefix, wrong secret",
                post_topup(&t, &tampered, &ok),
                401,
                "invalid_api_key",
            ),
            ("revoked API key", post_topup(&t, &revoked, &ok), 401, "invalid_api_key"),
            (
                "x-customer-id of another customer",
                post_topup(&t, &key, &ok).header("x-customer-id", "C2"),
                401,
                "invalid_api_key",
            ),
            (
                "inactive customer",
                post_topup(&t, &key_inactive, &ok),
                403,
                "customer_inactive",
            ),
            (
                "inactive customer reads its balance",
                get(&t, &key_inactive, "/v1/balance"),
                403,
                "customer_inactive",
            ),
            (
                "insufficient funds",
                post_topup(&t, &key, &with("amount", json!("500"))),
                402,
                "insufficient_funds",
            ),
            (
                "insufficient funds, sync",
                post_topup(&t, &key, &with("amount", json!("150"))).header("Prefer", "wait=5"),
                402,
                "insufficient_funds",
            ),
            ("unknown route", get(&t, &key, "/v1/nope"), 404, "not_found"),
            (
                "unknown route without a key",
                t.http.get(url(&t, "/v2/topups")),
                404,
                "not_found",
            ),
            (
                "malformed top-up id",
                get(&t, &key, "/v1/topups/not-an-id"),
                404,
                "not_found",
            ),
            (
                "DELETE /v1/topups",
                t.http.delete(url(&t, "/v1/topups")).bearer_auth(&key),
                405,
                "method_not_allowed",
            ),
            (
                "PUT /v1/balance",
                t.http.put(url(&t, "/v1/balance")).bearer_auth(&key),
                405,
                "method_not_allowed",
            ),
            (
                "GET on the compat top-up route",
                compat(&t, Method::GET, "/api/enviadespensa/topup", &key, "C1"),
                405,
                "method_not_allowed",
            ),
            // The compatibility routes' own errors (the old shapes) are in tests/compat.rs.
        ];

        let mut replies = std::collections::HashMap::new();
        for (name, req, status, code) in cases {
            let ctx = format!("{name} ({engine:?})");
            let reply = send(req).await;
            assert_error(&reply, status, code, &ctx);
            for customer in ["C1", "C2", "CX", "CI"] {
                assert_untouched(&t, customer, hundred, &ctx).await;
            }
            replies.insert(name, reply);
        }

        // Every request id is distinct.
        let ids: HashSet<&str> = replies.values().filter_map(|r| r.json["request_id"].as_str()).collect();
        assert_eq!(ids.len(), replies.len(), "request ids are unique");

        // amount_not_available lists what the customer may buy instead.
        let xoom = &replies["amount no product delivers (xoom only)"];
        let allowed = xoom.json["details"]["allowed"].as_array().expect("details.allowed");
        assert_eq!(allowed.len(), 14, "{}", xoom.text);
        assert!(
            allowed
                .iter()
                .all(|p| p["product_id"].as_str().unwrap().starts_with("XOOM_"))
        );
        assert!(
            allowed.contains(&json!({
                "product_id": "XOOM_20_MXN", "min_amount": "20.00", "max_amount": "20.00", "currency": "MXN", "vat_bps": 0
            })),
            "{}",
            xoom.text
        );
        let open = &replies["amount no product delivers (open range)"];
        let allowed = open.json["details"]["allowed"].as_array().expect("details.allowed");
        assert!(
            allowed.iter().any(|p| p["product_id"] == "TFE_MXN_20_TO_2000"),
            "{}",
            open.text
        );

        // The same key and body go through once the problem is gone, with a
        // reference of exactly the maximum length.
        let longest = "r".repeat(100);
        let r = send(post_topup(&t, &key, &with("reference", json!(longest)))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.json["reference"], longest.as_str());
        t.wait_final(&r.id(), FINAL_WITHIN).await;
        assert_eq!(t.balance("C1").await, Money::major(80));
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_reference_replays_and_a_different_body_is_refused() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        let first = send(post_topup(&t, &key, &body(PHONE, "20", "r-1"))).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
        assert!(!first.replayed(), "a new top-up is no replay");
        let id = first.id();

        // Immediately, while it may still be open: the same transaction.
        let again = send(post_topup(&t, &key, &body(PHONE, "20", "r-1"))).await;
        assert!(
            matches!(again.status, StatusCode::OK | StatusCode::ACCEPTED),
            "{}",
            again.text
        );
        assert!(again.replayed(), "idempotent-replayed: true");
        assert_eq!(again.id(), id);

        let done = t.wait_final(&id, FINAL_WITHIN).await;
        assert_eq!(done.status, TopupStatus::Success);

        // After it is final, and with an equivalent spelling of the same body.
        for (phone, amount) in [
            (PHONE, json!("20")),
            ("+52 55 1234 5678", json!("20.00")),
            (PHONE, json!(20)),
        ] {
            let b = json!({"phone": phone, "amount": amount, "reference": "r-1"});
            let r = send(post_topup(&t, &key, &b)).await;
            assert_eq!(r.status, StatusCode::OK, "{b}: {}", r.text);
            assert!(r.replayed(), "{b}: idempotent-replayed: true");
            assert_eq!(r.id(), id, "{b}");
            assert_eq!(r.json["status"], "SUCCESS");
            assert_eq!(r.header("location"), Some(format!("/v1/topups/{id}").as_str()));
        }

        // The same reference with another amount or phone is refused.
        for b in [
            body(PHONE, "30", "r-1"),
            body(PHONE, "25.50", "r-1"),
            body("5512345679", "20", "r-1"),
        ] {
            let r = send(post_topup(&t, &key, &b)).await;
            assert_error(&r, 422, "reference_reused", &format!("{b} ({engine:?})"));
            assert_eq!(r.json["details"]["transaction_id"], id.as_str(), "{}", r.text);
        }
        // Also on the compatibility route: the reference space is shared
        // (there the old shape: 400 with the old `error` text).
        let r = send(
            compat(&t, Method::POST, "/api/enviadespensa/topup-async", &key, "C1").json(&body(PHONE, "50", "r-1")),
        )
        .await;
        assert_eq!(r.status.as_u16(), 400, "compat ({engine:?}): {}", r.text);
        assert_eq!(r.json["code"], "reference_reused", "{}", r.text);
        assert_eq!(r.json["success"], false, "{}", r.text);

        let rows = topups_of(&t, "C1").await;
        assert_eq!(rows.len(), 1, "one row: {rows:?}");
        assert_eq!(holds_of(&t, "C1").await, 1, "held once");
        assert_eq!(t.balance("C1").await, Money::major(80), "charged once");
        assert_eq!(t.sandbox.journal_entry(&id).unwrap().calls, 1);
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_of_a_sync_request_still_waiting_gets_409() {
    for engine in engines() {
        let opts = Opts {
            latency_ms: (3000, 3000),
            upstream_timeout_s: 10,
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let b = body(PHONE, "20", "sync-1");
        let first = send(post_topup(&t, &key, &b).header("Prefer", "wait=10"));
        let duplicates = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let plain = send(post_topup(&t, &key, &b)).await;
            let waiting = send(post_topup(&t, &key, &b).header("Prefer", "wait=5")).await;
            let compat_sync = send(compat(&t, Method::POST, "/api/enviadespensa/topup", &key, "C1").json(&b)).await;
            (plain, waiting, compat_sync)
        };
        let (first, (plain, waiting, compat_sync)) = tokio::join!(first, duplicates);

        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(first.json["status"], "SUCCESS");
        assert!(!first.replayed());
        let id = first.id();
        for (name, r) in [("plain", &plain), ("with wait", &waiting)] {
            assert_error(r, 409, "request_in_flight", &format!("{name} ({engine:?})"));
            assert_eq!(r.json["details"]["transaction_id"], id.as_str(), "{}", r.text);
        }
        // An old client retrying its reference is not told 409 (a word it
        // does not know): it waits for the same transaction.
        assert_eq!(compat_sync.status, StatusCode::OK, "{}", compat_sync.text);
        assert_eq!(
            compat_sync.json["transaction"]["id"],
            id.as_str(),
            "{}",
            compat_sync.text
        );
        assert_eq!(compat_sync.json["replayed"], true, "{}", compat_sync.text);

        // Once the first has answered, the duplicate is a plain replay.
        let after = send(post_topup(&t, &key, &b)).await;
        assert_eq!(after.status, StatusCode::OK, "{}", after.text);
        assert!(after.replayed());
        assert_eq!(after.id(), id);

        assert_eq!(topups_of(&t, "C1").await.len(), 1);
        assert_eq!(holds_of(&t, "C1").await, 1);
        assert_eq!(t.balance("C1").await, Money::major(80));
        assert_eq!(t.sandbox.journal_entry(&id).unwrap().calls, 1);
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_requests_make_one_topup() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "1000").await;
        let b = body(PHONE, "20", "burst");
        let replies = join_all((0..50).map(|_| send(post_topup(&t, &key, &b)))).await;
        for r in &replies {
            assert!(
                matches!(r.status, StatusCode::OK | StatusCode::ACCEPTED),
                "{engine:?}: {} {}",
                r.status,
                r.text
            );
        }
        let ids: HashSet<String> = replies.iter().map(Reply::id).collect();
        assert_eq!(ids.len(), 1, "one transaction id: {ids:?}");
        let fresh = replies.iter().filter(|r| !r.replayed()).count();
        assert_eq!(fresh, 1, "exactly one answer is not a replay");
        let id = ids.into_iter().next().unwrap();

        let done = t.wait_final(&id, FINAL_WITHIN).await;
        assert_eq!(done.status, TopupStatus::Success);
        assert_eq!(topups_of(&t, "C1").await.len(), 1, "one row");
        assert_eq!(t.sandbox.journal_entry(&id).unwrap().calls, 1, "sent upstream once");
        assert_eq!(t.sandbox.journal().len(), 1);
        assert_eq!(holds_of(&t, "C1").await, 1);
        assert_eq!(t.balance("C1").await, Money::major(980), "charged once");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spending_never_overdraws() {
    for engine in engines() {
        let opts = Opts {
            latency_ms: (1, 10),
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "1000").await;
        let replies =
            join_all((0..200).map(|i| send(post_topup(&t, &key, &body(PHONE, "20", &format!("c-{i}")))))).await;
        let mut accepted = Vec::new();
        let mut refused = 0;
        for r in &replies {
            match r.status {
                StatusCode::ACCEPTED => accepted.push(r.id()),
                StatusCode::PAYMENT_REQUIRED => {
                    assert_error(r, 402, "insufficient_funds", &format!("{engine:?}"));
                    refused += 1;
                }
                other => panic!("{engine:?}: unexpected {other}: {}", r.text),
            }
        }
        assert_eq!(
            accepted.len(),
            50,
            "{engine:?}: exactly the balance's worth is accepted"
        );
        assert_eq!(refused, 150);

        let mut succeeded = 0;
        for id in &accepted {
            if t.wait_final(id, FINAL_WITHIN).await.status == TopupStatus::Success {
                succeeded += 1;
            }
        }
        let balance = t.balance("C1").await;
        assert!(balance.minor() >= 0, "{engine:?}: overdrawn to {balance:?}");
        assert_eq!(balance, Money::major(1000 - 20 * succeeded), "{engine:?}");
        assert_eq!(topups_of(&t, "C1").await.len(), 50);
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_are_isolated() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key1) = t.customer("C1", "100").await;
        let (_, key2) = t.customer("C2", "100").await;

        // One reference, two customers: two independent top-ups.
        let a = send(post_topup(&t, &key1, &body(PHONE, "20", "shared")).header("Prefer", "wait=10")).await;
        let b = send(post_topup(&t, &key2, &body("5598765432", "30", "shared")).header("Prefer", "wait=10")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(b.status, StatusCode::OK, "{}", b.text);
        assert!(!a.replayed() && !b.replayed());
        assert_ne!(a.id(), b.id());
        assert_eq!(t.balance("C1").await, Money::major(80));
        assert_eq!(t.balance("C2").await, Money::major(70));
        let c2_only = send(post_topup(&t, &key2, &body(PHONE, "10", "only-c2")).header("Prefer", "wait=10")).await;
        assert_eq!(c2_only.status, StatusCode::OK, "{}", c2_only.text);
        assert_eq!(topups_of(&t, "C1").await.len(), 1);
        assert_eq!(topups_of(&t, "C2").await.len(), 2);

        // Each reads its own; the other's is indistinguishable from a missing one.
        let missing = format!("RLR{}", random_hex(32));
        let not_found = send(get(&t, &key1, &format!("/v1/topups/{missing}"))).await;
        assert_error(&not_found, 404, "not_found", "missing id");
        for other in [b.id(), c2_only.id()] {
            let r = send(get(&t, &key1, &format!("/v1/topups/{other}"))).await;
            assert_error(&r, 404, "not_found", &format!("/v1 cross-customer ({engine:?})"));
            assert_eq!(r.json["message"], not_found.json["message"]);
            assert!(!r.text.contains(&other), "the body does not echo the id");
            let r = send(compat(
                &t,
                Method::GET,
                &format!("/api/transaction/{other}"),
                &key1,
                "C1",
            ))
            .await;
            for r in [r, send(get(&t, &key1, &format!("/api/transaction/{other}"))).await] {
                assert_eq!(r.status.as_u16(), 404, "compat cross-customer ({engine:?}): {}", r.text);
                assert_eq!(r.json["error"], "Transaction not found", "{}", r.text);
                assert!(!r.text.contains(&other), "the body does not echo the id");
            }
        }
        let own = send(get(&t, &key1, &format!("/v1/topups/{}", a.id()))).await;
        assert_eq!(own.status, StatusCode::OK);
        assert_eq!(own.json["reference"], "shared");
        let r = send(get(&t, &key2, &format!("/v1/topups/{}", a.id()))).await;
        assert_error(&r, 404, "not_found", "C2 reads C1's");

        // Listing by another customer's reference finds nothing.
        let r = send(get(&t, &key1, "/v1/topups?reference=only-c2")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["data"], json!([]), "{}", r.text);
        assert_eq!(r.json["next_cursor"], Value::Null);
        let r = send(get(&t, &key1, "/v1/topups?reference=shared")).await;
        let data = r.json["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{}", r.text);
        assert_eq!(data[0]["id"], a.id().as_str());
        let r = send(get(&t, &key1, "/v1/topups")).await;
        assert_eq!(
            r.json["data"].as_array().unwrap().len(),
            1,
            "only C1's rows: {}",
            r.text
        );
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

/// Walks `/v1/topups` with `limit` and returns the ids in order.
async fn walk(t: &TestApp, key: &str, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/topups?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = send(get(t, key, &path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        let page = r.json["data"].as_array().expect("data");
        assert!(page.len() <= limit, "{path}: page larger than the limit");
        out.extend(page.iter().map(|x| x["id"].as_str().expect("id").to_string()));
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_is_newest_first_paginated_and_filtered() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "1000").await;
        let phones = [PHONE, FAILING_PHONE, PHONE, FAILING_PHONE, PHONE, PHONE, "5598765432"];
        let mut created = Vec::new();
        for (i, phone) in phones.iter().enumerate() {
            let r = send(post_topup(&t, &key, &body(phone, "20", &format!("l-{i}"))).header("Prefer", "wait=10")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            created.push(r.id());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();

        let r = send(get(&t, &key, "/v1/topups")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let ids: Vec<&str> = r.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, newest_first, "newest first");
        assert_eq!(r.json["next_cursor"], Value::Null);
        assert_eq!(r.json["data"][0]["reference"], "l-6");

        for limit in [1, 2, 3, 7, 500] {
            let walked = walk(&t, &key, "", limit).await;
            assert_eq!(walked, newest_first, "limit {limit}: every row once, in order");
        }

        let failed = walk(&t, &key, "&status=FAILED", 1).await;
        assert_eq!(failed, [created[3].clone(), created[1].clone()]);
        let r = send(get(&t, &key, "/v1/topups?status=failed")).await;
        assert_eq!(
            r.json["data"].as_array().unwrap().len(),
            2,
            "status is case-insensitive: {}",
            r.text
        );
        let success = walk(&t, &key, "&status=SUCCESS", 2).await;
        assert_eq!(success.len(), 5);
        let r = send(get(&t, &key, "/v1/topups?status=SUCCESS")).await;
        assert!(
            r.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["status"] == "SUCCESS")
        );
        let r = send(get(&t, &key, "/v1/topups?status=PENDING")).await;
        assert_eq!(r.json["data"], json!([]));

        let by_phone = walk(&t, &key, &format!("&phone={FAILING_PHONE}"), 50).await;
        assert_eq!(by_phone, [created[3].clone(), created[1].clone()]);
        // The phone filter is normalised like the phone of a top-up.
        let formatted = walk(&t, &key, "&phone=%2B52%2055%201234%205991", 50).await;
        assert_eq!(formatted, by_phone);
        let both = walk(&t, &key, &format!("&phone={PHONE}&status=SUCCESS"), 50).await;
        assert_eq!(
            both,
            [
                created[5].clone(),
                created[4].clone(),
                created[2].clone(),
                created[0].clone()
            ]
        );
        let r = send(get(&t, &key, "/v1/topups?reference=l-4")).await;
        assert_eq!(r.json["data"][0]["id"], created[4].as_str());
        assert_eq!(r.json["data"].as_array().unwrap().len(), 1);

        for bad in [
            "foo=1",
            "limit=0",
            "limit=501",
            "limit=ten",
            "status=DONE",
            "phone=123",
            "cursor=abc",
        ] {
            let r = send(get(&t, &key, &format!("/v1/topups?{bad}"))).await;
            assert_error(&r, 422, "invalid_query", &format!("{bad} ({engine:?})"));
        }
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_products_and_health() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "1000").await;
        let (_, key_xoom) = t
            .customer_with(NewCustomer {
                catalogue: CatalogueRule::XoomOnly,
                ..NewCustomer::new("CX", "Xoom only")
            })
            .await;
        let r = send(post_topup(&t, &key, &body(PHONE, "20", "b-1")).header("Prefer", "wait=10")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        let r = send(get(&t, &key, "/v1/balance")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["customer_id"], "C1");
        assert_eq!(r.json["balance"], "980.00");
        assert_eq!(r.json["currency"], "MXN");
        assert_eq!(r.json["credit_limit"], "0.00");
        assert_eq!(r.json["available"], "980.00");

        let r = send(get(&t, &key, "/v1/products")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let products = r.json["data"].as_array().unwrap();
        assert_eq!(products.len(), 15, "{}", r.text);
        let xoom: Vec<&Value> = products
            .iter()
            .filter(|p| p["product_id"].as_str().unwrap().starts_with("XOOM_"))
            .collect();
        assert_eq!(xoom.len(), 14);
        assert!(
            xoom.iter()
                .all(|p| p["min_amount"] == p["max_amount"] && p["vat_bps"] == 0)
        );
        assert!(products.contains(&json!({
            "product_id": "XOOM_500_MXN", "min_amount": "500.00", "max_amount": "500.00",
            "currency": "MXN", "vat_bps": 0
        })));
        assert!(
            products.contains(&json!({
                "product_id": "TFE_MXN_20_TO_2000", "min_amount": "23.20", "max_amount": "2320.00",
                "currency": "MXN", "vat_bps": 1600
            })),
            "{}",
            r.text
        );
        let r = send(get(&t, &key_xoom, "/v1/products")).await;
        let products = r.json["data"].as_array().unwrap();
        assert_eq!(products.len(), 14, "{}", r.text);
        assert!(products.iter().all(|p| p["product_id"] != "TFE_MXN_20_TO_2000"));

        // /health needs no key.
        let r = send(t.http.get(url(&t, "/health"))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "OK", "the old system's value");
        assert_eq!(r.json["database"]["ok"], true);
        let engine_name = match engine.engine {
            recarga_store::testing::Engine::Sqlite => "sqlite",
            recarga_store::testing::Engine::Postgres => "postgres",
        };
        assert_eq!(r.json["database"]["engine"], engine_name);
        let queue = &r.json["queue"];
        for field in ["pending", "delayed", "processing", "unknown"] {
            assert!(queue[field].is_i64(), "queue.{field}: {}", r.text);
        }
        // The public health shows the open queue, not business volume.
        assert!(
            queue.get("success").is_none() && queue.get("failed").is_none(),
            "{}",
            r.text
        );
        assert_eq!(queue["pending"], 0, "{}", r.text);
        assert_eq!(queue["processing"], 0, "{}", r.text);
        assert!(!r.text.contains("rk_"), "no secrets in /health");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_range_and_discount_pricing() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "1000").await;
        let r = send(post_topup(&t, &key, &body(PHONE, "25.50", "p-1")).header("Prefer", "wait=10")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "SUCCESS");
        assert_eq!(r.json["product_id"], "TFE_MXN_20_TO_2000");
        assert_eq!(r.json["amount"], "25.50");
        assert_eq!(r.json["amount_sent"], "21.98");
        assert_eq!(r.json["vat"], "3.52");
        assert_eq!(r.json["delivered"], "25.50");
        assert_eq!(r.json["charge"], json!({"amount": "25.50", "currency": "MXN"}));
        assert_eq!(r.json["discount_bps"], 0);
        let id = r.id();
        let exchanges = t.store().exchanges(&id).await.unwrap();
        let request = exchanges[0].request.as_deref().unwrap();
        // Latcom's `amount` is a JSON number: the exact centavos, never a float's rounding.
        assert!(request.contains(r#""amount":21.98,"#), "sent before VAT: {request}");
        assert!(request.contains("TFE_MXN_20_TO_2000"), "{request}");
        assert_eq!(t.balance("C1").await, Money(97_450));

        let (_, key_d) = t
            .customer_with(NewCustomer {
                discount_bps: 500,
                initial_credit: Money::major(1000),
                ..NewCustomer::new("CD", "Discount")
            })
            .await;
        let r = send(post_topup(&t, &key_d, &body(PHONE, "100", "p-2")).header("Prefer", "wait=10")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["product_id"], "XOOM_100_MXN");
        assert_eq!(r.json["amount"], "100.00");
        assert_eq!(r.json["delivered"], "100.00");
        assert_eq!(r.json["charge"]["amount"], "95.00");
        assert_eq!(r.json["charge"]["currency"], "MXN");
        assert_eq!(r.json["discount_bps"], 500);
        assert_eq!(t.balance("CD").await, Money::major(905));
        t.assert_audit_clean().await;
        t.stop().await;
    }
}
