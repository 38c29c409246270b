//! `recarga reconcile …`: statements against our top-ups (issue 16).
//!
//! `import` reads a provider's or carrier's statement by its source's format
//! (built in: `latcom`, `carrier`; others from `--formats F.json`), matches
//! and classifies it, and prints the run (`run_id`, `classes`, totals per
//! class, day and month, rejects with line numbers, proposals). On a
//! terminal it draws its progress on stderr. `show` and `list` read runs
//! back; `pack` writes a run's dispute pack (zip); `apply` settles the run's proposals through the ordinary
//! resolution, and only when an operator (`--actor`) asks, with a reason.

use super::refused;
use clap::Subcommand;
use recarga_domain::reconcile::{Coverage, StatementKind};
use recarga_service::reconcile::{self, ApplyRequest, ImportRequest, Progress};
use recarga_store::Store;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Rows `show` prints unless told.
pub const SHOW_ROWS_DEFAULT: i64 = 100;

#[derive(Debug, Subcommand)]
pub enum ReconcileCmd {
    /// Import a statement and reconcile it; prints the run as JSON.
    Import {
        /// `latcom`, `carrier`, or a format defined in `--formats`.
        #[arg(long)]
        source: String,
        #[arg(long)]
        file: PathBuf,
        /// A JSON file with more formats (one, or a list).
        #[arg(long)]
        formats: Option<PathBuf>,
        /// The price crosswalk, JSON: `{"entries": [{"source","product","amount","face_value"}]}`.
        #[arg(long)]
        crosswalk: Option<PathBuf>,
        /// Override the format's `full` / `exceptions`.
        #[arg(long, value_parser = ["full", "exceptions"])]
        kind: Option<String>,
        /// First business day the statement covers (YYYY-MM-DD); default: its first line's.
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last business day it covers; default: its last line's.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Half-width of the time window for phone + amount matches, minutes.
        #[arg(long, default_value_t = 10)]
        window_min: i64,
        #[arg(long, default_value_t = super::default_actor())]
        actor: String,
    },
    /// Recent runs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One run: its summary, rows (of one class, or all) and proposals.
    Show {
        #[arg(long)]
        run: String,
        #[arg(long)]
        class: Option<String>,
        #[arg(long, default_value_t = SHOW_ROWS_DEFAULT)]
        limit: i64,
    },
    /// Apply a run's proposals (all, or those of `--topup`), each through the
    /// ordinary resolution, audited.
    Apply {
        #[arg(long)]
        run: String,
        /// Only this top-up's proposal (repeatable).
        #[arg(long)]
        topup: Vec<String>,
        /// The operator applying them.
        #[arg(long)]
        actor: String,
        #[arg(long)]
        reason: String,
    },
    /// Write a run's dispute pack (zip: summary, disputed lines with our
    /// evidence, raw exchanges); prints its summary.
    Pack {
        #[arg(long)]
        run: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The built-in formats, as JSON (a start for your own `--formats` file).
    Formats,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_text(path: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    path.map(|p| read(p).and_then(|b| String::from_utf8(b).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))))
        .transpose()
}

/// Progress on stderr, redrawn in place, only on a terminal.
fn progress_printer(total_rows: u64) -> impl Fn(Progress) + Sync {
    let tty = std::io::stderr().is_terminal();
    move |p: Progress| {
        if !tty {
            return;
        }
        let text = match p {
            Progress::Reading(rows) => {
                let pct = (rows * 100).checked_div(total_rows).unwrap_or(100).min(100);
                let bar = "#".repeat((pct / 4) as usize);
                format!("reading  [{bar:<25}] {pct:>3}% {rows} rows")
            }
            Progress::Matching { lines, topups } => format!("matching {lines} lines against {topups} top-ups"),
            Progress::Saving { rows } => format!("saving   {rows} classified rows"),
        };
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{text}");
        if matches!(p, Progress::Saving { .. }) {
            let _ = writeln!(err);
        }
    }
}

/// Runs one `reconcile` command.
pub(super) async fn run(store: &dyn Store, cmd: ReconcileCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        ReconcileCmd::Import {
            source,
            file,
            formats,
            crosswalk,
            kind,
            from,
            to,
            window_min,
            actor,
        } => {
            let format = reconcile::format_for(&source, read_text(formats.as_ref())?.as_deref())
                .map_err(|e| refused(e, "format"))?;
            let crosswalk = reconcile::crosswalk_from(read_text(crosswalk.as_ref())?.as_deref())
                .map_err(|e| refused(e, "crosswalk"))?;
            let bytes = read(&file)?;
            let coverage = match (from, to) {
                (Some(from), Some(to)) => Some(Coverage { from, to }),
                (None, None) => None,
                _ => anyhow::bail!("--from and --to go together"),
            };
            let rows = bytes.iter().filter(|&&b| b == b'\n').count().saturating_sub(1) as u64;
            let req = ImportRequest {
                source,
                format,
                crosswalk,
                bytes,
                file_name: file.file_name().map(|n| n.to_string_lossy().into_owned()),
                kind: kind.as_deref().and_then(StatementKind::parse),
                coverage,
                window_ms: window_min.saturating_mul(60_000),
                actor,
            };
            reconcile::import(store, req, &progress_printer(rows.max(1)))
                .await
                .map_err(|e| refused(e, "statement"))?
        }
        ReconcileCmd::List { limit } => {
            let runs = store.reconcile_runs(limit).await?;
            json!({ "runs": runs.iter().map(reconcile::run_summary).collect::<Vec<_>>() })
        }
        ReconcileCmd::Show { run, class, limit } => {
            let record = store
                .reconcile_run(&run)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no reconciliation run {run}"))?;
            let rows = store.reconcile_rows(&run, class.as_deref(), 0, limit).await?;
            json!({
                "run": reconcile::run_summary(&record),
                "rows": rows.iter().map(reconcile::row_json).collect::<Vec<_>>(),
                "proposals": store.reconcile_proposals(&run).await?,
            })
        }
        ReconcileCmd::Apply {
            run,
            topup,
            actor,
            reason,
        } => {
            let req = ApplyRequest {
                run_id: run,
                topup_ids: (!topup.is_empty()).then_some(topup),
                actor,
                reason,
            };
            reconcile::apply(store, &req, &|_| {})
                .await
                .map_err(|e| refused(e, "reconciliation run"))?
        }
        ReconcileCmd::Pack { run, out } => {
            let (bytes, summary) = recarga_service::dispute::pack(store, &run)
                .await
                .map_err(|e| refused(e, "reconciliation run"))?;
            std::fs::write(&out, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            json!({ "out": out.display().to_string(), "bytes": bytes.len(), "summary": summary })
        }
        ReconcileCmd::Formats => {
            let formats: Vec<_> = ["latcom", "carrier"]
                .iter()
                .filter_map(|n| recarga_domain::reconcile::StatementFormat::builtin(n))
                .collect();
            json!({ "formats": formats })
        }
    })
}
