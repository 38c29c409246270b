//! Configuration: one typed struct per concern, read from flags and the
//! environment by clap, validated once at start-up.
//!
//! `recarga --help` and `recarga serve --help` list every setting with its
//! environment variable. The seed names of the old system stay valid
//! (`DATABASE_URL`, `ADMIN_KEY`, `PORT`, `QUEUE_CONCURRENCY`).

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Where the data lives. Shared by every subcommand, so the operator CLI
/// always talks to the same database as `serve`.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL URL (`postgres://…`). Unset: embedded SQLite under --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the embedded SQLite database.
    #[arg(long, env = "RECARGA_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Redis URL (`redis://…`), optional: rate limits shared
    /// across replicas. Unset: in-process equivalents.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PostgreSQL connections per process (replicas multiply it).
    #[arg(long, env = "RECARGA_DB_POOL_MAX", default_value_t = 16, global = true)]
    pub db_pool_max: u32,

    /// PostgreSQL connections per process reserved for the workers' claims and
    /// upstream answers, apart from the pool above, so an answer is written
    /// even while requests hold every connection of it (replicas multiply it).
    #[arg(long, env = "RECARGA_DB_WORKER_POOL_MAX", default_value_t = 4, global = true)]
    pub db_worker_pool_max: u32,

    /// Prefix of every Redis key and channel (several deployments can share one Redis).
    #[arg(long, env = "RECARGA_REDIS_PREFIX", default_value = "recarga:", global = true)]
    pub redis_prefix: String,
}

impl DbConfig {
    /// The URL the store opens.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("recarga.db").display()),
        }
    }

    pub fn is_embedded(&self) -> bool {
        !self.url().starts_with("postgres")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamKind {
    /// The built-in Latcom simulator on a loopback port, reached through the
    /// real Latcom adapter: the whole wire path, no real money.
    Sandbox,
    /// The real Latcom, configured by the LATCOM_* settings.
    Latcom,
}

/// A setting that must never be printed (`Debug` shows `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret(text.to_string()))
}

/// How to reach Latcom (`RECARGA_UPSTREAM=latcom`).
#[derive(Debug, Clone, Args)]
pub struct LatcomSettings {
    /// Base URL; every path is under `/api`.
    #[arg(long = "latcom-base-url", env = "LATCOM_BASE_URL")]
    pub base_url: Option<String>,
    #[arg(long = "latcom-username", env = "LATCOM_USERNAME")]
    pub username: Option<String>,
    #[arg(long = "latcom-password", env = "LATCOM_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub password: Option<Secret>,
    /// The login's `dist_api` value.
    #[arg(long = "latcom-dist-api-key", env = "LATCOM_DIST_API_KEY", hide_env_values = true, value_parser = secret)]
    pub dist_api_key: Option<Secret>,
    #[arg(long = "latcom-user-uid", env = "LATCOM_USER_UID")]
    pub user_uid: Option<String>,
    /// Time allowed to open a connection (ms). A call that never connected is safe to retry.
    #[arg(
        long = "latcom-connect-timeout-ms",
        env = "LATCOM_CONNECT_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub connect_timeout_ms: u64,
    /// Token lifetime assumed when the JWT has no `exp` claim (s).
    #[arg(
        long = "latcom-token-lifetime-s",
        env = "LATCOM_TOKEN_LIFETIME_S",
        default_value_t = 240
    )]
    pub token_lifetime_s: u64,
    /// Concurrent calls to Latcom from this process (replicas multiply it).
    #[arg(long = "latcom-max-inflight", env = "LATCOM_MAX_INFLIGHT", default_value_t = 64)]
    pub max_inflight: usize,
    /// Calls per second to Latcom from this process; 0 = unlimited (replicas multiply it).
    #[arg(long = "latcom-rate-per-s", env = "LATCOM_RATE_PER_S", default_value_t = 0)]
    pub rate_per_s: u32,
    /// A `Fail` answered after this many seconds is UNKNOWN, not a failure: in
    /// the old carrier dispute, Fails that took 7-33 s had been delivered.
    #[arg(long = "latcom-slow-fail-s", env = "LATCOM_SLOW_FAIL_S", default_value_t = 7)]
    pub slow_fail_s: u64,
    /// While our wallet at Latcom is empty (-120008), one waiting top-up is
    /// sent as a probe this often (s).
    #[arg(long = "latcom-wallet-probe-s", env = "LATCOM_WALLET_PROBE_S", default_value_t = 30)]
    pub wallet_probe_s: u64,
}

