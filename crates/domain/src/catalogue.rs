//! Which Latcom product delivers a face value, as data per customer.
//!
//! Latcom sells fixed "XOOM" denominations (`XOOM_{n}_MXN`, `amount == n`, no
//! zero padding) and an open range `TFE_MXN_20_TO_2000` to which Latcom adds
//! 16 % VAT: to deliver face value F we send F / 1.16, which must itself lie in
//! 20–2000 MXN. A customer's [`CatalogueRule`] says which of these it may buy;
//! it is stored on the customer row, never an environment switch.
//!
//! **Exact amounts only.** Sent amounts are whole centavos and the phone
//! receives `round(sent × 1.16)`, so about one face value in seven inside the
//! open range (25.05, 25.12, …) cannot be delivered exactly: the nearest sent
//! amounts deliver a centavo less or a centavo more. Such a face value is
//! refused ([`quote`] answers `None`, [`unavailable`] says it is inexact and
//! names the nearest face values that can be delivered), never bought at a
//! centavo off: the customer is always charged for exactly what the phone
//! receives ([`INEXACT_AMOUNTS`], [`AMOUNT_RULE`]).

use crate::money::Money;
use serde::{Deserialize, Serialize};

/// XOOM denominations in whole pesos.
pub const XOOM_DENOMINATIONS: [i64; 14] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 500];
pub const OPEN_RANGE_PRODUCT: &str = "TFE_MXN_20_TO_2000";
pub const OPEN_RANGE_MIN: Money = Money::major(20);
pub const OPEN_RANGE_MAX: Money = Money::major(2000);
/// Latcom's VAT on the open range, in basis points (16 %).
pub const OPEN_RANGE_VAT_BPS: i64 = 1600;
/// What happens to a face value no product delivers exactly: `refused`.
pub const INEXACT_AMOUNTS: &str = "refused";
/// The rule of [`INEXACT_AMOUNTS`] in words, as the product list states it.
pub const AMOUNT_RULE: &str = "The phone receives exactly the face value charged. XOOM products deliver their \
    denomination; the open range sends whole centavos to which Latcom adds 16 % VAT, so a face value F is \
    deliverable only when F = round(sent × 1.16) for some sent amount of 20.00-2000.00 (about 1 centavo value \
    in 7 is not, e.g. 25.05). Any other amount is refused with `amount_not_exact` (nothing is charged), whose \
    details list the nearest deliverable amounts.";

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

/// Why no product delivers a face value exactly, and the nearest that can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The face value lies within the open range's span (the rule allows the
    /// open range) but no sent amount in whole centavos delivers exactly it.
    pub inexact: bool,
    /// The largest deliverable face value below the one asked for.
    pub below: Option<Money>,
    /// The smallest deliverable face value above the one asked for.
    pub above: Option<Money>,
}

/// What the phone receives on the open range for `sent` (whole centavos).
fn open_delivered(sent: i64) -> i64 {
    delivered_for_sent(Money(sent)).0
}

