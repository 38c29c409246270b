//! The dispute pack of a reconciliation run: one zip an operator can send
//! to a provider or carrier, built from our own data in seconds
//! (`RECONCILE.md` lesson 10).
//!
//! | file | what |
//! |---|---|
//! | `summary.json` | claimed = agreed + disputed (lines and amounts, by class and month), checked before writing; our top-ups the statement left out; the ledger's money of the disputed top-ups |
//! | `disputed.csv` | every disputed line as the statement had it (its own header and cells, so it reads again with the same format), then our evidence: class, rule, top-up, status, when and what we sent, what the provider answered, both ids, the ledger entries |
//! | `ours_not_in_statement.csv` | our top-ups of the coverage that the statement should have named, with the same evidence |
//! | `exchanges.json` | every raw upstream exchange of those top-ups |

use crate::error::{Result, ServiceError};
use crate::reconcile::run_summary;
use recarga_domain::reconcile::{Class, records_at_lines};
use recarga_domain::{LedgerKind, Money};
use recarga_store::{ReconcileRow, Store};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;

/// Columns of our evidence after the statement's own.
pub const EVIDENCE_COLUMNS: [&str; 12] = [
    "recarga_class",
    "recarga_rule",
    "recarga_topup_id",
    "recarga_status",
    "recarga_face_value_mxn",
    "recarga_sent_at",
    "recarga_request",
    "recarga_response",
    "recarga_trans_id",
    "recarga_ven_transid",
    "recarga_ledger",
    "recarga_note",
];

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// What we know of one top-up, as evidence cells, and its exchanges raw.
struct Evidence {
    cells: Vec<String>,
    exchanges: Value,
    charged: i64,
    released: i64,
}

async fn evidence(store: &dyn Store, row: &ReconcileRow) -> Result<Evidence> {
    let mut cells = vec![
        row.class.clone(),
        row.rule.clone().unwrap_or_default(),
        row.topup_id.clone().unwrap_or_default(),
    ];
    let Some(id) = &row.topup_id else {
        cells.resize(EVIDENCE_COLUMNS.len() - 1, String::new());
        cells.push(row.note.clone());
        return Ok(Evidence {
            cells,
            exchanges: Value::Null,
            charged: 0,
            released: 0,
        });
    };
    let topup = store.get_topup(id).await?.ok_or(ServiceError::NotFound)?;
    let exchanges = store.exchanges(id).await?;
    let ledger = store.topup_ledger(id).await?;
    let first = exchanges.iter().find(|e| e.request.is_some());
    let answered = exchanges.iter().rev().find(|e| e.response.is_some());
    let entries: Vec<String> = ledger
        .iter()
        .map(|e| {
            format!(
                "#{} {} {} {}",
                e.id,
                e.kind.as_str(),
                e.amount.to_decimal_string(),
                iso(e.created_at)
            )
        })
        .collect();
    let sum = |k: LedgerKind| ledger.iter().filter(|e| e.kind == k).map(|e| e.amount.0).sum::<i64>();
    cells.extend([
        topup.status.as_str().to_string(),
        topup.face_value.to_decimal_string(),
        first.map(|e| iso(e.started_at)).unwrap_or_default(),
        first.and_then(|e| e.request.clone()).unwrap_or_default(),
        answered.and_then(|e| e.response.clone()).unwrap_or_default(),
        topup.upstream_trans_id.clone().unwrap_or_default(),
        topup.upstream_ven_transid.clone().unwrap_or_default(),
        entries.join("; "),
        row.note.clone(),
    ]);
    Ok(Evidence {
        cells,
        exchanges: serde_json::to_value(&exchanges).map_err(internal)?,
        // A hold is negative; a SUCCESS keeps it, a release gives it back;
        // an imported top-up resolved SUCCESS is debited its old price.
        charged: -sum(LedgerKind::Hold) - sum(LedgerKind::Release) - sum(LedgerKind::Debit),
        released: sum(LedgerKind::Release),
    })
}

fn csv_bytes(header: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(internal)?;
    for r in rows {
        w.write_record(
            r.iter()
                .map(|c| recarga_domain::spreadsheet::guard_cell(c).into_owned()),
        )
        .map_err(internal)?;
    }
    w.into_inner().map_err(internal)
}

#[derive(Default)]
struct Tally {
    lines: u64,
    amount: i64,
    mxn: i64,
}

impl Tally {
    fn add(&mut self, r: &ReconcileRow) {
        self.lines += 1;
        self.amount += r.statement_amount;
        self.mxn += r.mxn;
    }

    fn json(&self) -> Value {
        json!({ "lines": self.lines, "amount": Money(self.amount).to_decimal_string(),
                "mxn": Money(self.mxn).to_decimal_string() })
    }
}

