//! Which Latcom product delivers a face value, as data per customer.
//!
//! Latcom sells fixed "XOOM" denominations (`XOOM_{n}_MXN`, `amount == n`, no
//! zero padding) and an open range `TFE_MXN_20_TO_2000` to which Latcom adds
//! 16 % VAT: to deliver face value F we send F / 1.16, which must itself lie in
//! 20–2000 MXN. A customer's [`CatalogueRule`] says which of these it may buy;
//! it is stored on the customer row, never an environment switch.

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// XOOM denominations in whole pesos.
pub const XOOM_DENOMINATIONS: [i64; 14] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 500];
pub const OPEN_RANGE_PRODUCT: &str = "TFE_MXN_20_TO_2000";
pub const OPEN_RANGE_MIN: Money = Money::major(20);
pub const OPEN_RANGE_MAX: Money = Money::major(2000);
/// Latcom's VAT on the open range, in basis points (16 %).
pub const OPEN_RANGE_VAT_BPS: i64 = 1600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueRule {
    /// Only the fixed XOOM denominations.
    XoomOnly,
    /// XOOM where the face value is a denomination, open range otherwise.
    #[default]
    OpenRange,
}

impl CatalogueRule {
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogueRule::XoomOnly => "xoom_only",
            CatalogueRule::OpenRange => "open_range",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "xoom_only" => Some(CatalogueRule::XoomOnly),
            "open_range" => Some(CatalogueRule::OpenRange),
            _ => None,
        }
    }

    /// The products this rule allows, for `GET /v1/products` and error details.
    pub fn products(self) -> Vec<Product> {
        let mut out: Vec<Product> = XOOM_DENOMINATIONS
            .iter()
            .map(|&n| Product {
                id: xoom_product_id(n),
                min_face_value: Money::major(n),
                max_face_value: Money::major(n),
                vat_bps: 0,
            })
            .collect();
        if self == CatalogueRule::OpenRange {
            out.push(Product {
                id: OPEN_RANGE_PRODUCT.to_string(),
                min_face_value: delivered_for_sent(OPEN_RANGE_MIN),
                max_face_value: delivered_for_sent(OPEN_RANGE_MAX),
                vat_bps: OPEN_RANGE_VAT_BPS,
            });
        }
        out
    }
}

/// A product as offered to a customer, in face value (what the phone receives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    pub id: String,
    pub min_face_value: Money,
    pub max_face_value: Money,
    pub vat_bps: i64,
}

/// How one face value is bought upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductQuote {
    pub product_id: String,
    /// The `amount` field sent to Latcom (MXN).
    pub amount_sent: Money,
    /// VAT Latcom adds on top of `amount_sent`.
    pub vat: Money,
    /// What the phone receives: `amount_sent + vat`.
    pub delivered: Money,
}

pub fn xoom_product_id(pesos: i64) -> String {
    format!("XOOM_{pesos}_MXN")
}

fn delivered_for_sent(sent: Money) -> Money {
    Money(round_div(sent.0 * (10_000 + OPEN_RANGE_VAT_BPS), 10_000))
}

/// Integer division rounding half away from zero, for non-negative inputs.
fn round_div(num: i64, den: i64) -> i64 {
    (num + den / 2) / den
}

/// Chooses the product for `face` under `rule`, or `None` when no product can
/// deliver exactly that amount.
pub fn quote(rule: CatalogueRule, face: Money) -> Option<ProductQuote> {
    if face.0 % 100 == 0 && XOOM_DENOMINATIONS.contains(&(face.0 / 100)) {
        return Some(ProductQuote {
            product_id: xoom_product_id(face.0 / 100),
            amount_sent: face,
            vat: Money::ZERO,
            delivered: face,
        });
    }
    if rule != CatalogueRule::OpenRange || face.0 <= 0 {
        return None;
    }
    let sent = Money(round_div(face.0 * 10_000, 10_000 + OPEN_RANGE_VAT_BPS));
    if sent < OPEN_RANGE_MIN || sent > OPEN_RANGE_MAX {
        return None;
    }
    let delivered = delivered_for_sent(sent);
    Some(ProductQuote {
        product_id: OPEN_RANGE_PRODUCT.to_string(),
        amount_sent: sent,
        vat: Money(delivered.0 - sent.0),
        delivered,
    })
}

impl TryFrom<String> for CatalogueRule {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        CatalogueRule::parse(&text).ok_or_else(|| format!("unknown catalogue rule {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn denominations_use_xoom_without_padding() {
        let q = quote(CatalogueRule::XoomOnly, Money::major(10)).unwrap();
        assert_eq!(q.product_id, "XOOM_10_MXN");
        assert_eq!(
            (q.amount_sent, q.vat, q.delivered),
            (Money::major(10), Money::ZERO, Money::major(10))
        );
        assert_eq!(
            quote(CatalogueRule::OpenRange, Money::major(500)).unwrap().product_id,
            "XOOM_500_MXN"
        );
    }

    #[test]
    fn xoom_only_refuses_other_amounts() {
        assert_eq!(quote(CatalogueRule::XoomOnly, Money::major(25)), None);
        assert_eq!(quote(CatalogueRule::XoomOnly, Money(1050)), None);
    }

    #[test]
    fn open_range_divides_by_vat() {
        let q = quote(CatalogueRule::OpenRange, Money::major(116)).unwrap();
        assert_eq!(q.product_id, OPEN_RANGE_PRODUCT);
        assert_eq!(q.amount_sent, Money::major(100));
        assert_eq!(q.vat, Money::major(16));
        assert_eq!(q.delivered, Money::major(116));
        // 23.20 / 1.16 = 20.00: the smallest open-range top-up.
        assert_eq!(
            quote(CatalogueRule::OpenRange, Money(2320)).unwrap().amount_sent,
            Money::major(20)
        );
        // 23.19 / 1.16 < 20: not available.
        assert_eq!(quote(CatalogueRule::OpenRange, Money(2319)), None);
        assert!(quote(CatalogueRule::OpenRange, Money::major(2321)).is_none());
    }

    proptest! {
        #[test]
        fn open_range_delivers_within_a_centavo(face in 2320i64..=232_000) {
            let q = quote(CatalogueRule::OpenRange, Money(face)).unwrap();
            prop_assert!((q.delivered.0 - face).abs() <= 1);
            prop_assert_eq!(q.amount_sent.0 + q.vat.0, q.delivered.0);
            prop_assert!(q.amount_sent >= OPEN_RANGE_MIN && q.amount_sent <= OPEN_RANGE_MAX);
        }
    }
}
