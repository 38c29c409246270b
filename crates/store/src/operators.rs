//! The pages' own state, in the database so it holds across replicas:
//! operator accounts, browser sessions, failed-login throttling, and the
//! audit log's reads and the rows the pages write themselves (logins,
//! logouts, operator accounts).

use crate::Result;
use async_trait::async_trait;
use serde::Serialize;

/// An operator account (`recarga admin create`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Operator {
    pub email: String,
    /// argon2 PHC string; never shown.
    pub password_hash: String,
    /// `admin` (may change things) or `viewer` (reads only).
    pub role: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A change to an operator account ([`OperatorStore::update_operator`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorChange {
    /// Enable (`true`) or disable (`false`); disabling ends the operator's sessions.
    Active(bool),
    /// `admin` or `viewer`; open sessions take it from their next request.
    Role(String),
    /// A new argon2 PHC string; ends the operator's sessions.
    Password(String),
}

impl OperatorChange {
    /// The audit action of this change.
    pub fn action(&self) -> &'static str {
        match self {
            OperatorChange::Active(true) => "operator.enable",
            OperatorChange::Active(false) => "operator.disable",
            OperatorChange::Role(_) => "operator.set_role",
            OperatorChange::Password(_) => "operator.reset_password",
        }
    }

    /// Whether the operator's open sessions end with this change.
    pub fn ends_sessions(&self) -> bool {
        matches!(self, OperatorChange::Active(false) | OperatorChange::Password(_))
    }
}

#[derive(Debug, Clone)]
pub struct NewOperator {
    pub email: String,
    pub password_hash: String,
    pub role: String,
}

/// A browser session, stored by the digest of its cookie token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebSession {
    pub id: String,
    /// `operator` or `customer`.
    pub kind: String,
    /// Operator email (or `break-glass`), or customer id.
    pub subject: String,
    /// `admin`, `viewer` or `customer`.
    pub role: String,
    /// The API key prefix a customer session was opened with: revoking that
    /// key ends the session.
    pub key_prefix: Option<String>,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Failed-login throttling: after `threshold` failures within `window_ms`,
/// each further failure locks the name for `base_ms`, doubling, at most `max_ms`.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub threshold: i64,
    pub base_ms: i64,
    pub max_ms: i64,
    /// Failures older than this are forgotten.
    pub window_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginThrottle {
    pub failures: i64,
    pub locked_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
}

#[async_trait]
pub trait OperatorStore {
    async fn create_operator(&self, new: &NewOperator, actor: &str) -> Result<Operator>;
    async fn get_operator(&self, email: &str) -> Result<Option<Operator>>;
    async fn list_operators(&self) -> Result<Vec<Operator>>;
    /// Changes an operator (one transaction, audited with `actor`; ends its
    /// sessions when [`OperatorChange::ends_sessions`]). `NotFound` if no
    /// such operator.
    async fn update_operator(&self, email: &str, change: &OperatorChange, actor: &str) -> Result<Operator>;

    // Sessions.
    async fn create_session(&self, session: &WebSession) -> Result<()>;
    /// The session with this id, if it has not expired at `now_ms`.
    async fn get_session(&self, id: &str, now_ms: i64) -> Result<Option<WebSession>>;
    async fn delete_session(&self, id: &str) -> Result<()>;
    /// Removes expired sessions; returns how many.
    async fn purge_sessions(&self, now_ms: i64) -> Result<u64>;

    // Failed-login throttling.
    async fn login_throttle(&self, key: &str) -> Result<LoginThrottle>;
    /// Counts a failure and, past the threshold, locks the name.
    async fn record_login_failure(&self, key: &str, now_ms: i64, policy: &LockoutPolicy) -> Result<LoginThrottle>;
    async fn clear_login_failures(&self, key: &str) -> Result<()>;
    /// Removes failure rows whose last failure is before `idle_before_ms`
    /// and that hold no lock at `now_ms`; returns how many.
    async fn purge_login_failures(&self, idle_before_ms: i64, now_ms: i64) -> Result<u64>;

    /// Writes one audit row (logins, logouts, operator accounts).
    async fn append_audit(&self, actor: &str, action: &str, subject: Option<&str>, reason: Option<&str>) -> Result<()>;
    /// Audit rows, newest first; `subject` narrows to one customer / top-up.
    async fn audit_entries(&self, subject: Option<&str>, before_id: Option<i64>, limit: i64)
    -> Result<Vec<AuditEntry>>;
}

macro_rules! impl_operators {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::operators::OperatorStore for $store {
            async fn create_operator(
                &self,
                new: &$crate::NewOperator,
                actor: &str,
            ) -> $crate::Result<$crate::Operator> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let row = sqlx::query_as::<_, $crate::Operator>(
                    "INSERT INTO operators (email, password_hash, role, active, created_at, updated_at)
                     VALUES ($1, $2, $3, TRUE, $4, $4) ON CONFLICT (email) DO NOTHING RETURNING *",
                )
                .bind(&new.email)
                .bind(&new.password_hash)
                .bind(&new.role)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err($crate::common::map_db)?
                .ok_or_else(|| $crate::StoreError::AlreadyExists(format!("operator {}", new.email)))?;
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, subject, before, after, reason, created_at)
                     VALUES ($1, 'operator.create', $2, NULL, $3, NULL, $4)",
                )
                .bind(actor)
                .bind(&new.email)
                .bind(format!("role={}", new.role))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn get_operator(&self, email: &str) -> $crate::Result<Option<$crate::Operator>> {
                Ok(
                    sqlx::query_as::<_, $crate::Operator>("SELECT * FROM operators WHERE email = $1")
                        .bind(email)
                        .fetch_optional(self.read())
                        .await?,
                )
            }

            async fn list_operators(&self) -> $crate::Result<Vec<$crate::Operator>> {
                Ok(
                    sqlx::query_as::<_, $crate::Operator>("SELECT * FROM operators ORDER BY email")
                        .fetch_all(self.read())
                        .await?,
                )
            }

            async fn update_operator(
                &self,
                email: &str,
                change: &$crate::OperatorChange,
                actor: &str,
            ) -> $crate::Result<$crate::Operator> {
                use $crate::OperatorChange;
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let before = sqlx::query_as::<_, $crate::Operator>("SELECT * FROM operators WHERE email = $1")
                    .bind(email)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or($crate::StoreError::NotFound)?;
                let (active, role, hash) = match change {
                    OperatorChange::Active(on) => (*on, None, None),
                    OperatorChange::Role(role) => (before.active, Some(role.clone()), None),
                    OperatorChange::Password(hash) => (before.active, None, Some(hash.clone())),
                };
                let (shown_before, shown_after) = match change {
                    OperatorChange::Active(on) => (
                        Some(format!("active={}", before.active)),
                        Some(format!("active={on}")),
                    ),
                    OperatorChange::Role(role) => (
                        Some(format!("role={}", before.role)),
                        Some(format!("role={role}")),
                    ),
                    OperatorChange::Password(_) => (None, None),
                };
                let row = sqlx::query_as::<_, $crate::Operator>(
                    "UPDATE operators SET active = $2, role = COALESCE($3, role),
                        password_hash = COALESCE($4, password_hash), updated_at = $5
                     WHERE email = $1 RETURNING *",
                )
                .bind(email)
                .bind(active)
                .bind(role)
                .bind(hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                if change.ends_sessions() {
                    sqlx::query("DELETE FROM web_sessions WHERE kind = 'operator' AND subject = $1")
                        .bind(email)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, subject, before, after, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, NULL, $6)",
                )
                .bind(actor)
                .bind(change.action())
                .bind(email)
                .bind(shown_before)
                .bind(shown_after)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn create_session(&self, s: &$crate::WebSession) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO web_sessions (id, kind, subject, role, key_prefix, csrf, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&s.id)
                .bind(&s.kind)
                .bind(&s.subject)
                .bind(&s.role)
                .bind(&s.key_prefix)
                .bind(&s.csrf)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_session(&self, id: &str, now_ms: i64) -> $crate::Result<Option<$crate::WebSession>> {
                Ok(sqlx::query_as::<_, $crate::WebSession>(
                    "SELECT * FROM web_sessions WHERE id = $1 AND expires_at > $2",
                )
                .bind(id)
                .bind(now_ms)
                .fetch_optional(self.read())
                .await?)
            }

            async fn delete_session(&self, id: &str) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query("DELETE FROM web_sessions WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn purge_sessions(&self, now_ms: i64) -> $crate::Result<u64> {
                let mut tx = self.begin().await?;
                let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn login_throttle(&self, key: &str) -> $crate::Result<$crate::LoginThrottle> {
                Ok(sqlx::query_as::<_, $crate::LoginThrottle>(
                    "SELECT failures, locked_until FROM login_failures WHERE login_key = $1",
                )
                .bind(key)
                .fetch_optional(self.read())
                .await?
                .unwrap_or_default())
            }

            async fn record_login_failure(
                &self,
                key: &str,
                now_ms: i64,
                policy: &$crate::LockoutPolicy,
            ) -> $crate::Result<$crate::LoginThrottle> {
                let mut tx = self.begin().await?;
                // One statement: concurrent failures on several replicas all count.
                let failures: i64 = sqlx::query_scalar(
                    "INSERT INTO login_failures (login_key, failures, locked_until, last_failure_at)
                     VALUES ($1, 1, NULL, $2)
                     ON CONFLICT (login_key) DO UPDATE SET
                        failures = CASE WHEN login_failures.last_failure_at < $3 THEN 1
                                        ELSE login_failures.failures + 1 END,
                        last_failure_at = $2
                     RETURNING failures",
                )
                .bind(key)
                .bind(now_ms)
                .bind(now_ms - policy.window_ms)
                .fetch_one(&mut *tx)
                .await?;
                let locked_until = if failures >= policy.threshold {
                    let doublings = (failures - policy.threshold).clamp(0, 30) as u32;
                    let wait = policy
                        .base_ms
                        .saturating_mul(1_i64 << doublings)
                        .min(policy.max_ms);
                    Some(now_ms + wait)
                } else {
                    None
                };
                sqlx::query("UPDATE login_failures SET locked_until = $2 WHERE login_key = $1")
                    .bind(key)
                    .bind(locked_until)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::LoginThrottle {
                    failures,
                    locked_until,
                })
            }

            async fn clear_login_failures(&self, key: &str) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query("DELETE FROM login_failures WHERE login_key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn purge_login_failures(&self, idle_before_ms: i64, now_ms: i64) -> $crate::Result<u64> {
                let mut tx = self.begin().await?;
                let done = sqlx::query(
                    "DELETE FROM login_failures
                     WHERE last_failure_at < $1 AND (locked_until IS NULL OR locked_until <= $2)",
                )
                .bind(idle_before_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn append_audit(
                &self,
                actor: &str,
                action: &str,
                subject: Option<&str>,
                reason: Option<&str>,
            ) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, subject, before, after, reason, created_at)
                     VALUES ($1, $2, $3, NULL, NULL, $4, $5)",
                )
                .bind(actor)
                .bind(action)
                .bind(subject)
                .bind(reason)
                .bind($crate::now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audit_entries(
                &self,
                subject: Option<&str>,
                before_id: Option<i64>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::AuditEntry>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM audit_log WHERE 1 = 1");
                if let Some(s) = subject {
                    q.push(" AND subject = ").push_bind(s.to_string());
                }
                if let Some(b) = before_id {
                    q.push(" AND id < ").push_bind(b);
                }
                q.push(" ORDER BY id DESC LIMIT ")
                    .push_bind(limit.clamp(1, $crate::SEARCH_PAGE_MAX));
                Ok(q.build_query_as::<$crate::AuditEntry>()
                    .fetch_all(self.read())
                    .await?)
            }
        }
    };
}

pub(crate) use impl_operators;
