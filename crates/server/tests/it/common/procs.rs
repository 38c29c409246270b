//! The multi-process suites' side of the harness (`process`, `replicas`,
//! `observability`, `crash`, `story`): the test build of the binary, the
//! panicking forms of `recarga_testkit` (where the shared child-process
//! harness lives), the books every crash and story run is checked against,
//! and the rig of the crash and story suites.

use recarga_domain::{Money, TopupStatus};
use recarga_store::{Store, Topup, TopupFilter};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

/// The binary under test; its test build carries the crash sites
/// (`recarga_domain::failpoint`).
pub const BIN: &str = env!("CARGO_BIN_EXE_recarga");
/// Longest a child may take to answer after it was started (debug build, loaded machine).
pub const READY_WITHIN: Duration = Duration::from_secs(60);
/// Longest an operator command may run.
pub const CLI_WITHIN: Duration = Duration::from_secs(60);
/// Client-side bound on idle pooled connections per host.
pub const CLIENT_IDLE_PER_HOST_MAX: usize = 64;

/// This test process's own link to [`BIN`], taken at first use: a build
/// that replaces the binary in the shared target directory while the suite
/// runs (another `cargo build` or `cargo test`) cannot change, or remove the
/// crash sites from, the binary under test half-way through.
pub fn bin() -> &'static Path {
    static PINNED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PINNED.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "recarga-bin-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the binary's dir");
        let pinned = dir.join("recarga");
        if std::fs::hard_link(BIN, &pinned).is_err() {
            std::fs::copy(BIN, &pinned).expect("copy the recarga binary");
        }
        pinned
    })
}

/// Panics unless [`bin`] carries the crash sites. `cargo test` builds it so;
/// a plain `cargo build` (or `cargo build --tests`) into the same target
/// directory replaces it with a build without them.
pub fn assert_failpoints_compiled() {
    let bytes = std::fs::read(bin()).expect("read the recarga binary");
    let marker = b"hit: aborting";
    assert!(
        bytes.windows(marker.len()).any(|w| w == marker),
        "{BIN} was built without the `failpoints` feature (a plain `cargo build` into this \
         target directory replaced the test build): run the suite with `cargo test`"
    );
}

pub fn free_port() -> u16 {
    recarga_testkit::free_port().expect("a free port")
}

/// An HTTP client with a 30 s bound per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(CLIENT_IDLE_PER_HOST_MAX)
        .build()
        .expect("http client")
}

/// `recarga` with a cleared environment, run in `work`: only what the caller
/// sets next reaches it.
pub fn recarga(work: &Path) -> std::process::Command {
    recarga_testkit::command(bin(), work)
}

pub use recarga_testkit::{CliRun, Proc, Sim};

/// [`Proc::spawn`], panicking on failure.
pub fn spawn(cmd: std::process::Command, work: &Path, name: &str) -> Proc {
    Proc::spawn(cmd, work, name).unwrap_or_else(|e| panic!("spawn {name}: {e:#}"))
}

