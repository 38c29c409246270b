//! The SQL shared by both engines, written once.
//!
//! [`impl_store!`] expands to `impl Store for $store` with the same statements
//! for PostgreSQL and SQLite. Both accept `$1, $2…` placeholders, `RETURNING`,
//! `ON CONFLICT … DO NOTHING` and partial indexes, so only two fragments
//! differ: the row lock suffix (`FOR UPDATE` / `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, nothing on SQLite, whose writers are serialised by `BEGIN
//! IMMEDIATE`). Each engine module provides `begin()` (a write transaction)
//! and `read()` (the pool for plain reads).

use crate::StoreError;

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

macro_rules! impl_store {
    (
        $store:ty,
        $db:ty,
        $conn:ty,
        engine = $engine:literal,
        for_update = $fu:literal,
        skip_locked = $sl:literal,
        notify = $notify:literal
    ) => {
        // Private helpers mirror the columns they write; a struct per call would add noise.
        #[allow(clippy::too_many_arguments)]
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

            async fn insert_ledger(
                conn: &mut $conn,
                customer_id: &str,
                topup_id: Option<&str>,
                kind: &str,
                amount: i64,
                balance_after: i64,
                actor: &str,
                reason: Option<&str>,
                now: i64,
            ) -> $crate::Result<$crate::LedgerEntry> {
                sqlx::query_as::<_, $crate::LedgerEntry>(
                    "INSERT INTO ledger (customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                )
                .bind(customer_id)
                .bind(topup_id)
                .bind(kind)
                .bind(amount)
                .bind(balance_after)
                .bind(actor)
                .bind(reason)
                .bind(now)
                .fetch_one(&mut *conn)
                .await
                .map_err($crate::sql::map_db)
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

            async fn insert_event(
                conn: &mut $conn,
                topup_id: &str,
                from: Option<recarga_domain::TopupStatus>,
                to: recarga_domain::TopupStatus,
                actor: &str,
                reason: Option<&str>,
                now: i64,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(topup_id)
                .bind(from.map(|s| s.as_str()))
                .bind(to.as_str())
                .bind(actor)
                .bind(reason)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn insert_audit(
                conn: &mut $conn,
                actor: &str,
                action: &str,
                subject: &str,
                before: Option<String>,
                after: Option<String>,
                reason: Option<&str>,
                now: i64,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, subject, before, after, reason, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(actor)
                .bind(action)
                .bind(subject)
                .bind(before)
                .bind(after)
                .bind(reason)
                .bind(now)
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
                .bind(ex.kind)
                .bind(&ex.provider)
                .bind(&ex.request)
                .bind(&ex.response)
                .bind(ex.http_status)
                .bind(ex.outcome)
                .bind(&ex.detail)
                .bind(&ex.trans_id)
                .bind(&ex.ven_transid)
                .bind(ex.started_at)
                .bind(ex.ended_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Moves the balance by `amount` within the credit limit and writes
            /// the matching ledger entry.
            async fn move_balance(
                conn: &mut $conn,
                customer_id: &str,
                topup_id: Option<&str>,
                kind: &str,
                amount: i64,
                actor: &str,
                reason: Option<&str>,
                now: i64,
            ) -> $crate::Result<$crate::LedgerEntry> {
                let balance: Option<i64> = sqlx::query_scalar(
                    "UPDATE customers SET balance = balance + $2, updated_at = $3, version = version + 1
                     WHERE id = $1 AND balance + $2 >= -credit_limit RETURNING balance",
                )
                .bind(customer_id)
                .bind(amount)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await
                .map_err($crate::sql::map_db)?;
                let Some(balance) = balance else {
                    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM customers WHERE id = $1")
                        .bind(customer_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    return Err(match exists {
                        Some(_) => $crate::StoreError::InsufficientFunds,
                        None => $crate::StoreError::NotFound,
                    });
                };
                Self::insert_ledger(conn, customer_id, topup_id, kind, amount, balance, actor, reason, now).await
            }

            async fn lock_topup(conn: &mut $conn, id: &str) -> $crate::Result<$crate::Topup> {
                sqlx::query_as::<_, $crate::Topup>(concat!("SELECT * FROM topups WHERE id = $1 ", $fu))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or($crate::StoreError::NotFound)
            }

            /// One finished attempt, inside the caller's transaction.
            async fn finish_in(
                tx: &mut $conn,
                finish: &$crate::Finish,
                now: i64,
            ) -> $crate::Result<Option<$crate::Topup>> {
                use recarga_domain::TopupStatus;
                use $crate::AttemptOutcome as O;
                let current = Self::lock_topup(&mut *tx, &finish.topup_id).await?;
                // The exchange is evidence: it is kept even when the lease was lost.
                Self::insert_exchange(&mut *tx, &finish.topup_id, &finish.exchange).await?;
                let ours = current.status == TopupStatus::Processing
                    && current.lease_owner.as_deref() == Some(finish.lease_owner.as_str());
                let definite = matches!(finish.outcome, O::Success { .. } | O::Failed { .. });
                if !(ours || (definite && current.status == TopupStatus::Unknown)) {
                    return Ok(None);
                }
                let updated = match &finish.outcome {
                    O::Success { trans_id, ven_transid } => {
                        Self::settle(
                            &mut *tx,
                            &current,
                            $crate::FinalOutcome::Success,
                            trans_id.as_deref(),
                            ven_transid.as_deref(),
                            None,
                            "worker",
                            None,
                            now,
                        )
                        .await?
                    }
                    O::Failed { code, message } => {
                        Self::settle(
                            &mut *tx,
                            &current,
                            $crate::FinalOutcome::Failed,
                            finish.exchange.trans_id.as_deref(),
                            finish.exchange.ven_transid.as_deref(),
                            Some((code.as_str(), message.as_str())),
                            "worker",
                            Some(message.as_str()),
                            now,
                        )
                        .await?
                    }
                    O::Retry { next_attempt_at, reason, count_attempt } => {
                        let row = sqlx::query_as::<_, $crate::Topup>(
                            "UPDATE topups SET status = 'PENDING', lease_owner = NULL, lease_until = NULL,
                                next_attempt_at = $2, updated_at = $3,
                                attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END
                             WHERE id = $1 RETURNING *",
                        )
                        .bind(&current.id)
                        .bind(next_attempt_at)
                        .bind(now)
                        .bind(count_attempt)
                        .fetch_one(&mut *tx)
                        .await?;
                        Self::insert_event(&mut *tx, &current.id, Some(current.status), TopupStatus::Pending, "worker", Some(reason), now)
                            .await?;
                        row
                    }
                    O::Unknown { reason, trans_id, next_check_at, check_deadline } => {
                        let row = sqlx::query_as::<_, $crate::Topup>(
                            "UPDATE topups SET status = 'UNKNOWN', lease_owner = NULL, lease_until = NULL,
                                upstream_trans_id = COALESCE($2, upstream_trans_id),
                                next_check_at = $3, check_deadline = $4, updated_at = $5 WHERE id = $1 RETURNING *",
                        )
                        .bind(&current.id)
                        .bind(trans_id)
                        .bind(next_check_at)
                        .bind(check_deadline)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                        Self::insert_event(&mut *tx, &current.id, Some(current.status), TopupStatus::Unknown, "worker", Some(reason), now)
                            .await?;
                        row
                    }
                };
                Self::notify(&mut *tx, &$crate::StoreEvent::Topup(updated.id.clone())).await?;
                if updated.status == TopupStatus::Pending {
                    Self::notify(&mut *tx, &$crate::StoreEvent::Work).await?;
                }
                Ok(Some(updated))
            }


            /// Takes a locked top-up to SUCCESS (capture) or FAILED (release).
            async fn settle(
                conn: &mut $conn,
                current: &$crate::Topup,
                outcome: $crate::FinalOutcome,
                trans_id: Option<&str>,
                ven_transid: Option<&str>,
                failure: Option<(&str, &str)>,
                actor: &str,
                reason: Option<&str>,
                now: i64,
            ) -> $crate::Result<$crate::Topup> {
                use recarga_domain::TopupStatus;
                let to = match outcome {
                    $crate::FinalOutcome::Success => TopupStatus::Success,
                    $crate::FinalOutcome::Failed => TopupStatus::Failed,
                };
                if !current.status.can_become(to) {
                    return Err($crate::StoreError::WrongState(format!("{} cannot become {}", current.status, to)));
                }
                let updated = sqlx::query_as::<_, $crate::Topup>(
                    "UPDATE topups SET status = $2,
                        upstream_trans_id = COALESCE($3, upstream_trans_id),
                        upstream_ven_transid = COALESCE($4, upstream_ven_transid),
                        failure_code = $5, failure_message = $6,
                        lease_owner = NULL, lease_until = NULL, next_check_at = NULL,
                        completed_at = $7, updated_at = $7
                     WHERE id = $1 AND status = $8 RETURNING *",
                )
                .bind(&current.id)
                .bind(to.as_str())
                .bind(trans_id)
                .bind(ven_transid)
                .bind(failure.map(|f| f.0))
                .bind(failure.map(|f| f.1))
                .bind(now)
                .bind(current.status.as_str())
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| $crate::StoreError::WrongState("the top-up changed meanwhile".into()))?;
                match outcome {
                    $crate::FinalOutcome::Success => {
                        // A zero move still takes the customer's row lock, so the
                        // entry's running balance and its id follow the same order
                        // as every other money change of this customer.
                        Self::move_balance(
                            conn,
                            &current.customer_id,
                            Some(&current.id),
                            "capture",
                            0,
                            actor,
                            reason,
                            now,
                        )
                        .await?;
                    }
                    $crate::FinalOutcome::Failed => {
                        // A release only gives back what was held: it can never
                        // push the balance past the credit limit.
                        Self::move_balance(
                            conn,
                            &current.customer_id,
                            Some(&current.id),
                            "release",
                            current.held.0,
                            actor,
                            reason,
                            now,
                        )
                        .await?;
                    }
                }
                Self::insert_event(conn, &current.id, Some(current.status), to, actor, reason, now).await?;
                Ok(updated)
            }
        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn engine(&self) -> &'static str {
                $engine
            }

            async fn migrate(&self) -> $crate::Result<()> {
                Self::MIGRATOR.run(self.write_pool()).await?;
                Ok(())
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(self.read()).await?;
                Ok(())
            }

            async fn create_customer(&self, new: &$crate::NewCustomer, actor: &str) -> $crate::Result<$crate::Customer> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO customers (id, name, currency, fx_rate_micro, balance, credit_limit, discount_bps,
                                            min_topup, max_topup, daily_limit, catalogue, active, created_at, updated_at,
                                            reference_policy)
                     VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, TRUE, $11, $11, $12)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&new.id)
                .bind(&new.name)
                .bind(new.currency.as_str())
                .bind(new.fx_rate_micro)
                .bind(new.credit_limit.0)
                .bind(new.discount_bps)
                .bind(new.min_topup.0)
                .bind(new.max_topup.0)
                .bind(new.daily_limit.map(|m| m.0))
                .bind(new.catalogue.as_str())
                .bind(now)
                .bind(new.reference_policy.as_str())
                .execute(&mut *tx)
                .await
                .map_err($crate::sql::map_db)?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::StoreError::AlreadyExists(format!("customer {}", new.id)));
                }
                if new.initial_credit.0 != 0 {
                    let kind = if new.initial_credit.0 > 0 { "credit" } else { "debit" };
                    Self::move_balance(&mut tx, &new.id, None, kind, new.initial_credit.0, actor, Some("initial credit"), now)
                        .await?;
                }
                let customer = sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers WHERE id = $1")
                    .bind(&new.id)
                    .fetch_one(&mut *tx)
                    .await?;
                let after = serde_json::to_string(&customer).ok();
                Self::insert_audit(&mut tx, actor, "customer.create", &new.id, None, after, None, now).await?;
                tx.commit().await?;
                Ok(customer)
            }

            async fn get_customer(&self, id: &str) -> $crate::Result<Option<$crate::Customer>> {
                Ok(sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn list_customers(&self) -> $crate::Result<Vec<$crate::Customer>> {
                Ok(sqlx::query_as::<_, $crate::Customer>("SELECT * FROM customers ORDER BY id")
                    .fetch_all(self.read())
                    .await?)
            }

            async fn update_customer(
                &self,
                id: &str,
                patch: &$crate::CustomerPatch,
                actor: &str,
            ) -> $crate::Result<$crate::Customer> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let before = sqlx::query_as::<_, $crate::Customer>(concat!("SELECT * FROM customers WHERE id = $1 ", $fu))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or($crate::StoreError::NotFound)?;
                let after = sqlx::query_as::<_, $crate::Customer>(
                    "UPDATE customers SET
                        name = COALESCE($2, name),
                        credit_limit = COALESCE($3, credit_limit),
                        discount_bps = COALESCE($4, discount_bps),
                        min_topup = COALESCE($5, min_topup),
                        max_topup = COALESCE($6, max_topup),
                        daily_limit = CASE WHEN $7 THEN $8 ELSE daily_limit END,
                        catalogue = COALESCE($9, catalogue),
                        active = COALESCE($10, active),
                        fx_rate_micro = COALESCE($11, fx_rate_micro),
                        rate_limit_per_s = CASE WHEN $13 THEN $14 ELSE rate_limit_per_s END,
                        reference_policy = COALESCE($15, reference_policy),
                        public_status = COALESCE($16, public_status),
                        ip_allowlist = CASE WHEN $17 THEN $18 ELSE ip_allowlist END,
                        ip_allowlist_enabled = COALESCE($19, ip_allowlist_enabled),
                        updated_at = $12, version = version + 1
                     WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(&patch.name)
                .bind(patch.credit_limit.map(|m| m.0))
                .bind(patch.discount_bps)
                .bind(patch.min_topup.map(|m| m.0))
                .bind(patch.max_topup.map(|m| m.0))
                .bind(patch.daily_limit.is_some())
                .bind(patch.daily_limit.flatten().map(|m| m.0))
                .bind(patch.catalogue.map(|c| c.as_str()))
                .bind(patch.active)
                .bind(patch.fx_rate_micro)
                .bind(now)
                .bind(patch.rate_limit_per_s.is_some())
                .bind(patch.rate_limit_per_s.flatten())
                .bind(patch.reference_policy.map(|p| p.as_str()))
                .bind(patch.public_status)
                .bind(patch.ip_allowlist.is_some())
                .bind(patch.ip_allowlist.clone().flatten())
                .bind(patch.ip_allowlist_enabled)
                .fetch_one(&mut *tx)
                .await
                .map_err($crate::sql::map_db)?;
                Self::insert_audit(
                    &mut tx,
                    actor,
                    "customer.update",
                    id,
                    serde_json::to_string(&before).ok(),
                    serde_json::to_string(&after).ok(),
                    patch.reason.as_deref(),
                    now,
                )
                .await?;
                tx.commit().await?;
                Ok(after)
            }

            async fn adjust_balance(&self, adj: &$crate::Adjustment) -> $crate::Result<$crate::LedgerEntry> {
                if adj.reason.trim().is_empty() || adj.amount.0 == 0 {
                    return Err($crate::StoreError::Constraint("an adjustment needs a non-zero amount and a reason".into()));
                }
                let now = $crate::now_ms();
                let kind = if adj.amount.0 > 0 { "credit" } else { "debit" };
                let mut tx = self.begin().await?;
                let entry = Self::move_balance(
                    &mut tx,
                    &adj.customer_id,
                    None,
                    kind,
                    adj.amount.0,
                    &adj.actor,
                    Some(adj.reason.as_str()),
                    now,
                )
                .await?;
                Self::insert_audit(
                    &mut tx,
                    &adj.actor,
                    "balance.adjust",
                    &adj.customer_id,
                    Some((entry.balance_after.0 - adj.amount.0).to_string()),
                    Some(entry.balance_after.0.to_string()),
                    Some(adj.reason.as_str()),
                    now,
                )
                .await?;
                recarga_domain::failpoint::hit("adjust.before_commit");
                tx.commit().await?;
                Ok(entry)
            }

            async fn ledger(&self, customer_id: &str, limit: i64) -> $crate::Result<Vec<$crate::LedgerEntry>> {
                Ok(sqlx::query_as::<_, $crate::LedgerEntry>(
                    "SELECT * FROM ledger WHERE customer_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(customer_id)
                .bind(limit)
                .fetch_all(self.read())
                .await?)
            }

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
                .map_err($crate::sql::map_db)?;
                let action = if key.kind == "imported" { "key.import" } else { "key.create" };
                Self::insert_audit(&mut tx, actor, action, &key.customer_id, None, Some(key.prefix.clone()), None, now)
                    .await?;
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
                    "SELECT c.*, ", $crate::sql::key_columns!(),
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
                    "SELECT c.*, ", $crate::sql::key_columns!(),
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
                .map_err($crate::sql::map_db)?;
                let retired = sqlx::query_as::<_, $crate::ApiKey>(
                    "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END,
                        replaced_by = $3 WHERE id = $1 RETURNING *",
                )
                .bind(&old.id)
                .bind(old_expires_at)
                .bind(&successor.id)
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_audit(
                    &mut tx,
                    actor,
                    "key.rotate",
                    &old.customer_id,
                    Some(old.prefix.clone()),
                    Some(format!("{} (old key works until {})", successor.prefix, old_expires_at)),
                    None,
                    now,
                )
                .await?;
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
                Self::insert_audit(&mut tx, actor, "key.revoke", &key.customer_id, None, Some(key.prefix.clone()), None, now)
                    .await?;
                tx.commit().await?;
                Ok(key)
            }

            async fn accept_topups(
                &self,
                batch: &[$crate::NewTopup],
            ) -> $crate::Result<Vec<$crate::Result<$crate::Accepted>>> {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                // Read the locked state, decide in memory (one pure function
                // for both engines), write the verdicts.
                let state = Self::accept_state(&mut tx, batch, now).await?;
                let plan = recarga_domain::plan_accepts(&state.requests, &state.accounts, &state.priors);
                let rows = Self::accept_write(&mut tx, batch, &plan, &state.prior_rows, now).await?;
                tx.commit().await?;
                Ok($crate::accept::answers(batch, &plan, state.prior_rows, rows))
            }
            async fn get_topup(&self, id: &str) -> $crate::Result<Option<$crate::Topup>> {
                Ok(sqlx::query_as::<_, $crate::Topup>("SELECT * FROM topups WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn find_topup_by_reference(
                &self,
                customer_id: &str,
                reference: &str,
            ) -> $crate::Result<Option<$crate::Topup>> {
                // References may repeat (`free` policy, retried failures): the
                // one holding the reference key wins, then the newest.
                Ok(sqlx::query_as::<_, $crate::Topup>(
                    "SELECT * FROM topups WHERE customer_id = $1 AND reference = $2
                     ORDER BY (ref_key IS NOT NULL) DESC, id DESC LIMIT 1",
                )
                .bind(customer_id)
                .bind(reference)
                .fetch_optional(self.read())
                .await?)
            }

            async fn list_topups(&self, filter: &$crate::TopupFilter) -> $crate::Result<Vec<$crate::Topup>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM topups WHERE 1 = 1");
                if let Some(c) = &filter.customer_id {
                    q.push(" AND customer_id = ").push_bind(c.clone());
                }
                if let Some(s) = filter.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(p) = &filter.phone {
                    q.push(" AND phone = ").push_bind(p.clone());
                }
                if let Some(r) = &filter.reference {
                    q.push(" AND reference = ").push_bind(r.clone());
                }
                if let Some(b) = &filter.before_id {
                    q.push(" AND id < ").push_bind(b.clone());
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit.clamp(1, 1000));
                Ok(q.build_query_as::<$crate::Topup>().fetch_all(self.read()).await?)
            }

            async fn exchanges(&self, topup_id: &str) -> $crate::Result<Vec<$crate::Exchange>> {
                Ok(sqlx::query_as::<_, $crate::Exchange>("SELECT * FROM exchanges WHERE topup_id = $1 ORDER BY id")
                    .bind(topup_id)
                    .fetch_all(self.read())
                    .await?)
            }

            async fn events(&self, topup_id: &str) -> $crate::Result<Vec<$crate::TopupEvent>> {
                Ok(sqlx::query_as::<_, $crate::TopupEvent>("SELECT * FROM topup_events WHERE topup_id = $1 ORDER BY id")
                    .bind(topup_id)
                    .fetch_all(self.read())
                    .await?)
            }

            async fn claim_pending(&self, owner: &str, lease_ms: i64, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                let now = $crate::now_ms();
                // A token per claim, so the events below name exactly this batch.
                let token = format!("{owner}/{}", uuid::Uuid::now_v7().simple());
                let mut tx = self.begin().await?;
                // The pick is a MATERIALIZED CTE so it runs exactly once: as a
                // plain `IN (SELECT … LIMIT n)` PostgreSQL may re-run the limited
                // subquery per outer row and claim far more than `limit`.
                let rows = sqlx::query_as::<_, $crate::Topup>(concat!(
                    "WITH picked AS MATERIALIZED (
                        SELECT id FROM topups WHERE status = 'PENDING' AND next_attempt_at <= $3
                        ORDER BY next_attempt_at LIMIT $4 ",
                    $sl,
                    ")
                     UPDATE topups SET status = 'PROCESSING', lease_owner = $1, lease_until = $2,
                        attempts = attempts + 1, updated_at = $3
                     WHERE status = 'PENDING' AND id IN (SELECT id FROM picked) RETURNING *"
                ))
                .bind(&token)
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if !rows.is_empty() {
                    sqlx::query(
                        "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at)
                         SELECT id, 'PENDING', 'PROCESSING', 'worker', NULL, $2 FROM topups WHERE lease_owner = $1",
                    )
                    .bind(&token)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(rows)
            }

            async fn finish_attempts(
                &self,
                batch: &[$crate::Finish],
            ) -> $crate::Result<Vec<$crate::Result<Option<$crate::Topup>>>> {
                let now = $crate::now_ms();
                // One lock order for every batch (customer, then top-up), so
                // concurrent batches wait for each other instead of deadlocking.
                let mut order: Vec<usize> = (0..batch.len()).collect();
                order.sort_by(|&a, &b| {
                    (batch[a].customer_id.as_str(), batch[a].topup_id.as_str())
                        .cmp(&(batch[b].customer_id.as_str(), batch[b].topup_id.as_str()))
                });
                let mut answers: Vec<Option<$crate::Topup>> = batch.iter().map(|_| None).collect();
                let mut tx = self.begin().await?;
                for i in order {
                    answers[i] = Self::finish_in(&mut tx, &batch[i], now).await?;
                }
                recarga_domain::failpoint::hit("finish.before_commit");
                tx.commit().await?;
                Ok(answers.into_iter().map(Ok).collect())
            }

            async fn rescue_expired(&self, check_deadline_ms: i64) -> $crate::Result<Vec<String>> {
                use recarga_domain::TopupStatus;
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE topups SET status = 'UNKNOWN', lease_owner = NULL, lease_until = NULL,
                        next_check_at = $1, check_deadline = $2, updated_at = $1
                     WHERE status = 'PROCESSING' AND lease_until < $1 RETURNING id",
                )
                .bind(now)
                .bind(now + check_deadline_ms)
                .fetch_all(&mut *tx)
                .await?;
                for id in &ids {
                    Self::insert_event(
                        &mut tx,
                        id,
                        Some(TopupStatus::Processing),
                        TopupStatus::Unknown,
                        "rescuer",
                        Some("lease expired while the upstream call may have been in flight"),
                        now,
                    )
                    .await?;
                    Self::notify(&mut tx, &$crate::StoreEvent::Topup(id.clone())).await?;
                }
                if !ids.is_empty() {
                    recarga_domain::failpoint::hit("rescue.before_commit");
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn claim_status_checks(&self, hold_ms: i64, limit: i64) -> $crate::Result<Vec<$crate::Topup>> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let rows = sqlx::query_as::<_, $crate::Topup>(concat!(
                    "WITH picked AS MATERIALIZED (
                        SELECT id FROM topups WHERE status = 'UNKNOWN' AND next_check_at <= $1 AND check_deadline > $1
                        ORDER BY next_check_at LIMIT $3 ",
                    $sl,
                    ")
                     UPDATE topups SET next_check_at = $2, checks = checks + 1
                     WHERE status = 'UNKNOWN' AND id IN (SELECT id FROM picked) RETURNING *"
                ))
                .bind(now)
                .bind(now + hold_ms)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows)
            }

            async fn record_check(
                &self,
                topup_id: &str,
                exchange: &$crate::NewExchange,
                next_check_at: i64,
            ) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                Self::insert_exchange(&mut tx, topup_id, exchange).await?;
                sqlx::query("UPDATE topups SET next_check_at = $2 WHERE id = $1 AND status = 'UNKNOWN'")
                    .bind(topup_id)
                    .bind(next_check_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn resolve_unknown(&self, r: &$crate::Resolution) -> $crate::Result<$crate::Topup> {
                use recarga_domain::TopupStatus;
                if r.reason.trim().is_empty() {
                    return Err($crate::StoreError::Constraint("a resolution needs a reason".into()));
                }
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                let current = Self::lock_topup(&mut tx, &r.topup_id).await?;
                if current.status != TopupStatus::Unknown {
                    return Err($crate::StoreError::WrongState(format!("top-up is {}, not UNKNOWN", current.status)));
                }
                if let Some(ex) = &r.exchange {
                    Self::insert_exchange(&mut tx, &r.topup_id, ex).await?;
                }
                let failure = match r.outcome {
                    $crate::FinalOutcome::Failed => Some(("resolved_failed", r.reason.as_str())),
                    $crate::FinalOutcome::Success => None,
                };
                let updated = Self::settle(
                    &mut tx,
                    &current,
                    r.outcome,
                    r.trans_id.as_deref(),
                    r.ven_transid.as_deref(),
                    failure,
                    &r.actor,
                    Some(r.reason.as_str()),
                    now,
                )
                .await?;
                Self::insert_audit(
                    &mut tx,
                    &r.actor,
                    "topup.resolve",
                    &r.topup_id,
                    Some(current.status.as_str().to_string()),
                    Some(updated.status.as_str().to_string()),
                    Some(r.reason.as_str()),
                    now,
                )
                .await?;
                Self::notify(&mut tx, &$crate::StoreEvent::Topup(updated.id.clone())).await?;
                recarga_domain::failpoint::hit("resolve.before_commit");
                tx.commit().await?;
                Ok(updated)
            }

            async fn list_unknown(&self) -> $crate::Result<Vec<$crate::Topup>> {
                Ok(sqlx::query_as::<_, $crate::Topup>("SELECT * FROM topups WHERE status = 'UNKNOWN' ORDER BY id")
                    .fetch_all(self.read())
                    .await?)
            }

            async fn queue_counts(&self) -> $crate::Result<$crate::QueueCounts> {
                let now = $crate::now_ms();
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT CASE WHEN status = 'PENDING' AND next_attempt_at > $1 THEN 'DELAYED' ELSE status END,
                            COUNT(*)
                     FROM topups GROUP BY 1",
                )
                .bind(now)
                .fetch_all(self.read())
                .await?;
                let mut counts = $crate::QueueCounts::default();
                for (status, n) in rows {
                    match status.as_str() {
                        "PENDING" => counts.pending = n,
                        "DELAYED" => counts.delayed = n,
                        "PROCESSING" => counts.processing = n,
                        "SUCCESS" => counts.success = n,
                        "FAILED" => counts.failed = n,
                        "UNKNOWN" => counts.unknown = n,
                        _ => {}
                    }
                }
                let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(created_at) FROM topups WHERE status = 'PENDING'")
                    .fetch_one(self.read())
                    .await?;
                counts.oldest_pending_ms = oldest.map(|t| ($crate::now_ms() - t).max(0));
                Ok(counts)
            }

            async fn subscribe(&self) -> $crate::Result<Option<tokio::sync::mpsc::Receiver<$crate::StoreEvent>>> {
                self.subscribe_events().await
            }

            async fn queue_backlog(&self) -> $crate::Result<$crate::QueueBacklog> {
                let now = $crate::now_ms();
                let mut backlog = $crate::QueueBacklog::default();
                backlog.pending = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM topups WHERE status = 'PENDING' AND next_attempt_at <= $1",
                )
                .bind(now)
                .fetch_one(self.read())
                .await?;
                backlog.delayed = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM topups WHERE status = 'PENDING' AND next_attempt_at > $1",
                )
                .bind(now)
                .fetch_one(self.read())
                .await?;
                backlog.processing = sqlx::query_scalar("SELECT COUNT(*) FROM topups WHERE status = 'PROCESSING'")
                    .fetch_one(self.read())
                    .await?;
                backlog.unknown = sqlx::query_scalar("SELECT COUNT(*) FROM topups WHERE status = 'UNKNOWN'")
                    .fetch_one(self.read())
                    .await?;
                let oldest: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(created_at) FROM topups WHERE status = 'PENDING'")
                        .fetch_one(self.read())
                        .await?;
                backlog.oldest_pending_ms = oldest.map(|t| (now - t).max(0));
                Ok(backlog)
            }

            async fn audit(&self) -> $crate::Result<$crate::AuditReport> {
                let pool = self.read();
                let mut report = $crate::AuditReport::default();
                report.customers = sqlx::query_scalar("SELECT COUNT(*) FROM customers").fetch_one(pool).await?;
                report.topups = sqlx::query_scalar("SELECT COUNT(*) FROM topups").fetch_one(pool).await?;
                report.ledger_entries = sqlx::query_scalar("SELECT COUNT(*) FROM ledger").fetch_one(pool).await?;

                let sums: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT c.id, c.balance, c.credit_limit, CAST(COALESCE(SUM(l.amount), 0) AS BIGINT)
                     FROM customers c LEFT JOIN ledger l ON l.customer_id = c.id
                     GROUP BY c.id, c.balance, c.credit_limit ORDER BY c.id",
                )
                .fetch_all(pool)
                .await?;
                for (id, balance, limit, sum) in sums {
                    if balance != sum {
                        report.violations.push(format!("customer {id}: balance {balance} but ledger sums to {sum}"));
                    }
                    if balance < -limit {
                        report.violations.push(format!("customer {id}: balance {balance} below credit limit -{limit}"));
                    }
                }

                let drift: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT c.id, c.balance, l.balance_after FROM customers c
                     JOIN ledger l ON l.id = (SELECT MAX(id) FROM ledger WHERE customer_id = c.id)
                     WHERE l.balance_after <> c.balance ORDER BY c.id",
                )
                .fetch_all(pool)
                .await?;
                for (id, balance, after) in drift {
                    report.violations.push(format!("customer {id}: last ledger entry says {after}, balance is {balance}"));
                }

                let bad: Vec<(String, String)> = sqlx::query_as(
                    "SELECT t.id, t.status FROM topups t LEFT JOIN ledger l ON l.topup_id = t.id
                     GROUP BY t.id, t.status, t.held
                     HAVING NOT (
                        SUM(CASE WHEN l.kind = 'hold' THEN 1 ELSE 0 END) = 1
                        AND SUM(CASE WHEN l.kind = 'hold' THEN l.amount ELSE 0 END) = -t.held
                        AND SUM(CASE WHEN l.kind = 'capture' THEN 1 ELSE 0 END)
                            = (CASE WHEN t.status = 'SUCCESS' THEN 1 ELSE 0 END)
                        AND SUM(CASE WHEN l.kind = 'capture' THEN l.amount ELSE 0 END) = 0
                        AND SUM(CASE WHEN l.kind = 'release' THEN 1 ELSE 0 END)
                            = (CASE WHEN t.status = 'FAILED' THEN 1 ELSE 0 END)
                        AND SUM(CASE WHEN l.kind = 'release' THEN l.amount ELSE 0 END)
                            = (CASE WHEN t.status = 'FAILED' THEN t.held ELSE 0 END)
                        AND SUM(CASE WHEN l.customer_id <> t.customer_id THEN 1 ELSE 0 END) = 0
                     ) ORDER BY t.id",
                )
                .fetch_all(pool)
                .await?;
                for (id, status) in bad {
                    report.violations.push(format!(
                        "top-up {id} ({status}): holds, captures and releases do not match its state"
                    ));
                }

                let orphans: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM ledger WHERE kind IN ('hold', 'capture', 'release')
                     AND topup_id NOT IN (SELECT id FROM topups)",
                )
                .fetch_one(pool)
                .await?;
                if orphans > 0 {
                    report.violations.push(format!("{orphans} ledger entries name a top-up that does not exist"));
                }
                Ok(report)
            }
        }
    };
}

pub(crate) use impl_store;

/// The key columns of a caller read, aliased for [`crate::model::CallerRow`].
macro_rules! key_columns {
    () => {
        "k.id AS key_id, k.prefix AS key_prefix, k.digest AS key_digest, k.label AS key_label,
         k.created_at AS key_created_at, k.revoked_at AS key_revoked_at, k.kind AS key_kind, k.hint AS key_hint,
         k.expires_at AS key_expires_at, k.last_used_at AS key_last_used_at, k.replaced_by AS key_replaced_by"
    };
}
pub(crate) use key_columns;
