//! The answers of the compatibility routes: the old JSON keys with the old
//! JSON types, written from integer centavos as exact decimal text (JSON
//! numbers where the old system sent numbers, strings where it sent
//! strings), plus ours where they do not collide.

use crate::state::App;
use recarga_domain::{Currency, Money, TopupStatus, pricing::FX_SCALE};
use recarga_store::Topup;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// A JSON value from its text (callers pass valid JSON).
pub(super) fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

/// A JSON number written from centavos: `2050` → `20.50`.
pub(super) fn number(m: Money) -> Box<RawValue> {
    raw(m.to_decimal_string())
}

/// A JSON string of centavos with `places` decimals: `108` → `"1.0800"`.
pub(super) fn decimal_text(m: Money, places: usize) -> String {
    let text = m.to_decimal_string();
    format!("{text}{}", "0".repeat(places.saturating_sub(2)))
}

/// USD per MXN × 10⁶ (the old `exchange_rate`), from our MXN per unit × 10⁶,
/// rounded to the nearest. An MXN account's rate is 1.
pub(super) fn usd_per_mxn_micro(c: Currency, fx_rate_micro: Option<i64>) -> i64 {
    match (c, fx_rate_micro) {
        (Currency::Mxn, _) => FX_SCALE,
        (_, Some(rate)) if rate > 0 => {
            let scale = FX_SCALE as i128 * FX_SCALE as i128;
            ((scale + rate as i128 / 2) / rate as i128) as i64
        }
        _ => 0,
    }
}

/// `57143` → `0.057143`.
pub(super) fn micro_text(micro: i64) -> String {
    format!("{}.{:06}", micro / FX_SCALE, micro % FX_SCALE)
}

pub(super) fn key(name: &str, value: Box<RawValue>) -> (String, Box<RawValue>) {
    (name.to_string(), value)
}

pub(super) fn text_value(s: &str) -> Box<RawValue> {
    raw(serde_json::to_string(s).unwrap_or_default())
}

/// The state an old client understands: PENDING, SUCCESS or FAILED.
pub fn legacy_status(status: TopupStatus) -> &'static str {
    match status {
        TopupStatus::Success => "SUCCESS",
        TopupStatus::Failed => "FAILED",
        TopupStatus::Pending | TopupStatus::Processing | TopupStatus::Unknown => "PENDING",
    }
}

/// How the provider is named on these routes (the old system's spelling).
pub(super) fn provider_label(app: &App) -> &'static str {
    match app.provider.name() {
        "latcom" => "Latcom",
        other => other,
    }
}

/// `transaction` of a top-up answer: the old keys with the old JSON types,
/// plus ours where they do not collide.
#[derive(Serialize, ToSchema)]
pub struct CompatTransaction {
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    id: String,
    #[schema(schema_with = super::super::schema::legacy_status)]
    status: &'static str,
    /// Our state: PENDING, PROCESSING, SUCCESS, FAILED or UNKNOWN.
    #[schema(schema_with = super::super::schema::topup_status)]
    state: &'static str,
    /// Face value in MXN (the shape before October 2025).
    #[schema(schema_with = super::super::schema::decimal_number)]
    amount: Box<RawValue>,
    /// Face value in MXN.
    #[schema(schema_with = super::super::schema::decimal_number)]
    amount_mxn: Box<RawValue>,
    /// Charged, in the account's currency (USD for migrated accounts).
    #[schema(schema_with = super::super::schema::decimal_number)]
    amount_usd: Box<RawValue>,
    #[schema(schema_with = super::super::schema::rate_number)]
    exchange_rate: Box<RawValue>,
    #[schema(schema_with = super::super::schema::phone_echo)]
    phone: Value,
    /// As sent, `""` when none was sent.
    reference: String,
    /// The provider's transaction id; absent when there is none.
    #[serde(rename = "operatorTransactionId", skip_serializing_if = "Option::is_none")]
    operator_transaction_id: Option<String>,
    #[schema(example = "Latcom")]
    provider: &'static str,
    #[serde(rename = "processedAt")]
    #[schema(format = DateTime)]
    processed_at: String,
    #[serde(rename = "queuedAt")]
    #[schema(format = DateTime)]
    queued_at: String,
    #[schema(example = "MXN")]
    currency: &'static str,
    product_id: String,
    upstream_transaction_id: Option<String>,
    carrier_transaction_id: Option<String>,
    /// Why it failed, when it did.
    error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    /// The FAILED top-up whose reference this new one reused.
    retry_of: Option<String>,
}