/// Settings of the long-running processes (`serve`, `worker`).
#[derive(Debug, Clone, Args)]
pub struct RuntimeConfig {
    /// `production` refuses the sandbox upstream, an unset ADMIN_KEY and the
    /// embedded SQLite database.
    #[arg(long, env = "RECARGA_ENV", value_enum, default_value = "development")]
    pub env: RunEnv,

    /// Let `RECARGA_ENV=production` run on the embedded SQLite database (one
    /// instance, on a disk that outlives deploys): replicas or a throwaway
    /// disk would each keep their own books.
    #[arg(long, env = "RECARGA_ALLOW_SQLITE", default_value = "false", action = clap::ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub allow_sqlite: bool,

    /// Let the sandbox upstream run although customers imported from the old
    /// system exist (a copy of production data for rehearsal): without it,
    /// `serve` and `worker` refuse, so real customers are never served by the
    /// simulator.
    #[arg(long, env = "RECARGA_SANDBOX_WITH_IMPORTED", default_value = "false", action = clap::ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    pub sandbox_with_imported: bool,

    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "RECARGA_BIND", default_value = "0.0.0.0")]
    pub bind: String,

    /// Operator secret for scripts and break-glass access (at least 16 characters).
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true, value_parser = secret)]
    pub admin_key: Option<Secret>,

    /// Upstream calls in flight at once in this process.
    #[arg(long, env = "QUEUE_CONCURRENCY", default_value_t = 64)]
    pub queue_concurrency: usize,

    /// How long a claimed top-up stays leased to its worker (s). Must exceed
    /// the upstream timeout: an expired lease makes the top-up UNKNOWN.
    #[arg(long, env = "RECARGA_LEASE_S", default_value_t = 120)]
    pub lease_s: u64,

    /// A top-up never sent this many seconds after it was accepted (upstream
    /// blocked, unreachable, wallet empty) fails `expired_not_sent`, its hold
    /// released; 0 = never expire.
    #[arg(long, env = "RECARGA_PENDING_MAX_AGE_S", default_value_t = 1_800)]
    pub pending_max_age_s: u64,

    /// Which upstream sells the top-ups.
    #[arg(long, env = "RECARGA_UPSTREAM", value_enum, default_value = "sandbox")]
    pub upstream: UpstreamKind,

    /// Total time allowed for one upstream top-up call (s).
    #[arg(long, env = "RECARGA_UPSTREAM_TIMEOUT_S", default_value_t = 40)]
    pub upstream_timeout_s: u64,

    #[command(flatten)]
    pub latcom: LatcomSettings,

    /// Sandbox latency range in ms, `MIN-MAX`.
    #[arg(long, env = "RECARGA_SANDBOX_LATENCY_MS", default_value = "2000-7000", value_parser = parse_range)]
    pub sandbox_latency_ms: (u64, u64),

    /// Delay of the sandbox's slow-success script (phone ending 995), in ms.
    #[arg(long, env = "RECARGA_SANDBOX_SLOW_MS", default_value_t = 20_000)]
    pub sandbox_slow_ms: u64,

    /// How long the compatibility sync route waits for a final state (s).
    #[arg(long, env = "RECARGA_SYNC_WAIT_S", default_value_t = 25)]
    pub sync_wait_s: u64,

    /// First delay between status queries of an UNKNOWN top-up (s); doubles each time.
    #[arg(long, env = "RECARGA_STATUS_CHECK_BASE_S", default_value_t = 5)]
    pub status_check_base_s: u64,

    /// Longest delay between status queries (s).
    #[arg(long, env = "RECARGA_STATUS_CHECK_MAX_S", default_value_t = 300)]
    pub status_check_max_s: u64,

    /// After this long (s) an UNKNOWN top-up is no longer queried: it waits for
    /// reconciliation or an operator (`recarga topup unresolved`).
    #[arg(long, env = "RECARGA_UNKNOWN_DEADLINE_S", default_value_t = 86_400)]
    pub unknown_deadline_s: u64,

    /// Requests per second per customer, shared by replicas through Redis; 0 =
    /// unlimited. A customer's own setting overrides it.
    #[arg(long, env = "RECARGA_RATE_LIMIT_PER_S", default_value_t = 0)]
    pub rate_limit_per_s: u64,

    /// How often the scheduler audits the ledger for `/metrics` (s); 0 = never.
    #[arg(long, env = "RECARGA_AUDIT_INTERVAL_S", default_value_t = 600)]
    pub audit_interval_s: u64,

    /// Create a demo customer on first start (sandbox only).
    #[arg(long, env = "RECARGA_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,

    /// Lifetime of an operator or dashboard login session (s).
    #[arg(long, env = "RECARGA_SESSION_TTL_S", default_value_t = 28_800)]
    pub session_ttl_s: u64,

    /// Key that signs session cookies (at least 32 characters); every replica
    /// needs the same. Unset: derived from ADMIN_KEY.
    #[arg(long, env = "RECARGA_SESSION_SECRET", hide_env_values = true, value_parser = secret)]
    pub session_secret: Option<Secret>,

    /// Mark session cookies `Secure` (HTTPS only). Unset: on in production.
    #[arg(long, env = "RECARGA_COOKIE_SECURE", action = clap::ArgAction::Set)]
    pub cookie_secure: Option<bool>,

    /// Proxies in front of the gateway (comma-separated addresses or CIDRs):
    /// only their `X-Forwarded-For` names the client, for IP allow-lists and
    /// per-address limits. Empty: the socket peer is the client.
    #[arg(long, env = "RECARGA_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Top-ups per minute per customer on the compatibility routes (the old
    /// system's limit; 0 = unlimited).
    #[arg(long, env = "RECARGA_COMPAT_TOPUP_PER_MIN", default_value_t = 200)]
    pub compat_topup_per_min: u64,

    /// Other compatibility requests (balance, status) per 15 minutes per
    /// customer, or per client address without credentials (the old system's
    /// limit; 0 = unlimited).
    #[arg(long, env = "RECARGA_COMPAT_API_PER_15MIN", default_value_t = 300)]
    pub compat_api_per_15min: u64,

    /// Login attempts per minute per client address, both login forms
    /// together, shared by replicas through Redis (0 = unlimited).
    #[arg(long, env = "RECARGA_LOGIN_PER_IP_PER_MIN", default_value_t = 30)]
    pub login_per_ip_per_min: u64,

    /// Password checks (argon2, 19 MiB of memory each) running at once in
    /// this process; further logins wait up to 10 s for a slot, then are
    /// answered 503.
    #[arg(long, env = "RECARGA_LOGIN_HASH_CONCURRENCY", default_value_t = 4)]
    pub login_hash_concurrency: usize,

    /// Time a client has to send a request's headers (s); also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, env = "RECARGA_HEADER_READ_TIMEOUT_S", default_value_t = 10)]
    pub header_read_timeout_s: u64,

    /// Longest pause while a request body arrives (s).
    #[arg(long, env = "RECARGA_BODY_TIMEOUT_S", default_value_t = 10)]
    pub body_timeout_s: u64,

    /// Longest time to answer a request (s); must exceed the longest wait a
    /// request may ask for (30 s). Streams (live pages, CSV) count only until
    /// their first byte.
    #[arg(long, env = "RECARGA_REQUEST_TIMEOUT_S", default_value_t = 60)]
    pub request_timeout_s: u64,

    /// Connections served at once by this process; further ones wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "RECARGA_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Live-page streams (`/queue/events`, `/dashboard/events`) open at once
    /// per login session, in this process.
    #[arg(long, env = "RECARGA_LIVE_STREAMS_PER_SESSION", default_value_t = 4)]
    pub live_streams_per_session: usize,

    /// Dashboard live streams open at once per customer (all its sessions), in this process.
    #[arg(long, env = "RECARGA_LIVE_STREAMS_PER_CUSTOMER", default_value_t = 16)]
    pub live_streams_per_customer: usize,
}

pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let lo: u64 = a.trim().parse().map_err(|_| format!("{text:?} is not MIN-MAX in ms"))?;
    let hi: u64 = b.trim().parse().map_err(|_| format!("{text:?} is not MIN-MAX in ms"))?;
    if hi < lo {
        return Err(format!("{text:?}: MAX is below MIN"));
    }
    Ok((lo, hi))
}

/// Settings of `recarga latcom-sim`, the simulator as its own server.
#[derive(Debug, Clone, Args)]
pub struct SimSettings {
    #[arg(long, env = "LATCOM_SIM_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    #[arg(long, env = "LATCOM_SIM_PORT", default_value_t = 8090)]
    pub port: u16,
    /// Answer latency range in ms, `MIN-MAX`.
    #[arg(long, env = "LATCOM_SIM_LATENCY_MS", default_value = "2000-7000", value_parser = parse_range)]
    pub latency_ms: (u64, u64),
    /// Lifetime of the tokens it issues (s).
    #[arg(long, env = "LATCOM_SIM_TOKEN_LIFETIME_S", default_value_t = 600)]
    pub token_lifetime_s: u64,
    /// Any other simulator setting, as a JSON object (e.g. `{"duplicate_policy":"reject"}`);
    /// all can also be changed at run time with `POST /__sim/config`.
    #[arg(long, env = "LATCOM_SIM_CONFIG")]
    pub config_json: Option<String>,
}

