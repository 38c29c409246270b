//! `recarga import legacy`: bring a running installation of the old system
//! over, and prove that not a centavo moved.
//!
//! The steps, for every selected old customer:
//!
//! 1. **Read** (read-only) its row, its transactions, the old database's own
//!    per-status totals and its old books ([`recarga_store::legacy_source`]).
//! 2. **Plan** each row with the pure rules of [`recarga_domain::legacy`]
//!    (face value, charge, FX inversion, PENDING → UNKNOWN with nothing
//!    held, synthetic ids dropped); rows that cannot be imported are listed
//!    with their reason, never dropped silently.
//! 3. **Check the expectation**: with `--expect`, the old data must still
//!    have the fingerprint the approved dry run saw, or nothing is written.
//! 4. **Write** the customer in one transaction (`ImportStore`), unless this
//!    is a dry run, it was imported before (a re-run writes nothing), or it
//!    already has Recarga traffic (refused without `--merge`).
//! 5. **Tie out**: read back what Recarga now holds and compare it with the
//!    old database's own sums, to the centavo ([`CustomerReport::differences`]).

use crate::keys;
use recarga_domain::legacy::{self, Anomaly, CustomerTerms, ImportedTopup, OldTopup};
use recarga_domain::{CatalogueRule, Currency, IpList, Money, ReferencePolicy, TopupStatus};
use recarga_store::legacy_source::{LegacyDb, OldCustomer, OldHistory, OldTotals};
use recarga_store::{
    CustomerImport, CustomerImportState, ImportedCustomer, LegacyHistoryRow, LegacyTopupRow, LegacyTotals, NewApiKey,
    Store,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The old system's per-top-up limits (LEGACY §3.4), kept as customer settings.
pub const OLD_MIN_TOPUP: Money = Money::major(10);
pub const OLD_MAX_TOPUP: Money = Money::major(500);
/// The old rolling 24 h limit, in MXN of face value.
pub const OLD_DAILY_LIMIT: Money = Money::major(200_000);
/// Customers the old system limited to the 14 XOOM amounts.
pub const OLD_XOOM_ONLY: [&str; 1] = ["ENVIADESPENSA_001"];

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The old database, with its password removed (for the report).
    pub source: String,
    pub dry_run: bool,
    pub customers: Option<Vec<String>>,
    /// `--fx-rate-for USD=17.80`: MXN per USD × 10⁶ for USD customers.
    pub usd_rate_micro: Option<i64>,
    /// `--currency ID=MXN`: customers whose balance is not USD.
    pub currency_for: BTreeMap<String, Currency>,
    pub merge: bool,
    /// The approved dry run's report (`--expect`).
    pub expect: Option<Value>,
    pub actor: String,
}

/// Where a long import is.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub customer: String,
    pub customer_index: usize,
    pub customers: usize,
    pub phase: &'static str,
    pub topups_done: u64,
    pub topups_total: u64,
}

/// One old status against what Recarga holds for it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusTie {
    pub old_status: String,
    pub ours_status: String,
    pub old_count: i64,
    pub ours_count: i64,
    pub old_face_mxn: String,
    pub ours_face_mxn: String,
    /// What the balance was charged (SUCCESS and FAILED rows only: an old
    /// PENDING row was never debited).
    pub old_charged: Option<String>,
    pub ours_charged: Option<String>,
    pub differs: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerReport {
    pub id: String,
    pub name: String,
    /// `imported`, `merged`, `would_import`, `would_merge`, `already_imported`, `refused`.
    pub action: &'static str,
    pub reason: Option<String>,
    pub currency: &'static str,
    pub fx_rate: Option<String>,
    pub fx_rate_source: Option<&'static str>,
    pub old_balance: String,
    /// The customer's opening `import` entry (planned, in a dry run).
    pub opening_entry: Option<String>,
    pub balance_after_import: Option<String>,
    pub old_credit_limit: Option<String>,
    pub credit_limit_imported: &'static str,
    pub active: bool,
    pub commission_bps: i64,
    pub catalogue: &'static str,
    pub reference_policy: &'static str,
    pub reference_policy_why: String,
    pub ip_allowlist: Option<Value>,
    pub keys_old: usize,
    pub keys_imported: i64,
    pub key_warnings: Vec<String>,
    pub topups: Vec<StatusTie>,
    /// Old PENDING rows now UNKNOWN with nothing held: for an operator.
    pub unknown_to_resolve: Value,
    pub anomalies: BTreeMap<Anomaly, usize>,
    pub skipped: Vec<Value>,
    pub history_old: BTreeMap<String, usize>,
    pub history_ours: BTreeMap<String, i64>,
    /// Digest of the old data this report saw (what `--expect` compares).
    pub fingerprint: String,
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub run: Option<String>,
    pub dry_run: bool,
    pub source: String,
    pub customers: Vec<CustomerReport>,
    /// Customers whose old data changed since the approved dry run.
    pub expectation_failed: Vec<String>,
    pub differences: usize,
    /// No difference, no refusal, no skipped row, expectation met.
    pub ok: bool,
}

