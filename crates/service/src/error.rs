//! The one error of the service layer. Each adapter maps it to its own
//! answer: the HTTP API to its error codes (`recarga-server`'s
//! `http::error`), the pages to a message on the page, the command line to a
//! message and an exit code. Internal causes travel in the variants for the
//! logs; adapters never show them to a client.

use recarga_domain::{Money, Product, Refusal};
use recarga_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input: `field` says which, `message` says why (for people).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The amount is below the customer's per-top-up minimum (MXN).
    #[error("the minimum top-up is {0} MXN")]
    BelowMinimum(Money),
    #[error("the maximum top-up is {0} MXN")]
    AboveMaximum(Money),
    /// No product delivers exactly this amount; what the customer may buy.
    #[error("no product delivers exactly this amount")]
    NotAvailable(Vec<Product>),
    /// The idempotency key was used with another phone or amount.
    #[error("the reference was already used with a different phone or amount")]
    ReferenceReused { transaction_id: String },
    /// A synchronous request with this key still waits for its outcome.
    #[error("a synchronous request with this key is still waiting")]
    InFlight { transaction_id: String },
    /// The accept decision refused the request.
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// An operator debit would pass the credit limit.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The request breaks a rule of the stored data (a database check).
    #[error("refused by a rule: {0}")]
    Rule(String),
    /// The top-up is not in a state that allows this.
    #[error("wrong state: {0}")]
    WrongState(String),
    /// The database could not be reached: retry (with the same reference).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Something failed on our side; the cause is for the logs only.
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::NotFound,
            StoreError::InsufficientFunds => ServiceError::InsufficientFunds,
            StoreError::DailyLimitExceeded => ServiceError::Rule("rolling 24 h limit exceeded".into()),
            StoreError::CustomerInactive => ServiceError::Rule("the customer is inactive".into()),
            StoreError::Refused(r) => ServiceError::Refused(r),
            StoreError::AlreadyExists(what) => ServiceError::AlreadyExists(what),
            StoreError::Constraint(why) => ServiceError::Rule(why),
            StoreError::WrongState(why) => ServiceError::WrongState(why),
            e if e.is_unavailable() => ServiceError::Unavailable(e.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
