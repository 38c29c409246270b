//! Money as integer minor units (centavos / cents).
//!
//! Amounts are `i64` counts of the currency's minor unit. Decimal text appears
//! only at the JSON edge: [`Money::parse_decimal`] reads `"20"`, `"20.5"` or
//! `"20.50"` exactly (no float ever touches it) and [`Money::to_decimal_string`]
//! writes `"20.50"`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in minor units. Signed, because ledger entries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub i64);

/// Largest amount we accept at the edge: 10 million major units. Far above any
/// top-up or credit, far below `i64` overflow when summed.
pub const MAX_ABS_MINOR: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is not a decimal number")]
    NotANumber,
    #[error("amount has more than 2 decimal places")]
    TooPrecise,
    #[error("amount is too large")]
    TooLarge,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    /// Whole major units (for example `Money::major(20)` is 20.00).
    pub const fn major(units: i64) -> Self {
        Money(units * 100)
    }

    /// Parses a plain decimal: optional `-`, digits, optional `.` and at most
    /// two digits. No exponent, no thousands separators, no leading `+`.
    pub fn parse_decimal(text: &str) -> Result<Self, MoneyError> {
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::NotANumber);
        }
        let frac = match frac_part {
            None => 0,
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(MoneyError::NotANumber);
            }
            Some(f) => {
                let significant = f.trim_end_matches('0');
                if significant.len() > 2 {
                    return Err(MoneyError::TooPrecise);
                }
                let padded = format!("{significant:0<2}");
                padded.parse::<i64>().map_err(|_| MoneyError::NotANumber)?
            }
        };
        let int_digits = int_part.trim_start_matches('0');
        if int_digits.len() > 12 {
            return Err(MoneyError::TooLarge);
        }
        let units: i64 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| MoneyError::NotANumber)?
        };
        let minor = units
            .checked_mul(100)
            .and_then(|v| v.checked_add(frac))
            .ok_or(MoneyError::TooLarge)?;
        if minor > MAX_ABS_MINOR {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money(if negative { -minor } else { minor }))
    }

    /// `"20.50"`, `"-3.07"`, `"0.00"`.
    pub fn to_decimal_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

/// The currency of a customer's balance account. Top-ups are always bought in
/// MXN; a USD account is charged through an operator-set FX rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    #[serde(rename = "MXN")]
    Mxn,
    #[serde(rename = "USD")]
    Usd,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Mxn => "MXN",
            Currency::Usd => "USD",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "MXN" => Some(Currency::Mxn),
            "USD" => Some(Currency::Usd),
            _ => None,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<i64> for Money {
    fn from(minor: i64) -> Self {
        Money(minor)
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Currency::parse(&text).ok_or_else(|| format!("unknown currency {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Money::parse_decimal("20"), Ok(Money(2000)));
        assert_eq!(Money::parse_decimal("20.5"), Ok(Money(2050)));
        assert_eq!(Money::parse_decimal("20.50"), Ok(Money(2050)));
        assert_eq!(Money::parse_decimal("20.500"), Ok(Money(2050)));
        assert_eq!(Money::parse_decimal("0.01"), Ok(Money(1)));
        assert_eq!(Money::parse_decimal("-3.07"), Ok(Money(-307)));
        assert_eq!(Money::parse_decimal("007.10"), Ok(Money(710)));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["", ".5", "5.", "1e3", "+5", "1,000", "abc", "1.2.3", " 5", "--1", "NaN"] {
            assert_eq!(Money::parse_decimal(bad), Err(MoneyError::NotANumber), "{bad:?}");
        }
        assert_eq!(Money::parse_decimal("1.001"), Err(MoneyError::TooPrecise));
        assert_eq!(Money::parse_decimal("99999999999999999999"), Err(MoneyError::TooLarge));
        assert_eq!(Money::parse_decimal("10000001"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn formats_with_two_decimals() {
        assert_eq!(Money(2050).to_decimal_string(), "20.50");
        assert_eq!(Money(-307).to_decimal_string(), "-3.07");
        assert_eq!(Money(0).to_decimal_string(), "0.00");
        assert_eq!(Money(5).to_decimal_string(), "0.05");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in -MAX_ABS_MINOR..=MAX_ABS_MINOR) {
            let m = Money(minor);
            prop_assert_eq!(Money::parse_decimal(&m.to_decimal_string()), Ok(m));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = Money::parse_decimal(&text);
        }
    }
}
