//! `recarga import legacy` against a database in the old system's schema
//! (LEGACY.md §4), built here with its traps: USD and MXN in one column,
//! NULL `amount_mxn`, simulated rows with fake `OP_` ids, synthetic
//! `LATCOM_<ms>` ids, repeated and empty references, the old `521` phone
//! prefix, PENDING rows that never finished, an IPv4-mapped allow-list, a
//! customer with 10,000 transactions, a USD and an MXN customer, and the
//! old books (adjustments, billing records, an invoice with items).
//!
//! The import runs as the real binary into the database of a running
//! gateway (SQLite and PostgreSQL), and the gateway is then used the old
//! way: the imported keys with the old headers, the old ids on every route.

use crate::common::procs::{recarga, run};
use crate::common::{TestApp, engines, skipped};
use recarga_domain::{Money, TopupStatus};
use recarga_store::testing::{Engine, TEST_DB_PREFIX, replace_db_name, temp_dir};
use recarga_store::{Store, TopupFilter};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

use recarga_testkit::legacy::{ENVIA_KEY, HAZ_KEY, OLD_SCHEMA, old_data};

/// A fresh PostgreSQL database in the old schema with [`old_data`];
/// returns its URL. `None` (said on the terminal) without PostgreSQL.
pub async fn old_database(envia_rows: i64) -> Option<String> {
    let Some(admin) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        skipped(
            "legacy import",
            "TEST_DATABASE_URL is not set: the old system's database is PostgreSQL",
        );
        return None;
    };
    let name = format!("{TEST_DB_PREFIX}old_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(&admin).await.expect("connect admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create the old database");
    let url = replace_db_name(&admin, &name);
    let old = sqlx::PgPool::connect(&url).await.expect("connect old");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{OLD_SCHEMA}{}", old_data(envia_rows))))
        .execute(&old)
        .await
        .expect("fill the old database");
    Some(url)
}

async fn old_sql(url: &str, sql: &str) {
    let old = sqlx::PgPool::connect(url).await.expect("connect old");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&old)
        .await
        .expect("old sql");
}

/// Runs `recarga <args>` against the gateway's database; returns (exit code, stdout JSON, stderr).
async fn cli(db_url: &str, work: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut cmd = recarga(work);
    if let Some(path) = db_url.strip_prefix("sqlite://") {
        cmd.env("DATABASE_URL", path);
    } else {
        cmd.env("DATABASE_URL", db_url);
    }
    cmd.args(args);
    let out = run(cmd).await;
    (out.code.unwrap_or(-1), out.json, out.stderr)
}

fn import_args<'a>(from: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "import",
        "legacy",
        "--from",
        from,
        "--fx-rate-for",
        "USD=17.80",
        "--currency",
        "HAZ_001=MXN",
    ];
    args.extend_from_slice(extra);
    args
}

fn customer<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["customers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("{id} in {report}"))
}

async fn legacy_rows(store: &dyn Store, customer: &str) -> usize {
    let mut n = 0;
    let mut filter = TopupFilter {
        customer_id: Some(customer.into()),
        limit: 1000,
        ..TopupFilter::default()
    };
    loop {
        let page = store.list_topups(&filter).await.expect("list");
        n += page.iter().filter(|t| t.is_imported()).count();
        match page.last() {
            Some(last) if page.len() == 1000 => filter.before_id = Some(last.id.clone()),
            _ => return n,
        }
    }
}

