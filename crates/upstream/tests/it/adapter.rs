//! Black-box tests of the Latcom adapter ([`recarga_upstream::latcom::Latcom`])
//! against the real Latcom simulator over loopback HTTP.
//!
//! Each test starts its own simulator (so journals and login counts are its
//! own) and drives the adapter only through the public [`Provider`] API. The
//! simulator's journal is the ground truth: what was really delivered, how many
//! times, and how many logins it saw. Where a test needs to see traffic the
//! simulator does not count (HTTP 401 answers, requests in flight at once), it
//! serves the simulator's router itself behind a small counting middleware.
//!
//! Covered: one shared login under 500 concurrent calls; refresh before the
//! JWT `exp`; one re-login on 401 when the token carries no `exp`; the IP
//! allow-list block (at start and mid-way) and its lifting; classification of
//! every simulator script (definite success and failure, silence, 5xx, reset,
//! garbage, connection refused) and product rules; status queries in every
//! simulator mode; the rate and concurrency caps; and that no secret (password,
//! `dist_api`, bearer token) appears in a `Debug` dump or an exchange record.

use recarga_domain::{Money, Msisdn};
use recarga_upstream::latcom::wire::TOPUP_PATH;
use recarga_upstream::latcom::{Latcom, LatcomConfig};
use recarga_upstream::sim::{SimConfig, Simulator, StatusMode};
use recarga_upstream::{Attempt, ExchangeLog, Outcome, Provider, StatusAnswer, TopupRequest};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A phone whose last three digits select the simulator's plain success script.
const OK_PHONE: &str = "5512345000";

/// A quick simulator: answers in `[min, max]` ms; silence lasts 5 s.
fn sim_config(latency_min_ms: u64, latency_max_ms: u64) -> SimConfig {
    SimConfig {
        latency_min_ms,
        latency_max_ms,
        slow_ms: 60,
        hang_ms: 5_000,
        ..SimConfig::default()
    }
}

/// The adapter configuration for a simulator at `addr` with `sim`'s credentials.
fn adapter_config(sim: &SimConfig, addr: SocketAddr) -> LatcomConfig {
    LatcomConfig {
        base_url: format!("http://{addr}"),
        username: sim.username.clone(),
        password: sim.password.clone().into(),
        dist_api: sim.dist_api.clone().into(),
        user_uid: sim.user_uid.clone(),
        connect_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(5),
        token_lifetime: Duration::from_secs(600),
        max_inflight: 64,
        rate_per_s: 0,
        slow_fail: Duration::from_secs(7),
        wallet_probe_interval: Duration::from_secs(30),
    }
}

/// Spawns a simulator; returns it and an adapter configuration pointing at it.
async fn start(config: SimConfig) -> (Arc<Simulator>, LatcomConfig) {
    let (sim, addr) = Simulator::spawn(config.clone(), "127.0.0.1:0")
        .await
        .expect("spawn the simulator");
    (sim, adapter_config(&config, addr))
}

fn adapter(config: LatcomConfig) -> Arc<Latcom> {
    Arc::new(Latcom::new(config).expect("build the adapter"))
}

fn request(id: &str, phone: &str) -> TopupRequest {
    product_request(id, phone, "XOOM_10_MXN", Money::major(10))
}

fn product_request(id: &str, phone: &str, product: &str, amount: Money) -> TopupRequest {
    TopupRequest {
        topup_id: id.to_string(),
        attempt_id: id.to_string(),
        phone: Msisdn::parse(phone).expect("a valid test phone"),
        product_id: product.to_string(),
        amount_sent: amount,
    }
}

