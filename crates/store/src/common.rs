//! What every aggregate's SQL shares: the error mapping, the records of the
//! small inserts each money change makes (ledger entry, state event, audit
//! row, upstream exchange) and the helpers that write them inside the
//! caller's transaction.
//!
//! The SQL is written once for both engines. Both accept `$1, $2…`
//! placeholders, `RETURNING`, `ON CONFLICT … DO NOTHING` and partial indexes,
//! so only three fragments differ, passed to each aggregate's macro: the row
//! lock suffix (`FOR UPDATE` / `FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! nothing on SQLite, whose writers are serialised by `BEGIN IMMEDIATE`) and
//! the notification statement. Each engine module provides `begin()` (a
//! write transaction), `read()` (the pool for plain reads) and
//! `write_pool()`.

use crate::StoreError;
use recarga_domain::{LedgerKind, TopupStatus};

/// Maps a database error to the store's vocabulary: rule violations become
/// [`StoreError::Constraint`] so the HTTP layer can answer 4xx, not 500.
pub(crate) fn map_db(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        use sqlx::error::ErrorKind;
        match db.kind() {
            ErrorKind::CheckViolation | ErrorKind::NotNullViolation | ErrorKind::ForeignKeyViolation => {
                return StoreError::Constraint(db.message().to_string());
            }
            ErrorKind::UniqueViolation => return StoreError::AlreadyExists(db.message().to_string()),
            _ => {}
        }
    }
    StoreError::Database(err)
}

/// A balance move and its ledger entry (the running balance is the result).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BalanceMove<'a> {
    pub customer_id: &'a str,
    pub topup_id: Option<&'a str>,
    pub kind: LedgerKind,
    pub amount: i64,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub now: i64,
}

/// A state change of a top-up, for its history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRecord<'a> {
    pub topup_id: &'a str,
    pub from: Option<TopupStatus>,
    pub to: TopupStatus,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub now: i64,
}

/// An operator action, with what it changed and why.
#[derive(Debug, Clone)]
pub(crate) struct AuditRecord<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<&'a str>,
    pub now: i64,
}

/// Generates the helpers every aggregate's SQL uses, on `$store`.
macro_rules! impl_common {
    ($store:ty, $db:ty, $conn:ty, for_update = $fu:literal, notify = $notify:literal) => {
        impl $store {
            /// Appends `(…, …)`: a parenthesised list of bound values, for `IN`.
            fn push_list(q: &mut sqlx::QueryBuilder<$db>, items: impl IntoIterator<Item = String>) {
                q.push("(");
                let mut list = q.separated(", ");
                for item in items {
                    list.push_bind(item);
                }
                q.push(")");
            }

            /// Tells other processes (on commit) that something changed; a no-op
            /// where the engine has no notifications.
            async fn notify(conn: &mut $conn, event: &$crate::StoreEvent) -> $crate::Result<()> {
                if $notify.is_empty() {
                    return Ok(());
                }
                let payload = match event {
                    $crate::StoreEvent::Work => String::new(),
                    $crate::StoreEvent::Topup(id) => id.clone(),
                };
                sqlx::query($notify).bind(payload).execute(&mut *conn).await?;
                Ok(())
            }

            async fn insert_event(conn: &mut $conn, e: $crate::common::EventRecord<'_>) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(e.topup_id)
                .bind(e.from.map(|s| s.as_str()))
                .bind(e.to.as_str())
                .bind(e.actor)
                .bind(e.reason)
                .bind(e.now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn insert_audit(conn: &mut $conn, a: $crate::common::AuditRecord<'_>) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, subject, before, after, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(a.actor)
                .bind(a.action)
                .bind(a.subject)
                .bind(a.before)
                .bind(a.after)
                .bind(a.reason)
                .bind(a.now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn insert_exchange(conn: &mut $conn, topup_id: &str, ex: &$crate::NewExchange) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO exchanges (topup_id, kind, provider, request, response, http_status, outcome, detail,
                                            trans_id, ven_transid, started_at, ended_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(topup_id)
                .bind(ex.kind.as_str())
                .bind(&ex.provider)
                .bind(&ex.request)
                .bind(&ex.response)
                .bind(ex.http_status)
                .bind(ex.outcome.as_str())
                .bind(&ex.detail)
                .bind(&ex.trans_id)
                .bind(&ex.ven_transid)
                .bind(ex.started_at)
                .bind(ex.ended_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Moves the balance within the credit limit and writes the matching
            /// ledger entry: the one way a balance changes outside the accept batch.
            async fn move_balance(
                conn: &mut $conn,
                m: $crate::common::BalanceMove<'_>,
            ) -> $crate::Result<$crate::LedgerEntry> {
                let balance: Option<i64> = sqlx::query_scalar(
                    "UPDATE customers SET balance = balance + $2, updated_at = $3, version = version + 1
                     WHERE id = $1 AND balance + $2 >= -credit_limit RETURNING balance",
                )
                .bind(m.customer_id)
                .bind(m.amount)
                .bind(m.now)
                .fetch_optional(&mut *conn)
                .await
                .map_err($crate::common::map_db)?;
                let Some(balance) = balance else {
                    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM customers WHERE id = $1")
                        .bind(m.customer_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    return Err(match exists {
                        Some(_) => $crate::StoreError::InsufficientFunds,
                        None => $crate::StoreError::NotFound,
                    });
                };
                sqlx::query_as::<_, $crate::LedgerEntry>(
                    "INSERT INTO ledger (customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                )
                .bind(m.customer_id)
                .bind(m.topup_id)
                .bind(m.kind.as_str())
                .bind(m.amount)
                .bind(balance)
                .bind(m.actor)
                .bind(m.reason)
                .bind(m.now)
                .fetch_one(&mut *conn)
                .await
                .map_err($crate::common::map_db)
            }

            async fn lock_topup(conn: &mut $conn, id: &str) -> $crate::Result<$crate::Topup> {
                sqlx::query_as::<_, $crate::Topup>(concat!("SELECT * FROM topups WHERE id = $1 ", $fu))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or($crate::StoreError::NotFound)
            }
        }
    };
}

pub(crate) use impl_common;
