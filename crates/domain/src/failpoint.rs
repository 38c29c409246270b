//! Crash sites for tests: [`hit`] aborts the process at a named point.
//!
//! Compiled in only with the `failpoints` feature, which only the test builds
//! enable (the server's dev-dependencies); in a release build [`hit`] is an
//! empty inline function. A test arms one site by starting the binary with
//! `RECARGA_FAILPOINT=<site>` (abort on the first hit) or `<site>@<n>` (abort
//! on the n-th). The abort is `std::process::abort()`: no destructor runs and
//! no open transaction commits, exactly like `kill -9` at that line.
//!
//! The sites of the money path, in lifecycle order, are listed in
//! [`SITES`] (the crash suite and the story test crash every one); the sites
//! of one-off operator commands in [`COMMAND_SITES`] (each crashed by its
//! command's own suite).

/// Every crash site, in lifecycle order.
pub const SITES: &[&str] = &[
    // The accept transaction has written everything but not committed.
    "accept.before_commit",
    // The accept committed; the client has not had its answer.
    "accept.after_commit",
    // A claim committed (rows are PROCESSING under our lease); nothing sent.
    "worker.after_claim",
    // The upstream answered; the outcome is not written.
    "worker.after_upstream",
    // Inside the finalisation transaction, after the settlement, before commit.
    "finish.before_commit",
    // Inside an operator credit/debit, after its ledger entry, before commit.
    "adjust.before_commit",
    // The UNKNOWN resolver has the status answer; nothing written.
    "resolver.after_query",
    // Inside the resolution transaction, after the settlement, before commit.
    "resolve.before_commit",
    // Inside the lease rescue transaction, before commit.
    "rescue.before_commit",
    // Inside the expiry of never-sent top-ups, after the releases, before commit.
    "expire.before_commit",
];

/// Crash sites of one-off operator commands.
pub const COMMAND_SITES: &[&str] = &[
    // Inside one customer's import from the old system, everything written, before commit
    // (crashed by tests/it/legacy_import.rs).
    "import.before_commit",
];

/// The environment variable that arms a site.
pub const ENV: &str = "RECARGA_FAILPOINT";

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    pub fn hit(name: &'static str) {
        let armed = ARMED.get_or_init(|| {
            let spec = std::env::var(super::ENV).ok()?;
            let (site, nth) = match spec.split_once('@') {
                Some((site, n)) => (site.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some((site, nth.max(1)))
        });
        if let Some((site, nth)) = armed
            && site == name
            && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth
        {
            eprintln!("failpoint {name} hit: aborting");
            std::process::abort();
        }
    }
}

/// Aborts the process if `name` is the armed site (tests only; see module docs).
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    debug_assert!(
        SITES.contains(&name) || COMMAND_SITES.contains(&name),
        "unknown failpoint {name}"
    );
    armed::hit(name);
}

/// Without the `failpoints` feature, a failpoint is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}
