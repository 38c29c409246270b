//! Reading a statement file by its format: every row becomes a
//! [`StatementLine`] or a [`Reject`] with its line number and reason, never
//! silently dropped (`RECONCILE.md` lesson 4: ids and phones are text; a
//! value that went through a spreadsheet as a number, `…​.0` or `1.14E+11`,
//! is refused, never repaired by guessing).

use super::format::{AmountBasis, Crosswalk, Delivery, StatementFormat};
use super::line::{Expect, LineTime, StatementLine, normalise_id};
use crate::{Money, Msisdn};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde::Serialize;

/// Rows read between two calls of the progress callback.
pub const PROGRESS_EVERY_ROWS: u64 = 10_000;
/// Rejects kept with their reasons (the count is always exact).
pub const REJECTS_KEPT_MAX: usize = 1_000;

/// A row that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}

/// A whole file that cannot be read by its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the file has no header row")]
    NoHeader,
    #[error("column {0:?} (format {1}) is not in the file's header")]
    MissingColumn(String, String),
    #[error("the file cannot be read: {0}")]
    Unreadable(String),
    #[error("the format is invalid: {0}")]
    BadFormat(String),
}

/// What a file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedStatement {
    pub lines: Vec<StatementLine>,
    /// The first [`REJECTS_KEPT_MAX`] rejects.
    pub rejects: Vec<Reject>,
    pub rejected: u64,
    /// Data rows read (accepted + rejected).
    pub rows: u64,
    /// Σ amounts of the accepted lines, in the statement's unit.
    pub total: Money,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
}

/// Column positions in the header.
struct Cols {
    time: usize,
    phone: usize,
    amount: usize,
    upstream_id: Option<usize>,
    carrier_id: Option<usize>,
    our_id: Option<usize>,
    product: Option<usize>,
    status: Option<usize>,
    code: Option<usize>,
    message: Option<usize>,
}

fn locate(format: &StatementFormat, header: &csv::StringRecord) -> Result<Cols, FormatError> {
    let find = |name: &str| header.iter().position(|h| h.trim() == name);
    let need = |name: &str| find(name).ok_or_else(|| FormatError::MissingColumn(name.into(), format.name.clone()));
    // Optional columns may be absent from a file (Latcom's reports do not
    // always carry `dist_transid`); the status column, when declared, may not.
    let opt = |name: &Option<String>| name.as_deref().and_then(find);
    let c = &format.columns;
    Ok(Cols {
        time: need(&c.time)?,
        phone: need(&c.phone)?,
        amount: need(&c.amount)?,
        upstream_id: opt(&c.upstream_id),
        carrier_id: opt(&c.carrier_id),
        our_id: opt(&c.our_id),
        product: opt(&c.product),
        status: c.status.as_deref().map(need).transpose()?,
        code: opt(&c.code),
        message: opt(&c.message),
    })
}

/// Reads `bytes` by `format`. `source` names the crosswalk entries that
/// apply; `progress` hears the number of rows read every
/// [`PROGRESS_EVERY_ROWS`].
pub fn parse_statement(
    format: &StatementFormat,
    source: &str,
    crosswalk: &Crosswalk,
    bytes: &[u8],
    progress: &mut dyn FnMut(u64),
) -> Result<ParsedStatement, FormatError> {
    format.validate().map_err(FormatError::BadFormat)?;
    let offset = format.offset().map_err(FormatError::BadFormat)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| FormatError::Unreadable(e.to_string()))?
        .clone();
    if header.is_empty() || header.iter().all(|h| h.trim().is_empty()) {
        return Err(FormatError::NoHeader);
    }
    let cols = locate(format, &header)?;
    let ctx = RowContext {
        format,
        source,
        crosswalk,
        offset,
        cols,
    };
    let mut out = ParsedStatement::default();
    let mut record = csv::StringRecord::new();
    let mut lines = LineCounter::default();
    loop {
        let line = lines.at(bytes, reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| lines.at(bytes, p.byte()));
                if record.iter().all(|f| f.trim().is_empty()) {
                    continue; // a blank line is no row
                }
                out.rows += 1;
                match ctx.read_row(line, &record) {
                    Ok(l) => out.accept(l),
                    Err(reason) => out.reject(line, reason),
                }
            }
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }
                ) {
                    return Err(FormatError::Unreadable(format!("line {line}: {e}")));
                }
                out.rows += 1;
                out.reject(line, "not valid UTF-8 text".into());
            }
        }
        if out.rows.is_multiple_of(PROGRESS_EVERY_ROWS) {
            progress(out.rows);
        }
    }
    progress(out.rows);
    Ok(out)
}