/// Shortest `ADMIN_KEY` accepted in production.
pub const PRODUCTION_ADMIN_KEY_MIN_LEN: usize = 32;
/// Fewest different characters in a production `ADMIN_KEY`.
pub const PRODUCTION_ADMIN_KEY_MIN_DISTINCT: usize = 10;
/// Least estimated entropy of a production `ADMIN_KEY` (bits: length ×
/// the Shannon entropy of its characters).
pub const PRODUCTION_ADMIN_KEY_MIN_BITS: f64 = 96.0;

/// Why `key` is too weak to guard a production gateway, if it is: short,
/// few different characters, a shorter string repeated, or low estimated
/// entropy. A random key (`openssl rand -hex 32`, `-base64 32`) passes.
pub fn weak_secret(key: &str) -> Option<String> {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    if n < PRODUCTION_ADMIN_KEY_MIN_LEN {
        return Some(format!("shorter than {PRODUCTION_ADMIN_KEY_MIN_LEN} characters"));
    }
    let mut counts = std::collections::HashMap::new();
    for c in &chars {
        *counts.entry(*c).or_insert(0_usize) += 1;
    }
    if counts.len() < PRODUCTION_ADMIN_KEY_MIN_DISTINCT {
        return Some(format!(
            "fewer than {PRODUCTION_ADMIN_KEY_MIN_DISTINCT} different characters"
        ));
    }
    if (1..=n / 2).any(|p| (p..n).all(|i| chars[i] == chars[i - p])) {
        return Some("a shorter string repeated".into());
    }
    let bits: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum::<f64>()
        * n as f64;
    if bits < PRODUCTION_ADMIN_KEY_MIN_BITS {
        return Some(format!(
            "about {bits:.0} bits of entropy, below {PRODUCTION_ADMIN_KEY_MIN_BITS:.0}"
        ));
    }
    None
}

