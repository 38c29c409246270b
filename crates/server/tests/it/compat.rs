//! The old system's published contract on the compatibility routes, key by
//! key and JSON type by JSON type, on every engine: every route of
//! LEGACY.md §1 and every error case, the old statuses and error bodies,
//! both families of rate-limit headers, no false success, imported keys,
//! the legacy settings (reference policy, public status, IP allow-list),
//! and clients written as the old guides write them (Python `requests` and
//! Node's `fetch`), run unchanged against a live gateway.

use crate::common::{Opts, TestApp, engines};
use recarga_domain::{CatalogueRule, Currency, Money, ReferencePolicy, TopupStatus};
use recarga_store::{CustomerPatch, NewCustomer};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const PHONE: &str = "5512345678";
const FAILING_PHONE: &str = "5512345991";
const UNKNOWN_PHONE: &str = "5512345994";
const WITHIN: Duration = Duration::from_secs(20);

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Value,
}

async fn send(req: RequestBuilder) -> Reply {
    let res = req.send().await.expect("send");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
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

/// A request authenticated the old way: `x-api-key` + `x-customer-id`.
fn old(t: &TestApp, method: Method, path: &str, key: &str, customer: &str) -> RequestBuilder {
    t.http
        .request(method, url(t, path))
        .header("x-api-key", key)
        .header("x-customer-id", customer)
}

fn topup(t: &TestApp, key: &str, customer: &str, body: Value) -> RequestBuilder {
    old(t, Method::POST, "/api/enviadespensa/topup", key, customer).json(&body)
}

fn topup_async(t: &TestApp, key: &str, customer: &str, body: Value) -> RequestBuilder {
    old(t, Method::POST, "/api/enviadespensa/topup-async", key, customer).json(&body)
}

#[derive(Clone, Copy, Debug)]
enum Ty {
    Num,
    Str,
    Bool,
    Obj,
    StrOrNull,
    NumOrNull,
}

/// Every key is present with the old JSON type.
fn assert_types(v: &Value, keys: &[(&str, Ty)], ctx: &str) {
    for (path, ty) in keys {
        let mut node = v;
        for part in path.split('.') {
            node = &node[part];
        }
        let ok = match ty {
            Ty::Num => node.is_number(),
            Ty::Str => node.is_string(),
            Ty::Bool => node.is_boolean(),
            Ty::Obj => node.is_object(),
            Ty::StrOrNull => node.is_string() || node.is_null(),
            Ty::NumOrNull => node.is_number() || node.is_null(),
        };
        let present = match ty {
            Ty::StrOrNull | Ty::NumOrNull => {
                let (parent, last) = path.rsplit_once('.').map_or(("", *path), |(p, l)| (p, l));
                let mut p = v;
                for part in parent.split('.').filter(|s| !s.is_empty()) {
                    p = &p[part];
                }
                p.get(last).is_some()
            }
            _ => true,
        };
        assert!(ok && present, "{ctx}: `{path}` should be {ty:?}: {v}");
    }
}

/// The old error body: `success: false`, `error` text, our `code` and `request_id`.
fn assert_old_error(r: &Reply, status: u16, error: &str, ctx: &str) {
    assert_eq!(r.status.as_u16(), status, "{ctx}: {}", r.text);
    assert_eq!(r.json["success"], false, "{ctx}: {}", r.text);
    assert_eq!(r.json["error"], error, "{ctx}: {}", r.text);
    assert!(r.json["code"].is_string(), "{ctx}: code: {}", r.text);
    assert!(r.json["request_id"].is_string(), "{ctx}: request_id: {}", r.text);
}

/// Both families of rate-limit headers, as the old code and its guides had them.
fn assert_rate_headers(r: &Reply, limit: u64, window_s: u64, ctx: &str) {
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{ctx}: header {name} missing"))
            .to_string()
    };
    assert_eq!(h("ratelimit-policy"), format!("{limit};w={window_s}"), "{ctx}");
    assert_eq!(h("ratelimit-limit"), limit.to_string(), "{ctx}");
    assert_eq!(h("x-ratelimit-limit"), limit.to_string(), "{ctx}");
    let remaining: u64 = h("ratelimit-remaining").parse().expect("number");
    assert_eq!(h("x-ratelimit-remaining"), remaining.to_string(), "{ctx}");
    let reset: u64 = h("ratelimit-reset").parse().expect("seconds");
    assert!(
        (1..=window_s).contains(&reset),
        "{ctx}: RateLimit-Reset is seconds left: {reset}"
    );
    let epoch: i64 = h("x-ratelimit-reset").parse().expect("epoch");
    let now = chrono::Utc::now().timestamp();
    assert!(
        epoch > now && epoch <= now + window_s as i64 + 1,
        "{ctx}: X-RateLimit-Reset is an epoch"
    );
}

