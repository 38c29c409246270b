//! The OpenAPI 3.1 document of the HTTP API, generated from the code, and the
//! routes that serve it: `GET /openapi.json` (the document) and `GET /docs`
//! (Swagger UI, vendored into the binary: it loads nothing from outside).
//!
//! Where each part comes from:
//! - operations: the `#[utoipa::path]` attribute on each handler;
//! - request and response schemas: `ToSchema` derives on the types the
//!   handlers serialise ([`super::views`], the compatibility structs,
//!   [`crate::topups::TopupBody`]), and, for the answers that handlers build
//!   with `json!`, the mirror types in [`shapes`] (the HTTP tests check the
//!   live answers against them);
//! - errors: built here from [`CATALOGUE`] when the document is built: the
//!   `ErrorCode` enum and its table of statuses and meanings, and on every
//!   operation one response per status it can answer with, listing its codes
//!   ([`OPERATION_ERRORS`] says which codes each operation can return). A code
//!   added to or removed from the catalogue changes the document by itself;
//! - security schemes, the `x-request-id` header, the top-up status enum.

use super::error::CATALOGUE;
use super::{compat, v1};
use axum::routing::get;
use axum::{Json, Router};
use recarga_domain::TopupStatus;
use std::sync::LazyLock;
use utoipa::OpenApi as _;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiVersion, RefOr};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const DOC_PATH: &str = "/openapi.json";
/// Where Swagger UI is served (`/docs` redirects to `/docs/`).
pub const UI_PATH: &str = "/docs";

/// Security scheme names, as used in the handlers' `security(...)`.
pub const BEARER: &str = "bearer";
pub const API_KEY: &str = "apiKey";
pub const CUSTOMER_ID: &str = "customerId";
pub const ADMIN_KEY: &str = "adminKey";

/// Codes any operation can answer with.
const ALWAYS: &[&str] = &["internal_error"];
/// Codes of the `Caller` extractor (API key, customer, its store lookups).
const AUTH: &[&str] = &[
    "missing_api_key",
    "invalid_api_key",
    "customer_inactive",
    "rate_limited",
    "unavailable",
];
/// Codes of the `JsonBody` extractor and of `TopupBody::validate`.
const BODY: &[&str] = &[
    "unsupported_media_type",
    "payload_too_large",
    "invalid_json",
    "missing_field",
    "unknown_field",
    "invalid_field",
    "invalid_phone",
    "invalid_amount",
    "invalid_reference",
];
/// Codes of `topups::submit`.
const SUBMIT: &[&str] = &[
    "amount_below_minimum",
    "amount_above_maximum",
    "amount_not_available",
    "insufficient_funds",
    "daily_limit_exceeded",
    "reference_reused",
    "request_in_flight",
];

/// The error codes each operation (by `operationId`) can answer with, besides
/// [`ALWAYS`]. Every operation of the document must have an entry, and every
/// code must be in [`CATALOGUE`] (both checked by `tests/openapi.rs`).
pub const OPERATION_ERRORS: &[(&str, &[&[&str]])] = &[
    ("createTopup", &[AUTH, BODY, SUBMIT, &["invalid_idempotency_key"]]),
    ("listTopups", &[AUTH, &["invalid_query"]]),
    ("getTopup", &[AUTH, &["not_found"]]),
    ("getBalance", &[AUTH]),
    ("listProducts", &[AUTH]),
    // The compatibility routes answer errors in the old shape (`CompatError`),
    // declared on each operation; see `LEGACY_SHAPED`.
    ("compatTopup", &[]),
    ("compatTopupAsync", &[]),
    ("compatBalance", &[]),
    ("compatTransaction", &[]),
    ("health", &[]),
    ("queueStats", &[&["admin_required", "unavailable"]]),
    ("adminTopup", &[&["admin_required", "not_found", "unavailable"]]),
    ("metrics", &[]),
    ("openapi", &[]),
];

/// Operations whose errors have the old system's shape (`CompatError`),
/// declared on each of them rather than generated from the catalogue.
pub const LEGACY_SHAPED: &[&str] = &["compatTopup", "compatTopupAsync", "compatBalance", "compatTransaction"];

