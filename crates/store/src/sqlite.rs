//! SQLite: the zero-setup embedded engine.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection (writers queue in the pool instead of spinning on
//! `SQLITE_BUSY`) and every write transaction starts with `BEGIN IMMEDIATE`
//! (so a read-then-write transaction never fails to upgrade its lock, even
//! when another process, such as the operator CLI, writes too). Reads use a
//! separate pool and see the last commit through WAL.

use crate::processes::Membership;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Read connections; SQLite readers do not block each other under WAL.
pub const SQLITE_READERS_MAX: u32 = 8;
/// How long a statement waits for another process's write lock.
pub const SQLITE_BUSY_TIMEOUT_S: u64 = 30;
/// How long a request may wait for the single writer connection.
pub const SQLITE_ACQUIRE_TIMEOUT_S: u64 = 30;

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    pub(crate) member: Arc<Membership<()>>,
}

impl SqliteStore {
    pub(crate) const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> crate::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| crate::StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_S));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(SQLITE_ACQUIRE_TIMEOUT_S))
            .connect_with(options.clone())
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(SQLITE_READERS_MAX)
            .acquire_timeout(Duration::from_secs(SQLITE_ACQUIRE_TIMEOUT_S))
            .connect_with(options.read_only(false))
            .await?;
        Ok(SqliteStore {
            writer,
            readers,
            member: Arc::default(),
        })
    }

    fn read(&self) -> &SqlitePool {
        &self.readers
    }

    pub(crate) fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    pub(crate) async fn begin(&self) -> crate::Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The workers' write transaction: SQLite has one writer for everyone.
    async fn begin_work(&self) -> crate::Result<Transaction<'static, Sqlite>> {
        self.begin().await
    }

    /// SQLite has no notifications: other processes on the same file poll.
    async fn subscribe_events(&self) -> crate::Result<Option<tokio::sync::mpsc::Receiver<crate::StoreEvent>>> {
        Ok(None)
    }
}

#[async_trait::async_trait]
impl crate::Database for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> crate::Result<()> {
        Self::MIGRATOR.run(self.write_pool()).await?;
        Ok(())
    }

    async fn ping(&self) -> crate::Result<()> {
        sqlx::query("SELECT 1").execute(self.read()).await?;
        Ok(())
    }

    async fn subscribe(&self) -> crate::Result<Option<tokio::sync::mpsc::Receiver<crate::StoreEvent>>> {
        self.subscribe_events().await
    }
}

crate::common::impl_common!(
    SqliteStore,
    Sqlite,
    sqlx::SqliteConnection,
    for_update = "",
    notify = ""
);
crate::customers::impl_customers!(SqliteStore, for_update = "");
crate::ledger::impl_ledger!(SqliteStore);
crate::keys::impl_keys!(SqliteStore, for_update = "");
crate::topups::impl_topups!(SqliteStore, Sqlite);
crate::accept::impl_accept_io!(SqliteStore, Sqlite, sqlx::SqliteConnection, for_update = "");
crate::queue::impl_queue!(SqliteStore, sqlx::SqliteConnection, skip_locked = "");
crate::finish::impl_finish!(SqliteStore, sqlx::SqliteConnection);
crate::settle::impl_settle!(SqliteStore, sqlx::SqliteConnection);
crate::audit::impl_audit!(SqliteStore);
crate::imports::impl_import_reads!(SqliteStore);
crate::imports::impl_imports!(SqliteStore, Sqlite, sqlx::SqliteConnection, bump_numbers = "SELECT 1");
crate::processes::impl_processes!(
    SqliteStore,
    dead = "SELECT DISTINCT lease_process FROM topups
            WHERE status = 'PROCESSING' AND lease_process IS NOT NULL AND lease_process <> $1
              AND lease_process NOT IN (SELECT id FROM processes)"
);
crate::operators::impl_operators!(SqliteStore, Sqlite);
crate::ops::impl_ops!(SqliteStore, Sqlite);
crate::reconcile::impl_reconcile!(SqliteStore, Sqlite);
crate::statements::impl_statements!(SqliteStore);
