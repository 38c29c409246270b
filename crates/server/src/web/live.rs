//! Places for the live pages' server-sent event streams (`/queue/events`,
//! `/dashboard/events`): at most `RECARGA_LIVE_STREAMS_PER_SESSION` per login
//! session and `RECARGA_LIVE_STREAMS_PER_CUSTOMER` per customer (all its
//! sessions) in this process. A stream holds a [`StreamPlace`] for as long
//! as it lives; dropping it (the client went away, the stream ended) gives
//! the place back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open streams per holder (`session:<id>`, `customer:<id>`).
#[derive(Default)]
pub struct StreamCounts {
    open: Mutex<HashMap<String, usize>>,
}

impl StreamCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place under every `(holder, cap)`, or none if any is full.
    pub fn take(self: &Arc<Self>, caps: &[(String, usize)]) -> Option<StreamPlace> {
        let mut open = self.lock();
        if caps
            .iter()
            .any(|(holder, cap)| open.get(holder).copied().unwrap_or(0) >= *cap)
        {
            return None;
        }
        for (holder, _) in caps {
            *open.entry(holder.clone()).or_insert(0) += 1;
        }
        Some(StreamPlace {
            counts: self.clone(),
            holders: caps.iter().map(|(holder, _)| holder.clone()).collect(),
        })
    }

    /// Streams open for `holder`.
    pub fn open(&self, holder: &str) -> usize {
        self.lock().get(holder).copied().unwrap_or(0)
    }
}

/// One stream's place; given back on drop.
pub struct StreamPlace {
    counts: Arc<StreamCounts>,
    holders: Vec<String>,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        for holder in &self.holders {
            if let Some(n) = open.get_mut(holder) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(holder);
                }
            }
        }
    }
}

/// The answer when a cap is reached.
pub fn too_many() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "too many live streams open for this login; close another tab",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back() {
        let counts = Arc::new(StreamCounts::default());
        let caps = |s: &str| vec![(format!("session:{s}"), 2), ("customer:C".to_string(), 3)];
        let a = counts.take(&caps("a")).expect("first");
        let _b = counts.take(&caps("a")).expect("second");
        assert!(counts.take(&caps("a")).is_none(), "session cap");
        let _c = counts.take(&caps("b")).expect("other session");
        assert!(counts.take(&caps("b")).is_none(), "customer cap");
        drop(a);
        assert_eq!(counts.open("customer:C"), 2);
        assert!(counts.take(&caps("b")).is_some());
    }
}
