//! `recarga topup …`: the top-ups that need an operator (UNKNOWN).

use super::{default_actor, refused};
use crate::views::TopupView;
use clap::Subcommand;
use recarga_service::customers;
use recarga_store::{FinalOutcome, Resolution, Store, Topup};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum TopupCmd {
    /// UNKNOWN top-ups, oldest first.
    Unresolved,
    Show {
        #[arg(long)]
        id: String,
    },
    /// Settle an UNKNOWN top-up: success captures the hold, failed releases it.
    Resolve {
        #[arg(long)]
        id: String,
        #[arg(long, value_parser = ["success", "failed"])]
        outcome: String,
        #[arg(long)]
        reason: String,
        /// The upstream's transaction id, when known.
        #[arg(long)]
        trans_id: Option<String>,
        /// The carrier's transaction id, when known.
        #[arg(long)]
        carrier_id: Option<String>,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

fn topup_json(t: &Topup) -> Value {
    let mut v = serde_json::to_value(TopupView::from(t)).unwrap_or(Value::Null);
    v["customer_id"] = json!(t.customer_id);
    v["attempts"] = json!(t.attempts);
    v["status_checks"] = json!(t.checks);
    v
}

/// Runs one `topup` command.
pub(super) async fn run(store: &dyn Store, cmd: TopupCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        TopupCmd::Unresolved => {
            let rows = store.list_unknown().await?;
            json!({ "count": rows.len(), "topups": rows.iter().map(topup_json).collect::<Vec<_>>() })
        }
        TopupCmd::Show { id } => {
            let t = store
                .get_topup(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no top-up {id}"))?;
            json!({
                "topup": topup_json(&t),
                "events": store.events(&id).await?,
                "exchanges": store.exchanges(&id).await?,
            })
        }
        TopupCmd::Resolve {
            id,
            outcome,
            reason,
            trans_id,
            carrier_id,
            actor,
        } => {
            let outcome = if outcome == "success" {
                FinalOutcome::Success
            } else {
                FinalOutcome::Failed
            };
            let resolution = Resolution {
                topup_id: id,
                outcome,
                actor,
                reason,
                trans_id,
                ven_transid: carrier_id,
                exchange: None,
            };
            let t = customers::resolve(store, &resolution)
                .await
                .map_err(|e| refused(e, "top-up"))?;
            json!({ "resolved": topup_json(&t) })
        }
    })
}
