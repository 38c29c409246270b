//! The processes that claim work, and the rescue of a dead one's claims.
//!
//! A process that runs workers *joins* once ([`ProcessStore::join`]): it gets
//! a row in `processes`, and every top-up it claims from then on carries that
//! row's id (`topups.lease_process`). When a process dies mid-call (`kill -9`,
//! a crash, a lost host) its PROCESSING top-ups need not wait for their lease
//! to run out: [`ProcessStore::rescue_orphans`] makes them UNKNOWN as soon as
//! the death is known (never PENDING: they may have been sent).
//!
//! How a death is known differs by engine:
//!
//! - **PostgreSQL**: each live process holds a session-level advisory lock
//!   ([`LOCK_SPACE`], its id) on a connection of its own, outside the pools,
//!   for as long as it lives. The lock goes with the connection, so a row
//!   whose lock another session can take belongs to a dead process. Every
//!   replica's scheduler looks each tick, and a restarted process at once.
//! - **SQLite**: one process owns the database (it is embedded). A process
//!   that joins removes every other row: their claims are orphans, rescued by
//!   its first scheduler tick, right after the start.
//!
//! If the lock's connection breaks while the process lives (a database
//! restart), [`ProcessStore::heartbeat`] notices and joins again under a new
//! id; the claims under the old id are rescued like a dead process's, and
//! this process's definite answers for them are still written (a finish of a
//! definite answer applies to an UNKNOWN top-up too).

use crate::Result;
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, Ordering};

/// The first key of every advisory lock a process holds (`"RCRG"`); the
/// second is its `processes.id`.
pub const LOCK_SPACE: i32 = 0x5243_5247;

#[async_trait]
pub trait ProcessStore {
    /// Registers this process as one that claims work (once per store; later
    /// calls return the same id). Its claims carry the id from then on.
    async fn join(&self, label: &str) -> Result<i64>;
    /// Keeps the membership alive: on PostgreSQL, checks the lock's
    /// connection and joins again if it broke. Does nothing before `join`.
    async fn heartbeat(&self) -> Result<()>;
    /// PROCESSING top-ups claimed by processes known to be dead become
    /// UNKNOWN (checked until `check_deadline_ms` from now); returns their ids.
    async fn rescue_orphans(&self, check_deadline_ms: i64) -> Result<Vec<String>>;
}

/// This process's membership as a store keeps it: its id (0 before `join`),
/// its label, and what keeps it alive (`C`: the lock's connection on
/// PostgreSQL, nothing on SQLite).
pub(crate) struct Membership<C> {
    id: AtomicI64,
    pub(crate) held: tokio::sync::Mutex<Option<(String, C)>>,
}

impl<C> Default for Membership<C> {
    fn default() -> Self {
        Membership {
            id: AtomicI64::new(0),
            held: tokio::sync::Mutex::new(None),
        }
    }
}

impl<C> Membership<C> {
    /// The id claims are stamped with; `None` before `join`.
    pub(crate) fn id(&self) -> Option<i64> {
        Some(self.id.load(Ordering::SeqCst)).filter(|&id| id > 0)
    }

    pub(crate) fn set(&self, id: i64) {
        self.id.store(id, Ordering::SeqCst);
    }
}

impl crate::PgStore {
    /// A new row and its advisory lock, on a connection of its own: both in
    /// one transaction, so no other process ever sees the row unlocked.
    async fn open_membership(&self, label: &str) -> Result<(i64, sqlx::PgConnection)> {
        use sqlx::{Connection, PgConnection};
        let mut conn = PgConnection::connect_with(&self.pool().connect_options()).await?;
        let now = crate::now_ms();
        let mut tx = conn.begin().await?;
        let id: i64 =
            sqlx::query_scalar("INSERT INTO processes (label, started_at, seen_at) VALUES ($1, $2, $2) RETURNING id")
                .bind(label)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("SELECT pg_advisory_lock($1, ($2 % 2147483647)::int4)")
            .bind(LOCK_SPACE)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((id, conn))
    }

