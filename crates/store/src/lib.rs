//! The only place SQL lives.
//!
//! [`Store`] is everything the gateway asks of its database, as whole business
//! operations: each money change is one method, and each method is one DB
//! transaction that writes the balance and its ledger entry together. No method
//! ever waits on the network while it holds a transaction.
//!
//! Each aggregate has its own file, its own small trait and one body of SQL
//! for both engines (a macro each; `common.rs` says what differs):
//!
//! | file | trait | what |
//! |---|---|---|
//! | `customers.rs` | [`CustomerStore`] | customers and their settings |
//! | `ledger.rs` | [`LedgerStore`] | operator credits and debits, ledger reads |
//! | `keys.rs` | [`KeyStore`] | API keys: issued, imported, rotated, revoked |
//! | `topups.rs`, `accept.rs` | [`TopupStore`] | the accept transaction, top-up reads |
//! | `queue.rs`, `finish.rs` | [`QueueStore`] | claims, upstream answers, rescue, status checks |
//! | `processes.rs` | [`ProcessStore`] | the processes that claim work; a dead one's claims rescued at once |
//! | `settle.rs` | [`SettleStore`] | capture / release, resolving UNKNOWN |
//! | `audit.rs` | [`AuditStore`] | the ledger invariants |
//! | `imports.rs` | [`ImportStore`] | customers and history imported from the old system |
//! | `operators.rs` | [`OperatorStore`] | the pages' state: operators, sessions, login throttling, audit rows |
//! | `ops.rs` | [`OpsStore`] | the pages' read models |
//! | `reconcile.rs` | [`ReconcileStore`] | statements, reconciliation runs, their rows and proposals |
//! | `statements.rs` | [`StatementStore`] | a customer's statement: opening balance and ledger entries of a period |
//!
//! `legacy_source.rs` reads the old system's database (read-only), the
//! source of an import.
//!
//! [`Store`] is all of them. [`PgStore`] (PostgreSQL, for replicas) and
//! [`SqliteStore`] (embedded, zero setup) implement it. Amounts are `BIGINT`
//! minor units and times are `BIGINT` milliseconds on both engines, so
//! nothing is lost in translation.

mod accept;
mod audit;
mod common;
mod customers;
mod finish;
pub mod group_commit;
mod imports;
mod keys;
mod ledger;
pub mod legacy_source;
mod model;
mod operators;
mod ops;
mod pg;
mod processes;
mod queue;
mod reconcile;
mod settle;
mod sqlite;
mod statements;
pub mod testing;
mod topups;
#[cfg(test)]
mod upgrade_tests;

pub use audit::AuditStore;
pub use customers::CustomerStore;
pub use group_commit::{AcceptQueue, FinishQueue};
pub use imports::{
    CustomerImport, CustomerImportState, ImportStore, ImportWritten, ImportedCustomer, LegacyHistory, LegacyHistoryRow,
    LegacyTopupRow, LegacyTotals,
};
pub use keys::KeyStore;
pub use ledger::LedgerStore;
pub use model::*;
pub use operators::*;
pub use ops::*;
pub use pg::PgStore;
pub use processes::ProcessStore;
pub use queue::QueueStore;
pub use reconcile::{NewRun, NewStatement, ReconcileProposal, ReconcileRow, ReconcileStore, RunRecord};
pub use settle::{EXPIRED_NOT_SENT, SettleStore};
pub use sqlite::SqliteStore;
pub use statements::{StatementEntry, StatementStore};
pub use topups::TopupStore;

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

/// The database itself: which engine, its schema, whether it answers, and
/// its change notifications.
#[async_trait]
pub trait Database {
    /// `"postgres"` or `"sqlite"`.
    fn engine(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;
    /// Changes made by any process (PostgreSQL `LISTEN/NOTIFY`), or `None`
    /// where the engine cannot tell (SQLite: callers poll).
    async fn subscribe(&self) -> Result<Option<tokio::sync::mpsc::Receiver<StoreEvent>>>;
}

/// Everything the gateway asks of its database, one small trait per
/// aggregate (see the crate docs). Both engines implement every one, so an
/// `Arc<dyn Store>` answers them all.
pub trait Store:
    Database
    + CustomerStore
    + LedgerStore
    + KeyStore
    + TopupStore
    + QueueStore
    + SettleStore
    + AuditStore
    + OperatorStore
    + OpsStore
    + ProcessStore
    + ImportStore
    + ReconcileStore
    + StatementStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Database
        + CustomerStore
        + LedgerStore
        + KeyStore
        + TopupStore
        + QueueStore
        + SettleStore
        + AuditStore
        + OperatorStore
        + OpsStore
        + ProcessStore
        + ImportStore
        + ReconcileStore
        + StatementStore
        + Send
        + Sync
        + 'static
{
}

/// Opens the store named by `database_url` (`postgres://…`, `sqlite://…` or a
/// plain file path) without migrating it.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>> {
    connect_with(database_url, pg::PG_POOL_MAX).await
}

/// [`connect`] with an explicit PostgreSQL pool size (SQLite ignores it).
pub async fn connect_with(database_url: &str, pg_pool_max: u32) -> Result<Arc<dyn Store>> {
    connect_sized(database_url, pg_pool_max, pg::PG_WORKER_POOL_MAX).await
}

/// [`connect`] with explicit PostgreSQL pool sizes: the main pool and the
/// workers' own (claims and finishes). SQLite ignores both.
pub async fn connect_sized(database_url: &str, pg_pool_max: u32, pg_worker_pool_max: u32) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(
            PgStore::connect_pools(database_url, pg_pool_max, pg_worker_pool_max).await?,
        ))
    } else {
        let path = database_url.strip_prefix("sqlite://").unwrap_or(database_url);
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    }
}

/// Milliseconds since the Unix epoch: the one clock every row uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
