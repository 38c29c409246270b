//! Customers and their money, one set of rules for every door (the panel,
//! the command line, the importer): a rule is checked here once.

use crate::error::{Result, ServiceError};
use recarga_domain::{Currency, IpList, Money};
use recarga_store::{Adjustment, Customer, CustomerPatch, LedgerEntry, NewCustomer, Resolution, Store, Topup};

/// Longest customer name.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest reason of a change.
pub const REASON_MAX_CHARS: usize = 500;

/// A customer id: 1–64 of `A-Z a-z 0-9 _ -` (clients send it as `x-customer-id`).
pub fn valid_customer_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ServiceError::invalid(
            "name",
            format!("the name is 1-{NAME_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_limits(min: Money, max: Money, discount_bps: i64, credit_limit: Money) -> Result<()> {
    if min.0 <= 0 || max < min {
        return Err(ServiceError::invalid(
            "min_topup",
            "the minimum must be positive and not above the maximum",
        ));
    }
    if !(0..=10_000).contains(&discount_bps) {
        return Err(ServiceError::invalid(
            "discount_bps",
            "the discount is 0 to 10000 basis points (0-100 %)",
        ));
    }
    if credit_limit.0 < 0 {
        return Err(ServiceError::invalid(
            "credit_limit",
            "the credit limit cannot be negative",
        ));
    }
    Ok(())
}

/// Checks a new customer before anything is written.
pub fn check_new(new: &NewCustomer) -> Result<()> {
    if !valid_customer_id(&new.id) {
        return Err(ServiceError::invalid(
            "id",
            "the customer id is 1-64 letters, digits, '_' or '-'",
        ));
    }
    check_name(&new.name)?;
    check_limits(new.min_topup, new.max_topup, new.discount_bps, new.credit_limit)?;
    if new.currency != Currency::Mxn && new.fx_rate_micro.is_none_or(|r| r <= 0) {
        return Err(ServiceError::invalid(
            "fx_rate",
            format!("a {} account needs an FX rate", new.currency),
        ));
    }
    if new.daily_limit.is_some_and(|l| l.0 <= 0) {
        return Err(ServiceError::invalid(
            "daily_limit",
            "the daily limit must be positive (or none)",
        ));
    }
    Ok(())
}

/// Checks a change against the customer as it is, and normalises the IP
/// allow-list to its canonical text.
pub fn check_patch(before: &Customer, patch: &mut CustomerPatch) -> Result<()> {
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    check_limits(
        patch.min_topup.unwrap_or(before.min_topup),
        patch.max_topup.unwrap_or(before.max_topup),
        patch.discount_bps.unwrap_or(before.discount_bps),
        patch.credit_limit.unwrap_or(before.credit_limit),
    )?;
    if patch.daily_limit.flatten().is_some_and(|l| l.0 <= 0) {
        return Err(ServiceError::invalid(
            "daily_limit",
            "the daily limit must be positive (or none)",
        ));
    }
    if patch.rate_limit_per_s.flatten().is_some_and(|r| r < 0) {
        return Err(ServiceError::invalid(
            "rate_limit",
            "the rate limit is 0 (unlimited) or more",
        ));
    }
    if patch.fx_rate_micro.is_some_and(|r| r <= 0) {
        return Err(ServiceError::invalid("fx_rate", "an FX rate is positive"));
    }
    if let Some(Some(text)) = &patch.ip_allowlist {
        let list = IpList::parse(text).map_err(|e| ServiceError::invalid("ip_allowlist", e))?;
        patch.ip_allowlist = Some(Some(list.to_text()).filter(|t| !t.is_empty()));
    }
    let list_after = match &patch.ip_allowlist {
        Some(list) => list.clone(),
        None => before.ip_allowlist.clone(),
    };
    let enforced = patch.ip_allowlist_enabled.unwrap_or(before.ip_allowlist_enabled);
    if enforced && list_after.as_deref().is_none_or(str::is_empty) {
        return Err(ServiceError::invalid(
            "ip_allowlist",
            "an enforced allow-list without addresses would refuse every request",
        ));
    }
    if patch
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > REASON_MAX_CHARS)
    {
        return Err(ServiceError::invalid(
            "reason",
            format!("a reason is at most {REASON_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Creates a customer (and its opening credit's ledger entry), audited.
pub async fn create(store: &dyn Store, new: &NewCustomer, actor: &str) -> Result<Customer> {
    check_new(new)?;
    Ok(store.create_customer(new, actor).await?)
}

/// Changes settings, checked against the customer as it is; audited with the reason.
pub async fn update(store: &dyn Store, id: &str, mut patch: CustomerPatch, actor: &str) -> Result<Customer> {
    let before = store.get_customer(id).await?.ok_or(ServiceError::NotFound)?;
    check_patch(&before, &mut patch)?;
    Ok(store.update_customer(id, &patch, actor).await?)
}

/// An operator credit (positive) or debit (negative), with its reason.
pub async fn adjust(store: &dyn Store, adj: &Adjustment) -> Result<LedgerEntry> {
    if adj.amount.0 == 0 {
        return Err(ServiceError::invalid("amount", "the amount must not be zero"));
    }
    if adj.reason.trim().is_empty() || adj.reason.chars().count() > REASON_MAX_CHARS {
        return Err(ServiceError::invalid(
            "reason",
            format!("a reason of 1-{REASON_MAX_CHARS} characters is required"),
        ));
    }
    Ok(store.adjust_balance(adj).await?)
}

/// An operator settles an UNKNOWN top-up: success captures its hold,
/// failure releases it. The reason is kept in the ledger and the audit log.
pub async fn resolve(store: &dyn Store, resolution: &Resolution) -> Result<Topup> {
    if resolution.reason.trim().is_empty() || resolution.reason.chars().count() > REASON_MAX_CHARS {
        return Err(ServiceError::invalid(
            "reason",
            format!("a reason of 1-{REASON_MAX_CHARS} characters is required"),
        ));
    }
    Ok(store.resolve_unknown(resolution).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_door() {
        assert!(valid_customer_id("ENVIADESPENSA_001") && valid_customer_id("a-b"));
        assert!(!valid_customer_id("") && !valid_customer_id("has space") && !valid_customer_id(&"x".repeat(65)));
        let mut bad = NewCustomer::new("C1", "Acme");
        bad.min_topup = Money::major(100);
        bad.max_topup = Money::major(50);
        assert!(check_new(&bad).is_err(), "min above max");
        let mut bad = NewCustomer::new("C1", "Acme");
        bad.discount_bps = 10_001;
        assert!(check_new(&bad).is_err(), "discount above 100 %");
        let mut usd = NewCustomer::new("C1", "Acme");
        usd.currency = Currency::Usd;
        assert!(check_new(&usd).is_err(), "USD without a rate");
        assert!(check_new(&NewCustomer::new("C1", "Acme")).is_ok());
    }
}