/// Waits until `proc` answers `url` with `want` (any status when `None`);
/// panics with its logs if it exits first or does not answer in time.
pub async fn wait_ready(proc: &mut Proc, url: &str, want: Option<StatusCode>) {
    proc.wait_http(&client(), url, want.map(|s| s.as_u16()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Runs `cmd` to completion (within [`CLI_WITHIN`]) and captures its output.
pub async fn run(cmd: std::process::Command) -> CliRun {
    recarga_testkit::run(cmd, CLI_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A standalone Latcom simulator (`recarga latcom-sim`) on a free port:
/// its journal, the ground truth of what was submitted and delivered,
/// survives gateway crashes.
pub async fn start_sim(work: &Path, latency_ms: &str, config: Option<&Value>) -> Sim {
    let mut cmd = recarga(work);
    cmd.env("RECARGA_LOG", "info");
    Sim::start(cmd, work, latency_ms, config)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Every top-up of a customer (keyset pages).
pub async fn all_topups(store: &dyn Store, customer: &str) -> Vec<Topup> {
    let mut out = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_topups(&TopupFilter {
                customer_id: Some(customer.into()),
                before_id: before_id.clone(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list top-ups");
        let full = page.len() == 1000;
        before_id = page.last().map(|t| t.id.clone());
        out.extend(page);
        if !full {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------
// The books: the end-of-test checks shared by the crash and story suites.
// ---------------------------------------------------------------------------

/// Most ledger rows read per customer.
pub const LEDGER_ROWS_MAX: i64 = 1_000_000;
/// The sandbox script whose `Fail` answer hides a delivery (LATCOM.md: 800
/// such top-ups in the old data). We trust the Fail: FAILED, hold released;
/// only a reconciliation against the carrier can catch it (see latcom.rs).
pub const FAIL_BUT_DELIVERED: &str = "989";

/// What the books hold at the end of a run.
#[derive(Debug, Default)]
pub struct Books {
    /// Every top-up of the customers checked, by id.
    pub topups: BTreeMap<String, Topup>,
    /// Top-ups by final status (`SUCCESS`, `FAILED`, `UNKNOWN`, …).
    pub by_status: BTreeMap<String, usize>,
    /// `989` top-ups: FAILED by Latcom's word though the carrier delivered.
    pub fail_but_delivered: usize,
    /// Every broken rule, in words; empty when the books are right.
    pub violations: Vec<String>,
}

/// Reads the books of `customers` and checks every money rule against them
/// and against the simulator's ground truth (`journal`, the JSON of
/// `GET /__sim/journal`) and the operator's list of UNKNOWN top-ups
/// (`unresolved`, the JSON of `recarga topup unresolved`):
///
/// - nothing is left PENDING or PROCESSING; every UNKNOWN is listed, and
///   only those;
/// - balance = Σ ledger, and each top-up's ledger nets to −held while it is
///   SUCCESS or UNKNOWN and to 0 once FAILED;
/// - no `dist_transid` (attempt id) reached the simulator twice, a top-up
///   was only sent again after its earlier sends delivered nothing, no
///   phone was recharged twice, every journal entry is one of our top-ups;
/// - history imported from the old system was never sent, holds nothing,
///   and has a ledger entry only once an old PENDING row was resolved
///   SUCCESS here (the debit of its price);
/// - SUCCESS was delivered; a delivered top-up was never refunded (except the
///   documented `989` case); a FAILED top-up has a definite failure on record
///   (a `Fail` answer, a request that provably never left, a status query
///   that found no delivery, or an operator's decision).
pub async fn check_books(store: &dyn Store, customers: &[String], journal: &Value, unresolved: &Value) -> Books {
    let mut books = Books::default();
    let v = &mut books.violations;
    let entries = journal["entries"].as_object().cloned().unwrap_or_default();
    let listed: BTreeSet<String> = unresolved["topups"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for customer in customers {
        let Some(c) = store.get_customer(customer).await.expect("read customer") else {
            v.push(format!("customer {customer} does not exist"));
            continue;
        };
        let ledger = store.ledger(customer, LEDGER_ROWS_MAX).await.expect("ledger");
        let sum: i64 = ledger.iter().map(|e| e.amount.minor()).sum();
        if sum != c.balance.minor() {
            v.push(format!(
                "{customer}: balance {} but the ledger sums to {}",
                c.balance,
                Money::from_minor(sum)
            ));
        }
        let mut net: BTreeMap<String, i64> = BTreeMap::new();
        for e in &ledger {
            if let Some(t) = &e.topup_id {
                *net.entry(t.clone()).or_default() += e.amount.minor();
            }
        }
        for t in all_topups(store, customer).await {
            *books.by_status.entry(t.status.to_string()).or_default() += 1;
            if t.is_imported() {
                check_imported(store, &t, &net, &entries, &listed, v).await;
                books.topups.insert(t.id.clone(), t);
                continue;
            }
            let want = match t.status {
                TopupStatus::Failed => 0,
                _ => -t.held.minor(),
            };
            let got = net.get(&t.id).copied().unwrap_or(0);
            if got != want {
                v.push(format!(
                    "{}: {} with held {} but its ledger nets {}",
                    t.id,
                    t.status,
                    t.held,
                    Money::from_minor(got)
                ));
            }
            if matches!(t.status, TopupStatus::Pending | TopupStatus::Processing) {
                v.push(format!("{}: still {} after settling", t.id, t.status));
            }
            if (t.status == TopupStatus::Unknown) != listed.contains(&t.id) {
                v.push(format!(
                    "{}: {} but {}listed by `recarga topup unresolved`",
                    t.id,
                    t.status,
                    if listed.contains(&t.id) { "" } else { "not " }
                ));
            }
            // Every send of the top-up, under its attempt id (`<id>`, `<id>-2`, …).
            let sends: Vec<(&String, &Value)> = entries
                .iter()
                .filter(|(attempt, _)| recarga_domain::topup_of_attempt(attempt) == t.id)
                .collect();
            for (attempt, entry) in &sends {
                let calls = entry["calls"].as_u64().unwrap_or(0);
                if calls > 1 {
                    v.push(format!(
                        "{}: attempt {attempt} sent upstream {calls} times (resent)",
                        t.id
                    ));
                }
            }
            let deliveries: u64 = sends.iter().map(|(_, e)| e["deliveries"].as_u64().unwrap_or(0)).sum();
            if sends.len() > 1 {
                // A later send is only allowed after an earlier one provably
                // delivered nothing (the simulator's journal agrees).
                let earlier_delivered = sends
                    .iter()
                    .filter(|(a, _)| a.as_str() != recarga_domain::attempt_id(&t.id, t.sends))
                    .any(|(_, e)| e["deliveries"].as_u64().unwrap_or(0) > 0);
                if earlier_delivered {
                    v.push(format!("{}: sent again after an earlier send was delivered", t.id));
                }
            }
            if deliveries > 1 {
                v.push(format!("{}: phone recharged {deliveries} times", t.id));
            }
            let delivered = deliveries > 0;
            match t.status {
                TopupStatus::Success if !delivered => {
                    v.push(format!("{}: SUCCESS but the simulator never delivered it", t.id));
                }
                TopupStatus::Failed if delivered && t.phone.as_str().ends_with(FAIL_BUT_DELIVERED) => {
                    books.fail_but_delivered += 1;
                }
                TopupStatus::Failed if delivered => {
                    v.push(format!("{}: delivered but FAILED (refunded)", t.id));
                }
                TopupStatus::Failed => {
                    let exchanges = store.exchanges(&t.id).await.expect("exchanges");
                    let events = store.events(&t.id).await.expect("events");
                    let definite = exchanges
                        .iter()
                        .any(|e| e.outcome == "failed" || e.outcome == "not_sent")
                        || events
                            .iter()
                            .any(|e| e.to_status == "FAILED" && !matches!(e.actor.as_str(), "worker" | "status-query"));
                    if !definite {
                        v.push(format!(
                            "{}: FAILED (refunded) without a definite failure on record: {exchanges:?} {events:?}",
                            t.id
                        ));
                    }
                }
                _ => {}
            }
            books.topups.insert(t.id.clone(), t);
        }
    }
    for (id, entry) in &entries {
        if !books.topups.contains_key(recarga_domain::topup_of_attempt(id)) {
            v.push(format!("the simulator has {id}, which is none of our top-ups: {entry}"));
        }
    }
    books
}

/// History imported from the old system: never sent by us and nothing held;
/// only an old PENDING row resolved SUCCESS here has a ledger entry (the
/// debit of its price). UNKNOWN ones are listed for an operator.
async fn check_imported(
    store: &dyn Store,
    t: &Topup,
    net: &BTreeMap<String, i64>,
    journal: &serde_json::Map<String, Value>,
    listed: &BTreeSet<String>,
    v: &mut Vec<String>,
) {
    let resolved_here = t.status == TopupStatus::Success
        && store
            .events(&t.id)
            .await
            .expect("events")
            .iter()
            .any(|e| e.from_status.as_deref() == Some("UNKNOWN"));
    let want = if resolved_here { -t.legacy_price.unwrap_or(0) } else { 0 };
    let got = net.get(&t.id).copied().unwrap_or(0);
    if got != want || t.held.minor() != 0 {
        v.push(format!(
            "{}: imported {} (held {}) but its ledger nets {} (want {})",
            t.id,
            t.status,
            t.held,
            Money::from_minor(got),
            Money::from_minor(want)
        ));
    }
    if journal.keys().any(|a| recarga_domain::topup_of_attempt(a) == t.id) {
        v.push(format!("{}: imported history was sent upstream", t.id));
    }
    if (t.status == TopupStatus::Unknown) != listed.contains(&t.id) {
        v.push(format!(
            "{}: imported {} but the unresolved list disagrees",
            t.id, t.status
        ));
    }
}

// ---------------------------------------------------------------------------
// A rig for the crash and story suites: one database (optionally one Redis
// prefix), one standalone simulator, gateways that may carry a crash site.
// ---------------------------------------------------------------------------

/// Ports tried when a neighbour takes the free one first.
const PORT_ATTEMPTS: usize = 5;
/// `RECARGA_UPSTREAM_TIMEOUT_S` of a rig's gateways.
pub const RIG_UPSTREAM_TIMEOUT_S: u64 = 2;
/// `RECARGA_LEASE_S` of a rig's gateways: short, so a dead worker's top-ups
/// are rescued soon.
pub const RIG_LEASE_S: u64 = 4;
/// `QUEUE_CONCURRENCY` of a rig's gateways.
pub const RIG_CONCURRENCY: usize = 8;

/// Where a rig's gateways and operator commands find their data.
pub struct Rig {
    pub work: PathBuf,
    pub db_url: String,
    /// `REDIS_URL` and the `RECARGA_REDIS_PREFIX` of this rig.
    pub redis: Option<(String, String)>,
    pub sim: Sim,
    /// Further settings of every process of this rig (`NAME`, value).
    pub env: Vec<(String, String)>,
}

/// A running `recarga serve` of a rig.
pub struct Gateway {
    pub proc: Proc,
    pub base: String,
    /// The crash site it was armed with (`site` or `site@n`), if any.
    pub armed: Option<String>,
}

impl Rig {
    /// `recarga` for this rig's database (and Redis), armed with `failpoint`.
    pub fn command(&self, failpoint: Option<&str>) -> std::process::Command {
        let mut cmd = recarga(&self.work);
        cmd.env("RECARGA_DATA_DIR", self.work.join("data"))
            .env("DATABASE_URL", &self.db_url);
        if let Some((url, prefix)) = &self.redis {
            cmd.env("REDIS_URL", url).env("RECARGA_REDIS_PREFIX", prefix);
        }
        if let Some(site) = failpoint {
            cmd.env(recarga_domain::failpoint::ENV, site);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// An operator command, armed with `failpoint` if given.
    pub async fn cli(&self, args: &[&str], failpoint: Option<&str>) -> CliRun {
        let mut cmd = self.command(failpoint);
        cmd.args(args);
        run(cmd).await
    }

    /// Starts `recarga serve` selling through the rig's simulator, and waits
    /// until it answers `/health` or has died (an armed site may be reached
    /// during the start-up), within [`READY_WITHIN`].
    pub async fn start_gateway(&self, name: &str, failpoint: Option<String>) -> Gateway {
        // A port free when asked can be taken by a neighbouring suite before
        // the gateway binds it: then (and only then) try another port.
        for _ in 0..PORT_ATTEMPTS {
            let gw = self.start_gateway_on(free_port(), name, failpoint.clone()).await;
            let lost_port = gw.proc.stderr_tail(5).contains("Address already in use");
            if !lost_port {
                return gw;
            }
        }
        panic!("{name}: no free port in {PORT_ATTEMPTS} attempts");
    }

    async fn start_gateway_on(&self, port: u16, name: &str, failpoint: Option<String>) -> Gateway {
        let mut cmd = self.command(failpoint.as_deref());
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("RECARGA_DEMO", "false")
            .env("RECARGA_UPSTREAM_TIMEOUT_S", RIG_UPSTREAM_TIMEOUT_S.to_string())
            .env("RECARGA_LEASE_S", RIG_LEASE_S.to_string())
            .env("RECARGA_STATUS_CHECK_BASE_S", "1")
            .env("RECARGA_STATUS_CHECK_MAX_S", "2")
            .env("QUEUE_CONCURRENCY", RIG_CONCURRENCY.to_string())
            .envs(self.sim.gateway_env());
        let mut gw = Gateway {
            proc: spawn(cmd, &self.work, name),
            base: format!("http://127.0.0.1:{port}"),
            armed: failpoint,
        };
        let http = client();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if gw.proc.exited().is_some() {
                return gw;
            }
            if let Ok(res) = http.get(format!("{}/health", gw.base)).send().await
                && res.status() == StatusCode::OK
            {
                return gw;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready within {READY_WITHIN:?}:\n{}",
                gw.proc.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
