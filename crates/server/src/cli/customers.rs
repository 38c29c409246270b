//! `recarga customer …`: customers, their balances and their settings.

use super::keys::key_json;
use super::{catalogue, currency, default_actor, fx_rate, money, refused};
use crate::views::{fx_text, iso};
use clap::Subcommand;
use recarga_domain::{CatalogueRule, Currency, Money, ReferencePolicy};
use recarga_service::{customers, keys};
use recarga_store::{Adjustment, Customer, CustomerPatch, NewCustomer, Store};
use serde_json::{Value, json};

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
        /// `unique`: a reference replays forever; `free`: references may
        /// repeat, each request is a new top-up (idempotency by Idempotency-Key only).
        #[arg(long, value_parser = reference_policy)]
        reference_policy: Option<ReferencePolicy>,
        /// Whether `GET /api/transaction/{id}` answers without credentials
        /// (this customer's unguessable ids only).
        #[arg(long)]
        public_status: Option<bool>,
        /// Addresses allowed to use this customer's keys, comma-separated
        /// addresses or CIDRs; turns the allow-list on. `none` removes it.
        #[arg(long)]
        ip_allowlist: Option<String>,
        /// Turn the stored allow-list on or off without changing it.
        #[arg(long)]
        ip_allowlist_enabled: Option<bool>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = default_actor())]
        actor: String,
    },
}

fn reference_policy(text: &str) -> Result<ReferencePolicy, String> {
    ReferencePolicy::parse(text).ok_or_else(|| format!("{text:?}: use unique or free"))
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
        "reference_policy": c.reference_policy.as_str(),
        "public_status": c.public_status,
        "ip_allowlist": c.ip_allowlist,
        "ip_allowlist_enabled": c.ip_allowlist_enabled,
        "created_at": iso(c.created_at),
    })
}

pub(super) async fn run(store: &dyn Store, cmd: CustomerCmd) -> anyhow::Result<Value> {
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
            let customer = customers::create(store, &new, &actor)
                .await
                .map_err(|e| refused(e, "customer"))?;
            let (key, key_id) = keys::issue_key(store, &customer.id, Some("first key".into()), &actor).await?;
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
                "keys": store.list_api_keys(&id).await?.iter().map(key_json).collect::<Vec<_>>(),
                "recent_ledger": store.ledger(&id, 20).await?,
            })
        }
        CustomerCmd::Credit {
            id,
            amount,
            reason,
            actor,
        } => {
            let adjustment = Adjustment {
                customer_id: id,
                amount,
                actor,
                reason,
            };
            let entry = customers::adjust(store, &adjustment)
                .await
                .map_err(|e| refused(e, "customer"))?;
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
            reference_policy,
            public_status,
            ip_allowlist,
            ip_allowlist_enabled,
            reason,
            actor,
        } => {
            if rate_limit.is_some_and(|r| r < 0) {
                anyhow::bail!("--rate-limit must be 0 (unlimited) or more");
            }
            let (ip_allowlist, ip_allowlist_enabled) = match ip_allowlist.as_deref().map(str::trim) {
                None => (None, ip_allowlist_enabled),
                Some("none") | Some("") => (Some(None), Some(false)),
                Some(text) => {
                    let list =
                        recarga_domain::IpList::parse(text).map_err(|e| anyhow::anyhow!("--ip-allowlist: {e}"))?;
                    (Some(Some(list.to_text())), Some(ip_allowlist_enabled.unwrap_or(true)))
                }
            };
            let patch = CustomerPatch {
                reference_policy,
                public_status,
                ip_allowlist,
                ip_allowlist_enabled,
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
                reason,
            };
            let customer = customers::update(store, &id, patch, &actor)
                .await
                .map_err(|e| refused(e, "customer"))?;
            json!({ "customer": customer_json(&customer) })
        }
    })
}
