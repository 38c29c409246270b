//! The only place SQL lives.
//!
//! [`Store`] is everything the gateway asks of its database, as whole business
//! operations: each money change is one method, and each method is one DB
//! transaction that writes the balance and its ledger entry together. No method
//! ever waits on the network while it holds a transaction.
//!
//! Two engines implement it from one body of SQL ([`sql`]): [`PgStore`]
//! (PostgreSQL, for replicas) and [`SqliteStore`] (embedded, zero setup). The
//! SQL both understand is shared; the few differences (row locks, `BEGIN
//! IMMEDIATE`) are parameters. Amounts are `BIGINT` minor units and times are
//! `BIGINT` milliseconds on both engines, so nothing is lost in translation.

mod accept;
pub mod group_commit;
mod model;
mod ops;
mod pg;
mod sql;
mod sqlite;
pub mod testing;
#[cfg(test)]
mod upgrade_tests;

pub use group_commit::{AcceptQueue, FinishQueue};
pub use model::*;
pub use ops::*;
pub use pg::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::sync::Arc;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("rolling 24 h limit exceeded")]
    DailyLimitExceeded,
    #[error("customer is inactive")]
    CustomerInactive,
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("refused by a database rule: {0}")]
    Constraint(String),
    #[error("the top-up is not in a state that allows this: {0}")]
    WrongState(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The accept decision refused one request (see `recarga_domain::accept`).
    #[error("refused: {0:?}")]
    Refused(recarga_domain::Refusal),
}

impl StoreError {
    /// The database could not be reached or had no free connection: the
    /// request may be retried (with the same reference).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                // A connection opened while the server starts up can fail its
                // handshake (seen: "unexpected response from SSLRequest").
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // The server is shutting down or restarting (57P01–57P03: admin
            // or crash shutdown, cannot connect now) or the connection broke
            // (class 08). A write may or may not have committed: the caller
            // retries with the same reference and idempotency tells.
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
            _ => false,
        }
    }
}