/// Builds the dispute pack of a run; returns the zip's bytes and its summary.
pub async fn pack(store: &dyn Store, run_id: &str) -> Result<(Vec<u8>, Value)> {
    let run = store.reconcile_run(run_id).await?.ok_or(ServiceError::NotFound)?;
    let rows = store.reconcile_rows(run_id, None, 0, i64::MAX).await?;
    let raw = store
        .statement_raw(&run.statement_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let disputed: Vec<&ReconcileRow> = rows
        .iter()
        .filter(|r| r.line_no.is_some() && r.class != Class::Matched.as_str())
        .collect();
    let wanted: HashSet<u64> = disputed.iter().filter_map(|r| r.line_no).map(|n| n as u64).collect();
    let (mut header, records) =
        records_at_lines(&raw, &wanted).map_err(|e| ServiceError::invalid("statement", e.to_string()))?;
    let width = header.len();
    let records: BTreeMap<u64, Vec<String>> = records.into_iter().collect();
    header.extend(EVIDENCE_COLUMNS.iter().map(|c| c.to_string()));
    let (mut claimed, mut agreed, mut disputed_total) = (Tally::default(), Tally::default(), Tally::default());
    let mut by_class: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_month: BTreeMap<String, (Tally, Tally)> = BTreeMap::new();
    let (mut charged, mut released) = (0i64, 0i64);
    let mut exchanges = serde_json::Map::new();
    let mut disputed_rows = Vec::with_capacity(disputed.len());
    for r in rows.iter().filter(|r| r.line_no.is_some()) {
        claimed.add(r);
        let month = by_month
            .entry(r.day.get(..7).unwrap_or_default().to_string())
            .or_default();
        if r.class == Class::Matched.as_str() {
            agreed.add(r);
            month.0.add(r);
        } else {
            disputed_total.add(r);
            month.1.add(r);
            by_class.entry(r.class.clone()).or_default().add(r);
        }
    }
    for r in &disputed {
        let ev = evidence(store, r).await?;
        let line = r.line_no.unwrap_or_default() as u64;
        let mut cells = records.get(&line).cloned().unwrap_or_default();
        cells.resize(width, String::new());
        cells.extend(ev.cells);
        disputed_rows.push(cells);
        if let Some(id) = &r.topup_id {
            charged += ev.charged;
            released += ev.released;
            exchanges.insert(id.clone(), ev.exchanges);
        }
    }
    if claimed.amount != agreed.amount + disputed_total.amount || claimed.lines != agreed.lines + disputed_total.lines {
        return Err(ServiceError::Rule(
            "the pack does not tie out: claimed ≠ agreed + disputed".into(),
        ));
    }
    let mut ours_rows = Vec::new();
    let mut ours = Tally::default();
    for r in rows.iter().filter(|r| r.line_no.is_none()) {
        let ev = evidence(store, r).await?;
        ours.add(r);
        ours_rows.push(ev.cells);
        if let Some(id) = &r.topup_id {
            exchanges.insert(id.clone(), ev.exchanges);
        }
    }
    let summary = json!({
        "run": run_summary(&run),
        "currency": run.currency,
        "claimed": claimed.json(),
        "agreed": agreed.json(),
        "disputed": disputed_total.json(),
        "disputed_by_class": by_class.iter().map(|(k, v)| (k.clone(), v.json())).collect::<serde_json::Map<_, _>>(),
        "by_month": by_month.iter().map(|(k, (a, d))| (k.clone(), json!({ "agreed": a.json(), "disputed": d.json() }))).collect::<serde_json::Map<_, _>>(),
        "ties_out": true,
        "ours_not_in_statement": ours.json(),
        "ledger_of_disputed": {
            "charged_to_customers_mxn": Money(charged).to_decimal_string(),
            "released_to_customers_mxn": Money(released).to_decimal_string(),
        },
    });
    let ours_header: Vec<String> = EVIDENCE_COLUMNS.iter().map(|c| c.to_string()).collect();
    let files: [(&str, Vec<u8>); 4] = [
        ("summary.json", serde_json::to_vec_pretty(&summary).map_err(internal)?),
        ("disputed.csv", csv_bytes(&header, &disputed_rows)?),
        ("ours_not_in_statement.csv", csv_bytes(&ours_header, &ours_rows)?),
        (
            "exchanges.json",
            serde_json::to_vec_pretty(&Value::Object(exchanges)).map_err(internal)?,
        ),
    ];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(name, options).map_err(internal)?;
        zip.write_all(&bytes).map_err(internal)?;
    }
    let bytes = zip.finish().map_err(internal)?.into_inner();
    Ok((bytes, summary))
}