/// One customer read and planned, before anything is written.
struct Planned {
    old: OldCustomer,
    totals: BTreeMap<String, OldTotals>,
    history: Vec<OldHistory>,
    terms: CustomerTerms,
    fx_source: Option<&'static str>,
    rows: Vec<(OldTopup, ImportedTopup)>,
    skipped: Vec<Value>,
    old_balance: i64,
    refusal: Option<String>,
    policy: (ReferencePolicy, String),
    keys: Vec<NewApiKey>,
    key_warnings: Vec<String>,
    ip: Option<(Option<String>, Value)>,
    fingerprint: String,
}

fn text(m: i64) -> String {
    Money(m).to_decimal_string()
}

fn cents_or_zero(t: Option<&str>) -> i64 {
    t.and_then(legacy::cents).map(|(c, _)| c).unwrap_or(0)
}

/// The old allow-list as Recarga's (comma-separated, IPv4-mapped addresses
/// unwrapped), with a note per entry that needed a change or was dropped.
fn plan_allowlist(old: &OldCustomer) -> Option<(Option<String>, Value)> {
    let raw = old.allowed_ips.as_deref()?;
    let entries: Vec<String> = serde_json::from_str::<Vec<Value>>(raw)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect();
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for e in &entries {
        let trimmed = e.trim();
        let unwrapped = trimmed.strip_prefix("::ffff:").unwrap_or(trimmed);
        if unwrapped != trimmed {
            notes.push(format!(
                "{trimmed}: an IPv4-mapped address (often the old proxy's), kept as {unwrapped}"
            ));
        }
        match IpList::parse(unwrapped) {
            Ok(_) => kept.push(unwrapped.to_string()),
            Err(e) => notes.push(format!("{trimmed}: dropped ({e})")),
        }
    }
    let list = (!kept.is_empty()).then(|| kept.join(","));
    let report = json!({
        "old": entries,
        "old_enabled": old.ip_whitelist_enabled.unwrap_or(false),
        "imported": list,
        "enabled": false,
        "notes": notes,
        "check": "imported disabled: confirm these are the clients' addresses (not a proxy's) behind \
                  RECARGA_TRUSTED_PROXIES, then enable it on the customer's page",
    });
    Some((list, report))
}

fn fingerprint(old: &OldCustomer, totals: &BTreeMap<String, OldTotals>, rows: usize, history: usize) -> String {
    let facts = json!({
        "customer": old,
        "key": old.api_key.as_deref().map(keys::digest),
        "totals": totals,
        "rows": rows,
        "history": history,
    });
    keys::digest(&facts.to_string())
}

