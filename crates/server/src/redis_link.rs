//! Redis, optional and never trusted with money.
//!
//! With `REDIS_URL` set, replicas share through Redis:
//! - **rate-limit** counters per bucket (a customer, a client address) and window.
//!
//! Live pages hear of other replicas' changes through PostgreSQL
//! notifications, not through Redis.
//!
//! Customers and balances are not cached here: every API request reads its
//! key and customer from the database in one query (`Store::find_caller`),
//! so a balance or a revocation is never stale.
//!
//! Every operation has a short timeout. When Redis fails, callers fall back to
//! in-process equivalents, `/health` reports it, and the
//! connection manager reconnects by itself: losing Redis costs latency, never
//! a top-up.

use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest wait for one Redis operation before falling back.
pub const REDIS_OP_TIMEOUT_MS: u64 = 250;
/// While Redis is known to be down, callers skip it (fail fast) and only one
/// probe per this interval waits on it.
pub const REDIS_RETRY_MS: i64 = 1_000;
pub struct RedisLink {
    manager: ConnectionManager,
    prefix: String,
    up: AtomicBool,
    /// When the last probe of a down Redis may be made again (ms since epoch).
    next_probe_ms: std::sync::atomic::AtomicI64,
}

use crate::ratelimit::{RateDecision, window_of};

impl RedisLink {
    /// Connects lazily: the process starts even if Redis is down, degraded.
    pub fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(REDIS_OP_TIMEOUT_MS)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {e}"))?;
        Ok(RedisLink {
            manager,
            prefix: prefix.to_string(),
            up: AtomicBool::new(true),
            next_probe_ms: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn key(&self, parts: &str) -> String {
        format!("{}{parts}", self.prefix)
    }

    /// Runs one operation with the timeout, recording whether Redis answered.
    async fn run<T>(&self, op: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
        if !self.is_up() {
            // Fail fast while down: one caller per interval probes, the rest skip.
            let now = chrono::Utc::now().timestamp_millis();
            let due = self.next_probe_ms.load(Ordering::Relaxed);
            let claimed = now >= due
                && self
                    .next_probe_ms
                    .compare_exchange(due, now + REDIS_RETRY_MS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            if !claimed {
                return None;
            }
        }
        match tokio::time::timeout(Duration::from_millis(REDIS_OP_TIMEOUT_MS), op).await {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis is back");
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("timeout");
                None
            }
        }
    }

    fn down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(
                error = why,
                "Redis unavailable: running degraded (rate limits in process)"
            );
        }
    }

    /// Checks that Redis answers (for `/health`).
    pub async fn ping(&self) -> bool {
        let mut conn = self.manager.clone();
        self.run(async move { redis::cmd("PING").query_async::<String>(&mut conn).await })
            .await
            .is_some()
    }

    /// Counts one request in `bucket`'s current window of `window_s` seconds.
    pub async fn rate_hit(&self, bucket: &str, limit: u64, window_s: u64) -> Option<RateDecision> {
        let (start, reset_s) = window_of(chrono::Utc::now().timestamp(), window_s);
        let key = self.key(&format!("rate:{bucket}:{window_s}:{start}"));
        let ttl = window_s as i64 + 1;
        let mut conn = self.manager.clone();
        let (count,): (u64,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .expire(&key, ttl)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Some(RateDecision::of(count, limit, window_s, reset_s))
    }
}
