//! Observability: what the gateway writes about itself, and what it must never
//! write.
//!
//! - `no_secret_reaches_the_logs`: the real binary at `RECARGA_LOG=debug`,
//!   talking to a separate `recarga latcom-sim` through the real Latcom
//!   adapter, with canary values for every secret (customer API key, a wrong
//!   key, `ADMIN_KEY`, the Latcom password and `dist_api`, the Latcom JWT).
//!   None of them, and no full phone number, may appear on its stdout or
//!   stderr; the masked phone must.
//! - `request_id_follows_the_topup_to_the_upstream_call`: with
//!   `RECARGA_LOG_FORMAT=json`, a client's `x-request-id` is on the
//!   "top-up accepted" line and on the worker's "upstream answered" line, is
//!   echoed in the response header and in error bodies, and one is generated
//!   (a UUID) when the client sends none.
//! - `metrics_describe_the_traffic`: `/metrics` (in-process gateway) names
//!   every documented series after a success, a failure and an UNKNOWN, with
//!   route templates as labels, never concrete ids; a call in flight shows in
//!   `recarga_upstream_inflight`, which is back to 0 once all calls ended.
//!   The gateway is a child process of its own (the recorder is
//!   process-global; this binary's other suites make calls too).
//!
//! Child processes get a cleared environment, run in their own temporary
//! directory and are killed on drop, even when a test panics.

use crate::common::procs::{Proc, client, free_port, recarga, run, spawn, start_sim, wait_ready};
use recarga_store::testing::{engines, fresh, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const ADMIN_KEY: &str = "canary-admin-key-5e8d2c41";
const LATCOM_PASSWORD: &str = "canary-latcom-pass-7f3a";
const LATCOM_DIST_API: &str = "canary-dist-api-9b1c";
const WRONG_KEY: &str = "rk_0123456789ab_canarycanarycanarycanarycanarycanary1234";
const PHONE: &str = "5512345678";
const PHONE_MASKED: &str = "55******78";

/// `recarga` with a cleared environment, run in `work`: only what the test
/// sets reaches it (and no `.env` is picked up).
fn command(work: &Path, db_url: &str) -> std::process::Command {
    let mut cmd = recarga(work);
    cmd.env("DATABASE_URL", db_url)
        .env("RECARGA_DATA_DIR", work.join("data"));
    cmd
}

/// `recarga serve` on a free loopback port, with the test's extra settings.
async fn serve(work: &Path, db_url: &str, tag: &str, env: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = command(work, db_url);
    cmd.arg("serve")
        .env("PORT", port.to_string())
        .env("RECARGA_BIND", "127.0.0.1")
        .env("RECARGA_DEMO", "false")
        .env("RECARGA_UPSTREAM_TIMEOUT_S", "5")
        .env("RECARGA_LEASE_S", "10")
        .env("QUEUE_CONCURRENCY", "8");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = spawn(cmd, work, tag);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&mut proc, &format!("{base}/health"), Some(StatusCode::OK)).await;
    (proc, base)
}

