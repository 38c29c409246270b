//! Reconciliation, whichever door it comes through (the command line, the
//! panel): import a statement (read by its format, recognised by digest if
//! seen before), match it to our top-ups, classify every difference, store
//! the run with its proposals; and, only when an operator asks, apply the
//! proposals through the ordinary resolution of an UNKNOWN top-up
//! ([`crate::customers::resolve`]: capture or release, ledger entry, event
//! and audit row each), closed by one audit row for the operator's step.
//!
//! The decisions are the pure functions of `recarga_domain::reconcile`; the
//! SQL is `recarga_store::ReconcileStore`.

use crate::error::{Result, ServiceError};
use recarga_domain::reconcile::{
    Candidate, Class, Classification, Coverage, Crosswalk, MatchOptions, ParsedStatement, Row, StatementFormat,
    StatementKind, StatementLine, StatementTraits, classify, match_lines, parse_statement,
};
use recarga_domain::{FinalOutcome, Money, TopupStatus};
use recarga_store::{NewRun, NewStatement, ReconcileProposal, ReconcileRow, Resolution, RunRecord, Store, Topup};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Top-ups read beyond the statement's coverage on each side, so a line
/// near its edge still finds its top-up (the window, a date-only day, and
/// the time zones between them).
pub const CANDIDATE_MARGIN_MS: i64 = 2 * 86_400_000;
/// Rejects listed in a run's summary (the count is always exact).
pub const SUMMARY_REJECTS_MAX: usize = 100;
/// Longest operator reason for applying proposals.
pub const APPLY_REASON_MAX_CHARS: usize = 200;
/// Widest matching window an operator may ask for.
pub const WINDOW_MAX_MS: i64 = 7 * 86_400_000;

/// One statement to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The source's name (a built-in format's or a custom one's).
    pub source: String,
    pub format: StatementFormat,
    pub crosswalk: Crosswalk,
    pub bytes: Vec<u8>,
    pub file_name: Option<String>,
    /// Overrides the format's full / exceptions.
    pub kind: Option<StatementKind>,
    /// Overrides the coverage (default: the statement's first to last day).
    pub coverage: Option<Coverage>,
    pub window_ms: i64,
    pub actor: String,
}

/// How far an import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Rows read so far.
    Reading(u64),
    Matching {
        lines: u64,
        topups: u64,
    },
    Saving {
        rows: u64,
    },
}

