//! Group commit: many small writes, one transaction.
//!
//! Accepting a top-up and recording its upstream answer are each one small
//! transaction, and on a hot customer every one of them queues on that
//! customer's row lock and pays its own commit (an fsync). A [`GroupCommit`]
//! gathers the requests that arrive while a commit is running and writes them
//! together through the store's batch method
//! ([`Store::accept_topups`](crate::Store::accept_topups),
//! [`Store::finish_attempts`](crate::Store::finish_attempts)): one
//! transaction, one commit, and still one answer per request (for accepts:
//! its own idempotency, limits and insufficient-funds verdict, decided in
//! arrival order).
//!
//! There is no timer: a request that arrives when a lane is idle is written at
//! once, alone; batches only form under load, while earlier batches commit.
//! `lanes` batches may be in flight at a time (one for SQLite, whose single
//! writer would serialise them anyway).
//!
//! A failed batch is retried one request at a time, so one bad request cannot
//! fail its neighbours; when the database is unreachable every request gets
//! [`StoreError::Unavailable`] at once instead.

use crate::{Accepted, Finish, NewTopup, Result, Store, StoreError, Topup};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most requests written in one transaction.
pub const BATCH_MAX: usize = 256;
/// Requests that may wait for a lane before a caller itself waits.
pub const QUEUE_DEPTH: usize = 16_384;

/// A kind of write that can be batched: the store's batch method for it.
pub trait Batched: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Answer: Send + 'static;
    fn write(
        store: &dyn Store,
        batch: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Result<Self::Answer>>>> + Send;
}

/// Accepts: [`Store::accept_topups`](crate::Store::accept_topups).
pub struct Accepts;
impl Batched for Accepts {
    type Request = NewTopup;
    type Answer = Accepted;
    async fn write(store: &dyn Store, batch: &[NewTopup]) -> Result<Vec<Result<Accepted>>> {
        store.accept_topups(batch).await
    }
}

/// Finished attempts: [`Store::finish_attempts`](crate::Store::finish_attempts).
pub struct Finishes;
impl Batched for Finishes {
    type Request = Finish;
    type Answer = Option<Topup>;
    async fn write(store: &dyn Store, batch: &[Finish]) -> Result<Vec<Result<Option<Topup>>>> {
        store.finish_attempts(batch).await
    }
}

pub type AcceptQueue = GroupCommit<Accepts>;
pub type FinishQueue = GroupCommit<Finishes>;

type Job<B> = (<B as Batched>::Request, oneshot::Sender<Result<<B as Batched>::Answer>>);

/// A handle to the writer lanes of one kind of write; cheap to clone.
pub struct GroupCommit<B: Batched> {
    jobs: mpsc::Sender<Job<B>>,
}

impl<B: Batched> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        GroupCommit {
            jobs: self.jobs.clone(),
        }
    }
}

impl<B: Batched> GroupCommit<B> {
    /// Starts `lanes` writer tasks over `store`; they stop when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, lanes: usize) -> Self {
        let (jobs, rx) = mpsc::channel::<Job<B>>(QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes.max(1) {
            tokio::spawn(lane::<B>(store.clone(), rx.clone()));
        }
        GroupCommit { jobs }
    }

    /// Writes one request, possibly in the same transaction as others.
    pub async fn submit(&self, request: B::Request) -> Result<B::Answer> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send((request, answer))
            .await
            .map_err(|_| StoreError::Unavailable("the write queue has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }
}

async fn lane<B: Batched>(store: Arc<dyn Store>, rx: Arc<Mutex<mpsc::Receiver<Job<B>>>>) {
    let mut batch: Vec<Job<B>> = Vec::with_capacity(BATCH_MAX);
    loop {
        {
            // One lane gathers at a time: it takes whatever is waiting now.
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, BATCH_MAX).await == 0 {
                return;
            }
        }
        write::<B>(store.as_ref(), std::mem::take(&mut batch)).await;
    }
}

async fn write<B: Batched>(store: &dyn Store, jobs: Vec<Job<B>>) {
    let (requests, answers): (Vec<B::Request>, Vec<_>) = jobs.into_iter().unzip();
    match B::write(store, &requests).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
        Err(e) if requests.len() == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(e));
            }
        }
        Err(e) if e.is_unavailable() => {
            let message = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = requests.len(), "a batched write failed; retrying its requests one by one");
            for (request, answer) in requests.iter().zip(answers) {
                let one = B::write(store, std::slice::from_ref(request)).await;
                let result = one.and_then(|mut answers| {
                    answers
                        .pop()
                        .unwrap_or_else(|| Err(StoreError::WrongState("no answer for the request".into())))
                });
                let _ = answer.send(result);
            }
        }
    }
}
