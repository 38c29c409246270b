//! `recarga export legacy`: the way back. Writes, in the old schema's terms,
//! what the old system needs to resume after a rollback: each imported
//! customer's balance now, the top-ups Recarga delivered since the cut-over
//! (as the old sync route stored them: `amount` = what the balance was
//! charged, `amount_mxn`, `amount_usd` and `exchange_rate` in USD per MXN),
//! and the final status of the old PENDING rows an operator resolved.
//!
//! It is one SQL script in one transaction, safe to apply twice (balances are
//! set, rows are inserted `ON CONFLICT DO NOTHING`). Failed top-ups are not
//! written (the old system never stored one). It refuses while a top-up of
//! these customers is still open (PENDING, PROCESSING or UNKNOWN): the old
//! system would not know it was maybe delivered, and could send it again.

use recarga_domain::{Currency, Money, TopupStatus};
use recarga_store::{Customer, Store, Topup, TopupFilter};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportSummary {
    pub customers: Vec<String>,
    pub topups: usize,
    pub resolved_old_rows: usize,
    pub failed_not_written: usize,
    /// Open top-ups that block the export.
    pub open: Vec<String>,
}

/// `'text'` with quotes doubled.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn opt(text: Option<&str>) -> String {
    text.map(quote).unwrap_or_else(|| "NULL".into())
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.3f")))
        .unwrap_or_else(|| "NULL".into())
}

/// Our rate (MXN per USD × 10⁶) as the old one (USD per MXN, 6 places).
fn usd_per_mxn(fx_rate_micro: i64) -> String {
    let micro = (1_000_000_000_000_i128 + i128::from(fx_rate_micro) / 2) / i128::from(fx_rate_micro);
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// The old `transactions` row of a top-up Recarga delivered.
fn insert_row(c: &Customer, t: &Topup) -> String {
    let charged = Money(t.held.0).to_decimal_string();
    let face = t.face_value.to_decimal_string();
    let (usd, rate) = match (c.currency, t.fx_rate_micro) {
        (Currency::Usd, Some(fx)) => (quote(&charged), usd_per_mxn(fx)),
        _ => ("NULL".into(), "NULL".into()),
    };
    let reference = if t.reference_generated() {
        ""
    } else {
        t.reference.as_str()
    };
    format!(
        "INSERT INTO transactions (transaction_id, customer_id, phone, amount, status, reference, operator_transaction_id, \
         amount_mxn, amount_usd, exchange_rate, created_at, processed_at, provider, provider_transaction_id) VALUES \
         ({}, {}, {}, {}, 'SUCCESS', {}, {}, {}, {usd}, {rate}, {}, {}, 'latcom', {}) \
         ON CONFLICT (transaction_id) DO NOTHING;\n",
        quote(&t.id),
        quote(&c.id),
        quote(t.phone.as_str()),
        quote(&charged),
        quote(reference),
        opt(t.upstream_trans_id.as_deref()),
        quote(&face),
        timestamp(t.created_at),
        timestamp(t.completed_at.unwrap_or(t.created_at)),
        opt(t.upstream_trans_id.as_deref()),
    )
}

/// The script for these customers and their top-ups (pure).
pub fn legacy_sql(customers: &[(Customer, Vec<Topup>)], summary: &mut ExportSummary) -> String {
    let mut sql = String::from(
        "-- Written by `recarga export legacy`: apply to the old system's database to resume it.\nBEGIN;\n",
    );
    for (c, topups) in customers {
        summary.customers.push(c.id.clone());
        sql.push_str(&format!(
            "UPDATE customers SET current_balance = {} WHERE customer_id = {};\n",
            quote(&c.balance.to_decimal_string()),
            quote(&c.id)
        ));
        for t in topups {
            match (t.is_imported(), t.status) {
                (false, TopupStatus::Success) => {
                    summary.topups += 1;
                    sql.push_str(&insert_row(c, t));
                }
                (false, _) => summary.failed_not_written += 1,
                // An old PENDING row an operator settled here.
                (true, TopupStatus::Success | TopupStatus::Failed) if is_resolved_here(t) => {
                    summary.resolved_old_rows += 1;
                    sql.push_str(&format!(
                        "UPDATE transactions SET status = {}, processed_at = {} WHERE transaction_id = {} AND status = 'PENDING';\n",
                        quote(t.status.as_str()),
                        timestamp(t.completed_at.unwrap_or(t.updated_at)),
                        quote(&t.id)
                    ));
                }
                (true, _) => {}
            }
        }
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// An imported row that came in UNKNOWN (an old PENDING) and is settled now.
fn is_resolved_here(t: &Topup) -> bool {
    t.legacy
        .as_deref()
        .is_some_and(|l| l.contains("\"pending_never_settled\""))
}

/// Reads what to export; `Err` lists the open top-ups that block it.
pub async fn export_legacy(store: &dyn Store, only: Option<&[String]>) -> crate::Result<(String, ExportSummary)> {
    let mut chosen = Vec::new();
    let mut summary = ExportSummary::default();
    for c in store.list_customers().await? {
        let wanted = match only {
            Some(ids) => ids.contains(&c.id),
            None => c.import_run.is_some(),
        };
        if !wanted {
            continue;
        }
        let topups = all_topups(store, &c.id).await?;
        summary.open.extend(
            topups
                .iter()
                .filter(|t| !(t.status.is_final() || t.is_imported()))
                .map(|t| t.id.clone()),
        );
        chosen.push((c, topups));
    }
    if let Some(missing) = only
        .into_iter()
        .flatten()
        .find(|id| !chosen.iter().any(|(c, _)| &c.id == *id))
    {
        return Err(crate::ServiceError::invalid(
            "customers",
            format!("no customer {missing}"),
        ));
    }
    let sql = legacy_sql(&chosen, &mut summary);
    Ok((sql, summary))
}

async fn all_topups(store: &dyn Store, customer: &str) -> crate::Result<Vec<Topup>> {
    let mut out = Vec::new();
    let mut filter = TopupFilter {
        customer_id: Some(customer.to_string()),
        limit: 1000,
        ..TopupFilter::default()
    };
    loop {
        let page = store.list_topups(&filter).await?;
        let full = page.len() == 1000;
        filter.before_id = page.last().map(|t| t.id.clone());
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_rates_inverted() {
        assert_eq!(quote("O'Brien"), "'O''Brien'");
        assert_eq!(opt(None), "NULL");
        assert_eq!(usd_per_mxn(17_800_000), "0.056180");
        assert_eq!(usd_per_mxn(20_000_000), "0.050000");
        assert_eq!(timestamp(1_760_000_000_123), "TIMESTAMP '2025-10-09 08:53:20.123'");
    }
}
