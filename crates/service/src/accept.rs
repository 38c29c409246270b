//! The accept service, shared by `/v1` and the compatibility routes.
//!
//! Pricing and the customer's limits are checked in memory first (a bad
//! request never opens a transaction); then the accept queue (group commit,
//! see `recarga_store::group_commit`) decides and writes the request with
//! the others that arrived at the same moment: the idempotency keys, the
//! PENDING row, the hold and the balance, in one transaction. The caller
//! may wait, bounded, for the final state; it then gets the top-up as it is
//! (never a false failure).
//!
//! Idempotency: under the customer's `unique` reference policy the
//! reference is a key (a repeat replays); an `Idempotency-Key` header is a
//! key on any policy. Through the compatibility door a reference whose
//! top-up FAILED starts a new top-up (the old guides tell clients to retry),
//! and a retry of an open one waits for it instead of answering 409.

use crate::context::Services;
use crate::error::{Result, ServiceError};
use recarga_domain::{Money, Msisdn, Price, PricingError, ReferencePolicy, price_topup};
use recarga_store::{Accepted, Customer, NewTopup, Topup, now_ms};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest reference a customer may send.
pub const REFERENCE_MAX_CHARS: usize = 100;

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

/// Which door a request came through: the compatibility routes keep the old
/// system's habits where the settings allow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    V1,
    Compat,
}

/// Who asks: the authenticated customer, and the request id for the logs.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub customer: &'a Customer,
    pub request_id: Option<&'a str>,
}

/// The outcome of a submit: the transaction, and whether it was a replay.
pub struct Submitted {
    pub topup: Topup,
    pub replayed: bool,
    /// The FAILED top-up whose reference this new one took over (compatibility routes).
    pub restarted_from: Option<String>,
}

fn request_hash(input: &TopupInput) -> String {
    let digest = Sha256::digest(format!("{}|{}", input.phone.as_str(), input.amount.minor()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prices a request for a customer, or says why it cannot be bought.
pub fn price_for(customer: &Customer, amount: Money) -> Result<Price> {
    if amount < customer.min_topup {
        return Err(ServiceError::BelowMinimum(customer.min_topup));
    }
    if amount > customer.max_topup {
        return Err(ServiceError::AboveMaximum(customer.max_topup));
    }
    price_topup(
        amount,
        customer.catalogue,
        customer.discount_bps,
        customer.currency,
        customer.fx_rate_micro,
    )
    .map_err(|e| match e {
        PricingError::AmountNotAvailable => ServiceError::NotAvailable(customer.catalogue.products()),
        PricingError::MissingFxRate => ServiceError::Internal(format!("customer {} has no FX rate", customer.id)),
    })
}

/// The row the accept transaction writes for this request.
fn new_topup(who: Requester<'_>, input: &TopupInput, price: Price, door: Door, wait: Option<Duration>) -> NewTopup {
    let id = recarga_domain::new_topup_id();
    let ref_key = match who.customer.reference_policy {
        ReferencePolicy::Unique => input.reference.clone(),
        ReferencePolicy::Free => None,
    };
    NewTopup {
        reference: input.reference.clone().unwrap_or_else(|| id.clone()),
        id,
        customer_id: who.customer.id.clone(),
        ref_key,
        idem_key: input.idempotency_key.clone(),
        restart_failed: door == Door::Compat,
        request_hash: request_hash(input),
        phone: input.phone.clone(),
        face_value: price.face_value,
        product_id: price.quote.product_id,
        amount_sent: price.quote.amount_sent,
        vat: price.quote.vat,
        delivered: price.quote.delivered,
        discount_bps: price.discount_bps,
        currency: price.currency,
        fx_rate_micro: price.fx_rate_micro,
        held: price.held,
        sync_wait_until: wait.map(|w| now_ms() + w.as_millis() as i64),
        request_id: who.request_id.map(str::to_string),
    }
}

/// Accepts (or replays) a top-up and optionally waits for its final state.
pub async fn submit(
    svc: &Services,
    who: Requester<'_>,
    input: TopupInput,
    wait: Option<Duration>,
    door: Door,
) -> Result<Submitted> {
    let price = price_for(who.customer, input.amount)?;
    let new = new_topup(who, &input, price, door, wait);
    let hash = new.request_hash.clone();
    let (topup, replayed) = match svc.accepts.submit(new).await? {
        Accepted::New(t) => {
            recarga_domain::failpoint::hit("accept.after_commit");
            tracing::info!(id = %t.id, customer = %who.customer.id, phone = %input.phone, amount = %input.amount, "top-up accepted");
            svc.hub.work_available();
            crate::metrics::topup_accepted(&t.product_id);
            svc.hub.topup_event(&t);
            (t, false)
        }
        Accepted::Existing(t) => (replay(t, &input, &hash, door)?, true),
    };
    let restarted_from = if replayed { None } else { topup.retry_of.clone() };
    let topup = match wait {
        Some(w) => svc.hub.wait_final(svc.store.as_ref(), topup, w).await,
        None => topup,
    };
    Ok(Submitted {
        topup,
        replayed,
        restarted_from,
    })
}

/// The rules of a repeat: another body is refused; a synchronous request
/// still waiting is 409, except for an old client retrying its reference,
/// which waits for the same transaction.
fn replay(t: Topup, input: &TopupInput, hash: &str, door: Door) -> Result<Topup> {
    if t.request_hash != hash {
        return Err(ServiceError::ReferenceReused { transaction_id: t.id });
    }
    let by_idempotency_key = input.idempotency_key.is_some() && t.idem_key == input.idempotency_key;
    let sync_waiting = !t.status.is_final() && t.sync_wait_until.is_some_and(|until| until > now_ms());
    if sync_waiting && (door == Door::V1 || by_idempotency_key) {
        return Err(ServiceError::InFlight { transaction_id: t.id });
    }
    Ok(t)
}
