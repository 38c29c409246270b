//! The accept path, shared by `/v1` and the compatibility routes.
//!
//! Validation and pricing happen in memory first (a bad request never opens a
//! transaction); then the accept queue (group commit, see
//! `recarga_store::group_commit`) writes the idempotency record, the PENDING
//! row, the hold and the balance together, in one transaction shared with the
//! accepts that arrived at the same moment. The response never waits
//! for the upstream unless the client asked to, and then only for a bounded
//! time, after which it gets 202 with the same transaction (never a false
//! failure).
//!
//! Idempotency: under the customer's `unique` reference policy the reference
//! is a key (a repeat replays); an `Idempotency-Key` header is a key on any
//! policy. On the compatibility routes a reference whose top-up FAILED starts
//! a new top-up (the old guides tell clients to retry), and a retry of an
//! open one waits for it instead of answering 409.

use crate::app::App;
use crate::http::error::ApiError;
use recarga_domain::{Money, Msisdn, PricingError, ReferencePolicy, price_topup};
use recarga_store::{Accepted, Customer, NewTopup, Topup, now_ms};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The request body of every top-up route: `{"phone","amount","reference"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupBody {
    #[schema(schema_with = crate::http::openapi::phone_input)]
    phone: Box<RawValue>,
    #[schema(schema_with = crate::http::openapi::amount_input)]
    amount: Box<RawValue>,
    #[schema(schema_with = crate::http::openapi::reference_input)]
    reference: Box<RawValue>,
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct TopupInput {
    pub phone: Msisdn,
    pub amount: Money,
    /// The customer's reference; `None` (compatibility routes only): we use our id.
    pub reference: Option<String>,
    /// An `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

pub const REFERENCE_MAX_CHARS: usize = 100;
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// A reference: 1–100 printable ASCII characters without surrounding spaces.
pub fn valid_reference(text: &str) -> bool {
    let ok_chars = text.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    let trimmed = text.trim();
    !trimmed.is_empty() && ok_chars && text.chars().count() <= REFERENCE_MAX_CHARS && trimmed == text
}

/// Reads the `Idempotency-Key` header: 1–255 printable ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let ok = !text.is_empty()
        && text.len() <= IDEMPOTENCY_KEY_MAX_CHARS
        && text.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if !ok {
        return Err(ApiError::new(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters"),
        ));
    }
    Ok(Some(text.to_string()))
}

impl TopupBody {
    /// Parses each field exactly: amounts are read from the JSON text, never
    /// through a float.
    pub fn validate(&self) -> Result<TopupInput, ApiError> {
        let phone_text = json_text(&self.phone, true)
            .ok_or_else(|| ApiError::new("invalid_phone", "phone must be a string of digits"))?;
        let phone = Msisdn::parse(&phone_text).map_err(|e| ApiError::new("invalid_phone", e.to_string()))?;
        let amount_text = json_text(&self.amount, true)
            .ok_or_else(|| ApiError::new("invalid_amount", "amount must be a number or a decimal string"))?;
        let amount =
            Money::parse_decimal(amount_text.trim()).map_err(|e| ApiError::new("invalid_amount", e.to_string()))?;
        if !amount.is_positive() {
            return Err(ApiError::new("invalid_amount", "amount must be positive"));
        }
        let reference = json_text(&self.reference, false)
            .ok_or_else(|| ApiError::new("invalid_reference", "reference must be a string"))?;
        if !valid_reference(&reference) {
            return Err(ApiError::new(
                "invalid_reference",
                format!(
                    "reference must be 1-{REFERENCE_MAX_CHARS} printable ASCII characters without surrounding spaces"
                ),
            ));
        }
        Ok(TopupInput {
            phone,
            amount,
            reference: Some(reference),
            idempotency_key: None,
        })
    }
}

/// A JSON string's content, or (when `numbers` is allowed) a number's literal text.
pub fn json_text(raw: &RawValue, numbers: bool) -> Option<String> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()
    } else if numbers && text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(text.to_string())
    } else {
        None
    }
}

/// Which door a request came through: the compatibility routes keep the old
/// system's habits where the settings allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    V1,
    Compat,
}

