//! The Latcom adapter: login and token sharing, the top-up call, the status
//! query, and — the part that matters most — classifying every answer.
//!
//! **Tokens.** One token per adapter (one credential set), shared by all
//! workers. It is refreshed `TOKEN_REFRESH_MARGIN_S` before the JWT's `exp`
//! (or after the configured lifetime when the claim is absent). The token
//! mutex is held during login, so exactly one login is in flight and every
//! other caller waits for its result. On HTTP 401 the adapter logs in again
//! once and resends: a 401 means the request was refused, not processed.
//!
//! **Classification** (what may be resent, what must never be):
//!
//! | what happened | outcome |
//! |---|---|
//! | HTTP 200, `status` Success | `Success` (with `transId`, `venTransid`) |
//! | HTTP 200, `status` Fail, answered within `slow_fail` | `Failed` with the vendor code and message |
//! | HTTP 200, `status` Fail, answered after `slow_fail` | `Unknown`, the failure text kept (see below) |
//! | HTTP 200, `status` Fail, code -120008, within `slow_fail` | `Blocked` (`upstream_wallet_empty`): our wallet at Latcom is empty |
//! | could not connect (refused, DNS, TLS, connect timeout) | `NotSent`: safe to retry |
//! | login refused: IP not authorized, bad credentials | `Blocked`: nothing sent, submission pauses |
//! | timeout after sending, reset, 5xx, other 4xx, unparseable or unrecognised body | `Unknown` |
//!
//! **Slow failures.** In the old system's carrier dispute, 17,943 top-ups
//! that Latcom answered `Fail` after 7–33 s had been delivered and billed by
//! the carrier. A `Fail` that took longer than `slow_fail` (setting
//! `LATCOM_SLOW_FAIL_S`, default 7 s) is therefore not proof of
//! non-delivery: it is UNKNOWN (hold kept, failure text in the reason), and
//! is settled by status query, reconciliation or an operator.
//!
//! **Empty wallet.** A fast `Fail` with code -120008 means our own prepaid
//! balance at Latcom ran out: nothing was delivered. It pauses submission
//! like an IP block (`health` says `upstream_wallet_empty`); the top-up goes
//! back to PENDING, not counted as an attempt. Every `wallet_probe_interval`
//! one waiting top-up is sent as usual (the probe, never a synthetic
//! top-up); a definite answer other than -120008 ends the pause. A resend
//! goes out under a fresh attempt id (`recarga_domain::attempt_id`).
//!
//! **Status answers** count only when they name the send we asked about
//! (`distTransid` = our attempt id, or `transId` = the id we queried): the
//! endpoint's shape is unconfirmed, and an answer about something else must
//! not settle our money.
//!
//! **Caps.** `max_inflight` concurrent calls and `rate_per_s` calls per
//! second, per process: with N replicas the provider sees up to N × each.
//! Both are waited for in [`Provider::admit`], before anything is sent, so
//! the worker never counts that wait against the call.

use super::wire;
use crate::{
    Admission, Attempt, ExchangeLog, Outcome, Provider, ProviderHealth, StatusAnswer, StatusCheck, TopupRequest, now_ms,
};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Refresh a token this long before it expires.
pub const TOKEN_REFRESH_MARGIN_S: u64 = 30;
/// Largest response body kept in an exchange record.
pub const STORED_BODY_MAX_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct LatcomConfig {
    pub base_url: String,
    pub username: String,
    pub password: SecretString,
    /// The login's `dist_api` value.
    pub dist_api: SecretString,
    pub user_uid: String,
    pub connect_timeout: Duration,
    /// Total time for one call, connect included.
    pub total_timeout: Duration,
    /// Token lifetime assumed when the JWT carries no `exp`.
    pub token_lifetime: Duration,
    pub max_inflight: usize,
    /// Calls per second; 0 means unlimited.
    pub rate_per_s: u32,
    /// A `Fail` answered after this long is UNKNOWN, not a failure.
    pub slow_fail: Duration,
    /// While our wallet at Latcom is empty, how often one waiting top-up is
    /// sent to see whether it was funded.
    pub wallet_probe_interval: Duration,
}