const TRANSACTION_KEYS: &[(&str, Ty)] = &[
    ("success", Ty::Bool),
    ("message", Ty::Str),
    ("transaction", Ty::Obj),
    ("transaction.id", Ty::Str),
    ("transaction.status", Ty::Str),
    ("transaction.amount", Ty::Num),
    ("transaction.amount_mxn", Ty::Num),
    ("transaction.amount_usd", Ty::Num),
    ("transaction.exchange_rate", Ty::Num),
    ("transaction.phone", Ty::Str),
    ("transaction.reference", Ty::Str),
    ("transaction.provider", Ty::Str),
    ("transaction.processedAt", Ty::Str),
    ("transaction.queuedAt", Ty::Str),
    ("transaction.currency", Ty::Str),
    ("transaction.state", Ty::Str),
];

const SUCCESS_KEYS: &[(&str, Ty)] = &[
    ("transaction.operatorTransactionId", Ty::Str),
    ("billing.deducted_usd", Ty::Num),
    ("billing.balance_before_usd", Ty::Num),
    ("billing.balance_after_usd", Ty::Num),
    ("billing.exchange_rate", Ty::Num),
    ("remaining_balance", Ty::Num),
];

const ROW_KEYS: &[(&str, Ty)] = &[
    ("success", Ty::Bool),
    ("transaction.id", Ty::Num),
    ("transaction.transaction_id", Ty::Str),
    ("transaction.customer_id", Ty::Str),
    ("transaction.phone", Ty::Str),
    ("transaction.status", Ty::Str),
    ("transaction.reference", Ty::Str),
    ("transaction.amount", Ty::Str),
    ("transaction.fee", Ty::Str),
    ("transaction.amount_mxn", Ty::StrOrNull),
    ("transaction.amount_usd", Ty::StrOrNull),
    ("transaction.exchange_rate", Ty::StrOrNull),
    ("transaction.currency", Ty::Str),
    ("transaction.operator_transaction_id", Ty::StrOrNull),
    ("transaction.created_at", Ty::Str),
    ("transaction.processed_at", Ty::StrOrNull),
    ("transaction.response_time_ms", Ty::NumOrNull),
    ("transaction.latcom_response_code", Ty::StrOrNull),
    ("transaction.latcom_response_message", Ty::StrOrNull),
    ("transaction.provider", Ty::Str),
    ("transaction.provider_transaction_id", Ty::StrOrNull),
    ("transaction.transaction_type", Ty::Str),
    ("transaction.state", Ty::Str),
];

