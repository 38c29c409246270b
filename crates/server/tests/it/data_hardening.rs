//! Issue 18's data findings, black-box: open-range face values that cannot be
//! delivered exactly are refused (both APIs, every engine) with the nearest
//! deliverable amounts and no money moved, and the product list says so
//! (finding 6); every CSV the running binary writes (the operators'
//! transactions export and the customer dashboard's) shows a cell that
//! would start a spreadsheet formula as text (finding 13).

use crate::common::{TestApp, body, engines};
use recarga_domain::Money;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const PHONE: &str = "5512345678";
const FINAL_WITHIN: Duration = Duration::from_secs(20);

/// 25.05 / 1.16 = 21.5948…: 21.59 sent delivers 25.04 and 21.60 delivers 25.06.
const INEXACT: &str = "25.05";
/// 25.06 = 21.60 × 1.16 exactly.
const EXACT: &str = "25.06";

async fn json_of(res: reqwest::Response) -> (StatusCode, Value, String) {
    let status = res.status();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_range_refuses_face_values_it_cannot_deliver_exactly() {
    for setup in engines() {
        let t = TestApp::spawn(setup).await;
        let (_, key) = t.customer("OR_1", "100").await;
        let ctx = format!("{setup:?}");

        // /v1: refused with the nearest amounts that can be delivered.
        let (status, refused) = t.topup(&key, body(PHONE, INEXACT, "inexact-1"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{ctx}: {refused}");
        assert_eq!(refused["code"], "amount_not_exact", "{ctx}: {refused}");
        assert_eq!(refused["details"]["requested"], INEXACT, "{ctx}: {refused}");
        assert_eq!(
            refused["details"]["nearest"],
            json!(["25.04", "25.06"]),
            "{ctx}: {refused}"
        );
        assert!(
            refused["message"].as_str().unwrap().contains("25.04"),
            "{ctx}: {refused}"
        );
        // 25.12 would have been over-delivered (25.13).
        let (status, refused) = t.topup(&key, body(PHONE, "25.12", "inexact-2"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{ctx}: {refused}");
        assert_eq!(
            refused["details"]["nearest"],
            json!(["25.11", "25.13"]),
            "{ctx}: {refused}"
        );

        // The compatibility route: the old 400 shape, with the nearest amounts added.
        let res = t
            .http
            .post(format!("{}/api/enviadespensa/topup", t.base))
            .header("x-api-key", &key)
            .header("x-customer-id", "OR_1")
            .json(&json!({"phone": PHONE, "amount": 25.05, "reference": "inexact-3"}))
            .send()
            .await
            .expect("send");
        let (status, old, text) = json_of(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ctx}: {text}");
        assert_eq!(old["success"], false, "{ctx}: {text}");
        assert_eq!(old["error"], "Invalid product amount", "{ctx}: {text}");
        assert_eq!(old["code"], "amount_not_exact", "{ctx}: {text}");
        assert_eq!(old["nearest_amounts"], json!([25.04, 25.06]), "{ctx}: {text}");
        assert_eq!(old["requested_amount"].as_f64(), Some(25.05), "{ctx}: {text}");
        assert!(old["allowed_amounts"].is_array(), "{ctx}: {text}");

        // The product list says which rule applies.
        let (status, products) = t.get(&key, "/v1/products").await;
        assert_eq!(status, StatusCode::OK, "{ctx}: {products}");
        assert_eq!(products["inexact_amounts"], "refused", "{ctx}: {products}");
        let rule = products["amount_rule"].as_str().expect("amount_rule");
        assert!(rule.contains("amount_not_exact"), "{ctx}: {rule}");

        // No money moved, no top-up exists.
        assert_eq!(t.balance("OR_1").await, Money::major(100), "{ctx}");
        let (_, list) = t.get(&key, "/v1/topups").await;
        assert_eq!(list["data"], json!([]), "{ctx}: {list}");

        // An exact amount is charged exactly what is delivered.
        let (status, accepted) = t.topup(&key, body(PHONE, EXACT, "exact-1"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ctx}: {accepted}");
        let done = t.wait_final(accepted["id"].as_str().unwrap(), FINAL_WITHIN).await;
        assert_eq!(done.amount_sent, Money(2160), "{ctx}");
        assert_eq!(t.balance("OR_1").await, Money(10_000 - 2506), "{ctx}");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}
