//! The operator panel, live queue and customer dashboard, driven in a real
//! headless Chromium (Debian's `chromium` + `chromium-driver`) through the
//! `fantoccini` WebDriver client, behind the small API of [`webdriver`].
//!
//! Every test runs on every engine of [`crate::common::engines`] against a real
//! gateway on a random port, and follows the pages contract (URLs, element
//! ids, form names) of issue 5. Operators are created the way a person would:
//! `recarga admin create` (the real binary, password on stdin) against the
//! test's database. What a browser cannot see (HTTP status codes, CSV bodies,
//! the SSE stream) is checked with reqwest, replaying the browser's own
//! cookies read over WebDriver.
//!
//! What is covered: an operator onboards a customer (create, key shown once,
//! credit with a reason, CSRF); an API top-up appears live on `/dashboard`
//! and `/queue` (same page object, SSE); a filter and its CSV export give
//! exactly the filtered rows; keyset pages walk the whole history; an UNKNOWN
//! top-up is resolved from its detail page (release / capture in its ledger);
//! a viewer cannot change anything; a customer cannot see another's top-up
//! (404); lockout after five failed logins (operator and dashboard); a revoked
//! key stops the API and its dashboard session; no page scrolls sideways on a
//! phone.
//!
//! Screenshots of each main page (full page height) land in
//! `target/browser-screenshots/` (`<engine>-<page>.png`, `…-phone-…` at
//! 390 px), for a person to look at; a failed scenario leaves
//! `<engine>-FAILED-<test>.png`.
//!
//! Form submissions wait until the next document has replaced the current one
//! ([`click_and_load`]); every wait is bounded (at most 10 s) and no test
//! asserts on speed.
//!
//! Without the browser binaries these tests print `SKIPPED browser tests: …`
//! and pass, except in CI (`CI` set) or with `RECARGA_BROWSER_TESTS=1`, where
//! a missing browser is a failure.

#[path = "browser/webdriver.rs"]
mod webdriver;

use crate::common::pages::form_encode;
use crate::common::{Setup, TestApp, body, engines};
use anyhow::{Context, anyhow, ensure};
use recarga_domain::{Money, TopupStatus};
use recarga_store::testing::Engine;
use recarga_upstream::sim::StatusMode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use webdriver::{Browser, Session};

const BIN: &str = env!("CARGO_BIN_EXE_recarga");
/// The operators' password in every test.
const PASSWORD: &str = "correct horse battery staple 42";
/// How long a top-up may take to reach the state a test waits for (the test
/// sandbox answers in 20–60 ms and times out after 1 s).
const SETTLE_WITHIN: Duration = Duration::from_secs(10);
/// Bound of one `recarga admin create` run.
const CLI_WITHIN: Duration = Duration::from_secs(60);
/// The CSV header the contract fixes.
const CSV_HEADER: &str = "id,customer_id,reference,phone,status,face_value,held,amount_sent,currency,upstream_trans_id,upstream_ven_transid,failure_code,created_at,completed_at";

// --- harness ---------------------------------------------------------------

/// Runs `scenario` on every engine, each with a fresh gateway and browser;
/// skips (loudly, never in CI) when the browser is not installed.
macro_rules! on_every_engine {
    ($name:literal, $scenario:ident) => {{
        if webdriver::available($name).is_err() {
            return;
        }
        for setup in engines() {
            let browser = Browser::start().await.expect("start chromedriver + chromium");
            let t = TestApp::spawn(setup).await;
            let outcome = $scenario(&t, &browser).await;
            if outcome.is_err() {
                let _ = shot(&browser, setup, concat!("FAILED-", $name)).await;
            }
            browser.close().await;
            t.stop().await;
            if let Err(e) = outcome {
                panic!("{} on {setup:?}: {e:?}", $name);
            }
        }
    }};
}

fn slug(setup: Setup) -> &'static str {
    match (setup.engine, setup.redis_url.is_some()) {
        (Engine::Sqlite, _) => "sqlite",
        (Engine::Postgres, false) => "postgres",
        (Engine::Postgres, true) => "postgres-redis",
    }
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots")
}

/// A PNG of the current page into `target/browser-screenshots/<engine>-<name>.png`.
async fn shot(br: &Session, setup: Setup, name: &str) -> anyhow::Result<()> {
    let path = screenshots_dir().join(format!("{}-{name}.png", slug(setup)));
    br.screenshot(&path).await
}