/// `recarga customer create` (same database); returns the API key it prints once.
async fn create_customer(work: &Path, db_url: &str, id: &str, credit: &str) -> String {
    let mut cmd = command(work, db_url);
    cmd.args(["customer", "create", "--id", id, "--name", id, "--credit", credit]);
    let out = run(cmd).await;
    assert!(
        out.ok(),
        "recarga customer create failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    let json: Value = serde_json::from_str(&out.stdout).expect("customer create prints JSON");
    json["api_key"].as_str().expect("api_key").to_string()
}

fn topup_body(phone: &str, amount: &str, reference: &str) -> Value {
    json!({ "phone": phone, "amount": amount, "reference": reference })
}

/// POST /v1/topups with `Prefer: wait=5`.
async fn topup_wait(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let res = http
        .post(format!("{base}/v1/topups"))
        .bearer_auth(key)
        .header("Prefer", "wait=5")
        .json(body)
        .send()
        .await
        .expect("POST /v1/topups");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The lines of `text` containing `needle` (a few, for failure messages).
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).take(3).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs() {
    for engine in engines() {
        let db = fresh(engine).await;
        let work = temp_dir("observability");

        let sim_config = json!({ "password": LATCOM_PASSWORD, "dist_api": LATCOM_DIST_API });
        let sim = start_sim(&work, "20-50", Some(&sim_config)).await;
        let sim_base = sim.base.clone();

        let key = create_customer(&work, &db.url, "C", "1000").await;
        let key_secret = key.splitn(3, '_').nth(2).expect("rk_<prefix>_<secret>").to_string();
        assert!(key_secret.len() >= 16, "{engine:?}: {key}");
        let wrong_secret = WRONG_KEY.splitn(3, '_').nth(2).expect("shape").to_string();

        let (mut server, base) = serve(
            &work,
            &db.url,
            "serve",
            &[
                ("RECARGA_UPSTREAM", "latcom"),
                ("LATCOM_BASE_URL", sim_base.as_str()),
                ("LATCOM_USERNAME", "sim-user"),
                ("LATCOM_PASSWORD", LATCOM_PASSWORD),
                ("LATCOM_DIST_API_KEY", LATCOM_DIST_API),
                ("LATCOM_USER_UID", "sim-uid"),
                ("ADMIN_KEY", ADMIN_KEY),
                ("RECARGA_LOG", "debug"),
            ],
        )
        .await;
        let http = client();

        for i in 0..3 {
            let (status, json) = topup_wait(&http, &base, &key, &topup_body(PHONE, "20", &format!("ok-{i}"))).await;
            assert_eq!(status, StatusCode::OK, "{engine:?}: {json}\n{}", server.logs());
            assert_eq!(json["status"], "SUCCESS", "{engine:?}: {json}\n{}", server.logs());
        }
        let (status, json) = topup_wait(&http, &base, &key, &topup_body("5512345991", "20", "fail-1")).await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {json}");
        assert_eq!(json["status"], "FAILED", "{engine:?}: {json}");

        let (status, json) = topup_wait(&http, &base, WRONG_KEY, &topup_body(PHONE, "20", "wrong-key")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{engine:?}: {json}");
        let res = http
            .get(format!("{base}/v1/balance"))
            .bearer_auth(WRONG_KEY)
            .send()
            .await
            .expect("GET /v1/balance");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{engine:?}");

        let res = http
            .get(format!("{base}/api/queue/stats"))
            .header("x-admin-key", ADMIN_KEY)
            .send()
            .await
            .expect("GET /api/queue/stats");
        assert_eq!(res.status(), StatusCode::OK, "{engine:?}");
        let stats: Value = res.json().await.expect("stats JSON");
        assert_eq!(stats["queue"]["completed"], json!(3), "{engine:?}: {stats}");

        let res = http
            .get(format!("{base}/v1/balance"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("GET /v1/balance");
        assert_eq!(res.status(), StatusCode::OK, "{engine:?}");
        let balance: Value = res.json().await.expect("balance JSON");
        assert_eq!(balance["balance"], "940.00", "{engine:?}: {balance}");

        server.stop(Duration::from_secs(10)).await;
        let output = format!("{}\n{}", server.stdout_text(), server.stderr_text());
        assert!(
            output.contains("logged in to Latcom"),
            "{engine:?}: the Latcom login (where the password and JWT travel) was not logged:\n{}",
            server.logs()
        );

        let forbidden: [(&str, &str); 8] = [
            ("the API key's secret", key_secret.as_str()),
            ("the full API key", key.as_str()),
            ("ADMIN_KEY", ADMIN_KEY),
            ("LATCOM_PASSWORD", LATCOM_PASSWORD),
            ("LATCOM_DIST_API_KEY", LATCOM_DIST_API),
            ("the wrong key's secret", wrong_secret.as_str()),
            ("a JWT (the Latcom bearer token)", "eyJ"),
            ("a full phone number", PHONE),
        ];
        let leaks: Vec<String> = forbidden
            .iter()
            .filter(|(_, needle)| output.contains(needle))
            .map(|(what, needle)| format!("{what} ({needle}) in:\n  {}", lines_with(&output, needle).join("\n  ")))
            .collect();
        assert!(
            leaks.is_empty(),
            "{engine:?}: secrets in the gateway's output:\n{}",
            leaks.join("\n")
        );
        assert!(
            output.contains(PHONE_MASKED),
            "{engine:?}: the masked phone {PHONE_MASKED} is not logged, so the check above proves little:\n{}",
            server.logs()
        );
        drop(server);
        drop(sim);
    }
}

/// Whether `value` holds, at any depth, `"request_id": id`.
fn carries_request_id(value: &Value, id: &str) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == "request_id" && v == id) || carries_request_id(v, id)),
        Value::Array(items) => items.iter().any(|v| carries_request_id(v, id)),
        _ => false,
    }
}

