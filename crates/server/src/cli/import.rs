//! `recarga import legacy` and `recarga export legacy`: moving from the old
//! system and, if it must be, back (MIGRATING.md is the runbook).
//!
//! The import prints its tie-out report (JSON, or a table with `--table`)
//! and exits 1 when any balance or sum differs by a centavo, a customer is
//! refused, a row could not be imported, or the old data changed since the
//! approved dry run (`--expect`). Progress goes to stderr: a bar on a
//! terminal, one JSON line per second otherwise.

use super::default_actor;
use clap::{Args, Subcommand};
use recarga_domain::Currency;
use recarga_service::import::{ImportOptions, ImportReport, Progress, import_legacy};
use recarga_store::Store;
use recarga_store::legacy_source::LegacyDb;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Customers, keys, balances and history from the old system's
    /// PostgreSQL database (read only; it is never written).
    Legacy(LegacyImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Balances, top-ups since the cut-over and resolved old rows, as SQL
    /// for the old system's database (a rollback; see MIGRATING.md).
    Legacy(LegacyExportArgs),
}

#[derive(Debug, Args)]
pub struct LegacyExportArgs {
    /// Where to write the SQL script.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these customer ids (comma-separated); default: every imported customer.
    #[arg(long, value_delimiter = ',')]
    pub customers: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct LegacyImportArgs {
    /// The old database: `postgres://user:password@host:port/db`.
    #[arg(long)]
    pub from: String,
    /// Print the report and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these old customer ids (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub customers: Option<Vec<String>>,
    /// `USD=17.80`: MXN per USD for USD customers (else the latest old row's rate).
    #[arg(long = "fx-rate-for", value_parser = fx_rate_for)]
    pub fx_rate_for: Vec<(Currency, i64)>,
    /// `ID=MXN`: a customer whose old balance is in MXN (the default is USD).
    #[arg(long = "currency", value_parser = currency_for)]
    pub currency: Vec<(String, Currency)>,
    /// Add the old balance and history to a customer that already has Recarga traffic.
    #[arg(long)]
    pub merge: bool,
    /// The approved dry run's report: refuse to write if the old data changed since.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Also write the JSON report to this file (e.g. the dry run to approve).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print a readable table instead of JSON.
    #[arg(long)]
    pub table: bool,
    #[arg(long, default_value_t = default_actor())]
    pub actor: String,
}

fn fx_rate_for(text: &str) -> Result<(Currency, i64), String> {
    let (cur, rate) = text.split_once('=').ok_or("use CURRENCY=RATE, e.g. USD=17.80")?;
    let cur = super::currency(cur)?;
    if cur != Currency::Usd {
        return Err("only USD balances need a rate".into());
    }
    Ok((cur, super::fx_rate(rate)?))
}

fn currency_for(text: &str) -> Result<(String, Currency), String> {
    let (id, cur) = text.split_once('=').ok_or("use CUSTOMER_ID=MXN")?;
    Ok((id.to_string(), super::currency(cur)?))
}

/// The URL without its password, for reports and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Renders progress on stderr: a bar on a terminal, else a JSON line at
/// most once a second (and at each customer's start).
struct ProgressOut {
    bar: Option<indicatif::ProgressBar>,
    last: Mutex<(Instant, String)>,
}

impl ProgressOut {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} top-ups ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        ProgressOut {
            bar,
            last: Mutex::new((Instant::now() - Duration::from_secs(2), String::new())),
        }
    }

    fn show(&self, p: &Progress) {
        let label = format!("{} {}/{} {}", p.phase, p.customer_index, p.customers, p.customer);
        if let Some(bar) = &self.bar {
            bar.set_message(label);
            bar.set_length(p.topups_total);
            bar.set_position(p.topups_done);
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.0.elapsed() >= Duration::from_secs(1) || last.1 != label {
            *last = (Instant::now(), label);
            let line = serde_json::json!({ "progress": p });
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Writes the rollback script, unless a top-up is still open (exit 1, the
/// open ids listed, nothing written).
pub(super) async fn export(store: &dyn Store, cmd: ExportCmd) -> anyhow::Result<(Value, i32)> {
    let ExportCmd::Legacy(args) = cmd;
    let (sql, summary) = recarga_service::export::export_legacy(store, args.customers.as_deref())
        .await
        .map_err(|e| super::refused(e, "customer"))?;
    let mut out = serde_json::to_value(&summary)?;
    if !summary.open.is_empty() {
        out["refused"] = Value::String(
            "top-ups are still open: resolve them (recarga topup unresolved) and stop the workers before a rollback"
                .into(),
        );
        return Ok((out, 1));
    }
    std::fs::write(&args.out, sql)?;
    out["written"] = Value::String(args.out.display().to_string());
    Ok((out, 0))
}

pub(super) async fn run(store: &dyn Store, cmd: ImportCmd) -> anyhow::Result<(Value, i32)> {
    let ImportCmd::Legacy(args) = cmd;
    let expect = match &args.expect {
        Some(path) => Some(serde_json::from_str::<Value>(&std::fs::read_to_string(path)?)?),
        None => None,
    };
    let source = LegacyDb::connect(&args.from)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the old database {}: {e}", redact(&args.from)))?;
    let opts = ImportOptions {
        source: redact(&args.from),
        dry_run: args.dry_run,
        customers: args.customers,
        usd_rate_micro: args
            .fx_rate_for
            .iter()
            .find(|(c, _)| *c == Currency::Usd)
            .map(|(_, r)| *r),
        currency_for: args.currency.into_iter().collect(),
        merge: args.merge,
        expect,
        actor: args.actor,
    };
    let out = ProgressOut::new();
    let report = import_legacy(store, &source, &opts, &|p| out.show(p))
        .await
        .map_err(|e| super::refused(e, "customer"))?;
    out.finish();
    let json = serde_json::to_value(&report)?;
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    let code = if report.ok { 0 } else { 1 };
    Ok((
        if args.table {
            Value::String(table(&report))
        } else {
            json
        },
        code,
    ))
}

/// The report as a table for people.
pub fn table(r: &ImportReport) -> String {
    let mut out = String::new();
    let title = if r.dry_run {
        "DRY RUN: nothing written"
    } else {
        "IMPORT"
    };
    out.push_str(&format!(
        "{title} from {} (run {})\n",
        r.source,
        r.run.as_deref().unwrap_or("-")
    ));
    if !r.expectation_failed.is_empty() {
        out.push_str(&format!(
            "REFUSED: the old data changed since the approved dry run for {}\n",
            r.expectation_failed.join(", ")
        ));
    }
    for c in &r.customers {
        out.push_str(&format!(
            "\n{} ({}) {}: {}{}\n",
            c.id,
            c.currency,
            c.name,
            c.action,
            c.reason.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
        ));
        out.push_str(&format!(
            "  balance     old {:>14}  opening entry {:>14}  now {:>14}\n",
            c.old_balance,
            c.opening_entry.as_deref().unwrap_or("-"),
            c.balance_after_import.as_deref().unwrap_or("-")
        ));
        out.push_str(&format!(
            "  {:<20} {:>8} {:>8} {:>16} {:>16} {:>14} {:>14}\n",
            "status old -> ours", "old n", "ours n", "old face MXN", "ours face MXN", "old charged", "ours charged"
        ));
        for t in &c.topups {
            out.push_str(&format!(
                "  {:<20} {:>8} {:>8} {:>16} {:>16} {:>14} {:>14}{}\n",
                format!("{} -> {}", t.old_status, t.ours_status),
                t.old_count,
                t.ours_count,
                t.old_face_mxn,
                t.ours_face_mxn,
                t.old_charged.as_deref().unwrap_or("-"),
                t.ours_charged.as_deref().unwrap_or("-"),
                if t.differs { "  DIFFERS" } else { "" }
            ));
        }
        out.push_str(&format!(
            "  keys {} imported; reference policy {}; unknown to resolve {}\n",
            c.keys_imported, c.reference_policy, c.unknown_to_resolve["count"]
        ));
        for a in &c.anomalies {
            out.push_str(&format!("  anomaly {:?}: {}\n", a.0, a.1));
        }
        for d in &c.differences {
            out.push_str(&format!("  DIFFERENCE {d}\n"));
        }
    }
    out.push_str(&format!(
        "\n{} difference(s): {}\n",
        r.differences,
        if r.ok { "tied out" } else { "NOT tied out" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_report() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/old"),
            "postgres://app:***@db:5432/old"
        );
        assert_eq!(redact("postgres://db/old"), "postgres://db/old");
    }

    #[test]
    fn flags_parse() {
        assert_eq!(fx_rate_for("USD=17.80"), Ok((Currency::Usd, 17_800_000)));
        assert!(fx_rate_for("MXN=1").is_err());
        assert!(fx_rate_for("17.80").is_err());
        assert_eq!(currency_for("HAZ_001=MXN"), Ok(("HAZ_001".into(), Currency::Mxn)));
    }
}