async fn patch(t: &TestApp, id: &str, patch: CustomerPatch) {
    t.store().update_customer(id, &patch, "test").await.expect("patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_keeps_the_old_keys_and_types() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t.customer("C1", "100").await;
        let ctx = format!("{engine:?}");

        // Balance.
        let r = send(old(&t, Method::GET, "/api/balance", &key, "C1")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_types(
            &r.json,
            &[
                ("success", Ty::Bool),
                ("customer_id", Ty::Str),
                ("company_name", Ty::StrOrNull),
                ("current_balance", Ty::Num),
                ("credit_limit", Ty::Num),
                ("currency", Ty::Str),
            ],
            &ctx,
        );
        assert_eq!(r.json["current_balance"].as_f64(), Some(100.0));
        assert_eq!(r.json["customer_id"], "C1");
        assert_rate_headers(&r, 300, 900, &format!("balance {ctx}"));

        // Sync success: the October 2025 shape, amounts as exact numbers.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": PHONE, "amount": 25.5, "reference": "o-1"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_types(&r.json, TRANSACTION_KEYS, &ctx);
        assert_types(&r.json, SUCCESS_KEYS, &ctx);
        assert_eq!(r.json["success"], true);
        let tx = &r.json["transaction"];
        assert_eq!(tx["status"], "SUCCESS");
        assert_eq!(tx["amount_mxn"].as_f64(), Some(25.5));
        assert!(
            r.text.contains(r#""amount_mxn":25.50"#),
            "exact decimal text: {}",
            r.text
        );
        assert_eq!(tx["amount_usd"].as_f64(), Some(25.5), "an MXN account is charged MXN");
        assert_eq!(tx["exchange_rate"].as_f64(), Some(1.0));
        assert_eq!(tx["currency"], "MXN");
        assert_eq!(tx["provider"], "Latcom");
        assert_eq!(tx["reference"], "o-1");
        assert_eq!(tx["phone"], PHONE, "echoed as sent");
        assert_eq!(r.json["billing"]["balance_before_usd"].as_f64(), Some(100.0));
        assert_eq!(r.json["billing"]["balance_after_usd"].as_f64(), Some(74.5));
        assert_eq!(r.json["remaining_balance"].as_f64(), Some(74.5));
        assert_rate_headers(&r, 200, 60, &format!("sync {ctx}"));
        let sync_id = tx["id"].as_str().unwrap().to_string();

        // Async: 200 (not 202), PENDING, no reference → "".
        let r = send(topup_async(
            &t,
            &key,
            "C1",
            json!({"phone": 5512345678u64, "amount": "50"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_types(
            &r.json,
            TRANSACTION_KEYS
                .iter()
                .filter(|(k, _)| *k != "transaction.phone")
                .copied()
                .collect::<Vec<_>>()
                .as_slice(),
            &ctx,
        );
        assert_types(
            &r.json,
            &[("check_status_url", Ty::Str), ("transaction.phone", Ty::Num)],
            &ctx,
        );
        assert_eq!(r.json["success"], true);
        assert_eq!(r.json["transaction"]["status"], "PENDING");
        assert_eq!(r.json["transaction"]["reference"], "");
        assert_eq!(r.json["message"], "Transaction queued for processing");
        let async_id = r.json["transaction"]["id"].as_str().unwrap().to_string();
        assert_eq!(r.json["check_status_url"], format!("/api/transaction/{async_id}"));

        // Status: the raw row's keys, amounts as strings with the old scales.
        t.wait_final(&async_id, WITHIN).await;
        let r = send(old(&t, Method::GET, &format!("/api/transaction/{sync_id}"), &key, "C1")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_types(&r.json, ROW_KEYS, &ctx);
        let row = &r.json["transaction"];
        assert_eq!(row["transaction_id"], sync_id.as_str());
        assert_eq!(row["amount"], "25.50");
        assert_eq!(row["fee"], "0.00");
        assert_eq!(row["amount_mxn"], "25.50");
        assert_eq!(row["amount_usd"], "25.5000");
        assert_eq!(row["exchange_rate"], "1.000000");
        assert_eq!(row["status"], "SUCCESS");
        assert_eq!(row["latcom_response_code"], "SUCCESS");
        assert_eq!(row["transaction_type"], "topup");
        assert!(row["response_time_ms"].is_number(), "{}", r.text);
        assert_rate_headers(&r, 300, 900, &format!("status {ctx}"));
        let r = send(old(
            &t,
            Method::GET,
            &format!("/api/transaction/{async_id}"),
            &key,
            "C1",
        ))
        .await;
        assert_eq!(r.json["transaction"]["reference"], "");
        assert_eq!(r.json["transaction"]["status"], "SUCCESS");

        // Health: the old keys and types (the guides' test step reads
        // `{"status":"OK"}`), 200 with the database up.
        let r = send(t.http.get(url(&t, "/health"))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_types(
            &r.json,
            &[
                ("status", Ty::Str),
                ("timestamp", Ty::Str),
                ("uptime", Ty::Num),
                ("mode", Ty::Str),
                ("instance.id", Ty::Str),
                ("instance.memory", Ty::Str),
                ("instance.pid", Ty::Num),
                ("services.database.connected", Ty::Bool),
                ("services.database.status", Ty::Str),
                ("services.redis.connected", Ty::Bool),
                ("services.redis.status", Ty::Str),
                ("services.queue.connected", Ty::Bool),
                ("services.queue.status", Ty::Str),
                ("services.queue.stats", Ty::Obj),
                ("services.rateLimiting.backend", Ty::Str),
            ],
            &format!("health {ctx}"),
        );
        assert_eq!(r.json["status"], "OK", "{}", r.text);
        assert_eq!(r.json["mode"], "TEST_MODE");
        assert_eq!(r.json["services"]["database"]["status"], "healthy");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usd_accounts_get_the_old_exchange_rate_and_billing() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key) = t
            .customer_with(NewCustomer {
                currency: Currency::Usd,
                fx_rate_micro: Some(17_500_000),
                initial_credit: Money::major(50),
                ..NewCustomer::new("U1", "USD customer")
            })
            .await;
        let r = send(topup(
            &t,
            &key,
            "U1",
            json!({"phone": PHONE, "amount": 100, "reference": "u-1"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let tx = &r.json["transaction"];
        // 100 MXN at 17.50 MXN per USD = 5.714… → 5.72 USD; USD per MXN = 0.057143.
        assert_eq!(tx["amount_usd"].as_f64(), Some(5.72), "{}", r.text);
        assert_eq!(tx["exchange_rate"].as_f64(), Some(0.057143), "{}", r.text);
        assert_eq!(r.json["billing"]["deducted_usd"].as_f64(), Some(5.72));
        assert_eq!(r.json["billing"]["balance_after_usd"].as_f64(), Some(44.28));
        let id = tx["id"].as_str().unwrap();
        let r = send(old(&t, Method::GET, &format!("/api/transaction/{id}"), &key, "U1")).await;
        assert_eq!(r.json["transaction"]["amount_usd"], "5.7200");
        assert_eq!(r.json["transaction"]["exchange_rate"], "0.057143");
        let r = send(old(&t, Method::GET, "/api/balance", &key, "U1")).await;
        assert_eq!(r.json["current_balance"].as_f64(), Some(44.28));
        assert_eq!(r.json["currency"], "USD");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_old_error_has_its_status_text_and_keys() {
    for engine in engines() {
        let opts = Opts {
            extra: vec![("--compat-topup-per-min", "1000".into())],
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let (_, key_x) = t
            .customer_with(NewCustomer {
                catalogue: CatalogueRule::XoomOnly,
                initial_credit: Money::major(100),
                ..NewCustomer::new("CX", "Xoom only")
            })
            .await;
        let (_, key_d) = t
            .customer_with(NewCustomer {
                daily_limit: Some(Money::major(50)),
                initial_credit: Money::major(1000),
                ..NewCustomer::new("CD", "Daily limited")
            })
            .await;
        let ctx = format!("{engine:?}");

        // Validation runs before authentication, as in the old system.
        let r = send(topup(&t, "wrong", "C1", json!({"amount": 20}))).await;
        assert_old_error(&r, 400, "Validation failed", &ctx);
        let details = r.json["details"].as_array().expect("details");
        assert_eq!(details.len(), 2, "a missing phone gives two entries: {}", r.text);
        assert_eq!(details[0]["msg"], "Phone number is required");
        assert_eq!(details[1]["msg"], "Phone number must be 10-15 digits");
        for d in details {
            assert_eq!(d["type"], "field");
            assert_eq!(d["path"], "phone");
            assert_eq!(d["location"], "body");
            assert!(d.get("value").is_none(), "no value when missing");
        }
        let r = send(topup(&t, &key, "C1", json!({"phone": "12ab", "amount": "x"}))).await;
        assert_old_error(&r, 400, "Validation failed", &ctx);
        assert_eq!(r.json["details"][0]["value"], "12ab", "the value as sent");
        assert_eq!(r.json["details"][1]["path"], "amount");
        // A body that is not JSON is an empty body, as express.json() left it.
        let r = send(old(&t, Method::POST, "/api/enviadespensa/topup", &key, "C1").body("phone=5512345678")).await;
        assert_old_error(&r, 400, "Validation failed", &ctx);
        // Amounts out of the customer's range.
        let r = send(topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 5}))).await;
        assert_old_error(&r, 400, "Validation failed", &ctx);
        assert_eq!(
            r.json["details"][0]["msg"],
            "Amount must be between 10.00 and 2000.00 MXN"
        );

        // Credentials.
        let r = send(topup(&t, "wrong-key", "C1", json!({"phone": PHONE, "amount": 20}))).await;
        assert_old_error(&r, 401, "Invalid API credentials", &ctx);
        let r = send(topup(&t, &key, "CX", json!({"phone": PHONE, "amount": 20}))).await;
        assert_old_error(
            &r,
            401,
            "Invalid API credentials",
            &format!("another customer's id {ctx}"),
        );
        let r = send(old(&t, Method::GET, "/api/balance", "wrong-key", "C1")).await;
        assert_old_error(&r, 401, "Invalid credentials", &ctx);
        let r = send(t.http.get(url(&t, "/api/balance"))).await;
        assert_old_error(&r, 401, "Invalid credentials", &format!("no headers {ctx}"));

        // Insufficient balance: 403, both the sync and async key names.
        let r = send(topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 300}))).await;
        assert_old_error(&r, 403, "Insufficient balance", &ctx);
        assert_types(
            &r.json,
            &[
                ("current_balance_usd", Ty::Num),
                ("requested_mxn", Ty::Num),
                ("required_usd", Ty::Num),
                ("exchange_rate", Ty::Num),
                ("current_balance", Ty::Num),
                ("requested", Ty::Num),
            ],
            &ctx,
        );
        assert_eq!(r.json["current_balance_usd"].as_f64(), Some(100.0));
        assert_eq!(r.json["required_usd"].as_f64(), Some(300.0));
        let r = send(topup_async(&t, &key, "C1", json!({"phone": PHONE, "amount": 300}))).await;
        assert_old_error(&r, 403, "Insufficient balance", &ctx);

        // Invalid product amount (a fixed-denomination customer).
        let r = send(topup(&t, &key_x, "CX", json!({"phone": PHONE, "amount": 25}))).await;
        assert_old_error(&r, 400, "Invalid product amount", &ctx);
        assert_eq!(r.json["message"], "Only fixed XOOM products are allowed");
        let allowed = r.json["allowed_amounts"].as_array().expect("allowed_amounts");
        assert_eq!(allowed.len(), 14);
        assert!(allowed.iter().all(Value::is_number), "{}", r.text);
        assert_eq!(r.json["requested_amount"].as_f64(), Some(25.0));

        // Rolling daily limit: 429 with the four figures.
        let r = send(topup(
            &t,
            &key_d,
            "CD",
            json!({"phone": PHONE, "amount": 40, "reference": "d-1"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = send(topup(&t, &key_d, "CD", json!({"phone": PHONE, "amount": 20}))).await;
        assert_old_error(&r, 429, "Daily transaction limit exceeded", &ctx);
        assert_eq!(r.json["daily_limit_mxn"].as_f64(), Some(50.0));
        assert_eq!(r.json["used_today_mxn"].as_f64(), Some(40.0));
        assert_eq!(r.json["requested_mxn"].as_f64(), Some(20.0));
        assert_eq!(r.json["available_mxn"].as_f64(), Some(10.0));

        // Not found.
        let missing = format!("RLR{}", "0".repeat(32));
        let r = send(old(&t, Method::GET, &format!("/api/transaction/{missing}"), &key, "C1")).await;
        assert_old_error(&r, 404, "Transaction not found", &ctx);

        // Inactive customer: the top-up routes say bad credentials; the
        // balance still answers, as the old balance route did.
        patch(
            &t,
            "C1",
            CustomerPatch {
                active: Some(false),
                ..Default::default()
            },
        )
        .await;
        let r = send(topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 20}))).await;
        assert_old_error(&r, 401, "Invalid API credentials", &ctx);
        let r = send(old(&t, Method::GET, "/api/balance", &key, "C1")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        assert_eq!(t.balance("C1").await, Money::major(100), "no refusal moved money");
        assert_eq!(t.balance("CX").await, Money::major(100));
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_answer_the_old_429_with_both_header_families() {
    for engine in engines() {
        let opts = Opts {
            extra: vec![
                ("--compat-topup-per-min", "2".into()),
                ("--compat-api-per-15min", "3".into()),
            ],
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        for i in 0..2 {
            let r = send(topup_async(
                &t,
                &key,
                "C1",
                json!({"phone": PHONE, "amount": 10, "reference": format!("r{i}")}),
            ))
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_rate_headers(&r, 2, 60, "top-up");
        }
        let r = send(topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 10}))).await;
        assert_old_error(
            &r,
            429,
            "Too many topup requests. Maximum 2 per minute.",
            "third top-up",
        );
        assert_rate_headers(&r, 2, 60, "429");
        assert!(r.headers.get("retry-after").is_some(), "Retry-After on 429");
        assert_eq!(r.headers["ratelimit-remaining"], "0");
        for _ in 0..3 {
            let r = send(old(&t, Method::GET, "/api/balance", &key, "C1")).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let r = send(old(&t, Method::GET, "/api/balance", &key, "C1")).await;
        assert_old_error(&r, 429, "Too many requests, please try again later", "fourth balance");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_false_success_and_no_state_old_clients_do_not_know() {
    for engine in engines() {
        // Status queries far apart, so the UNKNOWN below stays UNKNOWN.
        let opts = Opts {
            status_check_base_s: 600,
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;

        // A definite failure: the old 500 and text; nothing charged.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": FAILING_PHONE, "amount": 20, "reference": "f-1"}),
        ))
        .await;
        assert_old_error(
            &r,
            500,
            "Provider (Latcom) top-up failed: Bolton is not allowed for tariff plan",
            "fail",
        );
        assert_types(&r.json, &[("response_time_ms", Ty::Num), ("provider", Ty::Str)], "fail");
        assert_eq!(r.json["transaction"]["status"], "FAILED");
        let failed_id = r.json["transaction"]["id"].as_str().unwrap().to_string();
        assert_eq!(t.balance("C1").await, Money::major(100));

        // The guides say retry on 500: the same reference starts a new top-up.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": PHONE, "amount": 20, "reference": "f-1"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["success"], true);
        assert_ne!(r.json["transaction"]["id"], failed_id.as_str());
        assert_eq!(r.json["transaction"]["retry_of"], failed_id.as_str());
        assert!(
            r.json["message"].as_str().unwrap().contains(&failed_id),
            "the answer says so: {}",
            r.text
        );
        assert_eq!(t.balance("C1").await, Money::major(80));
        // … and the succeeded one now replays.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": PHONE, "amount": 20, "reference": "f-1"}),
        ))
        .await;
        assert_eq!(r.json["replayed"], true, "{}", r.text);
        assert_eq!(t.balance("C1").await, Money::major(80));

        // An unclear answer: UNKNOWN shows as PENDING (with our state), never success.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": UNKNOWN_PHONE, "amount": 20, "reference": "u-1"}),
        ))
        .await;
        let id = r.json["transaction"]["id"].as_str().unwrap().to_string();
        let unknown = t.wait_status(&id, TopupStatus::Unknown, WITHIN).await;
        assert_eq!(unknown.status, TopupStatus::Unknown);
        let r = send(old(&t, Method::GET, &format!("/api/transaction/{id}"), &key, "C1")).await;
        assert_eq!(r.json["transaction"]["status"], "PENDING", "{}", r.text);
        assert_eq!(r.json["transaction"]["state"], "UNKNOWN");
        assert_eq!(r.json["transaction"]["queue_status"], "active");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_wait_that_ends_open_says_so_with_202() {
    for engine in engines() {
        let opts = Opts {
            latency_ms: (3000, 3000),
            upstream_timeout_s: 10,
            sync_wait_s: 1,
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": PHONE, "amount": 20, "reference": "slow"}),
        ))
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.json["success"], false, "never a success before SUCCESS: {}", r.text);
        assert_eq!(r.json["transaction"]["status"], "PENDING");
        let id = r.json["transaction"]["id"].as_str().unwrap();
        assert!(
            r.json["error"]
                .as_str()
                .unwrap()
                .contains(&format!("/api/transaction/{id}")),
            "{}",
            r.text
        );
        // The retry of an open reference waits for the same transaction.
        let r = send(topup(
            &t,
            &key,
            "C1",
            json!({"phone": PHONE, "amount": 20, "reference": "slow"}),
        ))
        .await;
        assert_eq!(r.json["transaction"]["id"], id, "{}", r.text);
        let done = t.wait_final(id, WITHIN).await;
        assert_eq!(done.status, TopupStatus::Success);
        assert_eq!(t.sandbox.journal_entry(id).unwrap().calls, 1, "sent once");
        assert_eq!(t.balance("C1").await, Money::major(80));
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_policies_and_idempotency_keys() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        let (_, key_u) = t.customer("CU", "100").await;
        let (_, key_f) = t
            .customer_with(NewCustomer {
                reference_policy: ReferencePolicy::Free,
                initial_credit: Money::major(100),
                ..NewCustomer::new("CF", "Free references")
            })
            .await;
        let body = json!({"phone": PHONE, "amount": 10, "reference": "ORDER-1"});
        // `unique`: the same reference replays.
        let a = send(topup_async(&t, &key_u, "CU", body.clone())).await;
        let b = send(topup_async(&t, &key_u, "CU", body.clone())).await;
        assert_eq!(a.json["transaction"]["id"], b.json["transaction"]["id"]);
        assert_eq!(b.json["replayed"], true);
        assert_eq!(t.balance("CU").await, Money::major(90));
        // `free`: the same reference is a new top-up each time (the old meaning).
        let a = send(topup_async(&t, &key_f, "CF", body.clone())).await;
        let b = send(topup_async(&t, &key_f, "CF", body.clone())).await;
        assert_ne!(a.json["transaction"]["id"], b.json["transaction"]["id"], "{}", b.text);
        assert_eq!(b.json["transaction"]["reference"], "ORDER-1");
        assert_eq!(t.balance("CF").await, Money::major(80));
        // … unless an Idempotency-Key says it is a retry.
        let with_key = |k: &str| topup_async(&t, &key_f, "CF", body.clone()).header("Idempotency-Key", k);
        let c = send(with_key("idem-1")).await;
        let d = send(with_key("idem-1")).await;
        assert_eq!(c.json["transaction"]["id"], d.json["transaction"]["id"]);
        assert_eq!(t.balance("CF").await, Money::major(70));
        let other = send(
            topup_async(&t, &key_f, "CF", json!({"phone": PHONE, "amount": 20})).header("Idempotency-Key", "idem-1"),
        )
        .await;
        assert_eq!(other.status.as_u16(), 400, "{}", other.text);
        assert_eq!(other.json["code"], "reference_reused");
        // /v1 honours the Idempotency-Key too, and keeps its own contract.
        let v1 = |k: &str| {
            t.http
                .post(url(&t, "/v1/topups"))
                .bearer_auth(&key_f)
                .header("Idempotency-Key", k)
                .json(&json!({"phone": PHONE, "amount": "10", "reference": "ORDER-1"}))
        };
        let e = send(v1("idem-v1")).await;
        let f = send(v1("idem-v1")).await;
        assert_eq!(e.json["id"], f.json["id"]);
        assert_eq!(f.headers["idempotent-replayed"], "true");
        assert_eq!(e.status, StatusCode::ACCEPTED, "{}", e.text);
        assert!(
            f.status.is_success(),
            "a replay answers the top-up as it is now: {}",
            f.text
        );
        // Repeats are not replays: each was sent upstream once.
        for id in [&a, &b].map(|r| r.json["transaction"]["id"].as_str().unwrap().to_string()) {
            t.wait_final(&id, WITHIN).await;
            assert_eq!(t.sandbox.journal_entry(&id).unwrap().calls, 1);
        }
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_keys_open_both_apis_until_revoked() {
    for engine in engines() {
        let t = TestApp::spawn(engine).await;
        t.customer("C1", "100").await;
        let (record, warnings) = recarga_service::keys::import("C1", "HAZ-live-key-0001", None).unwrap();
        assert!(warnings.is_empty());
        t.store().insert_api_key(&record, "test").await.unwrap();
        let old_key = "HAZ-live-key-0001";

        let r = send(old(&t, Method::GET, "/api/balance", old_key, "C1")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = send(topup(&t, old_key, "C1", json!({"phone": PHONE, "amount": 20}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = send(old(&t, Method::GET, "/v1/balance", old_key, "C1")).await;
        assert_eq!(r.status, StatusCode::OK, "the same headers on /v1: {}", r.text);
        // An imported key always needs its customer id.
        let r = send(t.http.get(url(&t, "/v1/balance")).header("x-api-key", old_key)).await;
        assert_eq!(r.status.as_u16(), 401, "{}", r.text);
        let r = send(t.http.get(url(&t, "/v1/balance")).bearer_auth(old_key)).await;
        assert_eq!(r.status.as_u16(), 401, "{}", r.text);
        // Only the digest is stored.
        let stored = t.store().list_api_keys("C1").await.unwrap();
        let imported = stored.iter().find(|k| k.kind == "imported").unwrap();
        assert!(!imported.digest.contains("HAZ") && !imported.prefix.contains("HAZ"));
        assert_eq!(imported.hint.as_deref(), Some("HAZ-…"));
        // Last use is recorded (in the background).
        let mut used = None;
        for _ in 0..50 {
            used = t
                .store()
                .find_api_key(&imported.id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at;
            if used.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(used.is_some(), "last_used_at is recorded");

        t.store().revoke_api_key(&imported.id, "test").await.unwrap();
        let r = send(old(&t, Method::GET, "/api/balance", old_key, "C1")).await;
        assert_old_error(&r, 401, "Invalid credentials", "revoked");
        let r = send(topup(&t, old_key, "C1", json!({"phone": PHONE, "amount": 20}))).await;
        assert_old_error(&r, 401, "Invalid API credentials", "revoked");

        // Rotation: the successor works at once, the old key until its overlap ends.
        let (_, issued_key) = t.customer("C2", "10").await;
        let old_row = t.store().list_api_keys("C2").await.unwrap().remove(0);
        let successor = recarga_service::keys::issue("C2", None);
        let until = recarga_store::now_ms() + 60_000;
        t.store()
            .rotate_api_key(&old_row.id, &successor.record, until, "test")
            .await
            .unwrap();
        for k in [&issued_key, &successor.plaintext] {
            let r = send(t.http.get(url(&t, "/v1/balance")).bearer_auth(k)).await;
            assert_eq!(r.status, StatusCode::OK, "during the overlap: {}", r.text);
        }
        let successor2 = recarga_service::keys::issue("C2", None);
        t.store()
            .rotate_api_key(
                &successor.record.id,
                &successor2.record,
                recarga_store::now_ms() - 1,
                "test",
            )
            .await
            .unwrap();
        let r = send(t.http.get(url(&t, "/v1/balance")).bearer_auth(&successor.plaintext)).await;
        assert_eq!(r.status.as_u16(), 401, "after the overlap: {}", r.text);
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_status_and_the_ip_allow_list() {
    for engine in engines() {
        let opts = Opts {
            extra: vec![("--trusted-proxies", "127.0.0.1".into())],
            ..Default::default()
        };
        let t = TestApp::spawn_with(engine, opts).await;
        let (_, key) = t.customer("C1", "100").await;
        let r = send(topup_async(&t, &key, "C1", json!({"phone": PHONE, "amount": 10}))).await;
        let id = r.json["transaction"]["id"].as_str().unwrap().to_string();

        // Without credentials: refused unless the customer turned public status on.
        let r = send(t.http.get(url(&t, &format!("/api/transaction/{id}")))).await;
        assert_old_error(&r, 401, "Invalid API credentials", "private");
        patch(
            &t,
            "C1",
            CustomerPatch {
                public_status: Some(true),
                ..Default::default()
            },
        )
        .await;
        let r = send(t.http.get(url(&t, &format!("/api/transaction/{id}")))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["transaction"]["transaction_id"], id.as_str());
        // Guessable ids (the old system's) are never public.
        let r = send(t.http.get(url(&t, "/api/transaction/RLR1760353500123"))).await;
        assert_old_error(&r, 401, "Invalid API credentials", "legacy id");

        // The allow-list: a stranger gets the old 403 with its address; a
        // client behind the trusted proxy is admitted by X-Forwarded-For.
        patch(
            &t,
            "C1",
            CustomerPatch {
                ip_allowlist: Some(Some("203.0.113.7".into())),
                ip_allowlist_enabled: Some(true),
                ..Default::default()
            },
        )
        .await;
        let r = send(topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 10}))).await;
        assert_old_error(&r, 403, "IP address not authorized", "stranger");
        assert_eq!(r.json["your_ip"], "127.0.0.1");
        let r = send(
            topup(&t, &key, "C1", json!({"phone": PHONE, "amount": 10})).header("X-Forwarded-For", "198.51.100.1"),
        )
        .await;
        assert_old_error(&r, 403, "IP address not authorized", "proxied stranger");
        assert_eq!(r.json["your_ip"], "198.51.100.1");
        let r = send(
            topup(
                &t,
                &key,
                "C1",
                json!({"phone": PHONE, "amount": 10, "reference": "ip-ok"}),
            )
            .header("X-Forwarded-For", "203.0.113.7"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // /v1 too, in its own shape.
        let r = send(t.http.get(url(&t, "/v1/balance")).bearer_auth(&key)).await;
        assert_eq!(r.status.as_u16(), 403, "{}", r.text);
        assert_eq!(r.json["code"], "ip_not_allowed");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let t = TestApp::spawn(engines()[0]).await;
    let (_, key) = t.customer("C1", "100").await;
    patch(
        &t,
        "C1",
        CustomerPatch {
            ip_allowlist: Some(Some("203.0.113.7".into())),
            ip_allowlist_enabled: Some(true),
            ..Default::default()
        },
    )
    .await;
    let r = send(old(&t, Method::GET, "/api/balance", &key, "C1").header("X-Forwarded-For", "203.0.113.7")).await;
    assert_old_error(&r, 403, "IP address not authorized", "spoofed header");
    t.stop().await;
}

// ---------------------------------------------------------------- real clients

/// How to run a client of another language; `None` when it cannot run here.
fn interpreter(lang: &str) -> Option<Vec<String>> {
    match lang {
        "python" => {
            let python = std::env::var("RECARGA_PYTHON").unwrap_or_else(|_| "python3".into());
            let ok = std::process::Command::new(&python)
                .args(["-c", "import requests"])
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then(|| vec![python, client_path("legacy_client.py")])
        }
        _ => {
            let ok = std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then(|| vec!["node".into(), client_path("legacy_client.mjs")])
        }
    }
}

fn client_path(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Clients must run in CI; elsewhere a missing interpreter says it skipped.
fn clients_required() -> bool {
    std::env::var("CI").is_ok() || std::env::var("RECARGA_CLIENT_TESTS").is_ok_and(|v| v == "1")
}

async fn run_client(cmd: &[String], t: &TestApp, key: &str, customer: &str, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(args)
        .env("RECARGA_BASE_URL", &t.base)
        .env("RECARGA_API_KEY", key)
        .env("RECARGA_CUSTOMER_ID", customer)
        .output()
        .await
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} broke the old contract:\n{stdout}\n{stderr}",
        cmd[1]
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the client's JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_written_from_the_old_guides_run_unchanged() {
    for lang in ["python", "javascript"] {
        let Some(cmd) = interpreter(lang) else {
            assert!(
                !clients_required(),
                "the {lang} client cannot run (interpreter or library missing)"
            );
            crate::common::skipped(
                &format!("the {lang} client"),
                "install python3-requests / node, or set RECARGA_PYTHON",
            );
            continue;
        };
        for engine in engines() {
            let t = TestApp::spawn(engine).await;
            let (_, key) = t.customer("SMARTBIZ_001", "100").await;
            let (_, key_x) = t
                .customer_with(NewCustomer {
                    catalogue: CatalogueRule::XoomOnly,
                    initial_credit: Money::major(100),
                    ..NewCustomer::new("ENVIADESPENSA_001", "EnviaDespensa")
                })
                .await;
            let (_, key_d) = t
                .customer_with(NewCustomer {
                    daily_limit: Some(Money::major(30)),
                    initial_credit: Money::major(100),
                    ..NewCustomer::new("HAZ_001", "HAZ")
                })
                .await;
            let (_, key_p) = t
                .customer_with(NewCustomer {
                    initial_credit: Money::major(100),
                    ..NewCustomer::new("PUBLIC_001", "Public status")
                })
                .await;
            patch(
                &t,
                "PUBLIC_001",
                CustomerPatch {
                    public_status: Some(true),
                    ..Default::default()
                },
            )
            .await;
            let tag = format!("{lang}-{engine:?}");
            let run = |key: String, customer: &'static str, args: Vec<String>| {
                let cmd = cmd.clone();
                let t = &t;
                async move {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    run_client(&cmd, t, &key, customer, &args).await
                }
            };
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            let seen = run(key.clone(), "SMARTBIZ_001", s(&["balance"])).await;
            assert_eq!(seen["balance"].as_f64(), Some(100.0), "{tag}");
            run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["sync_success", PHONE, "20", &format!("{tag}-1")]),
            )
            .await;
            run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["sync_failure", FAILING_PHONE, "20", &format!("{tag}-2")]),
            )
            .await;
            run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["insufficient", PHONE, "500", &format!("{tag}-3")]),
            )
            .await;
            run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["invalid_amount", PHONE, "5", &format!("{tag}-4")]),
            )
            .await;
            run(
                key_x.clone(),
                "ENVIADESPENSA_001",
                s(&["invalid_amount", PHONE, "25", &format!("{tag}-5")]),
            )
            .await;
            run(
                key_d.clone(),
                "HAZ_001",
                s(&["sync_success", PHONE, "20", &format!("{tag}-6")]),
            )
            .await;
            run(
                key_d.clone(),
                "HAZ_001",
                s(&["daily_limit", PHONE, "20", &format!("{tag}-7")]),
            )
            .await;
            let seen = run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["async_poll", PHONE, "10", &format!("{tag}-8")]),
            )
            .await;
            assert_eq!(seen["queued_status"], "PENDING", "{tag}");
            run(
                key_p.clone(),
                "PUBLIC_001",
                s(&["async_poll_public", PHONE, "10", &format!("{tag}-9")]),
            )
            .await;
            run(
                key.clone(),
                "SMARTBIZ_001",
                s(&["status_private", PHONE, "10", &format!("{tag}-10")]),
            )
            .await;
            t.assert_audit_clean().await;
            t.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_answers_503_while_the_database_is_down() {
    let Some(setup) = engines()
        .into_iter()
        .find(|s| s.engine == recarga_store::testing::Engine::Postgres && s.redis_url.is_none())
    else {
        crate::common::skipped(
            "health_answers_503_while_the_database_is_down",
            "needs TEST_DATABASE_URL",
        );
        return;
    };
    let t = TestApp::spawn(setup).await;
    let name =
        t.db.url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
    let admin = recarga_store::PgStore::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let block = |allow: bool| {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow};
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND {};",
            if allow { "FALSE" } else { "TRUE" }
        )))
    };
    block(false).execute(admin.pool()).await.unwrap();
    let mut last = None;
    for _ in 0..100 {
        let r = send(t.http.get(url(&t, "/health"))).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("/health answered 503 while the database was down");
    assert_eq!(r.json["status"], "DEGRADED", "{}", r.text);
    assert_eq!(r.json["services"]["database"]["connected"], false, "{}", r.text);
    block(true).execute(admin.pool()).await.unwrap();
    let mut back = false;
    for _ in 0..100 {
        if send(t.http.get(url(&t, "/health"))).await.status == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "/health is 200 again once the database is back");
    t.stop().await;
}
