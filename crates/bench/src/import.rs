//! `recarga-bench --import-legacy N`: how long `recarga import legacy` takes
//! to bring over an old installation whose busiest customer has N
//! transactions (the old-schema database of `recarga_testkit::legacy`,
//! with its traps), and proof that it tied out.
//!
//! It creates the old database (`CREATE DATABASE recarga_bench_old_<id>`
//! and the fixture through `psql`), a fresh Recarga database of the chosen
//! engine, migrates it, then times one `recarga import legacy` (wall clock,
//! the child's own work included) and checks that it exited 0 with an `ok`
//! report, that every old row arrived, and that `recarga audit` is clean.
//! Both databases are dropped afterwards.

use crate::procs::{self, Backend};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest the import may take before the run fails.
const IMPORT_WITHIN: Duration = Duration::from_secs(1800);

fn psql(url: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qAtX", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!("psql {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Drops the old database when the run ends, also on an error.
struct OldDb {
    admin: String,
    name: String,
}

impl Drop for OldDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)],
        );
    }
}

/// Runs the measurement; returns its report and whether every check held.
pub async fn run(bin: &Path, pg_admin: &str, recarga_pg: Option<&str>, rows: i64) -> Result<(Value, bool)> {
    procs::require_loopback("--database-url", pg_admin)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let old = OldDb {
        admin: pg_admin.to_string(),
        name: format!("recarga_bench_old_{}", &id[..16]),
    };
    psql(pg_admin, &["-c", &format!("CREATE DATABASE {}", old.name)])?;
    let old_url = procs::with_database(pg_admin, &old.name)?;
    let fixture = std::env::temp_dir().join(format!("recarga-bench-old-{}.sql", &id[..12]));
    std::fs::write(
        &fixture,
        format!(
            "{}{}",
            recarga_testkit::legacy::OLD_SCHEMA,
            recarga_testkit::legacy::old_data(rows)
        ),
    )?;
    let filled = psql(&old_url, &["-f", &fixture.to_string_lossy()]);
    let _ = std::fs::remove_file(&fixture);
    filled?;

    let backend = Backend::create(recarga_pg, None)?;
    let migrate = procs::cli(bin, &backend, &["migrate"], IMPORT_WITHIN).await?;
    if migrate.code != Some(0) {
        bail!("recarga migrate failed: {}", migrate.stderr);
    }
    let args = [
        "import",
        "legacy",
        "--from",
        &old_url,
        "--fx-rate-for",
        "USD=17.80",
        "--currency",
        "HAZ_001=MXN",
    ];
    let began = Instant::now();
    let import = procs::cli(bin, &backend, &args, IMPORT_WITHIN).await?;
    let seconds = began.elapsed().as_secs_f64();
    let audit_began = Instant::now();
    let audit = procs::cli(bin, &backend, &["audit"], IMPORT_WITHIN).await?;
    let audit_s = audit_began.elapsed().as_secs_f64();

    let report = &import.json;
    let imported_rows: i64 = report["customers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .flat_map(|c| c["topups"].as_array().cloned().unwrap_or_default())
                .map(|t| t["ours_count"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    // The fixture: `rows` for ENVIADESPENSA_001 and 5 for HAZ_001.
    let expected_rows = rows + 5;
    let checks = json!([
        { "name": "import exited 0", "ok": import.code == Some(0), "detail": import.stderr.lines().last().unwrap_or("") },
        { "name": "report ok (tied out to the centavo)", "ok": report["ok"] == true, "detail": format!("{} difference(s)", report["differences"]) },
        { "name": "every old row imported", "ok": imported_rows == expected_rows, "detail": format!("{imported_rows} of {expected_rows}") },
        { "name": "recarga audit clean", "ok": audit.code == Some(0), "detail": format!("{:.1} s", audit_s) },
    ]);
    let ok = checks.as_array().is_some_and(|cs| cs.iter().all(|c| c["ok"] == true));
    let out = json!({
        "scenario": "import-legacy",
        "engine": if recarga_pg.is_some() { "postgres" } else { "sqlite" },
        "old_transactions": expected_rows,
        "seconds": (seconds * 100.0).round() / 100.0,
        "rows_per_s": (expected_rows as f64 / seconds).round(),
        "audit_seconds": (audit_s * 100.0).round() / 100.0,
        "checks": checks,
    });
    Ok((out, ok))
}
