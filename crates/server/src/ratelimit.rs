//! Request limits: the per-customer limit of every API request and the old
//! system's limits on the compatibility routes.
//!
//! With Redis, replicas share fixed-window counters there
//! (`RedisLink::rate_hit`). Without it, or while it is down, each process
//! limits by itself with `governor`'s GCRA ([`LocalLimiter`]): the same
//! number per window, spread evenly, so a burst at a window's edge cannot
//! pass twice the limit.

use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::Clock, clock::DefaultClock};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The outcome of one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Length of the window (s).
    pub window_s: u64,
    /// Seconds until the budget is whole again (at least 1).
    pub reset_s: u64,
}

impl RateDecision {
    /// The decision for the `count`-th request of a window that ends in `reset_s`.
    pub fn of(count: u64, limit: u64, window_s: u64, reset_s: u64) -> Self {
        RateDecision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
            window_s,
            reset_s: reset_s.max(1),
        }
    }
}

/// The window a moment falls in (windows are aligned on the epoch) and the
/// seconds left in it.
pub fn window_of(now_s: i64, window_s: u64) -> (i64, u64) {
    let w = window_s.max(1) as i64;
    let start = now_s.div_euclid(w) * w;
    (start, (start + w - now_s) as u64)
}

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Limits of this process: one GCRA limiter per (limit, window), keyed by bucket.
#[derive(Default)]
pub struct LocalLimiter {
    limiters: Mutex<HashMap<(u64, u64), Arc<Keyed>>>,
}

/// Buckets a limiter keeps before it forgets the idle ones.
pub const LOCAL_LIMITER_BUCKETS_MAX: usize = 100_000;

impl LocalLimiter {
    fn limiter(&self, limit: u64, window_s: u64) -> Option<Arc<Keyed>> {
        let burst = NonZeroU32::new(u32::try_from(limit).unwrap_or(u32::MAX))?;
        let period = Duration::from_secs(window_s.max(1)) / burst.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
        let mut map = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let limiter = map
            .entry((limit, window_s))
            .or_insert_with(|| Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()))
            .clone();
        if limiter.len() > LOCAL_LIMITER_BUCKETS_MAX {
            limiter.retain_recent();
        }
        Some(limiter)
    }

    /// Counts one request of `bucket` against `limit` per `window_s` seconds.
    pub fn hit(&self, bucket: &str, limit: u64, window_s: u64) -> RateDecision {
        let Some(limiter) = self.limiter(limit, window_s) else {
            return RateDecision::of(0, limit, window_s, window_s);
        };
        let per_cell = window_s.max(1) as f64 / limit.max(1) as f64;
        match limiter.check_key(&bucket.to_string()) {
            Ok(state) => {
                let remaining = u64::from(state.remaining_burst_capacity());
                let refill = ((limit - remaining.min(limit)) as f64 * per_cell).ceil() as u64;
                RateDecision {
                    allowed: true,
                    limit,
                    remaining,
                    window_s,
                    reset_s: refill.max(1),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                RateDecision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    window_s,
                    reset_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_per_bucket_spread_over_its_window() {
        let l = LocalLimiter::default();
        let hits: Vec<RateDecision> = (0..4).map(|_| l.hit("c1", 3, 60)).collect();
        assert_eq!(hits.iter().filter(|d| d.allowed).count(), 3);
        assert_eq!(hits[0].remaining, 2);
        assert_eq!(hits[2].remaining, 0);
        assert!(
            !hits[3].allowed && hits[3].reset_s >= 1 && hits[3].reset_s <= 20,
            "{:?}",
            hits[3]
        );
        assert!(l.hit("c2", 3, 60).allowed, "another bucket has its own budget");
        assert_eq!(window_of(125, 60), (120, 55));
    }
}