/// The outcome of a submit: the transaction, and whether it was a replay.
pub struct Submitted {
    pub topup: Topup,
    pub replayed: bool,
    /// The FAILED top-up whose reference this new one took over (compatibility routes).
    pub restarted_from: Option<String>,
}

/// Why a submit was refused; nothing was written (or, for the two replay
/// refusals, nothing new).
#[derive(Debug)]
pub enum SubmitError {
    BelowMinimum(Money),
    AboveMaximum(Money),
    /// No product delivers exactly this amount; what the customer may buy.
    NotAvailable(Vec<recarga_domain::Product>),
    /// The key was used with another phone or amount.
    ReferenceReused {
        transaction_id: String,
    },
    /// A synchronous request with this key still waits.
    InFlight {
        transaction_id: String,
    },
    Refused(recarga_domain::Refusal),
    Store(recarga_store::StoreError),
}

impl From<recarga_store::StoreError> for SubmitError {
    fn from(e: recarga_store::StoreError) -> Self {
        match e {
            recarga_store::StoreError::Refused(r) => SubmitError::Refused(r),
            other => SubmitError::Store(other),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::BelowMinimum(min) => {
                ApiError::new("amount_below_minimum", format!("the minimum top-up is {min} MXN"))
            }
            SubmitError::AboveMaximum(max) => {
                ApiError::new("amount_above_maximum", format!("the maximum top-up is {max} MXN"))
            }
            SubmitError::NotAvailable(products) => {
                let allowed: Vec<_> = products.iter().map(crate::http::views::product_json).collect();
                ApiError::new("amount_not_available", "no product delivers exactly this amount")
                    .with_details(serde_json::json!({ "allowed": allowed }))
            }
            SubmitError::ReferenceReused { transaction_id } => ApiError::new(
                "reference_reused",
                "this reference was already used with a different phone or amount",
            )
            .with_details(serde_json::json!({ "transaction_id": transaction_id })),
            SubmitError::InFlight { transaction_id } => ApiError::new(
                "request_in_flight",
                "a synchronous request with this reference is still waiting; retry after it answers",
            )
            .with_details(serde_json::json!({ "transaction_id": transaction_id })),
            SubmitError::Refused(r) => ApiError::refused(&r),
            SubmitError::Store(e) => e.into(),
        }
    }
}