/// `recarga admin create --email E --role R` against the test's database,
/// the password piped on stdin. Returns its JSON.
async fn create_operator(t: &TestApp, email: &str, role: &str) -> anyhow::Result<Value> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear()
        .env("RECARGA_LOG", "warn")
        .env("NO_COLOR", "1")
        .args(["admin", "create", "--email", email, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match t.engine {
        Engine::Sqlite => {
            let dir = t.db.dir.as_ref().context("SQLite test db has a directory")?;
            cmd.env("RECARGA_DATA_DIR", dir);
        }
        Engine::Postgres => {
            cmd.env("DATABASE_URL", &t.db.url);
        }
    }
    let mut child = cmd.spawn().context("run recarga admin create")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(CLI_WITHIN, child.wait_with_output())
        .await
        .context("recarga admin create did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "recarga admin create --email {email} --role {role}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).with_context(|| format!("admin create printed no JSON: {stdout}"))
}

/// Replaces the value of the input matching `css`.
async fn fill(br: &Session, css: &str, value: &str) -> anyhow::Result<()> {
    let el = br.find(css).await?;
    br.clear(&el).await?;
    br.send_keys(&el, value).await
}

/// Sets a form control that may be a `<select>` (the option whose value
/// matches, any case) or an `<input>` (typed).
async fn choose(br: &Session, css: &str, value: &str) -> anyhow::Result<()> {
    let el = br.find(css).await?;
    if br.tag_name(&el).await? != "select" {
        br.clear(&el).await?;
        return br.send_keys(&el, value).await;
    }
    for option in br.find_all(&format!("{css} option")).await? {
        let v = br.attribute(&option, "value").await?.unwrap_or_default();
        if v.eq_ignore_ascii_case(value) {
            return br.click(&option).await;
        }
    }
    Err(anyhow!("{css} has no option {value:?}"))
}

async fn submit(br: &Session, form: &str) -> anyhow::Result<()> {
    let button = br
        .find(&format!(
            "{form} button[type=submit], {form} input[type=submit], {form} button:not([type])"
        ))
        .await?;
    click_and_load(br, &button, form).await
}

/// Clicks `el` and waits until the page it leads to has replaced this one
/// (the marker is gone) and finished loading: without this, the next find
/// could still hit the old page.
async fn click_and_load(br: &Session, el: &webdriver::Element, what: &str) -> anyhow::Result<()> {
    br.execute("window.__leaving = 1; return true;", vec![]).await?;
    br.click(el).await?;
    br.wait_until(&format!("the page after {what}"), Duration::from_secs(10), async || {
        let v = br
            .execute(
                "return window.__leaving === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .ok()?;
        (v == json!(true)).then_some(())
    })
    .await
}

/// Sets `window.__marker`: it survives only as long as the page object does.
async fn mark_page(br: &Session) -> anyhow::Result<()> {
    br.execute("window.__marker = 1; return true;", vec![]).await.map(drop)
}

async fn same_page(br: &Session) -> anyhow::Result<bool> {
    Ok(br.execute("return window.__marker === 1;", vec![]).await? == json!(true))
}

/// The `data-id`s of the rows matching `css`.
async fn row_ids(br: &Session, css: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for row in br.find_all(css).await? {
        ids.insert(br.attribute(&row, "data-id").await?.unwrap_or_default());
    }
    Ok(ids)
}

/// The first integer in a counter's text ("12", "12 waiting", "1,204").
fn count_of(text: &str) -> Option<u64> {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn counter(br: &Session, css: &str) -> anyhow::Result<u64> {
    let text = br.text(css).await?;
    count_of(&text).with_context(|| format!("{css} shows no number: {text:?}"))
}

/// Logs an operator in through the form; returns the path landed on.
async fn operator_login(br: &Session, base: &str, email: &str, password: &str) -> anyhow::Result<()> {
    br.goto(&format!("{base}/admin/login")).await?;
    submit_login(br, email, password).await?;
    br.wait_path("/admin after login", |p| p == "/admin" || p == "/admin/")
        .await
        .map(drop)
}

async fn submit_login(br: &Session, email: &str, password: &str) -> anyhow::Result<()> {
    br.wait_for("form#login-form").await?;
    fill(br, "#login-form input[name=email]", email).await?;
    fill(br, "#login-form input[name=password]", password).await?;
    let button = br.find("#login-submit").await?;
    click_and_load(br, &button, "#login-submit").await
}

async fn customer_login(br: &Session, base: &str, customer_id: &str, key: &str) -> anyhow::Result<()> {
    br.goto(&format!("{base}/dashboard/login")).await?;
    br.wait_for("form#dashboard-login").await?;
    fill(br, "#dashboard-login input[name=customer_id]", customer_id).await?;
    fill(br, "#dashboard-login input[name=api_key]", key).await?;
    submit(br, "#dashboard-login").await?;
    br.wait_path("/dashboard after login", |p| p == "/dashboard" || p == "/dashboard/")
        .await
        .map(drop)
}

/// reqwest without redirects, so a 303 stays visible.
fn raw_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// GET `url` with the browser's cookies.
async fn get_as_browser(br: &Session, url: &str) -> anyhow::Result<reqwest::Response> {
    let cookies = br.cookie_header().await?;
    Ok(raw_http().get(url).header("cookie", cookies).send().await?)
}

/// POST a form to `url` with the browser's cookies (what a forged request from
/// the same browser would carry).
async fn post_as_browser(br: &Session, url: &str, fields: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
    let cookies = br.cookie_header().await?;
    Ok(raw_http()
        .post(url)
        .header("cookie", cookies)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(fields))
        .send()
        .await?)
}

/// The page's CSRF token (every page with a form carries one).
async fn csrf_token(br: &Session) -> anyhow::Result<String> {
    let v = br
        .execute(
            "const i = document.querySelector('input[name=csrf]'); return i ? i.value : null;",
            vec![],
        )
        .await?;
    match v.as_str().filter(|s| !s.is_empty()) {
        Some(token) => Ok(token.to_string()),
        None => Err(anyhow!("no input[name=csrf] on {}", br.current_path().await?)),
    }
}

/// The `href` of the page's `a#export-csv`.
async fn export_href(br: &Session) -> anyhow::Result<String> {
    let href = br
        .execute(
            "const a = document.querySelector('a#export-csv'); return a ? a.href : null;",
            vec![],
        )
        .await?;
    Ok(href.as_str().context("no a#export-csv on the page")?.to_string())
}

/// Fetches a CSV with the browser's session (200 expected); returns the ids
/// in its first column, header excluded.
async fn csv_ids(br: &Session, url: &str) -> anyhow::Result<BTreeSet<String>> {
    let res = get_as_browser(br, url).await?;
    ensure!(res.status() == StatusCode::OK, "GET {url}: {}", res.status());
    let text = res.text().await?;
    Ok(parse_csv(&text)
        .iter()
        .skip(1)
        .filter_map(|row| row.first().cloned())
        .collect())
}

/// RFC 4180 records (quoted fields, doubled quotes, CRLF or LF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// A top-up through `POST /v1/topups`, waited on (`Prefer: wait`) when `sync`.
async fn api_topup(
    t: &TestApp,
    key: &str,
    phone: &str,
    amount: &str,
    reference: &str,
    sync: bool,
) -> anyhow::Result<String> {
    let (status, json) = t.topup(key, body(phone, amount, reference), sync.then_some(10)).await;
    ensure!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "POST /v1/topups {reference}: {status} {json}"
    );
    json["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no id in {json}"))
}

/// The caller's top-up ids from `GET /v1/topups?{query}` (every page).
async fn api_ids(t: &TestApp, key: &str, query: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let (status, json) = t.get(key, &format!("/v1/topups?{query}&limit=100{cursor}")).await;
        ensure!(status == StatusCode::OK, "GET /v1/topups?{query}: {status} {json}");
        for item in json["data"].as_array().context("data")? {
            ids.insert(item["id"].as_str().context("id")?.to_string());
        }
        match json["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return Ok(ids),
        }
    }
}

fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

// --- the WebDriver client itself -------------------------------------------

/// The client against a page the server has always served (`/docs`):
/// navigation, finding, scripts, cookies and screenshots work, and waits fail
/// with a clear message instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdriver_client_drives_a_served_page() {
    if webdriver::available("webdriver_client_drives_a_served_page").is_err() {
        return;
    }
    let setup = engines()[0];
    let browser = Browser::start().await.expect("start chromedriver + chromium");
    let t = TestApp::spawn(setup).await;
    let br: &Session = &browser;
    br.goto(&format!("{}/docs/", t.base)).await.expect("navigate");
    assert!(br.current_path().await.expect("url").starts_with("/docs"));
    let body = br.wait_for("body").await.expect("a body");
    assert_eq!(br.tag_name(&body).await.expect("tag"), "body");
    let two = br
        .execute("return arguments[0] + 1;", vec![json!(1)])
        .await
        .expect("script");
    assert_eq!(two, json!(2));
    mark_page(br).await.expect("mark");
    assert!(same_page(br).await.expect("marker"), "the marker survives on one page");
    let err = br
        .wait_until("something that never comes", Duration::from_millis(300), async || {
            None::<()>
        })
        .await
        .expect_err("a wait for nothing times out");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(br.find("#no-such-element").await.is_err());
    let path = screenshots_dir().join("harness-docs.png");
    br.screenshot(&path).await.expect("screenshot");
    let png = std::fs::read(&path).expect("read screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    // The phone-layout probe sees a page that scrolls sideways, and only that.
    br.set_window_size(390, 844).await.expect("resize");
    let wide = "data:text/html,<meta name=viewport content='width=device-width'><body><p>fits</p><div id=wide style='width:600px'>too wide</div>";
    br.goto(wide).await.expect("navigate");
    let found = br.execute(SIDEWAYS_SCRIPT, vec![]).await.expect("probe");
    assert!(
        found.as_str().is_some_and(|s| s.contains("div#wide")),
        "the probe misses a 600 px div: {found}"
    );
    br.goto("data:text/html,<meta name=viewport content='width=device-width'><body><p>fits</p>")
        .await
        .expect("navigate");
    let found = br.execute(SIDEWAYS_SCRIPT, vec![]).await.expect("probe");
    assert_eq!(found, Value::Null, "a page that fits");
    br.set_window_size(1280, 900).await.expect("resize");
    // After a reload the page object is new: the marker is gone.
    br.goto(&format!("{}/docs/", t.base)).await.expect("navigate again");
    assert!(!same_page(br).await.expect("marker"), "a reload drops the marker");
    browser.close().await;
    t.stop().await;
}

#[test]
fn csv_parser_follows_rfc_4180() {
    let rows = parse_csv("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n,\n");
    assert_eq!(rows, vec![vec!["a", "b"], vec!["x,1", "say \"hi\""], vec!["", ""]]);
    assert_eq!(count_of("1,204 waiting"), Some(1204));
    assert_eq!(count_of("none"), None);
    assert_eq!(form_encode(&[("a b", "x&y=1")]), "a+b=x%26y%3D1");
}

