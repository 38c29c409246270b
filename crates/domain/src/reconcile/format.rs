//! Statement formats as data: which column holds what, how its dates, time
//! zone, amounts and statuses read, what kind of file it is (a full statement
//! or an exceptions list) and who sent it (the provider or the carrier).
//!
//! Two formats are built in, from the files of the old dispute
//! (`RECONCILE.md` §1): `latcom` (the platform's "Super Admin" transaction
//! report: ISO times with their offset, MXN amounts, `Success` / `Fail`) and
//! `carrier` (Telefónica's claim file: `DD/MM/YYYY` dates only, whole USD
//! bundle prices, no status: an exceptions list of what it bills). Others
//! are JSON documents of the same shape ([`StatementFormat`]), and so is the
//! price crosswalk ([`Crosswalk`]) that turns a statement's product and
//! amount into the face value we sold, since carrier prices differ from the
//! provider's (§1.4).

use crate::Money;
use chrono::FixedOffset;
use serde::{Deserialize, Serialize};

/// What a file claims to be: everything in its coverage, or only the
/// differences someone found. Only a full statement can say "absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    Full,
    Exceptions,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Full => "full",
            StatementKind::Exceptions => "exceptions",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(StatementKind::Full),
            "exceptions" => Some(StatementKind::Exceptions),
            _ => None,
        }
    }
}

/// Who sent the statement: the provider we buy from (Latcom) or the carrier
/// that delivered (Telefónica). Only a provider's word can fail a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Provider,
    Carrier,
}

/// What the statement's amount is compared with: the face value the phone
/// received (VAT included) or the amount we sent upstream (without the 16 %
/// VAT Latcom adds on the open range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountBasis {
    Face,
    Sent,
}

/// What a statement line says happened to the top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Delivered,
    NotDelivered,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::NotDelivered => "not_delivered",
        }
    }
}

/// The header names of the columns a format reads; `None`: not in this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    /// Date or date and time of the line.
    pub time: String,
    pub phone: String,
    pub amount: String,
    /// The provider's transaction id (Latcom `transId`, `LT…`).
    #[serde(default)]
    pub upstream_id: Option<String>,
    /// The carrier's transaction id (Latcom `venTransid`, TEMM `SEC_ACTUACION`).
    #[serde(default)]
    pub carrier_id: Option<String>,
    /// Our id as sent (`dist_transid`).
    #[serde(default)]
    pub our_id: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// The provider's response code and message (for definite failures).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// How one source's files read (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementFormat {
    pub name: String,
    pub role: Role,
    pub kind: StatementKind,
    pub columns: Columns,
    /// `rfc3339` (an offset in the text wins over `timezone`), or a chrono
    /// pattern such as `%d/%m/%Y` or `%Y-%m-%d %H:%M:%S%.f`.
    pub time_format: String,
    /// The file has dates, no times: matched within ± 1 business day.
    #[serde(default)]
    pub date_only: bool,
    /// `UTC`, `America/Mexico_City` (UTC−06:00 all year since 2022) or a
    /// fixed offset such as `-04:00`: the zone of times without an offset.
    pub timezone: String,
    /// `MXN` or `USD`; amounts in another currency than ours compare only
    /// through the crosswalk.
    pub currency: String,
    pub amount_basis: AmountBasis,
    /// Status values (case-insensitive) that mean delivered / not delivered.
    #[serde(default)]
    pub delivered: Vec<String>,
    #[serde(default)]
    pub not_delivered: Vec<String>,
    /// Response codes or messages that prove nothing was delivered (our
    /// wallet there was empty, the product does not exist). A plain `Fail`
    /// is not one: Latcom's `Fail` was delivered thousands of times.
    #[serde(default)]
    pub definite_failures: Vec<String>,
    /// What a line says when the file has no status column (a carrier's
    /// claim bills what it delivered).
    #[serde(default)]
    pub default_delivery: Option<Delivery>,
}

