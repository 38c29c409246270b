//! The accept transaction's reads and writes around the pure decision
//! (`recarga_domain::plan_accepts`).
//!
//! A fixed number of statements per batch, however many requests and
//! customers it holds:
//! 1. lock every customer row of the batch, in id order (two batches that
//!    share customers wait for each other, never deadlock; every accept of a
//!    customer, on any replica, waits here, so the keys read next cannot
//!    change before we commit);
//! 2. read the top-ups that already hold a request's reference key or
//!    idempotency key;
//! 3. read the rolling 24 h use of customers with a daily limit;
//! 4. (pure) decide each request in arrival order;
//! 5. release the reference keys of FAILED top-ups that are started anew,
//!    then insert the rows, balances, holds and events, one statement each.

use crate::{Accepted, NewTopup, StoreError, Topup};
use recarga_domain::{AcceptRequest, Account, Plan, Prior, TopupStatus, Verdict};
use std::collections::HashMap;

/// What step 1–3 read.
pub(crate) struct AcceptState {
    pub requests: Vec<AcceptRequest>,
    pub accounts: HashMap<String, Account>,
    pub priors: Vec<Prior>,
    /// The rows behind `priors`, same order.
    pub prior_rows: Vec<Topup>,
}

pub(crate) fn request_of(new: &NewTopup) -> AcceptRequest {
    AcceptRequest {
        customer_id: new.customer_id.clone(),
        ref_key: new.ref_key.clone(),
        idem_key: new.idem_key.clone(),
        held: new.held,
        face_value: new.face_value,
        restart_failed: new.restart_failed,
    }
}

pub(crate) fn prior_of(t: &Topup) -> Prior {
    Prior {
        customer_id: t.customer_id.clone(),
        ref_key: t.ref_key.clone(),
        idem_key: t.idem_key.clone(),
        failed: t.status == TopupStatus::Failed,
    }
}

/// A request the plan accepts: its index, the balance after its hold, and
/// the FAILED top-up whose reference key it takes over.
pub(crate) struct Fresh {
    pub request: usize,
    pub balance_after: i64,
    pub retry_of: Option<String>,
}

/// Each request's answer, from the verdicts and the rows written (`rows[i]`
/// is the row inserted for request `i`, when its verdict was `New`).
pub(crate) fn answers(
    batch: &[NewTopup],
    plan: &Plan,
    priors: Vec<Topup>,
    rows: HashMap<usize, Topup>,
) -> Vec<crate::Result<Accepted>> {
    let missing = || StoreError::WrongState("an accepted request has no row".into());
    (0..batch.len())
        .map(|i| match &plan.verdicts[i] {
            Verdict::New { .. } => rows.get(&i).cloned().map(Accepted::New).ok_or_else(missing),
            Verdict::Existing(p) => priors.get(*p).cloned().map(Accepted::Existing).ok_or_else(missing),
            Verdict::SameAs(j) => rows.get(j).cloned().map(Accepted::Existing).ok_or_else(missing),
            Verdict::Refused(r) => Err(StoreError::Refused(r.clone())),
        })
        .collect()
}