/// The longest `Prefer: wait=N` honoured, in seconds.
pub const MAX_PREFER_WAIT_S: u64 = 30;
/// Attempts for a top-up whose request provably never left, before it fails.
pub const NOT_SENT_ATTEMPTS_MAX: i64 = 5;
/// First retry delay for such a top-up (ms); doubles per attempt.
pub const NOT_SENT_RETRY_BASE_MS: i64 = 2_000;

impl RuntimeConfig {
    /// Parses settings from flag-style arguments (`["--lease-s", "3"]`), with
    /// the environment as fallback: for tests and embedding.
    pub fn from_args(args: &[&str]) -> Result<Self, clap::Error> {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            rt: RuntimeConfig,
        }
        let matches = <Only as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("recarga").chain(args.iter().copied()))?;
        Ok(Only::from_arg_matches(&matches)?.rt)
    }

    /// Start-up checks. Errors are sentences an operator can act on.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(Secret(key)) = &self.admin_key
            && key.len() < 16
        {
            return Err("ADMIN_KEY must be at least 16 characters".into());
        }
        if self.env == RunEnv::Production {
            if self.admin_key.is_none() {
                return Err("RECARGA_ENV=production needs ADMIN_KEY to be set".into());
            }
            if self.upstream == UpstreamKind::Sandbox {
                return Err("RECARGA_ENV=production refuses the sandbox upstream: \
                            configure a live upstream (live money never goes to a sandbox)"
                    .into());
            }
            if let Some(Secret(key)) = &self.admin_key
                && let Some(why) = weak_secret(key)
            {
                return Err(format!(
                    "RECARGA_ENV=production refuses this ADMIN_KEY: {why}; use a random one, e.g. `openssl rand -hex 32`"
                ));
            }
        }
        if self.upstream == UpstreamKind::Latcom {
            let l = &self.latcom;
            let missing: Vec<&str> = [
                ("LATCOM_BASE_URL", l.base_url.is_none()),
                ("LATCOM_USERNAME", l.username.is_none()),
                ("LATCOM_PASSWORD", l.password.is_none()),
                ("LATCOM_DIST_API_KEY", l.dist_api_key.is_none()),
                ("LATCOM_USER_UID", l.user_uid.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            if !missing.is_empty() {
                return Err(format!("RECARGA_UPSTREAM=latcom needs {}", missing.join(", ")));
            }
        }
        if let Some(Secret(key)) = &self.session_secret
            && key.len() < 32
        {
            return Err("RECARGA_SESSION_SECRET must be at least 32 characters".into());
        }
        if self.session_ttl_s == 0 {
            return Err("RECARGA_SESSION_TTL_S must be at least 1".into());
        }
        if self.queue_concurrency == 0 {
            return Err("QUEUE_CONCURRENCY must be at least 1".into());
        }
        self.validate_upstream_capacity()?;
        if self.sync_wait_s > MAX_PREFER_WAIT_S {
            return Err(format!("RECARGA_SYNC_WAIT_S must be at most {MAX_PREFER_WAIT_S}"));
        }
        if self.status_check_base_s == 0 || self.status_check_max_s < self.status_check_base_s {
            return Err("status check delays must be positive and MAX ≥ BASE".into());
        }
        recarga_domain::IpList::parse(&self.trusted_proxies).map_err(|e| format!("RECARGA_TRUSTED_PROXIES: {e}"))?;
        self.validate_limits()
    }

    /// Where the books may live: production keeps them in PostgreSQL unless
    /// `RECARGA_ALLOW_SQLITE` says one instance on a lasting disk is meant.
    pub fn validate_store(&self, db: &DbConfig) -> Result<(), String> {
        if self.env != RunEnv::Production || self.allow_sqlite || !db.is_embedded() {
            return Ok(());
        }
        let what = match db.database_url.as_deref() {
            Some(url) if !url.is_empty() => "DATABASE_URL is not a postgres:// URL",
            _ => "DATABASE_URL is unset",
        };
        Err(format!(
            "RECARGA_ENV=production refuses the embedded SQLite database ({what}): replicas, or a disk \
             that a redeploy throws away, would each keep their own books. Set DATABASE_URL=postgres://… \
             (on Railway: the PostgreSQL service's DATABASE_URL), or RECARGA_ALLOW_SQLITE=1 for a single \
             instance whose data directory is on a persistent volume"
        ))
    }

    /// Real customers are never served by the simulator: once customers
    /// imported from the old system exist (`imported`), the sandbox upstream
    /// is refused in every environment unless `RECARGA_SANDBOX_WITH_IMPORTED`
    /// says this is a rehearsal on a copy.
    pub fn validate_sandbox_with(&self, imported: u64) -> Result<(), String> {
        if self.upstream != UpstreamKind::Sandbox || imported == 0 || self.sandbox_with_imported {
            return Ok(());
        }
        Err(format!(
            "refusing the sandbox upstream: this database holds {imported} customer(s) imported from the old \
             system, and real customers must never be served by the simulator. Configure the live upstream \
             (RECARGA_UPSTREAM=latcom and LATCOM_*), or set RECARGA_SANDBOX_WITH_IMPORTED=1 if this is a \
             rehearsal on a copy of the data"
        ))
    }

    /// The listener's and the pages' limits.
    fn validate_limits(&self) -> Result<(), String> {
        for (name, value) in [
            ("RECARGA_HEADER_READ_TIMEOUT_S", self.header_read_timeout_s),
            ("RECARGA_BODY_TIMEOUT_S", self.body_timeout_s),
            ("RECARGA_MAX_CONNECTIONS", self.max_connections as u64),
            ("RECARGA_LOGIN_HASH_CONCURRENCY", self.login_hash_concurrency as u64),
            ("RECARGA_LIVE_STREAMS_PER_SESSION", self.live_streams_per_session as u64),
            (
                "RECARGA_LIVE_STREAMS_PER_CUSTOMER",
                self.live_streams_per_customer as u64,
            ),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        let longest_wait = MAX_PREFER_WAIT_S.max(self.sync_wait_s);
        if self.request_timeout_s <= longest_wait {
            return Err(format!(
                "RECARGA_REQUEST_TIMEOUT_S ({}) must exceed the longest wait a request may ask for ({longest_wait} s)",
                self.request_timeout_s
            ));
        }
        Ok(())
    }

    /// The worker's calls must fit what the upstream settings allow, and a
    /// lease must outlive the longest call: otherwise calls would wait past
    /// their time or be rescued while still in flight.
    fn validate_upstream_capacity(&self) -> Result<(), String> {
        let bound = self.upstream_timeout() + recarga_service::settle::call_bound_slack(self.upstream_timeout());
        if self.lease() <= bound {
            return Err(format!(
                "RECARGA_LEASE_S ({}) must exceed RECARGA_UPSTREAM_TIMEOUT_S ({}) plus its slack ({} s), \
                 or in-flight calls would be rescued",
                self.lease_s,
                self.upstream_timeout_s,
                (bound - self.upstream_timeout()).as_secs_f64()
            ));
        }
        let l = &self.latcom;
        if self.queue_concurrency > l.max_inflight {
            return Err(format!(
                "QUEUE_CONCURRENCY ({}) exceeds LATCOM_MAX_INFLIGHT ({}): the extra calls would only wait \
                 in this process; lower QUEUE_CONCURRENCY or raise LATCOM_MAX_INFLIGHT",
                self.queue_concurrency, l.max_inflight
            ));
        }
        let per_timeout = u64::from(l.rate_per_s).saturating_mul(self.upstream_timeout_s);
        if l.rate_per_s > 0 && self.queue_concurrency as u64 > per_timeout {
            return Err(format!(
                "QUEUE_CONCURRENCY ({}) exceeds LATCOM_RATE_PER_S x RECARGA_UPSTREAM_TIMEOUT_S ({} x {} = {}): \
                 calls would wait for the rate limit longer than a call may take",
                self.queue_concurrency, l.rate_per_s, self.upstream_timeout_s, per_timeout
            ));
        }
        if l.slow_fail_s == 0 || l.wallet_probe_s == 0 {
            return Err("LATCOM_SLOW_FAIL_S and LATCOM_WALLET_PROBE_S must be at least 1".into());
        }
        Ok(())
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_s)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s)
    }

    pub fn pending_max_age(&self) -> Option<Duration> {
        (self.pending_max_age_s > 0).then(|| Duration::from_secs(self.pending_max_age_s))
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        rt: RuntimeConfig,
    }

    fn parse(args: &[&str]) -> RuntimeConfig {
        let mut all = vec!["probe"];
        all.extend_from_slice(args);
        Probe::try_parse_from(all).expect("parse").rt
    }

    #[test]
    fn defaults_are_valid_for_development() {
        let rt = parse(&[]);
        assert_eq!(rt.port, 8080);
        assert_eq!(rt.queue_concurrency, 64);
        assert_eq!(rt.sandbox_latency_ms, (2000, 7000));
        assert!(rt.validate().is_ok());
    }

    #[test]
    fn production_refuses_sandbox_and_missing_admin_key() {
        let no_key = parse(&["--env", "production"]);
        assert!(no_key.validate().unwrap_err().contains("ADMIN_KEY"));
        let sandbox = parse(&["--env", "production", "--admin-key", "0123456789abcdef"]);
        assert!(sandbox.validate().unwrap_err().contains("sandbox"));
    }

    #[test]
    fn latcom_needs_its_settings_and_hides_its_secrets() {
        let err = parse(&["--upstream", "latcom", "--latcom-base-url", "https://x"])
            .validate()
            .unwrap_err();
        assert!(
            err.contains("LATCOM_PASSWORD") && !err.contains("LATCOM_BASE_URL"),
            "{err}"
        );
        let rt = parse(&[
            "--latcom-password",
            "hunter2-canary",
            "--admin-key",
            "0123456789abcdef-canary",
        ]);
        let shown = format!("{rt:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
    }

    #[test]
    fn production_wants_a_strong_admin_key() {
        let latcom = [
            "--env",
            "production",
            "--upstream",
            "latcom",
            "--latcom-base-url",
            "https://x",
            "--latcom-username",
            "u",
            "--latcom-password",
            "p",
            "--latcom-dist-api-key",
            "d",
            "--latcom-user-uid",
            "1",
            "--admin-key",
        ];
        let with = |key: &str| {
            let mut args = latcom.to_vec();
            args.push(key);
            parse(&args).validate()
        };
        for weak in [
            "0123456789abcdef",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0123456789abcdef0123456789abcdef0123456789abcdef",
            "passwordpasswordpasswordpassword1",
        ] {
            let err = with(weak).unwrap_err();
            assert!(err.contains("ADMIN_KEY") && !err.contains(weak), "{err}");
        }
        for strong in [
            "3f9c1a7e5b2d8046c1e9a3b7d5f20864",
            "Zq7+uN2pXr9sLw4KbT1eHc6yGm0dVf3jA8oQiS5xE=",
        ] {
            assert_eq!(with(strong), Ok(()), "{strong}");
            assert_eq!(weak_secret(strong), None);
        }
        // Outside production the old rule (16 characters) stands.
        assert!(parse(&["--admin-key", "0123456789abcdef"]).validate().is_ok());
    }

    fn db(url: Option<&str>) -> DbConfig {
        DbConfig {
            database_url: url.map(str::to_string),
            data_dir: PathBuf::from("./data"),
            redis_url: None,
            db_pool_max: 16,
            db_worker_pool_max: 4,
            redis_prefix: "recarga:".into(),
        }
    }

    #[test]
    fn production_keeps_its_books_in_postgres_unless_told() {
        let prod = parse(&["--env", "production"]);
        for embedded in [None, Some(""), Some("sqlite:///var/lib/recarga/recarga.db")] {
            let err = prod.validate_store(&db(embedded)).unwrap_err();
            assert!(
                err.contains("SQLite") && err.contains("RECARGA_ALLOW_SQLITE=1"),
                "{embedded:?}: {err}"
            );
        }
        assert!(prod.validate_store(&db(Some("postgres://u@h/recarga"))).is_ok());
        assert!(prod.validate_store(&db(Some("postgresql://u@h/recarga"))).is_ok());
        for yes in ["1", "true", "yes", "on"] {
            let allowed = parse(&["--env", "production", "--allow-sqlite", yes]);
            assert!(allowed.validate_store(&db(None)).is_ok(), "{yes}");
        }
        let refused = parse(&["--env", "production", "--allow-sqlite", "0"]);
        assert!(refused.validate_store(&db(None)).is_err());
        // Development runs on SQLite without being asked.
        assert!(parse(&[]).validate_store(&db(None)).is_ok());
    }

    #[test]
    fn imported_customers_are_never_served_by_the_sandbox() {
        let sandbox = parse(&[]);
        assert!(sandbox.validate_sandbox_with(0).is_ok());
        let err = sandbox.validate_sandbox_with(3).unwrap_err();
        assert!(
            err.contains("3 customer(s)") && err.contains("RECARGA_SANDBOX_WITH_IMPORTED=1"),
            "{err}"
        );
        let rehearsal = parse(&["--sandbox-with-imported", "1"]);
        assert!(rehearsal.validate_sandbox_with(3).is_ok());
        let live = parse(&["--upstream", "latcom"]);
        assert!(live.validate_sandbox_with(3).is_ok());
    }

    #[test]
    fn request_timeout_outlasts_the_longest_wait() {
        assert!(parse(&["--request-timeout-s", "30"]).validate().is_err());
        assert!(parse(&["--request-timeout-s", "31"]).validate().is_ok());
        assert!(parse(&["--max-connections", "0"]).validate().is_err());
    }

    #[test]
    fn lease_must_outlive_the_upstream_call() {
        assert!(
            parse(&["--lease-s", "10", "--upstream-timeout-s", "40"])
                .validate()
                .is_err()
        );
        // Timeout 40 s + slack 5 s: a 45 s lease is too short, 46 s is enough.
        let err = parse(&["--lease-s", "45", "--upstream-timeout-s", "40"])
            .validate()
            .unwrap_err();
        assert!(err.contains("slack"), "{err}");
        assert!(
            parse(&["--lease-s", "46", "--upstream-timeout-s", "40"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--admin-key", "short"]).validate().is_err());
    }

    #[test]
    fn queue_concurrency_must_fit_the_upstream_caps() {
        // The review's case: 64 calls queued behind one call per second.
        let err = parse(&["--latcom-rate-per-s", "1"]).validate().unwrap_err();
        assert!(err.contains("LATCOM_RATE_PER_S"), "{err}");
        let err = parse(&["--queue-concurrency", "65"]).validate().unwrap_err();
        assert!(err.contains("LATCOM_MAX_INFLIGHT"), "{err}");
        // 2 calls/s x 40 s = 80 >= 64: fits.
        assert!(parse(&["--latcom-rate-per-s", "2"]).validate().is_ok());
        assert!(
            parse(&[
                "--queue-concurrency",
                "8",
                "--latcom-rate-per-s",
                "1",
                "--upstream-timeout-s",
                "8"
            ])
            .validate()
            .is_ok()
        );
    }
}
