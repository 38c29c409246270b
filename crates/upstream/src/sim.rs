//! The Latcom simulator: an HTTP server that speaks Latcom's protocol (see
//! [`crate::latcom::wire`]) so the real adapter can be exercised end to end,
//! including every variant the provider's behaviour leaves open.
//!
//! Endpoints: `POST /api/dislogin`, `POST /api/tn/fast`,
//! `GET /api/transaction/{id}`, and for tests and operators
//! `GET /__sim/journal`, `GET /__sim/config`, `POST /__sim/config` (a partial
//! JSON object merged into the [`SimConfig`]).
//!
//! Top-ups are checked in this order: bearer token (HTTP 401), IP allow-list
//! (HTTP 400 "IP Address not authorized"), body shape and constants (HTTP 400
//! "Validation Error"), repeated `dist_transid` ([`DuplicatePolicy`]), product
//! rules and the 10-digit `targetMSISDN` (HTTP 200 `Fail`), then the script
//! chosen by the phone's last three digits:
//!
//! | last 3 | delivered | answer |
//! |---|---|---|
//! | `991` | no | `Fail` "Bolton is not allowed for tariff plan" (`-120010`) |
//! | `992` | no | `Fail` "Action not allowed" (`-120020`) |
//! | `981` | no | `Fail` "Product not Found" (`-120054`) |
//! | `982` | no | `Fail` "product_not_found" (`-120055`) |
//! | `989` | **yes** | `Fail` "Action not allowed": Latcom says Fail, the carrier recharged |
//! | `983` | **yes** | `Fail` "Action not allowed" after `slow_ms`: the old dispute's slow Fail the carrier billed |
//! | `993` | **yes** | no answer: the request is held `hang_ms`, then dropped without a response |
//! | `994` | no | no answer, as `993` |
//! | `995` | yes | `Success` after `slow_ms` |
//! | `996` | yes | HTTP 500, plain text body |
//! | `997` | yes | HTTP 200 headers, then the connection is reset mid-body |
//! | `998` | yes | HTTP 200 with an unparseable body (`<html>Service Unavailable</html>`) |
//! | `999` | no | HTTP 502 |
//! | other | yes | `Success` |
//!
//! With `wallet_empty` set (our prepaid wallet at Latcom ran dry), every
//! top-up that passes the product and number checks answers `Fail` "balance
//! not sufficient for Pouch(Wallet)" (`-120008`) and nothing is delivered.
//!
//! Every answer except `983`/`993`/`994`/`995` comes after a latency uniform in
//! `[latency_min_ms, latency_max_ms]`. A delivery is journaled at the moment
//! the phone is recharged, before any wait, so a caller that gives up still
//! leaves the truth in the journal.
//!
//! Product rules: `XOOM_{n}_MXN` needs `n` among the XOOM denominations written
//! without zero padding and `amount == n` (else `Fail` "Product not Found"
//! `-120054`); when XOOM is disabled any `XOOM_…` product fails with
//! "product_not_found". `TFE_MXN_20_TO_2000` needs 20 ≤ amount ≤ 2000 (else
//! "Amount out of range" `-120052`) and, when `decimal_amounts` is off, whole
//! pesos (else "Invalid amount" `-120051`); the phone receives amount × 1.16.
//! Unknown products fail with "Product not Found"; a `targetMSISDN` that is not
//! 10 digits with "Invalid MSISDN" (`-120030`). Codes other than `-120054` are
//! the simulator's own inventions.
//!
//! The status query answers per transaction when asked by `transId`, and per
//! `dist_transid` (delivered at least once → `Success`) when
//! `status_by_dist_transid` allows that lookup; [`StatusMode`] can also switch
//! it off (404) or make it answer a shape nobody understands.
//!
//! Amounts are read exactly with [`Money::parse_decimal`] and echoed as the
//! JSON text that was sent; no float ever touches them. All waits are tokio
//! sleeps and the state lock is never held across an await, so thousands of
//! slow requests can be in flight at once.

use crate::latcom::wire;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Offset, SecondsFormat, Utc};
use recarga_domain::Money;
use recarga_domain::catalogue::{
    OPEN_RANGE_MAX, OPEN_RANGE_MIN, OPEN_RANGE_PRODUCT, OPEN_RANGE_VAT_BPS, XOOM_DENOMINATIONS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How `GET /api/transaction/{id}` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusMode {
    /// Answers `{"transId","distTransid","status","venTransid","vendorResponseMsg"}`.
    Normal,
    /// HTTP 404 for everything, as if the endpoint did not exist.
    Off,
    /// HTTP 200 with a shape the adapter must not understand.
    Unrecognised,
}

/// What Latcom does with a `dist_transid` it has already seen (not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// `Fail` "Duplicate transaction", nothing delivered.
    Reject,
    /// The first answer again (after the first call's own delay), nothing delivered.
    Replay,
    /// Processed as a new top-up: the phone is recharged again.
    Redeliver,
}

/// The simulator's knobs; every field can be changed at run time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Accepted login credentials.
    pub username: String,
    pub password: String,
    pub dist_api: String,
    pub user_uid: String,
    /// Answer latency, uniform in `[latency_min_ms, latency_max_ms]`.
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// The delay of script `995`.
    pub slow_ms: u64,
    /// How long the "no answer" scripts hold the request before dropping it.
    pub hang_ms: u64,
    pub token_lifetime_s: u64,
    /// Whether the JWT payload carries `exp` (the token expires server-side either way).
    pub token_has_exp: bool,
    /// Refuse every call as coming from an IP not on the allow-list.
    pub ip_blocked: bool,
    /// Our prepaid wallet at Latcom is empty: every top-up fails `-120008`.
    pub wallet_empty: bool,
    /// Whether the account may sell the XOOM denominations.
    pub xoom_enabled: bool,
    pub status_mode: StatusMode,
    /// Whether the status query also finds a transaction by our `dist_transid`.
    pub status_by_dist_transid: bool,
    pub duplicate_policy: DuplicatePolicy,
    /// Whether the open range accepts amounts with centavos (not confirmed by
    /// Latcom); when false only whole pesos are accepted.
    pub decimal_amounts: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            username: "sim-user".into(),
            password: "sim-pass".into(),
            dist_api: "sim-dist-api".into(),
            user_uid: "sim-uid".into(),
            latency_min_ms: 2_000,
            latency_max_ms: 7_000,
            slow_ms: 20_000,
            hang_ms: 120_000,
            token_lifetime_s: 600,
            token_has_exp: true,
            ip_blocked: false,
            wallet_empty: false,
            xoom_enabled: true,
            status_mode: StatusMode::Normal,
            status_by_dist_transid: true,
            duplicate_policy: DuplicatePolicy::Replay,
            decimal_amounts: true,
        }
    }
}

