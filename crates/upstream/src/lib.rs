//! Upstream providers: who actually sells the top-up.
//!
//! [`Provider`] is what the worker calls. Its answers are already classified
//! for safety ([`Outcome`]): a definite success, a definite failure, a request
//! that provably never left (safe to retry), or **unknown** — anything else,
//! which the gateway must never resend nor refund by itself. Every call also
//! returns an [`ExchangeLog`] (request, response, status, timings, upstream ids)
//! so disputes can be settled from our own records.
//!
//! [`latcom`] is the real adapter; [`sim`] is a Latcom simulator speaking the
//! same wire protocol, used by the zero-setup run (in process, over loopback
//! HTTP), by the tests and by `recarga latcom-sim`.

pub mod latcom;
pub mod sim;

use async_trait::async_trait;
use recarga_domain::{Money, Msisdn};

/// What the worker asks a provider to deliver.
#[derive(Debug, Clone)]
pub struct TopupRequest {
    /// Our top-up id.
    pub topup_id: String,
    /// This send's id, sent upstream as `dist_transid`
    /// (`recarga_domain::attempt_id`: the top-up id on the first send).
    pub attempt_id: String,
    pub phone: Msisdn,
    pub product_id: String,
    /// The amount field sent upstream (MXN).
    pub amount_sent: Money,
}

/// The classified answers: defined with the pure decisions that consume
/// them (`recarga_domain::attempt`), re-exported here for the adapters.
pub use recarga_domain::{Outcome, StatusAnswer};

/// What `/health` and the worker know about an upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderHealth {
    pub ok: bool,
    /// `ok`, `starting`, or a stable error code such as `upstream_ip_not_authorized`.
    pub state: String,
    pub detail: String,
}

impl ProviderHealth {
    pub fn ok() -> Self {
        ProviderHealth {
            ok: true,
            state: "ok".into(),
            detail: String::new(),
        }
    }

    pub fn starting() -> Self {
        ProviderHealth {
            ok: true,
            state: "starting".into(),
            detail: "no call made yet".into(),
        }
    }

    pub fn blocked(state: &str, detail: impl Into<String>) -> Self {
        ProviderHealth {
            ok: false,
            state: state.into(),
            detail: detail.into(),
        }
    }
}

/// The record of one request/response, kept for disputes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeLog {
    pub request: Option<String>,
    pub response: Option<String>,
    pub http_status: Option<i64>,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub exchange: ExchangeLog,
}

/// A provider's permission to send one call now: held for the length of the
/// call (it is the in-flight slot; the rate pacer's slot was taken when it
/// was granted). See [`Provider::admit`].
#[derive(Default)]
pub struct Admission {
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Admission {
    pub fn new(slot: Option<tokio::sync::OwnedSemaphorePermit>) -> Self {
        Admission { _slot: slot }
    }
}

#[derive(Debug, Clone)]
pub struct StatusCheck {
    pub answer: StatusAnswer,
    pub exchange: ExchangeLog,
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name stored with every exchange (`"sandbox"`, `"latcom"`).
    fn name(&self) -> &'static str;
    /// Whether this provider moves real money (the sandbox never does).
    fn is_live(&self) -> bool;
    /// Current state, for `/health` and the worker's pause.
    fn health(&self) -> ProviderHealth {
        ProviderHealth::ok()
    }
    /// Whether top-ups can be submitted now (for Latcom: a token can be had,
    /// and, while our wallet there is empty, a probe is due).
    /// The worker claims nothing while this fails.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// The most top-ups the worker may claim now (`None`: no limit). While
    /// our wallet at the provider is empty, one: the probe.
    fn claim_limit(&self) -> Option<usize> {
        None
    }
    /// Waits for this process's turn to call (in-flight cap, rate pacer) and
    /// anything else needed before a request can leave (a login). Nothing
    /// has been sent when this returns, so the caller bounds this wait apart
    /// from the call: a wait that runs out is "never sent". An `Err` is the
    /// outcome of a call that could not even be started (never sent).
    async fn admit(&self) -> Result<Admission, Outcome> {
        Ok(Admission::default())
    }
    /// One top-up call, already admitted: it is dispatched at once, and the
    /// provider bounds it by its own timeout. Must not retry internally.
    async fn send(&self, req: &TopupRequest, admission: Admission) -> Attempt;
    /// [`Provider::admit`] then [`Provider::send`], unbounded: for tools and tests.
    async fn topup(&self, req: &TopupRequest) -> Attempt {
        match self.admit().await {
            Ok(admission) => self.send(req, admission).await,
            Err(outcome) => Attempt {
                outcome,
                exchange: ExchangeLog {
                    started_at_ms: now_ms(),
                    ended_at_ms: now_ms(),
                    ..Default::default()
                },
            },
        }
    }
    /// Asks what became of an earlier send. `attempt_id` is the
    /// `dist_transid` of that send; an answer counts only if it is about it.
    async fn status(&self, attempt_id: &str, trans_id: Option<&str>) -> StatusCheck;
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
