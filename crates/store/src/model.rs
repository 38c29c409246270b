//! Rows and commands of the store, typed with the domain's newtypes.

use recarga_domain::{CatalogueRule, Currency, Money, TopupStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Customer {
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    #[sqlx(try_from = "i64")]
    pub balance: Money,
    #[sqlx(try_from = "i64")]
    pub credit_limit: Money,
    pub discount_bps: i64,
    #[sqlx(try_from = "i64")]
    pub min_topup: Money,
    #[sqlx(try_from = "i64")]
    pub max_topup: Money,
    pub daily_limit: Option<i64>,
    #[sqlx(try_from = "String")]
    pub catalogue: CatalogueRule,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every change of the row: newer always wins in caches.
    pub version: i64,
    /// Requests per second allowed; `None` uses the gateway default, 0 is unlimited.
    pub rate_limit_per_s: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub id: String,
    pub name: String,
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    pub initial_credit: Money,
    pub credit_limit: Money,
    pub discount_bps: i64,
    pub min_topup: Money,
    pub max_topup: Money,
    pub daily_limit: Option<Money>,
    pub catalogue: CatalogueRule,
}

impl NewCustomer {
    /// A customer with the house defaults: MXN, no credit, 10–2000 MXN per top-up.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        NewCustomer {
            id: id.into(),
            name: name.into(),
            currency: Currency::Mxn,
            fx_rate_micro: None,
            initial_credit: Money::ZERO,
            credit_limit: Money::ZERO,
            discount_bps: 0,
            min_topup: Money::major(10),
            max_topup: Money::major(2000),
            daily_limit: None,
            catalogue: CatalogueRule::OpenRange,
        }
    }
}

/// Settings an operator may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerPatch {
    pub name: Option<String>,
    pub credit_limit: Option<Money>,
    pub discount_bps: Option<i64>,
    pub min_topup: Option<Money>,
    pub max_topup: Option<Money>,
    /// `Some(None)` removes the limit.
    pub daily_limit: Option<Option<Money>>,
    pub catalogue: Option<CatalogueRule>,
    pub active: Option<bool>,
    pub fx_rate_micro: Option<i64>,
    /// `Some(None)` returns to the gateway default.
    pub rate_limit_per_s: Option<Option<i64>>,
    /// Why, for the audit log (written in the same transaction as the change).
    #[serde(skip)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Adjustment {
    pub customer_id: String,
    /// Positive credits, negative debits.
    pub amount: Money,
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: i64,
    pub customer_id: String,
    pub topup_id: Option<String>,
    pub kind: String,
    #[sqlx(try_from = "i64")]
    pub amount: Money,
    #[sqlx(try_from = "i64")]
    pub balance_after: Money,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: i64,
}

/// A key joined with its customer: [`crate::Store::find_caller`].
#[derive(sqlx::FromRow)]
pub(crate) struct CallerRow {
    #[sqlx(flatten)]
    customer: Customer,
    key_id: String,
    key_prefix: String,
    key_digest: String,
    key_label: Option<String>,
    key_created_at: i64,
    key_revoked_at: Option<i64>,
}

