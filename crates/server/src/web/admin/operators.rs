//! `/admin/operators`: the operator accounts, and for admins their
//! lifecycle: disable, enable, set the role, a new password (shown once).
//! Every change goes through `recarga_service::operators` (the functions
//! `recarga admin …` calls), after the session's CSRF token and role were
//! checked, audited with the acting operator's email.

use super::Chrome;
use crate::state::App;
use crate::web::auth::{CsrfOnly, OperatorSession};
use crate::web::{WebError, q, render, when};
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use recarga_service::operators;
use serde::Deserialize;

/// One row of the list.
pub struct OperatorRow {
    pub email: String,
    /// The email as a path segment.
    pub path: String,
    pub role: String,
    pub active: bool,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "admin_operators.html")]
struct OperatorsPage {
    chrome: Chrome,
    rows: Vec<OperatorRow>,
    new_password: Option<(String, String)>,
}

async fn page(app: &App, op: &OperatorSession, new_password: Option<(String, String)>) -> Result<Response, WebError> {
    let rows = app
        .store
        .list_operators()
        .await?
        .into_iter()
        .map(|o| OperatorRow {
            path: q(&o.email),
            email: o.email,
            role: o.role,
            active: o.active,
            updated: when(o.updated_at),
        })
        .collect();
    render(&OperatorsPage {
        chrome: Chrome::new(op, app, "operators"),
        rows,
        new_password,
    })
}

pub(super) async fn operators_page(State(app): State<App>, op: OperatorSession) -> Result<Response, WebError> {
    page(&app, &op, None).await
}

fn back() -> Response {
    Redirect::to("/admin/operators").into_response()
}

pub(super) async fn disable(
    State(app): State<App>,
    op: OperatorSession,
    Path(email): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    operators::set_active(app.store.as_ref(), &email, false, op.actor()).await?;
    Ok(back())
}

pub(super) async fn enable(
    State(app): State<App>,
    op: OperatorSession,
    Path(email): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    operators::set_active(app.store.as_ref(), &email, true, op.actor()).await?;
    Ok(back())
}

#[derive(Deserialize)]
pub(super) struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

pub(super) async fn set_role(
    State(app): State<App>,
    op: OperatorSession,
    Path(email): Path<String>,
    Form(f): Form<RoleForm>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    operators::set_role(app.store.as_ref(), &email, &f.role, op.actor()).await?;
    Ok(back())
}

pub(super) async fn reset_password(
    State(app): State<App>,
    op: OperatorSession,
    Path(email): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    op.may_change(&f.csrf)?;
    let password = operators::generate_password();
    let changed = operators::reset_password(app.store.as_ref(), &email, &password, op.actor()).await?;
    page(&app, &op, Some((changed.email, password))).await
}
