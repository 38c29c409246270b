//! CSV export of a transaction search, streamed.
//!
//! The body is produced page by page ([`CSV_PAGE_ROWS`] rows, keyset by id,
//! newest first) while the client reads it, so an export of any size holds at
//! most one page in memory. The csv crate does the RFC 4180 quoting; amounts
//! are decimal strings, times ISO 8601 in UTC, and every id needed for
//! reconciliation is there (ours, the customer's reference, Latcom's
//! `transId`, the carrier's `venTransid`).
//!
//! Free-text cells (the customer's id and reference, the upstream's ids and
//! failure code) go through [`guard_cell`]: one that a spreadsheet would run
//! as a formula (`=`, `+`, `-`, `@`, tab, CR first) is written with a leading
//! `'`. Our own columns (top-up id, digits-only phone, state, amounts,
//! currency, times) are never altered. Whoever reads these files back must
//! use [`recarga_domain::spreadsheet::unguard_cell`] on the same columns.

use crate::state::App;
use crate::views::iso;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use recarga_domain::spreadsheet::guard_cell;
use recarga_store::{Topup, TopupSearch};

/// Rows fetched (and written) per page of an export.
pub const CSV_PAGE_ROWS: i64 = 1000;

pub const CSV_HEADER: [&str; 14] = [
    "id",
    "customer_id",
    "reference",
    "phone",
    "status",
    "face_value",
    "held",
    "amount_sent",
    "currency",
    "upstream_trans_id",
    "upstream_ven_transid",
    "failure_code",
    "created_at",
    "completed_at",
];

/// One page as CSV text (with the header row first when `header`).
pub fn csv_page(rows: &[Topup], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 200 + 256));
    if header {
        w.write_record(CSV_HEADER)?;
    }
    for t in rows {
        let text = |cell: Option<&str>| guard_cell(cell.unwrap_or("")).into_owned();
        w.write_record([
            t.id.as_str(),
            &text(Some(&t.customer_id)),
            &text(Some(&t.reference)),
            t.phone.as_str(),
            t.status.as_str(),
            &t.face_value.to_decimal_string(),
            &t.held.to_decimal_string(),
            &t.amount_sent.to_decimal_string(),
            t.currency.as_str(),
            &text(t.upstream_trans_id.as_deref()),
            &text(t.upstream_ven_transid.as_deref()),
            &text(t.failure_code.as_deref()),
            &iso(t.created_at),
            &t.completed_at.map(iso).unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

struct Cursor {
    app: App,
    search: TopupSearch,
    first: bool,
    done: bool,
}

/// Streams every row of `search` as CSV.
pub fn csv_response(app: App, mut search: TopupSearch, filename: &str) -> Response {
    search.limit = CSV_PAGE_ROWS;
    let start = Cursor {
        app,
        search,
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let rows = match c.app.store.search_topups(&c.search).await {
            Ok(rows) => rows,
            Err(e) => {
                // Cut the body short: the client sees a failed download, never a silently short file.
                tracing::error!(error = %e, "CSV export: reading a page failed");
                c.done = true;
                return Some((Err(std::io::Error::other("export interrupted")), c));
            }
        };
        c.done = (rows.len() as i64) < CSV_PAGE_ROWS;
        c.search.before_id = rows.last().map(|t| t.id.clone());
        let page = csv_page(&rows, c.first).map_err(std::io::Error::other);
        c.first = false;
        Some((page.map(Bytes::from), c))
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