/// The ground truth about one `dist_transid`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// Top-up calls received for this id (past the HTTP 4xx checks).
    pub calls: u32,
    /// Times the phone was actually recharged.
    pub deliveries: u32,
    /// Latcom's id of the first call, or of the latest delivering call.
    pub trans_id: String,
    /// The carrier's id of the latest delivery.
    pub ven_transid: String,
    pub phone: String,
    pub product_id: String,
    /// The `amount` as sent (the JSON number's text).
    pub amount: String,
    /// What the phone received at the latest delivery (`amount` × 1.16 on the
    /// open range), empty when never delivered.
    pub delivered_amount: String,
}

/// One Latcom transaction, as the status query sees it.
#[derive(Debug, Clone)]
struct TxRecord {
    dist_transid: String,
    delivered: bool,
    ven_transid: String,
    vendor_msg: String,
}

/// An answer to play, kept so a replayed duplicate gets the very same bytes.
#[derive(Debug, Clone)]
enum Reply {
    /// A JSON body with this status.
    Json(StatusCode, String),
    /// A non-JSON body with this status and content type.
    Text(StatusCode, &'static str, String),
    /// HTTP 200 headers and this partial body, then a connection reset.
    Reset(String),
    /// No response at all: the connection is dropped.
    NoAnswer,
}

#[derive(Debug, Clone)]
struct FirstAnswer {
    reply: Reply,
    ready_at: Instant,
}

#[derive(Default)]
struct SimState {
    tokens: HashMap<String, Instant>,
    journal: HashMap<String, JournalEntry>,
    txs: HashMap<String, TxRecord>,
    first: HashMap<String, FirstAnswer>,
}

/// The Latcom simulator. Cheap to share: [`Simulator::new`] returns an `Arc`.
pub struct Simulator {
    config: Mutex<SimConfig>,
    state: Mutex<SimState>,
    logins: AtomicU64,
    trans_seq: AtomicU64,
    ven_seq: AtomicU64,
}

enum Script {
    Fail(&'static str, &'static str),
    FailDelivered,
    /// `Fail` after `slow_ms`, and delivered.
    SlowFailDelivered,
    NoAnswer {
        delivered: bool,
    },
    Slow,
    ServerError,
    Reset,
    Garbage,
    BadGateway,
    Ok,
}

impl Script {
    /// Whether the phone is recharged under this script.
    fn delivers(&self) -> bool {
        !matches!(
            self,
            Script::Fail(..) | Script::BadGateway | Script::NoAnswer { delivered: false }
        )
    }
}

fn script(last3: &str) -> Script {
    match last3 {
        "991" => Script::Fail("Bolton is not allowed for tariff plan", "-120010"),
        "992" => Script::Fail("Action not allowed", "-120020"),
        "981" => Script::Fail(PRODUCT_NOT_FOUND.0, PRODUCT_NOT_FOUND.1),
        "982" => Script::Fail(PRODUCT_NOT_ENABLED.0, PRODUCT_NOT_ENABLED.1),
        "989" => Script::FailDelivered,
        "983" => Script::SlowFailDelivered,
        "993" => Script::NoAnswer { delivered: true },
        "994" => Script::NoAnswer { delivered: false },
        "995" => Script::Slow,
        "996" => Script::ServerError,
        "997" => Script::Reset,
        "998" => Script::Garbage,
        "999" => Script::BadGateway,
        _ => Script::Ok,
    }
}

const PRODUCT_NOT_FOUND: (&str, &str) = ("Product not Found", "-120054");
const PRODUCT_NOT_ENABLED: (&str, &str) = ("product_not_found", "-120055");
const INVALID_AMOUNT: (&str, &str) = ("Invalid amount", "-120051");
const AMOUNT_OUT_OF_RANGE: (&str, &str) = ("Amount out of range", "-120052");
const INVALID_MSISDN: (&str, &str) = ("Invalid MSISDN", "-120030");
const DUPLICATE: (&str, &str) = ("Duplicate transaction", "-120040");
const ACTION_NOT_ALLOWED: (&str, &str) = ("Action not allowed", "-120020");
const WALLET_EMPTY: (&str, &str) = ("balance not sufficient for Pouch(Wallet)", wire::WALLET_EMPTY_CODE);
const GARBAGE_BODY: &str = "<html>Service Unavailable</html>";
const BAD_GATEWAY_BODY: &str =
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>";

/// What the product rules make of a request: the delivered amount, or a failure.
type ProductCheck = Result<Money, (&'static str, &'static str)>;

impl Simulator {
    pub fn new(config: SimConfig) -> Arc<Simulator> {
        Arc::new(Simulator {
            config: Mutex::new(config),
            state: Mutex::new(SimState::default()),
            logins: AtomicU64::new(0),
            trans_seq: AtomicU64::new(rand::random_range(10_000_000..=49_999_999)),
            ven_seq: AtomicU64::new(rand::random_range(100_000_000..=499_999_999)),
        })
    }

    /// The HTTP routes, with this simulator as their state.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(wire::LOGIN_PATH, post(login))
            .route(wire::TOPUP_PATH, post(topup))
            .route(&format!("{}/{{id}}", wire::STATUS_PATH), get(status))
            .route("/__sim/journal", get(journal))
            .route("/__sim/config", get(get_config).post(set_config))
            .with_state(Arc::clone(self))
    }

