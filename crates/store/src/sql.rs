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
                                            min_topup, max_topup, daily_limit, catalogue, active, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10, TRUE, $11, $11)
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
                    "INSERT INTO api_keys (id, customer_id, prefix, digest, label, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&key.id)
                .bind(&key.customer_id)
                .bind(&key.prefix)
                .bind(&key.digest)
                .bind(&key.label)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err($crate::sql::map_db)?;
                Self::insert_audit(&mut tx, actor, "key.create", &key.customer_id, None, Some(key.prefix.clone()), None, now)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_api_key(&self, prefix: &str) -> $crate::Result<Option<$crate::ApiKey>> {
                Ok(sqlx::query_as::<_, $crate::ApiKey>("SELECT * FROM api_keys WHERE prefix = $1")
                    .bind(prefix)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn find_caller(&self, prefix: &str) -> $crate::Result<Option<($crate::ApiKey, $crate::Customer)>> {
                let row = sqlx::query_as::<_, $crate::model::CallerRow>(
                    "SELECT c.*, k.id AS key_id, k.prefix AS key_prefix, k.digest AS key_digest, k.label AS key_label,
                            k.created_at AS key_created_at, k.revoked_at AS key_revoked_at
                     FROM api_keys k JOIN customers c ON c.id = k.customer_id WHERE k.prefix = $1",
                )
                .bind(prefix)
                .fetch_optional(self.read())
                .await?;
                Ok(row.map($crate::model::CallerRow::split))
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
                use recarga_domain::TopupStatus;
                use std::collections::{BTreeMap, BTreeSet, HashMap};
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                let now = $crate::now_ms();
                // A fixed number of statements per batch, however many
                // customers it touches.
                let ids: BTreeSet<&str> = batch.iter().map(|n| n.customer_id.as_str()).collect();
                let mut tx = self.begin().await?;
                // 1. Every customer's row lock, in id order (two batches that
                // share customers wait for each other, never deadlock). Every
                // accept of a customer, on any replica, waits here, so the
                // references read next cannot change before we commit.
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, balance, credit_limit, active, daily_limit FROM customers WHERE id IN ",
                );
                Self::push_list(&mut q, ids.iter().map(|id| id.to_string()));
                q.push(" ORDER BY id ").push($fu);
                let locked: Vec<(String, i64, i64, bool, Option<i64>)> =
                    q.build_query_as().fetch_all(&mut *tx).await?;
                // 2. The references already taken (a superset: filtered by pair below).
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM topups WHERE customer_id IN ");
                Self::push_list(&mut q, ids.iter().map(|id| id.to_string()));
                q.push(" AND reference IN ");
                let references: BTreeSet<&str> = batch.iter().map(|n| n.reference.as_str()).collect();
                Self::push_list(&mut q, references.into_iter().map(str::to_string));
                let mut taken: HashMap<(String, String), $crate::Topup> = q
                    .build_query_as::<$crate::Topup>()
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|t| ((t.customer_id.clone(), t.reference.clone()), t))
                    .collect();
                // 3. The rolling 24 h use of customers with a daily limit.
                let limited: Vec<&str> =
                    locked.iter().filter(|c| c.4.is_some()).map(|c| c.0.as_str()).collect();
                let mut used: HashMap<String, i64> = HashMap::new();
                if !limited.is_empty() {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT customer_id, CAST(COALESCE(SUM(face_value), 0) AS BIGINT) FROM topups
                         WHERE status <> 'FAILED' AND created_at > ",
                    );
                    q.push_bind(now - 24 * 3600 * 1000).push(" AND customer_id IN ");
                    Self::push_list(&mut q, limited.iter().map(|id| id.to_string()));
                    q.push(" GROUP BY customer_id");
                    used = q.build_query_as::<(String, i64)>().fetch_all(&mut *tx).await?.into_iter().collect();
                }
                // 4. Each request's answer, in arrival order, against what the
                // requests before it left.
                struct Account {
                    balance: i64,
                    credit_limit: i64,
                    active: bool,
                    daily_limit: Option<i64>,
                    used: i64,
                    holds: i64,
                }
                let mut accounts: BTreeMap<String, Account> = locked
                    .into_iter()
                    .map(|(id, balance, credit_limit, active, daily_limit)| {
                        let used = used.get(&id).copied().unwrap_or(0);
                        (id, Account { balance, credit_limit, active, daily_limit, used, holds: 0 })
                    })
                    .collect();
                let mut answers: Vec<Option<$crate::Result<$crate::Accepted>>> = batch.iter().map(|_| None).collect();
                let mut fresh: Vec<(usize, i64)> = Vec::new(); // (request, balance after its hold)
                let mut planned: BTreeSet<(&str, &str)> = BTreeSet::new();
                for (i, new) in batch.iter().enumerate() {
                    let pair = (new.customer_id.clone(), new.reference.clone());
                    if let Some(t) = taken.get(&pair) {
                        answers[i] = Some(Ok($crate::Accepted::Existing(t.clone())));
                        continue;
                    }
                    if planned.contains(&(new.customer_id.as_str(), new.reference.as_str())) {
                        continue; // a duplicate within this batch: answered after the insert
                    }
                    let Some(a) = accounts.get_mut(&new.customer_id) else {
                        answers[i] = Some(Err($crate::StoreError::NotFound));
                        continue;
                    };
                    let refusal = if !a.active {
                        Some($crate::StoreError::CustomerInactive)
                    } else if a.balance - new.held.0 < -a.credit_limit {
                        Some($crate::StoreError::InsufficientFunds)
                    } else if a.daily_limit.is_some_and(|limit| a.used + new.face_value.0 > limit) {
                        Some($crate::StoreError::DailyLimitExceeded)
                    } else {
                        None
                    };
                    if let Some(refusal) = refusal {
                        answers[i] = Some(Err(refusal));
                        continue;
                    }
                    a.balance -= new.held.0;
                    a.used += new.face_value.0;
                    a.holds += 1;
                    planned.insert((new.customer_id.as_str(), new.reference.as_str()));
                    fresh.push((i, a.balance));
                }
                if !fresh.is_empty() {
                    // 5. The rows, the balances, the holds and the events: one
                    // statement each.
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO topups (id, customer_id, reference, request_hash, phone, face_value, product_id,
                                             amount_sent, vat, delivered, discount_bps, currency, fx_rate_micro, held,
                                             status, next_attempt_at, sync_wait_until, created_at, updated_at, request_id) ",
                    );
                    q.push_values(&fresh, |mut row, &(i, _)| {
                        let new = &batch[i];
                        row.push_bind(new.id.clone())
                            .push_bind(new.customer_id.clone())
                            .push_bind(new.reference.clone())
                            .push_bind(new.request_hash.clone())
                            .push_bind(new.phone.clone())
                            .push_bind(new.face_value.0)
                            .push_bind(new.product_id.clone())
                            .push_bind(new.amount_sent.0)
                            .push_bind(new.vat.0)
                            .push_bind(new.delivered.0)
                            .push_bind(new.discount_bps)
                            .push_bind(new.currency.as_str())
                            .push_bind(new.fx_rate_micro)
                            .push_bind(new.held.0)
                            .push_bind(TopupStatus::Pending.as_str())
                            .push_bind(now)
                            .push_bind(new.sync_wait_until)
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(new.request_id.clone());
                    });
                    q.push(" RETURNING *");
                    let inserted =
                        q.build_query_as::<$crate::Topup>().fetch_all(&mut *tx).await.map_err($crate::sql::map_db)?;
                    if inserted.len() != fresh.len() {
                        return Err($crate::StoreError::WrongState("the accept batch wrote fewer rows than planned".into()));
                    }
                    for t in inserted {
                        taken.insert((t.customer_id.clone(), t.reference.clone()), t);
                    }
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE customers SET balance = v.column2, version = version + v.column3, updated_at = ");
                    q.push_bind(now).push(" FROM (");
                    q.push_values(accounts.iter().filter(|(_, a)| a.holds > 0), |mut row, (id, a)| {
                        row.push_bind(id.clone()).push_bind(a.balance).push_bind(a.holds);
                    });
                    q.push(") AS v WHERE customers.id = v.column1");
                    q.build().execute(&mut *tx).await.map_err($crate::sql::map_db)?;
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO ledger (customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at) ",
                    );
                    q.push_values(&fresh, |mut row, &(i, balance_after)| {
                        let new = &batch[i];
                        row.push_bind(new.customer_id.clone())
                            .push_bind(new.id.clone())
                            .push_bind("hold")
                            .push_bind(-new.held.0)
                            .push_bind(balance_after)
                            .push_bind("api")
                            .push_bind(None::<String>)
                            .push_bind(now);
                    });
                    q.build().execute(&mut *tx).await.map_err($crate::sql::map_db)?;
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at) ",
                    );
                    q.push_values(&fresh, |mut row, &(i, _)| {
                        row.push_bind(batch[i].id.clone())
                            .push_bind(None::<String>)
                            .push_bind(TopupStatus::Pending.as_str())
                            .push_bind("api")
                            .push_bind(None::<String>)
                            .push_bind(now);
                    });
                    q.build().execute(&mut *tx).await?;
                    Self::notify(&mut tx, &$crate::StoreEvent::Work).await?;
                    recarga_domain::failpoint::hit("accept.before_commit");
                }
                tx.commit().await?;
                // Duplicates within the batch get the row their first copy wrote.
                Ok(batch
                    .iter()
                    .zip(answers)
                    .map(|(new, answer)| match answer {
                        Some(answer) => answer,
                        None => match taken.get(&(new.customer_id.clone(), new.reference.clone())) {
                            Some(row) if row.id == new.id => Ok($crate::Accepted::New(row.clone())),
                            Some(row) => Ok($crate::Accepted::Existing(row.clone())),
                            None => Err($crate::StoreError::WrongState("an accepted reference has no row".into())),
                        },
                    })
                    .collect())
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
                Ok(sqlx::query_as::<_, $crate::Topup>("SELECT * FROM topups WHERE customer_id = $1 AND reference = $2")
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
