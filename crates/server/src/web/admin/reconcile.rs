//! Reconciliation pages: the runs with an upload form
//! (`/admin/reconciliations`), one run (`/admin/reconciliations/{id}`: the
//! classes with their MXN totals, the rejected rows with their line
//! numbers, the proposals an admin may apply, and the rows of a class in
//! keyset pages), its rows as CSV, its dispute pack (zip), and the apply step.
//!
//! The upload sends the file's bytes as the request body (`assets/reconcile.js`
//! shows the upload's progress, then opens the run), with the CSRF token in
//! a header; it runs `recarga_service::reconcile::import`, the same function
//! as `recarga reconcile import`. Applying goes through
//! `recarga_service::reconcile::apply`, as the command line does.

use super::Chrome;
use crate::state::App;
use crate::web::auth::OperatorSession;
use crate::web::{WebError, render, when};
use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use recarga_domain::Money;
use recarga_domain::reconcile::{Class, StatementKind};
use recarga_service::ServiceError;
use recarga_service::reconcile::{self as rec, ApplyRequest, ImportRequest};
use recarga_store::{ReconcileProposal, ReconcileRow, RunRecord};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest statement the panel accepts (the command line has no limit).
pub const UPLOAD_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Rows per page of a run's class.
pub const ROWS_PAGE: i64 = 200;
/// Runs listed.
pub const RUNS_LISTED: i64 = 50;
/// Rows in one CSV export.
pub const CSV_ROWS_MAX: i64 = 2_000_000;

pub struct RunLine {
    pub id: String,
    pub created: String,
    pub source: String,
    pub file: String,
    pub kind: String,
    pub coverage: String,
    pub lines: i64,
    pub rejected: i64,
    pub total: String,
    pub classes: Vec<(String, String)>,
}

fn run_line(r: &RunRecord) -> RunLine {
    let summary = rec::run_summary(r);
    RunLine {
        id: r.id.clone(),
        created: when(r.created_at),
        source: r.source.clone(),
        file: r.file_name.clone().unwrap_or_default(),
        kind: r.kind.clone(),
        coverage: format!("{} – {}", r.coverage_from, r.coverage_to),
        lines: r.lines,
        rejected: r.rejected,
        total: format!("{} {}", Money(r.total).to_decimal_string(), r.currency),
        classes: Class::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), summary["classes"][c.as_str()].to_string()))
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "admin_reconciliations.html")]
struct RunsPage {
    chrome: Chrome,
    runs: Vec<RunLine>,
    class_names: Vec<&'static str>,
    upload_max_mb: usize,
}

pub(super) async fn runs(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    let runs = app.store.reconcile_runs(RUNS_LISTED).await?;
    render(&RunsPage {
        chrome: Chrome::new(&op, &app, "reconciliations"),
        runs: runs.iter().map(run_line).collect(),
        class_names: Class::ALL.iter().map(|c| c.as_str()).collect(),
        upload_max_mb: UPLOAD_MAX_BYTES / (1024 * 1024),
    })
}

