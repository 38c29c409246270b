//! The OpenAPI document: a snapshot of all of it; its coverage of the router
//! (every route in the source is documented, and nothing else is) and of the
//! error catalogue; and, over HTTP, `/openapi.json` serving the same document,
//! every documented operation answering as documented, and `/docs` loading
//! Swagger UI from the binary alone.

use crate::common::{TestApp, body, engines};
use recarga_server::http::error::CATALOGUE;
use recarga_server::http::openapi::{self, LEGACY_SHAPED, OPERATION_ERRORS, operation_error_codes};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn document() -> Value {
    serde_json::to_value(openapi::document()).expect("the document serialises")
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// `(method, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn snapshot() {
    insta::assert_json_snapshot!("openapi", document());
}

#[test]
fn is_openapi_3_1() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
}

// ---------------------------------------------------------------------------
// Router coverage, read from the source: every `.route("path", get(..).post(..))`
// under src/ is an operation of the document, and the other way round.

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of the call whose `(` is at `open`, without the parentheses.
fn call_args(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced call at byte {open}");
}

/// A string literal, or a `const NAME: &str = "..."` of the same file.
fn route_path(file: &str, arg: &str) -> String {
    let arg = arg.trim();
    if let Some(lit) = arg.strip_prefix('"') {
        return lit.split('"').next().expect("literal").to_string();
    }
    let name = arg.rsplit("::").next().expect("name");
    let decl = format!("const {name}: &str = \"");
    let start = file
        .find(&decl)
        .unwrap_or_else(|| panic!("route path `{arg}` is neither a literal nor a const of its file"));
    file[start + decl.len()..].split('"').next().expect("const").to_string()
}

/// `(method, path)` of every route the source registers.
fn source_routes() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    // The pages (`src/web`: /admin, /queue, /dashboard, /assets) are HTML for
    // people, not operations of the JSON API; their contract is the pages
    // contract, checked by tests/web.rs and tests/browser.rs.
    let pages = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("web");
    files.retain(|f| !f.starts_with(&pages));
    let mut routes = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for unsupported in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !text.contains(unsupported),
                "{}: `{unsupported}` is not understood by this test; teach it",
                file.display()
            );
        }
        for (at, _) in text.match_indices(".route(") {
            let args = call_args(&text, at + ".route".len());
            let (path_arg, handlers) = args.split_once(',').expect("route(path, handlers)");
            let path = route_path(&text, path_arg);
            let mut found = false;
            for method in METHODS {
                for (i, _) in handlers.match_indices(&format!("{method}(")) {
                    let before = handlers[..i].chars().next_back();
                    if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                        routes.insert((method.to_string(), path.clone()));
                        found = true;
                    }
                }
            }
            assert!(found, "{}: no method found in .route({args})", file.display());
        }
    }
    routes
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routes = source_routes();
    let documented = operations(&document());
    assert!(routes.len() >= 13, "the source scan found too few routes: {routes:?}");
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&routes).collect();
    assert!(phantom.is_empty(), "documented operations no route serves: {phantom:?}");
}

// ---------------------------------------------------------------------------
// The error catalogue.

#[test]
fn every_catalogue_code_is_documented_with_its_status_and_meaning() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorCode"];
    let codes: Vec<&str> = CATALOGUE.iter().map(|(c, _, _)| *c).collect();
    let enumerated: Vec<&str> = schema["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().expect("code"))
        .collect();
    assert_eq!(enumerated, codes, "ErrorCode enumerates the catalogue, in order");
    let table = schema["description"].as_str().expect("description");
    for (code, status, meaning) in CATALOGUE {
        assert!(
            table.contains(&format!("| `{code}` | {status} | {meaning} |")),
            "{code} is in the ErrorCode table with {status} and its meaning"
        );
        let example = &doc["components"]["examples"][*code]["value"];
        assert_eq!(example["code"], *code, "an example body for {code}");
    }
    let machine: Vec<(String, u64, String)> = schema["x-catalogue"]
        .as_array()
        .expect("x-catalogue")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().expect("code").to_string(),
                e["status"].as_u64().expect("status"),
                e["meaning"].as_str().expect("meaning").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, String)> = CATALOGUE
        .iter()
        .map(|(c, s, m)| (c.to_string(), u64::from(*s), m.to_string()))
        .collect();
    assert_eq!(machine, expected, "x-catalogue is the catalogue");
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
}

