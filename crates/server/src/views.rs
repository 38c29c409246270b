//! JSON shapes of the `/v1` API. Amounts are decimal strings in major units,
//! always next to their currency; times are RFC 3339 in UTC.

use recarga_domain::Money;
use recarga_store::{Customer, Topup};
use serde::Serialize;
use utoipa::ToSchema;

pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Amount {
    #[schema(example = "20.00")]
    pub amount: String,
    #[schema(example = "MXN")]
    pub currency: &'static str,
}

impl Amount {
    pub fn new(m: Money, currency: &'static str) -> Self {
        Amount {
            amount: m.to_decimal_string(),
            currency,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopupView {
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    pub id: String,
    #[schema(example = "order-1234")]
    pub reference: String,
    #[schema(schema_with = crate::http::schema::topup_status)]
    pub status: &'static str,
    #[schema(example = "5512345678")]
    pub phone: String,
    /// Face value: what the phone receives.
    #[schema(example = "20.00")]
    pub amount: String,
    #[schema(example = "MXN")]
    pub currency: &'static str,
    #[schema(example = "XOOM_20_MXN")]
    pub product_id: String,
    /// Sent to the upstream as its `amount` (MXN), before its VAT.
    pub amount_sent: String,
    pub vat: String,
    pub delivered: String,
    /// What the customer's balance was charged.
    pub charge: Amount,
    pub discount_bps: i64,
    /// MXN per unit of the account currency, when it is not MXN.
    pub fx_rate: Option<String>,
    pub upstream_transaction_id: Option<String>,
    pub carrier_transaction_id: Option<String>,
    pub failure: Option<Failure>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// Present (true) on history imported from the old system: read-only,
    /// with its old id; its `charge` is what the old system debited.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
}

impl From<&Topup> for TopupView {
    fn from(t: &Topup) -> Self {
        TopupView {
            id: t.id.clone(),
            reference: t.reference.clone(),
            status: t.status.as_str(),
            phone: t.phone.as_str().to_string(),
            amount: t.face_value.to_decimal_string(),
            currency: "MXN",
            product_id: t.product_id.clone(),
            amount_sent: t.amount_sent.to_decimal_string(),
            vat: t.vat.to_decimal_string(),
            delivered: t.delivered.to_decimal_string(),
            charge: Amount::new(charge_of(t), t.currency.as_str()),
            discount_bps: t.discount_bps,
            fx_rate: t.fx_rate_micro.map(fx_text),
            upstream_transaction_id: t.upstream_trans_id.clone(),
            carrier_transaction_id: t.upstream_ven_transid.clone(),
            failure: t.failure_code.as_ref().map(|code| Failure {
                code: code.clone(),
                message: t.failure_message.clone().unwrap_or_default(),
            }),
            created_at: iso(t.created_at),
            updated_at: iso(t.updated_at),
            completed_at: t.completed_at.map(iso),
            imported: t.is_imported(),
        }
    }
}

/// What the balance was charged: the hold, or for imported history what the
/// old system debited (a SUCCESS; an old PENDING row held nothing).
fn charge_of(t: &Topup) -> recarga_domain::Money {
    match (t.is_imported(), t.status) {
        (false, _) => t.held,
        (true, recarga_domain::TopupStatus::Success) => recarga_domain::Money(t.legacy_price.unwrap_or(0)),
        (true, _) => recarga_domain::Money::ZERO,
    }
}

/// `17500000` → `"17.500000"`.
pub fn fx_text(micro: i64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub customer_id: String,
    pub balance: String,
    pub currency: &'static str,
    pub credit_limit: String,
    /// What can still be spent: balance + credit limit.
    pub available: String,
}

impl From<&Customer> for BalanceView {
    fn from(c: &Customer) -> Self {
        BalanceView {
            customer_id: c.id.clone(),
            balance: c.balance.to_decimal_string(),
            currency: c.currency.as_str(),
            credit_limit: c.credit_limit.to_decimal_string(),
            available: Money(c.balance.0 + c.credit_limit.0).to_decimal_string(),
        }
    }
}

/// `GET /v1/products`: the products `rule` allows, and what happens to a face
/// value none of them delivers exactly (`inexact_amounts`, `amount_rule`).
pub fn product_list_json(rule: recarga_domain::CatalogueRule) -> serde_json::Value {
    let products: Vec<_> = rule.products().iter().map(product_json).collect();
    serde_json::json!({
        "data": products,
        "inexact_amounts": recarga_domain::catalogue::INEXACT_AMOUNTS,
        "amount_rule": recarga_domain::catalogue::AMOUNT_RULE,
    })
}

/// Why `customer` cannot buy `face`: whether it is an open-range amount that
/// cannot be delivered exactly, and the nearest amounts (below, above) it
/// can buy, within its per-top-up limits.
pub fn nearest_amounts(customer: &Customer, face: Money) -> (bool, Vec<Money>) {
    let Some(why) = recarga_domain::catalogue::unavailable(customer.catalogue, face) else {
        return (false, Vec::new());
    };
    let within = |m: &Money| (customer.min_topup..=customer.max_topup).contains(m);
    let nearest = [why.below, why.above].into_iter().flatten().filter(within).collect();
    (why.inexact, nearest)
}

/// A product as `GET /v1/products` lists it (and `amount_not_available` details repeat it).
pub fn product_json(p: &recarga_domain::Product) -> serde_json::Value {
    serde_json::json!({
        "product_id": p.id,
        "min_amount": p.min_face_value.to_decimal_string(),
        "max_amount": p.max_face_value.to_decimal_string(),
        "currency": "MXN",
        "vat_bps": p.vat_bps,
    })
}