/// `None` when [`quote`] can buy `face` under `rule`; otherwise why not, and
/// the nearest face values below and above that `quote` can buy.
pub fn unavailable(rule: CatalogueRule, face: Money) -> Option<Unavailable> {
    if quote(rule, face).is_some() {
        return None;
    }
    let xoom = XOOM_DENOMINATIONS.iter().map(|&n| Money::major(n).0);
    let mut below = xoom.clone().filter(|&v| v < face.0).max();
    let mut above = xoom.filter(|&v| v > face.0).min();
    let mut inexact = false;
    if rule == CatalogueRule::OpenRange {
        let (lo, hi) = (OPEN_RANGE_MIN.0, OPEN_RANGE_MAX.0);
        inexact = (open_delivered(lo)..=open_delivered(hi)).contains(&face.0);
        // The sent amount nearest to face / 1.16; each centavo sent adds 1 or 2 delivered.
        let s = sent_for_face(face.0).clamp(lo, hi);
        let sent_range = |from: i64, to: i64| (from.max(lo)..=to.min(hi)).map(open_delivered);
        let open_below = sent_range(s - 2, s + 1).rev().find(|&d| d < face.0);
        let open_above = sent_range(s - 1, s + 2).find(|&d| d > face.0);
        below = below.max(open_below);
        above = match (above, open_above) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Some(Unavailable {
        inexact,
        below: below.map(Money),
        above: above.map(Money),
    })
}

/// `face / 1.16`, rounded to the nearest centavo.
fn sent_for_face(face: i64) -> i64 {
    round_div(face * 10_000, 10_000 + OPEN_RANGE_VAT_BPS)
}

/// Chooses the product for `face` under `rule`, or `None` when no product can
/// deliver exactly that amount (see [`unavailable`] for why, and what can).
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
    let sent = Money(sent_for_face(face.0));
    if sent < OPEN_RANGE_MIN || sent > OPEN_RANGE_MAX {
        return None;
    }
    let delivered = delivered_for_sent(sent);
    // The nearest sent amount delivers a centavo off: refuse rather than
    // charge for what the phone does not receive.
    if delivered != face {
        return None;
    }
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

    #[test]
    fn open_range_refuses_face_values_it_cannot_deliver_exactly() {
        // 25.05 / 1.16 = 21.5948…: 21.59 delivers 25.04, 21.60 delivers 25.06.
        assert_eq!(quote(CatalogueRule::OpenRange, Money(2505)), None);
        // 25.12 / 1.16 = 21.655…: 21.66 would deliver 25.13.
        assert_eq!(quote(CatalogueRule::OpenRange, Money(2512)), None);
        let q = quote(CatalogueRule::OpenRange, Money(2506)).unwrap();
        assert_eq!((q.amount_sent, q.delivered), (Money(2160), Money(2506)));
    }

    #[test]
    fn unavailable_names_the_nearest_deliverable_amounts() {
        let open = |face| unavailable(CatalogueRule::OpenRange, Money(face));
        assert_eq!(open(2506), None);
        assert_eq!(
            open(2505),
            Some(Unavailable {
                inexact: true,
                below: Some(Money(2504)),
                above: Some(Money(2506)),
            })
        );
        let over = open(2512).unwrap();
        assert!(over.inexact);
        assert_eq!((over.below, over.above), (Some(Money(2511)), Some(Money(2513))));
        // Below the open range: XOOM 20 below, 23.20 (20.00 sent) above; not "inexact".
        assert_eq!(
            open(2100),
            Some(Unavailable {
                inexact: false,
                below: Some(Money::major(20)),
                above: Some(Money(2320)),
            })
        );
        // Above it: the largest open-range amount, nothing above.
        assert_eq!(
            open(232_001),
            Some(Unavailable {
                inexact: false,
                below: Some(Money(232_000)),
                above: None,
            })
        );
        let xoom = unavailable(CatalogueRule::XoomOnly, Money::major(25)).unwrap();
        assert_eq!(
            (xoom.inexact, xoom.below, xoom.above),
            (false, Some(Money::major(20)), Some(Money::major(30)))
        );
        assert_eq!(
            unavailable(CatalogueRule::XoomOnly, Money::major(501)).unwrap().above,
            None
        );
    }

    proptest! {
        #[test]
        fn nearest_amounts_are_deliverable_and_nothing_lies_between(
            face in 1i64..=240_000,
            xoom_only in any::<bool>(),
        ) {
            let rule = if xoom_only { CatalogueRule::XoomOnly } else { CatalogueRule::OpenRange };
            if let Some(why) = unavailable(rule, Money(face)) {
                if let Some(below) = why.below {
                    prop_assert!(below.0 < face && quote(rule, below).is_some());
                    prop_assert!(((below.0 + 1).max(face - 2000)..face).all(|f| quote(rule, Money(f)).is_none()));
                }
                if let Some(above) = why.above {
                    prop_assert!(above.0 > face && quote(rule, above).is_some());
                    prop_assert!(((face + 1)..above.0.min(face + 2000)).all(|f| quote(rule, Money(f)).is_none()));
                }
                prop_assert!(why.below.is_some() || why.above.is_some());
            }
        }
    }

    proptest! {
        #[test]
        fn open_range_delivers_exactly_what_is_asked_or_nothing(face in 2320i64..=232_000) {
            match quote(CatalogueRule::OpenRange, Money(face)) {
                Some(q) => {
                    prop_assert_eq!(q.delivered.0, face);
                    prop_assert_eq!(q.amount_sent.0 + q.vat.0, q.delivered.0);
                    prop_assert!(q.amount_sent >= OPEN_RANGE_MIN && q.amount_sent <= OPEN_RANGE_MAX);
                }
                // No amount in whole centavos delivers it.
                None => {
                    let sent = face * 10_000 / 11_600;
                    for s in [sent - 1, sent, sent + 1, sent + 2] {
                        prop_assert_ne!(delivered_for_sent(Money(s)).0, face);
                    }
                }
            }
        }
    }
}