    /// Binds `addr` (e.g. `"127.0.0.1:0"`), serves in a background tokio task,
    /// returns the bound address.
    pub async fn spawn(config: SimConfig, addr: &str) -> std::io::Result<(Arc<Simulator>, SocketAddr)> {
        let sim = Simulator::new(config);
        let listener = bind(addr).await?;
        let local = listener.local_addr()?;
        let app = sim.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "latcom simulator stopped");
            }
        });
        Ok((sim, local))
    }

    pub fn config(&self) -> SimConfig {
        self.cfg().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.cfg());
    }

    pub fn journal_entry(&self, dist_transid: &str) -> Option<JournalEntry> {
        self.state().journal.get(dist_transid).cloned()
    }

    pub fn journal(&self) -> HashMap<String, JournalEntry> {
        self.state().journal.clone()
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    fn cfg(&self) -> MutexGuard<'_, SimConfig> {
        // A poisoned lock only means a test thread panicked; keep serving.
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_trans_id(&self) -> String {
        format!("LT{:08}", self.trans_seq.fetch_add(1, Ordering::Relaxed) % 100_000_000)
    }

    fn next_ven_transid(&self) -> String {
        self.ven_seq.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Whether the request carries a live token; `Err` is the 401 to send.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
            });
        let Some(token) = token else {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Missing bearer token",
            ));
        };
        let mut state = self.state();
        match state.tokens.get(&token) {
            Some(expiry) if Instant::now() < *expiry => Ok(()),
            Some(_) => {
                state.tokens.remove(&token);
                Err(refusal(StatusCode::UNAUTHORIZED, "Unauthorized", "Token expired"))
            }
            None => Err(refusal(StatusCode::UNAUTHORIZED, "Unauthorized", "Invalid token")),
        }
    }

    fn issue_token(&self, config: &SimConfig) -> String {
        let lifetime = Duration::from_secs(config.token_lifetime_s);
        let header = wire::base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = if config.token_has_exp {
            let exp = Utc::now()
                .timestamp()
                .saturating_add(i64::try_from(config.token_lifetime_s).unwrap_or(i64::MAX));
            serde_json::json!({"sub": config.username, "exp": exp})
        } else {
            serde_json::json!({"sub": config.username})
        };
        let payload = wire::base64url_encode(claims.to_string().as_bytes());
        let signature = wire::base64url_encode(&rand::random::<[u8; 32]>());
        let token = format!("{header}.{payload}.{signature}");
        let now = Instant::now();
        let mut state = self.state();
        state.tokens.retain(|_, expiry| *expiry > now);
        state.tokens.insert(token.clone(), now + lifetime);
        token
    }

    fn latency(config: &SimConfig) -> Duration {
        let (lo, hi) = (config.latency_min_ms, config.latency_max_ms.max(config.latency_min_ms));
        Duration::from_millis(if hi > lo { rand::random_range(lo..=hi) } else { lo })
    }

    /// Everything a top-up call decides, synchronously: the reply and how long
    /// to wait before playing it. `Err` is an immediate HTTP error.
    fn plan_topup(&self, headers: &HeaderMap, body: &[u8]) -> Result<(Reply, Duration), Refusal> {
        self.authorize(headers)?;
        let config = self.config();
        if config.ip_blocked {
            return Err(ip_blocked());
        }
        let req: wire::TopupRequest = serde_json::from_slice(body).map_err(|e| validation(&e.to_string()))?;
        let amount = check_request(&req)?;
        let now = Instant::now();
        let mut state = self.state();

        let entry = state.journal.entry(req.dist_transid.clone()).or_default();
        let seen = entry.calls > 0;
        entry.calls = entry.calls.saturating_add(1);
        entry.phone = req.target_msisdn.clone();
        entry.product_id = req.product_id.clone();
        entry.amount = req.amount.get().to_string();

        if seen {
            match config.duplicate_policy {
                DuplicatePolicy::Reject => {
                    let delay = Self::latency(&config);
                    let trans_id = self.next_trans_id();
                    let body = topup_answer(&req, &trans_id, Err(DUPLICATE), delay);
                    state.txs.insert(trans_id, tx(&req, false, String::new(), DUPLICATE.0));
                    return Ok((Reply::Json(StatusCode::OK, body), delay));
                }
                DuplicatePolicy::Replay => {
                    if let Some(first) = state.first.get(&req.dist_transid) {
                        let delay = match first.reply {
                            Reply::NoAnswer => Duration::from_millis(config.hang_ms),
                            _ => first.ready_at.saturating_duration_since(now),
                        };
                        return Ok((first.reply.clone(), delay));
                    }
                }
                DuplicatePolicy::Redeliver => {}
            }
        }

        let check = check_product(&req, amount, &config)
            .and_then(|delivered| check_msisdn(&req.target_msisdn).map(|()| delivered));
        let last3 = req
            .target_msisdn
            .get(req.target_msisdn.len().saturating_sub(3)..)
            .unwrap_or("");
        let (kind, delivered) = match check {
            Err((msg, code)) => (Script::Fail(msg, code), None),
            Ok(_) if config.wallet_empty => (Script::Fail(WALLET_EMPTY.0, WALLET_EMPTY.1), None),
            Ok(amount) => {
                let kind = script(last3);
                let delivered = kind.delivers().then_some(amount);
                (kind, delivered)
            }
        };
        let delay = match kind {
            Script::NoAnswer { .. } => Duration::from_millis(config.hang_ms),
            Script::Slow | Script::SlowFailDelivered => Duration::from_millis(config.slow_ms),
            _ => Self::latency(&config),
        };
        let trans_id = self.next_trans_id();
        let ven_transid = delivered.map(|_| self.next_ven_transid()).unwrap_or_default();
        let success = || topup_answer(&req, &trans_id, Ok(&ven_transid), delay);
        let html = "text/html; charset=utf-8";
        let reply = match kind {
            Script::Fail(msg, code) => {
                Reply::Json(StatusCode::OK, topup_answer(&req, &trans_id, Err((msg, code)), delay))
            }
            Script::FailDelivered | Script::SlowFailDelivered => Reply::Json(
                StatusCode::OK,
                topup_answer(&req, &trans_id, Err(ACTION_NOT_ALLOWED), delay),
            ),
            Script::NoAnswer { .. } => Reply::NoAnswer,
            Script::Slow | Script::Ok => Reply::Json(StatusCode::OK, success()),
            Script::ServerError => Reply::Text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "Internal Server Error".into(),
            ),
            Script::Reset => {
                let full = success();
                Reply::Reset(full.get(..full.len() / 2).unwrap_or("{").to_string())
            }
            Script::Garbage => Reply::Text(StatusCode::OK, html, GARBAGE_BODY.into()),
            Script::BadGateway => Reply::Text(StatusCode::BAD_GATEWAY, html, BAD_GATEWAY_BODY.into()),
        };
        let vendor_msg = match kind {
            Script::Fail(msg, _) => msg,
            Script::FailDelivered | Script::SlowFailDelivered => ACTION_NOT_ALLOWED.0,
            _ if delivered.is_some() => "Success",
            _ => "Transaction failed",
        };

        let entry = state.journal.entry(req.dist_transid.clone()).or_default();
        if entry.trans_id.is_empty() || delivered.is_some() {
            entry.trans_id = trans_id.clone();
        }
        if let Some(amount) = delivered {
            entry.deliveries = entry.deliveries.saturating_add(1);
            entry.ven_transid = ven_transid.clone();
            entry.delivered_amount = amount.to_decimal_string();
        }
        state
            .txs
            .insert(trans_id, tx(&req, delivered.is_some(), ven_transid, vendor_msg));
        state.first.entry(req.dist_transid.clone()).or_insert(FirstAnswer {
            reply: reply.clone(),
            ready_at: now + delay,
        });
        Ok((reply, delay))
    }

    fn status_answer(&self, headers: &HeaderMap, id: &str) -> Response {
        let config = self.config();
        if config.status_mode == StatusMode::Off {
            return not_found().into_response();
        }
        if let Err(denied) = self.authorize(headers) {
            return denied.into_response();
        }
        if config.ip_blocked {
            return ip_blocked().into_response();
        }
        if config.status_mode == StatusMode::Unrecognised {
            return (
                StatusCode::OK,
                axum::Json(serde_json::json!({"result": {"code": 7, "text": "see portal"}})),
            )
                .into_response();
        }
        let state = self.state();
        let found = if let Some(tx) = state.txs.get(id) {
            Some((id.to_string(), tx.clone()))
        } else if config.status_by_dist_transid {
            state.journal.get(id).map(|entry| {
                let last = state.txs.get(&entry.trans_id);
                let record = TxRecord {
                    dist_transid: id.to_string(),
                    delivered: entry.deliveries > 0,
                    ven_transid: entry.ven_transid.clone(),
                    vendor_msg: match last {
                        Some(tx) if tx.delivered == (entry.deliveries > 0) => tx.vendor_msg.clone(),
                        _ if entry.deliveries > 0 => "Success".into(),
                        _ => "Transaction failed".into(),
                    },
                };
                (entry.trans_id.clone(), record)
            })
        } else {
            None
        };
        drop(state);
        let Some((trans_id, tx)) = found else {
            return not_found().into_response();
        };
        let mut body = serde_json::json!({
            "transId": trans_id,
            "distTransid": tx.dist_transid,
            "status": if tx.delivered { "Success" } else { "Fail" },
            "vendorResponseMsg": tx.vendor_msg,
        });
        if tx.delivered
            && let Some(map) = body.as_object_mut()
        {
            map.insert("venTransid".into(), Value::String(tx.ven_transid));
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn journal_json(&self) -> Value {
        let entries = self.journal();
        let calls: u64 = entries.values().map(|e| u64::from(e.calls)).sum();
        let deliveries: u64 = entries.values().map(|e| u64::from(e.deliveries)).sum();
        let duplicates = entries.values().filter(|e| e.deliveries > 1).count();
        serde_json::json!({
            "logins": self.logins(),
            "entries": entries,
            "totals": {"calls": calls, "deliveries": deliveries, "duplicates_delivered": duplicates},
        })
    }

    /// Merges a partial JSON object into the config; unknown keys are refused.
    fn merge_config(&self, patch: &[u8]) -> Result<SimConfig, String> {
        let patch: Value = serde_json::from_slice(patch).map_err(|e| e.to_string())?;
        let Value::Object(patch) = patch else {
            return Err("expected a JSON object".into());
        };
        let mut config = self.cfg();
        let mut merged = match serde_json::to_value(&*config) {
            Ok(Value::Object(map)) => map,
            _ => return Err("config is not an object".into()),
        };
        for (key, value) in patch {
            if !merged.contains_key(&key) {
                return Err(format!("unknown config field {key:?}"));
            }
            merged.insert(key, value);
        }
        let next: SimConfig = serde_json::from_value(Value::Object(merged)).map_err(|e| e.to_string())?;
        *config = next.clone();
        Ok(next)
    }
}

fn tx(req: &wire::TopupRequest, delivered: bool, ven_transid: String, vendor_msg: &str) -> TxRecord {
    TxRecord {
        dist_transid: req.dist_transid.clone(),
        delivered,
        ven_transid,
        vendor_msg: vendor_msg.to_string(),
    }
}

/// The HTTP 400 checks of a top-up body; returns the exact amount.
fn check_request(req: &wire::TopupRequest) -> Result<Money, Refusal> {
    if req.dist_transid.trim().is_empty() {
        return Err(validation("dist_transid is required"));
    }
    let fields = [
        ("operator", req.operator.as_str(), wire::OPERATOR),
        ("country", req.country.as_str(), wire::COUNTRY),
        ("currency", req.currency.as_str(), wire::CURRENCY),
        ("skuID", req.sku_id.as_str(), wire::SKU_TOPUP),
    ];
    for (name, got, want) in fields {
        if got != want {
            return Err(validation(&format!("{name} must be {want}")));
        }
    }
    if req.service != wire::SERVICE_TOPUP {
        return Err(validation(&format!("service must be {}", wire::SERVICE_TOPUP)));
    }
    let raw = req.amount.get().trim();
    if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(validation("amount must be a number"));
    }
    Money::parse_decimal(raw).map_err(|e| validation(&format!("amount: {e}")))
}

