//! Pieces of the OpenAPI document that the shapes of the API refer to: the
//! `schema_with` functions of fields whose schema is not their Rust type
//! (exact JSON numbers, the inputs that take a number or a string, the
//! states old clients know). The mirror types of answers built with `json!`
//! are in `shapes.rs`; the document itself is assembled in `openapi.rs`.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Schema, Type};

/// `schema_with` for a top-up status field: a reference to `TopupStatus`.
pub fn topup_status() -> Ref {
    Ref::from_schema_name("TopupStatus")
}

/// `schema_with` for the phone a compatibility answer echoes as sent.
pub fn phone_echo() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .description(Some("The phone as the request sent it (a string, or a number)."))
        .into()
}

/// `schema_with` for the state an old client understands.
pub fn legacy_status() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["PENDING", "SUCCESS", "FAILED"]))
        .description(Some(
            "PENDING, SUCCESS or FAILED: the old system's states. PROCESSING and UNKNOWN show as \
             PENDING (still open; never buy again); `state` has ours.",
        ))
        .into()
}

/// `schema_with` for the compatibility `exchange_rate`: an exact JSON number.
pub fn rate_number() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some(
            "Account currency per MXN with 6 decimals (USD per MXN, as the old system sent it; 1 for MXN accounts).",
        ))
        .examples([serde_json::json!(0.057143)])
        .build()
        .into()
}

/// `schema_with` for the compatibility amounts: exact JSON numbers.
pub fn decimal_number() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some(
            "A JSON number in major units with at most 2 decimals, written exactly from integer centavos.",
        ))
        .examples([serde_json::json!(20.5)])
        .build()
        .into()
}

/// `schema_with` for `TopupBody.phone`.
pub fn phone_input() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A 10-digit Mexican number, optionally with `+52` or `52`; spaces, dashes, dots and \
             parentheses are ignored.",
        ))
        .examples([serde_json::json!("5512345678"), serde_json::json!("+52 55 1234 5678")])
        .build()
        .into()
}

/// `schema_with` for `TopupBody.amount`: a number or a decimal string.
pub fn amount_input() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^\s*[0-9]+(\.[0-9]+)?\s*$")),
        )
        .description(Some(
            "The face value in MXN: a JSON number or a decimal string, positive, at most 2 decimal \
             places. It is read from the JSON text, never through a float.",
        ))
        .examples([serde_json::json!("20.00"), serde_json::json!(50)])
        .build()
        .into()
}

/// `schema_with` for `TopupBody.reference`.
pub fn reference_input() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(recarga_service::accept::REFERENCE_MAX_CHARS))
        .pattern(Some("^[!-~]([ -~]*[!-~])?$"))
        .description(Some(
            "The client's idempotency key: printable ASCII, no surrounding spaces. The same reference \
             with the same phone and amount replays the original top-up; with a different one it is \
             `reference_reused`.",
        ))
        .examples([serde_json::json!("order-1234")])
        .build()
        .into()
}
