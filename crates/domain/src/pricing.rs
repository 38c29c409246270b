//! The price of a top-up, computed once at accept and stored on the row.
//!
//! face value (MXN, what the phone receives) → product quote (catalogue) →
//! customer discount (basis points, rounded in the house's favour) → FX into
//! the account currency when it is not MXN (rate = MXN per unit, × 10⁶,
//! rounded up). The result is the amount held from the balance.

use crate::catalogue::{self, CatalogueRule, ProductQuote};
use crate::money::{Currency, Money};
use serde::Serialize;

/// FX rates are stored as MXN per one unit of the account currency × 10⁶.
pub const FX_SCALE: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Price {
    pub face_value: Money,
    pub quote: ProductQuote,
    pub discount_bps: i64,
    /// Face value less discount, in MXN.
    pub charge_mxn: Money,
    pub currency: Currency,
    /// `Some` for non-MXN accounts.
    pub fx_rate_micro: Option<i64>,
    /// Held from the balance, in the account currency.
    pub held: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("no product delivers this amount")]
    AmountNotAvailable,
    #[error("the account has no FX rate for its currency")]
    MissingFxRate,
}

fn div_ceil(num: i128, den: i128) -> i128 {
    (num + den - 1) / den
}

pub fn price_topup(
    face: Money,
    rule: CatalogueRule,
    discount_bps: i64,
    currency: Currency,
    fx_rate_micro: Option<i64>,
) -> Result<Price, PricingError> {
    let quote = catalogue::quote(rule, face).ok_or(PricingError::AmountNotAvailable)?;
    let discount_bps = discount_bps.clamp(0, 10_000);
    // The discount is rounded down, so the charge is rounded up.
    let discount = (face.0 as i128 * discount_bps as i128 / 10_000) as i64;
    let charge_mxn = Money(face.0 - discount);
    let (held, fx) = match currency {
        Currency::Mxn => (charge_mxn, None),
        Currency::Usd => {
            let rate = fx_rate_micro.filter(|r| *r > 0).ok_or(PricingError::MissingFxRate)?;
            let held = div_ceil(charge_mxn.0 as i128 * FX_SCALE as i128, rate as i128) as i64;
            (Money(held), Some(rate))
        }
    };
    Ok(Price {
        face_value: face,
        quote,
        discount_bps,
        charge_mxn,
        currency,
        fx_rate_micro: fx,
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxn_without_discount_holds_face_value() {
        let p = price_topup(Money::major(50), CatalogueRule::OpenRange, 0, Currency::Mxn, None).unwrap();
        assert_eq!(p.held, Money::major(50));
        assert_eq!(p.quote.product_id, "XOOM_50_MXN");
    }

    #[test]
    fn discount_rounds_in_the_house_favour() {
        // 3.33 % of 10.00 = 0.333 → discount 0.33, charge 9.67.
        let p = price_topup(Money::major(10), CatalogueRule::XoomOnly, 333, Currency::Mxn, None).unwrap();
        assert_eq!(p.held, Money(967));
    }

    #[test]
    fn usd_accounts_convert_rounding_up() {
        // 100 MXN at 17.50 MXN/USD = 5.714… USD → 5.72.
        let p = price_topup(
            Money::major(100),
            CatalogueRule::XoomOnly,
            0,
            Currency::Usd,
            Some(17_500_000),
        )
        .unwrap();
        assert_eq!(p.held, Money(572));
        assert_eq!(p.fx_rate_micro, Some(17_500_000));
        assert_eq!(
            price_topup(Money::major(100), CatalogueRule::XoomOnly, 0, Currency::Usd, None),
            Err(PricingError::MissingFxRate)
        );
    }

    #[test]
    fn unavailable_amounts_are_refused() {
        assert_eq!(
            price_topup(Money::major(15), CatalogueRule::XoomOnly, 0, Currency::Mxn, None),
            Err(PricingError::AmountNotAvailable)
        );
    }
}