/// SHA-256 of a file, hex: how a statement imported twice is recognised.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Imports a statement and reconciles it; returns the run's summary (JSON,
/// with `run_id` and `classes`). A file seen before (same digest) is not
/// counted again: its latest run is returned with `"duplicate": true`.
pub async fn import(store: &dyn Store, req: ImportRequest, progress: &(dyn Fn(Progress) + Sync)) -> Result<Value> {
    if req.window_ms <= 0 || req.window_ms > WINDOW_MAX_MS {
        return Err(ServiceError::invalid("window", "the window is 1 s to 7 days"));
    }
    req.format.validate().map_err(|e| ServiceError::invalid("format", e))?;
    req.crosswalk
        .validate()
        .map_err(|e| ServiceError::invalid("crosswalk", e))?;
    let digest = digest(&req.bytes);
    if let Some(run) = store.statement_by_digest(&digest).await? {
        let mut summary = run_summary(&run);
        summary["duplicate"] = json!(true);
        return Ok(summary);
    }
    let parsed = parse_statement(&req.format, &req.source, &req.crosswalk, &req.bytes, &mut |rows| {
        progress(Progress::Reading(rows))
    })
    .map_err(|e| ServiceError::invalid("file", e.to_string()))?;
    let (Some(first), Some(last)) = (parsed.first_day, parsed.last_day) else {
        let why = parsed
            .rejects
            .first()
            .map(|r| format!(" (line {}: {})", r.line, r.reason))
            .unwrap_or_default();
        return Err(ServiceError::invalid(
            "file",
            format!("no line of the file could be read{why}"),
        ));
    };
    let coverage = req.coverage.unwrap_or(Coverage { from: first, to: last });
    if coverage.from > coverage.to {
        return Err(ServiceError::invalid("coverage", "the coverage ends before it starts"));
    }
    let traits = StatementTraits {
        role: req.format.role,
        kind: req.kind.unwrap_or(req.format.kind),
        coverage,
    };
    let (from_ms, to_ms) = (day_start_ms(coverage.from), day_start_ms(coverage.to) + 86_400_000);
    let cands = store
        .reconcile_candidates(
            from_ms - CANDIDATE_MARGIN_MS - req.window_ms,
            to_ms + CANDIDATE_MARGIN_MS + req.window_ms,
        )
        .await?;
    progress(Progress::Matching {
        lines: parsed.lines.len() as u64,
        topups: cands.len() as u64,
    });
    let opts = MatchOptions {
        window_ms: req.window_ms,
        ..MatchOptions::default()
    };
    let matches = match_lines(&parsed.lines, &cands, &opts);
    let classes = classify(&traits, &parsed.lines, &cands, &matches).map_err(|e| ServiceError::Rule(e.to_string()))?;
    let run_id = format!("rec_{}", uuid::Uuid::now_v7().simple());
    let statement_id = format!("stm_{}", uuid::Uuid::now_v7().simple());
    let rows = stored_rows(&run_id, &parsed.lines, &cands, &classes.rows);
    let proposals = stored_proposals(&run_id, &parsed.lines, &cands, &classes);
    progress(Progress::Saving {
        rows: rows.len() as u64,
    });
    let format_json = serde_json::to_string(&req.format).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let statement = NewStatement {
        id: statement_id.clone(),
        source: req.source.clone(),
        digest,
        file_name: req.file_name.clone(),
        format: format_json,
        kind: traits.kind.as_str().into(),
        coverage_from: coverage.from.to_string(),
        coverage_to: coverage.to.to_string(),
        rows_read: parsed.rows as i64,
        lines: parsed.lines.len() as i64,
        rejected: parsed.rejected as i64,
        total: parsed.total.0,
        currency: req.format.currency.clone(),
        raw: req.bytes,
        actor: req.actor.clone(),
    };
    let summary = summary_json(&traits, &parsed, &classes, &proposals, req.window_ms);
    let run = NewRun {
        id: run_id.clone(),
        statement_id,
        window_ms: req.window_ms,
        summary: summary.to_string(),
        actor: req.actor,
    };
    store
        .save_reconcile_run(Some(&statement), &run, &rows, &proposals)
        .await?;
    let saved = store.reconcile_run(&run_id).await?.ok_or(ServiceError::NotFound)?;
    Ok(run_summary(&saved))
}

/// Midnight (Mexico City) of a business day, in UTC ms.
fn day_start_ms(day: chrono::NaiveDate) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis());
    midnight - i64::from(recarga_domain::reconcile::format::MEXICO_CITY_OFFSET_S) * 1000
}

fn money(m: Money) -> String {
    m.to_decimal_string()
}