/// Everything the gateway asks of its database. See the crate docs.
#[async_trait]
pub trait Store: OpsStore + Send + Sync + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn engine(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // Customers and money adjustments.
    async fn create_customer(&self, new: &NewCustomer, actor: &str) -> Result<Customer>;
    async fn get_customer(&self, id: &str) -> Result<Option<Customer>>;
    async fn list_customers(&self) -> Result<Vec<Customer>>;
    async fn update_customer(&self, id: &str, patch: &CustomerPatch, actor: &str) -> Result<Customer>;
    /// Operator credit (positive) or debit (negative), with its ledger entry.
    async fn adjust_balance(&self, adj: &Adjustment) -> Result<LedgerEntry>;
    async fn ledger(&self, customer_id: &str, limit: i64) -> Result<Vec<LedgerEntry>>;

    // API keys.
    async fn insert_api_key(&self, key: &NewApiKey, actor: &str) -> Result<()>;
    /// A key by its prefix or id.
    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKey>>;
    /// A key and its customer's current row, in one read (every API request).
    async fn find_caller(&self, prefix: &str) -> Result<Option<(ApiKey, Customer)>>;
    /// An imported key (any string) of `customer_id` by its digest, with the customer.
    async fn find_imported_caller(&self, customer_id: &str, digest: &str) -> Result<Option<(ApiKey, Customer)>>;
    /// Every key (any customer) with this digest: an imported key may repeat.
    async fn keys_with_digest(&self, digest: &str) -> Result<Vec<ApiKey>>;
    /// Records that a key was used (at most one write a minute per key).
    async fn touch_api_key(&self, key_id: &str, at: i64) -> Result<()>;
    /// Issues `successor` and retires the key `old_id` (id or prefix) at
    /// `old_expires_at`; returns the old key as retired.
    async fn rotate_api_key(
        &self,
        old_id: &str,
        successor: &NewApiKey,
        old_expires_at: i64,
        actor: &str,
    ) -> Result<ApiKey>;
    async fn list_api_keys(&self, customer_id: &str) -> Result<Vec<ApiKey>>;
    async fn revoke_api_key(&self, key_id: &str, actor: &str) -> Result<ApiKey>;

    // Top-ups.
    /// The accept transaction for several requests at once (group commit):
    /// for each, in order, idempotency + row + hold + balance, or the existing
    /// top-up for its `(customer, reference)`, or its own refusal
    /// (insufficient funds, daily limit, inactive, unknown customer). One DB
    /// transaction and one commit for the whole batch; an `Err` for the batch
    /// means nothing was written.
    async fn accept_topups(&self, batch: &[NewTopup]) -> Result<Vec<Result<Accepted>>>;
    /// [`Store::accept_topups`] for one request.
    async fn accept_topup(&self, new: &NewTopup) -> Result<Accepted> {
        self.accept_topups(std::slice::from_ref(new))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::WrongState("no answer for the request".into())))
    }
    async fn get_topup(&self, id: &str) -> Result<Option<Topup>>;
    async fn find_topup_by_reference(&self, customer_id: &str, reference: &str) -> Result<Option<Topup>>;
    async fn list_topups(&self, filter: &TopupFilter) -> Result<Vec<Topup>>;
    async fn exchanges(&self, topup_id: &str) -> Result<Vec<Exchange>>;
    async fn events(&self, topup_id: &str) -> Result<Vec<TopupEvent>>;

    // The queue.
    /// PENDING → PROCESSING for up to `limit` due rows, leased to `owner`.
    async fn claim_pending(&self, owner: &str, lease_ms: i64, limit: i64) -> Result<Vec<Topup>>;
    /// Several finished attempts in one transaction (group commit), each
    /// applied as [`Store::finish_attempt`] would; an `Err` writes nothing.
    async fn finish_attempts(&self, batch: &[Finish]) -> Result<Vec<Result<Option<Topup>>>>;
    /// Records one upstream attempt and applies its outcome, guarded by the
    /// lease (or by UNKNOWN, when a rescuer got there first).
    async fn finish_attempt(&self, finish: &Finish) -> Result<Option<Topup>> {
        self.finish_attempts(std::slice::from_ref(finish))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::WrongState("no answer for the attempt".into())))
    }
    /// PROCESSING rows whose lease expired become UNKNOWN (never resent).
    async fn rescue_expired(&self, check_deadline_ms: i64) -> Result<Vec<String>>;
    /// UNKNOWN rows due for a status query; pushes their next check by `hold_ms`.
    async fn claim_status_checks(&self, hold_ms: i64, limit: i64) -> Result<Vec<Topup>>;
    /// Records a status query that settled nothing and schedules the next one.
    async fn record_check(&self, topup_id: &str, exchange: &NewExchange, next_check_at: i64) -> Result<()>;
    /// UNKNOWN → SUCCESS | FAILED, by status query or operator.
    async fn resolve_unknown(&self, resolution: &Resolution) -> Result<Topup>;
    async fn list_unknown(&self) -> Result<Vec<Topup>>;
    async fn queue_counts(&self) -> Result<QueueCounts>;
    /// PENDING / PROCESSING / UNKNOWN counts only, from partial indexes.
    async fn queue_backlog(&self) -> Result<QueueBacklog>;

    /// Changes made by any process (PostgreSQL `LISTEN/NOTIFY`), or `None`
    /// where the engine cannot tell (SQLite: callers poll).
    async fn subscribe(&self) -> Result<Option<tokio::sync::mpsc::Receiver<StoreEvent>>>;

    /// Every ledger invariant, checked in the database.
    async fn audit(&self) -> Result<AuditReport>;
}

/// Opens the store named by `database_url` (`postgres://…`, `sqlite://…` or a
/// plain file path) without migrating it.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>> {
    connect_with(database_url, pg::PG_POOL_MAX).await
}

/// [`connect`] with an explicit PostgreSQL pool size (SQLite ignores it).
pub async fn connect_with(database_url: &str, pg_pool_max: u32) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect_with(database_url, pg_pool_max).await?))
    } else {
        let path = database_url.strip_prefix("sqlite://").unwrap_or(database_url);
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    }
}

/// Milliseconds since the Unix epoch: the one clock every row uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
