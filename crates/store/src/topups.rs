//! Top-ups as the API sees them: the accept transaction (group commit, see
//! [`crate::accept`] for its reads and writes around the pure decision) and
//! the reads by id, by reference and by filter, with each top-up's state
//! history and upstream exchanges.

use crate::{Accepted, Exchange, NewTopup, Result, StoreError, Topup, TopupEvent, TopupFilter};
use async_trait::async_trait;

#[async_trait]
pub trait TopupStore {
    /// The accept transaction for several requests at once (group commit):
    /// for each, in order, idempotency + row + hold + balance, or the existing
    /// top-up for its keys, or its own refusal. One DB transaction and one
    /// commit for the whole batch; an `Err` for the batch means nothing was
    /// written.
    async fn accept_topups(&self, batch: &[NewTopup]) -> Result<Vec<Result<Accepted>>>;
    /// [`TopupStore::accept_topups`] for one request.
    async fn accept_topup(&self, new: &NewTopup) -> Result<Accepted> {
        self.accept_topups(std::slice::from_ref(new))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::WrongState("no answer for the request".into())))
    }
    async fn get_topup(&self, id: &str) -> Result<Option<Topup>>;
    async fn find_topup_by_reference(&self, customer_id: &str, reference: &str) -> Result<Option<Topup>>;
    async fn list_topups(&self, filter: &TopupFilter) -> Result<Vec<Topup>>;
    async fn exchanges(&self, topup_id: &str) -> Result<Vec<Exchange>>;
    async fn events(&self, topup_id: &str) -> Result<Vec<TopupEvent>>;
}

macro_rules! impl_topups {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::topups::TopupStore for $store {
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
                Ok(
                    sqlx::query_as::<_, $crate::Topup>("SELECT * FROM topups WHERE id = $1")
                        .bind(id)
                        .fetch_optional(self.read())
                        .await?,
                )
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
                // Newest first by creation time, the id breaking ties: ids
                // imported from the old system (`RLR` + digits) do not sort
                // with ours (`RLR` + hex) by text.
                if let Some(b) = &filter.before_id {
                    q.push(" AND (created_at, id) < (SELECT created_at, id FROM topups WHERE id = ")
                        .push_bind(b.clone())
                        .push(")");
                }
                q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(filter.limit.clamp(1, 1000));
                Ok(q.build_query_as::<$crate::Topup>().fetch_all(self.read()).await?)
            }

            async fn exchanges(&self, topup_id: &str) -> $crate::Result<Vec<$crate::Exchange>> {
                Ok(
                    sqlx::query_as::<_, $crate::Exchange>("SELECT * FROM exchanges WHERE topup_id = $1 ORDER BY id")
                        .bind(topup_id)
                        .fetch_all(self.read())
                        .await?,
                )
            }

            async fn events(&self, topup_id: &str) -> $crate::Result<Vec<$crate::TopupEvent>> {
                Ok(sqlx::query_as::<_, $crate::TopupEvent>(
                    "SELECT * FROM topup_events WHERE topup_id = $1 ORDER BY id",
                )
                .bind(topup_id)
                .fetch_all(self.read())
                .await?)
            }
        }
    };
}

pub(crate) use impl_topups;