#[derive(Deserialize, Default)]
pub(super) struct UploadQuery {
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    window_min: Option<i64>,
    #[serde(default)]
    file: String,
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

fn service_error(e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::NotFound => StatusCode::NOT_FOUND,
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(_) => {
            tracing::error!(error = %e, "reconciliation import failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the import failed; nothing was stored",
            );
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    json_error(status, e.to_string())
}

/// `POST /admin/reconciliations/upload?source=&kind=&window_min=&file=`: the
/// body is the file. Answers JSON: the run's summary, or `{"message"}`.
pub(super) async fn upload(
    State(app): State<App>,
    op: OperatorSession,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let csrf = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(e) = op.may_change(csrf) {
        return json_error(e.status, e.message);
    }
    if body.is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "choose a statement file");
    }
    let format = match rec::format_for(q.source.trim(), None) {
        Ok(f) => f,
        Err(e) => return service_error(e),
    };
    let req = ImportRequest {
        source: q.source.trim().to_string(),
        format,
        crosswalk: Default::default(),
        bytes: body.to_vec(),
        file_name: Some(q.file.chars().take(200).collect::<String>()).filter(|f| !f.is_empty()),
        kind: StatementKind::parse(&q.kind),
        coverage: None,
        window_ms: q.window_min.unwrap_or(10).saturating_mul(60_000),
        actor: op.actor().to_string(),
    };
    match rec::import(app.store.as_ref(), req, &|_| {}).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => service_error(e),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RunQuery {
    #[serde(default)]
    class: String,
    #[serde(default)]
    after: i64,
}

pub struct ClassTile {
    pub name: String,
    pub count: String,
    pub mxn: String,
    pub current: bool,
}

pub struct RowLine {
    pub seq: i64,
    pub class: String,
    pub line: String,
    pub topup: String,
    pub rule: String,
    pub day: String,
    pub mxn: String,
    pub statement_amount: String,
    pub phone: String,
    pub ids: String,
    pub statuses: String,
    pub note: String,
}

fn row_line(r: &ReconcileRow) -> RowLine {
    let ids = [&r.upstream_id, &r.carrier_id, &r.our_id]
        .iter()
        .filter_map(|i| i.as_deref())
        .collect::<Vec<_>>()
        .join(" · ");
    RowLine {
        seq: r.seq,
        class: r.class.clone(),
        line: r.line_no.map(|n| n.to_string()).unwrap_or_else(|| "—".into()),
        topup: r.topup_id.clone().unwrap_or_default(),
        rule: r.rule.clone().unwrap_or_else(|| "—".into()),
        day: r.day.clone(),
        mxn: Money(r.mxn).to_decimal_string(),
        statement_amount: Money(r.statement_amount).to_decimal_string(),
        phone: r.phone.clone().unwrap_or_default(),
        ids,
        statuses: format!(
            "{} / {}",
            r.line_status.as_deref().unwrap_or("—"),
            r.our_status.as_deref().unwrap_or("—")
        ),
        note: r.note.clone(),
    }
}

#[derive(Template)]
#[template(path = "admin_reconciliation.html")]
struct RunPage {
    chrome: Chrome,
    run: RunLine,
    role: String,
    window_min: i64,
    statement_total: String,
    tiles: Vec<ClassTile>,
    rejects: Vec<(String, String)>,
    rejected: i64,
    proposals: Vec<ReconcileProposal>,
    open_proposals: usize,
    class: String,
    rows: Vec<RowLine>,
    next: Option<String>,
}

pub(super) async fn run_page(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, WebError> {
    let record = app.store.reconcile_run(&id).await?.ok_or_else(WebError::not_found)?;
    let class = Class::parse(&q.class).map(|c| c.as_str().to_string());
    if !q.class.is_empty() && class.is_none() {
        return Err(WebError::bad_input("No such class."));
    }
    let summary = rec::run_summary(&record);
    let rows = app
        .store
        .reconcile_rows(&id, class.as_deref(), q.after, ROWS_PAGE)
        .await?;
    let next = (rows.len() as i64 == ROWS_PAGE).then(|| {
        let last = rows.last().map_or(0, |r| r.seq);
        format!(
            "/admin/reconciliations/{}?class={}&after={last}",
            crate::web::q(&id),
            class.clone().unwrap_or_default()
        )
    });
    let proposals = app.store.reconcile_proposals(&id).await?;
    let tiles = Class::ALL
        .iter()
        .map(|c| ClassTile {
            name: c.as_str().into(),
            count: summary["classes"][c.as_str()].to_string(),
            mxn: summary["totals"][c.as_str()]["mxn"].as_str().unwrap_or("0.00").into(),
            current: class.as_deref() == Some(c.as_str()),
        })
        .collect();
    let rejects = summary["rejects"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["line"].to_string(),
                        r["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    render(&RunPage {
        chrome: Chrome::new(&op, &app, "reconciliations"),
        role: summary["role"].as_str().unwrap_or_default().into(),
        window_min: record.window_ms / 60_000,
        statement_total: format!(
            "{} {}",
            summary["statement_total"].as_str().unwrap_or_default(),
            record.currency
        ),
        run: run_line(&record),
        tiles,
        rejects,
        rejected: record.rejected,
        open_proposals: proposals.iter().filter(|p| p.applied_at.is_none()).count(),
        proposals,
        class: class.unwrap_or_default(),
        rows: rows.iter().map(row_line).collect(),
        next,
    })
}

/// `GET /admin/reconciliations/{id}/rows.csv?class=`: the run's rows.
pub(super) async fn rows_csv(
    State(app): State<App>,
    _op: OperatorSession,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, WebError> {
    app.store.reconcile_run(&id).await?.ok_or_else(WebError::not_found)?;
    let class = Class::parse(&q.class).map(|c| c.as_str());
    let rows = app.store.reconcile_rows(&id, class, 0, CSV_ROWS_MAX).await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "seq",
        "class",
        "line",
        "topup_id",
        "rule",
        "gap_ms",
        "day",
        "mxn",
        "statement_amount",
        "phone",
        "upstream_id",
        "carrier_id",
        "our_id",
        "product",
        "line_status",
        "our_status",
        "note",
    ];
    let write_err = |_| WebError::internal();
    out.write_record(header).map_err(write_err)?;
    for r in &rows {
        let cells = [
            r.seq.to_string(),
            r.class.clone(),
            r.line_no.map(|n| n.to_string()).unwrap_or_default(),
            r.topup_id.clone().unwrap_or_default(),
            r.rule.clone().unwrap_or_default(),
            r.gap_ms.map(|n| n.to_string()).unwrap_or_default(),
            r.day.clone(),
            Money(r.mxn).to_decimal_string(),
            Money(r.statement_amount).to_decimal_string(),
            r.phone.clone().unwrap_or_default(),
            r.upstream_id.clone().unwrap_or_default(),
            r.carrier_id.clone().unwrap_or_default(),
            r.our_id.clone().unwrap_or_default(),
            r.product.clone().unwrap_or_default(),
            r.line_status.clone().unwrap_or_default(),
            r.our_status.clone().unwrap_or_default(),
            r.note.clone(),
        ];
        out.write_record(
            cells
                .iter()
                .map(|c| recarga_domain::spreadsheet::guard_cell(c).into_owned()),
        )
        .map_err(write_err)?;
    }
    let bytes = out.into_inner().map_err(|_| WebError::internal())?;
    let disposition = format!("attachment; filename=\"reconciliation-{id}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /admin/reconciliations/{id}/pack.zip`: the run's dispute pack.
pub(super) async fn pack_zip(
    State(app): State<App>,
    _op: OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (bytes, _) = recarga_service::dispute::pack(app.store.as_ref(), &id).await?;
    let disposition = format!("attachment; filename=\"dispute-{id}.zip\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /admin/reconciliations/{id}/apply`: `csrf`, `reason` and the
/// chosen `topup` ids (repeated; none chosen: all open proposals).
pub(super) async fn apply(
    State(app): State<App>,
    op: OperatorSession,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&body).map_err(|_| WebError::bad_input("The form could not be read."))?;
    let field = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    op.may_change(&field("csrf"))?;
    let chosen: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == "topup")
        .map(|(_, v)| v.clone())
        .collect();
    let req = ApplyRequest {
        run_id: id.clone(),
        topup_ids: (!chosen.is_empty()).then_some(chosen),
        actor: op.actor().to_string(),
        reason: field("reason"),
    };
    let hub = app.hub.clone();
    rec::apply(app.store.as_ref(), &req, &|t| {
        hub.topup_changed(&t.id);
        hub.topup_event(t);
    })
    .await?;
    Ok(Redirect::to(&format!("/admin/reconciliations/{}", crate::web::q(&id))).into_response())
}

/// The JSON of a run for `/api/admin/reconciliations/{id}`: its summary,
/// proposals and (a page of) rows.
pub async fn run_json(
    app: &App,
    id: &str,
    class: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Option<Value>, ServiceError> {
    let Some(record) = app.store.reconcile_run(id).await? else {
        return Ok(None);
    };
    let rows = app.store.reconcile_rows(id, class, after, limit).await?;
    Ok(Some(json!({
        "run": rec::run_summary(&record),
        "proposals": app.store.reconcile_proposals(id).await?,
        "rows": rows.iter().map(rec::row_json).collect::<Vec<_>>(),
    })))
}
