//! Group commit for the accept path.
//!
//! Accepting a top-up is one small transaction, and on a single hot customer
//! every one of them queues on that customer's row lock and pays its own
//! commit (an fsync). [`AcceptQueue`] gathers the accepts that arrive while a
//! commit is running and writes them together with
//! [`Store::accept_topups`](crate::Store::accept_topups): one transaction, one
//! commit, and still one answer per request (its own idempotency, limits and
//! insufficient-funds verdict, decided in arrival order).
//!
//! There is no timer: a request that arrives when a lane is idle is written at
//! once, alone; batches only form under load, while earlier batches commit.
//! `lanes` batches may be in flight at a time (one for SQLite, whose single
//! writer would serialise them anyway).
//!
//! A failed batch is retried one request at a time, so a single bad request
//! cannot fail its neighbours; when the database is unreachable every request
//! gets [`StoreError::Unavailable`] at once instead.

use crate::{Accepted, NewTopup, Result, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most requests written in one transaction.
pub const BATCH_MAX: usize = 256;
/// Requests that may wait for a lane before `accept` itself waits.
pub const QUEUE_DEPTH: usize = 16_384;

type Job = (NewTopup, oneshot::Sender<Result<Accepted>>);

/// A handle to the accept lanes; cheap to clone.
#[derive(Clone)]
pub struct AcceptQueue {
    jobs: mpsc::Sender<Job>,
}

impl AcceptQueue {
    /// Starts `lanes` writer tasks over `store`; they stop when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, lanes: usize) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes.max(1) {
            tokio::spawn(lane(store.clone(), rx.clone()));
        }
        AcceptQueue { jobs }
    }

    /// Accepts one request, possibly in the same transaction as others.
    pub async fn accept(&self, new: NewTopup) -> Result<Accepted> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send((new, answer))
            .await
            .map_err(|_| StoreError::Unavailable("the accept queue has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the accept lane stopped before answering".into()))?
    }
}

async fn lane(store: Arc<dyn Store>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH_MAX);
    loop {
        {
            // One lane gathers at a time: it takes whatever is waiting now.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, BATCH_MAX).await == 0 {
                return;
            }
        }
        write(store.as_ref(), std::mem::take(&mut batch)).await;
    }
}

async fn write(store: &dyn Store, jobs: Vec<Job>) {
    let (requests, answers): (Vec<NewTopup>, Vec<_>) = jobs.into_iter().unzip();
    match store.accept_topups(&requests).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
        Err(e) if e.is_unavailable() => {
            let message = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
        Err(e) if requests.len() == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = requests.len(), "accept batch failed; retrying its requests one by one");
            for (request, answer) in requests.iter().zip(answers) {
                let _ = answer.send(store.accept_topup(request).await);
            }
        }
    }
}
