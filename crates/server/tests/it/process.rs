//! The real `recarga` binary, run as child processes on every engine: a
//! SIGKILL mid-flight followed by a restart (lease rescue: in-flight top-ups
//! become UNKNOWN and are never resent, money is conserved, the audit stays
//! clean), a graceful SIGTERM drain, the operator CLI round trip (JSON on
//! stdout, non-zero exits on refusals, key revocation seen by a running
//! server), the zero-setup start (SQLite under the data dir, sandbox banner,
//! demo key shown once) and the production start-up refusals and `--help`.
//!
//! Every child gets a cleared environment with only the settings the test
//! means (so `ADMIN_KEY`, `RECARGA_ENV`, `QUEUE_CONCURRENCY`, `DATABASE_URL`…
//! cannot leak in from the shell), runs in its own temporary directory (so no
//! `.env` is picked up) and is killed on drop, even when a test panics
//! (`crate::common::procs`).

use crate::common::procs::{CliRun, Proc, client, free_port, recarga, run, spawn, wait_ready};
use recarga_domain::{Money, TopupStatus};
use recarga_store::testing::{Engine, engines, fresh, temp_dir};
use recarga_store::{Store, Topup, TopupFilter};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Where a child finds its data, and the directory it runs in.
#[derive(Debug, Clone)]
struct Place {
    /// `DATABASE_URL`; `None` leaves it unset (embedded SQLite under `data_dir`).
    db_url: Option<String>,
    data_dir: PathBuf,
    work: PathBuf,
}

impl Place {
    fn database(url: &str) -> Place {
        let work = temp_dir("proc");
        Place {
            db_url: Some(url.to_string()),
            data_dir: work.join("data"),
            work,
        }
    }

    fn embedded(data_dir: &Path) -> Place {
        Place {
            db_url: None,
            data_dir: data_dir.to_path_buf(),
            work: temp_dir("proc"),
        }
    }

    /// `recarga` with a cleared environment: only what is set here reaches it.
    fn command(&self) -> std::process::Command {
        let mut cmd = recarga(&self.work);
        cmd.env("RECARGA_DATA_DIR", &self.data_dir);
        if let Some(url) = &self.db_url {
            cmd.env("DATABASE_URL", url);
        }
        cmd
    }
}

/// Runs `recarga <args>` against `place`.
async fn cli(place: &Place, args: &[&str]) -> CliRun {
    let mut cmd = place.command();
    cmd.args(args);
    run(cmd).await
}

/// Runs an operator command that must succeed, and returns its JSON.
async fn cli_ok(place: &Place, args: &[&str]) -> Value {
    let out = cli(place, args).await;
    assert!(out.ok(), "recarga {args:?} failed: {out:?}");
    assert!(out.json.is_object(), "recarga {args:?} printed no JSON object: {out:?}");
    out.json
}

/// Settings of a `recarga serve` child.
#[derive(Debug, Clone)]
struct ServeOpts {
    latency_ms: &'static str,
    upstream_timeout_s: u64,
    lease_s: u64,
    status_check_base_s: u64,
    concurrency: usize,
    /// `None` leaves `RECARGA_DEMO` unset (its default is true).
    demo: Option<bool>,
}

impl Default for ServeOpts {
    fn default() -> Self {
        ServeOpts {
            latency_ms: "50-100",
            upstream_timeout_s: 5,
            lease_s: 7,
            status_check_base_s: 1,
            concurrency: 8,
            demo: Some(false),
        }
    }
}

/// A running `recarga serve`; killed (SIGKILL) and reaped on drop.
struct Server {
    proc: Proc,
    base: String,
}