    pub(crate) async fn join_engine(&self, label: &str) -> Result<i64> {
        let mut held = self.member.held.lock().await;
        if let (Some(id), Some(_)) = (self.member.id(), held.as_ref()) {
            return Ok(id);
        }
        let (id, conn) = self.open_membership(label).await?;
        *held = Some((label.to_string(), conn));
        self.member.set(id);
        tracing::info!(process = id, label, "joined as a process that claims work");
        Ok(id)
    }

    pub(crate) async fn heartbeat_engine(&self) -> Result<()> {
        let Some(id) = self.member.id() else { return Ok(()) };
        let mut held = self.member.held.lock().await;
        let Some((label, conn)) = held.as_mut() else {
            return Ok(());
        };
        let seen = sqlx::query("UPDATE processes SET seen_at = $2 WHERE id = $1")
            .bind(id)
            .bind(crate::now_ms())
            .execute(&mut *conn)
            .await;
        if let Err(e) = seen {
            let label = label.clone();
            tracing::warn!(process = id, error = %e, "the process lock's connection broke: joining again");
            *held = None;
            let (new_id, conn) = self.open_membership(&label).await?;
            *held = Some((label, conn));
            self.member.set(new_id);
            tracing::warn!(
                process = new_id,
                old = id,
                "joined again; claims under the old id will be rescued"
            );
        }
        Ok(())
    }
}

impl crate::SqliteStore {
    /// Joins and removes every other process: on SQLite a starting process
    /// owns the database alone, so their claims are orphans.
    pub(crate) async fn join_engine(&self, label: &str) -> Result<i64> {
        let mut held = self.member.held.lock().await;
        if let Some(id) = self.member.id() {
            return Ok(id);
        }
        let now = crate::now_ms();
        let mut tx = self.begin().await?;
        let id: i64 =
            sqlx::query_scalar("INSERT INTO processes (label, started_at, seen_at) VALUES ($1, $2, $2) RETURNING id")
                .bind(label)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM processes WHERE id <> $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        *held = Some((label.to_string(), ()));
        self.member.set(id);
        tracing::info!(process = id, label, "joined as the process that claims work");
        Ok(id)
    }

    pub(crate) async fn heartbeat_engine(&self) -> Result<()> {
        Ok(())
    }
}

macro_rules! impl_processes {
    ($store:ty, dead = $dead:literal) => {
        #[async_trait::async_trait]
        impl $crate::processes::ProcessStore for $store {
            async fn join(&self, label: &str) -> $crate::Result<i64> {
                self.join_engine(label).await
            }

            async fn heartbeat(&self) -> $crate::Result<()> {
                self.heartbeat_engine().await
            }

            async fn rescue_orphans(&self, check_deadline_ms: i64) -> $crate::Result<Vec<String>> {
                let now = $crate::now_ms();
                let me = self.member.id().unwrap_or(0);
                let mut tx = self.begin().await?;
                let dead: Vec<i64> = sqlx::query_scalar($dead).bind(me).fetch_all(&mut *tx).await?;
                let mut ids: Vec<String> = Vec::new();
                for process in dead {
                    let rescued: Vec<String> = sqlx::query_scalar(
                        "UPDATE topups SET status = 'UNKNOWN', lease_owner = NULL, lease_until = NULL,
                            next_check_at = $1, check_deadline = $2, updated_at = $1
                         WHERE status = 'PROCESSING' AND lease_process = $3 RETURNING id",
                    )
                    .bind(now)
                    .bind(now + check_deadline_ms)
                    .bind(process)
                    .fetch_all(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM processes WHERE id = $1")
                        .bind(process)
                        .execute(&mut *tx)
                        .await?;
                    if !rescued.is_empty() {
                        tracing::warn!(
                            process,
                            claims = rescued.len(),
                            "a dead process's claims are rescued"
                        );
                    }
                    ids.extend(rescued);
                }
                let reason = "its process died while the upstream call may have been in flight";
                Self::record_rescues(&mut tx, &ids, reason, now).await?;
                tx.commit().await?;
                Ok(ids)
            }
        }
    };
}

pub(crate) use impl_processes;
