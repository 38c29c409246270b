//! Rows and commands of the store, typed with the domain's newtypes.

pub use recarga_domain::{AttemptOutcome, FinalOutcome};
use recarga_domain::{
    CatalogueRule, Currency, ExchangeKind, ExchangeOutcome, LedgerKind, Money, Msisdn, ReferencePolicy, TopupStatus,
};
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
    /// `unique` (a reference replays forever) or `free` (references may repeat).
    #[sqlx(try_from = "String")]
    pub reference_policy: ReferencePolicy,
    /// `GET /api/transaction/{id}` answers without credentials for this
    /// customer's unguessable ids (the old guides' promise).
    pub public_status: bool,
    /// Addresses allowed to use this customer's keys (comma-separated CIDRs).
    pub ip_allowlist: Option<String>,
    /// Whether the allow-list is enforced (imported lists start disabled).
    pub ip_allowlist_enabled: bool,
    /// The import run that brought this customer from the old system.
    pub import_run: Option<String>,
    /// Invoice markup in basis points (the old `commission_percentage`);
    /// never part of a top-up's price.
    pub commission_bps: i64,
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
    pub reference_policy: ReferencePolicy,
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
            reference_policy: ReferencePolicy::Unique,
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
    pub reference_policy: Option<ReferencePolicy>,
    pub public_status: Option<bool>,
    /// `Some(None)` clears the list.
    pub ip_allowlist: Option<Option<String>>,
    pub ip_allowlist_enabled: Option<bool>,
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
    #[sqlx(try_from = "String")]
    pub kind: LedgerKind,
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
    key_kind: String,
    key_hint: Option<String>,
    key_expires_at: Option<i64>,
    key_last_used_at: Option<i64>,
    key_replaced_by: Option<String>,
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
            kind: self.key_kind,
            hint: self.key_hint,
            expires_at: self.key_expires_at,
            last_used_at: self.key_last_used_at,
            replaced_by: self.key_replaced_by,
        };
        (key, self.customer)
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub customer_id: String,
    /// How the key is named in lists and logs; for issued keys also how it is found.
    pub prefix: String,
    pub digest: String,
    pub label: Option<String>,
    /// `issued` (ours, `rk_…`) or `imported` (a key of the old system).
    pub kind: String,
    /// The first characters of an imported key, to recognise it in a list.
    pub hint: Option<String>,
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
    pub kind: String,
    pub hint: Option<String>,
    /// End of a rotation's overlap: the key stops working then.
    pub expires_at: Option<i64>,
    /// Last request it authenticated (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// The key that succeeds it after a rotation.
    pub replaced_by: Option<String>,
}

impl ApiKey {
    pub fn is_imported(&self) -> bool {
        self.kind == "imported"
    }

    /// Not revoked and not past its rotation overlap.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now_ms < t)
    }
}

/// What the accept transaction writes; priced and validated by the caller.
#[derive(Debug, Clone)]
pub struct NewTopup {
    pub id: String,
    pub customer_id: String,
    /// The customer's reference as given (our id when none was given).
    pub reference: String,
    /// Idempotency by reference (`unique` policy), unique per customer.
    pub ref_key: Option<String>,
    /// Idempotency by `Idempotency-Key` header, unique per customer.
    pub idem_key: Option<String>,
    /// A FAILED top-up holding `ref_key` may be started anew (compatibility routes).
    pub restart_failed: bool,
    pub request_hash: String,
    pub phone: Msisdn,
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
    #[sqlx(try_from = "String")]
    pub phone: Msisdn,
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
    /// Claims by a worker so far: the n-th went upstream under
    /// `recarga_domain::attempt_id(id, n)`.
    pub sends: i64,
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
    pub ref_key: Option<String>,
    pub idem_key: Option<String>,
    /// The FAILED top-up whose reference this one took over.
    pub retry_of: Option<String>,
    /// The integer id the old status route showed (set by the database on
    /// insert; `None` in the answer of the insert itself on SQLite).
    pub number: Option<i64>,
    /// `recarga`, or `legacy` for history imported from the old system:
    /// read-only, never queued, nothing held.
    pub origin: String,
    /// What the old system charged for an imported top-up (for an old
    /// PENDING row: what resolving it SUCCESS debits), in the customer's currency.
    pub legacy_price: Option<i64>,
    /// The old row's own facts (JSON), for disputes.
    #[serde(skip)]
    pub legacy: Option<String>,
}

impl Topup {
    /// History imported from the old system.
    pub fn is_imported(&self) -> bool {
        self.origin == "legacy"
    }

    /// Whether the client gave no reference (we used our id).
    pub fn reference_generated(&self) -> bool {
        self.reference == self.id
    }
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
#[derive(Debug, Clone)]
pub struct NewExchange {
    pub kind: ExchangeKind,
    pub provider: String,
    pub request: Option<String>,
    pub response: Option<String>,
    pub http_status: Option<i64>,
    pub outcome: ExchangeOutcome,
    pub detail: Option<String>,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
}

impl NewExchange {
    /// An exchange with nothing recorded yet but what it was and how it ended.
    pub fn new(kind: ExchangeKind, provider: &str, outcome: ExchangeOutcome) -> Self {
        NewExchange {
            kind,
            provider: provider.to_string(),
            request: None,
            response: None,
            http_status: None,
            outcome,
            detail: None,
            trans_id: None,
            ven_transid: None,
            started_at: 0,
            ended_at: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Exchange {
    pub id: i64,
    pub topup_id: String,
    #[sqlx(try_from = "String")]
    pub kind: ExchangeKind,
    pub provider: String,
    pub request: Option<String>,
    pub response: Option<String>,
    pub http_status: Option<i64>,
    #[sqlx(try_from = "String")]
    pub outcome: ExchangeOutcome,
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

#[derive(Debug, Clone)]
pub struct Finish {
    pub topup_id: String,
    /// The top-up's customer: batches lock customers in id order.
    pub customer_id: String,
    pub lease_owner: String,
    pub outcome: AttemptOutcome,
    pub exchange: NewExchange,
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
    /// Settled top-ups that a later upstream answer contradicts (a success
    /// on a FAILED one, a definite failure on a SUCCESS one); each is also
    /// a violation.
    pub late_evidence: i64,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}