// --- 1. operator onboards a customer ----------------------------------------

/// An operator logs in, creates a customer, issues a key (shown once, and it
/// works on the API), credits 1,000 MXN with a reason: the balance, the ledger
/// and the audit log show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_customer_issues_key_and_credits() {
    on_every_engine!("operator_creates_customer_issues_key_and_credits", onboard);
}

async fn onboard(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    create_operator(t, "ana@recarga.test", "admin").await?;

    // Unauthenticated: the panel sends the browser to the login page.
    br.goto(&format!("{base}/admin/customers")).await?;
    br.wait_path("/admin/login?next=… for an anonymous visitor", |p| {
        p.starts_with("/admin/login")
    })
    .await?;
    shot(br, setup, "login").await?;
    operator_login(br, base, "ana@recarga.test", PASSWORD).await?;

    // Overview.
    for id in [
        "#volume-today",
        "#count-success",
        "#count-failed",
        "#count-unknown",
        "#upstream-state",
        "table#near-limit",
    ] {
        br.wait_for(id).await?;
    }
    let upstream = br.text("#upstream-state").await?;
    ensure!(
        ["ok", "slow", "ip_blocked", "down"].contains(&upstream.trim()),
        "#upstream-state is {upstream:?}, not one of ok|slow|ip_blocked|down"
    );
    for link in [
        "#nav-overview",
        "#nav-customers",
        "#nav-transactions",
        "#nav-queue",
        "#nav-audit",
    ] {
        ensure!(br.exists(&format!("nav#nav a{link}")).await?, "nav#nav has no a{link}");
    }
    ensure!(
        br.exists("form#logout-form").await?,
        "no form#logout-form in the header"
    );
    let cookies = br.cookies().await?;
    ensure!(
        cookies.iter().any(|(name, _)| name == "recarga_admin"),
        "no recarga_admin session cookie: {cookies:?}"
    );
    shot(br, setup, "admin-overview").await?;

    // Create the customer.
    let link = br.find("#nav-customers").await?;
    click_and_load(br, &link, "a nav link").await?;
    br.wait_for("table#customers").await?;
    let new = br.wait_for("a#new-customer").await?;
    click_and_load(br, &new, "a#new-customer").await?;
    br.wait_for("form#customer-form").await?;
    fill(br, "#customer-form input[name=id]", "ACME_001").await?;
    fill(br, "#customer-form input[name=name]", "Acme Abarrotes").await?;
    fill(br, "#customer-form input[name=credit_limit]", "0").await?;
    submit(br, "#customer-form").await?;
    br.wait_path("/admin/customers/ACME_001", |p| p == "/admin/customers/ACME_001")
        .await?;
    br.wait_text("#balance", "shows 0.00", |t| t.contains("0.00")).await?;
    ensure!(
        t.store().get_customer("ACME_001").await?.is_some(),
        "the customer is stored"
    );

    // Issue a key: shown once, and it works on the API.
    br.wait_for("form#issue-key-form").await?;
    ensure!(
        br.find_all("#issue-key-form input[name=csrf]").await?.len() == 1,
        "form#issue-key-form carries no csrf input"
    );
    submit(br, "#issue-key-form").await?;
    let key = br
        .wait_text("#new-key", "holds the new key", |t| t.trim().starts_with("rk_"))
        .await?
        .trim()
        .to_string();
    ensure!(
        br.find_all("table#keys tr[data-key-id]").await?.len() == 1,
        "one key row in table#keys"
    );
    // What an admin is shown (and a viewer must not be): every changing form.
    for form in [
        "form#adjust-form",
        "form#limits-form",
        "table#keys tr[data-key-id] form.revoke-key-form",
    ] {
        ensure!(br.exists(form).await?, "an admin is not shown {form}");
    }
    let (status, json) = t.get(&key, "/v1/balance").await;
    ensure!(
        status == StatusCode::OK,
        "the issued key works on the API: {status} {json}"
    );
    ensure!(json["customer_id"] == "ACME_001", "{json}");
    shot(br, setup, "customer-new-key").await?;
    // Shown once: a reload no longer shows it.
    br.goto(&format!("{base}/admin/customers/ACME_001")).await?;
    br.wait_for("#balance").await?;
    ensure!(
        !br.exists("#new-key").await? || !br.text("#new-key").await?.contains(&key),
        "the key is shown again after a reload"
    );
    ensure!(
        !br.source().await?.contains(&key),
        "the key is in the page source after a reload"
    );

    // Credit 1,000 MXN with a reason (the reason is required by the form).
    let reason_input = br.find("#adjust-form input[name=reason]").await?;
    ensure!(
        br.attribute(&reason_input, "required").await?.is_some(),
        "#adjust-form reason is not required"
    );
    fill(br, "#adjust-form input[name=amount]", "1000").await?;
    choose(br, "#adjust-form select[name=direction]", "credit").await?;
    fill(br, "#adjust-form input[name=reason]", "wire 2026-11-30 BBVA ref 7781").await?;
    submit(br, "#adjust-form").await?;
    br.wait_text("#balance", "shows 1,000.00", |t| t.contains("1,000.00"))
        .await?;
    ensure!(
        t.balance("ACME_001").await == Money::major(1000),
        "stored balance {}",
        t.balance("ACME_001").await
    );
    let (_, json) = t.get(&key, "/v1/balance").await;
    ensure!(json["balance"] == "1000.00", "the API sees the credit at once: {json}");
    // The ledger row: kind credit, the amount, the running balance, the reason.
    let ledger = br.text("table#ledger").await?;
    ensure!(
        ledger.to_lowercase().contains("credit") && ledger.contains("wire 2026-11-30 BBVA ref 7781"),
        "table#ledger lacks the credit and its reason: {ledger:?}"
    );
    let kinds = br.find_all("table#ledger td.kind").await?;
    let mut saw_credit = false;
    for kind in &kinds {
        saw_credit |= br.text_of(kind).await?.to_lowercase().contains("credit");
    }
    ensure!(saw_credit, "no td.kind says credit");
    let after = br.text("table#ledger td.balance-after").await?;
    ensure!(after.contains("1,000.00"), "td.balance-after is {after:?}");
    shot(br, setup, "customer-detail").await?;

    // CSRF: the admin's own session without the form's token (or with a wrong
    // one) moves no money.
    let url = format!("{base}/admin/customers/ACME_001/adjust");
    let credit = [("amount", "5"), ("direction", "credit"), ("reason", "cross-site")];
    let res = post_as_browser(br, &url, &credit).await?;
    ensure!(
        res.status() == StatusCode::FORBIDDEN,
        "POST without csrf: {}",
        res.status()
    );
    let mut wrong = credit.to_vec();
    wrong.push(("csrf", "not-the-token"));
    let res = post_as_browser(br, &url, &wrong).await?;
    ensure!(
        res.status() == StatusCode::FORBIDDEN,
        "POST with a wrong csrf: {}",
        res.status()
    );
    ensure!(
        t.balance("ACME_001").await == Money::major(1000),
        "a POST without a valid csrf token moved money"
    );

    // The customers list shows the balance.
    br.goto(&format!("{base}/admin/customers")).await?;
    let cell = br
        .wait_text(
            "table#customers tr[data-id=ACME_001] td.balance",
            "shows 1,000.00",
            |t| t.contains("1,000.00"),
        )
        .await?;
    ensure!(cell.contains("1,000.00"));
    shot(br, setup, "customers").await?;

    // The audit log names the actor and the reason.
    let link = br.find("#nav-audit").await?;
    click_and_load(br, &link, "a nav link").await?;
    let audit = br
        .wait_text("table#audit", "has the credit", |t| {
            t.contains("wire 2026-11-30 BBVA ref 7781")
        })
        .await?;
    ensure!(
        audit.contains("ana@recarga.test"),
        "the audit row names the actor: {audit:?}"
    );
    shot(br, setup, "audit").await?;
    t.assert_audit_clean().await;
    Ok(())
}