/// Fires all `requests` at once and returns the attempts in request order.
async fn concurrently(latcom: &Arc<Latcom>, requests: Vec<TopupRequest>) -> Vec<(TopupRequest, Attempt)> {
    let mut set = JoinSet::new();
    for (i, req) in requests.into_iter().enumerate() {
        let latcom = Arc::clone(latcom);
        set.spawn(async move {
            let attempt = latcom.topup(&req).await;
            (i, req, attempt)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        out.push(done.expect("a top-up task panicked"));
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, req, attempt)| (req, attempt)).collect()
}

fn assert_success(attempt: &Attempt, what: &str) {
    assert!(
        matches!(attempt.outcome, Outcome::Success { .. }),
        "{what}: expected Success, got {:?}",
        attempt.outcome
    );
}

/// Asserts the simulator received exactly `calls` top-ups for `id` and recharged the phone `deliveries` times.
fn assert_journal(sim: &Simulator, id: &str, calls: u32, deliveries: u32) {
    let entry = sim
        .journal_entry(id)
        .unwrap_or_else(|| panic!("{id}: nothing in the simulator journal"));
    assert_eq!(
        (entry.calls, entry.deliveries),
        (calls, deliveries),
        "{id}: (calls, deliveries) in the simulator journal"
    );
}

/// Asserts nothing about the bearer token (nor any JWT) is in an exchange record.
fn assert_no_token(log: &ExchangeLog) {
    for text in [log.request.as_deref(), log.response.as_deref()].into_iter().flatten() {
        assert!(!text.contains("Bearer"), "bearer scheme in an exchange record: {text}");
        assert!(!text.contains("eyJ"), "a JWT in an exchange record: {text}");
        assert!(!text.to_ascii_lowercase().contains("authorization"), "{text}");
    }
}

/// What a [`Served`] simulator saw on the wire, beyond the simulator's own counts.
#[derive(Default)]
struct Traffic {
    /// HTTP 401 answers sent (any path).
    unauthorized: AtomicU64,
    /// Top-up requests being handled right now, and the most ever at once.
    topups_inflight: AtomicU64,
    topups_max_inflight: AtomicU64,
}

/// Decrements the in-flight gauge even if the request future is dropped.
struct InflightGuard(Arc<Traffic>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.topups_inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A simulator served by the test itself: its router behind a counting
/// middleware, stoppable to turn its port into a refused connection.
struct Served {
    sim: Arc<Simulator>,
    config: LatcomConfig,
    traffic: Arc<Traffic>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(config: SimConfig) -> Served {
        let sim = Simulator::new(config.clone());
        let traffic = Arc::new(Traffic::default());
        let seen = Arc::clone(&traffic);
        let app = sim.router().layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = Arc::clone(&seen);
                async move {
                    let guard = (req.uri().path() == TOPUP_PATH).then(|| {
                        let now = seen.topups_inflight.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.topups_max_inflight.fetch_max(now, Ordering::SeqCst);
                        InflightGuard(Arc::clone(&seen))
                    });
                    let response = next.run(req).await;
                    drop(guard);
                    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                        seen.unauthorized.fetch_add(1, Ordering::SeqCst);
                    }
                    response
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve the simulator");
        });
        Served {
            sim,
            config: adapter_config(&config, addr),
            traffic,
            stop: Some(stop),
            task,
        }
    }

    fn unauthorized(&self) -> u64 {
        self.traffic.unauthorized.load(Ordering::SeqCst)
    }

    /// Stops serving and closes the listening socket: the port now refuses connections.
    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the simulator server stops within 5 s")
            .expect("the simulator server task");
    }
}

