//! `recarga admin …`: operator accounts for the pages: create, list,
//! disable, enable, set-role, reset-password. Each change is audited with
//! `--actor`; disabling and a new password end the operator's sessions, and
//! every page request re-reads the account (so a new role or a disabled
//! account counts from the next request, live streams included).

use super::{default_actor, refused};
use crate::views::iso;
use clap::Subcommand;
use recarga_service::operators;
use recarga_store::Store;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Create an operator. The password is read from stdin when it is piped,
    /// otherwise generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// `admin` may change things; `viewer` only looks.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Operator accounts (without their password hashes).
    List,
    /// Disable an operator: its sessions and live pages end, logins are refused.
    Disable {
        #[arg(long)]
        email: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Enable a disabled operator again.
    Enable {
        #[arg(long)]
        email: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Change an operator's role; open sessions take it from their next request.
    SetRole {
        #[arg(long)]
        email: String,
        /// `admin` may change things; `viewer` only looks.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Give an operator a new password (read from stdin when it is piped,
    /// otherwise generated and printed once); its sessions end.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

fn operator_json(op: &recarga_store::Operator) -> Value {
    json!({
        "email": op.email, "role": op.role, "active": op.active,
        "created_at": iso(op.created_at), "updated_at": iso(op.updated_at),
    })
}

/// The password for `admin create`: piped stdin, or a new random one.
fn operator_password() -> anyhow::Result<(String, bool)> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin.lock().take(4096).read_to_string(&mut text)?;
        let password = text.trim_end_matches(['\r', '\n']).to_string();
        if !password.is_empty() {
            return Ok((password, false));
        }
    }
    Ok((operators::generate_password(), true))
}

pub(super) async fn run(store: &dyn Store, cmd: AdminCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        AdminCmd::Create { email, role, actor } => {
            // Checked before a password is read or generated.
            operators::normalize_email(&email).map_err(|e| refused(e, "operator"))?;
            let (password, generated) = operator_password()?;
            let op = operators::create(store, &email, &role, &password, &actor)
                .await
                .map_err(|e| refused(e, "operator"))?;
            let mut out = json!({ "email": op.email, "role": op.role, "created_at": iso(op.created_at) });
            if generated {
                out["password"] = json!(password);
                out["note"] = json!("the password is shown once; store it now");
            }
            out
        }
        AdminCmd::Disable { email, actor } => {
            let op = operators::set_active(store, &email, false, &actor)
                .await
                .map_err(|e| refused(e, "operator"))?;
            operator_json(&op)
        }
        AdminCmd::Enable { email, actor } => {
            let op = operators::set_active(store, &email, true, &actor)
                .await
                .map_err(|e| refused(e, "operator"))?;
            operator_json(&op)
        }
        AdminCmd::SetRole { email, role, actor } => {
            let op = operators::set_role(store, &email, &role, &actor)
                .await
                .map_err(|e| refused(e, "operator"))?;
            operator_json(&op)
        }
        AdminCmd::ResetPassword { email, actor } => {
            operators::normalize_email(&email).map_err(|e| refused(e, "operator"))?;
            if store.get_operator(&email.trim().to_ascii_lowercase()).await?.is_none() {
                return Err(refused(recarga_service::ServiceError::NotFound, "operator"));
            }
            let (password, generated) = operator_password()?;
            let op = operators::reset_password(store, &email, &password, &actor)
                .await
                .map_err(|e| refused(e, "operator"))?;
            let mut out = operator_json(&op);
            if generated {
                out["password"] = json!(password);
                out["note"] = json!("the password is shown once; store it now");
            }
            out
        }
        AdminCmd::List => {
            let rows = store.list_operators().await?;
            json!({ "operators": rows.iter().map(|o| json!({
                "email": o.email, "role": o.role, "active": o.active, "created_at": iso(o.created_at),
            })).collect::<Vec<_>>() })
        }
    })
}