pub(super) fn transaction_view(app: &App, t: &Topup, phone_as_sent: Option<&Value>) -> CompatTransaction {
    let usd_per_mxn = usd_per_mxn_micro(t.currency, t.fx_rate_micro);
    let now = crate::views::iso(recarga_store::now_ms());
    CompatTransaction {
        id: t.id.clone(),
        status: legacy_status(t.status),
        state: t.status.as_str(),
        amount: number(t.face_value),
        amount_mxn: number(t.face_value),
        amount_usd: number(t.held),
        exchange_rate: raw(micro_text(usd_per_mxn)),
        phone: phone_as_sent
            .cloned()
            .unwrap_or_else(|| Value::String(t.phone.as_str().to_string())),
        reference: if t.reference_generated() {
            String::new()
        } else {
            t.reference.clone()
        },
        operator_transaction_id: t.upstream_trans_id.clone().or_else(|| t.upstream_ven_transid.clone()),
        provider: provider_label(app),
        processed_at: t.completed_at.map(crate::views::iso).unwrap_or(now),
        queued_at: crate::views::iso(t.created_at),
        currency: "MXN",
        product_id: t.product_id.clone(),
        upstream_transaction_id: t.upstream_trans_id.clone(),
        carrier_transaction_id: t.upstream_ven_transid.clone(),
        error: t.failure_message.clone(),
        created_at: crate::views::iso(t.created_at),
        completed_at: t.completed_at.map(crate::views::iso),
        retry_of: t.retry_of.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CompatBilling {
    /// Charged, in the account's currency.
    #[schema(schema_with = super::super::schema::decimal_number)]
    deducted_usd: Box<RawValue>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    balance_before_usd: Box<RawValue>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    balance_after_usd: Box<RawValue>,
    #[schema(schema_with = super::super::schema::rate_number)]
    exchange_rate: Box<RawValue>,
}

/// The answer of both top-up routes.
#[derive(Serialize, ToSchema)]
pub struct CompatTopupResponse {
    /// True for SUCCESS, and for an accepted async top-up.
    pub(super) success: bool,
    pub(super) message: String,
    /// Present when the answer is not a success: why, and where to look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    pub(super) transaction: CompatTransaction,
    /// Present once the hold is taken: what it took from the balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) billing: Option<CompatBilling>,
    /// The balance right after this top-up's hold (account currency).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub(super) remaining_balance: Option<Box<RawValue>>,
    pub(super) check_status_url: String,
    /// True when this answers an earlier request with the same reference or Idempotency-Key.
    pub(super) replayed: bool,
}

pub(super) async fn billing(app: &App, t: &Topup) -> Option<(CompatBilling, Box<RawValue>)> {
    let entries = app.store.topup_ledger(&t.id).await.ok()?;
    let hold = entries.iter().find(|e| e.kind == "hold")?;
    let after = hold.balance_after;
    let before = Money(after.0 + t.held.0);
    let rate = raw(micro_text(usd_per_mxn_micro(t.currency, t.fx_rate_micro)));
    Some((
        CompatBilling {
            deducted_usd: number(t.held),
            balance_before_usd: number(before),
            balance_after_usd: number(after),
            exchange_rate: rate,
        },
        number(after),
    ))
}

pub(super) async fn response_time_ms(app: &App, id: &str) -> Option<i64> {
    let exchanges = app.store.exchanges(id).await.ok()?;
    exchanges
        .iter()
        .rev()
        .find(|e| e.kind == "topup")
        .map(|e| e.ended_at - e.started_at)
}

#[derive(Serialize, ToSchema)]
pub struct CompatBalance {
    pub(super) success: bool,
    pub(super) customer_id: String,
    pub(super) company_name: Option<String>,
    /// In the account's currency.
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub(super) current_balance: Box<RawValue>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub(super) credit_limit: Box<RawValue>,
    /// The account's currency (the old code always said MXN; its guides USD).
    #[schema(example = "MXN")]
    pub(super) currency: &'static str,
    /// Same as `current_balance`.
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub(super) balance: Box<RawValue>,
    /// What can still be spent: balance + credit limit.
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub(super) available: Box<RawValue>,
}

/// The old status row: its column names and pg's JSON types (NUMERIC as
/// strings, INTEGER as numbers), plus `state`.
#[derive(Serialize, ToSchema)]
pub struct CompatRow {
    /// The row's integer id.
    id: Option<i64>,
    #[schema(example = "RLR0192f5a0c3d47e8a9b1c2d3e4f506172")]
    transaction_id: String,
    customer_id: String,
    phone: String,
    #[schema(schema_with = super::super::schema::legacy_status)]
    status: &'static str,
    #[schema(schema_with = super::super::schema::topup_status)]
    state: &'static str,
    reference: String,
    /// Charged, in the account's currency, 2 decimals.
    #[schema(example = "20.00")]
    amount: String,
    #[schema(example = "0.00")]
    fee: &'static str,
    #[schema(example = "20.00")]
    amount_mxn: Option<String>,
    /// Charged, in the account's currency, 4 decimals.
    #[schema(example = "20.0000")]
    amount_usd: Option<String>,
    /// Account currency per MXN, 6 decimals.
    #[schema(example = "1.000000")]
    exchange_rate: Option<String>,
    #[schema(example = "MXN")]
    currency: &'static str,
    operator_transaction_id: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    processed_at: Option<String>,
    response_time_ms: Option<i64>,
    latcom_response_code: Option<String>,
    latcom_response_message: Option<String>,
    provider: &'static str,
    provider_transaction_id: Option<String>,
    #[schema(example = "topup")]
    transaction_type: &'static str,
    /// Only while PENDING: `waiting`, `delayed` or `active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_progress: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CompatTransactionResponse {
    pub(super) success: bool,
    pub(super) transaction: CompatRow,
}

pub(super) fn row_view(app: &App, t: &Topup, response_time_ms: Option<i64>) -> CompatRow {
    let operator_id = t.upstream_trans_id.clone().or_else(|| t.upstream_ven_transid.clone());
    let queue_status = match t.status {
        TopupStatus::Pending if t.next_attempt_at > recarga_store::now_ms() => Some("delayed"),
        TopupStatus::Pending => Some("waiting"),
        TopupStatus::Processing | TopupStatus::Unknown => Some("active"),
        _ => None,
    };
    CompatRow {
        id: t.number,
        transaction_id: t.id.clone(),
        customer_id: t.customer_id.clone(),
        phone: t.phone.as_str().to_string(),
        status: legacy_status(t.status),
        state: t.status.as_str(),
        reference: if t.reference_generated() {
            String::new()
        } else {
            t.reference.clone()
        },
        amount: decimal_text(t.held, 2),
        fee: "0.00",
        amount_mxn: Some(decimal_text(t.face_value, 2)),
        amount_usd: Some(decimal_text(t.held, 4)),
        exchange_rate: Some(micro_text(usd_per_mxn_micro(t.currency, t.fx_rate_micro))),
        currency: "MXN",
        operator_transaction_id: operator_id.clone(),
        created_at: crate::views::iso(t.created_at),
        processed_at: t.completed_at.map(crate::views::iso),
        response_time_ms,
        latcom_response_code: match t.status {
            TopupStatus::Success => Some("SUCCESS".into()),
            _ => t.failure_code.clone(),
        },
        latcom_response_message: t.failure_message.clone(),
        provider: provider_label(app),
        provider_transaction_id: operator_id,
        transaction_type: "topup",
        queue_status,
        queue_progress: queue_status.map(|_| 0),
    }
}

/// One entry of `details` on `Validation failed` (express-validator's shape).
#[derive(ToSchema)]
pub struct CompatFieldError {
    #[schema(example = "field")]
    pub r#type: String,
    /// The value as sent; absent when the field was missing.
    #[schema(value_type = Value, required = false)]
    pub value: Option<serde_json::Value>,
    pub msg: String,
    #[schema(example = "amount")]
    pub path: String,
    #[schema(example = "body")]
    pub location: String,
}

/// Every error of the compatibility routes: the old `error` text and its
/// keys, plus our `code` and `request_id`. Which keys come with which
/// `error`:
/// - `Validation failed` (400): `details`;
/// - `Invalid API credentials` / `Invalid credentials` (401);
/// - `IP address not authorized` (403): `your_ip`;
/// - `Insufficient balance` (403): `current_balance_usd`, `requested_mxn`,
///   `required_usd`, `exchange_rate`, `current_balance`, `requested`;
/// - `Invalid product amount` (400): `message`, `allowed_amounts`, `requested_amount`,
///   and (added) `nearest_amounts`: the nearest amounts the customer can buy;
/// - `Daily transaction limit exceeded` (429): `daily_limit_mxn`,
///   `used_today_mxn`, `requested_mxn`, `available_mxn`;
/// - `Too many topup requests. …` / `Too many requests, …` (429), with `Retry-After`;
/// - `Provider (…) top-up failed: …` (500): `provider`, `response_time_ms`,
///   `transaction` (FAILED; nothing was charged);
/// - `Transaction not found` (404).
#[derive(ToSchema)]
pub struct CompatError {
    /// Always false.
    pub success: bool,
    pub error: String,
    pub code: String,
    pub request_id: Option<String>,
    pub details: Option<Vec<CompatFieldError>>,
    /// On `Invalid JSON body`: what the parser said.
    pub reason: Option<String>,
    pub your_ip: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub current_balance_usd: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub required_usd: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub requested_mxn: Option<String>,
    #[schema(schema_with = super::super::schema::rate_number)]
    pub exchange_rate: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub current_balance: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub requested: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub credit_limit: Option<String>,
    /// On `Invalid product amount`: which products the customer may buy.
    pub message: Option<String>,
    pub allowed_amounts: Option<Vec<f64>>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub requested_amount: Option<String>,
    /// On `Invalid product amount` (added): the nearest amounts that can be
    /// bought (`code` `amount_not_exact` when the amount lies in the open
    /// range but cannot be delivered exactly).
    pub nearest_amounts: Option<Vec<f64>>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub daily_limit_mxn: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub used_today_mxn: Option<String>,
    #[schema(schema_with = super::super::schema::decimal_number)]
    pub available_mxn: Option<String>,
    pub provider: Option<String>,
    pub response_time_ms: Option<i64>,
    /// On a definite failure: the FAILED transaction.
    pub transaction: Option<CompatTransaction>,
    pub check_status_url: Option<String>,
    /// On `reference_reused` / `request_in_flight`: the existing transaction.
    pub transaction_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_decimals_are_exact() {
        assert_eq!(micro_text(usd_per_mxn_micro(Currency::Mxn, None)), "1.000000");
        // 17.50 MXN per USD → 0.057143 USD per MXN.
        assert_eq!(
            micro_text(usd_per_mxn_micro(Currency::Usd, Some(17_500_000))),
            "0.057143"
        );
        assert_eq!(decimal_text(Money(108), 4), "1.0800");
        assert_eq!(decimal_text(Money(2000), 2), "20.00");
        assert_eq!(number(Money(2050)).get(), "20.50");
    }

    #[test]
    fn states_old_clients_do_not_know_show_as_pending() {
        assert_eq!(legacy_status(TopupStatus::Unknown), "PENDING");
        assert_eq!(legacy_status(TopupStatus::Processing), "PENDING");
        assert_eq!(legacy_status(TopupStatus::Success), "SUCCESS");
        assert_eq!(legacy_status(TopupStatus::Failed), "FAILED");
    }
}
