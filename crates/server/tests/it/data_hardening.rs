//! Issue 18's data findings, black-box: open-range face values that cannot be
//! delivered exactly are refused (both APIs, every engine) with the nearest
//! deliverable amounts and no money moved, and the product list says so
//! (finding 6); every CSV the running binary writes (the operators'
//! transactions export and the customer dashboard's) shows a cell that
//! would start a spreadsheet formula as text (finding 13).

use crate::common::procs::{client, free_port, recarga, run, spawn, wait_ready};
use crate::common::{TestApp, body, engines};
use recarga_domain::Money;
use recarga_store::testing::{engines as db_engines, fresh, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// A cookie-keeping client that does not follow redirects.
struct Session {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Session {
    fn new(base: &str) -> Self {
        Session {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> (StatusCode, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let res = req.header("cookie", cookie).send().await.expect("send");
        for c in res.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap_or("").split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        (res.status(), res.text().await.unwrap_or_default())
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Fetches `form_path`, then posts `fields` with its CSRF token to `post_path`.
    async fn submit(&mut self, form_path: &str, post_path: &str, fields: &[(&str, &str)]) -> StatusCode {
        let (_, form) = self.get(form_path).await;
        let marker = "name=\"csrf\" value=\"";
        let start = form.find(marker).expect("a csrf input") + marker.len();
        let csrf = form[start..start + form[start..].find('"').expect("end")].to_string();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let encoded: String = all
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(format!("{}{post_path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded);
        self.send(req).await.0
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `recarga …` on `db_url` in `work`, to completion; its JSON output.
async fn cli(work: &Path, db_url: &str, args: &[&str]) -> Value {
    let mut cmd = recarga(work);
    cmd.env("RECARGA_DATA_DIR", work.join("data"))
        .env("DATABASE_URL", db_url)
        .args(args);
    let out = run(cmd).await;
    assert!(out.ok(), "recarga {args:?}: {out:?}");
    out.json
}

/// The rows of a CSV body, by column name.
fn csv_rows(text: &str) -> Vec<HashMap<String, String>> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_string).collect();
    reader
        .records()
        .map(|r| {
            let r = r.expect("a valid CSV record");
            header.iter().cloned().zip(r.iter().map(str::to_string)).collect()
        })
        .collect()
}

/// Every exported row of customer `CSV_1`, checked: the formula-like
/// references are prefixed with `'`, everything else is as written.
fn assert_guarded(text: &str, ctx: &str, ids: &HashMap<&str, String>) {
    let rows = csv_rows(text);
    assert_eq!(rows.len(), 3, "{ctx}: {text}");
    let by_ref: HashMap<&str, &HashMap<String, String>> = rows.iter().map(|r| (r["reference"].as_str(), r)).collect();
    for (sent, shown) in [
        (FORMULA_REF, format!("'{FORMULA_REF}")),
        ("-2+3", "'-2+3".to_string()),
        ("order-1", "order-1".to_string()),
    ] {
        let row = by_ref
            .get(shown.as_str())
            .unwrap_or_else(|| panic!("{ctx}: no row with reference {shown:?}: {text}"));
        assert_eq!(row["id"], ids[sent], "{ctx}: ids are never altered");
        assert_eq!(row["phone"], PHONE, "{ctx}: phones are never altered");
        assert_eq!(row["face_value"], "20.00", "{ctx}");
        assert_eq!(row["customer_id"], "CSV_1", "{ctx}");
        // Our own importers read it back exactly.
        assert_eq!(
            recarga_domain::spreadsheet::unguard_cell(&row["reference"]),
            sent,
            "{ctx}"
        );
    }
    assert!(
        !text.contains("\n=") && !text.contains(",="),
        "{ctx}: a bare formula cell: {text}"
    );
}

const FORMULA_REF: &str = "=HYPERLINK(\"https://evil.example/\",\"open\")";
const ADMIN_KEY: &str = "a-long-test-admin-key-8c1f4e2b9d7a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_of_the_running_binary_show_formulas_as_text() {
    for engine in db_engines() {
        let ctx = format!("{engine:?}");
        let db = fresh(engine).await;
        let work = temp_dir("csv");
        let created = cli(
            &work,
            &db.url,
            &[
                "customer", "create", "--id", "CSV_1", "--name", "CSV One", "--credit", "100",
            ],
        )
        .await;
        let key = created["api_key"].as_str().expect("api_key").to_string();

        let port = free_port();
        let mut cmd = recarga(&work);
        cmd.arg("serve")
            .env("RECARGA_DATA_DIR", work.join("data"))
            .env("DATABASE_URL", &db.url)
            .env("PORT", port.to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("RECARGA_DEMO", "false")
            .env("RECARGA_SANDBOX_LATENCY_MS", "20-60")
            .env("ADMIN_KEY", ADMIN_KEY);
        let mut proc = spawn(cmd, &work, "csv");
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&mut proc, &format!("{base}/health"), Some(StatusCode::OK)).await;

        let http = client();
        let mut ids = HashMap::new();
        for reference in [FORMULA_REF, "-2+3", "order-1"] {
            let res = http
                .post(format!("{base}/v1/topups"))
                .bearer_auth(&key)
                .json(&body(PHONE, "20", reference))
                .send()
                .await
                .expect("send");
            let (status, json, text) = json_of(res).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{ctx}: {text}");
            ids.insert(reference, json["id"].as_str().expect("id").to_string());
        }
        let deadline = Instant::now() + FINAL_WITHIN;
        for id in ids.values() {
            while db
                .store
                .get_topup(id)
                .await
                .expect("read")
                .is_some_and(|t| !t.status.is_final())
            {
                assert!(Instant::now() < deadline, "{ctx}: {id} not final");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        // The operators' export.
        let mut ops = Session::new(&base);
        let status = ops
            .submit(
                "/admin/login",
                "/admin/login",
                &[("email", "admin"), ("password", ADMIN_KEY), ("next", "/admin")],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{ctx}: admin login");
        let (status, text) = ops.get("/admin/transactions.csv?customer=CSV_1").await;
        assert_eq!(status, StatusCode::OK, "{ctx}: {text}");
        assert_guarded(&text, &format!("{ctx} admin CSV"), &ids);

        // The customer's dashboard export.
        let mut staff = Session::new(&base);
        let status = staff
            .submit(
                "/dashboard/login",
                "/dashboard/login",
                &[("customer_id", "CSV_1"), ("api_key", &key)],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{ctx}: dashboard login");
        let (status, text) = staff.get("/dashboard/topups.csv").await;
        assert_eq!(status, StatusCode::OK, "{ctx}: {text}");
        assert_guarded(&text, &format!("{ctx} dashboard CSV"), &ids);

        proc.sigterm().expect("sigterm");
        proc.wait_exit(Duration::from_secs(20)).await;
    }
}