async fn plan_customer(source: &LegacyDb, old: OldCustomer, opts: &ImportOptions, now: i64) -> crate::Result<Planned> {
    let transactions = source.transactions(&old.customer_id).await?;
    let totals = source.totals(&old.customer_id).await?;
    let history = source.history(&old.customer_id).await?;
    let currency = opts
        .currency_for
        .get(&old.customer_id)
        .copied()
        .unwrap_or(Currency::Usd);
    let latest_rate = transactions
        .iter()
        .rev()
        .find_map(|t| t.exchange_rate.as_deref().and_then(legacy::invert_rate));
    let (rate, fx_source) = match currency {
        Currency::Mxn => (None, None),
        Currency::Usd => match (opts.usd_rate_micro, latest_rate) {
            (Some(r), _) => (Some(r), Some("--fx-rate-for")),
            (None, Some(r)) => (Some(r), Some("latest old row")),
            (None, None) => (None, None),
        },
    };
    let terms = CustomerTerms {
        currency,
        fx_rate_micro: rate,
        now_ms: now,
    };
    let old_balance = cents_or_zero(old.current_balance.as_deref());
    let mut refusal = None;
    if currency == Currency::Usd && rate.is_none() {
        refusal = Some("a USD customer needs an FX rate: give --fx-rate-for USD=<MXN per USD>".to_string());
    } else if old_balance < 0 {
        refusal = Some(format!(
            "the old balance {} is negative (lost updates, LEGACY §4.4): credit it in the old system or import with \
             a credit limit set by hand",
            text(old_balance)
        ));
    }
    let mut rows = Vec::with_capacity(transactions.len());
    let mut skipped = Vec::new();
    for t in transactions {
        match legacy::plan_row(&t, &terms) {
            Ok(planned) => rows.push((t, planned)),
            Err(skip) => skipped.push(json!({ "transaction_id": t.transaction_id, "skip": skip })),
        }
    }
    mark_duplicate_references(&mut rows);
    let (policy, repeats, sample) =
        legacy::reference_policy(rows.iter().filter_map(|(o, _)| o.reference.as_deref()), 3);
    let why = match policy {
        ReferencePolicy::Free => format!(
            "{repeats} references repeat among its old top-ups (e.g. {}): the old system made a new top-up for each, \
             so its clients may reuse references",
            sample.join(", ")
        ),
        ReferencePolicy::Unique => "no reference repeats among its old top-ups".to_string(),
    };
    let mut keys_out = Vec::new();
    let mut key_warnings = Vec::new();
    if let Some(plain) = old.api_key.as_deref().filter(|k| !k.is_empty()) {
        match keys::import(&old.customer_id, plain, Some("imported from the old system".into())) {
            Ok((record, warnings)) => {
                keys_out.push(record);
                key_warnings.extend(warnings);
                key_warnings
                    .push("published in the old guides and admin output: treat it as exposed and rotate it".into());
            }
            Err(e) => key_warnings.push(format!("not imported: {e}")),
        }
    }
    let fp = fingerprint(&old, &totals, rows.len() + skipped.len(), history.len());
    Ok(Planned {
        ip: plan_allowlist(&old),
        old,
        totals,
        history,
        terms,
        fx_source,
        rows,
        skipped,
        old_balance,
        refusal,
        policy: (policy, why),
        keys: keys_out,
        key_warnings,
        fingerprint: fp,
    })
}

fn mark_duplicate_references(rows: &mut [(OldTopup, ImportedTopup)]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, t) in rows.iter() {
        if let Some(r) = &t.reference {
            *counts.entry(r.clone()).or_default() += 1;
        }
    }
    for (_, t) in rows.iter_mut() {
        if t.reference.as_ref().is_some_and(|r| counts[r] > 1) {
            t.anomalies.push(Anomaly::DuplicateReference);
        }
    }
}

fn store_row(old: &OldTopup, t: &ImportedTopup) -> LegacyTopupRow {
    let legacy = json!({
        "row": old,
        "anomalies": t.anomalies,
    });
    LegacyTopupRow {
        id: t.id.clone(),
        number: t.number,
        reference: t.reference.clone().unwrap_or_else(|| t.id.clone()),
        phone: t.phone.as_str().to_string(),
        face_value: t.face_value.0,
        status: t.status.as_str(),
        legacy_price: t.charge.0,
        fx_rate_micro: t.fx_rate_micro,
        upstream_trans_id: t.upstream_trans_id.clone(),
        created_at: t.created_at,
        completed_at: t.completed_at,
        legacy: legacy.to_string(),
    }
}