// --- 2. live pages -----------------------------------------------------------

/// A top-up made through the API appears on the customer's dashboard and on
/// the operators' queue page while the page stays open (same page object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_topup_appears_live_on_dashboard_and_queue() {
    on_every_engine!("api_topup_appears_live_on_dashboard_and_queue", live_pages);
}

async fn live_pages(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key) = t.customer("LIVE_001", "500").await;
    create_operator(t, "ops@recarga.test", "admin").await?;

    // Dashboard: the customer logs in with the key; the key never lands in a cookie.
    customer_login(br, base, "LIVE_001", &key).await?;
    let cookies = br.cookies().await?;
    ensure!(
        cookies.iter().any(|(name, _)| name == "recarga_customer"),
        "no recarga_customer cookie: {cookies:?}"
    );
    ensure!(
        cookies.iter().all(|(_, value)| !value.contains(&key)),
        "the API key is stored in a cookie"
    );
    ensure!(
        !br.source().await?.contains(&key),
        "the API key is in the dashboard's source"
    );
    br.wait_text("#balance", "shows 500.00", |t| t.contains("500.00"))
        .await?;
    br.wait_for("#usage-today").await?;
    br.wait_for("form#search-form").await?;
    mark_page(br).await?;

    let id = api_topup(t, &key, "5512340001", "20", "live-dash-1", false).await?;
    let row = format!("table#recent-topups tbody tr[data-id='{id}']");
    br.wait_for(&row).await?;
    br.wait_text(&format!("{row} td.status"), "turns SUCCESS", |t| {
        t.to_uppercase().contains("SUCCESS")
    })
    .await?;
    let status_cell = br.find(&format!("{row} td.status")).await?;
    let class = br.attribute(&status_cell, "class").await?.unwrap_or_default();
    ensure!(
        class.split_whitespace().any(|c| c == "status") && class.split_whitespace().any(|c| c == "status-success"),
        "td.status has class {class:?}, not `status status-success`"
    );
    br.wait_text("#balance", "shows 480.00", |t| t.contains("480.00"))
        .await?;
    ensure!(
        same_page(br).await?,
        "the dashboard reloaded instead of updating in place"
    );
    shot(br, setup, "dashboard").await?;
    br.set_window_size(390, 844).await?;
    shot(br, setup, "dashboard-phone").await?;
    br.set_window_size(1280, 900).await?;

    // The dashboard's events are a server push stream.
    let res = get_as_browser(br, &format!("{base}/dashboard/events")).await?;
    ensure!(
        res.status() == StatusCode::OK,
        "GET /dashboard/events: {}",
        res.status()
    );
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(ctype.starts_with("text/event-stream"), "/dashboard/events is {ctype:?}");
    drop(res);

    // Queue: anonymous → login with next → back on /queue.
    br.goto(&format!("{base}/queue")).await?;
    br.wait_path("/admin/login?next=… for /queue", |p| p.starts_with("/admin/login"))
        .await?;
    submit_login(br, "ops@recarga.test", PASSWORD).await?;
    br.wait_path("/queue after login", |p| p == "/queue").await?;
    for id in [
        "#q-waiting",
        "#q-active",
        "#q-completed",
        "#q-failed",
        "#q-unknown",
        "#q-delayed",
        "svg#throughput-chart",
        "#latency-p50",
        "#latency-p95",
        "#success-rate",
        "#oldest-pending",
        "#redis-status",
        "table#recent-failures",
    ] {
        br.wait_for(id).await?;
    }
    let completed = br
        .wait_until(
            "#q-completed counts the first top-up",
            Duration::from_secs(10),
            async || counter(br, "#q-completed").await.ok().filter(|n| *n >= 1),
        )
        .await?;
    let failed = counter(br, "#q-failed").await?;
    mark_page(br).await?;

    let ok_id = api_topup(t, &key, "5512340002", "20", "live-queue-ok", false).await?;
    let fail_id = api_topup(t, &key, "5512340991", "20", "live-queue-fail", false).await?;
    t.wait_final(&ok_id, SETTLE_WITHIN).await;
    let failed_row = t.wait_final(&fail_id, SETTLE_WITHIN).await;
    ensure!(
        failed_row.status == TopupStatus::Failed,
        "991 fails: {}",
        failed_row.status
    );
    br.wait_until("#q-completed goes up by one", Duration::from_secs(10), async || {
        counter(br, "#q-completed").await.ok().filter(|n| *n > completed)
    })
    .await?;
    br.wait_until("#q-failed goes up by one", Duration::from_secs(10), async || {
        counter(br, "#q-failed").await.ok().filter(|n| *n > failed)
    })
    .await?;
    br.wait_text("table#recent-failures", "lists the failure", |text| {
        text.contains(&fail_id) || text.contains("live-queue-fail") || text.contains("Bolton")
    })
    .await?;
    ensure!(same_page(br).await?, "/queue reloaded instead of updating in place");
    shot(br, setup, "queue").await?;

    // The queue page is pushed over SSE, behind the operator session.
    let res = get_as_browser(br, &format!("{base}/queue/events")).await?;
    ensure!(res.status() == StatusCode::OK, "GET /queue/events: {}", res.status());
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ensure!(ctype.starts_with("text/event-stream"), "/queue/events is {ctype:?}");
    let mut res = res;
    let first = tokio::time::timeout(Duration::from_secs(5), res.chunk())
        .await
        .context("/queue/events pushed nothing within 5 s (1 s heartbeat expected)")??
        .unwrap_or_default();
    let first = String::from_utf8_lossy(&first);
    ensure!(
        first.contains("data:") || first.contains("event:") || first.starts_with(':'),
        "not an SSE frame: {first:?}"
    );
    drop(res);
    for path in ["/queue/events", "/dashboard/events"] {
        let anon = raw_http().get(format!("{base}{path}")).send().await?;
        ensure!(
            anon.status() == StatusCode::UNAUTHORIZED,
            "{path} without a session: {} (401 expected)",
            anon.status()
        );
    }
    Ok(())
}

// --- 3. filter + CSV ----------------------------------------------------------

/// Filtering the transactions and exporting the CSV gives exactly the rows
/// the filter selects (compared with the API's own listing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_and_csv_export_return_exactly_the_filtered_rows() {
    on_every_engine!("filter_and_csv_export_return_exactly_the_filtered_rows", filter_and_csv);
}