/// Physical line numbers from byte offsets (the csv reader counts a
/// skipped blank line into the next record's line), counted once.
#[derive(Default)]
struct LineCounter {
    upto: usize,
    newlines: u64,
}

impl LineCounter {
    /// The line of the first character of a record starting at `byte`
    /// (line breaks before it skipped).
    fn at(&mut self, bytes: &[u8], byte: u64) -> u64 {
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.upto {
            self.newlines += bytes[self.upto..start].iter().filter(|&&b| b == b'\n').count() as u64;
            self.upto = start;
        }
        self.newlines + 1
    }
}

impl ParsedStatement {
    fn accept(&mut self, line: StatementLine) {
        self.total = Money(self.total.0.saturating_add(line.amount.0));
        let day = line.day();
        self.first_day = Some(self.first_day.map_or(day, |d| d.min(day)));
        self.last_day = Some(self.last_day.map_or(day, |d| d.max(day)));
        self.lines.push(line);
    }

    fn reject(&mut self, line: u64, reason: String) {
        self.rejected += 1;
        if self.rejects.len() < REJECTS_KEPT_MAX {
            self.rejects.push(Reject { line, reason });
        }
    }
}

struct RowContext<'a> {
    format: &'a StatementFormat,
    source: &'a str,
    crosswalk: &'a Crosswalk,
    offset: FixedOffset,
    cols: Cols,
}

