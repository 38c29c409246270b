//! What a row of the old system becomes in Recarga: the pure half of
//! `recarga import legacy`.
//!
//! The old database (Node.js, `customers` / `transactions` / …) stored money
//! as `DECIMAL` text whose unit depended on the path and the date: the sync
//! route debited USD from 2025-10-01 and filled `amount_mxn`, `amount_usd` and
//! `exchange_rate` (USD per MXN); the async route and every older row stored
//! the MXN face value in `amount`, left the FX columns NULL, and debited that
//! MXN number from the (USD) balance as it was. So:
//!
//! - the **face value** is `amount_mxn` when set, else `amount`;
//! - what the balance **was charged** is `amount_usd` when set, else `amount`
//!   (in the balance's own unit, whatever that was: reported as an anomaly
//!   on a USD balance);
//! - the old rate is inverted into ours (MXN per USD × 10⁶);
//! - `SUCCESS` stays SUCCESS; an old `PENDING` (never debited, maybe
//!   delivered) becomes **UNKNOWN with nothing held**, whose SUCCESS
//!   resolution would cost [`ImportedTopup::charge`] at today's pricing; a
//!   (manual) `FAILED` stays FAILED;
//! - synthetic upstream ids (`LATCOM_<ms>`, `OP_<ms>`) are not upstream ids;
//! - `''` as a reference means none.
//!
//! [`plan_row`] decides one row, [`reference_policy`] a customer's policy,
//! [`cents`] reads the old decimals exactly. Nothing here does I/O.

use crate::{Currency, Money, Msisdn, ReferencePolicy, TopupStatus};
use serde::Serialize;

/// One row of the old `transactions` table; every column as text (or
/// milliseconds for times), `None` where the column is NULL or absent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OldTopup {
    /// `transactions.id` (SERIAL): the integer the old status route showed.
    pub serial: Option<i64>,
    pub transaction_id: String,
    pub customer_id: String,
    pub phone: Option<String>,
    pub amount: Option<String>,
    pub status: Option<String>,
    pub reference: Option<String>,
    pub operator_transaction_id: Option<String>,
    pub amount_mxn: Option<String>,
    pub amount_usd: Option<String>,
    pub exchange_rate: Option<String>,
    pub created_at_ms: Option<i64>,
    pub processed_at_ms: Option<i64>,
    pub response_time_ms: Option<i64>,
    pub response_message: Option<String>,
    pub provider: Option<String>,
}

/// Something odd about an old row, kept with it and counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// `amount_mxn` is NULL: `amount` is the MXN face value (async or pre-FX row).
    NullAmountMxn,
    /// The row debited an MXN number from a USD balance.
    MxnDebitedFromUsd,
    /// `operator_transaction_id` is `LATCOM_<ms>` or `OP_<ms>`, not an upstream id.
    SyntheticUpstreamId,
    /// A SUCCESS of the simulated period (2025-09-30), or with a fake `OP_` id: no real top-up.
    Simulated,
    /// An old PENDING row: maybe delivered, never debited; imported as UNKNOWN.
    PendingNeverSettled,
    /// A FAILED row (the old code never committed one: a manual write).
    ManualFailed,
    /// The phone needed more than the usual normalisation (e.g. the old `521` prefix).
    PhoneRewritten,
    /// A decimal had digits below the centavo (rounded half up).
    SubCentavo,
    /// The reference repeats another row of the same customer.
    DuplicateReference,
    /// `created_at` is NULL: the import time stands in.
    NoTimestamp,
}

/// Why a row cannot be imported (it is listed, never dropped silently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Skip {
    /// Not `RLR` + 13 digits.
    BadId(String),
    BadPhone(String),
    /// No positive face value in `amount_mxn` or `amount`.
    NoFaceValue,
    BadStatus(String),
}

/// The Recarga side of an old row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedTopup {
    pub id: String,
    pub number: Option<i64>,
    /// The customer's text; `None` for the old `''`.
    pub reference: Option<String>,
    pub phone: Msisdn,
    pub face_value: Money,
    pub status: TopupStatus,
    /// What the balance was charged (SUCCESS, FAILED), or what a SUCCESS
    /// resolution will debit (UNKNOWN), in the customer's currency.
    pub charge: Money,
    /// The FX rate of the row (MXN per USD × 10⁶), when it had one.
    pub fx_rate_micro: Option<i64>,
    pub upstream_trans_id: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub anomalies: Vec<Anomaly>,
}

/// The simulated period of the old sync route (2025-09-30 12:45Z → 21:30Z).
pub const SIMULATED_FROM_MS: i64 = 1_759_236_300_000;
pub const SIMULATED_UNTIL_MS: i64 = 1_759_267_800_000;

