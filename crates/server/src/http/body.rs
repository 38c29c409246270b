//! The top-up request body of `/v1` and its exact parsing: amounts are read
//! from the JSON text, never through a float; the phone is parsed into an
//! `Msisdn`; the reference is printable ASCII. The `Idempotency-Key` header
//! every top-up route accepts is read here too.

use super::error::ApiError;
use recarga_domain::{Money, Msisdn};
use recarga_service::accept::TopupInput;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The request body of every top-up route: `{"phone","amount","reference"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupBody {
    #[schema(schema_with = super::schema::phone_input)]
    phone: Box<RawValue>,
    #[schema(schema_with = super::schema::amount_input)]
    amount: Box<RawValue>,
    #[schema(schema_with = super::schema::reference_input)]
    reference: Box<RawValue>,
}

pub use recarga_service::accept::REFERENCE_MAX_CHARS;
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