/// A local port with nothing listening on it.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("bound address").port()
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_shared_by_500_concurrent_calls() {
    let (sim, mut config) = start(sim_config(20, 80)).await;
    config.max_inflight = 500;
    let latcom = adapter(config);

    let requests = (0..500).map(|i| request(&format!("shared-{i}"), OK_PHONE)).collect();
    let results = concurrently(&latcom, requests).await;

    let mut trans_ids = std::collections::HashSet::new();
    for (req, attempt) in &results {
        assert_success(attempt, &req.topup_id);
        let Outcome::Success { trans_id, .. } = &attempt.outcome else {
            unreachable!()
        };
        let entry = sim.journal_entry(&req.topup_id).unwrap();
        assert_eq!(trans_id.as_deref(), Some(entry.trans_id.as_str()), "{}", req.topup_id);
        assert!(
            trans_ids.insert(entry.trans_id.clone()),
            "trans_id reused: {}",
            entry.trans_id
        );
        assert_journal(&sim, &req.topup_id, 1, 1);
    }
    assert_eq!(sim.journal().len(), 500, "exactly the 500 ids reached the simulator");
    assert_eq!(sim.logins(), 1, "the simulator saw one login for 500 concurrent calls");
    assert_eq!(
        latcom.logins(),
        1,
        "the adapter logged in once for 500 concurrent calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_refreshed_before_its_exp_claim() {
    let served = Served::start(SimConfig {
        token_lifetime_s: 2,
        token_has_exp: true,
        ..sim_config(1, 5)
    })
    .await;
    // The configured lifetime is long: only the JWT's `exp` can make the adapter refresh.
    let latcom = adapter(served.config.clone());

    // 20 rounds of 3 concurrent calls, 250 ms apart: ~5 s, well past two token lifetimes.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0;
    for _ in 0..20 {
        tick.tick().await;
        let requests = (0..3)
            .map(|_| {
                n += 1;
                request(&format!("refresh-{n}"), OK_PHONE)
            })
            .collect();
        for (req, attempt) in concurrently(&latcom, requests).await {
            assert_success(&attempt, &req.topup_id);
            assert_journal(&served.sim, &req.topup_id, 1, 1);
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(4_700));

    let logins = latcom.logins();
    assert_eq!(served.sim.logins(), logins);
    assert!(
        logins >= 3,
        "~5 s of calls on 2 s tokens need at least 3 tokens; the adapter logged in {logins} times"
    );
    assert!(logins <= 8, "login storm: {logins} logins for 60 calls over ~5 s");
    assert_eq!(
        served.unauthorized(),
        0,
        "the token must be replaced before its exp, never discovered expired through a 401"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_without_exp_claim_is_replaced_once_on_401() {
    let served = Served::start(SimConfig {
        token_lifetime_s: 1,
        token_has_exp: false,
        ..sim_config(1, 5)
    })
    .await;
    // The adapter believes tokens last 600 s; the simulator expires them after 1 s.
    let latcom = adapter(served.config.clone());

    let first = latcom.topup(&request("noexp-1", OK_PHONE)).await;
    assert_success(&first, "noexp-1");
    assert_eq!(latcom.logins(), 1);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = latcom.topup(&request("noexp-2", OK_PHONE)).await;
    assert_success(&second, "noexp-2 after the token expired server-side");
    assert_eq!(served.unauthorized(), 1, "the expired token was refused once");
    assert_eq!(latcom.logins(), 2, "one re-login after the 401");
    assert_eq!(served.sim.logins(), 2);
    // The 401 was a refusal, not a processed top-up: one call, one delivery.
    assert_journal(&served.sim, "noexp-2", 1, 1);
    assert_eq!(second.exchange.http_status, Some(200));
    assert_eq!(
        second.exchange.trans_id.as_deref(),
        Some(served.sim.journal_entry("noexp-2").unwrap().trans_id.as_str())
    );

    // Again, with 20 calls racing on the expired token: those that sent it are
    // refused once each (how many did depends on timing), and all of them share
    // a single new login.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let requests = (0..20)
        .map(|i| request(&format!("noexp-burst-{i}"), OK_PHONE))
        .collect();
    for (req, attempt) in concurrently(&latcom, requests).await {
        assert_success(&attempt, &req.topup_id);
        assert_journal(&served.sim, &req.topup_id, 1, 1);
    }
    assert_eq!(
        latcom.logins(),
        3,
        "concurrent 401s on one expired token must lead to one re-login"
    );
    assert_eq!(served.sim.logins(), 3);
    let refused = served.unauthorized() - 1;
    assert!(
        (1..=20).contains(&refused),
        "{refused} refusals for 20 calls: each call may be refused at most once"
    );
}

// ---------------------------------------------------------------------------
// IP allow-list
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ip_block_at_start_pauses_until_lifted() {
    let (sim, config) = start(SimConfig {
        ip_blocked: true,
        ..sim_config(1, 5)
    })
    .await;
    let latcom = adapter(config);

    assert_eq!(latcom.ready().await, Err("upstream_ip_not_authorized".to_string()));
    let health = latcom.health();
    assert!(!health.ok, "{health:?}");
    assert_eq!(health.state, "upstream_ip_not_authorized");

    let blocked = latcom.topup(&request("ip-start-1", OK_PHONE)).await;
    assert!(
        matches!(blocked.outcome, Outcome::Blocked { .. }),
        "{:?}",
        blocked.outcome
    );
    assert!(sim.journal().is_empty(), "nothing may reach the top-up endpoint");
    assert!(!latcom.health().ok);
    assert_eq!(latcom.logins(), 0);

    sim.update(|c| c.ip_blocked = false);
    assert_eq!(latcom.ready().await, Ok(()));
    let health = latcom.health();
    assert!(health.ok, "{health:?}");
    assert_eq!(health.state, "ok");
    let ok = latcom.topup(&request("ip-start-2", OK_PHONE)).await;
    assert_success(&ok, "after the block lifted");
    assert_journal(&sim, "ip-start-2", 1, 1);
    assert!(sim.journal_entry("ip-start-1").is_none());
}

#[tokio::test]
async fn ip_block_after_login_is_blocked_and_pauses() {
    let (sim, config) = start(sim_config(1, 5)).await;
    let latcom = adapter(config);
    assert_eq!(latcom.ready().await, Ok(()));
    assert_success(&latcom.topup(&request("ip-mid-1", OK_PHONE)).await, "before the block");
    assert_eq!(latcom.logins(), 1);

    sim.update(|c| c.ip_blocked = true);
    let blocked = latcom.topup(&request("ip-mid-2", OK_PHONE)).await;
    assert!(
        matches!(blocked.outcome, Outcome::Blocked { .. }),
        "{:?}",
        blocked.outcome
    );
    assert!(
        sim.journal_entry("ip-mid-2").is_none(),
        "nothing delivered while blocked"
    );
    let health = latcom.health();
    assert!(!health.ok, "{health:?}");
    assert_eq!(health.state, "upstream_ip_not_authorized");
    for _ in 0..2 {
        assert_eq!(
            latcom.ready().await,
            Err("upstream_ip_not_authorized".to_string()),
            "readiness must fail while the IP is blocked, even with a token obtained earlier"
        );
    }

    sim.update(|c| c.ip_blocked = false);
    assert_eq!(latcom.ready().await, Ok(()));
    assert!(latcom.health().ok);
    assert_success(
        &latcom.topup(&request("ip-mid-3", OK_PHONE)).await,
        "after the block lifted",
    );
    assert_journal(&sim, "ip-mid-3", 1, 1);
}

// ---------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------

#[tokio::test]
async fn success_records_both_upstream_ids() {
    let (sim, config) = start(sim_config(1, 5)).await;
    let latcom = adapter(config);
    let attempt = latcom.topup(&request("cls-ok", OK_PHONE)).await;

    let entry = sim.journal_entry("cls-ok").unwrap();
    assert_eq!(
        attempt.outcome,
        Outcome::Success {
            trans_id: Some(entry.trans_id.clone()),
            ven_transid: Some(entry.ven_transid.clone()),
        }
    );
    assert_journal(&sim, "cls-ok", 1, 1);
    let log = &attempt.exchange;
    assert_eq!(log.http_status, Some(200));
    let trans_id = log.trans_id.as_deref().unwrap();
    assert!(trans_id.starts_with("LT"), "{trans_id}");
    assert_eq!(trans_id, entry.trans_id);
    assert_eq!(log.ven_transid.as_deref(), Some(entry.ven_transid.as_str()));
    assert!(!entry.ven_transid.is_empty());
    let sent = log.request.as_deref().unwrap();
    assert!(sent.contains(r#""dist_transid":"cls-ok""#), "{sent}");
    assert!(sent.contains(r#""targetMSISDN":"5512345000""#), "{sent}");
    assert!(sent.contains(r#""productId":"XOOM_10_MXN""#), "{sent}");
    assert!(sent.contains(r#""amount":10"#), "{sent}");
    assert!(
        log.response.as_deref().unwrap().contains(trans_id),
        "the raw body is kept"
    );
    assert!(log.started_at_ms > 0 && log.started_at_ms <= log.ended_at_ms);
    assert_no_token(log);
}

#[tokio::test]
async fn definite_failures_carry_the_vendor_code_and_message() {
    let (sim, config) = start(sim_config(1, 5)).await;
    let latcom = adapter(config);
    for (phone, message, code) in [
        ("5512345991", "Bolton is not allowed for tariff plan", "-120010"),
        ("5512345992", "Action not allowed", "-120020"),
        ("5512345981", "Product not Found", "-120054"),
        ("5512345982", "product_not_found", "-120055"),
    ] {
        let id = format!("fail-{phone}");
        let attempt = latcom.topup(&request(&id, phone)).await;
        assert_eq!(
            attempt.outcome,
            Outcome::Failed {
                code: code.into(),
                message: message.into()
            },
            "{phone}"
        );
        assert_journal(&sim, &id, 1, 0);
        assert_eq!(attempt.exchange.http_status, Some(200));
        assert_eq!(
            attempt.exchange.trans_id.as_deref(),
            Some(sim.journal_entry(&id).unwrap().trans_id.as_str()),
            "Latcom's id is kept even for a failure"
        );
    }

    // Ids are not zero-padded.
    let attempt = latcom
        .topup(&product_request(
            "fail-padded",
            OK_PHONE,
            "XOOM_010_MXN",
            Money::major(10),
        ))
        .await;
    assert_eq!(
        attempt.outcome,
        Outcome::Failed {
            code: "-120054".into(),
            message: "Product not Found".into()
        }
    );
    assert_journal(&sim, "fail-padded", 1, 0);
}

#[tokio::test]
async fn open_range_sends_exact_centavos() {
    let (sim, config) = start(sim_config(1, 5)).await;
    let latcom = adapter(config);
    let attempt = latcom
        .topup(&product_request(
            "open-range",
            OK_PHONE,
            "TFE_MXN_20_TO_2000",
            Money(2198),
        ))
        .await;
    assert_success(&attempt, "open range 21.98");
    let sent = attempt.exchange.request.as_deref().unwrap();
    assert!(sent.contains(r#""amount":21.98"#), "{sent}");
    let entry = sim.journal_entry("open-range").unwrap();
    assert_eq!(entry.amount, "21.98");
    assert_eq!(entry.delivered_amount, "25.50", "21.98 + 16 % VAT");
    assert_journal(&sim, "open-range", 1, 1);
}

#[tokio::test]
async fn silence_after_sending_is_unknown() {
    let (sim, mut config) = start(sim_config(1, 5)).await;
    config.total_timeout = Duration::from_millis(500);
    let latcom = adapter(config);
    assert_eq!(latcom.ready().await, Ok(()));

    for (phone, delivered) in [("5512345993", 1), ("5512345994", 0)] {
        let id = format!("silent-{phone}");
        let started = Instant::now();
        let attempt = latcom.topup(&request(&id, phone)).await;
        let elapsed = started.elapsed();
        match &attempt.outcome {
            Outcome::Unknown { reason, trans_id } => {
                assert!(reason.contains("timeout"), "{phone}: {reason}");
                assert_eq!(trans_id, &None);
            }
            other => panic!("{phone}: a timeout after sending must be Unknown, got {other:?}"),
        }
        assert!(
            elapsed >= Duration::from_millis(450),
            "{phone}: gave up after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(4),
            "{phone}: the adapter's 500 ms timeout was not applied ({elapsed:?})"
        );
        // The truth: 993 recharged the phone, 994 did not; the adapter cannot tell.
        assert_journal(&sim, &id, 1, delivered);
        assert!(attempt.exchange.request.as_deref().unwrap().contains(&id));
        assert_eq!(attempt.exchange.http_status, None);
    }
}

#[tokio::test]
async fn broken_answers_are_unknown() {
    let (sim, config) = start(sim_config(1, 5)).await;
    let latcom = adapter(config);
    for (phone, http_status, delivered) in [
        ("5512345996", Some(500), 1),
        ("5512345997", None, 1),
        ("5512345998", Some(200), 1),
        ("5512345999", Some(502), 0),
    ] {
        let id = format!("broken-{phone}");
        let attempt = latcom.topup(&request(&id, phone)).await;
        assert!(
            matches!(attempt.outcome, Outcome::Unknown { trans_id: None, .. }),
            "{phone}: expected Unknown, got {:?}",
            attempt.outcome
        );
        assert_journal(&sim, &id, 1, delivered);
        assert_eq!(attempt.exchange.http_status, http_status, "{phone}");
        if http_status.is_some() {
            assert!(attempt.exchange.response.is_some(), "{phone}: the raw answer is kept");
        }
        assert_no_token(&attempt.exchange);
    }
}

#[tokio::test]
async fn refused_connection_is_not_sent() {
    let config = LatcomConfig {
        base_url: format!("http://127.0.0.1:{}", dead_port()),
        ..adapter_config(&SimConfig::default(), "127.0.0.1:1".parse().unwrap())
    };
    let latcom = adapter(config);
    let attempt = latcom.topup(&request("refused-1", OK_PHONE)).await;
    assert!(
        matches!(attempt.outcome, Outcome::NotSent { .. }),
        "nothing could connect, so nothing was sent: expected NotSent, got {:?}",
        attempt.outcome
    );
}

#[tokio::test]
async fn refused_connection_after_login_is_not_sent() {
    let mut served = Served::start(sim_config(1, 5)).await;
    let latcom = adapter(served.config.clone());
    assert_success(&latcom.topup(&request("gone-1", OK_PHONE)).await, "while serving");

    served.shut_down().await;
    // Let the client's pool see its idle connection closed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempt = latcom.topup(&request("gone-2", OK_PHONE)).await;
    assert!(
        matches!(attempt.outcome, Outcome::NotSent { .. }),
        "expected NotSent, got {:?}",
        attempt.outcome
    );
    assert!(served.sim.journal_entry("gone-2").is_none());
    assert_eq!(latcom.logins(), 1, "the cached token was used, no login attempted");
}

// ---------------------------------------------------------------------------
// Status queries
// ---------------------------------------------------------------------------

#[tokio::test]
async fn status_queries_decide_only_on_a_recognised_answer() {
    let (sim, mut config) = start(sim_config(1, 5)).await;
    config.total_timeout = Duration::from_millis(500);
    let latcom = adapter(config);

    // Silent and delivered: no transId, found by our id.
    let attempt = latcom.topup(&request("st-993", "5512345993")).await;
    assert!(matches!(attempt.outcome, Outcome::Unknown { trans_id: None, .. }));
    let entry = sim.journal_entry("st-993").unwrap();
    let check = latcom.status("st-993", None).await;
    assert_eq!(
        check.answer,
        StatusAnswer::Delivered {
            trans_id: Some(entry.trans_id.clone()),
            ven_transid: Some(entry.ven_transid.clone()),
        }
    );
    assert_eq!(check.exchange.http_status, Some(200));
    assert_eq!(check.exchange.request.as_deref(), Some("GET /api/transaction/st-993"));
    assert_no_token(&check.exchange);

    // Silent and not delivered.
    let attempt = latcom.topup(&request("st-994", "5512345994")).await;
    assert!(matches!(attempt.outcome, Outcome::Unknown { trans_id: None, .. }));
    let check = latcom.status("st-994", None).await;
    assert!(
        matches!(check.answer, StatusAnswer::NotDelivered { .. }),
        "{:?}",
        check.answer
    );

    // A success, asked by Latcom's id.
    let ok = latcom.topup(&request("st-ok", OK_PHONE)).await;
    let Outcome::Success {
        trans_id: Some(trans_id),
        ven_transid,
    } = ok.outcome.clone()
    else {
        panic!("{:?}", ok.outcome)
    };
    let check = latcom.status("st-ok", Some(&trans_id)).await;
    assert_eq!(
        check.answer,
        StatusAnswer::Delivered {
            trans_id: Some(trans_id.clone()),
            ven_transid: ven_transid.clone(),
        }
    );
    assert_eq!(
        check.exchange.request.as_deref(),
        Some(format!("GET /api/transaction/{trans_id}").as_str())
    );

    // Latcom said Fail but the carrier recharged: the status query tells the truth.
    let said_fail = latcom.topup(&request("st-989", "5512345989")).await;
    assert!(
        matches!(said_fail.outcome, Outcome::Failed { .. }),
        "{:?}",
        said_fail.outcome
    );
    let fail_id = said_fail.exchange.trans_id.clone().unwrap();
    assert!(
        matches!(
            latcom.status("st-989", Some(&fail_id)).await.answer,
            StatusAnswer::Delivered { .. }
        ),
        "status by transId after a Fail that was delivered"
    );

    // No lookup by our id: without a transId nothing is decided.
    sim.update(|c| c.status_by_dist_transid = false);
    let check = latcom.status("st-993", None).await;
    assert!(
        matches!(check.answer, StatusAnswer::StillUnknown { .. }),
        "{:?}",
        check.answer
    );
    assert!(matches!(
        latcom.status("st-ok", Some(&trans_id)).await.answer,
        StatusAnswer::Delivered { .. }
    ));

    sim.update(|c| c.status_mode = StatusMode::Off);
    for (id, trans) in [("st-ok", Some(trans_id.as_str())), ("st-993", None)] {
        let check = latcom.status(id, trans).await;
        assert!(
            matches!(check.answer, StatusAnswer::StillUnknown { .. }),
            "status endpoint off, {id}: {:?}",
            check.answer
        );
    }

    sim.update(|c| {
        c.status_mode = StatusMode::Unrecognised;
        c.status_by_dist_transid = true;
    });
    for (id, trans) in [("st-ok", Some(trans_id.as_str())), ("st-993", None)] {
        let check = latcom.status(id, trans).await;
        assert!(
            matches!(check.answer, StatusAnswer::StillUnknown { .. }),
            "unrecognised answer, {id}: {:?}",
            check.answer
        );
        assert_eq!(check.exchange.http_status, Some(200));
    }
}

// ---------------------------------------------------------------------------
// Caps
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_cap_spaces_calls() {
    let (sim, mut config) = start(sim_config(0, 1)).await;
    config.rate_per_s = 20;
    let latcom = adapter(config);

    let started = Instant::now();
    let requests = (0..30).map(|i| request(&format!("rate-{i}"), OK_PHONE)).collect();
    for (req, attempt) in concurrently(&latcom, requests).await {
        assert_success(&attempt, &req.topup_id);
        assert_journal(&sim, &req.topup_id, 1, 1);
    }
    let elapsed = started.elapsed();
    // 30 calls at 20/s: the last may start no earlier than 29 × 50 ms = 1.45 s.
    assert!(
        elapsed >= Duration::from_millis(1_300),
        "30 calls at 20/s finished in {elapsed:?}: they were not spaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_cap_limits_concurrent_calls() {
    let served = Served::start(sim_config(200, 200)).await;
    let mut config = served.config.clone();
    config.max_inflight = 2;
    let latcom = adapter(config);

    let started = Instant::now();
    let requests = (0..6).map(|i| request(&format!("inflight-{i}"), OK_PHONE)).collect();
    for (req, attempt) in concurrently(&latcom, requests).await {
        assert_success(&attempt, &req.topup_id);
        assert_journal(&served.sim, &req.topup_id, 1, 1);
    }
    let elapsed = started.elapsed();
    // 6 calls of 200 ms, 2 at a time: three waves.
    assert!(
        elapsed >= Duration::from_millis(550),
        "6 × 200 ms calls, 2 at a time, took {elapsed:?}"
    );
    let most = served.traffic.topups_max_inflight.load(Ordering::SeqCst);
    assert!(most <= 2, "the simulator saw {most} top-ups in flight at once");
    assert_eq!(most, 2, "two calls should run side by side");
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn secrets_stay_out_of_debug_and_exchange_records() {
    let sim_config = SimConfig {
        password: "canary-pass-123".into(),
        dist_api: "canary-dist-456".into(),
        ..sim_config(1, 5)
    };
    let (sim, config) = start(sim_config.clone()).await;
    let dump = format!("{config:?}");
    assert!(!dump.contains("canary-pass-123"), "{dump}");
    assert!(!dump.contains("canary-dist-456"), "{dump}");
    let dump = format!("{config:#?}");
    assert!(
        !dump.contains("canary-pass-123") && !dump.contains("canary-dist-456"),
        "{dump}"
    );

    let latcom = adapter(config.clone());
    let mut logs = Vec::new();
    let ok = latcom.topup(&request("secret-ok", OK_PHONE)).await;
    assert_success(&ok, "secret-ok");
    let trans_id = ok.exchange.trans_id.clone().unwrap();
    logs.push(ok.exchange);
    logs.push(latcom.topup(&request("secret-fail", "5512345991")).await.exchange);
    logs.push(latcom.topup(&request("secret-500", "5512345996")).await.exchange);
    logs.push(latcom.status("secret-ok", Some(&trans_id)).await.exchange);
    logs.push(latcom.status("secret-ok", None).await.exchange);
    assert_eq!(sim.logins(), 1);
    for log in &logs {
        assert_no_token(log);
        for text in [log.request.as_deref(), log.response.as_deref()].into_iter().flatten() {
            assert!(!text.contains("canary-"), "a credential in an exchange record: {text}");
        }
    }

    // A rejected login names no credential either.
    let wrong = LatcomConfig {
        password: "canary-wrong-789".to_string().into(),
        ..config
    };
    let latcom = adapter(wrong);
    let refused = latcom.ready().await.unwrap_err();
    assert_eq!(refused, "upstream_login_rejected");
    let health = latcom.health();
    assert!(!health.ok);
    let attempt = latcom.topup(&request("secret-wrong", OK_PHONE)).await;
    assert!(
        matches!(attempt.outcome, Outcome::Blocked { .. }),
        "{:?}",
        attempt.outcome
    );
    let texts = [
        format!("{health:?}"),
        format!("{:?}", attempt.outcome),
        format!("{:?}", attempt.exchange),
    ];
    for text in texts {
        assert!(!text.contains("canary-"), "a credential leaked: {text}");
    }
    assert!(sim.journal_entry("secret-wrong").is_none());
}

/// Latcom is JSON over HTTPS: the client must speak TLS. A listener that
/// closes every connection makes the handshake fail, which is a connection
/// error (nothing sent); a client built without TLS refused the `https`
/// scheme itself, so no real Latcom call could ever have been made.
#[tokio::test]
async fn https_base_urls_are_spoken_over_tls() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            drop(stream);
        }
    });
    let config = LatcomConfig {
        base_url: format!("https://127.0.0.1:{port}"),
        ..adapter_config(&SimConfig::default(), "127.0.0.1:1".parse().expect("addr"))
    };
    let latcom = adapter(config);
    let state = latcom.ready().await.expect_err("nothing answers TLS there");
    assert_eq!(state, "upstream_unreachable");
    let detail = latcom.health().detail.to_lowercase();
    assert!(!detail.contains("scheme"), "the client refused https itself: {detail}");
    let attempt = latcom.topup(&request("tls-1", OK_PHONE)).await;
    assert!(
        matches!(attempt.outcome, Outcome::NotSent { .. }),
        "{:?}",
        attempt.outcome
    );
}
