//! The OpenAPI 3.1 document of the HTTP API, generated from the code, and the
//! routes that serve it: `GET /openapi.json` (the document) and `GET /docs`
//! (Swagger UI, vendored into the binary: it loads nothing from outside).
//!
//! Where each part comes from:
//! - operations: the `#[utoipa::path]` attribute on each handler;
//! - request and response schemas: `ToSchema` derives on the types the
//!   handlers serialise (`crate::views`, the compatibility structs,
//!   `super::body::TopupBody`), and, for the answers that handlers build
//!   with `json!`, the mirror types in `super::shapes` (the HTTP
//!   tests check the live answers against them);
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
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, SchemaType, Type};
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
    "amount_not_exact",
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
    ("getStatement", &[AUTH, &["invalid_query"]]),
    // The compatibility routes answer errors in the old shape (`CompatError`),
    // declared on each operation; see `LEGACY_SHAPED`.
    ("compatTopup", &[]),
    ("compatTopupAsync", &[]),
    ("compatBalance", &[]),
    ("compatTransaction", &[]),
    ("health", &[]),
    ("queueStats", &[&["admin_required", "unavailable"]]),
    ("adminTopup", &[&["admin_required", "not_found", "unavailable"]]),
    ("adminReconciliations", &[&["admin_required", "unavailable"]]),
    (
        "adminReconciliation",
        &[&["admin_required", "not_found", "unavailable", "invalid_query"]],
    ),
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
        super::statements::statement,
        compat::topup_sync,
        compat::topup_async,
        compat::balance,
        compat::transaction,
        super::health,
        super::queue_stats,
        super::admin_topup,
        super::reconcile::admin_reconciliations,
        super::reconcile::admin_reconciliation,
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
                "Only on some codes: `amount_not_available` and `amount_not_exact` give the \
                 `requested` amount, the `nearest` amounts that can be bought and the `allowed` products; \
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
