//! PostgreSQL: the system of record when running replicas.
//!
//! One pool serves reads and writes; the workers' claims and finishes have a
//! small pool of their own, so an upstream answer is written even while the
//! requests hold every connection of the main one. Row locks (`FOR UPDATE`,
//! and `SKIP LOCKED` when claiming work) let any number of processes share
//! the queue. A process that claims work also holds one more connection, for
//! its advisory lock (see `processes.rs`).

use crate::processes::Membership;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::sync::Arc;
use std::time::Duration;

/// Connections per process; replicas multiply it, so keep it modest.
pub const PG_POOL_MAX: u32 = 16;
/// Connections per process reserved for the workers' claims and finishes.
pub const PG_WORKER_POOL_MAX: u32 = 4;
/// Notifications buffered between the listener and the process.
pub const EVENT_BUFFER: usize = 4096;
/// How long a request may wait for a free connection before failing.
pub const PG_ACQUIRE_TIMEOUT_S: u64 = 10;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The workers' own connections (claims and finishes).
    workers: PgPool,
    pub(crate) member: Arc<Membership<sqlx::PgConnection>>,
}

impl PgStore {
    pub(crate) const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

    pub async fn connect(url: &str) -> crate::Result<Self> {
        Self::connect_with(url, PG_POOL_MAX).await
    }

    /// Opens a pool of at most `max_connections` (replicas multiply it: keep
    /// replicas × this below the server's `max_connections`).
    pub async fn connect_with(url: &str, max_connections: u32) -> crate::Result<Self> {
        Self::connect_pools(url, max_connections, PG_WORKER_POOL_MAX).await
    }

    /// Opens the main pool (at most `max_connections`) and the workers' own
    /// (at most `worker_connections`, opened as they are needed).
    pub async fn connect_pools(url: &str, max_connections: u32, worker_connections: u32) -> crate::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(PG_ACQUIRE_TIMEOUT_S))
            .connect(url)
            .await?;
        let workers = PgPoolOptions::new()
            .max_connections(worker_connections.max(1))
            .acquire_timeout(Duration::from_secs(PG_ACQUIRE_TIMEOUT_S))
            .connect_lazy_with((*pool.connect_options()).clone());
        Ok(PgStore {
            pool,
            workers,
            member: Arc::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn read(&self) -> &PgPool {
        &self.pool
    }

    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> crate::Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// A write transaction on the workers' own pool.
    async fn begin_work(&self) -> crate::Result<Transaction<'static, Postgres>> {
        Ok(self.workers.begin().await?)
    }

    /// Forwards `recarga_work` / `recarga_topup` notifications. The listener
    /// reconnects by itself; notifications sent while it was away are lost,
    /// which only costs latency (every waiter also polls).
    async fn subscribe_events(&self) -> crate::Result<Option<tokio::sync::mpsc::Receiver<crate::StoreEvent>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen_all(["recarga_work", "recarga_topup"]).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        tokio::spawn(async move {
            loop {
                let event = match listener.recv().await {
                    Ok(n) if n.channel() == "recarga_work" => crate::StoreEvent::Work,
                    Ok(n) => crate::StoreEvent::Topup(n.payload().to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener lost its connection; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                // A full buffer drops the hint, never the work: waiters poll.
                if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = tx.try_send(event) {
                    break;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[async_trait::async_trait]
impl crate::Database for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
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
    PgStore,
    Postgres,
    sqlx::PgConnection,
    for_update = "FOR UPDATE",
    notify = "SELECT pg_notify(CASE WHEN $1 = '' THEN 'recarga_work' ELSE 'recarga_topup' END, $1)"
);
crate::customers::impl_customers!(PgStore, for_update = "FOR UPDATE");
crate::ledger::impl_ledger!(PgStore);
crate::keys::impl_keys!(PgStore, for_update = "FOR UPDATE");
crate::topups::impl_topups!(PgStore, Postgres);
crate::accept::impl_accept_io!(PgStore, Postgres, sqlx::PgConnection, for_update = "FOR UPDATE");
crate::queue::impl_queue!(PgStore, sqlx::PgConnection, skip_locked = "FOR UPDATE SKIP LOCKED");
crate::finish::impl_finish!(PgStore, sqlx::PgConnection);
crate::settle::impl_settle!(PgStore, sqlx::PgConnection);
crate::audit::impl_audit!(PgStore);
crate::imports::impl_import_reads!(PgStore);
crate::imports::impl_imports!(
    PgStore,
    Postgres,
    sqlx::PgConnection,
    bump_numbers = "SELECT setval('topups_number_seq', GREATEST((SELECT COALESCE(MAX(number), 1) FROM topups), (SELECT last_value FROM topups_number_seq)))"
);
crate::processes::impl_processes!(
    PgStore,
    dead = "SELECT id FROM processes
            WHERE id <> $1 AND pg_try_advisory_xact_lock(1380143687, (id % 2147483647)::int4) ORDER BY id"
);
crate::operators::impl_operators!(PgStore, Postgres);
crate::ops::impl_ops!(PgStore, Postgres);
crate::reconcile::impl_reconcile!(PgStore, Postgres);
crate::statements::impl_statements!(PgStore);