impl RowContext<'_> {
    fn read_row(&self, line_no: u64, r: &csv::StringRecord) -> Result<StatementLine, String> {
        let c = &self.cols;
        let cell = |i: Option<usize>| i.and_then(|i| r.get(i)).map(str::trim).filter(|s| !s.is_empty());
        let f = &self.format.columns;
        let upstream_id = clean_id(cell(c.upstream_id), f.upstream_id.as_deref())?;
        let carrier_id = clean_id(cell(c.carrier_id), f.carrier_id.as_deref())?;
        let our_id = clean_id(cell(c.our_id), f.our_id.as_deref())?;
        let phone = match cell(Some(c.phone)) {
            Some(p) => Some(clean_phone(p)?),
            None if upstream_id.is_some() || carrier_id.is_some() || our_id.is_some() => None,
            None => return Err(format!("{}: no phone and no id to match by", f.phone)),
        };
        let amount_text = cell(Some(c.amount)).ok_or_else(|| format!("{}: empty", f.amount))?;
        let amount = Money::parse_decimal(amount_text).map_err(|e| format!("{}: {amount_text:?}: {e}", f.amount))?;
        if amount.0 <= 0 {
            return Err(format!("{}: {amount_text:?}: an amount is positive", f.amount));
        }
        let time_text = cell(Some(c.time)).ok_or_else(|| format!("{}: empty", f.time))?;
        let time = self
            .read_time(time_text)
            .map_err(|e| format!("{}: {time_text:?}: {e}", f.time))?;
        let product = cell(c.product).map(str::to_string);
        let status = cell(c.status).map(str::to_string);
        let delivery = self.delivery(status.as_deref())?;
        let definite_failure = delivery == Delivery::NotDelivered
            && [cell(c.code), cell(c.message)]
                .into_iter()
                .flatten()
                .any(|v| self.format.definite_failures.iter().any(|d| d.eq_ignore_ascii_case(v)));
        let expect = match self.crosswalk.face_value(self.source, product.as_deref(), amount) {
            Some(face) => Expect::Face(face),
            None if self.format.currency == "MXN" => match self.format.amount_basis {
                AmountBasis::Face => Expect::Face(amount),
                AmountBasis::Sent => Expect::Sent(amount),
            },
            None => Expect::Nothing,
        };
        Ok(StatementLine {
            line_no,
            time,
            phone,
            amount,
            expect,
            product,
            upstream_id,
            carrier_id,
            our_id,
            delivery,
            definite_failure,
            status,
        })
    }

    fn delivery(&self, status: Option<&str>) -> Result<Delivery, String> {
        let Some(s) = status else {
            return match (&self.format.columns.status, self.format.default_delivery) {
                (None, Some(d)) => Ok(d),
                _ => Err("no status".into()),
            };
        };
        let is = |set: &[String]| set.iter().any(|v| v.eq_ignore_ascii_case(s));
        if is(&self.format.delivered) {
            Ok(Delivery::Delivered)
        } else if is(&self.format.not_delivered) {
            Ok(Delivery::NotDelivered)
        } else {
            Err(format!(
                "status {s:?} is neither delivered nor not delivered in format {}",
                self.format.name
            ))
        }
    }

    fn read_time(&self, text: &str) -> Result<LineTime, String> {
        let fmt = self.format.time_format.as_str();
        if self.format.date_only {
            return NaiveDate::parse_from_str(text, fmt)
                .map(LineTime::Day)
                .map_err(|e| format!("not a date as {fmt}: {e}"));
        }
        if fmt == "rfc3339" {
            if let Ok(t) = DateTime::parse_from_rfc3339(text) {
                return Ok(LineTime::At(t.timestamp_millis()));
            }
            // Without an offset: the format's zone.
            for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(n) = NaiveDateTime::parse_from_str(text, f) {
                    return self.local(n);
                }
            }
            return Err("not an ISO 8601 date and time".into());
        }
        if let Ok(t) = DateTime::parse_from_str(text, fmt) {
            return Ok(LineTime::At(t.timestamp_millis()));
        }
        NaiveDateTime::parse_from_str(text, fmt)
            .map_err(|e| format!("not a date and time as {fmt}: {e}"))
            .and_then(|n| self.local(n))
    }

    fn local(&self, n: NaiveDateTime) -> Result<LineTime, String> {
        n.and_local_timezone(self.offset)
            .single()
            .map(|t| LineTime::At(t.timestamp_millis()))
            .ok_or_else(|| "not a time in the format's zone".into())
    }
}

/// A record of a file and the line it starts on.
pub type LineRecord = (u64, Vec<String>);

/// The header and the records at these physical lines of a file, numbered
/// as [`parse_statement`] numbers them: a dispute pack quotes the
/// statement's own rows, so its CSV reads again with the same format.
pub fn records_at_lines(
    bytes: &[u8],
    wanted: &std::collections::HashSet<u64>,
) -> Result<(Vec<String>, Vec<LineRecord>), FormatError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| FormatError::Unreadable(e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut lines = LineCounter::default();
    let mut out = Vec::with_capacity(wanted.len());
    let mut record = csv::StringRecord::new();
    loop {
        let fallback = lines.at(bytes, reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(fallback, |p| lines.at(bytes, p.byte()));
                if wanted.contains(&line) {
                    out.push((line, record.iter().map(str::to_string).collect()));
                }
            }
            // Unreadable rows were rejects: never disputed lines.
            Err(_) => continue,
        }
    }
    Ok((header, out))
}