async fn filter_and_csv(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key1) = t.customer("FILT_001", "1000").await;
    let (_, key2) = t.customer("FILT_002", "1000").await;
    let mut all = Vec::new();
    for (key, phone, reference) in [
        (&key1, "5512340011", "f1-a"),
        (&key1, "5512340012", "f1-b"),
        (&key1, "5512340013", "f1-c,\"quoted\""),
        (&key1, "5512340991", "f1-fail"),
        (&key2, "5512340021", "f2-a"),
        (&key2, "5512340022", "f2-b"),
    ] {
        all.push(api_topup(t, key, phone, "20", reference, true).await?);
    }
    for id in &all {
        t.wait_final(id, SETTLE_WITHIN).await;
    }
    let expected = api_ids(t, &key1, "status=SUCCESS").await?;
    ensure!(expected.len() == 3, "three successes for FILT_001: {expected:?}");

    create_operator(t, "fin@recarga.test", "viewer").await?;
    operator_login(br, base, "fin@recarga.test", PASSWORD).await?;
    let link = br.find("#nav-transactions").await?;
    click_and_load(br, &link, "a nav link").await?;
    br.wait_for("form#filter-form").await?;
    let unfiltered = br
        .wait_until("all six rows", Duration::from_secs(10), async || {
            row_ids(br, "table#transactions tbody tr[data-id]")
                .await
                .ok()
                .filter(|ids| ids.len() == all.len())
        })
        .await?;
    ensure!(
        unfiltered == all.iter().cloned().collect::<BTreeSet<_>>(),
        "unfiltered list {unfiltered:?} ≠ {all:?}"
    );
    ensure!(!br.exists("a#next-page").await?, "a#next-page shown with six rows");
    shot(br, setup, "transactions").await?;

    // Filter: customer + status + today's date range (inclusive, UTC).
    choose(br, "#filter-form [name=customer]", "FILT_001").await?;
    choose(br, "#filter-form [name=status]", "SUCCESS").await?;
    let today = today_utc();
    br.execute(
        "for (const n of ['from', 'to']) { const i = document.querySelector('#filter-form [name=' + n + ']'); \
         if (!i) return n; i.value = arguments[0]; } return true;",
        vec![json!(today)],
    )
    .await
    .and_then(|v| {
        if v == json!(true) {
            Ok(())
        } else {
            Err(anyhow!("#filter-form has no [name={v}]"))
        }
    })?;
    submit(br, "#filter-form").await?;
    br.wait_path("the filtered list", |p| p.contains("customer=FILT_001"))
        .await?;
    let shown = br
        .wait_until("the three filtered rows", Duration::from_secs(10), async || {
            row_ids(br, "table#transactions tbody tr[data-id]")
                .await
                .ok()
                .filter(|ids| *ids == expected)
        })
        .await?;
    for cell in br.find_all("table#transactions tbody tr[data-id] td.status").await? {
        let text = br.text_of(&cell).await?;
        ensure!(text.to_uppercase().contains("SUCCESS"), "a filtered row says {text:?}");
    }
    shot(br, setup, "transactions-filtered").await?;
    br.set_window_size(390, 844).await?;
    shot(br, setup, "transactions-phone").await?;
    br.set_window_size(1280, 900).await?;

    // The export link carries exactly this filter.
    let href = export_href(br).await?;
    let path = href.strip_prefix(base.as_str()).unwrap_or(&href);
    ensure!(
        path.starts_with("/admin/transactions.csv"),
        "a#export-csv goes to {href}"
    );
    for part in ["customer=FILT_001", &format!("from={today}"), &format!("to={today}")] {
        ensure!(path.contains(part), "a#export-csv {path} lacks {part}");
    }
    ensure!(
        path.to_lowercase().contains("status=success"),
        "a#export-csv {path} lacks the status"
    );
    let csv_ids = fetch_csv(br, &href, "FILT_001", Some("SUCCESS")).await?;
    ensure!(csv_ids == shown, "CSV ids {csv_ids:?} ≠ page ids {shown:?}");
    ensure!(csv_ids == expected, "CSV ids {csv_ids:?} ≠ API ids {expected:?}");

    // A narrower filter: one reference (with a comma and quotes: RFC 4180).
    br.goto(&format!("{base}/admin/transactions")).await?;
    br.wait_for("form#filter-form").await?;
    fill(br, "#filter-form [name=reference]", "f1-c,\"quoted\"").await?;
    submit(br, "#filter-form").await?;
    br.wait_path("the reference filter", |p| p.contains("reference="))
        .await?;
    let one = api_ids(t, &key1, "reference=f1-c%2C%22quoted%22").await?;
    ensure!(one.len() == 1, "the API finds the reference once: {one:?}");
    br.wait_until("the one row", Duration::from_secs(10), async || {
        row_ids(br, "table#transactions tbody tr[data-id]")
            .await
            .ok()
            .filter(|ids| *ids == one)
    })
    .await?;
    let href = export_href(br).await?;
    let csv_ids = fetch_csv(br, &href, "FILT_001", None).await?;
    ensure!(csv_ids == one, "CSV for one reference: {csv_ids:?} ≠ {one:?}");

    // The CSV needs the operator session.
    let anon = raw_http().get(&href).send().await?;
    ensure!(anon.status() != StatusCode::OK, "the CSV is served without a session");
    Ok(())
}

/// Fetches an operator CSV with the browser's session; checks its header and
/// that every row belongs to `customer` (and `status`); returns the ids.
async fn fetch_csv(br: &Session, href: &str, customer: &str, status: Option<&str>) -> anyhow::Result<BTreeSet<String>> {
    let res = get_as_browser(br, href).await?;
    ensure!(res.status() == StatusCode::OK, "GET {href}: {}", res.status());
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    ensure!(ctype.starts_with("text/csv"), "{href} is {ctype:?}");
    let text = res.text().await?;
    let rows = parse_csv(&text);
    ensure!(!rows.is_empty(), "empty CSV");
    ensure!(rows[0].join(",") == CSV_HEADER, "CSV header {:?}", rows[0]);
    let mut ids = BTreeSet::new();
    for row in &rows[1..] {
        ensure!(row.len() == 14, "a CSV row has {} fields: {row:?}", row.len());
        ensure!(row[1] == customer, "a row of {}: {row:?}", row[1]);
        if let Some(status) = status {
            ensure!(row[4].eq_ignore_ascii_case(status), "a row in {}: {row:?}", row[4]);
        }
        ensure!(row[5] == "20.00", "face_value {:?} is not a decimal MXN string", row[5]);
        ensure!(row[8] == "MXN", "currency {:?}", row[8]);
        ensure!(
            chrono::DateTime::parse_from_rfc3339(&row[12]).is_ok(),
            "created_at {:?} is not ISO 8601",
            row[12]
        );
        ensure!(ids.insert(row[0].clone()), "id {} twice in the CSV", row[0]);
    }
    Ok(ids)
}

// --- 4. UNKNOWN resolved by an operator ----------------------------------------

/// Two top-ups end UNKNOWN (no answer, status endpoint off); an admin resolves
/// one failed and one success from the detail page: the page's ledger shows the
/// release and the capture, and the balance follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topup_is_resolved_from_its_detail_page() {
    on_every_engine!("unknown_topup_is_resolved_from_its_detail_page", resolve_unknown);
}

