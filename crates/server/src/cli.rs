//! The command line: `serve`, `worker`, `migrate`, and the operator commands.
//!
//! Operator commands print JSON on stdout (one document per command) so they
//! can be scripted, and exit non-zero with a message on stderr when refused.
//! They open the same database as `serve` (same `DATABASE_URL` / `--data-dir`).

use crate::config::{DbConfig, RuntimeConfig, SimSettings};
use crate::http::views::{fx_text, iso};
use crate::keys;
use clap::{Parser, Subcommand};
use recarga_domain::{CatalogueRule, Currency, Money, pricing::FX_SCALE};
use recarga_store::{Adjustment, Customer, CustomerPatch, FinalOutcome, NewCustomer, Resolution, Store, Topup};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "recarga", version, about = "Recarga: prepaid mobile top-up gateway")]
pub struct Cli {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API + worker pool + scheduler. Zero setup: SQLite + sandbox.
    Serve(RuntimeConfig),
    /// Worker pool and scheduler only (no HTTP), for scaled deployments.
    Worker(RuntimeConfig),
    /// The Latcom simulator as its own server (tests, bench, trying the adapter).
    LatcomSim(SimSettings),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Customers and their balances.
    #[command(subcommand)]
    Customer(CustomerCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Top-ups that need an operator.
    #[command(subcommand)]
    Topup(TopupCmd),
    /// Check every ledger invariant; exits 1 on any violation.
    Audit,
}

fn money(text: &str) -> Result<Money, String> {
    Money::parse_decimal(text).map_err(|e| format!("{text:?}: {e}"))
}

fn catalogue(text: &str) -> Result<CatalogueRule, String> {
    CatalogueRule::parse(text).ok_or_else(|| format!("{text:?}: use xoom_only or open_range"))
}

fn currency(text: &str) -> Result<Currency, String> {
    Currency::parse(text).ok_or_else(|| format!("{text:?}: use MXN or USD"))
}

/// `17.50` (MXN per unit) → 17_500_000.
fn fx_rate(text: &str) -> Result<i64, String> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let bad = || format!("{text:?}: an FX rate is a positive decimal with at most 6 places");
    if frac.len() > 6 || int.is_empty() {
        return Err(bad());
    }
    let int: i64 = int.parse().map_err(|_| bad())?;
    let frac_val: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    let rate = int
        .checked_mul(FX_SCALE)
        .and_then(|v| v.checked_add(frac_val))
        .ok_or_else(bad)?;
    if rate <= 0 { Err(bad()) } else { Ok(rate) }
}

fn default_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()))
}

#[derive(Debug, Subcommand)]
pub enum CustomerCmd {
    /// Create a customer and print it with its first API key (shown once).
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "MXN", value_parser = currency)]
        currency: Currency,
        /// MXN per unit of the account currency (required for USD), e.g. 17.50.
        #[arg(long, value_parser = fx_rate)]
        fx_rate: Option<i64>,
        /// Opening credit, in the account currency.
        #[arg(long, default_value = "0", value_parser = money)]
        credit: Money,
        /// How far below zero the balance may go.
        #[arg(long, default_value = "0", value_parser = money)]
        credit_limit: Money,
        #[arg(long, default_value_t = 0)]
        discount_bps: i64,
        /// Smallest face value per top-up (MXN).
        #[arg(long, default_value = "10", value_parser = money)]
        min: Money,
        /// Largest face value per top-up (MXN).
        #[arg(long, default_value = "2000", value_parser = money)]
        max: Money,
        /// Rolling 24 h limit of face value (MXN); none by default.
        #[arg(long, value_parser = money)]
        daily_limit: Option<Money>,
        /// `open_range` (XOOM + open range) or `xoom_only`.
        #[arg(long, default_value = "open_range", value_parser = catalogue)]
        catalogue: CatalogueRule,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    List,
    Show {
        #[arg(long)]
        id: String,
    },
    /// Credit (positive) or debit (negative) the balance, with a reason.
    Credit {
        #[arg(long)]
        id: String,
        #[arg(long, allow_hyphen_values = true, value_parser = money)]
        amount: Money,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
    /// Change limits, discount, catalogue or status.
    Set {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = money)]
        credit_limit: Option<Money>,
        #[arg(long)]
        discount_bps: Option<i64>,
        #[arg(long, value_parser = money)]
        min: Option<Money>,
        #[arg(long, value_parser = money)]
        max: Option<Money>,
        #[arg(long, value_parser = money, conflicts_with = "no_daily_limit")]
        daily_limit: Option<Money>,
        #[arg(long)]
        no_daily_limit: bool,
        #[arg(long, value_parser = catalogue)]
        catalogue: Option<CatalogueRule>,
        #[arg(long)]
        active: Option<bool>,
        #[arg(long, value_parser = fx_rate)]
        fx_rate: Option<i64>,
        /// Requests per second for this customer (0 = unlimited).
        #[arg(long, conflicts_with = "default_rate_limit")]
        rate_limit: Option<i64>,
        /// Use the gateway's default rate limit again.
        #[arg(long)]
        default_rate_limit: bool,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

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
    List {
        #[arg(long)]
        customer: String,
    },
}

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