fn check_product(req: &wire::TopupRequest, amount: Money, config: &SimConfig) -> ProductCheck {
    let product = req.product_id.as_str();
    if product == OPEN_RANGE_PRODUCT {
        if amount < OPEN_RANGE_MIN || amount > OPEN_RANGE_MAX {
            return Err(AMOUNT_OUT_OF_RANGE);
        }
        if !config.decimal_amounts && amount.minor() % 100 != 0 {
            return Err(INVALID_AMOUNT);
        }
        let with_vat = amount.minor() * (10_000 + OPEN_RANGE_VAT_BPS);
        return Ok(Money::from_minor((with_vat + 5_000) / 10_000));
    }
    if let Some(rest) = product.strip_prefix("XOOM_") {
        if !config.xoom_enabled {
            return Err(PRODUCT_NOT_ENABLED);
        }
        let n = rest
            .strip_suffix("_MXN")
            .filter(|n| !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| XOOM_DENOMINATIONS.contains(n));
        return match n {
            Some(n) if amount == Money::major(n) => Ok(amount),
            _ => Err(PRODUCT_NOT_FOUND),
        };
    }
    Err(PRODUCT_NOT_FOUND)
}

fn check_msisdn(phone: &str) -> Result<(), (&'static str, &'static str)> {
    if phone.len() == 10 && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(INVALID_MSISDN)
    }
}

/// Latcom's clock shows Mexico-area local time (UTC−4 in its examples).
fn latcom_time(t: DateTime<Utc>) -> String {
    let offset = chrono::FixedOffset::west_opt(4 * 3600).unwrap_or_else(|| Utc.fix());
    t.with_timezone(&offset).to_rfc3339_opts(SecondsFormat::Nanos, false)
}

fn random_uid() -> String {
    let b = rand::random::<[u8; 16]>();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The documented top-up answer, with the amount echoed as the exact text sent.
fn topup_answer(
    req: &wire::TopupRequest,
    trans_id: &str,
    outcome: Result<&str, (&str, &str)>,
    delay: Duration,
) -> String {
    let created = Utc::now();
    let ended = created + chrono::Duration::from_std(delay).unwrap_or_default();
    let (status, ven, code, message, vmsg, vcode) = match outcome {
        Ok(ven) => (
            "Success",
            Some(ven.to_string()),
            "0",
            "Top-up successful",
            "Success",
            "0",
        ),
        Err((msg, code)) => ("Fail", None, "1", "Top-up failed", msg, code),
    };
    let answer = wire::TopupResponse {
        uid: Some(random_uid()),
        amount: None,
        product_id: Some(req.product_id.clone()),
        service: Some(Value::from(wire::SERVICE_TOPUP)),
        trans_id: Some(trans_id.to_string()),
        status: Some(status.into()),
        created_at: Some(latcom_time(created)),
        ven_transid: ven,
        response_code: Some(Value::from(code)),
        response_message: Some(message.into()),
        vendor_response_msg: Some(vmsg.into()),
        vendor_response_code: Some(Value::from(vcode)),
        dist_transid: Some(req.dist_transid.clone()),
        ended_at: Some(latcom_time(ended)),
    };
    json_with_raw_amount(&answer, &req.amount)
}

/// Serialises `answer` with `amount` written as raw JSON text (never a float)
/// and absent fields left out.
fn json_with_raw_amount(answer: &wire::TopupResponse, amount: &RawValue) -> String {
    let fields = match serde_json::to_value(answer) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut out = String::from("{");
    for (key, value) in fields {
        let text = if key == "amount" {
            amount.get().trim().to_string()
        } else if value.is_null() {
            continue;
        } else {
            value.to_string()
        };
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(key).to_string());
        out.push(':');
        out.push_str(&text);
    }
    out.push('}');
    out
}

