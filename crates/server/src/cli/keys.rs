//! `recarga key …`: API keys, issued (`rk_…`) and imported from the old system.

use super::{default_actor, refused};
use clap::Subcommand;
use recarga_service::keys;
use recarga_store::Store;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Issue a new key (printed once).
    Create {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Revoke a key by its id or prefix.
    Revoke {
        #[arg(long)]
        id: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Keys of a customer: prefix (or an imported key's first characters),
    /// state, and when each was last used. Never the key itself.
    List {
        #[arg(long)]
        customer: String,
    },
    /// Import a key of the old system, read from standard input (one line):
    /// only its digest is stored. It authenticates with `x-api-key` and
    /// `x-customer-id`, on both APIs.
    Import {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Issue a successor (printed once) and retire the old key when the overlap ends.
    Rotate {
        /// The old key's id or prefix.
        #[arg(long)]
        id: String,
        /// How long the old key keeps working (e.g. 7d, 12h; 0 = at once).
        #[arg(long, default_value = "7d", value_parser = duration_s)]
        overlap: u64,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

/// `7d`, `12h`, `30m`, `45s` or plain seconds → seconds.
pub fn duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("{text:?}: a duration is a number with s, m, h or d (e.g. 7d)");
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&text[..i], &text[i..]),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// A key as the CLI shows it: never its digest.
pub fn key_json(k: &recarga_store::ApiKey) -> Value {
    let now = recarga_store::now_ms();
    let state = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|t| t <= now) {
        "expired"
    } else if k.expires_at.is_some() {
        "retiring"
    } else {
        "active"
    };
    json!({
        "id": k.id,
        "customer_id": k.customer_id,
        "kind": k.kind,
        "prefix": k.prefix,
        "shown_as": k.hint.clone().unwrap_or_else(|| format!("{}{}_…", keys::KEY_PREFIX, k.prefix)),
        "label": k.label,
        "state": state,
        // Milliseconds since the epoch, as the key rows always printed them.
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "replaced_by": k.replaced_by,
    })
}

/// Reads one key from standard input (the first line, without its line end).
fn key_from_stdin() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("paste the key and press Enter:");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Runs one `key` command.
pub(super) async fn run(store: &dyn Store, cmd: KeyCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        KeyCmd::Create { customer, label, actor } => {
            let (key, id) = keys::issue_key(store, &customer, label, &actor)
                .await
                .map_err(|e| refused(e, &format!("customer {customer}")))?;
            json!({ "customer_id": customer, "key_id": id, "api_key": key, "note": "shown once; store it now" })
        }
        KeyCmd::Revoke { id, actor } => {
            let key = store.revoke_api_key(&id, &actor).await?;
            json!({ "revoked": key_json(&key) })
        }
        KeyCmd::List { customer } => {
            let rows = store.list_api_keys(&customer).await?;
            json!({ "keys": rows.iter().map(key_json).collect::<Vec<_>>() })
        }
        KeyCmd::Import { customer, label, actor } => {
            let plaintext = key_from_stdin()?;
            let (stored, warnings) = keys::import_key(store, &customer, &plaintext, label, &actor)
                .await
                .map_err(|e| refused(e, &format!("customer {customer}")))?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            json!({
                "imported": key_json(&stored),
                "warnings": warnings,
                "note": "only the key's digest is stored; clients send it as x-api-key with x-customer-id",
            })
        }
        KeyCmd::Rotate { id, overlap, actor } => {
            let (plaintext, key_id, retired) = keys::rotate_key(store, &id, overlap, &actor)
                .await
                .map_err(|e| refused(e, &format!("key {id}")))?;
            json!({
                "customer_id": retired.customer_id,
                "key_id": key_id,
                "api_key": plaintext,
                "retired": key_json(&retired),
                "note": "the new key is shown once; the old one works until its expires_at",
            })
        }
    })
}