async fn resolve_unknown(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    // 993 / 994: held without an answer (the 1 s upstream timeout fires), and
    // the status query answers 404: nothing decides them but an operator.
    t.sandbox.update(|c| {
        c.status_mode = StatusMode::Off;
        c.hang_ms = 3_000;
    });
    let (_, key) = t.customer("UNK_001", "100").await;
    let not_delivered = api_topup(t, &key, "5512345994", "10", "unk-994", false).await?;
    let delivered = api_topup(t, &key, "5512345993", "10", "unk-993", false).await?;
    t.wait_status(&not_delivered, TopupStatus::Unknown, SETTLE_WITHIN).await;
    t.wait_status(&delivered, TopupStatus::Unknown, SETTLE_WITHIN).await;
    ensure!(t.balance("UNK_001").await == Money::major(80), "both holds kept");

    create_operator(t, "lead@recarga.test", "admin").await?;
    operator_login(br, base, "lead@recarga.test", PASSWORD).await?;
    ensure!(
        counter(br, "#count-unknown").await? >= 2,
        "the overview counts the UNKNOWNs"
    );

    // Not delivered → failed: the hold is released.
    br.goto(&format!("{base}/admin/transactions/{not_delivered}")).await?;
    br.wait_text("#status", "says UNKNOWN", |t| t.to_uppercase().contains("UNKNOWN"))
        .await?;
    for table in ["table#events", "table#ledger", "table#exchanges"] {
        br.wait_for(table).await?;
    }
    ensure!(
        !br.find_all("table#exchanges tbody tr").await?.is_empty(),
        "table#exchanges shows no upstream exchange"
    );
    br.wait_for("form#resolve-form").await?;
    shot(br, setup, "transaction-unknown").await?;
    choose(br, "#resolve-form select[name=outcome]", "failed").await?;
    fill(
        br,
        "#resolve-form input[name=reason]",
        "absent from carrier statement 2026-11-30",
    )
    .await?;
    submit(br, "#resolve-form").await?;
    br.wait_text("#status", "says FAILED", |t| t.to_uppercase().contains("FAILED"))
        .await?;
    ledger_has(br, "release").await?;
    ensure!(
        !br.exists("form#resolve-form").await?,
        "the resolve form stays after resolution"
    );
    shot(br, setup, "transaction-resolved-failed").await?;
    let row = t.store().get_topup(&not_delivered).await?.context("exists")?;
    ensure!(row.status == TopupStatus::Failed, "stored {}", row.status);
    ensure!(t.balance("UNK_001").await == Money::major(90), "released");

    // Delivered → success: the hold is captured.
    br.goto(&format!("{base}/admin/transactions/{delivered}")).await?;
    br.wait_for("form#resolve-form").await?;
    choose(br, "#resolve-form select[name=outcome]", "success").await?;
    fill(
        br,
        "#resolve-form input[name=reason]",
        "carrier statement shows the recharge",
    )
    .await?;
    submit(br, "#resolve-form").await?;
    br.wait_text("#status", "says SUCCESS", |t| t.to_uppercase().contains("SUCCESS"))
        .await?;
    ledger_has(br, "capture").await?;
    shot(br, setup, "transaction-resolved-success").await?;
    let row = t.store().get_topup(&delivered).await?.context("exists")?;
    ensure!(row.status == TopupStatus::Success, "stored {}", row.status);
    ensure!(t.balance("UNK_001").await == Money::major(90), "captured");

    // Each resolution is in the audit log with its reason.
    br.goto(&format!("{base}/admin/audit")).await?;
    br.wait_text("table#audit", "has both resolutions", |t| {
        t.contains("absent from carrier statement 2026-11-30") && t.contains("carrier statement shows the recharge")
    })
    .await?;
    t.assert_audit_clean().await;
    Ok(())
}

async fn ledger_has(br: &Session, kind: &str) -> anyhow::Result<()> {
    br.wait_until(
        &format!("a {kind} entry in table#ledger"),
        Duration::from_secs(10),
        async || {
            for cell in br.find_all("table#ledger td.kind").await.ok()? {
                if br.text_of(&cell).await.ok()?.to_lowercase().contains(kind) {
                    return Some(());
                }
            }
            None
        },
    )
    .await
}

// --- 5. viewer cannot credit ---------------------------------------------------

/// A viewer sees the customer but gets no credit form, and a forged POST
/// (with a valid CSRF token from the viewer's own page) is refused with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_cannot_credit() {
    on_every_engine!("viewer_cannot_credit", viewer);
}

async fn viewer(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    t.customer("VIEW_001", "250").await;
    create_operator(t, "auditor@recarga.test", "viewer").await?;
    operator_login(br, base, "auditor@recarga.test", PASSWORD).await?;
    br.goto(&format!("{base}/admin/customers")).await?;
    br.wait_for("table#customers tr[data-id=VIEW_001]").await?;
    br.goto(&format!("{base}/admin/customers/VIEW_001")).await?;
    br.wait_text("#balance", "shows 250.00", |t| t.contains("250.00"))
        .await?;
    br.wait_for("table#ledger").await?;
    for form in [
        "form#adjust-form",
        "form#issue-key-form",
        "form#limits-form",
        "form.revoke-key-form",
    ] {
        ensure!(!br.exists(form).await?, "a viewer is shown {form}");
    }
    shot(br, setup, "customer-viewer").await?;
    br.goto(&format!("{base}/admin/customers/new")).await?;
    br.wait_for("#forbidden").await?;
    ensure!(
        !br.exists("form#customer-form").await?,
        "a viewer gets form#customer-form"
    );
    br.goto(&format!("{base}/admin/customers/VIEW_001")).await?;
    br.wait_for("#balance").await?;

    // A forged credit, with the viewer's session and a real CSRF token.
    let csrf = csrf_token(br).await?;
    let url = format!("{base}/admin/customers/VIEW_001/adjust");
    let res = post_as_browser(
        br,
        &url,
        &[
            ("amount", "1000"),
            ("direction", "credit"),
            ("reason", "forged"),
            ("csrf", &csrf),
        ],
    )
    .await?;
    let status = res.status();
    let page = res.text().await?;
    ensure!(status == StatusCode::FORBIDDEN, "forged credit by a viewer: {status}");
    ensure!(
        page.contains("id=\"forbidden\"") || page.contains("id=forbidden"),
        "the 403 page has no #forbidden"
    );
    let res = post_as_browser(br, &format!("{base}/admin/customers/VIEW_001/keys"), &[("csrf", &csrf)]).await?;
    ensure!(
        res.status() == StatusCode::FORBIDDEN,
        "key issue by a viewer: {}",
        res.status()
    );

    // The same forgery from inside the browser lands on the 403 page.
    br.execute(
        "const f = document.createElement('form'); f.method = 'POST'; f.action = arguments[0]; \
         for (const [n, v] of Object.entries(arguments[1])) { const i = document.createElement('input'); \
         i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); } \
         document.body.appendChild(f); f.submit(); return true;",
        vec![
            json!(url),
            json!({ "amount": "1000", "direction": "credit", "reason": "forged", "csrf": csrf }),
        ],
    )
    .await?;
    br.wait_for("#forbidden").await?;
    shot(br, setup, "forbidden").await?;

    ensure!(t.balance("VIEW_001").await == Money::major(250), "the balance moved");
    t.assert_audit_clean().await;
    Ok(())
}

// --- 6. customer isolation --------------------------------------------------------

/// A customer's dashboard session cannot open another customer's top-up (404,
/// not 403), and its CSV holds only its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_cannot_see_another_customers_transaction() {
    on_every_engine!("customer_cannot_see_another_customers_transaction", isolation);
}