fn error_body(status: StatusCode, error: &str, message: &str) -> wire::ErrorBody {
    wire::ErrorBody {
        error: Some(error.into()),
        message: Some(message.into()),
        status: Some(Value::from(status.as_u16())),
        timestamp: Some(latcom_time(Utc::now())),
    }
}

/// An HTTP error answered with Latcom's [`wire::ErrorBody`].
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(error_body(self.status, self.error, &self.message)),
        )
            .into_response()
    }
}

fn refusal(status: StatusCode, error: &'static str, message: &str) -> Refusal {
    Refusal {
        status,
        error,
        message: message.to_string(),
    }
}

fn validation(message: &str) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, "Validation Error", message)
}

fn ip_blocked() -> Refusal {
    validation(wire::IP_NOT_AUTHORIZED)
}

fn not_found() -> Refusal {
    refusal(StatusCode::NOT_FOUND, "Not Found", "Transaction not found")
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(status, body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Reply::Text(status, content_type, body) => {
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
            }
            Reply::Reset(partial) => {
                let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(partial)) });
                let reset = futures_util::stream::once(async {
                    // Let the headers and the first half reach the client first.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated connection reset",
                    ))
                });
                let body = Body::from_stream(futures_util::StreamExt::chain(head, reset));
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            Reply::NoAnswer => {
                // A body that fails before its first byte makes hyper drop the
                // connection without writing the buffered status line.
                let body = Body::from_stream(futures_util::stream::once(async {
                    Err::<Bytes, _>(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "simulated silence",
                    ))
                }));
                (StatusCode::OK, body).into_response()
            }
        }
    }
}

async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no address for {addr}"));
    for sa in tokio::net::lookup_host(addr).await? {
        let socket = if sa.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let attempt = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(sa)?;
            // A deep backlog: load tests open thousands of connections at once.
            s.listen(4096)
        });
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn login(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    let config = sim.config();
    if config.ip_blocked {
        return ip_blocked().into_response();
    }
    let req: wire::LoginRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return validation(&e.to_string()).into_response(),
    };
    if req.username != config.username
        || req.password != config.password
        || req.dist_api != config.dist_api
        || req.user_uid != config.user_uid
    {
        return refusal(StatusCode::UNAUTHORIZED, "Unauthorized", "Invalid credentials").into_response();
    }
    let access = sim.issue_token(&config);
    sim.logins.fetch_add(1, Ordering::Relaxed);
    (StatusCode::OK, axum::Json(wire::LoginResponse { access })).into_response()
}