#[test]
fn every_operation_documents_each_error_status_it_can_answer_with() {
    let doc = document();
    for (_, groups) in OPERATION_ERRORS {
        for code in groups.iter().flat_map(|g| g.iter()) {
            assert!(
                CATALOGUE.iter().any(|(c, _, _)| c == code),
                "OPERATION_ERRORS names {code}, which is not in the catalogue"
            );
        }
    }
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "operationId {id} is unique");
        let codes = operation_error_codes(id).unwrap_or_else(|| panic!("{id} has no OPERATION_ERRORS entry"));
        if LEGACY_SHAPED.contains(&id) {
            // The old system's error shape, declared on the operation.
            let schema = &op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/CompatError", "{id}: 401 is a CompatError");
            assert!(codes.is_empty(), "{id}: no catalogue responses besides its own");
            continue;
        }
        assert!(codes.contains(&"internal_error"), "{id}: any handler can fail");
        for code in codes {
            let (_, status, meaning) = CATALOGUE.iter().find(|(c, _, _)| *c == code).expect("catalogued");
            let response = &op["responses"][status.to_string()];
            let listed = &response["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"];
            assert!(
                listed.as_array().is_some_and(|l| l.iter().any(|c| c == code)),
                "{method} {path}: {status} lists {code}: {response}"
            );
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("`{code}`: {meaning}"))),
                "{method} {path}: {status} explains {code}"
            );
        }
    }
    for (id, _) in OPERATION_ERRORS {
        assert!(ids.contains(*id), "OPERATION_ERRORS has {id}, which is no operation");
    }
}