async fn isolation(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key_a) = t.customer("ISO_A", "100").await;
    let (_, key_b) = t.customer("ISO_B", "100").await;
    let mine = api_topup(t, &key_a, "5512340031", "20", "iso-a-1", true).await?;
    let mine_too = api_topup(t, &key_a, "5512340032", "20", "iso-a-2", true).await?;
    let theirs = api_topup(t, &key_b, "5512340099", "20", "iso-b-secret", true).await?;
    for id in [&mine, &mine_too, &theirs] {
        t.wait_final(id, SETTLE_WITHIN).await;
    }

    customer_login(br, base, "ISO_A", &key_a).await?;
    let ids = br
        .wait_until("ISO_A's row", Duration::from_secs(10), async || {
            row_ids(br, "table#recent-topups tbody tr[data-id]")
                .await
                .ok()
                .filter(|ids| ids.contains(&mine))
        })
        .await?;
    ensure!(!ids.contains(&theirs), "ISO_B's top-up on ISO_A's dashboard");

    // Own top-up: 200 and shown.
    let res = get_as_browser(br, &format!("{base}/dashboard/topups/{mine}")).await?;
    ensure!(res.status() == StatusCode::OK, "own top-up: {}", res.status());
    br.goto(&format!("{base}/dashboard/topups/{mine}")).await?;
    br.wait_until("own top-up page", Duration::from_secs(10), async || {
        br.source().await.ok().filter(|s| s.contains("iso-a-1"))
    })
    .await?;
    shot(br, setup, "dashboard-topup").await?;

    // Someone else's: 404, and nothing of it on the page.
    let res = get_as_browser(br, &format!("{base}/dashboard/topups/{theirs}")).await?;
    ensure!(
        res.status() == StatusCode::NOT_FOUND,
        "another customer's top-up: {}",
        res.status()
    );
    let page = res.text().await?;
    ensure!(
        !page.contains("iso-b-secret") && !page.contains("0099"),
        "the 404 leaks the top-up"
    );
    br.goto(&format!("{base}/dashboard/topups/{theirs}")).await?;
    let source = br.source().await?;
    ensure!(!source.contains("iso-b-secret"), "the browser shows ISO_B's reference");

    // Own CSV only.
    let own = csv_ids(br, &format!("{base}/dashboard/topups.csv")).await?;
    ensure!(
        own == BTreeSet::from([mine.clone(), mine_too.clone()]),
        "the customer's CSV holds {own:?}, not just {mine} and {mine_too}"
    );

    // Search narrows the table, and the export carries the same filter.
    br.goto(&format!("{base}/dashboard")).await?;
    br.wait_for("form#search-form").await?;
    fill(br, "#search-form [name=reference]", "iso-a-2").await?;
    submit(br, "#search-form").await?;
    br.wait_until("only iso-a-2 listed", Duration::from_secs(10), async || {
        row_ids(br, "table#recent-topups tbody tr[data-id]")
            .await
            .ok()
            .filter(|ids| *ids == BTreeSet::from([mine_too.clone()]))
    })
    .await?;
    let href = export_href(br).await?;
    ensure!(
        href.contains("/dashboard/topups.csv") && href.contains("reference=iso-a-2"),
        "the dashboard export {href} does not carry the search"
    );
    let ids = csv_ids(br, &href).await?;
    ensure!(
        ids == BTreeSet::from([mine_too.clone()]),
        "the searched export holds {ids:?}"
    );
    Ok(())
}

// --- 7. login lockout ------------------------------------------------------------

/// Five bad passwords lock the account: the page says "locked" (429) and even
/// the right password is refused while locked. Four bad ones do not lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_lockout_after_five_bad_passwords() {
    on_every_engine!("login_lockout_after_five_bad_passwords", lockout);
}

async fn lockout(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    create_operator(t, "careful@recarga.test", "admin").await?;
    create_operator(t, "target@recarga.test", "admin").await?;

    // Four mistakes, then the right password: still allowed in.
    br.goto(&format!("{base}/admin/login")).await?;
    for attempt in 1..=4 {
        submit_login(br, "careful@recarga.test", "wrong password").await?;
        let error = br
            .wait_for("#login-error")
            .await
            .with_context(|| format!("no #login-error after bad attempt {attempt}"))?;
        let text = br.text_of(&error).await?;
        ensure!(
            !text.to_lowercase().contains("locked"),
            "locked after only {attempt} bad attempts: {text:?}"
        );
    }
    submit_login(br, "careful@recarga.test", PASSWORD).await?;
    br.wait_path("/admin after four mistakes", |p| p == "/admin").await?;
    // Logging out ends the session on the server, not just in this browser.
    let session = br.cookie_header().await?;
    submit(br, "#logout-form").await?;
    br.wait_until("logged out", Duration::from_secs(10), async || {
        br.cookies()
            .await
            .ok()
            .filter(|c| c.iter().all(|(name, _)| name != "recarga_admin"))
    })
    .await?;
    let replay = raw_http()
        .get(format!("{base}/admin"))
        .header("cookie", &session)
        .send()
        .await?;
    ensure!(
        replay.status() == StatusCode::SEE_OTHER,
        "the old session cookie still opens /admin after logout: {}",
        replay.status()
    );

    // Five mistakes lock the account: the fifth answer already says so.
    br.goto(&format!("{base}/admin/login")).await?;
    for attempt in 1..=5 {
        submit_login(br, "target@recarga.test", "wrong password").await?;
        let text = br
            .wait_text("#login-error", "is shown", |t| !t.trim().is_empty())
            .await
            .with_context(|| format!("no #login-error after bad attempt {attempt}"))?;
        let locked = text.to_lowercase().contains("locked");
        ensure!(
            locked == (attempt == 5),
            "after bad attempt {attempt}, #login-error says {text:?}"
        );
    }
    submit_login(br, "target@recarga.test", PASSWORD).await?;
    br.wait_text("#login-error", "says locked", |t| t.to_lowercase().contains("locked"))
        .await?;
    ensure!(
        br.current_path().await?.starts_with("/admin/login"),
        "the right password got in while locked"
    );
    ensure!(
        br.cookies().await?.iter().all(|(name, _)| name != "recarga_admin"),
        "a session cookie was set while locked"
    );
    shot(br, setup, "login-locked").await?;

    // Over HTTP, with a fresh form's token: 429, no session.
    br.goto(&format!("{base}/admin/login")).await?;
    br.wait_for("form#login-form").await?;
    let csrf = csrf_token(br).await?;
    let fields = [
        ("email", "target@recarga.test"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
    ];
    let res = post_as_browser(br, &format!("{base}/admin/login"), &fields).await?;
    ensure!(
        res.status() == StatusCode::TOO_MANY_REQUESTS,
        "right password while locked: {} (429 expected)",
        res.status()
    );
    ensure!(
        res.headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap_or("").starts_with("recarga_admin=")
                || v.to_str().unwrap_or("").contains("Max-Age=0")),
        "a session cookie was issued while locked"
    );
    // Another operator is not affected.
    operator_login(br, base, "careful@recarga.test", PASSWORD).await?;

    // The customer dashboard locks the same way, by customer id.
    let (_, key) = t.customer("LOCK_001", "10").await;
    br.goto(&format!("{base}/dashboard/login")).await?;
    for attempt in 1..=5 {
        br.wait_for("form#dashboard-login").await?;
        fill(br, "#dashboard-login input[name=customer_id]", "LOCK_001").await?;
        fill(br, "#dashboard-login input[name=api_key]", "rk_not_the_key_0000").await?;
        submit(br, "#dashboard-login").await?;
        ensure!(
            br.current_path().await?.starts_with("/dashboard/login"),
            "a wrong key got in (attempt {attempt})"
        );
    }
    br.wait_for("form#dashboard-login").await?;
    fill(br, "#dashboard-login input[name=customer_id]", "LOCK_001").await?;
    fill(br, "#dashboard-login input[name=api_key]", &key).await?;
    submit(br, "#dashboard-login").await?;
    br.wait_text("body", "says locked", |t| t.to_lowercase().contains("locked"))
        .await?;
    ensure!(
        br.current_path().await?.starts_with("/dashboard/login"),
        "the right key got in while locked"
    );
    ensure!(
        br.cookies().await?.iter().all(|(name, _)| name != "recarga_customer"),
        "a dashboard session was opened while locked"
    );
    shot(br, setup, "dashboard-login-locked").await?;
    Ok(())
}

// --- 8. phone-sized screens ------------------------------------------------------

/// Every main page is usable on a phone (390 px wide): nothing pushes the page
/// sideways (a wide table may scroll inside its own box).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_pages_fit_a_phone_screen() {
    on_every_engine!("main_pages_fit_a_phone_screen", phone_layout);
}