fn old_request(t: &TestApp, method: reqwest::Method, path: &str, key: &str, customer: &str) -> reqwest::RequestBuilder {
    t.http
        .request(method, format!("{}{path}", t.base))
        .header("x-api-key", key)
        .header("x-customer-id", customer)
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Dry run, import, tie-out, re-run, then the old clients' way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_installation_imports_ties_out_and_keeps_working() {
    let Some(old) = old_database(10_000).await else {
        return;
    };
    for setup in engines().into_iter().filter(|s| s.redis_url.is_none()) {
        let t = TestApp::spawn(setup).await;
        let work = temp_dir("import");
        let db = t.db.url.clone();
        let store = t.store();

        // The dry run reports and writes nothing.
        let report_path = work.join("dry-run.json");
        let report_arg = report_path.to_string_lossy().to_string();
        let (code, dry, stderr) = cli(&db, &work, &import_args(&old, &["--dry-run", "--report", &report_arg])).await;
        assert_eq!(code, 0, "{setup:?}: {dry} {stderr}");
        assert_eq!(dry["dry_run"], true);
        assert_eq!(dry["ok"], true, "{dry}");
        assert!(
            store.list_customers().await.unwrap().is_empty(),
            "{setup:?}: a dry run writes nothing"
        );
        assert!(
            stderr.contains("\"progress\""),
            "progress lines when not on a terminal: {stderr}"
        );
        let envia = customer(&dry, "ENVIADESPENSA_001");
        assert_eq!(envia["action"], "would_import");
        assert_eq!(envia["reference_policy"], "free", "{envia}");
        assert_eq!(envia["unknown_to_resolve"]["count"], 180);
        assert!(envia["anomalies"]["null_amount_mxn"].as_u64() > Some(1000), "{envia}");
        assert_eq!(envia["anomalies"]["simulated"], 200);
        assert_eq!(envia["anomalies"]["phone_rewritten"], 100);
        assert_eq!(envia["ip_allowlist"]["imported"], "100.64.0.3,203.0.113.9");
        assert_eq!(customer(&dry, "HAZ_001")["reference_policy"], "unique");

        // The import, against the approved dry run.
        let (code, imported, stderr) = cli(&db, &work, &import_args(&old, &["--expect", &report_arg])).await;
        assert_eq!(code, 0, "{setup:?}: {imported} {stderr}");
        assert_eq!(imported["ok"], true, "{imported}");
        assert!(
            !imported.to_string().contains(ENVIA_KEY),
            "no plaintext key in the report"
        );
        let envia = customer(&imported, "ENVIADESPENSA_001");
        assert_eq!(envia["action"], "imported");
        assert_eq!(envia["balance_after_import"], "7123.45");
        assert_eq!(envia["keys_imported"], 1);
        assert_eq!(
            envia["history_ours"],
            json!({"adjustment": 1, "billing": 2, "invoice": 1})
        );
        let c = store
            .get_customer("ENVIADESPENSA_001")
            .await
            .unwrap()
            .expect("imported");
        assert_eq!(c.balance, Money(712_345));
        assert_eq!(c.credit_limit, Money::ZERO, "the old credit limit was never enforced");
        assert!(!c.ip_allowlist_enabled, "allow-lists come in disabled");
        assert_eq!(c.commission_bps, 1100);
        let haz = store.get_customer("HAZ_001").await.unwrap().expect("imported");
        assert_eq!((haz.balance, haz.currency.as_str()), (Money(1_000_000), "MXN"));
        assert_eq!(legacy_rows(store, "ENVIADESPENSA_001").await, 10_000);
        let ledger = store.ledger("ENVIADESPENSA_001", 10).await.unwrap();
        assert_eq!(ledger.len(), 1, "the opening entry is the only ledger row: {ledger:?}");
        assert_eq!(ledger[0].kind.as_str(), "import");
        for k in store.list_api_keys("ENVIADESPENSA_001").await.unwrap() {
            assert!(!k.digest.contains(ENVIA_KEY) && !k.prefix.contains(ENVIA_KEY));
        }
        t.assert_audit_clean().await;

        // A second run imports nothing new and says so.
        let (code, again, _) = cli(&db, &work, &import_args(&old, &[])).await;
        assert_eq!(code, 0, "{again}");
        for c in again["customers"].as_array().unwrap() {
            assert_eq!(c["action"], "already_imported", "{c}");
        }
        assert_eq!(legacy_rows(store, "ENVIADESPENSA_001").await, 10_000);

        // The panel shows the old books beside the ledger, and the history in
        // the transactions list and its CSV.
        crate::common::pages::operator(&t, "ops@example.com", "admin").await;
        let mut browser = crate::common::pages::Browser::new(&t.base);
        browser.login("ops@example.com", crate::common::pages::PASSWORD).await;
        let page = browser.get("/admin/customers/ENVIADESPENSA_001").await;
        assert_eq!(page.status, StatusCode::OK);
        for text in [
            "id=\"old-books\"",
            "Wire 2025-10-14",
            "INV-ENVIADESPENSA_001-1760400000000",
            "import",
        ] {
            assert!(page.text.contains(text), "{setup:?}: {text} on the customer's page");
        }
        let page = browser.get("/admin/transactions?customer=HAZ_001").await;
        assert!(
            page.text.contains("RLR1760000000001"),
            "{setup:?}: imported rows in the panel"
        );
        let csv = browser.get("/admin/transactions.csv?customer=HAZ_001").await;
        assert!(
            csv.text.contains("RLR1760000000005"),
            "{setup:?}: imported rows in the CSV: {}",
            csv.text
        );

        // The old clients' way in: old headers, old ids, on both APIs.
        let (s, bal) = send(old_request(
            &t,
            reqwest::Method::GET,
            "/api/balance",
            ENVIA_KEY,
            "ENVIADESPENSA_001",
        ))
        .await;
        assert_eq!(s, StatusCode::OK, "{bal}");
        let (s, v1) = send(old_request(&t, reqwest::Method::GET, "/v1/balance", HAZ_KEY, "HAZ_001")).await;
        assert_eq!(s, StatusCode::OK, "{v1}");
        let old_id = "RLR1759238201000";
        let (s, tx) = send(old_request(
            &t,
            reqwest::Method::GET,
            &format!("/api/transaction/{old_id}"),
            ENVIA_KEY,
            "ENVIADESPENSA_001",
        ))
        .await;
        assert_eq!(s, StatusCode::OK, "{tx}");
        let (s, tx) = send(old_request(
            &t,
            reqwest::Method::GET,
            &format!("/v1/topups/{old_id}"),
            ENVIA_KEY,
            "ENVIADESPENSA_001",
        ))
        .await;
        assert_eq!((s, tx["status"].as_str()), (StatusCode::OK, Some("SUCCESS")), "{tx}");
        // 500 MXN at 0.0541 USD per MXN: the old system debited 27.05 USD.
        assert_eq!(
            (tx["imported"].as_bool(), tx["charge"]["amount"].as_str()),
            (Some(true), Some("27.05")),
            "{tx}"
        );
        assert_eq!(tx["upstream_transaction_id"], "LT1001", "{tx}");
        let (s, unknown) = send(old_request(
            &t,
            reqwest::Method::GET,
            "/v1/topups?status=UNKNOWN&limit=5",
            ENVIA_KEY,
            "ENVIADESPENSA_001",
        ))
        .await;
        assert_eq!(s, StatusCode::OK, "{unknown}");
        assert_eq!(unknown["data"].as_array().map(Vec::len), Some(5), "{unknown}");

        // An old reference is not an idempotency key: a new order that reuses it is a new top-up.
        let (s, fresh) = send(
            old_request(&t, reqwest::Method::POST, "/v1/topups", HAZ_KEY, "HAZ_001").json(&json!({
                "phone": "5512345009", "amount": "50", "reference": "HAZ-ORDER-1"
            })),
        )
        .await;
        assert!(s.is_success(), "{s} {fresh}");
        assert_ne!(fresh["id"], "RLR1760000000001", "{fresh}");
        let fresh_id = fresh["id"].as_str().expect("id").to_string();
        t.wait_final(&fresh_id, std::time::Duration::from_secs(20)).await;

        // Newest first: the new top-up before the imported history.
        let (_, listed) = send(old_request(
            &t,
            reqwest::Method::GET,
            "/v1/topups?limit=2",
            HAZ_KEY,
            "HAZ_001",
        ))
        .await;
        assert_eq!(listed["data"][0]["id"], fresh_id.as_str(), "{listed}");

        // An old PENDING (UNKNOWN, nothing held): FAILED moves nothing, SUCCESS debits its price.
        let before = t.balance("ENVIADESPENSA_001").await;
        let unknown_ids: Vec<String> = unknown["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        let resolve = |id: &str, outcome: &str| {
            vec![
                "topup".to_string(),
                "resolve".into(),
                "--id".into(),
                id.to_string(),
                "--outcome".into(),
                outcome.into(),
                "--reason".into(),
                "Latcom statement line".into(),
            ]
        };
        let args = resolve(&unknown_ids[0], "failed");
        let (code, out, err) = cli(&db, &work, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(code, 0, "{out} {err}");
        assert_eq!(
            t.balance("ENVIADESPENSA_001").await,
            before,
            "resolving FAILED moves no money"
        );
        let priced = store.get_topup(&unknown_ids[1]).await.unwrap().expect("topup");
        assert_eq!(priced.held, Money::ZERO);
        let args = resolve(&unknown_ids[1], "success");
        let (code, out, err) = cli(&db, &work, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(code, 0, "{out} {err}");
        let price = priced.legacy_price.expect("a price");
        assert!(price > 0);
        assert_eq!(t.balance("ENVIADESPENSA_001").await, Money(before.0 - price));
        assert_eq!(
            store.get_topup(&unknown_ids[1]).await.unwrap().map(|t| t.status),
            Some(TopupStatus::Success)
        );
        t.assert_audit_clean().await;
        let (code, audit, _) = cli(&db, &work, &["audit"]).await;
        assert_eq!(code, 0, "{audit}");
        t.stop().await;
    }
}

/// The old data changed after the approved dry run: nothing is written.
/// A customer id with Recarga traffic is refused unless `--merge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_source_or_a_busy_customer_is_refused() {
    let Some(old) = old_database(50).await else {
        return;
    };
    let setup = *engines().iter().find(|s| s.engine == Engine::Sqlite).expect("sqlite");
    let t = TestApp::spawn(setup).await;
    let work = temp_dir("import");
    let db = t.db.url.clone();
    let report_path = work.join("dry-run.json");
    let report_arg = report_path.to_string_lossy().to_string();
    let (code, _, err) = cli(&db, &work, &import_args(&old, &["--dry-run", "--report", &report_arg])).await;
    assert_eq!(code, 0, "{err}");

    old_sql(
        &old,
        "UPDATE customers SET current_balance = current_balance + 0.01 WHERE customer_id = 'HAZ_001'",
    )
    .await;
    let (code, refused, _) = cli(&db, &work, &import_args(&old, &["--expect", &report_arg])).await;
    assert_eq!(code, 1, "{refused}");
    assert_eq!(refused["expectation_failed"], json!(["HAZ_001"]), "{refused}");
    assert!(t.store().list_customers().await.unwrap().is_empty(), "nothing written");

    // HAZ_001 already trades on Recarga.
    let (_, _) = t.customer("HAZ_001", "100").await;
    let (code, report, _) = cli(&db, &work, &import_args(&old, &[])).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(customer(&report, "HAZ_001")["action"], "refused");
    assert_eq!(customer(&report, "ENVIADESPENSA_001")["action"], "imported");
    assert_eq!(t.balance("HAZ_001").await, Money::major(100));

    let (code, merged, err) = cli(&db, &work, &import_args(&old, &["--merge", "--customers", "HAZ_001"])).await;
    assert_eq!(code, 0, "{merged} {err}");
    assert_eq!(customer(&merged, "HAZ_001")["action"], "merged");
    assert_eq!(t.balance("HAZ_001").await, Money(10_000 + 1_000_001));
    t.assert_audit_clean().await;

    // The way back: a top-up delivered here and an old PENDING resolved here
    // reach the old database, with the balance as it is now. While Latcom
    // blocks us the top-up stays open, and an open top-up blocks the way back.
    t.sandbox.update(|c| c.ip_blocked = true);
    let (s, fresh) = send(
        old_request(&t, reqwest::Method::POST, "/v1/topups", HAZ_KEY, "HAZ_001")
            .json(&json!({ "phone": "5512345010", "amount": "100", "reference": "O'BRIEN-1" })),
    )
    .await;
    assert!(s.is_success(), "{s} {fresh}");
    let fresh_id = fresh["id"].as_str().expect("id").to_string();
    let out_path = work.join("rollback.sql");
    let out_arg = out_path.to_string_lossy().to_string();
    let (code, blocked, _) = cli(&db, &work, &["export", "legacy", "--out", &out_arg]).await;
    assert_eq!(code, 1, "{blocked}");
    assert_eq!(blocked["open"], json!([fresh_id]), "{blocked}");
    assert!(!out_path.exists());
    t.sandbox.update(|c| c.ip_blocked = false);
    t.wait_status(&fresh_id, TopupStatus::Success, std::time::Duration::from_secs(20))
        .await;
    let args = [
        "topup",
        "resolve",
        "--id",
        "RLR1760000000003",
        "--outcome",
        "success",
        "--reason",
        "carrier statement",
    ];
    let (code, out, err) = cli(&db, &work, &args).await;
    assert_eq!(code, 0, "{out} {err}");
    let (code, summary, err) = cli(&db, &work, &["export", "legacy", "--out", &out_arg]).await;
    assert_eq!(code, 0, "{summary} {err}");
    assert_eq!(summary["resolved_old_rows"], 1, "{summary}");
    let sql = std::fs::read_to_string(&out_path).expect("the script");
    old_sql(&old, &sql).await;
    old_sql(&old, &sql).await; // twice: idempotent
    let pool = sqlx::PgPool::connect(&old).await.expect("connect old");
    let (balance,): (String,) =
        sqlx::query_as("SELECT current_balance::text FROM customers WHERE customer_id = 'HAZ_001'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(balance, t.balance("HAZ_001").await.to_decimal_string());
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT status, reference, amount::text FROM transactions WHERE transaction_id IN ($1, 'RLR1760000000003') ORDER BY id",
    )
    .bind(&fresh_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("SUCCESS".to_string(), "HAZ-ORDER-3".to_string(), "20.00".to_string()),
            ("SUCCESS".to_string(), "O'BRIEN-1".to_string(), "100.00".to_string()),
        ]
    );
    t.stop().await;
}