fn message_of(line: &Value) -> Option<&str> {
    line["fields"]["message"].as_str().or_else(|| line["message"].as_str())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase or uppercase hex.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_follows_the_topup_to_the_upstream_call() {
    const TRACE: &str = "trace-abc-123";
    for engine in engines() {
        let db = fresh(engine).await;
        let work = temp_dir("observability");
        let key = create_customer(&work, &db.url, "T", "1000").await;
        let (mut server, base) = serve(
            &work,
            &db.url,
            "serve",
            &[("RECARGA_LOG_FORMAT", "json"), ("RECARGA_SANDBOX_LATENCY_MS", "20-50")],
        )
        .await;
        let http = client();

        let res = http
            .post(format!("{base}/v1/topups"))
            .bearer_auth(&key)
            .header("Prefer", "wait=5")
            .header("x-request-id", TRACE)
            .json(&topup_body(PHONE, "20", "trace-1"))
            .send()
            .await
            .expect("POST /v1/topups");
        assert_eq!(res.status(), StatusCode::OK, "{engine:?}");
        assert_eq!(
            res.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
            Some(TRACE),
            "{engine:?}: the client's request id is echoed"
        );
        let json: Value = res.json().await.expect("top-up JSON");
        assert_eq!(json["status"], "SUCCESS", "{engine:?}: {json}\n{}", server.logs());
        let id = json["id"].as_str().expect("id").to_string();

        // An error answers with the same id, in the header and in the body.
        let res = http
            .post(format!("{base}/v1/topups"))
            .bearer_auth(&key)
            .header("x-request-id", "trace-bad-json-456")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("POST bad JSON");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{engine:?}");
        assert_eq!(
            res.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
            Some("trace-bad-json-456"),
            "{engine:?}"
        );
        let err: Value = res.json().await.expect("error JSON");
        assert_eq!(err["code"], "invalid_json", "{engine:?}: {err}");
        assert_eq!(err["request_id"], "trace-bad-json-456", "{engine:?}: {err}");

        // Without a client id, the gateway makes one (a UUID) and uses it in both places.
        let res = http
            .post(format!("{base}/v1/topups"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("POST bad JSON");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{engine:?}");
        let generated = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{engine:?}: no x-request-id generated"));
        assert!(is_uuid(&generated), "{engine:?}: generated id {generated:?}");
        let err: Value = res.json().await.expect("error JSON");
        assert_eq!(err["request_id"], json!(generated), "{engine:?}: {err}");

        server.stop(Duration::from_secs(10)).await;
        let stderr = server.stderr_text();
        let lines: Vec<Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        assert!(
            !lines.is_empty(),
            "{engine:?}: RECARGA_LOG_FORMAT=json wrote no JSON lines:\n{}",
            server.logs()
        );
        let about_this = |message: &str| -> Vec<&Value> {
            lines
                .iter()
                .filter(|l| message_of(l) == Some(message) && l.to_string().contains(&id))
                .collect()
        };

        let accepted = about_this("top-up accepted");
        assert!(
            !accepted.is_empty(),
            "{engine:?}: no \"top-up accepted\" line for {id}:\n{}",
            server.logs()
        );
        assert!(
            accepted.iter().all(|l| carries_request_id(l, TRACE)),
            "{engine:?}: \"top-up accepted\" without request_id {TRACE}: {accepted:?}"
        );

        let answered = about_this("upstream answered");
        assert!(
            !answered.is_empty(),
            "{engine:?}: no \"upstream answered\" line for {id}:\n{}",
            server.logs()
        );
        assert!(
            answered.iter().all(|l| carries_request_id(l, TRACE)),
            "{engine:?}: the worker's \"upstream answered\" lost request_id {TRACE}: {answered:?}"
        );
        drop(server);
    }
}

/// The lines of the exposition that are samples of `metric` (not `# HELP`/`# TYPE`).
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let res = http.get(format!("{base}/metrics")).send().await.expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/plain"),
        "/metrics content-type {content_type:?}"
    );
    res.text().await.expect("metrics text")
}

/// The value of the unlabelled gauge `metric`, if it is exposed.
fn gauge(text: &str, metric: &str) -> Option<f64> {
    samples(text, metric)
        .first()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_describe_the_traffic() {
    use recarga_domain::TopupStatus;
    const WITHIN: Duration = Duration::from_secs(20);
    // A gateway of its own (a child process): the metrics recorder is
    // process-global, and the other suites of this binary make calls too.
    for engine in engines() {
        let setup = engine;
        let db = fresh(engine).await;
        let work = temp_dir("metrics");
        let key = create_customer(&work, &db.url, "M1", "1000").await;
        let (_server, base) = serve(
            &work,
            &db.url,
            "serve",
            &[
                ("RECARGA_SANDBOX_LATENCY_MS", "20-60"),
                ("RECARGA_STATUS_CHECK_BASE_S", "1"),
                ("RECARGA_STATUS_CHECK_MAX_S", "2"),
            ],
        )
        .await;
        let http = client();
        let status_of = |id: String| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let res = http
                    .get(format!("{base}/v1/topups/{id}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("GET /v1/topups/{id}");
                let json: Value = res.json().await.expect("json");
                TopupStatus::parse(json["status"].as_str().unwrap_or("")).expect("a status")
            }
        };
        let wait_for = |id: String, done: fn(TopupStatus) -> bool| async move {
            let deadline = std::time::Instant::now() + WITHIN;
            loop {
                let now = status_of(id.clone()).await;
                if done(now) {
                    return now;
                }
                assert!(std::time::Instant::now() < deadline, "{id} stayed {now}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let mut problems: Vec<String> = Vec::new();

        let (status, ok) = topup_wait(&http, &base, &key, &topup_body(PHONE, "20", "m-ok")).await;
        assert_eq!(status, StatusCode::OK, "{setup:?}: {ok}");
        assert_eq!(ok["status"], "SUCCESS", "{setup:?}: {ok}");
        let (status, failed) = topup_wait(&http, &base, &key, &topup_body("5512345991", "20", "m-fail")).await;
        assert_eq!(status, StatusCode::OK, "{setup:?}: {failed}");
        assert_eq!(failed["status"], "FAILED", "{setup:?}: {failed}");
        // 993: the simulator holds the call past the 5 s timeout → UNKNOWN.
        let res = http
            .post(format!("{base}/v1/topups"))
            .bearer_auth(&key)
            .json(&topup_body("5512345993", "20", "m-unknown"))
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{setup:?}");
        let hung: Value = res.json().await.expect("json");
        let hung_id = hung["id"].as_str().expect("id").to_string();

        // A scrape while that call hangs (Prometheus scrapes whenever it likes):
        // the call is counted in flight.
        wait_for(hung_id.clone(), |s| s != TopupStatus::Pending).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = scrape(&http, &base).await;
        let still_in_flight = status_of(hung_id.clone()).await == TopupStatus::Processing;
        match gauge(&during, "recarga_upstream_inflight") {
            Some(v) if v >= 1.0 => {}
            other if still_in_flight => problems.push(format!(
                "recarga_upstream_inflight is {other:?} while the 993 call is in flight (want ≥ 1)"
            )),
            _ => {}
        }

        wait_for(hung_id.clone(), |s| s == TopupStatus::Unknown || s.is_final()).await;
        let events = db.store.events(&hung_id).await.expect("events");
        assert!(
            events.iter().any(|e| e.to_status == "UNKNOWN"),
            "{setup:?}: 993 went through UNKNOWN: {events:?}"
        );
        // A concrete id in a path: its label must be the template.
        let ok_id = ok["id"].as_str().expect("id").to_string();
        assert_eq!(status_of(ok_id).await, TopupStatus::Success);

        // At least one scheduler tick (1 s) after the traffic.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let text = scrape(&http, &base).await;
        let present = |metric: &str, labels: &[&str]| {
            samples(&text, metric)
                .iter()
                .any(|l| labels.iter().all(|want| l.contains(want)))
        };
        let expected: &[(&str, &[&str])] = &[
            (
                "recarga_http_request_duration_seconds_bucket",
                &["route=\"/v1/topups\"", "method=\"POST\""],
            ),
            (
                "recarga_http_request_duration_seconds_bucket",
                &["route=\"/v1/topups/{id}\""],
            ),
            ("recarga_topups_accepted_total", &[]),
            ("recarga_topups_finished_total", &["outcome=\"success\""]),
            ("recarga_topups_finished_total", &["outcome=\"failed\""]),
            ("recarga_topups_finished_total", &["outcome=\"unknown\""]),
            ("recarga_upstream_call_duration_seconds_bucket", &[]),
            ("recarga_upstream_outcomes_total", &["outcome=\"unknown\""]),
            ("recarga_upstream_inflight", &[]),
            ("recarga_queue_depth", &["state=\"pending\""]),
            ("recarga_queue_oldest_pending_seconds", &[]),
        ];
        for (metric, labels) in expected {
            if !present(metric, labels) {
                problems.push(format!("missing {metric} with {labels:?}"));
            }
        }
        // Nothing is in flight now: every call that started has ended.
        if let Some(v) = gauge(&text, "recarga_upstream_inflight")
            && v != 0.0
        {
            problems.push(format!(
                "recarga_upstream_inflight is {v} with no call in flight (want 0)"
            ));
        }
        let concrete: Vec<&str> = text.lines().filter(|l| l.contains("RLR")).collect();
        if !concrete.is_empty() {
            problems.push(format!("a top-up id became a label value: {concrete:?}"));
        }
        if text.contains(PHONE) {
            problems.push("a phone number in /metrics".into());
        }
        assert!(
            problems.is_empty(),
            "{setup:?}: /metrics does not describe the traffic:\n- {}\n--- scrape during the 993 call ---\n{during}\n--- final scrape ---\n{text}",
            problems.join("\n- ")
        );
    }
}