impl StatementFormat {
    /// The zone of times that carry no offset.
    pub fn offset(&self) -> Result<FixedOffset, String> {
        offset_of(&self.timezone)
    }

    /// Checks what serde cannot: the zone, the currency, the status rule.
    pub fn validate(&self) -> Result<(), String> {
        self.offset()?;
        if !matches!(self.currency.as_str(), "MXN" | "USD") {
            return Err(format!("currency {:?}: use MXN or USD", self.currency));
        }
        if self.columns.status.is_some() && self.delivered.is_empty() {
            return Err("a status column needs the values that mean delivered".into());
        }
        if self.columns.status.is_none() && self.default_delivery.is_none() {
            return Err("without a status column, say what a line means (default_delivery)".into());
        }
        if self.name.trim().is_empty() {
            return Err("a format needs a name".into());
        }
        Ok(())
    }

    /// The built-in formats (`RECONCILE.md` §1.1, §1.2).
    pub fn builtin(name: &str) -> Option<StatementFormat> {
        match name {
            "latcom" => Some(latcom()),
            "carrier" => Some(carrier()),
            _ => None,
        }
    }
}

/// UTC−06:00: Mexico City has kept standard time all year since October 2022.
pub const MEXICO_CITY_OFFSET_S: i32 = -6 * 3600;

