//! What the login throttles hold in one process, apart from the database:
//! the password-hashing threads and when old failure rows were last purged
//! (`crate::throttle` uses them).
//!
//! Password checks (argon2, 19 MiB of memory each) run on a fixed pool of
//! `RECARGA_LOGIN_HASH_CONCURRENCY` threads of their own, each reusing one
//! argon2 buffer: not the runtime's blocking pool, because the allocator
//! keeps freed memory per thread arena, so allocating 19 MiB per check on
//! many threads would leave hundreds of MiB resident after a login flood.

use recarga_service::operators;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One password check for the hashing threads.
struct HashJob {
    password: String,
    stored: String,
    answer: tokio::sync::oneshot::Sender<bool>,
    /// Held until the check ends, even if the request that asked has gone.
    _slot: OwnedSemaphorePermit,
}

/// What the throttles of one process hold.
pub struct Guards {
    /// Slots for password checks: one per hashing thread.
    hash_slots: Arc<Semaphore>,
    /// The hashing threads' queue (they end when it is dropped).
    hash_jobs: Mutex<std::sync::mpsc::Sender<HashJob>>,
    /// When this process last purged old failure rows (ms).
    last_purge: AtomicI64,
}

impl Guards {
    /// Starts `hash_concurrency` hashing threads.
    pub fn new(hash_concurrency: usize) -> Self {
        let threads = hash_concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("recarga-hash-{i}"))
                .spawn(move || hashing_thread(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hashing thread");
            }
        }
        Guards {
            hash_slots: Arc::new(Semaphore::new(threads)),
            hash_jobs: Mutex::new(jobs),
            last_purge: AtomicI64::new(0),
        }
    }
}

fn hashing_thread(queue: &Mutex<std::sync::mpsc::Receiver<HashJob>>) {
    // argon2's working memory, allocated once and reused by every check.
    let mut memory = Vec::new();
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.recv()
        };
        let Ok(job) = job else { return };
        let matches = operators::verify_password_in(&job.password, &job.stored, &mut memory);
        let _ = job.answer.send(matches);
    }
}

/// No password-checking slot came free in time.
#[derive(Debug)]
pub struct Busy;

impl Guards {
    /// Whether `password` matches the PHC string `stored`, checked on the
    /// hashing threads; `Busy` when no slot is free within `wait`. The slot
    /// is held until the check ends, even if the request that asked has gone.
    pub async fn check_password(&self, password: String, stored: String, wait: Duration) -> Result<bool, Busy> {
        let slot = tokio::time::timeout(wait, self.hash_slots.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = HashJob {
            password,
            stored,
            answer,
            _slot: slot,
        };
        let sent = self.hash_jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        if sent.is_err() {
            return Err(Busy);
        }
        answered.await.map_err(|_| Busy)
    }

    /// Whether old failure rows are due for a purge at `now` (at most once
    /// per `every_ms`); claims the purge when they are.
    pub fn purge_due(&self, now: i64, every_ms: i64) -> bool {
        let last = self.last_purge.load(Ordering::Relaxed);
        now - last >= every_ms
            && self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