impl Server {
    /// Starts `recarga serve` and waits until `/health` answers 200.
    async fn start(place: &Place, opts: &ServeOpts, tag: &str) -> Server {
        let port = free_port();
        let mut cmd = place.command();
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("RECARGA_SANDBOX_LATENCY_MS", opts.latency_ms)
            .env("RECARGA_UPSTREAM_TIMEOUT_S", opts.upstream_timeout_s.to_string())
            .env("RECARGA_LEASE_S", opts.lease_s.to_string())
            .env("RECARGA_STATUS_CHECK_BASE_S", opts.status_check_base_s.to_string())
            .env("QUEUE_CONCURRENCY", opts.concurrency.to_string());
        if let Some(demo) = opts.demo {
            cmd.env("RECARGA_DEMO", demo.to_string());
        }
        let mut server = Server {
            proc: spawn(cmd, &place.work, tag),
            base: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/health", server.base);
        wait_ready(&mut server.proc, &health, Some(StatusCode::OK)).await;
        server
    }

    fn stdout_text(&self) -> String {
        self.proc.stdout_text()
    }

    /// stdout and the tail of stderr, for failure messages.
    fn logs(&self) -> String {
        self.proc.logs()
    }

    /// SIGKILL: the process dies wherever it is, with calls in flight.
    fn sigkill(&mut self) {
        self.proc.sigkill().expect("SIGKILL");
    }

    fn sigterm(&self) {
        self.proc.sigterm().expect("SIGTERM");
    }

    /// Waits for the process to exit by itself; `None` if it is still running.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(within).await
    }