/// An old decimal (`"12.5"`, `"1.0800"`, `"-3"`) in centavos, and whether
/// digits below the centavo were rounded (half up, away from zero).
pub fn cents(text: &str) -> Option<(i64, bool)> {
    let text = text.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) || int.len() > 15 {
        return None;
    }
    let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut digits = frac.bytes().map(|b| i64::from(b - b'0'));
    let tenths = digits.next().unwrap_or(0);
    let hundredths = digits.next().unwrap_or(0);
    let rest: Vec<i64> = digits.collect();
    let rounded = rest.iter().any(|d| *d != 0);
    let up = rest.first().is_some_and(|d| *d >= 5);
    let magnitude = whole.checked_mul(100)? + tenths * 10 + hundredths + i64::from(up);
    Some((if negative { -magnitude } else { magnitude }, rounded))
}

/// The old rate (USD per MXN, 6 places) as ours (MXN per USD × 10⁶), rounded.
pub fn invert_rate(usd_per_mxn: &str) -> Option<i64> {
    let (int, frac) = usd_per_mxn.trim().split_once('.').unwrap_or((usd_per_mxn.trim(), ""));
    if frac.len() > 12 || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The rate in millionths (12 places kept, then rounded to 6).
    let scaled: i128 = format!("{int}{frac:0<12}").parse().ok()?;
    if scaled <= 0 {
        return None;
    }
    // 1/r × 10⁶ = 10¹⁸ / (r × 10¹²), rounded half up.
    let num: i128 = 1_000_000_000_000_000_000;
    Some(((num + scaled / 2) / scaled) as i64)
}

/// The phone as Recarga stores it; `true` when it needed the old `521`
/// mobile prefix removed.
fn phone_of(raw: &str) -> Option<(Msisdn, bool)> {
    if let Ok(m) = Msisdn::parse(raw) {
        return Some((m, false));
    }
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    let national = digits.strip_prefix("521").filter(|d| d.len() == 10)?;
    Msisdn::parse(national).ok().map(|m| (m, true))
}

fn is_synthetic(upstream: &str) -> bool {
    let tail_is_ms = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    upstream.strip_prefix("LATCOM_").is_some_and(tail_is_ms) || upstream.strip_prefix("OP_").is_some_and(tail_is_ms)
}

/// How a customer's old rows translate: its balance currency and, for a
/// USD customer, the rate that prices what an UNKNOWN's resolution costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerTerms {
    pub currency: Currency,
    pub fx_rate_micro: Option<i64>,
    /// When the import runs: stands in for a missing `created_at`.
    pub now_ms: i64,
}

/// Decides one old row.
pub fn plan_row(row: &OldTopup, terms: &CustomerTerms) -> Result<ImportedTopup, Skip> {
    if !crate::is_legacy_id(&row.transaction_id) {
        return Err(Skip::BadId(row.transaction_id.clone()));
    }
    let mut anomalies = Vec::new();
    let raw_phone = row.phone.as_deref().unwrap_or("");
    let (phone, rewritten) = phone_of(raw_phone).ok_or_else(|| Skip::BadPhone(raw_phone.to_string()))?;
    if rewritten {
        anomalies.push(Anomaly::PhoneRewritten);
    }
    let mut read = |text: &Option<String>| {
        let (value, rounded) = cents(text.as_deref()?)?;
        if rounded {
            anomalies.push(Anomaly::SubCentavo);
        }
        Some(value)
    };
    let amount = read(&row.amount);
    let amount_mxn = read(&row.amount_mxn);
    let amount_usd = read(&row.amount_usd);
    let face = amount_mxn.or(amount).filter(|v| *v > 0).ok_or(Skip::NoFaceValue)?;
    if amount_mxn.is_none() {
        anomalies.push(Anomaly::NullAmountMxn);
    }
    let status_text = row.status.as_deref().unwrap_or("").trim().to_ascii_uppercase();
    let status = match status_text.as_str() {
        "SUCCESS" => TopupStatus::Success,
        "PENDING" | "PROCESSING" => TopupStatus::Unknown,
        "FAILED" => TopupStatus::Failed,
        _ => return Err(Skip::BadStatus(status_text)),
    };
    let charge = match status {
        TopupStatus::Unknown => {
            anomalies.push(Anomaly::PendingNeverSettled);
            price_now(face, terms)
        }
        _ => {
            if amount_usd.is_none() && terms.currency == Currency::Usd && status == TopupStatus::Success {
                anomalies.push(Anomaly::MxnDebitedFromUsd);
            }
            if status == TopupStatus::Failed {
                anomalies.push(Anomaly::ManualFailed);
            }
            amount_usd.or(amount).unwrap_or(0).max(0)
        }
    };
    let upstream = row
        .operator_transaction_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let synthetic = upstream.is_some_and(is_synthetic);
    if synthetic {
        anomalies.push(Anomaly::SyntheticUpstreamId);
    }
    let created_at = row.created_at_ms.unwrap_or_else(|| {
        anomalies.push(Anomaly::NoTimestamp);
        terms.now_ms
    });
    let fake_op = upstream.is_some_and(|u| u.starts_with("OP_"));
    let in_simulation = (SIMULATED_FROM_MS..SIMULATED_UNTIL_MS).contains(&created_at) && upstream.is_none();
    if status == TopupStatus::Success && (fake_op || in_simulation) {
        anomalies.push(Anomaly::Simulated);
    }
    anomalies.sort();
    anomalies.dedup();
    Ok(ImportedTopup {
        id: row.transaction_id.clone(),
        number: row.serial,
        reference: row.reference.clone().filter(|r| !r.is_empty()),
        phone,
        face_value: Money(face),
        status,
        charge: Money(charge),
        fx_rate_micro: row.exchange_rate.as_deref().and_then(invert_rate),
        upstream_trans_id: upstream.filter(|_| !synthetic).map(str::to_string),
        created_at,
        completed_at: (status != TopupStatus::Unknown).then(|| row.processed_at_ms.unwrap_or(created_at)),
        anomalies,
    })
}