impl CallerRow {
    pub(crate) fn split(self) -> (ApiKey, Customer) {
        let key = ApiKey {
            id: self.key_id,
            customer_id: self.customer.id.clone(),
            prefix: self.key_prefix,
            digest: self.key_digest,
            label: self.key_label,
            created_at: self.key_created_at,
            revoked_at: self.key_revoked_at,
        };
        (key, self.customer)
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub customer_id: String,
    pub prefix: String,
    pub digest: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub customer_id: String,
    pub prefix: String,
    #[serde(skip)]
    pub digest: String,
    pub label: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What the accept transaction writes; priced and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewTopup {
    pub id: String,
    pub customer_id: String,
    pub reference: String,
    pub request_hash: String,
    pub phone: String,
    pub face_value: Money,
    pub product_id: String,
    pub amount_sent: Money,
    pub vat: Money,
    pub delivered: Money,
    pub discount_bps: i64,
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    pub held: Money,
    /// Set for a sync request: a duplicate before this instant answers 409.
    pub sync_wait_until: Option<i64>,
    /// The accepting HTTP request, for following logs end to end.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Accepted {
    /// Newly written, with the balance after the hold.
    New(Topup),
    /// The `(customer, reference)` pair existed already.
    Existing(Topup),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Topup {
    pub id: String,
    pub customer_id: String,
    pub reference: String,
    #[serde(skip)]
    pub request_hash: String,
    pub phone: String,
    #[sqlx(try_from = "i64")]
    pub face_value: Money,
    pub product_id: String,
    #[sqlx(try_from = "i64")]
    pub amount_sent: Money,
    #[sqlx(try_from = "i64")]
    pub vat: Money,
    #[sqlx(try_from = "i64")]
    pub delivered: Money,
    pub discount_bps: i64,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    #[sqlx(try_from = "i64")]
    pub held: Money,
    #[sqlx(try_from = "String")]
    pub status: TopupStatus,
    pub attempts: i64,
    pub checks: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub next_attempt_at: i64,
    pub next_check_at: Option<i64>,
    pub check_deadline: Option<i64>,
    pub sync_wait_until: Option<i64>,
    pub upstream_trans_id: Option<String>,
    pub upstream_ven_transid: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TopupFilter {
    pub customer_id: Option<String>,
    pub status: Option<TopupStatus>,
    pub phone: Option<String>,
    pub reference: Option<String>,
    /// Keyset cursor: only ids strictly older than this one.
    pub before_id: Option<String>,
    pub limit: i64,
}

/// One request/response with the upstream, kept for disputes.
#[derive(Debug, Clone, Default)]
pub struct NewExchange {
    /// `"topup"` or `"status"`.
    pub kind: &'static str,
    pub provider: String,
    pub request: Option<String>,
    pub response: Option<String>,
    pub http_status: Option<i64>,
    /// `"success"`, `"failed"`, `"unknown"`, `"not_sent"`.
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Exchange {
    pub id: i64,
    pub topup_id: String,
    pub kind: String,
    pub provider: String,
    pub request: Option<String>,
    pub response: Option<String>,
    pub http_status: Option<i64>,
    pub outcome: String,
    pub detail: Option<String>,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TopupEvent {
    pub id: i64,
    pub topup_id: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: i64,
}

/// What one upstream attempt decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success {
        trans_id: Option<String>,
        ven_transid: Option<String>,
    },
    /// A definite failure: the hold is released.
    Failed { code: String, message: String },
    /// Provably never sent: back to PENDING at `next_attempt_at`. When
    /// `count_attempt` is false (the upstream refused us before anything was
    /// sent, e.g. an IP block) the attempt is not counted against the limit.
    Retry {
        next_attempt_at: i64,
        reason: String,
        count_attempt: bool,
    },
    /// No definite answer: kept, checked by status query from `next_check_at`
    /// until `check_deadline`.
    Unknown {
        reason: String,
        trans_id: Option<String>,
        next_check_at: i64,
        check_deadline: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Finish {
    pub topup_id: String,
    /// The top-up's customer: batches lock customers in id order.
    pub customer_id: String,
    pub lease_owner: String,
    pub outcome: AttemptOutcome,
    pub exchange: NewExchange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalOutcome {
    Success,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub topup_id: String,
    pub outcome: FinalOutcome,
    pub actor: String,
    pub reason: String,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    /// The status query that decided it, when one did.
    pub exchange: Option<NewExchange>,
}

/// The open part of the queue: cheap to count (partial indexes), so it is
/// what `/health` and the per-second metrics show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueBacklog {
    /// PENDING and due now.
    pub pending: i64,
    /// PENDING but waiting for a retry time.
    pub delayed: i64,
    pub processing: i64,
    pub unknown: i64,
    /// Age in ms of the oldest PENDING row, if any.
    pub oldest_pending_ms: Option<i64>,
}

/// Every state, totals included: a scan of the whole history (operators only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// PENDING and due now.
    pub pending: i64,
    /// PENDING but waiting for a retry time.
    pub delayed: i64,
    pub processing: i64,
    pub success: i64,
    pub failed: i64,
    pub unknown: i64,
    /// Age in ms of the oldest PENDING row, if any.
    pub oldest_pending_ms: Option<i64>,
}

/// A change another process may want to hear about at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// New PENDING work.
    Work,
    /// A top-up changed state.
    Topup(String),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub customers: i64,
    pub topups: i64,
    pub ledger_entries: i64,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}
