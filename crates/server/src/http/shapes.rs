//! Schemas of the answers that handlers build with `json!`, and of the
//! compatibility request body. Never built: they only describe; the HTTP
//! tests check the live answers against them.
#![allow(dead_code)]

use crate::views::TopupView;
use utoipa::ToSchema;

/// A top-up request on the compatibility routes, as the old system took
/// it: unknown fields (such as `provider`) are accepted and ignored.
#[derive(ToSchema)]
pub struct CompatTopupRequest {
    /// 10-15 digits (a leading `52` or `521` is the country prefix), or `+52 …`.
    #[schema(schema_with = super::schema::phone_echo)]
    pub phone: String,
    /// MXN face value: a number or a numeric string, at most 2 decimals.
    #[schema(schema_with = super::schema::amount_input)]
    pub amount: String,
    /// Free text (optional; any other JSON value is kept as its text).
    /// Under the customer's `unique` policy a repeat returns the same
    /// transaction (a FAILED one starts anew); under `free` every request
    /// is a new top-up.
    #[schema(value_type = Value)]
    pub reference: Option<serde_json::Value>,
    /// Accepted and ignored (the old system's provider choice), like any other field.
    #[schema(value_type = Value)]
    pub provider: Option<serde_json::Value>,
}

/// `GET /v1/topups`: one page, newest first.
#[derive(ToSchema)]
pub struct TopupList {
    pub data: Vec<TopupView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A product the caller may buy: amounts between `min_amount` and
/// `max_amount` (MXN face value).
#[derive(ToSchema)]
pub struct Product {
    #[schema(example = "XOOM_20_MXN")]
    pub product_id: String,
    #[schema(example = "10.00")]
    pub min_amount: String,
    #[schema(example = "500.00")]
    pub max_amount: String,
    #[schema(example = "MXN")]
    pub currency: String,
    /// VAT in basis points (1600 = 16 %).
    pub vat_bps: i64,
}

/// `GET /v1/products`.
#[derive(ToSchema)]
pub struct ProductList {
    pub data: Vec<Product>,
    /// What happens to a face value that no product delivers exactly: it is
    /// refused (`amount_not_exact` or `amount_not_available`, with the nearest
    /// amounts that can be bought); it is never bought a centavo off.
    pub inexact_amounts: InexactAmounts,
    /// The same rule in words.
    pub amount_rule: String,
}

/// `refused`: the only rule today.
#[derive(ToSchema)]
pub enum InexactAmounts {
    #[schema(rename = "refused")]
    Refused,
}

/// `OK`, or `DEGRADED` when the database, the upstream or Redis does not answer.
#[derive(ToSchema)]
pub enum HealthStatus {
    #[schema(rename = "OK")]
    Ok,
    #[schema(rename = "DEGRADED")]
    Degraded,
}

#[derive(ToSchema)]
pub enum HealthMode {
    /// `RECARGA_ENV=production`.
    #[schema(rename = "PRODUCTION")]
    Production,
    /// Anything else (the sandbox, development).
    #[schema(rename = "TEST_MODE")]
    TestMode,
}

#[derive(ToSchema)]
pub struct HealthDatabase {
    #[schema(example = "postgres")]
    pub engine: String,
    pub ok: bool,
}

#[derive(ToSchema)]
pub struct HealthUpstream {
    #[schema(example = "sandbox")]
    pub provider: String,
    pub sandbox: bool,
    pub ok: bool,
    /// `ok`, `starting`, or a stable error code such as `upstream_ip_not_authorized`.
    pub state: String,
    pub detail: String,
}

/// The open part of the queue (`pending` is due now, `delayed` waits for a
/// retry time). Totals of finished top-ups are for operators only
/// (`/api/queue/stats`), not for this public route.
#[derive(ToSchema)]
pub struct QueueCounts {
    pub pending: i64,
    pub delayed: i64,
    pub processing: i64,
    pub unknown: i64,
    /// Age in ms of the oldest PENDING row.
    pub oldest_pending_ms: Option<i64>,
}

#[derive(ToSchema)]
pub struct HealthRedis {
    pub configured: bool,
    pub up: bool,
}

/// `instance` (the old system's key).
#[derive(ToSchema)]
pub struct HealthInstance {
    /// `RAILWAY_REPLICA_ID`, else `HOSTNAME`, else `local`.
    pub id: String,
    /// Resident memory, e.g. `"48MB"`.
    pub memory: String,
    pub pid: i64,
}

#[derive(ToSchema)]
pub struct HealthService {
    pub connected: bool,
    /// `healthy`, `disconnected` or `not configured`.
    pub status: String,
    /// The database engine (`database` only).
    pub engine: Option<String>,
    /// The open queue in the old system's names (`queue` only; null while the database is down).
    pub stats: Option<HealthQueueStats>,
}

#[derive(ToSchema)]
pub struct HealthQueueStats {
    pub waiting: i64,
    pub active: i64,
    pub delayed: i64,
    pub unknown: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct HealthRateLimiting {
    /// `redis` when Redis is up, else `memory`.
    pub backend: String,
    #[schema(rename = "apiLimit")]
    pub api_limit: String,
    #[schema(rename = "topupLimit")]
    pub topup_limit: String,
}

/// `services` (the old system's key).
#[derive(ToSchema)]
pub struct HealthServices {
    pub database: HealthService,
    pub redis: HealthService,
    pub queue: HealthService,
    #[schema(rename = "rateLimiting")]
    pub rate_limiting: HealthRateLimiting,
}

/// `GET /health`: the old system's keys, then ours.
#[derive(ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// Seconds since this process started.
    pub uptime: f64,
    pub mode: HealthMode,
    pub instance: HealthInstance,
    pub services: HealthServices,
    pub database: HealthDatabase,
    pub upstream: HealthUpstream,
    /// Null when the database is down.
    pub queue: Option<QueueCounts>,
    pub redis: HealthRedis,
    #[schema(example = "0.1.0")]
    pub version: String,
}

/// Counts in the old system's names.
#[derive(ToSchema)]
pub struct QueueStatsCounts {
    /// PENDING and due.
    pub waiting: i64,
    /// PROCESSING.
    pub active: i64,
    /// SUCCESS.
    pub completed: i64,
    /// FAILED.
    pub failed: i64,
    /// PENDING, waiting for a retry time.
    pub delayed: i64,
    /// UNKNOWN.
    pub unknown: i64,
    pub total: i64,
    /// Age in seconds of the oldest PENDING row.
    pub oldest_pending_age_s: Option<i64>,
}

/// One state change of a top-up.
#[derive(ToSchema)]
pub struct AdminEvent {
    pub from: Option<String>,
    pub to: String,
    /// `api`, `worker`, `rescuer`, `status-query`, or the operator.
    pub actor: String,
    pub reason: Option<String>,
    pub at: String,
}

/// One request/response with the upstream, as stored for disputes.
#[derive(ToSchema)]
pub struct AdminExchange {
    /// `topup` or `status`.
    pub kind: String,
    pub provider: String,
    /// `success`, `failed`, `unknown`, `not_sent`, `blocked`.
    pub outcome: String,
    pub detail: Option<String>,
    pub http_status: Option<i64>,
    /// The request as sent, without the bearer token.
    pub request: Option<String>,
    pub response: Option<String>,
    pub upstream_transaction_id: Option<String>,
    pub carrier_transaction_id: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    pub latency_ms: i64,
}

/// `GET /api/admin/topups/{id}`.
#[derive(ToSchema)]
pub struct AdminTopup {
    pub customer_id: String,
    pub topup: crate::views::TopupView,
    pub events: Vec<AdminEvent>,
    pub exchanges: Vec<AdminExchange>,
}

/// `GET /api/queue/stats`.
#[derive(ToSchema)]
pub struct QueueStats {
    pub success: bool,
    pub queue: QueueStatsCounts,
    /// Whether Redis answers (false when none is configured).
    pub redis: bool,
}