/// What a SUCCESS of `face` costs the customer today (no discount: the old
/// system had none), rounded up like every Recarga price.
pub fn price_now(face: i64, terms: &CustomerTerms) -> i64 {
    match (terms.currency, terms.fx_rate_micro) {
        (Currency::Usd, Some(rate)) if rate > 0 => {
            let num = i128::from(face) * i128::from(crate::pricing::FX_SCALE);
            ((num + i128::from(rate) - 1) / i128::from(rate)) as i64
        }
        _ => face,
    }
}

/// `free` when any non-empty reference repeats among the customer's rows
/// (the old system allowed it and clients may rely on it), else `unique`;
/// with the repeated references (at most `sample` of them) for the report.
pub fn reference_policy<'a>(
    references: impl IntoIterator<Item = &'a str>,
    sample: usize,
) -> (ReferencePolicy, usize, Vec<String>) {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for r in references.into_iter().filter(|r| !r.is_empty()) {
        *seen.entry(r).or_default() += 1;
    }
    let mut repeated: Vec<&str> = seen.iter().filter(|(_, n)| **n > 1).map(|(r, _)| *r).collect();
    repeated.sort_unstable();
    let count = repeated.len();
    let policy = if count > 0 {
        ReferencePolicy::Free
    } else {
        ReferencePolicy::Unique
    };
    (
        policy,
        count,
        repeated.into_iter().take(sample).map(str::to_string).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(currency: Currency) -> CustomerTerms {
        CustomerTerms {
            currency,
            fx_rate_micro: Some(17_800_000),
            now_ms: 1_800_000_000_000,
        }
    }

    fn sync_row() -> OldTopup {
        OldTopup {
            serial: Some(7),
            transaction_id: "RLR1760353500123".into(),
            customer_id: "HAZ_001".into(),
            phone: Some("5512345678".into()),
            amount: Some("5.41".into()),
            status: Some("SUCCESS".into()),
            reference: Some("ORDER-1".into()),
            operator_transaction_id: Some("LT123".into()),
            amount_mxn: Some("100.00".into()),
            amount_usd: Some("5.4100".into()),
            exchange_rate: Some("0.054100".into()),
            created_at_ms: Some(1_760_353_500_123),
            processed_at_ms: Some(1_760_353_500_123),
            ..OldTopup::default()
        }
    }

    #[test]
    fn old_decimals_read_exactly() {
        assert_eq!(cents("12.5"), Some((1250, false)));
        assert_eq!(cents("1.0800"), Some((108, false)));
        assert_eq!(cents("-3"), Some((-300, false)));
        assert_eq!(cents("0.005"), Some((1, true)));
        assert_eq!(cents("0.004"), Some((0, true)));
        assert_eq!(cents(".5"), Some((50, false)));
        for bad in ["", "-", "1,5", "1e3", "abc", "1.2.3"] {
            assert_eq!(cents(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_old_rate_is_inverted() {
        // 0.054100 USD per MXN = 18.484288... MXN per USD.
        assert_eq!(invert_rate("0.054100"), Some(18_484_288));
        assert_eq!(invert_rate("0.050000"), Some(20_000_000));
        assert_eq!(invert_rate("0"), None);
        assert_eq!(invert_rate("x"), None);
    }

    #[test]
    fn a_sync_success_keeps_face_charge_rate_and_upstream_id() {
        let t = plan_row(&sync_row(), &terms(Currency::Usd)).unwrap();
        assert_eq!(t.face_value, Money(10_000));
        assert_eq!(t.charge, Money(541));
        assert_eq!(t.status, TopupStatus::Success);
        assert_eq!(t.fx_rate_micro, Some(18_484_288));
        assert_eq!(t.upstream_trans_id.as_deref(), Some("LT123"));
        assert_eq!(t.number, Some(7));
        assert!(t.anomalies.is_empty(), "{:?}", t.anomalies);
    }

    #[test]
    fn an_async_pending_row_is_unknown_priced_today_and_keeps_no_fake_id() {
        let row = OldTopup {
            amount: Some("50".into()),
            status: Some("PENDING".into()),
            reference: Some(String::new()),
            operator_transaction_id: Some("LATCOM_1760353500999".into()),
            amount_mxn: None,
            amount_usd: None,
            exchange_rate: None,
            ..sync_row()
        };
        let t = plan_row(&row, &terms(Currency::Usd)).unwrap();
        assert_eq!(t.status, TopupStatus::Unknown);
        assert_eq!(t.face_value, Money(5_000));
        // 50 MXN at 17.80 MXN per USD = 2.808… USD, rounded up.
        assert_eq!(t.charge, Money(281));
        assert_eq!(t.reference, None);
        assert_eq!(t.upstream_trans_id, None);
        assert_eq!(t.completed_at, None);
        assert!(t.anomalies.contains(&Anomaly::NullAmountMxn));
        assert!(t.anomalies.contains(&Anomaly::SyntheticUpstreamId));
        assert!(t.anomalies.contains(&Anomaly::PendingNeverSettled));
        // An MXN customer pays the face value.
        assert_eq!(plan_row(&row, &terms(Currency::Mxn)).unwrap().charge, Money(5_000));
    }

    #[test]
    fn an_mxn_success_on_a_usd_balance_is_charged_as_it_was_and_flagged() {
        let row = OldTopup {
            amount: Some("100".into()),
            amount_mxn: None,
            amount_usd: None,
            exchange_rate: None,
            operator_transaction_id: Some("OP_1759240000000".into()),
            created_at_ms: Some(1_759_240_000_000),
            ..sync_row()
        };
        let t = plan_row(&row, &terms(Currency::Usd)).unwrap();
        assert_eq!(t.charge, Money(10_000));
        assert!(t.anomalies.contains(&Anomaly::MxnDebitedFromUsd));
        assert!(t.anomalies.contains(&Anomaly::Simulated));
    }

    #[test]
    fn bad_rows_are_skipped_with_a_reason() {
        let bad_id = OldTopup {
            transaction_id: "TEST_1".into(),
            ..sync_row()
        };
        assert!(matches!(plan_row(&bad_id, &terms(Currency::Usd)), Err(Skip::BadId(_))));
        let bad_phone = OldTopup {
            phone: Some("12".into()),
            ..sync_row()
        };
        assert!(matches!(
            plan_row(&bad_phone, &terms(Currency::Usd)),
            Err(Skip::BadPhone(_))
        ));
        let zero = OldTopup {
            amount: Some("0".into()),
            amount_mxn: None,
            ..sync_row()
        };
        assert_eq!(plan_row(&zero, &terms(Currency::Usd)), Err(Skip::NoFaceValue));
        let odd = OldTopup {
            status: Some("REVERSED".into()),
            ..sync_row()
        };
        assert!(matches!(plan_row(&odd, &terms(Currency::Usd)), Err(Skip::BadStatus(_))));
    }

    #[test]
    fn the_old_mobile_prefix_is_removed_and_flagged() {
        let row = OldTopup {
            phone: Some("+52 1 55 1234 5678".into()),
            ..sync_row()
        };
        let t = plan_row(&row, &terms(Currency::Usd)).unwrap();
        assert_eq!(t.phone.as_str(), "5512345678");
        assert!(t.anomalies.contains(&Anomaly::PhoneRewritten));
    }

    #[test]
    fn repeated_references_make_the_policy_free() {
        let (policy, n, sample) = reference_policy(["A", "B", "", ""], 5);
        assert_eq!((policy, n), (ReferencePolicy::Unique, 0));
        assert!(sample.is_empty());
        let (policy, n, sample) = reference_policy(["A", "B", "A", "C", "C", "C"], 1);
        assert_eq!((policy, n, sample), (ReferencePolicy::Free, 2, vec!["A".to_string()]));
    }
}
