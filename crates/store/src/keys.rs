//! API keys: issued keys (`rk_…`, found by their prefix) and keys imported
//! from the old system (found by customer id and digest). Only digests are
//! stored. Issuing, importing, rotating and revoking are audited in the same
//! transaction.

use crate::{ApiKey, Customer, NewApiKey, Result};
use async_trait::async_trait;

#[async_trait]
pub trait KeyStore {
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
}

/// The key columns of a caller read, aliased for [`crate::model::CallerRow`].
macro_rules! key_columns {
    () => {
        "k.id AS key_id, k.prefix AS key_prefix, k.digest AS key_digest, k.label AS key_label,
         k.created_at AS key_created_at, k.revoked_at AS key_revoked_at, k.kind AS key_kind, k.hint AS key_hint,
         k.expires_at AS key_expires_at, k.last_used_at AS key_last_used_at, k.replaced_by AS key_replaced_by"
    };
}
pub(crate) use key_columns;

macro_rules! impl_keys {
    ($store:ty, for_update = $fu:literal) => {
        #[async_trait::async_trait]
        impl $crate::keys::KeyStore for $store {
            async fn insert_api_key(&self, key: &$crate::NewApiKey, actor: &str) -> $crate::Result<()> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO api_keys (id, customer_id, prefix, digest, label, created_at, kind, hint)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&key.id)
                .bind(&key.customer_id)
                .bind(&key.prefix)
                .bind(&key.digest)
                .bind(&key.label)
                .bind(now)
                .bind(&key.kind)
                .bind(&key.hint)
                .execute(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                let action = if key.kind == "imported" { "key.import" } else { "key.create" };
                let audit = $crate::common::AuditRecord {
                    actor,
                    action,
                    subject: &key.customer_id,
                    before: None,
                    after: Some(key.prefix.clone()),
                    reason: None,
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_api_key(&self, prefix: &str) -> $crate::Result<Option<$crate::ApiKey>> {
                Ok(sqlx::query_as::<_, $crate::ApiKey>("SELECT * FROM api_keys WHERE prefix = $1 OR id = $1")
                    .bind(prefix)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn find_caller(&self, prefix: &str) -> $crate::Result<Option<($crate::ApiKey, $crate::Customer)>> {
                let row = sqlx::query_as::<_, $crate::model::CallerRow>(concat!(
                    "SELECT c.*, ", $crate::keys::key_columns!(),
                    " FROM api_keys k JOIN customers c ON c.id = k.customer_id WHERE k.prefix = $1"
                ))
                .bind(prefix)
                .fetch_optional(self.read())
                .await?;
                Ok(row.map($crate::model::CallerRow::split))
            }

            async fn find_imported_caller(
                &self,
                customer_id: &str,
                digest: &str,
            ) -> $crate::Result<Option<($crate::ApiKey, $crate::Customer)>> {
                // The newest live key first: an old key may have been imported twice.
                let row = sqlx::query_as::<_, $crate::model::CallerRow>(concat!(
                    "SELECT c.*, ", $crate::keys::key_columns!(),
                    " FROM api_keys k JOIN customers c ON c.id = k.customer_id
                      WHERE k.customer_id = $1 AND k.digest = $2 AND k.kind = 'imported'
                      ORDER BY (k.revoked_at IS NULL) DESC, k.created_at DESC LIMIT 1"
                ))
                .bind(customer_id)
                .bind(digest)
                .fetch_optional(self.read())
                .await?;
                Ok(row.map($crate::model::CallerRow::split))
            }

            async fn keys_with_digest(&self, digest: &str) -> $crate::Result<Vec<$crate::ApiKey>> {
                Ok(sqlx::query_as::<_, $crate::ApiKey>("SELECT * FROM api_keys WHERE digest = $1 ORDER BY created_at")
                    .bind(digest)
                    .fetch_all(self.read())
                    .await?)
            }

            async fn touch_api_key(&self, key_id: &str, at: i64) -> $crate::Result<()> {
                // Outside the accept transaction, best effort, at most once a minute a key.
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
                )
                .bind(key_id)
                .bind(at)
                .bind(at - 60_000)
                .execute(self.write_pool())
                .await?;
                Ok(())
            }

            async fn rotate_api_key(
                &self,
                old_id: &str,
                successor: &$crate::NewApiKey,
                old_expires_at: i64,
                actor: &str,
            ) -> $crate::Result<$crate::ApiKey> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let old = sqlx::query_as::<_, $crate::ApiKey>(concat!(
                    "SELECT * FROM api_keys WHERE (id = $1 OR prefix = $1) ",
                    $fu
                ))
                .bind(old_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or($crate::StoreError::NotFound)?;
                if old.revoked_at.is_some() || old.customer_id != successor.customer_id {
                    return Err($crate::StoreError::WrongState("only a live key of the same customer can be rotated".into()));
                }
                sqlx::query(
                    "INSERT INTO api_keys (id, customer_id, prefix, digest, label, created_at, kind, hint)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&successor.id)
                .bind(&successor.customer_id)
                .bind(&successor.prefix)
                .bind(&successor.digest)
                .bind(&successor.label)
                .bind(now)
                .bind(&successor.kind)
                .bind(&successor.hint)
                .execute(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                let retired = sqlx::query_as::<_, $crate::ApiKey>(
                    "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END,
                        replaced_by = $3 WHERE id = $1 RETURNING *",
                )
                .bind(&old.id)
                .bind(old_expires_at)
                .bind(&successor.id)
                .fetch_one(&mut *tx)
                .await?;
                let audit = $crate::common::AuditRecord {
                    actor,
                    action: "key.rotate",
                    subject: &old.customer_id,
                    before: Some(old.prefix.clone()),
                    after: Some(format!("{} (old key works until {})", successor.prefix, old_expires_at)),
                    reason: None,
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(retired)
            }

            async fn list_api_keys(&self, customer_id: &str) -> $crate::Result<Vec<$crate::ApiKey>> {
                Ok(sqlx::query_as::<_, $crate::ApiKey>("SELECT * FROM api_keys WHERE customer_id = $1 ORDER BY created_at, id")
                    .bind(customer_id)
                    .fetch_all(self.read())
                    .await?)
            }

            async fn revoke_api_key(&self, key_id: &str, actor: &str) -> $crate::Result<$crate::ApiKey> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let key = sqlx::query_as::<_, $crate::ApiKey>(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 OR prefix = $1 RETURNING *",
                )
                .bind(key_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or($crate::StoreError::NotFound)?;
                let audit = $crate::common::AuditRecord {
                    actor,
                    action: "key.revoke",
                    subject: &key.customer_id,
                    before: None,
                    after: Some(key.prefix.clone()),
                    reason: None,
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(key)
            }
        }
    };
}

pub(crate) use impl_keys;