/// The error codes an operation can answer with, [`ALWAYS`] included, in
/// catalogue order; `None` for an operation without an entry.
pub fn operation_error_codes(operation_id: &str) -> Option<Vec<&'static str>> {
    let (_, groups) = OPERATION_ERRORS.iter().find(|(id, _)| *id == operation_id)?;
    if LEGACY_SHAPED.contains(&operation_id) {
        return Some(Vec::new());
    }
    let listed: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.iter().copied())
        .chain(ALWAYS.iter().copied())
        .collect();
    Some(
        CATALOGUE
            .iter()
            .map(|(code, _, _)| *code)
            .filter(|code| listed.contains(code))
            .collect(),
    )
}

const INTRO: &str = "\
B2B mobile top-ups (Mexico, MXN face values).

- **`/v1`** is the canonical API: amounts are decimal strings next to their currency, \
top-ups are idempotent by `reference`, and `Prefer: wait=N` waits up to N seconds (at most 30) \
for a final state. 202 means accepted with the outcome still open, never a failure.
- **`/api/...`** are the compatibility routes: the routes, JSON keys, JSON types, status codes, \
error bodies (`CompatError`) and rate-limit headers of the system Recarga replaces, so existing \
integrations switch without code changes. Its `_usd` keys carry amounts in the account's currency.

Authenticate with `Authorization: Bearer <key>`, or `x-api-key: <key>` (optionally with \
`x-customer-id`, which must then be the key's customer). Operator routes take `x-admin-key`.

Every error answers with the same body (`Error`): a stable machine-matchable `code` (see \
`ErrorCode` for the catalogue), a `message`, and the `request_id` that is also in the \
`x-request-id` header of every response.";

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        v1::create_topup,
        v1::list_topups,
        v1::get_topup,
        v1::balance,
        v1::products,
        compat::topup_sync,
        compat::topup_async,
        compat::balance,
        compat::transaction,
        super::health,
        super::queue_stats,
        super::admin_topup,
        super::metrics_text,
        openapi_json,
    ),
    tags(
        (name = "v1", description = "The canonical JSON API."),
        (name = "compat", description = "The old system's routes and shapes, for existing integrations."),
        (name = "operations", description = "Health, queue and metrics for operators and load balancers; this document."),
    )
)]
struct ApiDoc;