pub fn customer_json(c: &Customer) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "currency": c.currency.as_str(),
        "fx_rate": c.fx_rate_micro.map(fx_text),
        "balance": c.balance.to_decimal_string(),
        "credit_limit": c.credit_limit.to_decimal_string(),
        "discount_bps": c.discount_bps,
        "min_topup": c.min_topup.to_decimal_string(),
        "max_topup": c.max_topup.to_decimal_string(),
        "daily_limit": c.daily_limit.map(|m| Money(m).to_decimal_string()),
        "catalogue": c.catalogue.as_str(),
        "active": c.active,
        "rate_limit_per_s": c.rate_limit_per_s,
        "created_at": iso(c.created_at),
    })
}

fn topup_json(t: &Topup) -> Value {
    let mut v = serde_json::to_value(crate::http::views::TopupView::from(t)).unwrap_or(Value::Null);
    v["customer_id"] = json!(t.customer_id);
    v["attempts"] = json!(t.attempts);
    v["status_checks"] = json!(t.checks);
    v
}

/// Issues a key for `customer_id`, stores its digest, returns the plaintext.
pub async fn issue_key(
    store: &dyn Store,
    customer_id: &str,
    label: Option<String>,
    actor: &str,
) -> anyhow::Result<(String, String)> {
    let issued = keys::issue(customer_id, label);
    store.insert_api_key(&issued.record, actor).await?;
    Ok((issued.plaintext, issued.record.id))
}

/// The customer an operator command changes, when the command names it.
pub fn customer_touched(command: &Command) -> Option<String> {
    match command {
        Command::Customer(CustomerCmd::Credit { id, .. } | CustomerCmd::Set { id, .. }) => Some(id.clone()),
        _ => None,
    }
}

/// Runs one operator command; returns the JSON to print and the exit code.
pub async fn run_operator(store: &dyn Store, command: Command) -> anyhow::Result<(Value, i32)> {
    let out = match command {
        Command::Migrate => json!({ "migrated": true, "engine": store.engine() }),
        Command::Audit => {
            let report = store.audit().await?;
            let code = if report.is_clean() { 0 } else { 1 };
            return Ok((json!({ "clean": report.is_clean(), "report": report }), code));
        }
        Command::Customer(cmd) => customer_cmd(store, cmd).await?,
        Command::Key(cmd) => match cmd {
            KeyCmd::Create { customer, label, actor } => {
                if store.get_customer(&customer).await?.is_none() {
                    anyhow::bail!("no customer {customer}");
                }
                let (key, id) = issue_key(store, &customer, label, &actor).await?;
                json!({ "customer_id": customer, "key_id": id, "api_key": key, "note": "shown once; store it now" })
            }
            KeyCmd::Revoke { id, actor } => {
                let key = store.revoke_api_key(&id, &actor).await?;
                json!({ "revoked": key })
            }
            KeyCmd::List { customer } => json!({ "keys": store.list_api_keys(&customer).await? }),
        },
        Command::Topup(cmd) => match cmd {
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
                let t = store
                    .resolve_unknown(&Resolution {
                        topup_id: id,
                        outcome,
                        actor,
                        reason,
                        trans_id,
                        ven_transid: carrier_id,
                        exchange: None,
                    })
                    .await?;
                json!({ "resolved": topup_json(&t) })
            }
        },
        Command::Serve(_) | Command::Worker(_) | Command::LatcomSim(_) => anyhow::bail!("not an operator command"),
    };
    Ok((out, 0))
}