/// `UTC`, `America/Mexico_City` or `±HH:MM`.
pub fn offset_of(zone: &str) -> Result<FixedOffset, String> {
    let bad = || format!("time zone {zone:?}: use UTC, America/Mexico_City or an offset such as -04:00");
    match zone {
        "UTC" | "Z" | "+00:00" => return FixedOffset::east_opt(0).ok_or_else(bad),
        "America/Mexico_City" => return FixedOffset::east_opt(MEXICO_CITY_OFFSET_S).ok_or_else(bad),
        _ => {}
    }
    let (sign, rest) = match zone.as_bytes().first() {
        Some(b'+') => (1, &zone[1..]),
        Some(b'-') => (-1, &zone[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

fn latcom() -> StatementFormat {
    StatementFormat {
        name: "latcom".into(),
        role: Role::Provider,
        kind: StatementKind::Full,
        columns: Columns {
            time: "DATETIME".into(),
            phone: "MSISDN".into(),
            amount: "AMOUNT".into(),
            upstream_id: Some("TRANSACTION_ID".into()),
            carrier_id: Some("VENDOR_TRANSACTION_ID".into()),
            our_id: Some("DIST_TRANSID".into()),
            product: Some("SKUID".into()),
            status: Some("STATUS".into()),
            code: Some("VENDOR_RESPONSE_CODE".into()),
            message: Some("VENDOR_RESPONSE_MESSAGE".into()),
        },
        time_format: "rfc3339".into(),
        date_only: false,
        timezone: "-04:00".into(),
        // `AMOUNT` is the MXN value whatever `CURRENCY` says (§1.2): what we sent.
        currency: "MXN".into(),
        amount_basis: AmountBasis::Sent,
        delivered: vec!["Success".into()],
        not_delivered: vec!["Fail".into()],
        definite_failures: vec![
            "-120008".into(),
            "balance not sufficient for Pouch(Wallet)".into(),
            "-120054".into(),
            "Product not Found".into(),
            "product_not_found".into(),
        ],
        default_delivery: None,
    }
}

fn carrier() -> StatementFormat {
    StatementFormat {
        name: "carrier".into(),
        role: Role::Carrier,
        kind: StatementKind::Exceptions,
        columns: Columns {
            time: "FECHA".into(),
            phone: "NUM_TELEFONO".into(),
            amount: "ImpUSD".into(),
            upstream_id: None,
            carrier_id: Some("SEC_ACTUACION".into()),
            our_id: None,
            product: Some("COD_BONO".into()),
            status: None,
            code: None,
            message: None,
        },
        time_format: "%d/%m/%Y".into(),
        date_only: true,
        timezone: "America/Mexico_City".into(),
        currency: "USD".into(),
        amount_basis: AmountBasis::Face,
        delivered: Vec::new(),
        not_delivered: Vec::new(),
        definite_failures: Vec::new(),
        default_delivery: Some(Delivery::Delivered),
    }
}

/// One row of the price crosswalk: a statement line of `source` with this
/// product (and, when given, this amount in the statement's unit) is a sale
/// of `face_value` MXN for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrosswalkEntry {
    pub source: String,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub amount: Option<String>,
    pub face_value: String,
}

/// The product and price crosswalk, kept as data (`RECONCILE.md` §1.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crosswalk {
    pub entries: Vec<CrosswalkEntry>,
}

impl Crosswalk {
    /// Checks every amount once, so a lookup cannot fail.
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.entries.iter().enumerate() {
            Money::parse_decimal(&e.face_value).map_err(|err| format!("entry {}: face_value: {err}", i + 1))?;
            if let Some(a) = &e.amount {
                Money::parse_decimal(a).map_err(|err| format!("entry {}: amount: {err}", i + 1))?;
            }
        }
        Ok(())
    }

    /// Our face value for a line of `source` with this product and amount.
    pub fn face_value(&self, source: &str, product: Option<&str>, amount: Money) -> Option<Money> {
        self.entries
            .iter()
            .find(|e| {
                e.source == source
                    && e.product
                        .as_deref()
                        .is_none_or(|p| product.is_some_and(|q| q.eq_ignore_ascii_case(p)))
                    && e.amount
                        .as_deref()
                        .is_none_or(|a| Money::parse_decimal(a).is_ok_and(|m| m == amount))
            })
            .and_then(|e| Money::parse_decimal(&e.face_value).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_formats_round_trip_as_json() {
        for name in ["latcom", "carrier"] {
            let f = StatementFormat::builtin(name).expect("built in");
            f.validate().expect("valid");
            let json = serde_json::to_string(&f).expect("json");
            let back: StatementFormat = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, f);
        }
        assert!(StatementFormat::builtin("nope").is_none());
    }

    #[test]
    fn zones_read_as_fixed_offsets() {
        assert_eq!(offset_of("UTC").map(|o| o.local_minus_utc()), Ok(0));
        assert_eq!(
            offset_of("America/Mexico_City").map(|o| o.local_minus_utc()),
            Ok(-21_600)
        );
        assert_eq!(offset_of("-04:00").map(|o| o.local_minus_utc()), Ok(-14_400));
        assert_eq!(offset_of("+05:30").map(|o| o.local_minus_utc()), Ok(19_800));
        for bad in ["", "Mars/Base", "-4", "+25:00", "-04:61"] {
            assert!(offset_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn crosswalk_finds_by_product_and_amount() {
        let cw = Crosswalk {
            entries: vec![
                CrosswalkEntry {
                    source: "carrier".into(),
                    product: Some("BFRIQUIN".into()),
                    amount: Some("10".into()),
                    face_value: "221".into(),
                },
                CrosswalkEntry {
                    source: "carrier".into(),
                    product: Some("XOOM20".into()),
                    amount: None,
                    face_value: "20".into(),
                },
            ],
        };
        cw.validate().expect("valid");
        assert_eq!(
            cw.face_value("carrier", Some("bfriquin"), Money::major(10)),
            Some(Money::major(221))
        );
        assert_eq!(cw.face_value("carrier", Some("BFRIQUIN"), Money::major(11)), None);
        assert_eq!(
            cw.face_value("carrier", Some("XOOM20"), Money(101)),
            Some(Money::major(20))
        );
        assert_eq!(cw.face_value("latcom", Some("XOOM20"), Money(101)), None);
        assert_eq!(cw.face_value("carrier", None, Money(101)), None);
    }
}
