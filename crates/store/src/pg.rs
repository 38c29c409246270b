//! PostgreSQL: the system of record when running replicas.
//!
//! One pool serves reads and writes. Row locks (`FOR UPDATE`, and `SKIP
//! LOCKED` when claiming work) let any number of processes share the queue.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::time::Duration;

/// Connections per process; replicas multiply it, so keep it modest.
pub const PG_POOL_MAX: u32 = 16;
/// How long a request may wait for a free connection before failing.
pub const PG_ACQUIRE_TIMEOUT_S: u64 = 10;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(crate) const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

    pub async fn connect(url: &str) -> crate::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL_MAX)
            .acquire_timeout(Duration::from_secs(PG_ACQUIRE_TIMEOUT_S))
            .connect(url)
            .await?;
        Ok(PgStore { pool })
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
}

crate::sql::impl_store!(
    PgStore,
    Postgres,
    sqlx::PgConnection,
    engine = "postgres",
    for_update = "FOR UPDATE",
    skip_locked = "FOR UPDATE SKIP LOCKED"
);