async fn customer_cmd(store: &dyn Store, cmd: CustomerCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        CustomerCmd::Create {
            id,
            name,
            currency,
            fx_rate,
            credit,
            credit_limit,
            discount_bps,
            min,
            max,
            daily_limit,
            catalogue,
            actor,
        } => {
            if currency != Currency::Mxn && fx_rate.is_none() {
                anyhow::bail!("a {currency} account needs --fx-rate (MXN per {currency})");
            }
            let new = NewCustomer {
                currency,
                fx_rate_micro: fx_rate,
                initial_credit: credit,
                credit_limit,
                discount_bps,
                min_topup: min,
                max_topup: max,
                daily_limit,
                catalogue,
                ..NewCustomer::new(id, name)
            };
            let customer = store.create_customer(&new, &actor).await?;
            let (key, key_id) = issue_key(store, &customer.id, Some("first key".into()), &actor).await?;
            json!({ "customer": customer_json(&customer), "key_id": key_id, "api_key": key, "note": "the API key is shown once; store it now" })
        }
        CustomerCmd::List => {
            let rows = store.list_customers().await?;
            json!({ "customers": rows.iter().map(customer_json).collect::<Vec<_>>() })
        }
        CustomerCmd::Show { id } => {
            let c = store
                .get_customer(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no customer {id}"))?;
            json!({
                "customer": customer_json(&c),
                "keys": store.list_api_keys(&id).await?,
                "recent_ledger": store.ledger(&id, 20).await?,
            })
        }
        CustomerCmd::Credit {
            id,
            amount,
            reason,
            actor,
        } => {
            let entry = store
                .adjust_balance(&Adjustment {
                    customer_id: id,
                    amount,
                    actor,
                    reason,
                })
                .await?;
            json!({ "entry": entry, "balance": entry.balance_after.to_decimal_string() })
        }
        CustomerCmd::Set {
            id,
            name,
            credit_limit,
            discount_bps,
            min,
            max,
            daily_limit,
            no_daily_limit,
            catalogue,
            active,
            fx_rate,
            rate_limit,
            default_rate_limit,
            actor,
        } => {
            if rate_limit.is_some_and(|r| r < 0) {
                anyhow::bail!("--rate-limit must be 0 (unlimited) or more");
            }
            let patch = CustomerPatch {
                rate_limit_per_s: if default_rate_limit {
                    Some(None)
                } else {
                    rate_limit.map(Some)
                },
                name,
                credit_limit,
                discount_bps,
                min_topup: min,
                max_topup: max,
                daily_limit: if no_daily_limit {
                    Some(None)
                } else {
                    daily_limit.map(Some)
                },
                catalogue,
                active,
                fx_rate_micro: fx_rate,
            };
            json!({ "customer": customer_json(&store.update_customer(&id, &patch, &actor).await?) })
        }
    })
}

pub const DEMO_ID: &str = "DEMO_001";

/// Creates the demo customer on a first sandbox start; returns its key.
pub async fn ensure_demo_customer(store: &dyn Store, rt: &RuntimeConfig) -> anyhow::Result<Option<String>> {
    let sandbox = rt.upstream == crate::config::UpstreamKind::Sandbox;
    if !rt.demo || !sandbox || store.get_customer(DEMO_ID).await?.is_some() {
        return Ok(None);
    }
    let new = NewCustomer {
        initial_credit: Money::major(10_000),
        ..NewCustomer::new(DEMO_ID, "Demo customer (sandbox)")
    };
    store.create_customer(&new, "system:demo").await?;
    let (key, _) = issue_key(store, DEMO_ID, Some("demo".into()), "system:demo").await?;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fx_rates_parse_exactly() {
        assert_eq!(fx_rate("17.50"), Ok(17_500_000));
        assert_eq!(fx_rate("18"), Ok(18_000_000));
        assert_eq!(fx_rate("0.000001"), Ok(1));
        for bad in ["", "0", "-1", "1.0000001", "abc", ".5"] {
            assert!(fx_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