/// Builds the whole document: the derived operations and schemas, plus the
/// parts generated here (errors from the catalogue, security, headers).
pub fn document() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.openapi = OpenApiVersion::Version31;
    doc.info = InfoBuilder::new()
        .title("Recarga")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(INTRO))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    for (code, _, meaning) in CATALOGUE {
        let value = serde_json::json!({
            "code": code,
            "message": meaning,
            "request_id": "0192f5a0-c3d4-7e8a-9b1c-2d3e4f506172",
        });
        let example = ExampleBuilder::new().summary(*meaning).value(Some(value)).build();
        components.examples.insert((*code).into(), example.into());
    }
    components
        .schemas
        .insert("TopupStatus".into(), topup_status_schema().into());
    components
        .schemas
        .insert("ErrorCode".into(), error_code_schema().into());
    components.schemas.insert("Error".into(), error_schema().into());
    components.headers.insert(
        REQUEST_ID_HEADER.into(),
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(
                "The request's id: the client's own `x-request-id` when it sent one, else a UUID. \
                 Error bodies repeat it as `request_id`.",
            ))
            .build()
            .into(),
    );
    let schemes = [
        (
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <API key>`."))
                    .build(),
            ),
        ),
        (
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The API key, as the old system took it.",
            ))),
        ),
        (
            CUSTOMER_ID,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-customer-id",
                "Optional, with `x-api-key`: the customer the key must belong to (`invalid_api_key` otherwise).",
            ))),
        ),
        (
            ADMIN_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-admin-key",
                "The operator key (`RECARGA_ADMIN_KEY`), for operator scripts.",
            ))),
        ),
    ];
    for (name, scheme) in schemes {
        components.security_schemes.insert(name.into(), scheme.into());
    }
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            add_error_responses(op);
            add_request_id_header(op);
            drop_null_from_parameters(op);
        }
    }
    doc
}

const REQUEST_ID_HEADER: &str = "x-request-id";

/// One response per error status the operation can answer with.
fn add_error_responses(op: &mut Operation) {
    let codes = op
        .operation_id
        .as_deref()
        .and_then(operation_error_codes)
        .unwrap_or_default();
    let mut statuses: Vec<u16> = CATALOGUE
        .iter()
        .filter(|(code, _, _)| codes.contains(code))
        .map(|(_, status, _)| *status)
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let entries: Vec<&(&str, u16, &str)> = CATALOGUE
            .iter()
            .filter(|(code, s, _)| *s == status && codes.contains(code))
            .collect();
        let description = entries
            .iter()
            .map(|(code, _, meaning)| format!("- `{code}`: {meaning}"))
            .collect::<Vec<_>>()
            .join("\n");
        let schema = AllOfBuilder::new().item(Ref::from_schema_name("Error")).item(
            ObjectBuilder::new().property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(entries.iter().map(|(code, _, _)| *code))),
            ),
        );
        let examples = entries
            .iter()
            .map(|(code, _, _)| (*code, RefOr::Ref(Ref::new(format!("#/components/examples/{code}")))));
        let content = ContentBuilder::new()
            .schema(Some(schema))
            .examples_from_iter(examples)
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build();
        let previous = op.responses.responses.insert(status.to_string(), response.into());
        debug_assert!(previous.is_none(), "{status} is both a declared and an error response");
    }
}

fn add_request_id_header(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                REQUEST_ID_HEADER.into(),
                RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID_HEADER}"))),
            );
        }
    }
}

/// An optional header or query parameter is absent, never JSON `null`:
/// `Option<T>` in a `params(...)` tuple means "not required" only.
fn drop_null_from_parameters(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        if let RefOr::T(param) = param
            && let Some(RefOr::T(Schema::Object(schema))) = &mut param.schema
            && let SchemaType::Array(types) = &mut schema.schema_type
        {
            types.retain(|t| *t != Type::Null);
            if let [only] = types.as_slice() {
                schema.schema_type = SchemaType::Type(only.clone());
            }
        }
    }
}

/// `ErrorCode`: every catalogued code, with a table of statuses and meanings.
fn error_code_schema() -> Schema {
    let mut table = String::from(
        "Every error code the API can return. Codes are stable; match on them, not on `message`.\n\n\
         | code | HTTP status | meaning |\n|---|---|---|\n",
    );
    for (code, status, meaning) in CATALOGUE {
        table.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
    }
    let catalogue: Vec<serde_json::Value> = CATALOGUE
        .iter()
        .map(|(code, status, meaning)| serde_json::json!({ "code": code, "status": status, "meaning": meaning }))
        .collect();
    let mut extensions = utoipa::openapi::extensions::Extensions::default();
    extensions.insert("x-catalogue".into(), serde_json::Value::Array(catalogue));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(CATALOGUE.iter().map(|(code, _, _)| *code)))
        .description(Some(table))
        .extensions(Some(extensions))
        .build()
        .into()
}

/// `Error`: the one error body.
fn error_schema() -> Schema {
    ObjectBuilder::new()
        .description(Some("The body of every error response."))
        .property("code", Ref::from_schema_name("ErrorCode"))
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("For people; may change. Never holds internal causes.")),
        )
        .required("message")
        .property(
            "request_id",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some("Same as the `x-request-id` response header.")),
        )
        .required("request_id")
        .property(
            "details",
            ObjectBuilder::new().description(Some(
                "Only on some codes: `amount_not_available` lists the allowed amounts; \
                 `reference_reused` and `request_in_flight` give the existing `transaction_id`.",
            )),
        )
        .build()
        .into()
}

fn status_meaning(status: TopupStatus) -> &'static str {
    match status {
        TopupStatus::Pending => "accepted, not yet sent to the carrier (or waiting for a retry)",
        TopupStatus::Processing => "sent to the carrier, answer pending",
        TopupStatus::Success => "final: the phone received the top-up",
        TopupStatus::Failed => "final: not delivered; the hold was released",
        TopupStatus::Unknown => "the carrier's outcome is not known yet; it is checked until it is",
    }
}

fn topup_status_schema() -> Schema {
    let mut description = String::from("The state of a top-up. Only SUCCESS and FAILED are final.\n\n");
    for status in TopupStatus::ALL {
        description.push_str(&format!("- `{}`: {}\n", status.as_str(), status_meaning(status)));
    }
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(TopupStatus::ALL.iter().map(|s| s.as_str())))
        .description(Some(description))
        .build()
        .into()
}

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
        .max_length(Some(crate::topups::REFERENCE_MAX_CHARS))
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

/// Schemas of the answers that handlers build with `json!`. Never built:
/// they only describe; the HTTP tests check the live answers against them.
#[allow(dead_code)]
pub mod shapes {
    use super::super::views::TopupView;
    use utoipa::ToSchema;

    /// A top-up request on the compatibility routes, as the old system took
    /// it: unknown fields (such as `provider`) are accepted and ignored.
    #[derive(ToSchema)]
    pub struct CompatTopupRequest {
        /// 10-15 digits (a leading `52` or `521` is the country prefix), or `+52 …`.
        #[schema(schema_with = super::phone_echo)]
        pub phone: String,
        /// MXN face value: a number or a numeric string, at most 2 decimals.
        #[schema(schema_with = super::amount_input)]
        pub amount: String,
        /// Free text (optional; any other JSON value is kept as its text).
        /// Under the customer's `unique` policy a repeat returns the same
        /// transaction (a FAILED one starts anew); under `free` every request
        /// is a new top-up.
        #[schema(value_type = Value)]
        pub reference: Option<serde_json::Value>,
        /// Accepted and ignored (the old system's provider choice), like any other field.
        #[schema(value_type = Value)]
        pub provider: Option<serde_json::Value>,
    }

    /// One entry of `details` on `Validation failed` (express-validator's shape).
    #[derive(ToSchema)]
    pub struct CompatFieldError {
        #[schema(example = "field")]
        pub r#type: String,
        /// The value as sent; absent when the field was missing.
        #[schema(value_type = Value, required = false)]
        pub value: Option<serde_json::Value>,
        pub msg: String,
        #[schema(example = "amount")]
        pub path: String,
        #[schema(example = "body")]
        pub location: String,
    }

    /// Every error of the compatibility routes: the old `error` text and its
    /// keys, plus our `code` and `request_id`. Which keys come with which
    /// `error`:
    /// - `Validation failed` (400): `details`;
    /// - `Invalid API credentials` / `Invalid credentials` (401);
    /// - `IP address not authorized` (403): `your_ip`;
    /// - `Insufficient balance` (403): `current_balance_usd`, `requested_mxn`,
    ///   `required_usd`, `exchange_rate`, `current_balance`, `requested`;
    /// - `Invalid product amount` (400): `message`, `allowed_amounts`, `requested_amount`;
    /// - `Daily transaction limit exceeded` (429): `daily_limit_mxn`,
    ///   `used_today_mxn`, `requested_mxn`, `available_mxn`;
    /// - `Too many topup requests. …` / `Too many requests, …` (429), with `Retry-After`;
    /// - `Provider (…) top-up failed: …` (500): `provider`, `response_time_ms`,
    ///   `transaction` (FAILED; nothing was charged);
    /// - `Transaction not found` (404).
    #[derive(ToSchema)]
    pub struct CompatError {
        /// Always false.
        pub success: bool,
        pub error: String,
        pub code: String,
        pub request_id: Option<String>,
        pub details: Option<Vec<CompatFieldError>>,
        /// On `Invalid JSON body`: what the parser said.
        pub reason: Option<String>,
        pub your_ip: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub current_balance_usd: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub required_usd: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub requested_mxn: Option<String>,
        #[schema(schema_with = super::rate_number)]
        pub exchange_rate: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub current_balance: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub requested: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub credit_limit: Option<String>,
        /// On `Invalid product amount`: which products the customer may buy.
        pub message: Option<String>,
        pub allowed_amounts: Option<Vec<f64>>,
        #[schema(schema_with = super::decimal_number)]
        pub requested_amount: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub daily_limit_mxn: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub used_today_mxn: Option<String>,
        #[schema(schema_with = super::decimal_number)]
        pub available_mxn: Option<String>,
        pub provider: Option<String>,
        pub response_time_ms: Option<i64>,
        /// On a definite failure: the FAILED transaction.
        pub transaction: Option<crate::http::compat::CompatTransaction>,
        pub check_status_url: Option<String>,
        /// On `reference_reused` / `request_in_flight`: the existing transaction.
        pub transaction_id: Option<String>,
    }

    /// `GET /v1/topups`: one page, newest first.
    #[derive(ToSchema)]
    pub struct TopupList {
        pub data: Vec<TopupView>,
        /// Pass as `cursor` for the next page; null on the last page.
        pub next_cursor: Option<String>,
    }

    /// A product the caller may buy: amounts between `min_amount` and
    /// `max_amount` (MXN face value).
    #[derive(ToSchema)]
    pub struct Product {
        #[schema(example = "XOOM_20_MXN")]
        pub product_id: String,
        #[schema(example = "10.00")]
        pub min_amount: String,
        #[schema(example = "500.00")]
        pub max_amount: String,
        #[schema(example = "MXN")]
        pub currency: String,
        /// VAT in basis points (1600 = 16 %).
        pub vat_bps: i64,
    }

    /// `GET /v1/products`.
    #[derive(ToSchema)]
    pub struct ProductList {
        pub data: Vec<Product>,
    }

    /// `OK`, or `DEGRADED` when the database, the upstream or Redis does not answer.
    #[derive(ToSchema)]
    pub enum HealthStatus {
        #[schema(rename = "OK")]
        Ok,
        #[schema(rename = "DEGRADED")]
        Degraded,
    }

    #[derive(ToSchema)]
    pub enum HealthMode {
        /// `RECARGA_ENV=production`.
        #[schema(rename = "PRODUCTION")]
        Production,
        /// Anything else (the sandbox, development).
        #[schema(rename = "TEST_MODE")]
        TestMode,
    }

    #[derive(ToSchema)]
    pub struct HealthDatabase {
        #[schema(example = "postgres")]
        pub engine: String,
        pub ok: bool,
    }

    #[derive(ToSchema)]
    pub struct HealthUpstream {
        #[schema(example = "sandbox")]
        pub provider: String,
        pub sandbox: bool,
        pub ok: bool,
        /// `ok`, `starting`, or a stable error code such as `upstream_ip_not_authorized`.
        pub state: String,
        pub detail: String,
    }

    /// The open part of the queue (`pending` is due now, `delayed` waits for a
    /// retry time). Totals of finished top-ups are for operators only
    /// (`/api/queue/stats`), not for this public route.
    #[derive(ToSchema)]
    pub struct QueueCounts {
        pub pending: i64,
        pub delayed: i64,
        pub processing: i64,
        pub unknown: i64,
        /// Age in ms of the oldest PENDING row.
        pub oldest_pending_ms: Option<i64>,
    }

    #[derive(ToSchema)]
    pub struct HealthRedis {
        pub configured: bool,
        pub up: bool,
    }

    /// `instance` (the old system's key).
    #[derive(ToSchema)]
    pub struct HealthInstance {
        /// `RAILWAY_REPLICA_ID`, else `HOSTNAME`, else `local`.
        pub id: String,
        /// Resident memory, e.g. `"48MB"`.
        pub memory: String,
        pub pid: i64,
    }

    #[derive(ToSchema)]
    pub struct HealthService {
        pub connected: bool,
        /// `healthy`, `disconnected` or `not configured`.
        pub status: String,
        /// The database engine (`database` only).
        pub engine: Option<String>,
        /// The open queue in the old system's names (`queue` only; null while the database is down).
        pub stats: Option<HealthQueueStats>,
    }

    #[derive(ToSchema)]
    pub struct HealthQueueStats {
        pub waiting: i64,
        pub active: i64,
        pub delayed: i64,
        pub unknown: i64,
        pub total: i64,
    }

    #[derive(ToSchema)]
    pub struct HealthRateLimiting {
        /// `redis` when Redis is up, else `memory`.
        pub backend: String,
        #[schema(rename = "apiLimit")]
        pub api_limit: String,
        #[schema(rename = "topupLimit")]
        pub topup_limit: String,
    }

    /// `services` (the old system's key).
    #[derive(ToSchema)]
    pub struct HealthServices {
        pub database: HealthService,
        pub redis: HealthService,
        pub queue: HealthService,
        #[schema(rename = "rateLimiting")]
        pub rate_limiting: HealthRateLimiting,
    }

    /// `GET /health`: the old system's keys, then ours.
    #[derive(ToSchema)]
    pub struct Health {
        pub status: HealthStatus,
        #[schema(format = DateTime)]
        pub timestamp: String,
        /// Seconds since this process started.
        pub uptime: f64,
        pub mode: HealthMode,
        pub instance: HealthInstance,
        pub services: HealthServices,
        pub database: HealthDatabase,
        pub upstream: HealthUpstream,
        /// Null when the database is down.
        pub queue: Option<QueueCounts>,
        pub redis: HealthRedis,
        #[schema(example = "0.1.0")]
        pub version: String,
    }

    /// Counts in the old system's names.
    #[derive(ToSchema)]
    pub struct QueueStatsCounts {
        /// PENDING and due.
        pub waiting: i64,
        /// PROCESSING.
        pub active: i64,
        /// SUCCESS.
        pub completed: i64,
        /// FAILED.
        pub failed: i64,
        /// PENDING, waiting for a retry time.
        pub delayed: i64,
        /// UNKNOWN.
        pub unknown: i64,
        pub total: i64,
        /// Age in seconds of the oldest PENDING row.
        pub oldest_pending_age_s: Option<i64>,
    }

    /// One state change of a top-up.
    #[derive(ToSchema)]
    pub struct AdminEvent {
        pub from: Option<String>,
        pub to: String,
        /// `api`, `worker`, `rescuer`, `status-query`, or the operator.
        pub actor: String,
        pub reason: Option<String>,
        pub at: String,
    }

    /// One request/response with the upstream, as stored for disputes.
    #[derive(ToSchema)]
    pub struct AdminExchange {
        /// `topup` or `status`.
        pub kind: String,
        pub provider: String,
        /// `success`, `failed`, `unknown`, `not_sent`, `blocked`.
        pub outcome: String,
        pub detail: Option<String>,
        pub http_status: Option<i64>,
        /// The request as sent, without the bearer token.
        pub request: Option<String>,
        pub response: Option<String>,
        pub upstream_transaction_id: Option<String>,
        pub carrier_transaction_id: Option<String>,
        pub started_at: String,
        pub ended_at: String,
        pub latency_ms: i64,
    }

    /// `GET /api/admin/topups/{id}`.
    #[derive(ToSchema)]
    pub struct AdminTopup {
        pub customer_id: String,
        pub topup: crate::http::views::TopupView,
        pub events: Vec<AdminEvent>,
        pub exchanges: Vec<AdminExchange>,
    }

    /// `GET /api/queue/stats`.
    #[derive(ToSchema)]
    pub struct QueueStats {
        pub success: bool,
        pub queue: QueueStatsCounts,
        /// Whether Redis answers (false when none is configured).
        pub redis: bool,
    }
}

static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(document);

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object)),
)]
async fn openapi_json() -> Json<&'static OpenApi> {
    Json(&DOCUMENT)
}

/// `GET /openapi.json` and Swagger UI at `/docs`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // validator "none": Swagger UI would otherwise send the document to an
    // outside validator for its badge.
    let config = Config::from(DOC_PATH).validator_url("none");
    Router::new()
        .route(DOC_PATH, get(openapi_json))
        .merge(SwaggerUi::new(UI_PATH).config(config))
}