impl std::fmt::Debug for LatcomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatcomConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("user_uid", &self.user_uid)
            .finish_non_exhaustive()
    }
}

struct Token {
    access: SecretString,
    refresh_at: Instant,
    generation: u64,
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    IpNotAuthorized,
    Rejected(String),
    Unreachable(String),
}

impl LoginError {
    fn health(&self) -> ProviderHealth {
        match self {
            LoginError::IpNotAuthorized => ProviderHealth::blocked(
                "upstream_ip_not_authorized",
                "Latcom refused the login: this IP address is not on its allow-list",
            ),
            LoginError::Rejected(d) => ProviderHealth::blocked("upstream_login_rejected", d),
            LoginError::Unreachable(d) => ProviderHealth::blocked("upstream_unreachable", d),
        }
    }
}

/// Spaces calls at least `1 / rate` apart. A caller takes a slot only when
/// its turn has come, so a waiter that is cancelled (its call abandoned)
/// leaves no slot behind: the next waiter goes instead.
struct Pacer {
    interval: Option<Duration>,
    /// When the next call may go.
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rate_per_s: u32) -> Self {
        let interval = (rate_per_s > 0).then(|| Duration::from_secs_f64(1.0 / rate_per_s as f64));
        Pacer {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else { return };
        loop {
            let due = {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if *next <= now {
                    *next = now + interval;
                    return;
                }
                *next
            };
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Our wallet at Latcom, as its answers tell it.
#[derive(Debug, Default)]
struct Wallet {
    /// Set by a fast -120008; cleared by any other definite answer.
    empty: bool,
    /// When the last send went out while empty (the probe).
    last_probe: Option<Instant>,
}

pub struct Latcom {
    config: LatcomConfig,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    generation: AtomicU64,
    logins: AtomicU64,
    inflight: Arc<Semaphore>,
    pacer: Pacer,
    health: Mutex<ProviderHealth>,
    wallet: Mutex<Wallet>,
}

/// What came back from one HTTP exchange.
enum Reply {
    Answer { status: u16, body: String },
    NotConnected(String),
    Lost(String),
}

fn truncate(mut body: String) -> String {
    if body.len() > STORED_BODY_MAX_BYTES {
        let mut cut = STORED_BODY_MAX_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    body
}

/// A JSON number written from centavos: 2000 → `20`, 2198 → `21.98`.
fn amount_json(amount: recarga_domain::Money) -> Box<RawValue> {
    let minor = amount.minor();
    let text = if minor % 100 == 0 {
        (minor / 100).to_string()
    } else {
        amount.to_decimal_string()
    };
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("0".to_string()).expect("0 is JSON"))
}

impl Latcom {
    pub fn new(config: LatcomConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.total_timeout)
            .pool_max_idle_per_host(config.max_inflight.max(1))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Latcom {
            inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
            pacer: Pacer::new(config.rate_per_s),
            wallet: Mutex::new(Wallet::default()),
            http,
            token: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            health: Mutex::new(ProviderHealth::starting()),
            config,
        })
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn set_health(&self, next: ProviderHealth) {
        let mut current = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if current.state != next.state {
            if next.ok {
                tracing::info!(state = %next.state, "upstream available");
            } else {
                tracing::error!(state = %next.state, detail = %next.detail, "upstream blocked: submission paused");
            }
        }
        *current = next;
    }

    /// A valid token: the cached one, or a fresh login. `stale` names a
    /// generation the caller saw refused (401), forcing a new login once.
    async fn token(&self, stale: Option<u64>) -> Result<(String, u64), LoginError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
            && stale != Some(t.generation)
        {
            return Ok((t.access.expose_secret().to_string(), t.generation));
        }
        match self.login().await {
            Ok(token) => {
                let out = (token.access.expose_secret().to_string(), token.generation);
                *slot = Some(token);
                self.set_health(ProviderHealth::ok());
                Ok(out)
            }
            Err(e) => {
                *slot = None;
                self.set_health(e.health());
                Err(e)
            }
        }
    }

    async fn login(&self) -> Result<Token, LoginError> {
        let body = wire::LoginRequest {
            username: self.config.username.clone(),
            password: self.config.password.expose_secret().to_string(),
            dist_api: self.config.dist_api.expose_secret().to_string(),
            user_uid: self.config.user_uid.clone(),
        };
        let reply = self.http.post(self.url(wire::LOGIN_PATH)).json(&body).send().await;
        let response = match reply {
            Ok(r) => r,
            Err(e) => return Err(LoginError::Unreachable(format!("login: {}", error_text(&e)))),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status == 200 {
            let parsed: wire::LoginResponse = serde_json::from_str(&text)
                .map_err(|_| LoginError::Rejected("login answered 200 without an access token".into()))?;
            let lifetime = match wire::jwt_exp(&parsed.access) {
                Some(exp) => Duration::from_secs((exp - chrono::Utc::now().timestamp()).max(0) as u64),
                None => self.config.token_lifetime,
            };
            let refresh_in = lifetime
                .saturating_sub(Duration::from_secs(TOKEN_REFRESH_MARGIN_S))
                .max(lifetime / 2);
            self.logins.fetch_add(1, Ordering::Relaxed);
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(generation, refresh_in_s = refresh_in.as_secs(), "logged in to Latcom");
            return Ok(Token {
                access: SecretString::from(parsed.access),
                refresh_at: Instant::now() + refresh_in,
                generation,
            });
        }
        let error: wire::ErrorBody = serde_json::from_str(&text).unwrap_or_default();
        if error
            .message
            .as_deref()
            .is_some_and(|m| m.contains(wire::IP_NOT_AUTHORIZED))
        {
            return Err(LoginError::IpNotAuthorized);
        }
        Err(LoginError::Rejected(format!(
            "login answered HTTP {status}: {}",
            error.message.or(error.error).unwrap_or_else(|| "no message".into())
        )))
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Reply {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.text().await {
                    Ok(body) => Reply::Answer { status, body },
                    Err(e) => Reply::Lost(format!("HTTP {status}, body lost: {}", error_text(&e))),
                }
            }
            Err(e) if e.is_connect() => Reply::NotConnected(error_text(&e)),
            Err(e) if e.is_timeout() => Reply::Lost(format!("timeout after sending: {}", error_text(&e))),
            Err(e) => Reply::Lost(error_text(&e)),
        }
    }

    /// Sends with the shared token, logging in again once on 401.
    async fn authorized(&self, build: impl Fn(&str) -> reqwest::RequestBuilder) -> Result<Reply, LoginError> {
        let (token, generation) = self.token(None).await?;
        let reply = self.exchange(build(&token)).await;
        if matches!(reply, Reply::Answer { status: 401, .. }) {
            tracing::warn!(generation, "Latcom answered 401: logging in again once");
            let (token, _) = self.token(Some(generation)).await?;
            return Ok(self.exchange(build(&token)).await);
        }
        Ok(reply)
    }
}

fn error_text(e: &reqwest::Error) -> String {
    // The URL is ours and carries no secret; the source chain says what broke.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Classifies the answer to a top-up POST. See the module table.
pub fn classify_topup(status: u16, body: &str) -> Outcome {
    if status == 200 {
        let Ok(parsed) = serde_json::from_str::<wire::TopupResponse>(body) else {
            return Outcome::Unknown {
                reason: "HTTP 200 with an unparseable body".into(),
                trans_id: None,
            };
        };
        return match wire::is_success(parsed.status.as_deref()) {
            Some(true) => Outcome::Success {
                trans_id: parsed.trans_id,
                ven_transid: parsed.ven_transid,
            },
            Some(false) => Outcome::Failed {
                code: wire::code_text(&parsed.vendor_response_code)
                    .or_else(|| wire::code_text(&parsed.response_code))
                    .unwrap_or_else(|| "fail".into()),
                message: parsed
                    .vendor_response_msg
                    .or(parsed.response_message)
                    .unwrap_or_else(|| "failed without a message".into()),
            },
            None => Outcome::Unknown {
                reason: format!("HTTP 200 with an unrecognised status {:?}", parsed.status),
                trans_id: parsed.trans_id,
            },
        };
    }
    if status == 400 {
        let error: wire::ErrorBody = serde_json::from_str(body).unwrap_or_default();
        if error
            .message
            .as_deref()
            .is_some_and(|m| m.contains(wire::IP_NOT_AUTHORIZED))
        {
            return Outcome::Blocked {
                reason: "upstream_ip_not_authorized".into(),
            };
        }
    }
    Outcome::Unknown {
        reason: format!("HTTP {status} from upstream"),
        trans_id: None,
    }
}

/// What the time an answer took changes: a `Fail` slower than `slow_fail`
/// is UNKNOWN (the failure text kept in the reason); a fast -120008 is our
/// empty wallet (nothing delivered, submission pauses). Everything else
/// stands as classified.
pub fn judge_latency(outcome: Outcome, took: Duration, slow_fail: Duration) -> Outcome {
    match outcome {
        Outcome::Failed { code, message } if took > slow_fail => Outcome::Unknown {
            reason: format!(
                "Fail answered after {:.1} s, past the slow-fail threshold of {} s, is not proof of \
                 non-delivery: {code}: {message}",
                took.as_secs_f64(),
                slow_fail.as_secs_f64()
            ),
            trans_id: None,
        },
        Outcome::Failed { code, .. } if code == wire::WALLET_EMPTY_CODE => Outcome::Blocked {
            reason: WALLET_EMPTY.into(),
        },
        other => other,
    }
}

/// The health state (and exchange reason) of an empty wallet at Latcom.
pub const WALLET_EMPTY: &str = "upstream_wallet_empty";

/// Classifies the answer to a status query about the send `attempt_id`,
/// asked by `asked` (the id in the URL). It decides only when the answer
/// names that send (`distTransid` = `attempt_id`, or `transId` = `asked`);
/// anything unrecognised or about something else decides nothing.
pub fn classify_status(attempt_id: &str, asked: &str, status: u16, body: &str) -> StatusAnswer {
    let still = |reason: String| StatusAnswer::StillUnknown { reason };
    if status != 200 {
        return still(format!("status query answered HTTP {status}"));
    }
    let Ok(parsed) = serde_json::from_str::<wire::TopupResponse>(body) else {
        return still("status query answer is not JSON we understand".into());
    };
    let names_ours = parsed.dist_transid.as_deref() == Some(attempt_id) || parsed.trans_id.as_deref() == Some(asked);
    if !names_ours {
        return still(format!(
            "status query answer does not name our top-up (distTransid {:?}, transId {:?})",
            parsed.dist_transid, parsed.trans_id
        ));
    }
    match wire::is_success(parsed.status.as_deref()) {
        Some(true) => StatusAnswer::Delivered {
            trans_id: parsed.trans_id,
            ven_transid: parsed.ven_transid,
        },
        Some(false) => StatusAnswer::NotDelivered {
            code: wire::code_text(&parsed.vendor_response_code).unwrap_or_else(|| "fail".into()),
            message: parsed
                .vendor_response_msg
                .unwrap_or_else(|| "reported as failed".into()),
        },
        None => still("status query answer has no recognised status".into()),
    }
}

impl Latcom {
    fn wallet(&self) -> std::sync::MutexGuard<'_, Wallet> {
        self.wallet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While the wallet is empty: whether the next probe is due.
    fn probe_due(&self) -> Option<bool> {
        let w = self.wallet();
        w.empty.then(|| {
            w.last_probe
                .is_none_or(|at| at.elapsed() >= self.config.wallet_probe_interval)
        })
    }

    /// Learns about the wallet from a top-up's outcome.
    fn note_wallet(&self, outcome: &Outcome) {
        let empty = matches!(outcome, Outcome::Blocked { reason } if reason == WALLET_EMPTY);
        let definite = matches!(outcome, Outcome::Success { .. } | Outcome::Failed { .. });
        let mut w = self.wallet();
        if empty && !w.empty {
            w.empty = true;
            w.last_probe = Some(Instant::now());
            drop(w);
            self.set_health(ProviderHealth::blocked(
                WALLET_EMPTY,
                "Latcom answered -120008 (balance not sufficient for Pouch(Wallet)): our prepaid \
                 wallet there is empty; submission paused, one top-up is sent as a probe periodically",
            ));
        } else if definite && w.empty {
            w.empty = false;
            drop(w);
            tracing::info!("Latcom answered a probe: the wallet is funded again");
            self.set_health(ProviderHealth::ok());
        }
    }
}

#[async_trait]
impl Provider for Latcom {
    fn name(&self) -> &'static str {
        "latcom"
    }

    fn is_live(&self) -> bool {
        true
    }

    fn health(&self) -> ProviderHealth {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn ready(&self) -> Result<(), String> {
        if self.probe_due() == Some(false) {
            return Err(WALLET_EMPTY.into());
        }
        self.token(None).await.map(|_| ()).map_err(|e| e.health().state)?;
        if self.probe_due().is_some() {
            // The login just set the health to ok: the wallet is still empty.
            self.set_health(ProviderHealth::blocked(
                WALLET_EMPTY,
                "probing whether the wallet was funded",
            ));
        }
        Ok(())
    }

    fn claim_limit(&self) -> Option<usize> {
        self.probe_due().map(usize::from)
    }

    async fn admit(&self) -> Result<Admission, Outcome> {
        let slot = self.inflight.clone().acquire_owned().await.ok();
        self.pacer.wait().await;
        // Log in now, so that the call itself is only the call.
        match self.token(None).await {
            Ok(_) => {}
            Err(LoginError::Unreachable(reason)) => return Err(Outcome::NotSent { reason }),
            Err(e) => {
                return Err(Outcome::Blocked {
                    reason: e.health().state,
                });
            }
        }
        if self.probe_due().is_some() {
            self.wallet().last_probe = Some(Instant::now());
        }
        Ok(Admission::new(slot))
    }

    async fn send(&self, req: &TopupRequest, admission: Admission) -> Attempt {
        let _admission = admission;
        let started = now_ms();
        let clock = Instant::now();
        let body = wire::TopupRequest {
            target_msisdn: req.phone.as_str().to_string(),
            dist_transid: req.attempt_id.clone(),
            operator: wire::OPERATOR.into(),
            country: wire::COUNTRY.into(),
            currency: wire::CURRENCY.into(),
            amount: amount_json(req.amount_sent),
            product_id: req.product_id.clone(),
            sku_id: wire::SKU_TOPUP.into(),
            service: wire::SERVICE_TOPUP,
        };
        let body_text = serde_json::to_string(&body).unwrap_or_default();
        let url = self.url(wire::TOPUP_PATH);
        let reply = self
            .authorized(|token| {
                self.http
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body_text.clone())
            })
            .await;
        let mut log = ExchangeLog {
            request: Some(format!("POST {} {body_text}", wire::TOPUP_PATH)),
            started_at_ms: started,
            ..Default::default()
        };
        let outcome = match reply {
            // Login could not even connect: nothing was sent, like any refused connection.
            Err(LoginError::Unreachable(reason)) => Outcome::NotSent { reason },
            Err(e) => Outcome::Blocked {
                reason: e.health().state,
            },
            Ok(Reply::NotConnected(reason)) => Outcome::NotSent { reason },
            Ok(Reply::Lost(reason)) => Outcome::Unknown { reason, trans_id: None },
            Ok(Reply::Answer { status, body }) => {
                let outcome = judge_latency(classify_topup(status, &body), clock.elapsed(), self.config.slow_fail);
                if matches!(&outcome, Outcome::Blocked { reason } if reason != WALLET_EMPTY) {
                    // Drop the token: the worker's readiness check must now log
                    // in again, which pauses submission until the block lifts.
                    *self.token.lock().await = None;
                    self.set_health(LoginError::IpNotAuthorized.health());
                }
                self.note_wallet(&outcome);
                if let Ok(parsed) = serde_json::from_str::<wire::TopupResponse>(&body) {
                    log.trans_id = parsed.trans_id;
                    log.ven_transid = parsed.ven_transid;
                }
                log.http_status = Some(status as i64);
                log.response = Some(truncate(body));
                outcome
            }
        };
        log.ended_at_ms = now_ms();
        Attempt { outcome, exchange: log }
    }

    async fn status(&self, attempt_id: &str, trans_id: Option<&str>) -> StatusCheck {
        let started = now_ms();
        // By Latcom's id when we have it; otherwise by ours (the simulator and
        // perhaps Latcom know it; an unrecognised answer decides nothing).
        let key = trans_id.unwrap_or(attempt_id);
        let path = format!("{}/{key}", wire::STATUS_PATH);
        let url = self.url(&path);
        let reply = self.authorized(|token| self.http.get(&url).bearer_auth(token)).await;
        let mut log = ExchangeLog {
            request: Some(format!("GET {path}")),
            started_at_ms: started,
            ..Default::default()
        };
        let answer = match reply {
            Err(e) => StatusAnswer::StillUnknown {
                reason: e.health().state,
            },
            Ok(Reply::NotConnected(r) | Reply::Lost(r)) => StatusAnswer::StillUnknown { reason: r },
            Ok(Reply::Answer { status, body }) => {
                let answer = classify_status(attempt_id, key, status, &body);
                if let StatusAnswer::Delivered { trans_id, ven_transid } = &answer {
                    log.trans_id = trans_id.clone();
                    log.ven_transid = ven_transid.clone();
                }
                log.http_status = Some(status as i64);
                log.response = Some(truncate(body));
                answer
            }
        };
        log.ended_at_ms = now_ms();
        StatusCheck { answer, exchange: log }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_json_numbers() {
        use recarga_domain::Money;
        assert_eq!(amount_json(Money::major(20)).get(), "20");
        assert_eq!(amount_json(Money(2198)).get(), "21.98");
        assert_eq!(amount_json(Money(2150)).get(), "21.50");
    }

    #[test]
    fn classifies_every_kind_of_answer() {
        let ok = r#"{"status":"Success","transId":"LT1","venTransid":"99"}"#;
        assert_eq!(
            classify_topup(200, ok),
            Outcome::Success {
                trans_id: Some("LT1".into()),
                ven_transid: Some("99".into())
            }
        );
        let fail = r#"{"status":"Fail","vendorResponseMsg":"Product not Found","vendorResponseCode":"-120054"}"#;
        assert_eq!(
            classify_topup(200, fail),
            Outcome::Failed {
                code: "-120054".into(),
                message: "Product not Found".into()
            }
        );
        assert!(matches!(classify_topup(200, "<html>"), Outcome::Unknown { .. }));
        assert!(matches!(
            classify_topup(200, r#"{"status":"Pending"}"#),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(classify_topup(500, "oops"), Outcome::Unknown { .. }));
        assert!(matches!(classify_topup(502, ""), Outcome::Unknown { .. }));
        assert!(matches!(classify_topup(404, "{}"), Outcome::Unknown { .. }));
        let ip = r#"{"error":"Validation Error","message":"IP Address not authorized","status":400}"#;
        assert!(matches!(classify_topup(400, ip), Outcome::Blocked { .. }));
        assert!(matches!(
            classify_topup(400, r#"{"error":"Validation Error"}"#),
            Outcome::Unknown { .. }
        ));
    }

    #[test]
    fn status_answers_decide_only_when_recognised() {
        let ok = r#"{"status":"Success","transId":"LT1","distTransid":"RLR1","venTransid":"5"}"#;
        assert!(matches!(
            classify_status("RLR1", "RLR1", 200, ok),
            StatusAnswer::Delivered { .. }
        ));
        assert!(matches!(
            classify_status("RLR2", "LT9", 200, ok),
            StatusAnswer::StillUnknown { .. }
        ));
        assert!(matches!(
            classify_status("RLR1", "RLR1", 200, r#"{"result":{"code":7}}"#),
            StatusAnswer::StillUnknown { .. }
        ));
        assert!(matches!(
            classify_status("RLR1", "RLR1", 404, "{}"),
            StatusAnswer::StillUnknown { .. }
        ));
    }

    #[test]
    fn a_status_answer_counts_only_when_it_names_our_send() {
        // The review's case: a bare Fail used to release the hold.
        let bare = r#"{"status":"Fail"}"#;
        assert!(matches!(
            classify_status("RLR1", "RLR1", 200, bare),
            StatusAnswer::StillUnknown { .. }
        ));
        // Naming our attempt id, or the transId we asked about, decides.
        let by_ours = r#"{"status":"Fail","distTransid":"RLR1-2"}"#;
        assert!(matches!(
            classify_status("RLR1-2", "RLR1-2", 200, by_ours),
            StatusAnswer::NotDelivered { .. }
        ));
        assert!(matches!(
            classify_status("RLR1", "RLR1", 200, by_ours),
            StatusAnswer::StillUnknown { .. }
        ));
        let by_theirs = r#"{"status":"Fail","transId":"LT7"}"#;
        assert!(matches!(
            classify_status("RLR1", "LT7", 200, by_theirs),
            StatusAnswer::NotDelivered { .. }
        ));
        assert!(matches!(
            classify_status("RLR1", "LT8", 200, by_theirs),
            StatusAnswer::StillUnknown { .. }
        ));
    }

    #[test]
    fn a_slow_fail_is_unknown_and_a_fast_wallet_fail_pauses() {
        let slow = Duration::from_secs(7);
        let fail = |code: &str| Outcome::Failed {
            code: code.into(),
            message: "Action not allowed".into(),
        };
        assert_eq!(
            judge_latency(fail("-120020"), Duration::from_secs(3), slow),
            fail("-120020")
        );
        match judge_latency(fail("-120020"), Duration::from_millis(7_001), slow) {
            Outcome::Unknown { reason, .. } => {
                assert!(
                    reason.contains("-120020: Action not allowed"),
                    "failure text kept: {reason}"
                )
            }
            other => panic!("a slow Fail must be UNKNOWN, got {other:?}"),
        }
        assert_eq!(
            judge_latency(fail(wire::WALLET_EMPTY_CODE), Duration::from_secs(1), slow),
            Outcome::Blocked {
                reason: WALLET_EMPTY.into()
            }
        );
        assert!(matches!(
            judge_latency(fail(wire::WALLET_EMPTY_CODE), Duration::from_secs(9), slow),
            Outcome::Unknown { .. }
        ));
        let ok = Outcome::Success {
            trans_id: None,
            ven_transid: None,
        };
        assert_eq!(judge_latency(ok.clone(), Duration::from_secs(30), slow), ok);
    }

    #[tokio::test]
    async fn a_cancelled_pacer_waiter_leaves_no_slot_behind() {
        // 4 calls/s: one slot every 250 ms.
        let pacer = Arc::new(Pacer::new(4));
        pacer.wait().await; // the first slot goes at once
        // Ten waiters give up before their turn. Had they kept their slots,
        // the next caller would wait 11 × 250 ms = 2.75 s.
        for _ in 0..10 {
            let p = pacer.clone();
            let waiter = tokio::spawn(async move { p.wait().await });
            tokio::time::sleep(Duration::from_millis(5)).await;
            waiter.abort();
        }
        let began = Instant::now();
        pacer.wait().await;
        let waited = began.elapsed();
        assert!(
            waited < Duration::from_millis(1_500),
            "waited {waited:?} for abandoned slots"
        );
    }
}