async fn topup(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    match sim.plan_topup(&headers, &body) {
        Ok((reply, delay)) => {
            tokio::time::sleep(delay).await;
            reply.into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

async fn status(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    sim.status_answer(&headers, &id)
}

async fn journal(State(sim): State<Arc<Simulator>>) -> Response {
    axum::Json(sim.journal_json()).into_response()
}

async fn get_config(State(sim): State<Arc<Simulator>>) -> Response {
    axum::Json(sim.config()).into_response()
}

async fn set_config(State(sim): State<Arc<Simulator>>, body: Bytes) -> Response {
    match sim.merge_config(&body) {
        Ok(config) => axum::Json(config).into_response(),
        Err(message) => validation(&message).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn fast() -> SimConfig {
        SimConfig {
            latency_min_ms: 1,
            latency_max_ms: 5,
            slow_ms: 60,
            hang_ms: 150,
            ..SimConfig::default()
        }
    }

    struct Harness {
        sim: Arc<Simulator>,
        base: String,
        http: reqwest::Client,
    }

    async fn start(config: SimConfig) -> Harness {
        let (sim, addr) = Simulator::spawn(config, "127.0.0.1:0").await.unwrap();
        Harness {
            sim,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    fn creds(config: &SimConfig) -> wire::LoginRequest {
        wire::LoginRequest {
            username: config.username.clone(),
            password: config.password.clone(),
            dist_api: config.dist_api.clone(),
            user_uid: config.user_uid.clone(),
        }
    }

    fn req(phone: &str, id: &str, product: &str, amount: &str) -> wire::TopupRequest {
        wire::TopupRequest {
            target_msisdn: phone.into(),
            dist_transid: id.into(),
            operator: wire::OPERATOR.into(),
            country: wire::COUNTRY.into(),
            currency: wire::CURRENCY.into(),
            amount: RawValue::from_string(amount.to_string()).unwrap(),
            product_id: product.into(),
            sku_id: wire::SKU_TOPUP.into(),
            service: wire::SERVICE_TOPUP,
        }
    }

    fn xoom10(phone: &str, id: &str) -> wire::TopupRequest {
        req(phone, id, "XOOM_10_MXN", "10")
    }

    impl Harness {
        async fn login(&self) -> reqwest::Response {
            self.http
                .post(format!("{}{}", self.base, wire::LOGIN_PATH))
                .json(&creds(&self.sim.config()))
                .send()
                .await
                .unwrap()
        }

        async fn token(&self) -> String {
            let resp = self.login().await;
            assert_eq!(resp.status(), 200);
            resp.json::<wire::LoginResponse>().await.unwrap().access
        }

        async fn send(&self, token: Option<&str>, body: &wire::TopupRequest) -> reqwest::Result<reqwest::Response> {
            let mut call = self.http.post(format!("{}{}", self.base, wire::TOPUP_PATH)).json(body);
            if let Some(token) = token {
                call = call.bearer_auth(token);
            }
            call.send().await
        }

        /// A top-up expected to answer HTTP 200 JSON: the parsed answer and the raw text.
        async fn topup(&self, token: &str, body: &wire::TopupRequest) -> (wire::TopupResponse, String) {
            let resp = self.send(Some(token), body).await.unwrap();
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            (serde_json::from_str(&text).unwrap(), text)
        }

        async fn status(&self, token: Option<&str>, id: &str) -> (u16, Value) {
            let mut call = self.http.get(format!("{}{}/{id}", self.base, wire::STATUS_PATH));
            if let Some(token) = token {
                call = call.bearer_auth(token);
            }
            let resp = call.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json().await.unwrap_or(Value::Null))
        }

        async fn get_json(&self, path: &str) -> Value {
            let resp = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json().await.unwrap()
        }

        fn entry(&self, id: &str) -> JournalEntry {
            self.sim.journal_entry(id).unwrap()
        }
    }

    fn assert_fail(answer: &wire::TopupResponse, msg: &str, code: &str) {
        assert_eq!(wire::is_success(answer.status.as_deref()), Some(false), "{answer:?}");
        assert_eq!(answer.vendor_response_msg.as_deref(), Some(msg));
        assert_eq!(wire::code_text(&answer.vendor_response_code).as_deref(), Some(code));
        assert_eq!(wire::code_text(&answer.response_code).as_deref(), Some("1"));
        assert_eq!(answer.ven_transid, None);
    }

    fn assert_error_body(text: &str, error: &str, message: &str, status: u16) {
        let body: wire::ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(body.error.as_deref(), Some(error));
        assert_eq!(body.message.as_deref(), Some(message));
        assert_eq!(body.status, Some(Value::from(status)));
        assert!(DateTime::parse_from_rfc3339(body.timestamp.as_deref().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn sim_login_ok_wrong_password_and_ip_blocked() {
        let h = start(fast()).await;
        let token = h.token().await;
        let exp = wire::jwt_exp(&token).unwrap();
        assert!((exp - Utc::now().timestamp() - 600).abs() <= 2, "exp {exp}");
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(h.sim.logins(), 1);

        let mut wrong = creds(&h.sim.config());
        wrong.password = "nope".into();
        let resp = h
            .http
            .post(format!("{}{}", h.base, wire::LOGIN_PATH))
            .json(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_error_body(&resp.text().await.unwrap(), "Unauthorized", "Invalid credentials", 401);
        assert_eq!(h.sim.logins(), 1);

        h.sim.update(|c| c.token_has_exp = false);
        assert_eq!(wire::jwt_exp(&h.token().await), None);

        h.sim.update(|c| c.ip_blocked = true);
        let resp = h.login().await;
        assert_eq!(resp.status(), 400);
        assert_error_body(
            &resp.text().await.unwrap(),
            "Validation Error",
            wire::IP_NOT_AUTHORIZED,
            400,
        );
        assert_eq!(h.sim.logins(), 2);
    }

    #[tokio::test]
    async fn sim_topup_needs_a_live_token_an_allowed_ip_and_a_valid_body() {
        let h = start(fast()).await;
        let body = xoom10("5512345000", "RLRauth");
        assert_eq!(h.send(None, &body).await.unwrap().status(), 401);
        assert_eq!(h.send(Some("h.p.s"), &body).await.unwrap().status(), 401);

        h.sim.update(|c| c.token_lifetime_s = 0);
        let expired = h.token().await;
        let resp = h.send(Some(&expired), &body).await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_error_body(&resp.text().await.unwrap(), "Unauthorized", "Token expired", 401);

        h.sim.update(|c| c.token_lifetime_s = 600);
        let token = h.token().await;
        h.sim.update(|c| c.ip_blocked = true);
        let resp = h.send(Some(&token), &body).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert_error_body(
            &resp.text().await.unwrap(),
            "Validation Error",
            wire::IP_NOT_AUTHORIZED,
            400,
        );
        h.sim.update(|c| c.ip_blocked = false);

        let mut bad = body.clone();
        bad.operator = "TELCEL".into();
        let resp = h.send(Some(&token), &bad).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.unwrap().contains("Validation Error"));
        let mut bundle = body.clone();
        bundle.service = 1;
        let mut not_topup = body.clone();
        not_topup.sku_id = "7".into();
        let cases = [
            bundle,
            not_topup,
            req("5512345000", "RLRauth", "XOOM_10_MXN", r#""10""#),
            req("5512345000", "RLRauth", "XOOM_10_MXN", "1e1"),
            req("5512345000", "RLRauth", "XOOM_10_MXN", "10.001"),
            req("5512345000", "", "XOOM_10_MXN", "10"),
        ];
        for case in &cases {
            let resp = h.send(Some(&token), case).await.unwrap();
            assert_eq!(resp.status(), 400, "{case:?}");
            let text = resp.text().await.unwrap();
            assert!(text.contains("Validation Error"), "{text}");
        }
        let resp = h
            .http
            .post(format!("{}{}", h.base, wire::TOPUP_PATH))
            .bearer_auth(&token)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert!(h.sim.journal().is_empty(), "4xx calls are not journaled");
    }

    #[tokio::test]
    async fn sim_xoom_success_has_the_documented_fields() {
        let h = start(fast()).await;
        let token = h.token().await;
        let (answer, text) = h.topup(&token, &xoom10("5512345000", "RLRok")).await;
        assert!(text.contains(r#""amount":10"#), "{text}");
        assert_eq!(wire::is_success(answer.status.as_deref()), Some(true));
        assert!(answer.uid.as_deref().is_some_and(|u| u.len() == 36));
        assert_eq!(answer.amount, Some(Value::from(10)));
        assert_eq!(answer.product_id.as_deref(), Some("XOOM_10_MXN"));
        assert_eq!(answer.service, Some(Value::from(2)));
        let trans_id = answer.trans_id.clone().unwrap();
        assert!(
            trans_id.starts_with("LT") && trans_id.len() == 10 && trans_id[2..].bytes().all(|b| b.is_ascii_digit())
        );
        let ven = answer.ven_transid.clone().unwrap();
        assert!(!ven.is_empty() && ven.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(wire::code_text(&answer.response_code).as_deref(), Some("0"));
        assert!(answer.response_message.is_some());
        assert_eq!(answer.vendor_response_msg.as_deref(), Some("Success"));
        assert_eq!(wire::code_text(&answer.vendor_response_code).as_deref(), Some("0"));
        assert_eq!(answer.dist_transid.as_deref(), Some("RLRok"));
        let created = DateTime::parse_from_rfc3339(answer.created_at.as_deref().unwrap()).unwrap();
        let ended = DateTime::parse_from_rfc3339(answer.ended_at.as_deref().unwrap()).unwrap();
        assert!(ended >= created);
        assert_eq!(
            h.entry("RLRok"),
            JournalEntry {
                calls: 1,
                deliveries: 1,
                trans_id,
                ven_transid: ven,
                phone: "5512345000".into(),
                product_id: "XOOM_10_MXN".into(),
                amount: "10".into(),
                delivered_amount: "10.00".into(),
            }
        );
        let (second, _) = h.topup(&token, &xoom10("5512345000", "RLRok2")).await;
        assert_ne!(second.trans_id, answer.trans_id);
    }

    #[tokio::test]
    async fn sim_product_rules() {
        let h = start(fast()).await;
        let token = h.token().await;
        let phone = "5512345000";
        for (id, product, amount) in [
            ("p1", "XOOM_010_MXN", "10"),
            ("p2", "XOOM_10_MXN", "20"),
            ("p3", "XOOM_25_MXN", "25"),
            ("p4", "BUNDLE_X", "10"),
        ] {
            let (answer, _) = h.topup(&token, &req(phone, id, product, amount)).await;
            assert_fail(&answer, "Product not Found", "-120054");
            assert_eq!(h.entry(id).deliveries, 0);
        }
        let (answer, _) = h.topup(&token, &req(phone, "p5", "TFE_MXN_20_TO_2000", "19.99")).await;
        assert_fail(&answer, AMOUNT_OUT_OF_RANGE.0, AMOUNT_OUT_OF_RANGE.1);
        let (answer, _) = h.topup(&token, &req("551234500", "p6", "XOOM_10_MXN", "10")).await;
        assert_fail(&answer, INVALID_MSISDN.0, INVALID_MSISDN.1);

        let (answer, text) = h
            .topup(&token, &req(phone, "open", "TFE_MXN_20_TO_2000", "21.98"))
            .await;
        assert_eq!(wire::is_success(answer.status.as_deref()), Some(true));
        assert!(text.contains(r#""amount":21.98"#), "{text}");
        let entry = h.entry("open");
        assert_eq!(
            (entry.amount.as_str(), entry.delivered_amount.as_str()),
            ("21.98", "25.50")
        );
        let (_, text) = h
            .topup(&token, &req(phone, "open2", "TFE_MXN_20_TO_2000", "2000"))
            .await;
        assert!(text.contains(r#""amount":2000"#));
        assert_eq!(h.entry("open2").delivered_amount, "2320.00");

        h.sim.update(|c| c.decimal_amounts = false);
        let (answer, _) = h
            .topup(&token, &req(phone, "open3", "TFE_MXN_20_TO_2000", "21.98"))
            .await;
        assert_fail(&answer, INVALID_AMOUNT.0, INVALID_AMOUNT.1);
        let (answer, _) = h.topup(&token, &req(phone, "open4", "TFE_MXN_20_TO_2000", "21")).await;
        assert_eq!(wire::is_success(answer.status.as_deref()), Some(true));

        h.sim.update(|c| c.xoom_enabled = false);
        let (answer, _) = h.topup(&token, &xoom10(phone, "x1")).await;
        assert_fail(&answer, "product_not_found", PRODUCT_NOT_ENABLED.1);
        assert_eq!(h.entry("x1").deliveries, 0);
    }

    #[tokio::test]
    async fn sim_definite_failure_scripts() {
        let h = start(fast()).await;
        let token = h.token().await;
        for (phone, msg, code, delivered) in [
            ("5512345991", "Bolton is not allowed for tariff plan", "-120010", 0),
            ("5512345992", "Action not allowed", "-120020", 0),
            ("5512345981", "Product not Found", "-120054", 0),
            ("5512345982", "product_not_found", "-120055", 0),
            ("5512345989", "Action not allowed", "-120020", 1),
        ] {
            let (answer, _) = h.topup(&token, &xoom10(phone, phone)).await;
            assert_fail(&answer, msg, code);
            assert_eq!(answer.dist_transid.as_deref(), Some(phone));
            assert!(answer.trans_id.is_some());
            let entry = h.entry(phone);
            assert_eq!((entry.calls, entry.deliveries), (1, delivered), "{phone}");
        }
    }

    #[tokio::test]
    async fn sim_no_answer_scripts_drop_the_request() {
        let h = start(fast()).await;
        let token = h.token().await;
        for (phone, delivered) in [("5512345993", 1), ("5512345994", 0)] {
            let started = StdInstant::now();
            let result = h.send(Some(&token), &xoom10(phone, phone)).await;
            assert!(result.is_err(), "{phone}: {result:?}");
            assert!(started.elapsed() >= Duration::from_millis(150));
            let entry = h.entry(phone);
            assert_eq!((entry.calls, entry.deliveries), (1, delivered), "{phone}");
        }
        // The delivery is journaled before the wait, while the call hangs.
        h.sim.update(|c| c.hang_ms = 5_000);
        let client = h.http.clone();
        let url = format!("{}{}", h.base, wire::TOPUP_PATH);
        let (t, body) = (token.clone(), xoom10("5512340993", "hanging"));
        let call = tokio::spawn(async move { client.post(url).bearer_auth(t).json(&body).send().await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(h.entry("hanging").deliveries, 1);
        assert!(!call.is_finished());
        call.abort();
    }

    #[tokio::test]
    async fn sim_transport_failure_scripts() {
        let h = start(fast()).await;
        let token = h.token().await;

        let started = StdInstant::now();
        let (answer, _) = h.topup(&token, &xoom10("5512345995", "slow")).await;
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(wire::is_success(answer.status.as_deref()), Some(true));
        assert_eq!(h.entry("slow").deliveries, 1);

        let resp = h.send(Some(&token), &xoom10("5512345996", "e500")).await.unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.text().await.unwrap(), "Internal Server Error");
        assert_eq!(h.entry("e500").deliveries, 1);

        let resp = h.send(Some(&token), &xoom10("5512345997", "reset")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.is_err(), "the body must fail mid-way");
        assert_eq!(h.entry("reset").deliveries, 1);

        let resp = h.send(Some(&token), &xoom10("5512345998", "garbage")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert_eq!(text, "<html>Service Unavailable</html>");
        assert!(serde_json::from_str::<wire::TopupResponse>(&text).is_err());
        assert_eq!(h.entry("garbage").deliveries, 1);

        let resp = h.send(Some(&token), &xoom10("5512345999", "e502")).await.unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(h.entry("e502").deliveries, 0);
    }

    #[tokio::test]
    async fn sim_duplicate_policies() {
        let h = start(fast()).await;
        let token = h.token().await;
        let phone = "5512345000";

        h.sim.update(|c| c.duplicate_policy = DuplicatePolicy::Reject);
        let (first, _) = h.topup(&token, &xoom10(phone, "dup-reject")).await;
        assert_eq!(wire::is_success(first.status.as_deref()), Some(true));
        let (second, _) = h.topup(&token, &xoom10(phone, "dup-reject")).await;
        assert_fail(&second, "Duplicate transaction", DUPLICATE.1);
        let e = h.entry("dup-reject");
        assert_eq!((e.calls, e.deliveries), (2, 1));

        h.sim.update(|c| c.duplicate_policy = DuplicatePolicy::Replay);
        let (_, first) = h.topup(&token, &xoom10(phone, "dup-replay")).await;
        let (_, second) = h.topup(&token, &xoom10(phone, "dup-replay")).await;
        assert_eq!(first, second, "a replay is the same answer");
        let e = h.entry("dup-replay");
        assert_eq!((e.calls, e.deliveries), (2, 1));

        // A replay of a call still in progress waits for the first answer.
        let body = xoom10("5512345995", "dup-slow");
        let (a, b) = tokio::join!(h.topup(&token, &body), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.topup(&token, &body).await
        });
        assert_eq!(a.1, b.1);
        let e = h.entry("dup-slow");
        assert_eq!((e.calls, e.deliveries), (2, 1));

        // A replay of silence is silence.
        let body = xoom10("5512345993", "dup-hang");
        assert!(h.send(Some(&token), &body).await.is_err());
        assert!(h.send(Some(&token), &body).await.is_err());
        let e = h.entry("dup-hang");
        assert_eq!((e.calls, e.deliveries), (2, 1));

        h.sim.update(|c| c.duplicate_policy = DuplicatePolicy::Redeliver);
        let (first, _) = h.topup(&token, &xoom10(phone, "dup-again")).await;
        let (second, _) = h.topup(&token, &xoom10(phone, "dup-again")).await;
        assert_eq!(wire::is_success(second.status.as_deref()), Some(true));
        assert_ne!(first.trans_id, second.trans_id);
        assert_ne!(first.ven_transid, second.ven_transid);
        let e = h.entry("dup-again");
        assert_eq!((e.calls, e.deliveries), (2, 2));
        assert_eq!(e.trans_id, second.trans_id.unwrap());
    }

    #[tokio::test]
    async fn sim_status_in_three_modes() {
        let h = start(fast()).await;
        let token = h.token().await;
        let (ok, _) = h.topup(&token, &xoom10("5512345000", "st-ok")).await;
        let trans_id = ok.trans_id.clone().unwrap();
        assert!(h.send(Some(&token), &xoom10("5512345994", "st-lost")).await.is_err());
        h.topup(&token, &xoom10("5512345989", "st-fail-delivered")).await;
        h.topup(&token, &xoom10("5512345991", "st-bolton")).await;

        let (code, body) = h.status(Some(&token), &trans_id).await;
        assert_eq!(code, 200);
        assert_eq!(body["status"], "Success");
        assert_eq!(body["transId"], trans_id.as_str());
        assert_eq!(body["distTransid"], "st-ok");
        assert_eq!(body["venTransid"], ok.ven_transid.clone().unwrap().as_str());
        assert_eq!(body["vendorResponseMsg"], "Success");
        let (code, by_id) = h.status(Some(&token), "st-ok").await;
        assert_eq!((code, &by_id), (200, &body));

        let (code, body) = h.status(Some(&token), "st-lost").await;
        assert_eq!((code, body["status"].as_str()), (200, Some("Fail")));
        assert!(body.get("venTransid").is_none());
        let (_, body) = h.status(Some(&token), "st-fail-delivered").await;
        assert_eq!(body["status"], "Success", "Latcom said Fail, the carrier delivered");
        let (_, body) = h.status(Some(&token), "st-bolton").await;
        assert_eq!(body["status"], "Fail");
        assert_eq!(body["vendorResponseMsg"], "Bolton is not allowed for tariff plan");

        let (code, _) = h.status(Some(&token), "LT00000000x").await;
        assert_eq!(code, 404);
        assert_eq!(h.status(None, &trans_id).await.0, 401);

        h.sim.update(|c| c.status_by_dist_transid = false);
        assert_eq!(h.status(Some(&token), "st-ok").await.0, 404);
        assert_eq!(h.status(Some(&token), &trans_id).await.0, 200);

        h.sim.update(|c| c.status_mode = StatusMode::Off);
        assert_eq!(h.status(Some(&token), &trans_id).await.0, 404);

        h.sim.update(|c| c.status_mode = StatusMode::Unrecognised);
        let (code, body) = h.status(Some(&token), &trans_id).await;
        assert_eq!(code, 200);
        assert_eq!(body, serde_json::json!({"result": {"code": 7, "text": "see portal"}}));
        let parsed: wire::TopupResponse = serde_json::from_value(body).unwrap();
        assert_eq!(wire::is_success(parsed.status.as_deref()), None);
    }

    #[tokio::test]
    async fn sim_journal_and_config_endpoints() {
        let h = start(fast()).await;
        let token = h.token().await;
        h.sim.update(|c| c.duplicate_policy = DuplicatePolicy::Redeliver);
        h.topup(&token, &xoom10("5512345000", "j1")).await;
        h.topup(&token, &xoom10("5512345000", "j1")).await;
        h.topup(&token, &xoom10("5512345991", "j2")).await;

        let journal = h.get_json("/__sim/journal").await;
        assert_eq!(journal["logins"], 1);
        assert_eq!(
            journal["totals"],
            serde_json::json!({"calls": 3, "deliveries": 2, "duplicates_delivered": 1})
        );
        assert_eq!(journal["entries"]["j1"]["deliveries"], 2);
        assert_eq!(journal["entries"]["j2"]["calls"], 1);
        assert_eq!(journal["entries"]["j2"]["product_id"], "XOOM_10_MXN");

        let config = h.get_json("/__sim/config").await;
        assert_eq!(config["duplicate_policy"], "redeliver");
        assert_eq!(config["status_mode"], "normal");
        assert_eq!(config["latency_max_ms"], 5);

        let url = format!("{}/__sim/config", h.base);
        let resp = h
            .http
            .post(&url)
            .json(&serde_json::json!({"ip_blocked": true, "status_mode": "unrecognised"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let merged: SimConfig = resp.json().await.unwrap();
        assert!(merged.ip_blocked);
        assert_eq!(merged.status_mode, StatusMode::Unrecognised);
        assert_eq!(merged.latency_max_ms, 5, "other fields are kept");
        assert!(h.sim.config().ip_blocked);
        assert_eq!(h.login().await.status(), 400);

        for bad in [r#"{"no_such_knob": 1}"#, r#"{"ip_blocked": "yes"}"#, "[1]", "{"] {
            let resp = h.http.post(&url).body(bad).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{bad}");
        }
        assert!(h.sim.config().ip_blocked);

        // Defaults as specified, and a partial object deserialises over them.
        let d: SimConfig = serde_json::from_str(r#"{"hang_ms": 7}"#).unwrap();
        assert_eq!((d.hang_ms, d.latency_min_ms, d.latency_max_ms), (7, 2_000, 7_000));
        assert_eq!((d.slow_ms, d.token_lifetime_s), (20_000, 600));
        assert_eq!(d.username, "sim-user");
        assert!(d.token_has_exp && d.xoom_enabled && d.status_by_dist_transid && !d.ip_blocked);
        assert_eq!(d.duplicate_policy, DuplicatePolicy::Replay);
    }

    #[tokio::test]
    async fn sim_serves_many_slow_requests_at_once() {
        let h = start(SimConfig {
            latency_min_ms: 400,
            latency_max_ms: 400,
            ..fast()
        })
        .await;
        let token = h.token().await;
        let started = StdInstant::now();
        let calls = (0..1_000).map(|i| {
            let (http, base, token) = (h.http.clone(), h.base.clone(), token.clone());
            tokio::spawn(async move {
                http.post(format!("{base}{}", wire::TOPUP_PATH))
                    .bearer_auth(token)
                    .json(&xoom10("5512345000", &format!("load-{i}")))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        });
        for call in futures_util::future::join_all(calls).await {
            assert_eq!(call.unwrap().unwrap(), 200);
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        assert_eq!(h.sim.journal().len(), 1_000);
    }
}