/// Generates the engine's `accept_state` and `accept_write`.
macro_rules! impl_accept_io {
    ($store:ty, $db:ty, $conn:ty, for_update = $fu:literal) => {
        impl $store {
            /// Step 2: the top-ups that hold a key of the batch (a superset:
            /// keys of other customers of the batch; the plan matches by pair).
            async fn accept_priors(
                tx: &mut $conn,
                batch: &[$crate::NewTopup],
                ids: &std::collections::BTreeSet<&str>,
            ) -> $crate::Result<Vec<$crate::Topup>> {
                use std::collections::BTreeSet;
                let ref_keys: BTreeSet<&str> = batch.iter().filter_map(|n| n.ref_key.as_deref()).collect();
                let idem_keys: BTreeSet<&str> = batch.iter().filter_map(|n| n.idem_key.as_deref()).collect();
                if ref_keys.is_empty() && idem_keys.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM topups WHERE customer_id IN ");
                Self::push_list(&mut q, ids.iter().map(|id| id.to_string()));
                q.push(" AND (");
                if !ref_keys.is_empty() {
                    q.push("ref_key IN ");
                    Self::push_list(&mut q, ref_keys.iter().map(|k| k.to_string()));
                }
                if !ref_keys.is_empty() && !idem_keys.is_empty() {
                    q.push(" OR ");
                }
                if !idem_keys.is_empty() {
                    q.push("idem_key IN ");
                    Self::push_list(&mut q, idem_keys.iter().map(|k| k.to_string()));
                }
                q.push(")");
                Ok(q.build_query_as::<$crate::Topup>().fetch_all(&mut *tx).await?)
            }

            /// Steps 1–3 of the accept transaction (see `crate::accept`).
            async fn accept_state(
                tx: &mut $conn,
                batch: &[$crate::NewTopup],
                now: i64,
            ) -> $crate::Result<$crate::accept::AcceptState> {
                use recarga_domain::{Account, Money};
                use std::collections::{BTreeSet, HashMap};
                let ids: BTreeSet<&str> = batch.iter().map(|n| n.customer_id.as_str()).collect();
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, balance, credit_limit, active, daily_limit FROM customers WHERE id IN ",
                );
                Self::push_list(&mut q, ids.iter().map(|id| id.to_string()));
                q.push(" ORDER BY id ").push($fu);
                let locked: Vec<(String, i64, i64, bool, Option<i64>)> = q.build_query_as().fetch_all(&mut *tx).await?;

                let prior_rows = Self::accept_priors(&mut *tx, batch, &ids).await?;
                let limited: Vec<&str> = locked.iter().filter(|c| c.4.is_some()).map(|c| c.0.as_str()).collect();
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
                let accounts = locked
                    .into_iter()
                    .map(|(id, balance, credit_limit, active, daily_limit)| {
                        let used_24h = Money(used.get(&id).copied().unwrap_or(0));
                        let account = Account {
                            balance: Money(balance),
                            credit_limit: Money(credit_limit),
                            active,
                            daily_limit: daily_limit.map(Money),
                            used_24h,
                        };
                        (id, account)
                    })
                    .collect();
                Ok($crate::accept::AcceptState {
                    requests: batch.iter().map($crate::accept::request_of).collect(),
                    accounts,
                    priors: prior_rows.iter().map($crate::accept::prior_of).collect(),
                    prior_rows,
                })
            }

            /// Step 5: writes the plan's new top-ups; returns each one's row by request index.
            async fn accept_write(
                tx: &mut $conn,
                batch: &[$crate::NewTopup],
                plan: &recarga_domain::Plan,
                priors: &[$crate::Topup],
                now: i64,
            ) -> $crate::Result<std::collections::HashMap<usize, $crate::Topup>> {
                use recarga_domain::Verdict;
                let fresh: Vec<$crate::accept::Fresh> = plan
                    .verdicts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        Verdict::New { balance_after, replaces } => Some($crate::accept::Fresh {
                            request: i,
                            balance_after: balance_after.0,
                            retry_of: replaces.and_then(|p| priors.get(p)).map(|t| t.id.clone()),
                        }),
                        _ => None,
                    })
                    .collect();
                if fresh.is_empty() {
                    return Ok(std::collections::HashMap::new());
                }
                let released: Vec<String> = fresh.iter().filter_map(|f| f.retry_of.clone()).collect();
                if !released.is_empty() {
                    // The FAILED top-ups started anew give their reference key away first.
                    let mut q = sqlx::QueryBuilder::<$db>::new("UPDATE topups SET ref_key = NULL, updated_at = ");
                    q.push_bind(now).push(" WHERE status = 'FAILED' AND id IN ");
                    Self::push_list(&mut q, released);
                    q.build().execute(&mut *tx).await?;
                }
                let inserted = Self::insert_accepted(&mut *tx, batch, &fresh, now).await?;
                Self::write_holds(&mut *tx, batch, plan, &fresh, now).await?;
                Self::notify(&mut *tx, &$crate::StoreEvent::Work).await?;
                recarga_domain::failpoint::hit("accept.before_commit");
                // Rows keyed by request; a row missing fails the batch as a whole.
                let mut by_id: std::collections::HashMap<String, $crate::Topup> =
                    inserted.into_iter().map(|t| (t.id.clone(), t)).collect();
                let mut out = std::collections::HashMap::new();
                for f in &fresh {
                    let row = by_id
                        .remove(&batch[f.request].id)
                        .ok_or_else(|| $crate::StoreError::WrongState("an inserted row is missing".into()))?;
                    out.insert(f.request, row);
                }
                Ok(out)
            }

            /// The new rows, one statement.
            async fn insert_accepted(
                tx: &mut $conn,
                batch: &[$crate::NewTopup],
                fresh: &[$crate::accept::Fresh],
                now: i64,
            ) -> $crate::Result<Vec<$crate::Topup>> {
                use recarga_domain::TopupStatus;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO topups (id, customer_id, reference, request_hash, phone, face_value, product_id,
                                         amount_sent, vat, delivered, discount_bps, currency, fx_rate_micro, held,
                                         status, next_attempt_at, sync_wait_until, created_at, updated_at, request_id,
                                         ref_key, idem_key, retry_of) ",
                );
                q.push_values(fresh, |mut row, f| {
                    let new = &batch[f.request];
                    row.push_bind(new.id.clone())
                        .push_bind(new.customer_id.clone())
                        .push_bind(new.reference.clone())
                        .push_bind(new.request_hash.clone())
                        .push_bind(new.phone.as_str().to_string())
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
                        .push_bind(new.request_id.clone())
                        .push_bind(new.ref_key.clone())
                        .push_bind(new.idem_key.clone())
                        .push_bind(f.retry_of.clone());
                });
                q.push(" RETURNING *");
                let inserted = q
                    .build_query_as::<$crate::Topup>()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err($crate::common::map_db)?;
                if inserted.len() != fresh.len() {
                    return Err($crate::StoreError::WrongState("the accept batch wrote fewer rows than planned".into()));
                }
                Ok(inserted)
            }

            /// The balances, the holds and the PENDING events: one statement each.
            async fn write_holds(
                tx: &mut $conn,
                batch: &[$crate::NewTopup],
                plan: &recarga_domain::Plan,
                fresh: &[$crate::accept::Fresh],
                now: i64,
            ) -> $crate::Result<()> {
                use recarga_domain::{LedgerKind, TopupStatus};
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE customers SET balance = v.column2, version = version + v.column3, updated_at = ",
                );
                q.push_bind(now).push(" FROM (");
                q.push_values(plan.accounts.iter(), |mut row, (id, after)| {
                    row.push_bind(id.clone()).push_bind(after.balance.0).push_bind(after.holds);
                });
                q.push(") AS v WHERE customers.id = v.column1");
                q.build().execute(&mut *tx).await.map_err($crate::common::map_db)?;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO ledger (customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at) ",
                );
                q.push_values(fresh, |mut row, f| {
                    let new = &batch[f.request];
                    row.push_bind(new.customer_id.clone())
                        .push_bind(new.id.clone())
                        .push_bind(LedgerKind::Hold.as_str())
                        .push_bind(-new.held.0)
                        .push_bind(f.balance_after)
                        .push_bind("api")
                        .push_bind(None::<String>)
                        .push_bind(now);
                });
                q.build().execute(&mut *tx).await.map_err($crate::common::map_db)?;
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO topup_events (topup_id, from_status, to_status, actor, reason, created_at) ",
                );
                q.push_values(fresh, |mut row, f| {
                    row.push_bind(batch[f.request].id.clone())
                        .push_bind(None::<String>)
                        .push_bind(TopupStatus::Pending.as_str())
                        .push_bind("api")
                        .push_bind(f.retry_of.as_ref().map(|old| format!("retry of failed top-up {old}")))
                        .push_bind(now);
                });
                q.build().execute(&mut *tx).await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_accept_io;