/// `null` when the page does not scroll sideways; else its widths and the
/// first elements sticking out (outside any horizontally scrolling box).
const SIDEWAYS_SCRIPT: &str = r#"
const w = document.documentElement.clientWidth;
const sw = document.documentElement.scrollWidth;
if (sw <= w + 1) return null;
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.right <= w + 1) continue;
  let p = el.parentElement, boxed = false;
  while (p && p !== document.body) {
    const s = getComputedStyle(p).overflowX;
    if (s === 'auto' || s === 'scroll' || s === 'hidden') { boxed = true; break; }
    p = p.parentElement;
  }
  if (boxed) continue;
  const cls = typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\s+/).join('.') : '';
  out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls + ' (right edge ' + Math.round(r.right) + ' px)');
  if (out.length >= 4) break;
}
return 'page ' + sw + ' px wide in a ' + w + ' px screen; sticking out: ' + out.join(', ');
"#;

async fn phone_layout(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key) = t.customer("PHONE_001", "100").await;
    let id = api_topup(t, &key, "5512340041", "20", "phone-1", true).await?;
    t.wait_final(&id, SETTLE_WITHIN).await;
    create_operator(t, "mobile@recarga.test", "admin").await?;
    br.set_window_size(390, 844).await?;
    let mut problems = Vec::new();
    let check = async |path: &str, name: &str, problems: &mut Vec<String>| -> anyhow::Result<()> {
        br.goto(&format!("{base}{path}")).await?;
        br.wait_for("body").await?;
        // Measured before the screenshot: a full-page capture resizes the viewport for a moment.
        let v = br.execute(SIDEWAYS_SCRIPT, vec![]).await?;
        if let Some(problem) = v.as_str() {
            problems.push(format!("{path}: {problem}"));
        }
        shot(br, setup, &format!("phone-{name}")).await?;
        Ok(())
    };
    check("/admin/login", "admin-login", &mut problems).await?;
    check("/dashboard/login", "dashboard-login", &mut problems).await?;
    operator_login(br, base, "mobile@recarga.test", PASSWORD).await?;
    for (path, name) in [
        ("/admin".to_string(), "admin-overview"),
        ("/admin/customers".into(), "customers"),
        ("/admin/customers/PHONE_001".into(), "customer-detail"),
        ("/admin/transactions".into(), "transactions"),
        (format!("/admin/transactions/{id}"), "transaction-detail"),
        ("/admin/audit".into(), "audit"),
        ("/queue".into(), "queue"),
    ] {
        check(&path, name, &mut problems).await?;
    }
    customer_login(br, base, "PHONE_001", &key).await?;
    check("/dashboard", "dashboard", &mut problems).await?;
    check(&format!("/dashboard/topups/{id}"), "dashboard-topup", &mut problems).await?;
    ensure!(
        problems.is_empty(),
        "pages scroll sideways on a 390 px phone:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

// --- 9. keyset pages ------------------------------------------------------------

/// `a#next-page` walks the whole history, page by page, without a gap or a
/// repeat (many rows share one millisecond), and the unfiltered CSV has no
/// row cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_cover_the_whole_history() {
    on_every_engine!("keyset_pages_cover_the_whole_history", keyset_pages);
}

/// Top-ups in the pagination test: two full pages of 50 and a partial one.
const MANY_TOPUPS: usize = 120;

async fn keyset_pages(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key) = t.customer("PAGE_001", "10000").await;
    let mut all = BTreeSet::new();
    for i in 0..MANY_TOPUPS {
        let phone = format!("55123{:05}", 10_000 + i);
        all.insert(api_topup(t, &key, &phone, "10", &format!("page-{i:03}"), false).await?);
    }
    for id in &all {
        t.wait_final(id, SETTLE_WITHIN).await;
    }
    create_operator(t, "pager@recarga.test", "viewer").await?;
    operator_login(br, base, "pager@recarga.test", PASSWORD).await?;
    br.goto(&format!("{base}/admin/transactions")).await?;
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        ensure!(pages <= MANY_TOPUPS, "a#next-page never ends");
        br.wait_for("table#transactions").await?;
        let rows = br.find_all("table#transactions tbody tr[data-id]").await?;
        ensure!(!rows.is_empty(), "page {pages} is empty");
        for row in rows {
            let id = br.attribute(&row, "data-id").await?.unwrap_or_default();
            ensure!(seen.insert(id.clone()), "{id} shown twice (page {pages})");
        }
        if pages == 2 {
            shot(br, setup, "transactions-page-2").await?;
        }
        let Ok(next) = br.find("a#next-page").await else {
            break;
        };
        click_and_load(br, &next, "a#next-page").await?;
    }
    ensure!(
        pages >= 2,
        "{MANY_TOPUPS} rows fit on one page: a#next-page is never needed"
    );
    ensure!(
        seen == all,
        "the pages show {} of {} top-ups ({} missing)",
        seen.len(),
        all.len(),
        all.difference(&seen).count()
    );
    let href = export_href(br).await?;
    // The export is the whole filter (none here), not the current page.
    let ids = csv_ids(br, &format!("{base}/admin/transactions.csv")).await?;
    ensure!(ids == all, "the CSV holds {} of {} rows", ids.len(), all.len());
    ensure!(
        !href.contains("after="),
        "a#export-csv on the last page carries the page cursor: {href}"
    );
    Ok(())
}

// --- 10. revoking a key ------------------------------------------------------------

/// Revoking a key from the customer page stops it on the API at once and
/// ends the dashboard session that was opened with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_stops_the_api_and_its_dashboard_session() {
    on_every_engine!("revoked_key_stops_the_api_and_its_dashboard_session", revoke_key);
}

async fn revoke_key(t: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    let br: &Session = browser;
    let setup = t.setup;
    let base = &t.base;
    let (_, key) = t.customer("REVOKE_001", "100").await;
    customer_login(br, base, "REVOKE_001", &key).await?;
    let customer_session = br.cookie_header().await?;
    let res = raw_http()
        .get(format!("{base}/dashboard"))
        .header("cookie", &customer_session)
        .send()
        .await?;
    ensure!(
        res.status() == StatusCode::OK,
        "the dashboard session works: {}",
        res.status()
    );

    create_operator(t, "keys@recarga.test", "admin").await?;
    operator_login(br, base, "keys@recarga.test", PASSWORD).await?;
    br.goto(&format!("{base}/admin/customers/REVOKE_001")).await?;
    br.wait_for("table#keys tr[data-key-id] form.revoke-key-form").await?;
    submit(br, "table#keys tr[data-key-id] form.revoke-key-form").await?;
    br.wait_until("the key shown as revoked", Duration::from_secs(10), async || {
        let forms = br.find_all("form.revoke-key-form").await.ok()?;
        forms.is_empty().then_some(())
    })
    .await?;
    shot(br, setup, "customer-key-revoked").await?;

    let (status, json) = t.get(&key, "/v1/balance").await;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "a revoked key still works on the API: {status} {json}"
    );
    let res = raw_http()
        .get(format!("{base}/dashboard"))
        .header("cookie", &customer_session)
        .send()
        .await?;
    ensure!(
        res.status() != StatusCode::OK,
        "the dashboard session opened with the revoked key still works"
    );
    let res = raw_http()
        .get(format!("{base}/dashboard/events"))
        .header("cookie", &customer_session)
        .send()
        .await?;
    ensure!(
        res.status() == StatusCode::UNAUTHORIZED,
        "/dashboard/events with the revoked key's session: {}",
        res.status()
    );
    br.goto(&format!("{base}/admin/audit")).await?;
    br.wait_text("table#audit", "has the revocation", |t| {
        t.contains("keys@recarga.test") && t.contains("revoke")
    })
    .await?;
    Ok(())
}