/// A crash inside a customer's import (`import.before_commit`) leaves
/// nothing of it; the next run imports it whole and the books tie out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_import_leaves_nothing_half_written() {
    crate::common::procs::assert_failpoints_compiled();
    let Some(old) = old_database(20).await else {
        return;
    };
    for setup in engines().into_iter().filter(|s| s.redis_url.is_none()) {
        let t = TestApp::spawn(setup).await;
        let work = temp_dir("import");
        let db = t.db.url.clone();
        // The second customer's commit crashes (customers go in id order).
        let mut cmd = recarga(&work);
        cmd.env("DATABASE_URL", db.strip_prefix("sqlite://").unwrap_or(&db));
        cmd.env(recarga_domain::failpoint::ENV, "import.before_commit@2");
        cmd.args(import_args(&old, &[]));
        let crashed = run(cmd).await;
        assert!(
            crashed.code != Some(0),
            "{setup:?}: the armed import must abort: {crashed:?}"
        );
        assert!(
            crashed.stderr.contains("failpoint import.before_commit hit"),
            "{crashed:?}"
        );
        let ids: Vec<String> = t
            .store()
            .list_customers()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            ids,
            vec!["ENVIADESPENSA_001".to_string()],
            "{setup:?}: only the committed customer"
        );
        assert!(
            t.store()
                .list_topups(&TopupFilter {
                    customer_id: Some("HAZ_001".into()),
                    limit: 10,
                    ..TopupFilter::default()
                })
                .await
                .unwrap()
                .is_empty()
        );
        t.assert_audit_clean().await;

        let (code, report, err) = cli(&db, &work, &import_args(&old, &[])).await;
        assert_eq!(code, 0, "{setup:?}: {report} {err}");
        assert_eq!(customer(&report, "ENVIADESPENSA_001")["action"], "already_imported");
        assert_eq!(customer(&report, "HAZ_001")["action"], "imported");
        assert_eq!(customer(&report, "SMARTBIZ_001")["action"], "imported");
        t.assert_audit_clean().await;
        t.stop().await;
    }
}
