//! Redis, optional and never trusted with money.
//!
//! With `REDIS_URL` set, replicas share through Redis:
//! - a **customer cache** (balance, limits, status) written through after every
//!   change with a compare-by-version script, so an older value can never
//!   overwrite a newer one, and a TTL (`CACHE_TTL_S`) as the safety net;
//! - **rate-limit** counters per customer and second;
//! - **events** (`{prefix}events` channel) for live pages.
//!
//! Every operation has a short timeout. When Redis fails, callers fall back to
//! the database or to in-process equivalents, `/health` reports it, and the
//! connection manager reconnects by itself: losing Redis costs latency, never
//! a top-up.

use recarga_store::Customer;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest wait for one Redis operation before falling back.
pub const REDIS_OP_TIMEOUT_MS: u64 = 250;
/// While Redis is known to be down, callers skip it (fail fast) and only one
/// probe per this interval waits on it.
pub const REDIS_RETRY_MS: i64 = 1_000;
/// Lifetime of a cached customer: the safety net behind write-through.
pub const CACHE_TTL_S: u64 = 30;

/// Stores `ARGV[2]` (JSON) at `KEYS[1]` unless the cached version is newer.
const PUT_IF_NEWER: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'json', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

pub struct RedisLink {
    manager: ConnectionManager,
    prefix: String,
    up: AtomicBool,
    /// When the last probe of a down Redis may be made again (ms since epoch).
    next_probe_ms: std::sync::atomic::AtomicI64,
    /// Cache keys whose write-through failed: deleted once Redis answers
    /// again, so a value cached before an outage is never served after it.
    dirty: std::sync::Mutex<std::collections::HashSet<String>>,
    put_if_newer: redis::Script,
}

/// The outcome of one rate-limit hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
}

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
            dirty: std::sync::Mutex::new(std::collections::HashSet::new()),
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
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
                "Redis unavailable: running degraded (cache bypassed, limits in process)"
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

    pub async fn get_customer(&self, id: &str) -> Option<Customer> {
        self.clean_dirty().await?;
        let mut conn = self.manager.clone();
        let key = self.key(&format!("customer:{id}"));
        let json: Option<String> = self
            .run(async move { redis::cmd("HGET").arg(key).arg("json").query_async(&mut conn).await })
            .await?;
        json.and_then(|j| serde_json::from_str(&j).ok())
    }

    pub async fn put_customer(&self, customer: &Customer) {
        let Ok(json) = serde_json::to_string(customer) else {
            return;
        };
        let mut conn = self.manager.clone();
        let key = self.key(&format!("customer:{}", customer.id));
        let script = self.put_if_newer.clone();
        let version = customer.version;
        let dirty_key = key.clone();
        let written: Option<i64> = self
            .run(async move {
                script
                    .key(key)
                    .arg(version)
                    .arg(json)
                    .arg(CACHE_TTL_S)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        if written.is_none() {
            self.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(dirty_key);
        }
    }

    /// Deletes the keys whose write-through failed; `None` while that fails
    /// (the caller then reads the database).
    async fn clean_dirty(&self) -> Option<()> {
        let stale: Vec<String> = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            if dirty.is_empty() {
                return Some(());
            }
            dirty.drain().collect()
        };
        let mut conn = self.manager.clone();
        let keys = stale.clone();
        let deleted: Option<i64> = self
            .run(async move { redis::cmd("DEL").arg(keys).query_async(&mut conn).await })
            .await;
        if deleted.is_none() {
            self.dirty.lock().unwrap_or_else(|e| e.into_inner()).extend(stale);
        }
        deleted.map(|_| ())
    }

    /// Counts one request of `customer` in the current second.
    pub async fn rate_hit(&self, customer: &str, limit: u64) -> Option<RateDecision> {
        let second = chrono::Utc::now().timestamp();
        let key = self.key(&format!("rate:{customer}:{second}"));
        let mut conn = self.manager.clone();
        let (count,): (u64,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .expire(&key, 2)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Some(RateDecision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
        })
    }

    /// Publishes an event for live pages on other replicas.
    pub async fn publish(&self, payload: &str) {
        let mut conn = self.manager.clone();
        let channel = self.key("events");
        let payload = payload.to_string();
        let _: Option<i64> = self
            .run(async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
            })
            .await;
    }
}