/// Runs an import (or a dry run) and returns its tie-out report.
pub async fn import_legacy(
    store: &dyn Store,
    source: &LegacyDb,
    opts: &ImportOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> crate::Result<ImportReport> {
    let now = recarga_store::now_ms();
    let mut old_customers = source.customers().await?;
    if let Some(wanted) = &opts.customers {
        if let Some(missing) = wanted
            .iter()
            .find(|w| !old_customers.iter().any(|c| &c.customer_id == *w))
        {
            return Err(crate::ServiceError::invalid(
                "customers",
                format!("no customer {missing} in the old database"),
            ));
        }
        old_customers.retain(|c| wanted.contains(&c.customer_id));
    }
    let count = old_customers.len();
    let mut planned = Vec::with_capacity(count);
    for (i, old) in old_customers.into_iter().enumerate() {
        progress(&Progress {
            customer: old.customer_id.clone(),
            customer_index: i + 1,
            customers: count,
            phase: "read",
            topups_done: 0,
            topups_total: 0,
        });
        planned.push(plan_customer(source, old, opts, now).await?);
    }
    shared_key_warnings(&mut planned);
    let expectation_failed = check_expectation(opts.expect.as_ref(), &planned);
    let write = !opts.dry_run && expectation_failed.is_empty();
    let run = if write {
        let id = format!("imp_{}", uuid::Uuid::now_v7().simple());
        store.start_import_run(&id, &opts.source).await?;
        Some(id)
    } else {
        None
    };
    let mut reports = Vec::with_capacity(count);
    for (i, p) in planned.iter().enumerate() {
        let ctx = WriteCtx {
            store,
            run: run.as_deref(),
            opts,
            index: i + 1,
            count,
            progress,
        };
        reports.push(import_one(&ctx, p).await?);
    }
    let differences = reports.iter().map(|r| r.differences.len()).sum();
    let ok = differences == 0 && expectation_failed.is_empty();
    let report = ImportReport {
        run: run.clone(),
        dry_run: opts.dry_run,
        source: opts.source.clone(),
        customers: reports,
        expectation_failed,
        differences,
        ok,
    };
    if let Some(run) = &run {
        store
            .finish_import_run(run, &serde_json::to_string(&report).unwrap_or_default())
            .await?;
    }
    Ok(report)
}

/// An old key that opens more than one old account: imported for each, but
/// it only opens one together with `x-customer-id`.
fn shared_key_warnings(planned: &mut [Planned]) {
    let mut owners: HashMap<String, Vec<String>> = HashMap::new();
    for p in planned.iter() {
        for k in &p.keys {
            owners
                .entry(k.digest.clone())
                .or_default()
                .push(p.old.customer_id.clone());
        }
    }
    for p in planned.iter_mut() {
        let shared: Vec<String> = p
            .keys
            .iter()
            .flat_map(|k| owners[&k.digest].iter().filter(|o| **o != p.old.customer_id).cloned())
            .collect();
        if !shared.is_empty() {
            p.key_warnings.push(format!(
                "the same key is also {}'s in the old database: rotate both",
                shared.join(", ")
            ));
        }
    }
}

/// Customers whose fingerprint is not the approved dry run's (an empty list
/// when there is no expectation, or it holds).
fn check_expectation(expect: Option<&Value>, planned: &[Planned]) -> Vec<String> {
    let Some(expect) = expect else {
        return Vec::new();
    };
    let approved: HashMap<&str, &str> = expect["customers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| Some((c["id"].as_str()?, c["fingerprint"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut failed: Vec<String> = planned
        .iter()
        .filter(|p| approved.get(p.old.customer_id.as_str()) != Some(&p.fingerprint.as_str()))
        .map(|p| p.old.customer_id.clone())
        .collect();
    for id in approved.keys() {
        if !planned.iter().any(|p| p.old.customer_id == *id) {
            failed.push((*id).to_string());
        }
    }
    failed.sort();
    failed
}

struct WriteCtx<'a> {
    store: &'a dyn Store,
    run: Option<&'a str>,
    opts: &'a ImportOptions,
    index: usize,
    count: usize,
    progress: &'a (dyn Fn(&Progress) + Send + Sync),
}

fn imported_customer(p: &Planned) -> ImportedCustomer {
    let id = &p.old.customer_id;
    ImportedCustomer {
        id: id.clone(),
        name: p
            .old
            .company_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| id.clone()),
        currency: p.terms.currency,
        fx_rate_micro: p.terms.fx_rate_micro,
        min_topup: OLD_MIN_TOPUP,
        max_topup: OLD_MAX_TOPUP,
        daily_limit: Some(OLD_DAILY_LIMIT),
        catalogue: if OLD_XOOM_ONLY.contains(&id.as_str()) {
            CatalogueRule::XoomOnly
        } else {
            CatalogueRule::OpenRange
        },
        active: p.old.is_active.unwrap_or(true),
        commission_bps: cents_or_zero(p.old.commission_percentage.as_deref()).clamp(0, 10_000),
        reference_policy: p.policy.0,
        ip_allowlist: p.ip.as_ref().and_then(|(list, _)| list.clone()),
    }
}