/// The summary's JSON (everything but the run's own facts; see [`run_summary`]).
fn summary_json(
    traits: &StatementTraits,
    parsed: &ParsedStatement,
    classes: &Classification,
    proposals: &[ReconcileProposal],
    window_ms: i64,
) -> Value {
    let per_class = |m: &std::collections::BTreeMap<Class, recarga_domain::reconcile::ClassTotal>| -> Value {
        m.iter()
            .map(|(c, t)| {
                let v = json!({ "count": t.count, "lines": t.lines, "topups": t.topups,
                                "mxn": money(t.mxn), "statement_amount": money(t.statement_amount) });
                (c.as_str().to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let nested = |m: &std::collections::BTreeMap<String, std::collections::BTreeMap<Class, _>>| -> Value {
        m.iter()
            .map(|(k, v)| (k.clone(), per_class(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut rules = std::collections::BTreeMap::<&str, u64>::new();
    for r in &classes.rows {
        if let Some(rule) = r.rule.filter(|_| r.class != Class::UnknownToUs) {
            *rules.entry(rule.as_str()).or_default() += 1;
        }
    }
    let proposed = |o: &str| proposals.iter().filter(|p| p.outcome == o).count();
    json!({
        "role": match traits.role { recarga_domain::reconcile::Role::Provider => "provider", _ => "carrier" },
        "kind": traits.kind.as_str(),
        "coverage": { "from": traits.coverage.from.to_string(), "to": traits.coverage.to.to_string() },
        "window_ms": window_ms,
        "rows_read": parsed.rows,
        "lines": parsed.lines.len(),
        "rejected": parsed.rejected,
        "rejects": parsed.rejects.iter().take(SUMMARY_REJECTS_MAX).collect::<Vec<_>>(),
        "statement_total": money(parsed.total),
        "classes": Class::ALL.iter().map(|c| (c.as_str().to_string(), json!(classes.totals.classes.get(c).map_or(0, |t| t.count)))).collect::<serde_json::Map<_, _>>(),
        "totals": per_class(&classes.totals.classes),
        "by_day": nested(&classes.totals.by_day),
        "by_month": nested(&classes.totals.by_month),
        "rules": rules,
        "proposals": { "success": proposed("success"), "failed": proposed("failed") },
    })
}

/// A stored run as JSON: its summary with the run's and statement's facts.
pub fn run_summary(run: &RunRecord) -> Value {
    let mut v: Value = serde_json::from_str(&run.summary).unwrap_or_else(|_| json!({}));
    let facts = json!({
        "run_id": run.id,
        "statement_id": run.statement_id,
        "source": run.source,
        "file_name": run.file_name,
        "digest": run.digest,
        "currency": run.currency,
        "created_at": run.created_at,
        "actor": run.actor,
        "duplicate": false,
    });
    if let (Value::Object(m), Value::Object(f)) = (&mut v, facts) {
        m.extend(f);
    }
    v
}

fn line_status(line: &StatementLine) -> String {
    line.status
        .clone()
        .unwrap_or_else(|| line.delivery.as_str().to_string())
}

fn stored_rows(run_id: &str, lines: &[StatementLine], cands: &[Candidate], rows: &[Row]) -> Vec<ReconcileRow> {
    rows.iter()
        .enumerate()
        .map(|(seq, r)| {
            let line = r.line.map(|i| &lines[i]);
            let cand = r.candidate.map(|i| &cands[i]);
            ReconcileRow {
                run_id: run_id.to_string(),
                seq: seq as i64 + 1,
                class: r.class.as_str().into(),
                line_no: line.map(|l| l.line_no as i64),
                topup_id: cand.map(|c| c.id.clone()),
                rule: r.rule.map(|x| x.as_str().into()),
                gap_ms: r.gap_ms,
                day: r.day.to_string(),
                mxn: r.mxn.0,
                statement_amount: r.statement_amount.0,
                phone: line
                    .and_then(|l| l.phone.as_ref().map(|p| p.as_str().to_string()))
                    .or_else(|| cand.map(|c| c.phone.clone())),
                upstream_id: line.and_then(|l| l.upstream_id.clone()),
                carrier_id: line.and_then(|l| l.carrier_id.clone()),
                our_id: line.and_then(|l| l.our_id.clone()),
                product: line.and_then(|l| l.product.clone()),
                line_status: line.map(line_status),
                our_status: cand.map(|c| c.status.as_str().to_string()),
                note: r.note.into(),
            }
        })
        .collect()
}

fn stored_proposals(
    run_id: &str,
    lines: &[StatementLine],
    cands: &[Candidate],
    classes: &Classification,
) -> Vec<ReconcileProposal> {
    classes
        .proposals
        .iter()
        .filter(|p| cands[p.candidate].status == TopupStatus::Unknown)
        .map(|p| {
            let line = p.line.map(|i| &lines[i]);
            ReconcileProposal {
                run_id: run_id.to_string(),
                topup_id: cands[p.candidate].id.clone(),
                outcome: match p.outcome {
                    FinalOutcome::Success => "success".into(),
                    FinalOutcome::Failed => "failed".into(),
                },
                line_no: line.map(|l| l.line_no as i64),
                trans_id: line.and_then(|l| l.upstream_id.clone()),
                ven_transid: line.and_then(|l| l.carrier_id.clone()),
                reason: p.reason.into(),
                applied_at: None,
                applied_by: None,
                result: None,
            }
        })
        .collect()
}

/// What an operator asks to apply.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub run_id: String,
    /// Only these top-ups' proposals; `None`: all of the run's.
    pub topup_ids: Option<Vec<String>>,
    pub actor: String,
    pub reason: String,
}

/// Applies a run's proposals (all or some) through the ordinary resolution,
/// each its own transaction with its ledger entry, event and audit row;
/// then records the results and the operator's step (one audit row).
/// `settled` hears each top-up settled (the panel wakes its waiters).
/// Returns `{"run_id", "applied", "already_settled", "refused", "results"}`.
pub async fn apply(store: &dyn Store, req: &ApplyRequest, settled: &(dyn Fn(&Topup) + Sync)) -> Result<Value> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > APPLY_REASON_MAX_CHARS {
        return Err(ServiceError::invalid(
            "reason",
            format!("a reason of 1-{APPLY_REASON_MAX_CHARS} characters is required"),
        ));
    }
    if req.actor.trim().is_empty() {
        return Err(ServiceError::invalid("actor", "an operator is required"));
    }
    store.reconcile_run(&req.run_id).await?.ok_or(ServiceError::NotFound)?;
    let proposals = store.reconcile_proposals(&req.run_id).await?;
    if let Some(ids) = &req.topup_ids
        && let Some(missing) = ids.iter().find(|id| !proposals.iter().any(|p| &p.topup_id == *id))
    {
        return Err(ServiceError::invalid(
            "topup",
            format!("the run proposes nothing for {missing}"),
        ));
    }
    let chosen = proposals
        .iter()
        .filter(|p| p.applied_at.is_none() && req.topup_ids.as_ref().is_none_or(|ids| ids.contains(&p.topup_id)));
    let mut results: Vec<(String, String)> = Vec::new();
    let mut failure = None;
    for p in chosen {
        let outcome = if p.outcome == "success" {
            FinalOutcome::Success
        } else {
            FinalOutcome::Failed
        };
        let line = p.line_no.map(|n| format!(" (line {n})")).unwrap_or_default();
        let resolution = Resolution {
            topup_id: p.topup_id.clone(),
            outcome,
            actor: req.actor.clone(),
            reason: format!("reconciliation {}{line}: {}; {reason}", req.run_id, p.reason),
            trans_id: p.trans_id.clone(),
            ven_transid: p.ven_transid.clone(),
            exchange: None,
        };
        let result = match crate::customers::resolve(store, &resolution).await {
            Ok(t) => {
                settled(&t);
                "applied".to_string()
            }
            Err(ServiceError::WrongState(_)) => "already_settled".to_string(),
            Err(e @ (ServiceError::Unavailable(_) | ServiceError::Internal(_))) => {
                failure = Some(e);
                break;
            }
            Err(e) => format!("refused: {e}"),
        };
        results.push((p.topup_id.clone(), result));
    }
    store
        .finish_reconcile_apply(&req.run_id, &results, &req.actor, reason)
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let count = |r: &str| results.iter().filter(|(_, x)| x == r).count();
    Ok(json!({
        "run_id": req.run_id,
        "applied": count("applied"),
        "already_settled": count("already_settled"),
        "refused": results.iter().filter(|(_, x)| x.starts_with("refused")).count(),
        "results": results.iter().map(|(t, r)| json!({ "topup_id": t, "result": r })).collect::<Vec<_>>(),
    }))
}

/// The format of `source`: one defined in `custom` (a JSON format or a list
/// of them) by that name, else the built-in one.
pub fn format_for(source: &str, custom: Option<&str>) -> Result<StatementFormat> {
    if let Some(text) = custom {
        let value: Value = serde_json::from_str(text).map_err(|e| ServiceError::invalid("formats", e.to_string()))?;
        let list = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        for item in list {
            let f: StatementFormat =
                serde_json::from_value(item).map_err(|e| ServiceError::invalid("formats", e.to_string()))?;
            if f.name == source {
                f.validate().map_err(|e| ServiceError::invalid("formats", e))?;
                return Ok(f);
            }
        }
    }
    StatementFormat::builtin(source).ok_or_else(|| {
        ServiceError::invalid(
            "source",
            format!("no format named {source:?}: built in are latcom and carrier; define others in a formats file"),
        )
    })
}

/// A crosswalk from its JSON (`{"entries": [...]}`); none: empty.
pub fn crosswalk_from(text: Option<&str>) -> Result<Crosswalk> {
    let Some(text) = text else {
        return Ok(Crosswalk::default());
    };
    let cw: Crosswalk = serde_json::from_str(text).map_err(|e| ServiceError::invalid("crosswalk", e.to_string()))?;
    cw.validate().map_err(|e| ServiceError::invalid("crosswalk", e))?;
    Ok(cw)
}

/// A run's rows as JSON.
pub fn row_json(r: &ReconcileRow) -> Value {
    json!({
        "seq": r.seq,
        "class": r.class,
        "line": r.line_no,
        "topup_id": r.topup_id,
        "rule": r.rule,
        "gap_ms": r.gap_ms,
        "day": r.day,
        "mxn": money(Money(r.mxn)),
        "statement_amount": money(Money(r.statement_amount)),
        "phone": r.phone,
        "upstream_id": r.upstream_id,
        "carrier_id": r.carrier_id,
        "our_id": r.our_id,
        "product": r.product,
        "line_status": r.line_status,
        "our_status": r.our_status,
        "note": r.note,
    })
}
