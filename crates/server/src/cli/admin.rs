//! `recarga admin …`: operator accounts for the pages.

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
        AdminCmd::List => {
            let rows = store.list_operators().await?;
            json!({ "operators": rows.iter().map(|o| json!({
                "email": o.email, "role": o.role, "active": o.active, "created_at": iso(o.created_at),
            })).collect::<Vec<_>>() })
        }
    })
}