/// Decides what happens to one planned customer, writes it when it should,
/// and ties it out.
async fn import_one(ctx: &WriteCtx<'_>, p: &Planned) -> crate::Result<CustomerReport> {
    let id = p.old.customer_id.clone();
    let state = ctx.store.customer_import_state(&id).await?;
    let (action, reason): (&'static str, Option<String>) = match (&state, &p.refusal) {
        (CustomerImportState::Imported { run }, _) => (
            "already_imported",
            Some(format!("imported by {run}: nothing new written")),
        ),
        (_, Some(why)) => ("refused", Some(why.clone())),
        (CustomerImportState::Existing { traffic: true }, _) if !ctx.opts.merge => (
            "refused",
            Some(
                "this customer id already has Recarga traffic: give --merge to add the old balance and history to it"
                    .into(),
            ),
        ),
        (CustomerImportState::Existing { .. }, _) if ctx.opts.dry_run || ctx.run.is_none() => ("would_merge", None),
        (CustomerImportState::Existing { .. }, _) => ("merged", None),
        (CustomerImportState::Absent, _) if ctx.opts.dry_run || ctx.run.is_none() => ("would_import", None),
        (CustomerImportState::Absent, _) => ("imported", None),
    };
    if matches!(action, "imported" | "merged") {
        write_customer(ctx, p, matches!(state, CustomerImportState::Existing { .. })).await?;
    }
    let ours = match action {
        "imported" | "merged" | "already_imported" => Some(ctx.store.legacy_totals(&id).await?),
        "would_import" | "would_merge" => Some(planned_totals(p)),
        _ => None,
    };
    Ok(tie_out(p, action, reason, ours.as_ref()))
}

async fn write_customer(ctx: &WriteCtx<'_>, p: &Planned, merge: bool) -> crate::Result<()> {
    let run = ctx.run.unwrap_or_default();
    let import = CustomerImport {
        run_id: run.to_string(),
        actor: ctx.opts.actor.clone(),
        customer: imported_customer(p),
        opening_balance: Money(p.old_balance),
        opening_reason: format!(
            "opening balance from the old system: {} ({}), import run {run}",
            text(p.old_balance),
            p.terms.currency.as_str()
        ),
        merge,
        keys: p.keys.clone(),
        topups: p.rows.iter().map(|(o, t)| store_row(o, t)).collect(),
        history: p
            .history
            .iter()
            .map(|h| LegacyHistoryRow {
                kind: h.kind,
                source_id: h.source_id.clone(),
                amount: h.amount.clone(),
                detail: h.detail.clone(),
                created_at: h.created_at_ms,
            })
            .collect(),
    };
    let total = import.topups.len() as u64;
    let report = |done: u64| {
        (ctx.progress)(&Progress {
            customer: p.old.customer_id.clone(),
            customer_index: ctx.index,
            customers: ctx.count,
            phase: "write",
            topups_done: done,
            topups_total: total,
        })
    };
    ctx.store.import_customer(&import, &report).await?;
    Ok(())
}