/// An id as text: trimmed and upper-cased; refused when a spreadsheet read
/// it as a number (`RECONCILE.md` §2.2: `.0`, scientific notation).
pub fn clean_id(value: Option<&str>, column: Option<&str>) -> Result<Option<String>, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let col = column.unwrap_or("id");
    let numeric_looking = v.bytes().all(|b| b.is_ascii_digit() || b".eE+-".contains(&b));
    if numeric_looking && v.bytes().any(|b| b == b'e' || b == b'E') {
        return Err(format!("{col}: {v:?} is in scientific notation: digits were lost"));
    }
    if numeric_looking && v.contains('.') {
        return Err(format!("{col}: {v:?} was read as a number (decimal point)"));
    }
    if v.chars().any(char::is_whitespace) {
        return Err(format!("{col}: {v:?} has spaces inside"));
    }
    Ok(Some(normalise_id(v)))
}

/// A phone: digits only, a leading `52` dropped only when 10 digits remain
/// ([`Msisdn::parse`]); never "the last 10 characters".
pub fn clean_phone(v: &str) -> Result<Msisdn, String> {
    if v.ends_with(".0") {
        return Err(format!("phone {v:?} was read as a number (\".0\")"));
    }
    Msisdn::parse(v).map_err(|e| format!("phone {v:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: &str, text: &str) -> ParsedStatement {
        let f = StatementFormat::builtin(format).expect("format");
        parse_statement(&f, format, &Crosswalk::default(), text.as_bytes(), &mut |_| {}).expect("parses")
    }

    #[test]
    fn latcom_rows_read_with_their_offsets_and_bad_rows_say_why() {
        let text = "id,DATETIME,TRANSACTION_ID,VENDOR_TRANSACTION_ID,MSISDN,AMOUNT,SKUID,STATUS,VENDOR_RESPONSE_MESSAGE,VENDOR_RESPONSE_CODE\n\
            1,2025-03-18T15:12:49.912240-04:00,lt100,114368000123,5512345678,20,Topup,Success,Success,0\n\
            2,2025-03-18T15:13:00-04:00,LT101,,5512345679.0,20,Topup,Fail,Action not allowed,1000000042\n\
            3,2025-03-18T15:14:00-04:00,LT102,1.14368E+11,5512345670,20,Topup,Success,Success,0\n\
            \n\
            4,2025-03-18 19:15:00,LT103,,+52 55 1234 5671,17.24,Topup,Fail,balance not sufficient for Pouch(Wallet),-120008\n\
            5,yesterday,LT104,,5512345672,20,Topup,Success,Success,0\n\
            6,2025-03-18T15:16:00-04:00,LT105,,5512345673,20.001,Topup,Success,Success,0\n\
            7,2025-03-18T15:17:00-04:00,LT106,,5512345674,20,Topup,Pending,,\n";
        let p = parse("latcom", text);
        assert_eq!(p.rows, 7);
        assert_eq!(p.lines.len(), 2);
        let reasons: Vec<(u64, &str)> = p.rejects.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(reasons.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4, 7, 8, 9]);
        assert!(reasons[0].1.contains(".0"), "{reasons:?}");
        assert!(reasons[1].1.contains("scientific"), "{reasons:?}");
        assert!(reasons[4].1.contains("Pending"), "{reasons:?}");
        let first = &p.lines[0];
        assert_eq!(first.line_no, 2);
        assert_eq!(first.upstream_id.as_deref(), Some("LT100"));
        assert_eq!(first.carrier_id.as_deref(), Some("114368000123"));
        assert_eq!(first.expect, Expect::Sent(Money::major(20)));
        assert_eq!(
            first.time,
            LineTime::At(
                DateTime::parse_from_rfc3339("2025-03-18T19:12:49.912Z")
                    .expect("t")
                    .timestamp_millis()
            )
        );
        // A time without an offset reads in the format's zone (-04:00).
        let wallet = &p.lines[1];
        assert_eq!(wallet.line_no, 6);
        assert!(wallet.definite_failure && wallet.delivery == Delivery::NotDelivered);
        assert_eq!(
            wallet.time,
            LineTime::At(
                DateTime::parse_from_rfc3339("2025-03-18T23:15:00Z")
                    .expect("t")
                    .timestamp_millis()
            )
        );
        assert_eq!(p.total, Money(2000 + 1724));
    }

    #[test]
    fn carrier_claims_are_dates_in_usd_delivered_by_default() {
        let text = "\u{feff}FECHA,NUM_TELEFONO,COD_BONO,SEC_ACTUACION,ImpUSD,CANTIDAD_ADI,CANTIDAD_MITOPUP,DIF\n\
            18/03/2025,5512345678,BFRIQUIN,114368000123,10,1,0,1\n\
            31/02/2025,5512345678,BFRIQUIN,114368000124,10,1,0,1\n\
            19/03/2025,525512345678,BFRISEM,114368000125,7,1,0,1\n";
        let p = parse("carrier", text);
        assert_eq!((p.rows, p.lines.len(), p.rejected), (3, 2, 1));
        assert_eq!(p.rejects[0].line, 3);
        let l = &p.lines[1];
        assert_eq!(l.time, LineTime::Day(NaiveDate::from_ymd_opt(2025, 3, 19).expect("d")));
        assert_eq!(l.phone.as_ref().map(Msisdn::as_str), Some("5512345678"));
        assert_eq!((l.delivery, l.expect), (Delivery::Delivered, Expect::Nothing));
        assert_eq!(p.total, Money::major(17));
        assert_eq!(p.first_day, NaiveDate::from_ymd_opt(2025, 3, 18));
    }

    #[test]
    fn a_file_without_the_columns_is_refused_whole() {
        let f = StatementFormat::builtin("carrier").expect("format");
        let err = parse_statement(&f, "carrier", &Crosswalk::default(), b"A,B\n1,2\n", &mut |_| {});
        assert!(matches!(err, Err(FormatError::MissingColumn(..))), "{err:?}");
        let err = parse_statement(&f, "carrier", &Crosswalk::default(), b"", &mut |_| {});
        assert!(err.is_err());
    }

    #[test]
    fn records_are_found_by_the_line_numbers_parsing_gave() {
        let text = "\u{feff}FECHA,NUM_TELEFONO,COD_BONO,SEC_ACTUACION,ImpUSD\n\
            18/03/2025,5512345678,BFRIQUIN,114368000123,10\n\
            \n\
            19/03/2025,5512345679,\"BF\nRISEM\",114368000125,7\n\
            20/03/2025,5512345670,BFRISEM,114368000126,7\n";
        let p = parse("carrier", text);
        let lines: Vec<u64> = p.lines.iter().map(|l| l.line_no).collect();
        assert_eq!(lines, vec![2, 4, 6], "a quoted line break spans two lines");
        let wanted = [4, 6].into_iter().collect();
        let (header, rows) = records_at_lines(text.as_bytes(), &wanted).expect("reads");
        assert_eq!(header[0], "FECHA");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0, rows[0].1[2].as_str()), (4, "BF\nRISEM"));
        assert_eq!((rows[1].0, rows[1].1[1].as_str()), (6, "5512345670"));
    }

    #[test]
    fn ids_from_spreadsheets_are_refused_not_repaired() {
        assert_eq!(clean_id(Some(" lt123 "), None), Ok(Some("LT123".into())));
        assert_eq!(clean_id(Some("114368000123"), None), Ok(Some("114368000123".into())));
        assert!(clean_id(Some("114368000000.0"), None).is_err());
        assert!(clean_id(Some("1.14368E+11"), None).is_err());
        assert!(clean_id(Some("LT 1"), None).is_err());
        assert!(clean_phone("5512345678.0").is_err());
        assert!(clean_phone("12345678").is_err(), "never the last 10 characters");
        assert_eq!(
            clean_phone("52 5512345678").map(|m| m.as_str().to_string()),
            Ok("5512345678".into())
        );
    }
}
