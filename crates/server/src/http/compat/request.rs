//! A top-up request as the old system took it: a JSON object (anything else
//! is an empty one), the old phone forms, amounts as numbers or numeric
//! strings, an optional free-text reference, other fields ignored.

use super::errors::{field_error, validation_failed};
use super::reply::{key, text_value};
use crate::http::error::ApiError;
use crate::http::extract::header;
use axum::http::StatusCode;
use axum::http::request::Parts;
use recarga_domain::{Money, Msisdn};
use serde_json::Value;

/// A top-up request as the old system took it.
pub(super) struct LegacyRequest {
    /// The phone as sent (echoed back as sent).
    pub phone_as_sent: Value,
    pub phone: Msisdn,
    pub amount: Money,
    /// The amount as sent, for `requested_amount`.
    pub amount_as_sent: Value,
    pub reference: Option<String>,
}

/// The old body rules: a JSON object (anything else is an empty one, as
/// `express.json()` left it), `phone` 10–15 digits (or our forms: `+52`,
/// separators), `amount` a number or numeric string, `reference` optional
/// free text, other fields ignored.
pub(super) fn parse_request(parts: &Parts, body: &[u8]) -> Result<LegacyRequest, ApiError> {
    let json_type = header(parts, "content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        });
    let value: Value = if json_type && !body.is_empty() {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new("invalid_json", "the body is not valid JSON").legacy(
                StatusCode::BAD_REQUEST,
                "Invalid JSON body",
                vec![key("reason", text_value(&e.to_string()))],
            )
        })?
    } else {
        Value::Object(Default::default())
    };
    let empty = serde_json::Map::new();
    let obj = value.as_object().unwrap_or(&empty);
    for field in obj.keys() {
        if !matches!(field.as_str(), "phone" | "amount" | "reference") {
            tracing::debug!(field, "compatibility request: unknown field ignored");
        }
    }
    let mut details = Vec::new();
    let phone_value = obj.get("phone").filter(|v| !v.is_null());
    let phone = match phone_value {
        None => {
            details.push(field_error("phone", None, "Phone number is required"));
            details.push(field_error("phone", None, "Phone number must be 10-15 digits"));
            None
        }
        Some(v) => {
            let text = match v {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            match legacy_phone(&text) {
                Some(m) => Some(m),
                None => {
                    let digits_only = (10..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
                    let msg = if text.is_empty() {
                        "Phone number is required"
                    } else if digits_only {
                        "Phone number is not a Mexican mobile number"
                    } else {
                        "Phone number must be 10-15 digits"
                    };
                    details.push(field_error("phone", Some(v), msg));
                    None
                }
            }
        }
    };
    let amount_value = obj.get("amount").filter(|v| !v.is_null());
    let amount = match amount_value {
        None => {
            details.push(field_error("amount", None, "Amount is required"));
            None
        }
        Some(v) => match legacy_amount(v) {
            Ok(m) => Some(m),
            Err(msg) => {
                details.push(field_error("amount", Some(v), msg));
                None
            }
        },
    };
    let reference = match obj.get("reference") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        // The old system stored whatever JSON came as its text.
        Some(other) => Some(other.to_string()),
    };
    if let Some(r) = &reference
        && (r.chars().count() > recarga_service::accept::REFERENCE_MAX_CHARS || r.chars().any(char::is_control))
    {
        details.push(field_error(
            "reference",
            obj.get("reference"),
            "Reference must be at most 100 characters without control characters",
        ));
    }
    match (phone, amount, details.is_empty()) {
        (Some(phone), Some(amount), true) => Ok(LegacyRequest {
            phone_as_sent: phone_value.cloned().unwrap_or(Value::Null),
            phone,
            amount,
            amount_as_sent: amount_value.cloned().unwrap_or(Value::Null),
            reference,
        }),
        _ => Err(validation_failed(details)),
    }
}

/// The old phone forms: 10 digits, `52` + 10, the old mobile `521` + 10, and
/// ours (`+52`, separators).
pub(super) fn legacy_phone(text: &str) -> Option<Msisdn> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if digits_only && text.len() == 13 && text.starts_with("521") {
        return Msisdn::parse(&text[3..]).ok();
    }
    Msisdn::parse(text).ok()
}

/// `isFloat` as the old validator read it: a number, or a numeric string
/// (exponents allowed), positive, with at most 2 decimal places.
pub(super) fn legacy_amount(v: &Value) -> Result<Money, &'static str> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err("Amount must be a number"),
    };
    let decimal = if text.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(&text)
    } else {
        text.parse::<rust_decimal::Decimal>()
    }
    .map_err(|_| "Amount must be a number")?;
    let decimal = decimal.normalize();
    if decimal.scale() > 2 {
        return Err("Amount must have at most 2 decimal places");
    }
    if decimal <= rust_decimal::Decimal::ZERO {
        return Err("Amount must be positive");
    }
    Money::parse_decimal(&decimal.to_string()).map_err(|_| "Amount is too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_amount_forms_parse() {
        assert_eq!(legacy_amount(&serde_json::json!(20)), Ok(Money(2000)));
        assert_eq!(legacy_amount(&serde_json::json!("20.5")), Ok(Money(2050)));
        assert_eq!(legacy_amount(&serde_json::json!("1e2")), Ok(Money(10_000)));
        assert_eq!(legacy_amount(&serde_json::json!(20.10)), Ok(Money(2010)));
        assert!(legacy_amount(&serde_json::json!("20.001")).is_err());
        assert!(legacy_amount(&serde_json::json!("abc")).is_err());
        assert!(legacy_amount(&serde_json::json!(-5)).is_err());
        assert!(legacy_amount(&serde_json::json!(true)).is_err());
    }

    #[test]
    fn old_phone_forms_parse() {
        for ok in ["5512345678", "525512345678", "5215512345678", "+52 55 1234 5678"] {
            assert_eq!(
                legacy_phone(ok).map(|m| m.as_str().to_string()).as_deref(),
                Some("5512345678"),
                "{ok}"
            );
        }
        for bad in ["123", "1512345678", "15512345678901"] {
            assert!(legacy_phone(bad).is_none(), "{bad}");
        }
    }
}
