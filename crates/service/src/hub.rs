//! In-process signals: "there is new work" for the worker loop, and "this
//! top-up is final" for requests waiting on it.
//!
//! A waiting request is registered for as long as it waits, and no longer:
//! a request dropped mid-wait (its client went away) leaves the registry.
//!
//! Signals are only hints that shorten waits: every waiter re-reads the
//! database, and falls back to polling at a bounded interval, so a signal
//! lost (or sent by another replica) costs latency, never correctness.

use recarga_store::{Store, Topup};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a waiting request re-reads its top-up when no signal arrives.
pub const WAIT_POLL_MS: u64 = 1_000;

pub struct Hub {
    work: Notify,
    waiters: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    events: tokio::sync::broadcast::Sender<String>,
}

/// Events kept for slow live-page subscribers before they miss some.
pub const EVENT_BACKLOG: usize = 1024;

impl Hub {
    pub fn new() -> Arc<Self> {
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BACKLOG);
        Arc::new(Hub {
            work: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            events,
        })
    }

    /// Sends an event (JSON) to live-page subscribers of this process.
    pub fn publish(&self, event: &str) {
        let _ = self.events.send(event.to_string());
    }

    /// Tells this process's live pages that a top-up changed (other replicas'
    /// pages hear of it through PostgreSQL notifications).
    pub fn topup_event(&self, t: &Topup) {
        let event = serde_json::json!({
            "type": "topup",
            "id": t.id,
            "customer_id": t.customer_id,
            "status": t.status.as_str(),
            "updated_at": t.updated_at,
        });
        self.publish(&event.to_string());
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Wakes the worker loop (new PENDING rows).
    pub fn work_available(&self) {
        self.work.notify_one();
    }

    /// Resolves when [`Hub::work_available`] was called (or was already pending).
    pub async fn wait_for_work(&self) {
        self.work.notified().await;
    }

    /// Wakes requests waiting on this top-up.
    pub fn topup_changed(&self, id: &str) {
        if let Some((notify, _)) = self.lock().get(id) {
            notify.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting on a top-up in this process, all top-ups together.
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|(_, n)| n).sum()
    }

    fn register(&self, id: &str) -> Arc<Notify> {
        let mut map = self.lock();
        let slot = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        slot.1 += 1;
        slot.0.clone()
    }

    fn unregister(&self, id: &str) {
        let mut map = self.lock();
        if let Some(slot) = map.get_mut(id) {
            slot.1 -= 1;
            if slot.1 == 0 {
                map.remove(id);
            }
        }
    }

    /// Waits until the top-up is final or `timeout` passes, and returns its
    /// latest state. Holds no database connection while waiting. If the
    /// future is dropped first (the client went away), its registration
    /// goes with it.
    pub async fn wait_final(&self, store: &dyn Store, topup: Topup, timeout: Duration) -> Topup {
        if topup.status.is_final() || timeout.is_zero() {
            return topup;
        }
        let id = topup.id.clone();
        let registered = Registered::new(self, &id);
        let notify = registered.notify.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut latest = topup;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match store.get_topup(&id).await {
                Ok(Some(t)) => latest = t,
                Ok(None) => break,
                Err(e) => tracing::warn!(error = %e, "re-reading a waited top-up failed"),
            }
            if latest.status.is_final() {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let nap = (deadline - now).min(Duration::from_millis(WAIT_POLL_MS));
            let _ = tokio::time::timeout(nap, notified).await;
        }
        drop(registered);
        latest
    }
}

/// One waiter's registration; dropping it unregisters.
struct Registered<'a> {
    hub: &'a Hub,
    id: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Registered<'a> {
    fn new(hub: &'a Hub, id: &'a str) -> Self {
        Registered {
            hub,
            id,
            notify: hub.register(id),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}
