//! `GET /api/admin/reconciliations[/{id}]`: reconciliation runs as JSON for
//! operators' scripts (`x-admin-key`), the same summaries as `recarga
//! reconcile list / show` print.

use super::error::ApiError;
use super::extract;
use crate::state::App;
use crate::web::admin::reconcile::{ROWS_PAGE, RUNS_LISTED, run_json};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

/// Rows one request may ask for.
pub const ROWS_PER_REQUEST_MAX: i64 = 10_000;

/// The newest runs' summaries (`run_id`, `classes`, totals per class, day and month).
#[utoipa::path(
    get,
    path = "/api/admin/reconciliations",
    operation_id = "adminReconciliations",
    tag = "operations",
    responses((status = 200, description = "`{\"runs\": [summary…]}`, newest first.", body = Object)),
    security(("adminKey" = [])),
)]
pub async fn admin_reconciliations(State(app): State<App>, _admin: extract::Admin) -> Result<Json<Value>, ApiError> {
    let runs = app.store.reconcile_runs(RUNS_LISTED).await?;
    let runs: Vec<_> = runs.iter().map(recarga_service::reconcile::run_summary).collect();
    Ok(Json(json!({ "runs": runs })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunRowsQuery {
    /// Only rows of this class (`matched`, `amount_differs`, …).
    class: Option<String>,
    /// Rows after this `seq` (keyset).
    #[serde(default)]
    after: i64,
    /// Rows to return (default 200, at most 10,000).
    limit: Option<i64>,
}

/// The query of a run's rows; a bad value is the documented 422 `invalid_query`.
fn rows_query(params: &std::collections::HashMap<String, String>) -> Result<RunRowsQuery, ApiError> {
    let mut q = RunRowsQuery {
        class: None,
        after: 0,
        limit: None,
    };
    for (key, value) in params {
        let bad = |what: &str| ApiError::new("invalid_query", format!("{key}: {what}"));
        match key.as_str() {
            "class" => q.class = Some(value.clone()).filter(|c| !c.is_empty()),
            "after" => q.after = value.parse().map_err(|_| bad("a row number"))?,
            "limit" => {
                q.limit = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=ROWS_PER_REQUEST_MAX).contains(n))
                        .ok_or_else(|| bad("must be 1-10000"))?,
                )
            }
            _ => return Err(bad("unknown parameter")),
        }
    }
    Ok(q)
}

/// One run: its summary, its proposals and a page of its rows.
#[utoipa::path(
    get,
    path = "/api/admin/reconciliations/{id}",
    operation_id = "adminReconciliation",
    tag = "operations",
    params(("id" = String, Path, description = "The run's id (rec_…)."), RunRowsQuery),
    responses((status = 200, description = "`{\"run\", \"proposals\", \"rows\"}`.", body = Object)),
    security(("adminKey" = [])),
)]
pub async fn admin_reconciliation(
    State(app): State<App>,
    _admin: extract::Admin,
    Path(id): Path<String>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = rows_query(&params)?;
    let limit = q.limit.unwrap_or(ROWS_PAGE).clamp(1, ROWS_PER_REQUEST_MAX);
    let run = run_json(&app, &id, q.class.as_deref(), q.after, limit)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(run))
}
