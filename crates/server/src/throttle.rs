//! Guessing and flooding the doors that take secrets: the login forms and
//! the `x-admin-key` header.
//!
//! - Failed attempts are counted in the database per (source address, name):
//!   `operator:<ip>:<email>`, `customer:<ip>:<id>`, `admin-key:<ip>` ([`failure_key`]),
//!   so a stranger cannot keep a name (the break-glass `admin`, a customer
//!   id) locked for its owner, and every replica sees the count. From the
//!   fifth failure within an hour the pair is locked for 30 s, doubling up
//!   to an hour ([`LOCKOUT`]). The source address is the one the API uses
//!   (`http::extract::client_ip`: the socket peer, or what a trusted proxy forwarded).
//! - Rows idle for longer than the window are purged while failures are
//!   recorded, at most once per [`PURGE_EVERY_MS`] per process.
//! - Login attempts of any name are limited per source address
//!   (`RECARGA_LOGIN_PER_IP_PER_MIN`, shared by replicas through Redis when it is up).
//! - Password checks (argon2, 19 MiB of memory each) run on a fixed pool of
//!   `RECARGA_LOGIN_HASH_CONCURRENCY` threads of their own; a login that
//!   waits longer than [`HASH_WAIT`] for one is answered "busy". Own threads,
//!   not the runtime's blocking pool, each reusing one argon2 buffer: the
//!   allocator keeps freed memory per thread arena, so allocating 19 MiB per
//!   check would leave hundreds of MiB resident after a flood.

pub use crate::guards::Busy;
use crate::state::App;
use recarga_store::LockoutPolicy;
use std::net::IpAddr;
use std::time::Duration;

/// Five failures within an hour lock the (address, name) pair for 30 s, doubling up to 1 h.
pub const LOCKOUT: LockoutPolicy = LockoutPolicy {
    threshold: 5,
    base_ms: 30_000,
    max_ms: 3_600_000,
    window_ms: 3_600_000,
};
/// Failure rows are purged at most this often per process.
pub const PURGE_EVERY_MS: i64 = 60_000;
/// Longest a login waits for a password-checking slot.
pub const HASH_WAIT: Duration = Duration::from_secs(10);
/// The per-address login window (s).
pub const LOGIN_WINDOW_S: u64 = 60;

/// Whether a name may be tried now.
pub enum Throttle {
    Open,
    Locked { wait_s: i64 },
}

/// The row that counts failures of `name` from `ip` at the door `kind`.
pub fn failure_key(kind: &str, ip: Option<IpAddr>, name: &str) -> String {
    let ip = ip
        .map(|ip| recarga_domain::netlist::canonical_ip(ip).to_string())
        .unwrap_or_else(|| "unknown".into());
    if name.is_empty() {
        format!("{kind}:{ip}")
    } else {
        format!("{kind}:{ip}:{name}")
    }
}

fn locked(until: Option<i64>, now: i64) -> Throttle {
    match until {
        Some(until) if until > now => Throttle::Locked {
            wait_s: (until - now + 999) / 1000,
        },
        _ => Throttle::Open,
    }
}

/// Whether `key` is locked now.
pub async fn state(app: &App, key: &str) -> recarga_store::Result<Throttle> {
    let state = app.store.login_throttle(key).await?;
    Ok(locked(state.locked_until, recarga_store::now_ms()))
}

/// Counts a failure of `key` (audited when it locks), and purges old rows.
pub async fn count_failure(app: &App, key: &str) -> recarga_store::Result<Throttle> {
    let now = recarga_store::now_ms();
    purge_old(app, now).await;
    let state = app.store.record_login_failure(key, now, &LOCKOUT).await?;
    let throttle = locked(state.locked_until, now);
    if let Throttle::Locked { .. } = throttle
        && let Err(e) = app
            .store
            .append_audit(
                "system",
                "login.locked",
                Some(key),
                Some(&format!("{} failed attempts", state.failures)),
            )
            .await
    {
        tracing::warn!(error = %e, "auditing a lockout failed");
    }
    Ok(throttle)
}

/// Forgets failures idle for longer than the window (at most once per
/// [`PURGE_EVERY_MS`] per process).
async fn purge_old(app: &App, now: i64) {
    if !app.guards.purge_due(now, PURGE_EVERY_MS) {
        return;
    }
    match app.store.purge_login_failures(now - LOCKOUT.window_ms, now).await {
        Ok(n) if n > 0 => tracing::debug!(rows = n, "purged old login failures"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "purging old login failures failed"),
    }
}

/// Counts a login attempt from `ip`; `false` when the address is over
/// `RECARGA_LOGIN_PER_IP_PER_MIN`.
pub async fn login_attempt_allowed(app: &App, ip: Option<IpAddr>) -> bool {
    let bucket = failure_key("login", ip, "");
    match app
        .window_hit(&bucket, app.config.login_per_ip_per_min, LOGIN_WINDOW_S)
        .await
    {
        Some(decision) => decision.allowed,
        None => true,
    }
}

/// Whether `password` matches the PHC string `stored`, checked on the
/// hashing threads ([`crate::guards`]); `Busy` after [`HASH_WAIT`] without a slot.
pub async fn check_password(app: &App, password: String, stored: String) -> Result<bool, Busy> {
    app.guards.check_password(password, stored, HASH_WAIT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keys_name_the_address() {
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(failure_key("operator", Some(ip), "a@b.c"), "operator:203.0.113.9:a@b.c");
        assert_eq!(failure_key("admin-key", Some(ip), ""), "admin-key:203.0.113.9");
        assert_eq!(failure_key("customer", None, "C1"), "customer:unknown:C1");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(failure_key("admin-key", Some(mapped), ""), "admin-key:203.0.113.9");
    }
}
