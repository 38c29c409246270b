//! Mexican mobile numbers.
//!
//! An [`Msisdn`] is always the 10-digit national number that Latcom expects in
//! `targetMSISDN`. Input may carry a `+52` or `52` country prefix and common
//! separators (spaces, dashes, dots, parentheses); anything else is rejected.
//! Logs only ever see [`Msisdn::masked`].

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Msisdn(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsisdnError {
    #[error("phone must be a 10-digit Mexican number, optionally prefixed by +52 or 52")]
    Invalid,
}

impl Msisdn {
    pub fn parse(input: &str) -> Result<Self, MsisdnError> {
        let trimmed = input.trim();
        let (had_plus, rest) = match trimmed.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, trimmed),
        };
        if rest.len() > 24 {
            return Err(MsisdnError::Invalid);
        }
        let mut digits = String::with_capacity(12);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(MsisdnError::Invalid),
            }
        }
        let national = match digits.len() {
            10 if !had_plus => digits,
            12 if digits.starts_with("52") => digits[2..].to_string(),
            _ => return Err(MsisdnError::Invalid),
        };
        // Mexican national numbers never start with 0 or 1.
        if national.starts_with('0') || national.starts_with('1') {
            return Err(MsisdnError::Invalid);
        }
        Ok(Msisdn(national))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last three digits, which the sandbox reads as its script.
    pub fn last3(&self) -> &str {
        &self.0[self.0.len().saturating_sub(3)..]
    }

    /// `55******78`: enough to recognise in a log, not enough to dial.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// Masks any phone-like string for logs: first two and last two characters kept.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let mut out = String::with_capacity(chars.len());
    for (i, c) in chars.iter().enumerate() {
        if i < 2 || i >= chars.len() - 2 {
            out.push(*c);
        } else {
            out.push('*');
        }
    }
    out
}

/// Reading a stored phone validates it again: a row can only hold what
/// [`Msisdn::parse`] accepts.
impl TryFrom<String> for Msisdn {
    type Error = MsisdnError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Msisdn::parse(&text)
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_prefixes() {
        for ok in [
            "5512345678",
            "+525512345678",
            "525512345678",
            "+52 55 1234 5678",
            "(55) 1234-5678",
        ] {
            assert_eq!(Msisdn::parse(ok).map(|m| m.0), Ok("5512345678".to_string()), "{ok}");
        }
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "",
            "551234567",
            "55123456789",
            "+5512345678",
            "015512345678",
            "0512345678",
            "1512345678",
            "abc5512345678",
            "+1 5512345678",
            "55123456a8",
            "5512345678\n1",
        ] {
            assert!(Msisdn::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn masks_for_logs() {
        let m = Msisdn::parse("5512345678").unwrap();
        assert_eq!(m.masked(), "55******78");
        assert_eq!(format!("{m}"), "55******78");
        assert_eq!(m.last3(), "678");
    }

    proptest! {
        #[test]
        fn any_valid_number_round_trips(n in 2_000_000_000u64..=9_999_999_999u64) {
            let s = n.to_string();
            prop_assert_eq!(Msisdn::parse(&s).unwrap().0, s.clone());
            let with_cc = format!("+52{s}");
            prop_assert_eq!(Msisdn::parse(&with_cc).unwrap().0, s);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = Msisdn::parse(&text);
        }
    }
}