/// What a dry run would write, in the shape the store reads back.
fn planned_totals(p: &Planned) -> LegacyTotals {
    let mut totals = LegacyTotals {
        balance: p.old_balance,
        opening: Some(p.old_balance),
        keys: p.keys.len() as i64,
        ..LegacyTotals::default()
    };
    for (_, t) in &p.rows {
        let e = totals.topups.entry(t.status.as_str().to_string()).or_default();
        e.0 += 1;
        e.1 += t.face_value.0;
        e.2 += t.charge.0;
    }
    for h in &p.history {
        *totals.history.entry(h.kind.to_string()).or_default() += 1;
    }
    totals
}

/// The old status a Recarga status of an imported row came from.
fn ours_status_of(old: &str) -> &'static str {
    match old.trim().to_ascii_uppercase().as_str() {
        "SUCCESS" => "SUCCESS",
        "PENDING" | "PROCESSING" => "UNKNOWN",
        "FAILED" => "FAILED",
        _ => "(skipped)",
    }
}

fn status_ties(p: &Planned, ours: Option<&LegacyTotals>, differences: &mut Vec<String>) -> Vec<StatusTie> {
    let mut ties = Vec::new();
    // Old statuses that map to one of ours, summed by our status (PENDING
    // and PROCESSING both become UNKNOWN).
    let mut by_ours: BTreeMap<&'static str, (Vec<String>, i64, i64, i64)> = BTreeMap::new();
    for (old_status, t) in &p.totals {
        let e = by_ours.entry(ours_status_of(old_status)).or_default();
        e.0.push(if old_status.is_empty() {
            "(none)".into()
        } else {
            old_status.clone()
        });
        e.1 += t.count;
        e.2 += cents_or_zero(Some(&t.face));
        e.3 += cents_or_zero(Some(&t.charged));
    }
    for (status, (olds, count, face, charged)) in by_ours {
        let (n, f, c) = ours.and_then(|o| o.topups.get(status)).copied().unwrap_or_default();
        let charge_counts = matches!(status, "SUCCESS" | "FAILED");
        let differs = count != n || face != f || (charge_counts && charged != c);
        if differs {
            differences.push(format!(
                "{}: old {} row(s) {} MXN face, ours {status} {n} row(s) {} MXN face",
                olds.join("+"),
                count,
                text(face),
                text(f)
            ));
        }
        ties.push(StatusTie {
            old_status: olds.join("+"),
            ours_status: status.to_string(),
            old_count: count,
            ours_count: n,
            old_face_mxn: text(face),
            ours_face_mxn: text(f),
            old_charged: charge_counts.then(|| text(charged)),
            ours_charged: charge_counts.then(|| text(c)),
            differs,
        });
    }
    ties
}

