//! Outage expiry: a top-up that never left must not be delivered days
//! later.
//!
//! While the upstream blocks us (IP not authorized, our wallet there is
//! empty) or cannot be reached, accepted top-ups wait PENDING. One that is
//! still PENDING `pending_max_age` after it was accepted (setting
//! `RECARGA_PENDING_MAX_AGE_S`, default 30 minutes) becomes FAILED with code
//! `expired_not_sent` and its hold is released, so the customer may buy
//! again elsewhere and nothing arrives late. Only top-ups that provably never
//! reached the provider may expire: PENDING is only ever entered before a
//! first send or after a send the provider provably did not process, and the
//! store checks the exchange log again (`SettleStore::expire_never_sent`).
//! An expired top-up is final: it is never sent afterwards (a claim only
//! takes PENDING rows).

use crate::context::Services;
use recarga_store::{StoreError, now_ms};

/// Top-ups expired per transaction (the scheduler runs again next tick).
pub const EXPIRE_BATCH: i64 = 200;

/// Expires what is due; returns how many.
pub async fn expire_never_sent(svc: &Services) -> Result<usize, StoreError> {
    let Some(max_age) = svc.settings.pending_max_age else {
        return Ok(0);
    };
    let created_before = now_ms() - max_age.as_millis() as i64;
    let expired = svc.store.expire_never_sent(created_before, EXPIRE_BATCH).await?;
    for t in &expired {
        tracing::warn!(id = %t.id, customer = %t.customer_id, "never sent within the pending age limit: FAILED expired_not_sent, hold released");
        crate::metrics::topup_expired(&t.product_id);
        svc.hub.topup_changed(&t.id);
        svc.hub.topup_event(t);
    }
    Ok(expired.len())
}