fn request_hash(input: &TopupInput) -> String {
    let digest = Sha256::digest(format!("{}|{}", input.phone.as_str(), input.amount.minor()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prices a request for a customer, or says why it cannot be bought.
pub fn price_for(customer: &Customer, amount: Money) -> Result<recarga_domain::Price, SubmitError> {
    if amount < customer.min_topup {
        return Err(SubmitError::BelowMinimum(customer.min_topup));
    }
    if amount > customer.max_topup {
        return Err(SubmitError::AboveMaximum(customer.max_topup));
    }
    price_topup(
        amount,
        customer.catalogue,
        customer.discount_bps,
        customer.currency,
        customer.fx_rate_micro,
    )
    .map_err(|e| match e {
        PricingError::AmountNotAvailable => SubmitError::NotAvailable(customer.catalogue.products()),
        PricingError::MissingFxRate => SubmitError::Store(recarga_store::StoreError::WrongState(format!(
            "customer {} has no FX rate",
            customer.id
        ))),
    })
}

/// Accepts (or replays) a top-up and optionally waits for its final state.
pub async fn submit(
    app: &App,
    caller: &crate::http::extract::Caller,
    input: TopupInput,
    wait: Option<Duration>,
    door: Door,
) -> Result<Submitted, SubmitError> {
    let customer: &Customer = &caller.customer;
    let price = price_for(customer, input.amount)?;
    let hash = request_hash(&input);
    let id = recarga_domain::new_topup_id();
    let ref_key = match customer.reference_policy {
        ReferencePolicy::Unique => input.reference.clone(),
        ReferencePolicy::Free => None,
    };
    let new = NewTopup {
        reference: input.reference.clone().unwrap_or_else(|| id.clone()),
        id,
        customer_id: customer.id.clone(),
        ref_key,
        idem_key: input.idempotency_key.clone(),
        restart_failed: door == Door::Compat,
        request_hash: hash.clone(),
        phone: input.phone.as_str().to_string(),
        face_value: price.face_value,
        product_id: price.quote.product_id.clone(),
        amount_sent: price.quote.amount_sent,
        vat: price.quote.vat,
        delivered: price.quote.delivered,
        discount_bps: price.discount_bps,
        currency: price.currency,
        fx_rate_micro: price.fx_rate_micro,
        held: price.held,
        sync_wait_until: wait.map(|w| now_ms() + w.as_millis() as i64),
        request_id: caller.request_id.clone(),
    };
    let (topup, replayed) = match app.accepts.submit(new).await? {
        Accepted::New(t) => {
            recarga_domain::failpoint::hit("accept.after_commit");
            tracing::info!(id = %t.id, customer = %customer.id, phone = %input.phone, amount = %input.amount, "top-up accepted");
            app.hub.work_available();
            crate::metrics::topup_accepted(&t.product_id);
            app.publish_topup(&t);
            (t, false)
        }
        Accepted::Existing(t) if t.request_hash != hash => {
            return Err(SubmitError::ReferenceReused { transaction_id: t.id });
        }
        Accepted::Existing(t) => {
            let by_idempotency_key = input.idempotency_key.is_some() && t.idem_key == input.idempotency_key;
            let sync_waiting = !t.status.is_final() && t.sync_wait_until.is_some_and(|until| until > now_ms());
            // An old client retrying its reference gets the same transaction
            // (and waits for it); an Idempotency-Key keeps the usual 409.
            if sync_waiting && (door == Door::V1 || by_idempotency_key) {
                return Err(SubmitError::InFlight { transaction_id: t.id });
            }
            (t, true)
        }
    };
    let restarted_from = if replayed { None } else { topup.retry_of.clone() };
    let topup = match wait {
        Some(w) => app.hub.wait_final(app.store.as_ref(), topup, w).await,
        None => topup,
    };
    Ok(Submitted {
        topup,
        replayed,
        restarted_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(amount_json: &str) -> Result<TopupInput, ApiError> {
        let text = format!(r#"{{"phone":"5512345678","amount":{amount_json},"reference":"r-1"}}"#);
        serde_json::from_str::<TopupBody>(&text)
            .expect("well-formed body")
            .validate()
    }

    proptest! {
        /// Any amount in centavos round-trips exactly through the JSON edge,
        /// written as a number or as a decimal string, never via a float.
        #[test]
        fn amounts_parse_exactly(minor in 1i64..=100_000_000) {
            let text = Money(minor).to_decimal_string();
            prop_assert_eq!(body(&text).map(|i| i.amount).ok(), Some(Money(minor)));
            prop_assert_eq!(body(&format!("\"{text}\"")).map(|i| i.amount).ok(), Some(Money(minor)));
        }

        /// Whatever JSON value stands in for the amount, validation answers
        /// (a value or a 4xx), never panics, and never accepts a non-positive amount.
        #[test]
        fn any_amount_value_is_answered(raw in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")).prop_filter("finite JSON", |t| !t.contains("inf") && !t.contains("NaN")),
            "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
            Just("null".to_string()), Just("true".to_string()), Just("[1]".to_string()), Just("{}".to_string()),
        ]) {
            let text = format!(r#"{{"phone":"5512345678","amount":{raw},"reference":"r-1"}}"#);
            if let Ok(parsed) = serde_json::from_str::<TopupBody>(&text) {
                match parsed.validate() {
                    Ok(input) => prop_assert!(input.amount.is_positive()),
                    Err(e) => prop_assert!(e.status.is_client_error()),
                }
            }
        }
    }

    #[test]
    fn numbers_and_strings_mean_the_same() {
        assert_eq!(body("20").unwrap().amount, Money(2000));
        assert_eq!(body("20.5").unwrap().amount, Money(2050));
        assert_eq!(body(r#""20.50""#).unwrap().amount, Money(2050));
        assert_eq!(body("1e3").unwrap_err().code, "invalid_amount");
        assert_eq!(body("20.001").unwrap_err().code, "invalid_amount");
        assert_eq!(body("-5").unwrap_err().code, "invalid_amount");
        assert_eq!(body("0").unwrap_err().code, "invalid_amount");
    }
}