#[test]
fn security_schemes_and_prefer_are_documented() {
    let doc = document();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["customerId"]["name"], "x-customer-id");
    assert_eq!(schemes["adminKey"]["name"], "x-admin-key");
    let create = &doc["paths"]["/v1/topups"]["post"];
    assert!(
        create["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Prefer" && p["in"] == "header"),
        "Prefer is a header of POST /v1/topups"
    );
    assert_eq!(
        doc["paths"]["/api/queue/stats"]["get"]["security"],
        serde_json::json!([{ "adminKey": [] }])
    );
    for (method, path) in operations(&doc) {
        for requirement in doc["paths"][&path][&method]["security"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for name in requirement.as_object().expect("requirement").keys() {
                assert!(
                    schemes.get(name).is_some(),
                    "{method} {path}: unknown security scheme {name}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Over HTTP.

/// Resolves `{"$ref": "#/components/..."}`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local ref");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling {r}")))
        }
        None => schema,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses:
/// `$ref`, `type`, `enum`, `properties`, `required`, `additionalProperties:
/// false`, `items`, `oneOf`, `allOf`. Returns the first mismatch.
///
/// Stricter than JSON Schema on purpose: an object schema that lists its
/// properties admits no others (unless it is an inline part of an `allOf`),
/// so a field added to a `json!` answer but not to its schema is caught.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    check_part(doc, schema, value, at, true)
}

fn check_part(doc: &Value, schema: &Value, value: &Value, at: &str, closed: bool) -> Result<(), String> {
    let closed = closed || schema.get("$ref").is_some();
    let schema = resolve(doc, schema);
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_part(doc, s, value, at, false)?;
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one.iter().filter(|s| check(doc, s, value, at).is_ok()).count();
        if matching != 1 {
            return Err(format!("{at}: {value} matches {matching} of oneOf {schema}"));
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().expect("name");
            if !object.contains_key(name) {
                return Err(format!("{at}: missing required `{name}` in {value}"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => check(doc, s, field, &format!("{at}.{name}"))?,
                None if closed && properties.is_some() => {
                    return Err(format!("{at}: `{name}` is not in the schema {schema}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The document's operation for a concrete path.
fn find_operation(doc: &Value, method: &str, path: &str) -> (String, Value) {
    let segments: Vec<&str> = path.split('/').collect();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')));
        if matches && let Some(op) = item.get(method) {
            return (template.clone(), op.clone());
        }
    }
    panic!("no documented operation for {method} {path}");
}

type Headers = Vec<(&'static str, String)>;
/// `(method, path, headers, body, expected status)`.
type Probe = (Method, String, Headers, Option<String>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_the_document_and_every_operation_answers_as_documented() {
    // The document and the response shapes do not depend on the engine.
    let setup = engines()[0];
    let t = TestApp::spawn(setup).await;
    let doc = document();
    let (_, key) = t.customer("C1", "1000").await;
    let admin = t.app.admin_key.as_str().to_string();

    let json = |v: Value| Some(v.to_string());
    let bearer = format!("Bearer {key}");
    let auth: Headers = vec![("authorization", bearer.clone())];
    let compat: Headers = vec![("x-api-key", key.clone()), ("x-customer-id", "C1".into())];
    let mut requests: Vec<Probe> = vec![
        (
            Method::POST,
            "/v1/topups".into(),
            vec![("authorization", bearer.clone()), ("prefer", "wait=10".into())],
            json(body("5512345678", "20", "sync-1")),
            200,
        ),
        (
            Method::POST,
            "/v1/topups".into(),
            auth.clone(),
            json(body("5512345678", "10.00", "async-1")),
            202,
        ),
        (Method::GET, "/v1/topups?limit=1".into(), auth.clone(), None, 200),
        (Method::GET, "/v1/balance".into(), auth.clone(), None, 200),
        (Method::GET, "/v1/products".into(), auth.clone(), None, 200),
        (
            Method::POST,
            "/api/enviadespensa/topup".into(),
            compat.clone(),
            json(serde_json::json!({ "phone": "5512345678", "amount": 20, "reference": "c-sync" })),
            200,
        ),
        (
            Method::POST,
            "/api/enviadespensa/topup-async".into(),
            compat.clone(),
            json(body("5512345678", "20", "c-async")),
            200,
        ),
        (Method::GET, "/api/balance".into(), compat.clone(), None, 200),
        (Method::GET, "/health".into(), vec![], None, 200),
        (
            Method::GET,
            "/api/queue/stats".into(),
            vec![("x-admin-key", admin.clone())],
            None,
            200,
        ),
        (
            Method::GET,
            format!(
                "/v1/statements?from={today}&to={today}",
                today = chrono::Utc::now().date_naive()
            ),
            auth.clone(),
            None,
            200,
        ),
        (
            Method::GET,
            "/v1/statements?from=yesterday&to=today".into(),
            auth.clone(),
            None,
            422,
        ),
        (
            Method::GET,
            "/api/admin/reconciliations".into(),
            vec![("x-admin-key", admin.clone())],
            None,
            200,
        ),
        (
            Method::GET,
            "/api/admin/reconciliations/rec_missing".into(),
            vec![("x-admin-key", admin.clone())],
            None,
            404,
        ),
        (Method::GET, "/metrics".into(), vec![], None, 200),
        (Method::GET, "/openapi.json".into(), vec![], None, 200),
        // Errors, in the documented error body.
        (Method::GET, "/v1/balance".into(), vec![], None, 401),
        (Method::POST, "/v1/topups".into(), auth.clone(), Some("{".into()), 400),
        (
            Method::POST,
            "/v1/topups".into(),
            auth.clone(),
            json(serde_json::json!({ "phone": "5512345678", "amount": "20", "reference": "x", "extra": 1 })),
            422,
        ),
        (Method::GET, "/v1/topups?bogus=1".into(), auth.clone(), None, 422),
        (
            Method::GET,
            "/v1/topups/RLR00000000000000000000000000000000".into(),
            auth.clone(),
            None,
            404,
        ),
        (
            Method::GET,
            "/api/transaction/RLR00000000000000000000000000000000".into(),
            compat.clone(),
            None,
            404,
        ),
        // The compatibility routes' errors, in the old shape (`CompatError`).
        (
            Method::POST,
            "/api/enviadespensa/topup".into(),
            compat.clone(),
            json(serde_json::json!({ "amount": 20 })),
            400,
        ),
        (
            Method::GET,
            "/api/balance".into(),
            vec![("x-api-key", "nope".into())],
            None,
            401,
        ),
        (
            Method::POST,
            "/api/enviadespensa/topup-async".into(),
            compat.clone(),
            json(serde_json::json!({ "phone": "5512345678", "amount": 2000 })),
            403,
        ),
    ];
    // The first top-up's id, for the by-id routes.
    let mut exercised = BTreeSet::new();
    let mut first_id: Option<String> = None;
    let mut i = 0;
    while i < requests.len() {
        let (method, path, headers, payload, expected) = requests[i].clone();
        i += 1;
        let mut req = t.http.request(method.clone(), format!("{}{path}", t.base));
        for (name, value) in &headers {
            req = req.header(*name, value);
        }
        if let Some(p) = payload {
            req = req.header("content-type", "application/json").body(p);
        }
        let res = req.send().await.expect("send");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            res.headers().contains_key("x-request-id"),
            "{method} {path}: x-request-id"
        );
        let text = res.text().await.expect("body");
        assert_eq!(status, expected, "{method} {path}: {text}");
        let bare_path = path.split('?').next().expect("path");
        let (template, op) = find_operation(&doc, &method.as_str().to_lowercase(), bare_path);
        exercised.insert((method.as_str().to_lowercase(), template.clone()));
        let response = &op["responses"][status.to_string()];
        assert!(response.is_object(), "{method} {template}: {status} is not documented");
        let (media, content) = response["content"]
            .as_object()
            .and_then(|c| c.iter().next())
            .unwrap_or_else(|| panic!("{method} {template} {status}: no content"));
        assert_eq!(
            content_type.split(';').next(),
            media.split(';').next(),
            "{method} {template} {status}: content type"
        );
        if media == "application/json" {
            let value: Value = serde_json::from_str(&text).expect("JSON body");
            if let Err(e) = check(&doc, &content["schema"], &value, "body") {
                panic!("{method} {template} {status} does not match its schema: {e}");
            }
            if path == "/openapi.json" {
                assert_eq!(value, doc, "/openapi.json serves document()");
            }
            if first_id.is_none()
                && template == "/v1/topups"
                && method == Method::POST
                && let Some(id) = value["id"].as_str()
            {
                first_id = Some(id.to_string());
                requests.push((Method::GET, format!("/v1/topups/{id}"), auth.clone(), None, 200));
                requests.push((Method::GET, format!("/api/transaction/{id}"), compat.clone(), None, 200));
                requests.push((
                    Method::GET,
                    format!("/api/admin/topups/{id}"),
                    vec![("x-admin-key", admin.clone())],
                    None,
                    200,
                ));
            }
        }
    }
    let missing: Vec<_> = operations(&doc).difference(&exercised).cloned().collect();
    assert!(missing.is_empty(), "no live check for {missing:?}");
    t.stop().await;
}

/// `src="..."` and `href="..."` values of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            out.push(rest.split('"').next().expect("value").to_string());
        }
    }
    out
}

fn is_external(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_loads_from_the_binary_alone() {
    let setup = engines()[0];
    let t = TestApp::spawn(setup).await;
    // `/docs` redirects to `/docs/`, which reqwest follows.
    let res = t.http.get(format!("{}/docs", t.base)).send().await.expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/docs/");
    let content_type = res.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = res.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no absolute URL in the page: {html}"
    );
    let assets = references(&html);
    assert!(assets.len() >= 4, "{assets:?}");
    for asset in &assets {
        assert!(!is_external(asset), "{asset} is not served by the gateway");
        let url = reqwest::Url::parse(&format!("{}/docs/", t.base))
            .expect("base")
            .join(asset)
            .expect("join");
        let res = t.http.get(url.clone()).send().await.expect("send");
        assert_eq!(res.status(), 200, "{url}");
        let bytes = res.bytes().await.expect("asset");
        assert!(!bytes.is_empty(), "{url} is empty");
    }
    // The initializer points Swagger UI at our document, and nowhere outside.
    let init = t
        .http
        .get(format!("{}/docs/swagger-initializer.js", t.base))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("js");
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(
        init.contains("\"validatorUrl\": \"none\""),
        "no online validator badge: {init}"
    );
    assert!(!init.contains("http://") && !init.contains("https://"), "{init}");
    t.stop().await;
}
