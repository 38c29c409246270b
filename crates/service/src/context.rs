//! What the services run with: the store, the accept and finish queues
//! (group commit), the upstream provider, the in-process signal hub and the
//! settings of the money path. Built once per process by the server's
//! wiring; cheap to clone.

use crate::hub::Hub;
use recarga_domain::AttemptPolicy;
use recarga_store::{AcceptQueue, FinishQueue, Store};
use recarga_upstream::Provider;
use std::sync::Arc;
use std::time::Duration;

/// Attempts of a top-up whose request provably never left, before it fails.
pub const NOT_SENT_ATTEMPTS_MAX: i64 = 5;
/// First retry delay for such a top-up (ms); doubles per attempt.
pub const NOT_SENT_RETRY_BASE_MS: i64 = 2_000;
/// How long submission pauses while the upstream refuses us (IP block, login).
pub const BLOCKED_PAUSE_MS: u64 = 5_000;

/// The settings of the money path (from the server's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Upstream calls in flight at once in this process.
    pub queue_concurrency: usize,
    /// How long a claimed top-up stays leased to its worker.
    pub lease: Duration,
    /// Total time allowed for one upstream call.
    pub upstream_timeout: Duration,
    /// How often the ledger audit runs for the metrics (zero: never).
    pub audit_interval: Duration,
    /// Retries, pauses and status-query backoff.
    pub policy: AttemptPolicy,
    /// A top-up still PENDING (never sent) this long after it was accepted
    /// expires (`crate::expire`); `None`: never.
    pub pending_max_age: Option<Duration>,
}

impl Settings {
    /// The policy from the operator's settings (seconds) and the constants above.
    pub fn policy(status_check_base_s: u64, status_check_max_s: u64, unknown_deadline_s: u64) -> AttemptPolicy {
        AttemptPolicy {
            not_sent_attempts_max: NOT_SENT_ATTEMPTS_MAX,
            not_sent_retry_base_ms: NOT_SENT_RETRY_BASE_MS,
            blocked_pause_ms: BLOCKED_PAUSE_MS as i64,
            status_check_base_ms: status_check_base_s as i64 * 1000,
            status_check_max_ms: status_check_max_s as i64 * 1000,
            unknown_deadline_ms: unknown_deadline_s as i64 * 1000,
        }
    }
}

#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    /// Accepts go through here: concurrent ones share a transaction.
    pub accepts: AcceptQueue,
    /// Workers record upstream answers through here, batched the same way.
    pub finishes: FinishQueue,
    pub provider: Arc<dyn Provider>,
    pub hub: Arc<Hub>,
    pub settings: Arc<Settings>,
}

/// Batches of each kind in flight at once on PostgreSQL (see `recarga_store::group_commit`).
pub const ACCEPT_LANES_PG: usize = 4;

impl Services {
    /// Starts the accept and finish queues over `store`: one lane on SQLite
    /// (one writer), [`ACCEPT_LANES_PG`] on PostgreSQL.
    pub fn new(store: Arc<dyn Store>, provider: Arc<dyn Provider>, settings: Settings) -> Services {
        let lanes = if store.engine() == "sqlite" { 1 } else { ACCEPT_LANES_PG };
        Services {
            accepts: AcceptQueue::start(store.clone(), lanes),
            finishes: FinishQueue::start(store.clone(), lanes),
            store,
            provider,
            hub: Hub::new(),
            settings: Arc::new(settings),
        }
    }
}