fn tie_out(p: &Planned, action: &'static str, reason: Option<String>, ours: Option<&LegacyTotals>) -> CustomerReport {
    let mut differences = Vec::new();
    if action == "refused" {
        differences.push(format!("refused: {}", reason.clone().unwrap_or_default()));
    }
    if let Some(o) = ours {
        if o.opening != Some(p.old_balance) {
            differences.push(format!(
                "old balance {} but the opening entry is {}",
                text(p.old_balance),
                o.opening.map(text).unwrap_or_else(|| "missing".into())
            ));
        }
        if action != "already_imported" && action != "merged" && action != "would_merge" && o.balance != p.old_balance {
            differences.push(format!(
                "old balance {} but ours is {}",
                text(p.old_balance),
                text(o.balance)
            ));
        }
    }
    for s in &p.skipped {
        differences.push(format!("row not imported: {s}"));
    }
    let topups = status_ties(p, ours, &mut differences);
    let mut anomalies: BTreeMap<Anomaly, usize> = BTreeMap::new();
    for a in p.rows.iter().flat_map(|(_, t)| t.anomalies.iter()) {
        *anomalies.entry(*a).or_default() += 1;
    }
    let unknown: Vec<&ImportedTopup> = p
        .rows
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.status == TopupStatus::Unknown)
        .collect();
    let mut history_old: BTreeMap<String, usize> = BTreeMap::new();
    for h in &p.history {
        *history_old.entry(h.kind.to_string()).or_default() += 1;
    }
    let customer = imported_customer(p);
    CustomerReport {
        id: p.old.customer_id.clone(),
        name: customer.name.clone(),
        action,
        reason,
        currency: p.terms.currency.as_str(),
        fx_rate: p
            .terms
            .fx_rate_micro
            .map(|r| format!("{}.{:06}", r / 1_000_000, r % 1_000_000)),
        fx_rate_source: p.fx_source,
        old_balance: text(p.old_balance),
        opening_entry: ours.and_then(|o| o.opening).map(text),
        balance_after_import: ours.map(|o| text(o.balance)),
        old_credit_limit: p.old.credit_limit.clone(),
        credit_limit_imported: "0.00 (the old credit limit was never enforced)",
        active: customer.active,
        commission_bps: customer.commission_bps,
        catalogue: customer.catalogue.as_str(),
        reference_policy: p.policy.0.as_str(),
        reference_policy_why: p.policy.1.clone(),
        ip_allowlist: p.ip.as_ref().map(|(_, r)| r.clone()),
        keys_old: usize::from(p.old.api_key.as_deref().is_some_and(|k| !k.is_empty())),
        keys_imported: ours.map(|o| o.keys).unwrap_or(0),
        key_warnings: p.key_warnings.clone(),
        topups,
        unknown_to_resolve: json!({
            "count": unknown.len(),
            "face_mxn": text(unknown.iter().map(|t| t.face_value.0).sum()),
            "debit_if_success": text(unknown.iter().map(|t| t.charge.0).sum()),
            "ids": unknown.iter().take(20).map(|t| t.id.clone()).collect::<Vec<_>>(),
            "what_to_do": "never sent by Recarga: ask Latcom (dist_transid = the old reference, else the id) or the \
                           carrier statement, then `recarga topup resolve`; FAILED moves no money, SUCCESS debits the \
                           price",
        }),
        anomalies,
        skipped: p.skipped.clone(),
        history_old,
        history_ours: ours.map(|o| o.history.clone()).unwrap_or_default(),
        fingerprint: p.fingerprint.clone(),
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(ips: &str) -> OldCustomer {
        OldCustomer {
            customer_id: "HAZ_001".into(),
            allowed_ips: Some(ips.into()),
            ip_whitelist_enabled: Some(true),
            ..OldCustomer::default()
        }
    }

    #[test]
    fn allowlists_are_unwrapped_checked_and_imported_disabled() {
        let (list, report) = plan_allowlist(&old(r#"["::ffff:10.0.0.7", "203.0.113.5", "nonsense"]"#)).unwrap();
        assert_eq!(list.as_deref(), Some("10.0.0.7,203.0.113.5"));
        assert_eq!(report["enabled"], false);
        assert_eq!(report["old_enabled"], true);
        assert_eq!(report["notes"].as_array().map(Vec::len), Some(2));
        let (list, _) = plan_allowlist(&old("[]")).unwrap();
        assert_eq!(list, None);
    }

    #[test]
    fn old_statuses_map_to_ours() {
        assert_eq!(ours_status_of("SUCCESS"), "SUCCESS");
        assert_eq!(ours_status_of("PENDING"), "UNKNOWN");
        assert_eq!(ours_status_of("processing"), "UNKNOWN");
        assert_eq!(ours_status_of("FAILED"), "FAILED");
        assert_eq!(ours_status_of("WEIRD"), "(skipped)");
    }
}
