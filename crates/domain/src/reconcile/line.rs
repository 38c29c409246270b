//! The two sides being reconciled: a parsed statement line and one of our
//! top-ups as the matcher sees it, and the business day both are counted in
//! (Mexico City).

use super::format::{Delivery, MEXICO_CITY_OFFSET_S};
use crate::{Money, Msisdn, TopupStatus};
use chrono::{DateTime, NaiveDate};

/// When a line happened: an instant (UTC ms) or only a business date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTime {
    At(i64),
    Day(NaiveDate),
}

/// What a line's amount is compared with on our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Our face value (VAT included), in MXN centavos.
    Face(Money),
    /// The amount we sent upstream, in MXN centavos.
    Sent(Money),
    /// Not comparable (another currency and no crosswalk entry).
    Nothing,
}

/// One accepted line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The physical line in the file (the header is line 1).
    pub line_no: u64,
    pub time: LineTime,
    pub phone: Option<Msisdn>,
    /// In the statement's own unit (minor units of its currency).
    pub amount: Money,
    pub expect: Expect,
    pub product: Option<String>,
    /// Ids upper-cased and trimmed.
    pub upstream_id: Option<String>,
    pub carrier_id: Option<String>,
    pub our_id: Option<String>,
    pub delivery: Delivery,
    /// The provider's code or message proves nothing was delivered.
    pub definite_failure: bool,
    /// The status as written, for the evidence.
    pub status: Option<String>,
}

impl StatementLine {
    /// A carrier id is proof of delivery whatever the status says
    /// (`RECONCILE.md` lesson 2).
    pub fn shows_delivery(&self) -> bool {
        self.delivery == Delivery::Delivered || self.carrier_id.is_some()
    }

    /// The business day of the line (Mexico City).
    pub fn day(&self) -> NaiveDate {
        match self.time {
            LineTime::At(ms) => business_day(ms),
            LineTime::Day(d) => d,
        }
    }

    /// The MXN value the line names, when it names one.
    pub fn mxn(&self) -> Option<Money> {
        match self.expect {
            Expect::Face(m) | Expect::Sent(m) => Some(m),
            Expect::Nothing => None,
        }
    }
}

/// One of our top-ups (issued here or imported from the old system), with
/// every id it was ever known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Ids it was sent under: `<id>`, `<id>-2`, …; for an imported one,
    /// also the old system's `dist_transid` (its id or the customer's reference).
    pub our_ids: Vec<String>,
    /// The provider's ids seen in its answers.
    pub upstream_ids: Vec<String>,
    /// The carrier's ids seen in its answers.
    pub carrier_ids: Vec<String>,
    pub phone: String,
    pub face_value: Money,
    pub amount_sent: Money,
    pub status: TopupStatus,
    pub created_at: i64,
    /// When it settled (or last changed): the window reaches to here too.
    pub settled_at: i64,
}

impl Candidate {
    pub fn day(&self) -> NaiveDate {
        business_day(self.created_at)
    }
}

/// The Mexico City calendar date of an instant.
pub fn business_day(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms.saturating_add(i64::from(MEXICO_CITY_OFFSET_S) * 1000))
        .unwrap_or_default()
        .date_naive()
}

/// Upper-cased and trimmed: how ids are compared.
pub fn normalise_id(id: &str) -> String {
    id.trim().to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_business_day_is_mexico_city() {
        // 2025-03-19 03:00 UTC is still the 18th in Mexico City (UTC−6).
        let ms = DateTime::parse_from_rfc3339("2025-03-19T03:00:00Z")
            .expect("t")
            .timestamp_millis();
        assert_eq!(business_day(ms), NaiveDate::from_ymd_opt(2025, 3, 18).expect("d"));
        let ms = DateTime::parse_from_rfc3339("2025-03-19T06:00:00Z")
            .expect("t")
            .timestamp_millis();
        assert_eq!(business_day(ms), NaiveDate::from_ymd_opt(2025, 3, 19).expect("d"));
    }
}