    async fn topup(&self, http: &reqwest::Client, key: &str, body: Value, wait: Option<u64>) -> (StatusCode, Value) {
        let mut req = http
            .post(format!("{}/v1/topups", self.base))
            .bearer_auth(key)
            .json(&body);
        if let Some(w) = wait {
            req = req.header("Prefer", format!("wait={w}"));
        }
        let res = req.send().await.expect("POST /v1/topups");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, http: &reqwest::Client, key: &str, path: &str) -> (StatusCode, Value) {
        let res = http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn topup_body(phone: &str, amount: &str, reference: &str) -> Value {
    json!({ "phone": phone, "amount": amount, "reference": reference })
}

/// Phones the sandbox answers with success: last three digits 000–099.
fn ok_phone(i: usize) -> String {
    assert!(i < 100);
    format!("55123450{i:02}")
}

async fn topups_of(store: &dyn Store, customer: &str) -> Vec<Topup> {
    store
        .list_topups(&TopupFilter {
            customer_id: Some(customer.into()),
            limit: 500,
            ..Default::default()
        })
        .await
        .expect("list top-ups")
}

async fn statuses(store: &dyn Store, customer: &str) -> BTreeMap<String, TopupStatus> {
    topups_of(store, customer)
        .await
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect()
}

fn ids_in(map: &BTreeMap<String, TopupStatus>, status: TopupStatus) -> BTreeSet<String> {
    map.iter()
        .filter(|(_, s)| **s == status)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Polls the store until nothing is PENDING or PROCESSING.
async fn wait_settled(store: &dyn Store, within: Duration, server: &Server, engine: Engine) {
    let deadline = Instant::now() + within;
    loop {
        let counts = store.queue_counts().await.expect("queue counts");
        if counts.pending == 0 && counts.processing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{engine:?}: still {} PENDING and {} PROCESSING after {within:?}:\n{}",
            counts.pending,
            counts.processing,
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Upstream top-up calls recorded for one top-up (status queries excluded).
async fn topup_exchanges(store: &dyn Store, id: &str) -> usize {
    store
        .exchanges(id)
        .await
        .expect("exchanges")
        .iter()
        .filter(|e| e.kind == "topup")
        .count()
}

/// How many times a top-up was claimed by a worker (PENDING → PROCESSING).
async fn claims(store: &dyn Store, id: &str) -> usize {
    store
        .events(id)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.to_status == "PROCESSING")
        .count()
}

fn money(major: i64) -> String {
    Money::major(major).to_decimal_string()
}

/// `recarga audit` exits 0 and says it is clean.
async fn assert_cli_audit_clean(place: &Place, engine: Engine) {
    let audit = cli(place, &["audit"]).await;
    assert!(audit.ok(), "{engine:?}: recarga audit failed: {audit:?}");
    assert_eq!(audit.json["clean"], json!(true), "{engine:?}: {}", audit.stdout);
    assert!(audit.stdout.contains("\"clean\": true"), "{}", audit.stdout);
}

/// Creates a customer with the CLI and returns its API key.
async fn create_customer(place: &Place, id: &str, credit: &str) -> String {
    let out = cli_ok(
        place,
        &["customer", "create", "--id", id, "--name", id, "--credit", credit],
    )
    .await;
    out["api_key"].as_str().expect("api_key").to_string()
}

/// Submits `n` async top-ups of 10 MXN to phones that succeed; returns their ids.
async fn submit_tens(server: &Server, http: &reqwest::Client, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, json) = server
            .topup(http, key, topup_body(&ok_phone(i), "10", &format!("ref-{i}")), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "top-up {i}: {json}");
        ids.push(json["id"].as_str().expect("id").to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_flight_then_restart_conserves_money() {
    const N: usize = 30;
    for engine in engines() {
        let db = fresh(engine).await;
        let store = db.store.as_ref();
        let place = Place::database(&db.url);
        let key = create_customer(&place, "K1", "1000").await;
        let opts = ServeOpts {
            latency_ms: "1500-2500",
            upstream_timeout_s: 5,
            lease_s: 7,
            status_check_base_s: 1,
            // Fewer slots than top-ups: at the kill some are done, some in
            // flight, some still queued.
            concurrency: 8,
            demo: Some(false),
        };
        let mut first = Server::start(&place, &opts, "first").await;
        let http = client();
        let ids = submit_tens(&first, &http, &key, N).await;

        // Kill once calls are in flight (and, ideally, one has finished).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = store.queue_counts().await.expect("counts");
            // One process never leases more top-ups than it has call slots.
            assert!(
                counts.processing <= opts.concurrency as i64,
                "{engine:?}: {} PROCESSING with QUEUE_CONCURRENCY={}: {counts:?}\n{}",
                counts.processing,
                opts.concurrency,
                first.logs()
            );
            if counts.processing > 0 && counts.success > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{engine:?}: no top-up in flight: {counts:?}\n{}",
                first.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.sigkill();

        // The process is dead: this is exactly the state it left behind.
        let at_kill = statuses(store, "K1").await;
        assert_eq!(at_kill.len(), N, "{engine:?}");
        let in_flight = ids_in(&at_kill, TopupStatus::Processing);
        let queued = ids_in(&at_kill, TopupStatus::Pending);
        let done_before = ids_in(&at_kill, TopupStatus::Success);
        assert!(
            !in_flight.is_empty(),
            "{engine:?}: nothing in flight at the kill: {at_kill:?}"
        );
        assert!(
            in_flight.len() <= opts.concurrency,
            "{engine:?}: {} leased at the kill with QUEUE_CONCURRENCY={}: {at_kill:?}\n{}",
            in_flight.len(),
            opts.concurrency,
            first.logs()
        );
        assert!(
            in_flight.len() + queued.len() + done_before.len() == N,
            "{engine:?}: unexpected states at the kill: {at_kill:?}"
        );
        for id in &in_flight {
            assert_eq!(
                topup_exchanges(store, id).await,
                0,
                "{engine:?}: {id} answer never written"
            );
        }

        let second = Server::start(&place, &opts, "second").await;
        wait_settled(store, Duration::from_secs(60), &second, engine).await;

        // Every rescued top-up is queried at least once; the new process's
        // sandbox has never seen it ("not found"), so it stays UNKNOWN.
        let deadline = Instant::now() + Duration::from_secs(20);
        for id in &in_flight {
            loop {
                let exchanges = store.exchanges(id).await.expect("exchanges");
                if exchanges.iter().any(|e| e.kind == "status") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{engine:?}: rescued {id} was never queried:\n{}",
                    second.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        let after = statuses(store, "K1").await;
        assert_eq!(
            after.keys().cloned().collect::<BTreeSet<_>>(),
            ids.iter().cloned().collect(),
        );
        for (id, status) in &after {
            assert!(
                matches!(
                    status,
                    TopupStatus::Success | TopupStatus::Failed | TopupStatus::Unknown
                ),
                "{engine:?}: {id} is {status}"
            );
            assert!(
                topup_exchanges(store, id).await <= 1,
                "{engine:?}: {id} was sent upstream more than once"
            );
            assert_eq!(
                claims(store, id).await,
                1,
                "{engine:?}: {id} was claimed more than once"
            );
        }
        for id in &in_flight {
            assert_eq!(
                after[id],
                TopupStatus::Unknown,
                "{engine:?}: in flight at the kill: {id}"
            );
            assert_eq!(topup_exchanges(store, id).await, 0, "{engine:?}: {id} was resent");
            let events = store.events(id).await.expect("events");
            assert!(
                events.iter().any(|e| e.actor == "rescuer" && e.to_status == "UNKNOWN"),
                "{engine:?}: {id} not rescued: {events:?}"
            );
        }
        for id in done_before.iter().chain(&queued) {
            assert_eq!(
                after[id],
                TopupStatus::Success,
                "{engine:?}: {id} was done or queued at the kill; a queued top-up is sent by the restarted process:\n{}",
                second.logs()
            );
            assert_eq!(topup_exchanges(store, id).await, 1, "{engine:?}: {id}");
        }

        let shown = cli_ok(&place, &["topup", "show", "--id", in_flight.first().expect("one")]).await;
        assert_eq!(shown["topup"]["status"], "UNKNOWN", "{shown}");
        assert!(
            shown["events"]
                .as_array()
                .expect("events")
                .iter()
                .any(|e| e["actor"] == "rescuer"),
            "{shown}"
        );

        assert_cli_audit_clean(&place, engine).await;

        let unknown = ids_in(&after, TopupStatus::Unknown);
        let charged = ids_in(&after, TopupStatus::Success).len() + unknown.len();
        let expected = money(1000 - 10 * charged as i64);
        let customer = cli_ok(&place, &["customer", "show", "--id", "K1"]).await;
        assert_eq!(
            customer["customer"]["balance"],
            json!(expected),
            "{engine:?}: {customer}"
        );
        let (status, balance) = second.get(&http, &key, "/v1/balance").await;
        assert_eq!(status, StatusCode::OK, "{balance}");
        assert_eq!(balance["balance"], json!(expected), "{engine:?}");

        let unresolved = cli_ok(&place, &["topup", "unresolved"]).await;
        let listed: BTreeSet<String> = unresolved["topups"]
            .as_array()
            .expect("topups")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(listed, unknown, "{engine:?}: {unresolved}");
        assert_eq!(unresolved["count"], json!(unknown.len()));
        drop(second);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_sigterm_drains_in_flight_calls() {
    const N: usize = 20;
    for engine in engines() {
        let db = fresh(engine).await;
        let store = db.store.as_ref();
        let place = Place::database(&db.url);
        let key = create_customer(&place, "G1", "1000").await;
        let opts = ServeOpts {
            latency_ms: "1500-2500",
            upstream_timeout_s: 5,
            lease_s: 7,
            status_check_base_s: 1,
            concurrency: 8,
            demo: Some(false),
        };
        let mut first = Server::start(&place, &opts, "first").await;
        let http = client();
        let ids = submit_tens(&first, &http, &key, N).await;

        let deadline = Instant::now() + Duration::from_secs(20);
        let before_term = loop {
            let now = statuses(store, "G1").await;
            let leased = ids_in(&now, TopupStatus::Processing).len();
            assert!(
                leased <= opts.concurrency,
                "{engine:?}: {leased} PROCESSING with QUEUE_CONCURRENCY={}\n{}",
                opts.concurrency,
                first.logs()
            );
            if leased > 0 {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "{engine:?}: nothing in flight:\n{}",
                first.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let sent = Instant::now();
        first.sigterm();
        let exit = first.wait_exit(Duration::from_secs(opts.lease_s)).await;
        let exit = exit.unwrap_or_else(|| {
            panic!(
                "{engine:?}: still running {:?} after SIGTERM:\n{}",
                sent.elapsed(),
                first.logs()
            )
        });
        assert!(
            exit.success(),
            "{engine:?}: exit {exit} after SIGTERM:\n{}",
            first.logs()
        );

        // Drained: nothing is left PROCESSING, whatever was in flight is final.
        let after_term = statuses(store, "G1").await;
        assert!(
            ids_in(&after_term, TopupStatus::Processing).is_empty(),
            "{engine:?}: left in flight: {after_term:?}"
        );
        assert!(
            ids_in(&after_term, TopupStatus::Unknown).is_empty(),
            "{engine:?}: {after_term:?}"
        );
        for id in ids_in(&before_term, TopupStatus::Processing) {
            assert_eq!(
                after_term[&id],
                TopupStatus::Success,
                "{engine:?}: in flight at SIGTERM: {id}"
            );
        }

        let second = Server::start(&place, &opts, "second").await;
        wait_settled(store, Duration::from_secs(60), &second, engine).await;
        let after = statuses(store, "G1").await;
        assert_eq!(after.len(), N);
        for id in &ids {
            assert_eq!(
                after[id],
                TopupStatus::Success,
                "{engine:?}: {id} after the drain and restart:\n{}",
                second.logs()
            );
            assert_eq!(topup_exchanges(store, id).await, 1, "{engine:?}: {id}");
            assert_eq!(claims(store, id).await, 1, "{engine:?}: {id}");
        }
        let customer = cli_ok(&place, &["customer", "show", "--id", "G1"]).await;
        assert_eq!(customer["customer"]["balance"], json!(money(1000 - 10 * N as i64)));
        assert_cli_audit_clean(&place, engine).await;
        drop(second);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_round_trip() {
    for engine in engines() {
        let db = fresh(engine).await;
        let place = Place::database(&db.url);

        let migrated = cli_ok(&place, &["migrate"]).await;
        assert_eq!(migrated["migrated"], json!(true), "{migrated}");

        let created = cli_ok(
            &place,
            &["customer", "create", "--id", "C1", "--name", "Acme", "--credit", "500"],
        )
        .await;
        assert_eq!(created["customer"]["id"], "C1", "{created}");
        assert_eq!(created["customer"]["name"], "Acme");
        assert_eq!(created["customer"]["balance"], "500.00");
        assert_eq!(created["customer"]["currency"], "MXN");
        let first_key = created["api_key"].as_str().expect("api_key").to_string();
        assert!(first_key.starts_with("rk_"), "{first_key}");
        assert!(created["key_id"].is_string(), "{created}");
        assert!(created["note"].as_str().expect("note").contains("once"));

        let again = cli(
            &place,
            &["customer", "create", "--id", "C1", "--name", "Other", "--credit", "999"],
        )
        .await;
        assert!(!again.ok(), "{engine:?}: a duplicate id must be refused: {again:?}");
        assert!(again.stderr.contains("already exists"), "{again:?}");

        let list = cli_ok(&place, &["customer", "list"]).await;
        let customers = list["customers"].as_array().expect("customers");
        assert_eq!(customers.len(), 1, "{list}");
        assert_eq!(customers[0]["id"], "C1");
        assert_eq!(customers[0]["name"], "Acme", "the refused create changed nothing");
        assert_eq!(customers[0]["balance"], "500.00");

        let shown = cli_ok(&place, &["customer", "show", "--id", "C1"]).await;
        assert_eq!(shown["customer"]["balance"], "500.00");
        assert_eq!(shown["keys"].as_array().expect("keys").len(), 1);
        assert!(
            !shown.to_string().contains(&first_key),
            "the plaintext key is never shown again"
        );
        let missing = cli(&place, &["customer", "show", "--id", "NOPE"]).await;
        assert!(!missing.ok(), "{missing:?}");

        let credit = cli_ok(
            &place,
            &[
                "customer", "credit", "--id", "C1", "--amount", "250.50", "--reason", "wire",
            ],
        )
        .await;
        assert_eq!(credit["balance"], "750.50", "{credit}");
        assert_eq!(credit["entry"]["kind"], "credit");
        assert_eq!(credit["entry"]["reason"], "wire");

        let debit = cli_ok(
            &place,
            &["customer", "credit", "--id", "C1", "--amount", "-50", "--reason", "fix"],
        )
        .await;
        assert_eq!(debit["balance"], "700.50", "{debit}");
        assert_eq!(debit["entry"]["kind"], "debit");

        let ledger_len = |v: &Value| v["recent_ledger"].as_array().expect("ledger").len();
        let before = cli_ok(&place, &["customer", "show", "--id", "C1"]).await;
        let overdraw = cli(
            &place,
            &[
                "customer", "credit", "--id", "C1", "--amount", "-1000", "--reason", "too much",
            ],
        )
        .await;
        assert!(
            !overdraw.ok(),
            "{engine:?}: a debit beyond the balance must fail: {overdraw:?}"
        );
        let no_reason = cli(&place, &["customer", "credit", "--id", "C1", "--amount", "5"]).await;
        assert!(!no_reason.ok(), "a credit needs --reason: {no_reason:?}");
        assert!(no_reason.stderr.contains("--reason"), "{no_reason:?}");
        let after = cli_ok(&place, &["customer", "show", "--id", "C1"]).await;
        assert_eq!(after["customer"]["balance"], "700.50", "refusals moved no money");
        assert_eq!(
            ledger_len(&after),
            ledger_len(&before),
            "refusals wrote no ledger entry"
        );

        let second = cli_ok(&place, &["key", "create", "--customer", "C1", "--label", "backup"]).await;
        let second_key = second["api_key"].as_str().expect("api_key").to_string();
        let second_id = second["key_id"].as_str().expect("key_id").to_string();
        assert!(second_key.starts_with("rk_") && second_key != first_key, "{second}");
        let orphan = cli(&place, &["key", "create", "--customer", "NOPE"]).await;
        assert!(!orphan.ok(), "{orphan:?}");

        let keys = cli_ok(&place, &["key", "list", "--customer", "C1"]).await;
        let rows = keys["keys"].as_array().expect("keys");
        assert_eq!(rows.len(), 2, "{keys}");
        assert!(rows.iter().all(|k| k["revoked_at"].is_null()), "{keys}");
        assert!(
            rows.iter().all(|k| k.get("digest").is_none()),
            "digests stay private: {keys}"
        );
        assert!(!keys.to_string().contains(&second_key), "plaintext never listed");

        // Both keys work against a running server; then one is revoked.
        let server = Server::start(&place, &ServeOpts::default(), "serve").await;
        let http = client();
        for key in [&first_key, &second_key] {
            let (status, json) = server.get(&http, key, "/v1/balance").await;
            assert_eq!(status, StatusCode::OK, "{json}");
            assert_eq!(json["balance"], "700.50");
        }
        let revoked = cli_ok(&place, &["key", "revoke", "--id", &second_id]).await;
        assert_eq!(revoked["revoked"]["id"], json!(second_id), "{revoked}");
        assert!(revoked["revoked"]["revoked_at"].is_i64(), "{revoked}");
        let keys = cli_ok(&place, &["key", "list", "--customer", "C1"]).await;
        let revoked_rows: Vec<&Value> = keys["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|k| !k["revoked_at"].is_null())
            .collect();
        assert_eq!(revoked_rows.len(), 1, "{keys}");
        assert_eq!(revoked_rows[0]["id"], json!(second_id));
        let (status, json) = server.get(&http, &second_key, "/v1/balance").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{engine:?}: revoked key: {json}");
        let (status, json) = server.get(&http, &first_key, "/v1/balance").await;
        assert_eq!(status, StatusCode::OK, "{json}");
        drop(server);

        let set = cli_ok(&place, &["customer", "set", "--id", "C1", "--daily-limit", "100"]).await;
        assert_eq!(set["customer"]["daily_limit"], "100.00", "{set}");
        assert_eq!(set["customer"]["balance"], "700.50");
        let shown = cli_ok(&place, &["customer", "show", "--id", "C1"]).await;
        assert_eq!(shown["customer"]["daily_limit"], "100.00");

        assert_cli_audit_clean(&place, engine).await;
    }
}

/// The first whitespace-separated word of `text` that starts with `rk_`.
fn api_key_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '\'')
        .find(|w| w.starts_with("rk_"))
        .map(str::to_string)
}

/// No `DATABASE_URL`: embedded SQLite under the data dir, so one run covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_setup_serve_prints_banner_and_demo_credentials() {
    let data_dir = temp_dir("zero-setup").join("data");
    let place = Place::embedded(&data_dir);
    let opts = ServeOpts {
        latency_ms: "50-100",
        demo: None,
        ..ServeOpts::default()
    };
    let http = client();

    let mut first = Server::start(&place, &opts, "first").await;
    let banner = first.stdout_text();
    assert!(banner.contains("SANDBOX"), "{banner}");
    assert!(banner.contains("DEMO_001"), "{banner}");
    let key = api_key_in(&banner).unwrap_or_else(|| panic!("no API key in the banner:\n{banner}"));
    let (prefix, secret) = key["rk_".len()..].split_once('_').expect("rk_<prefix>_<secret>");
    assert_eq!((prefix.len(), secret.len()), (12, 40), "{key}");
    assert!(
        data_dir.join("recarga.db").exists(),
        "SQLite file under RECARGA_DATA_DIR"
    );

    let health: Value = http
        .get(format!("{}/health", first.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["database"]["engine"], "sqlite", "{health}");

    let (status, json) = first
        .topup(&http, &key, topup_body("5512345678", "20", "demo-1"), Some(10))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}\n{}", first.logs());
    assert_eq!(json["status"], "SUCCESS", "{json}");
    let (_, balance) = first.get(&http, &key, "/v1/balance").await;
    assert_eq!(balance["balance"], "9980.00", "{balance}");

    first.sigterm();
    let exit = first.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", first.logs());
    drop(first);

    let second = Server::start(&place, &opts, "second").await;
    let banner = second.stdout_text();
    assert!(banner.contains("SANDBOX"), "{banner}");
    assert!(
        api_key_in(&banner).is_none(),
        "a second start shows no new key:\n{banner}"
    );
    assert!(
        banner.contains("DEMO_001 exists") && banner.contains("recarga key create --customer DEMO_001"),
        "{banner}"
    );
    let (status, balance) = second.get(&http, &key, "/v1/balance").await;
    assert_eq!(status, StatusCode::OK, "the first key still works: {balance}");
    assert_eq!(balance["balance"], "9980.00", "{balance}");
    let (status, again) = second
        .get(&http, &key, &format!("/v1/topups/{}", json["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "SUCCESS");
}

/// Start-up refusals happen before any database is opened, so one run covers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_sandbox_and_missing_admin_key() {
    let data_dir = temp_dir("prod").join("data");
    let place = Place::embedded(&data_dir);
    let serve = |admin_key: Option<&str>| {
        let mut cmd = place.command();
        cmd.arg("serve")
            .env("RECARGA_ENV", "production")
            .env("PORT", free_port().to_string())
            .env("RECARGA_BIND", "127.0.0.1");
        if let Some(k) = admin_key {
            cmd.env("ADMIN_KEY", k);
        }
        cmd
    };

    let started = Instant::now();
    let no_key = run(serve(None)).await;
    assert!(!no_key.ok() && no_key.code.is_some(), "{no_key:?}");
    assert!(no_key.stderr.contains("ADMIN_KEY"), "{no_key:?}");
    let sandbox = run(serve(Some("0123456789abcdef"))).await;
    assert!(!sandbox.ok() && sandbox.code.is_some(), "{sandbox:?}");
    assert!(sandbox.stderr.contains("sandbox"), "{sandbox:?}");
    assert!(
        !sandbox.stderr.contains("0123456789abcdef"),
        "the admin key is never echoed"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "refused quickly");
    assert!(
        !data_dir.join("recarga.db").exists(),
        "refused before touching the database"
    );

    let mut top = place.command();
    top.arg("--help");
    let top = run(top).await;
    assert!(top.ok(), "{top:?}");
    assert!(
        top.stdout.contains("DATABASE_URL") && top.stdout.contains("serve"),
        "{}",
        top.stdout
    );

    // With secrets in the environment, the help names them but never shows them.
    let mut serve_help = place.command();
    serve_help
        .args(["serve", "--help"])
        .env("ADMIN_KEY", "s3cr3t-admin-key-value")
        .env("DATABASE_URL", "postgres://u:pg-secret-pw@127.0.0.1:1/x");
    let serve_help = run(serve_help).await;
    assert!(serve_help.ok(), "{serve_help:?}");
    for name in ["DATABASE_URL", "QUEUE_CONCURRENCY", "PORT", "ADMIN_KEY"] {
        assert!(
            serve_help.stdout.contains(name),
            "serve --help lacks {name}:\n{}",
            serve_help.stdout
        );
    }
    assert!(
        !serve_help.stdout.contains("s3cr3t-admin-key-value"),
        "{}",
        serve_help.stdout
    );
    assert!(!serve_help.stdout.contains("pg-secret-pw"), "{}", serve_help.stdout);
}

/// `RECARGA_DEMO=false` on an empty database: no demo customer is created, and
/// the banner must not point the operator at one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_demo_creates_and_claims_no_demo_customer() {
    let place = Place::embedded(&temp_dir("no-demo").join("data"));
    let server = Server::start(&place, &ServeOpts::default(), "serve").await;
    let banner = server.stdout_text();
    assert!(banner.contains("SANDBOX"), "{banner}");
    assert!(api_key_in(&banner).is_none(), "{banner}");
    let customers = cli_ok(&place, &["customer", "list"]).await;
    assert_eq!(
        customers["customers"],
        json!([]),
        "demo off creates nobody: {customers}"
    );
    assert!(
        !banner.contains("DEMO_001 exists"),
        "the banner claims a demo customer that does not exist:\n{banner}"
    );
}

/// `recarga key import` (stdin, digest only), `key rotate --overlap`, `key
/// list` with last use, and the legacy settings of `customer set`, through
/// the real binary against a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_keys_and_settings_through_the_cli() {
    for engine in engines() {
        let db = fresh(engine).await;
        let place = Place::database(&db.url);
        let created = cli_ok(
            &place,
            &[
                "customer", "create", "--id", "HAZ_001", "--name", "HAZ", "--credit", "100",
            ],
        )
        .await;
        let issued = created["api_key"].as_str().expect("api_key").to_string();

        // Import: the key comes on stdin and never reaches the output or the database.
        let secret = "haz-published-key-2025";
        let mut cmd = place.command();
        cmd.args([
            "key",
            "import",
            "--customer",
            "HAZ_001",
            "--label",
            "from the old system",
        ]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = tokio::process::Command::from(cmd).spawn().expect("spawn");
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(format!("{secret}\n").as_bytes()).await.expect("write");
        }
        let out = child.wait_with_output().await.expect("import runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains(secret), "the key is not printed: {stdout}");
        let imported: Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(imported["imported"]["kind"], "imported", "{imported}");
        assert_eq!(imported["imported"]["shown_as"], "haz-…");
        let import_id = imported["imported"]["id"].as_str().unwrap().to_string();
        for k in db.store.list_api_keys("HAZ_001").await.unwrap() {
            assert!(!k.digest.contains(secret) && !k.prefix.contains(secret));
        }

        // A short key is imported with a warning, not refused.
        let mut cmd = place.command();
        cmd.args(["key", "import", "--customer", "HAZ_001"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = tokio::process::Command::from(cmd).spawn().expect("spawn");
        {
            use tokio::io::AsyncWriteExt;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"abc123\n")
                .await
                .expect("write");
        }
        let out = child.wait_with_output().await.expect("import runs");
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("warning"),
            "a warning on stderr"
        );

        // Legacy settings.
        let set = cli_ok(
            &place,
            &[
                "customer",
                "set",
                "--id",
                "HAZ_001",
                "--reference-policy",
                "free",
                "--public-status",
                "true",
                "--ip-allowlist",
                "127.0.0.1, 10.0.0.0/8",
                "--reason",
                "old clients",
            ],
        )
        .await;
        assert_eq!(set["customer"]["reference_policy"], "free", "{set}");
        assert_eq!(set["customer"]["public_status"], true);
        assert_eq!(set["customer"]["ip_allowlist"], "127.0.0.1,10.0.0.0/8");
        assert_eq!(set["customer"]["ip_allowlist_enabled"], true);
        let bad = cli(
            &place,
            &["customer", "set", "--id", "HAZ_001", "--ip-allowlist", "not-an-ip"],
        )
        .await;
        assert!(!bad.ok(), "an invalid allow-list is refused");

        // The imported key works with the old headers; its last use shows.
        let server = Server::start(&place, &ServeOpts::default(), "serve").await;
        let http = client();
        let r = http
            .get(format!("{}/api/balance", server.base))
            .header("x-api-key", secret)
            .header("x-customer-id", "HAZ_001")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        let mut last_used = Value::Null;
        for _ in 0..50 {
            let keys = cli_ok(&place, &["key", "list", "--customer", "HAZ_001"]).await;
            last_used = keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == json!(import_id))
                .map(|k| k["last_used_at"].clone())
                .unwrap_or(Value::Null);
            if !last_used.is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(last_used.is_i64(), "key list shows the last use");

        // Rotate: a successor now; the old key keeps working during the overlap.
        let rotated = cli_ok(&place, &["key", "rotate", "--id", &import_id, "--overlap", "1h"]).await;
        let successor = rotated["api_key"].as_str().expect("successor").to_string();
        assert_eq!(rotated["retired"]["state"], "retiring", "{rotated}");
        for (key, customer) in [
            (secret, "HAZ_001"),
            (successor.as_str(), "HAZ_001"),
            (issued.as_str(), "HAZ_001"),
        ] {
            let r = http
                .get(format!("{}/api/balance", server.base))
                .header("x-api-key", key)
                .header("x-customer-id", customer)
                .send()
                .await
                .expect("GET");
            assert_eq!(r.status(), StatusCode::OK, "during the overlap");
        }
        let rotated = cli_ok(&place, &["key", "rotate", "--id", &import_id, "--overlap", "0"]).await;
        assert_eq!(rotated["retired"]["state"], "expired", "{rotated}");
        let r = http
            .get(format!("{}/api/balance", server.base))
            .header("x-api-key", secret)
            .header("x-customer-id", "HAZ_001")
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "after the overlap");
        drop(server);
        assert_cli_audit_clean(&place, engine).await;
    }
}
