//! Reconciliation runs: the statements as imported (raw bytes and digest),
//! the runs over them with every classified row, and the proposed
//! settlements of UNKNOWN top-ups with what became of them. Also the one
//! read the matcher needs: the top-ups of a period with every id they were
//! known by (attempt ids, the provider's and the carrier's ids from every
//! exchange). Settling a proposal is not here: it goes through
//! [`crate::SettleStore::resolve_unknown`] like any resolution.

use crate::Result;
use async_trait::async_trait;
use recarga_domain::reconcile::Candidate;
use serde::Serialize;

/// Rows per INSERT when a run is saved (both engines' bind limits allow it).
pub const RECONCILE_INSERT_CHUNK: usize = 1_000;

/// A statement file as it came, with what reading it found.
#[derive(Debug, Clone)]
pub struct NewStatement {
    pub id: String,
    pub source: String,
    /// SHA-256 of the raw bytes, hex.
    pub digest: String,
    pub file_name: Option<String>,
    /// The format it was read with, as JSON.
    pub format: String,
    pub kind: String,
    pub coverage_from: String,
    pub coverage_to: String,
    pub rows_read: i64,
    pub lines: i64,
    pub rejected: i64,
    pub total: i64,
    pub currency: String,
    pub raw: Vec<u8>,
    pub actor: String,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub statement_id: String,
    pub window_ms: i64,
    /// JSON: the classes, totals, rules and rejects.
    pub summary: String,
    pub actor: String,
}

/// A run with its statement's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub id: String,
    pub statement_id: String,
    pub window_ms: i64,
    pub summary: String,
    pub actor: String,
    pub created_at: i64,
    pub source: String,
    pub digest: String,
    pub file_name: Option<String>,
    pub format: String,
    pub kind: String,
    pub coverage_from: String,
    pub coverage_to: String,
    pub rows_read: i64,
    pub lines: i64,
    pub rejected: i64,
    pub total: i64,
    pub currency: String,
    pub imported_at: i64,
}

/// One classified row of a run (a statement line, or a top-up the
/// statement should have named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReconcileRow {
    pub run_id: String,
    pub seq: i64,
    pub class: String,
    pub line_no: Option<i64>,
    pub topup_id: Option<String>,
    pub rule: Option<String>,
    pub gap_ms: Option<i64>,
    pub day: String,
    pub mxn: i64,
    pub statement_amount: i64,
    pub phone: Option<String>,
    pub upstream_id: Option<String>,
    pub carrier_id: Option<String>,
    pub our_id: Option<String>,
    pub product: Option<String>,
    pub line_status: Option<String>,
    pub our_status: Option<String>,
    pub note: String,
}

/// A proposed settlement of an UNKNOWN top-up, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReconcileProposal {
    pub run_id: String,
    pub topup_id: String,
    /// `success` or `failed`.
    pub outcome: String,
    pub line_no: Option<i64>,
    pub trans_id: Option<String>,
    pub ven_transid: Option<String>,
    pub reason: String,
    pub applied_at: Option<i64>,
    pub applied_by: Option<String>,
    pub result: Option<String>,
}

/// The slim top-up row the matcher reads.
#[derive(sqlx::FromRow)]
pub(crate) struct CandidateRow {
    pub id: String,
    pub reference: String,
    pub origin: String,
    pub sends: i64,
    pub phone: String,
    pub face_value: i64,
    pub amount_sent: i64,
    #[sqlx(try_from = "String")]
    pub status: recarga_domain::TopupStatus,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub upstream_trans_id: Option<String>,
    pub upstream_ven_transid: Option<String>,
}

impl CandidateRow {
    pub(crate) fn into_candidate(self) -> Candidate {
        use recarga_domain::{Money, attempt_id};
        let mut our_ids: Vec<String> = (1..=self.sends.max(1)).map(|n| attempt_id(&self.id, n)).collect();
        // The old system sent the customer's reference as `dist_transid`
        // when there was one (`RECONCILE.md` §1.5).
        if self.origin == "legacy" && self.reference != self.id {
            our_ids.push(self.reference);
        }
        Candidate {
            our_ids,
            upstream_ids: self.upstream_trans_id.into_iter().collect(),
            carrier_ids: self.upstream_ven_transid.into_iter().collect(),
            phone: self.phone,
            face_value: Money(self.face_value),
            amount_sent: Money(self.amount_sent),
            status: self.status,
            created_at: self.created_at,
            settled_at: self.completed_at.unwrap_or(self.updated_at),
            id: self.id,
        }
    }
}

/// Adds an id to a list once.
pub(crate) fn add_id(list: &mut Vec<String>, id: Option<String>) {
    if let Some(id) = id.filter(|i| !i.is_empty())
        && !list.contains(&id)
    {
        list.push(id);
    }
}

#[async_trait]
pub trait ReconcileStore {
    /// A statement already imported with these bytes.
    async fn statement_by_digest(&self, digest: &str) -> Result<Option<RunRecord>>;
    /// Top-ups accepted in `[from_ms, to_ms]`, with every id they were known by.
    async fn reconcile_candidates(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Candidate>>;
    /// Stores a statement (when new), its run, rows and proposals: one transaction.
    async fn save_reconcile_run(
        &self,
        statement: Option<&NewStatement>,
        run: &NewRun,
        rows: &[ReconcileRow],
        proposals: &[ReconcileProposal],
    ) -> Result<()>;
    async fn reconcile_run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// The newest runs first.
    async fn reconcile_runs(&self, limit: i64) -> Result<Vec<RunRecord>>;
    /// A run's rows of one class (or all), in order, after `after_seq`.
    async fn reconcile_rows(
        &self,
        run_id: &str,
        class: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<ReconcileRow>>;
    async fn reconcile_proposals(&self, run_id: &str) -> Result<Vec<ReconcileProposal>>;
    /// The statement's bytes as imported.
    async fn statement_raw(&self, statement_id: &str) -> Result<Option<Vec<u8>>>;
    /// Records what became of each applied proposal (`(topup_id, result)`)
    /// and the operator's step in the audit log: one transaction, after the
    /// resolutions themselves (each its own transaction, audited too).
    async fn finish_reconcile_apply(
        &self,
        run_id: &str,
        results: &[(String, String)],
        actor: &str,
        reason: &str,
    ) -> Result<()>;
}

pub(crate) const RUN_SELECT: &str = "SELECT r.id, r.statement_id, r.window_ms, r.summary, r.actor, r.created_at,
        s.source, s.digest, s.file_name, s.format, s.kind, s.coverage_from, s.coverage_to,
        s.rows_read, s.lines, s.rejected, s.total, s.currency, s.imported_at
     FROM reconcile_runs r JOIN reconcile_statements s ON s.id = r.statement_id";

macro_rules! impl_reconcile {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::reconcile::ReconcileStore for $store {
            async fn statement_by_digest(&self, digest: &str) -> $crate::Result<Option<$crate::RunRecord>> {
                let sql = format!(
                    "{} WHERE s.digest = $1 ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
                    $crate::reconcile::RUN_SELECT
                );
                Ok(sqlx::query_as::<_, $crate::RunRecord>(sqlx::AssertSqlSafe(sql))
                    .bind(digest)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn reconcile_candidates(
                &self,
                from_ms: i64,
                to_ms: i64,
            ) -> $crate::Result<Vec<recarga_domain::reconcile::Candidate>> {
                let rows = sqlx::query_as::<_, $crate::reconcile::CandidateRow>(
                    "SELECT id, reference, origin, sends, phone, face_value, amount_sent, status, created_at,
                            updated_at, completed_at, upstream_trans_id, upstream_ven_transid
                     FROM topups WHERE created_at BETWEEN $1 AND $2 ORDER BY created_at, id",
                )
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(self.read())
                .await?;
                let mut cands: Vec<_> = rows.into_iter().map(|r| r.into_candidate()).collect();
                let at: std::collections::HashMap<String, usize> =
                    cands.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
                let ids: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT e.topup_id, e.trans_id, e.ven_transid FROM exchanges e
                     JOIN topups t ON t.id = e.topup_id
                     WHERE t.created_at BETWEEN $1 AND $2
                       AND (e.trans_id IS NOT NULL OR e.ven_transid IS NOT NULL)
                     ORDER BY e.id",
                )
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all(self.read())
                .await?;
                for (topup, trans_id, ven_transid) in ids {
                    if let Some(&i) = at.get(&topup) {
                        $crate::reconcile::add_id(&mut cands[i].upstream_ids, trans_id);
                        $crate::reconcile::add_id(&mut cands[i].carrier_ids, ven_transid);
                    }
                }
                Ok(cands)
            }

            async fn save_reconcile_run(
                &self,
                statement: Option<&$crate::NewStatement>,
                run: &$crate::NewRun,
                rows: &[$crate::ReconcileRow],
                proposals: &[$crate::ReconcileProposal],
            ) -> $crate::Result<()> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                if let Some(s) = statement {
                    sqlx::query(
                        "INSERT INTO reconcile_statements (id, source, digest, file_name, format, kind, coverage_from,
                            coverage_to, rows_read, lines, rejected, total, currency, raw, actor, imported_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                    )
                    .bind(&s.id)
                    .bind(&s.source)
                    .bind(&s.digest)
                    .bind(&s.file_name)
                    .bind(&s.format)
                    .bind(&s.kind)
                    .bind(&s.coverage_from)
                    .bind(&s.coverage_to)
                    .bind(s.rows_read)
                    .bind(s.lines)
                    .bind(s.rejected)
                    .bind(s.total)
                    .bind(&s.currency)
                    .bind(&s.raw)
                    .bind(&s.actor)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::common::map_db)?;
                }
                sqlx::query(
                    "INSERT INTO reconcile_runs (id, statement_id, window_ms, summary, actor, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&run.id)
                .bind(&run.statement_id)
                .bind(run.window_ms)
                .bind(&run.summary)
                .bind(&run.actor)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err($crate::common::map_db)?;
                for chunk in rows.chunks($crate::reconcile::RECONCILE_INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO reconcile_rows (run_id, seq, class, line_no, topup_id, rule, gap_ms, day, mxn,
                            statement_amount, phone, upstream_id, carrier_id, our_id, product, line_status,
                            our_status, note) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.run_id.clone())
                            .push_bind(r.seq)
                            .push_bind(r.class.clone())
                            .push_bind(r.line_no)
                            .push_bind(r.topup_id.clone())
                            .push_bind(r.rule.clone())
                            .push_bind(r.gap_ms)
                            .push_bind(r.day.clone())
                            .push_bind(r.mxn)
                            .push_bind(r.statement_amount)
                            .push_bind(r.phone.clone())
                            .push_bind(r.upstream_id.clone())
                            .push_bind(r.carrier_id.clone())
                            .push_bind(r.our_id.clone())
                            .push_bind(r.product.clone())
                            .push_bind(r.line_status.clone())
                            .push_bind(r.our_status.clone())
                            .push_bind(r.note.clone());
                    });
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::common::map_db)?;
                }
                for chunk in proposals.chunks($crate::reconcile::RECONCILE_INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO reconcile_proposals (run_id, topup_id, outcome, line_no, trans_id, ven_transid,
                            reason) ",
                    );
                    q.push_values(chunk, |mut b, p| {
                        b.push_bind(p.run_id.clone())
                            .push_bind(p.topup_id.clone())
                            .push_bind(p.outcome.clone())
                            .push_bind(p.line_no)
                            .push_bind(p.trans_id.clone())
                            .push_bind(p.ven_transid.clone())
                            .push_bind(p.reason.clone());
                    });
                    q.build()
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::common::map_db)?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn reconcile_run(&self, id: &str) -> $crate::Result<Option<$crate::RunRecord>> {
                let sql = format!("{} WHERE r.id = $1", $crate::reconcile::RUN_SELECT);
                Ok(sqlx::query_as::<_, $crate::RunRecord>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(self.read())
                    .await?)
            }

            async fn reconcile_runs(&self, limit: i64) -> $crate::Result<Vec<$crate::RunRecord>> {
                let sql = format!(
                    "{} ORDER BY r.created_at DESC, r.id DESC LIMIT $1",
                    $crate::reconcile::RUN_SELECT
                );
                Ok(sqlx::query_as::<_, $crate::RunRecord>(sqlx::AssertSqlSafe(sql))
                    .bind(limit.clamp(1, 1000))
                    .fetch_all(self.read())
                    .await?)
            }

            async fn reconcile_rows(
                &self,
                run_id: &str,
                class: Option<&str>,
                after_seq: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::ReconcileRow>> {
                let mut q = sqlx::QueryBuilder::<$db>::new("SELECT * FROM reconcile_rows WHERE run_id = ");
                q.push_bind(run_id.to_string());
                if let Some(c) = class {
                    q.push(" AND class = ").push_bind(c.to_string());
                }
                q.push(" AND seq > ").push_bind(after_seq);
                q.push(" ORDER BY seq LIMIT ").push_bind(limit.max(1));
                Ok(q.build_query_as::<$crate::ReconcileRow>()
                    .fetch_all(self.read())
                    .await?)
            }

            async fn reconcile_proposals(&self, run_id: &str) -> $crate::Result<Vec<$crate::ReconcileProposal>> {
                Ok(sqlx::query_as::<_, $crate::ReconcileProposal>(
                    "SELECT * FROM reconcile_proposals WHERE run_id = $1 ORDER BY line_no IS NULL, line_no, topup_id",
                )
                .bind(run_id)
                .fetch_all(self.read())
                .await?)
            }

            async fn statement_raw(&self, statement_id: &str) -> $crate::Result<Option<Vec<u8>>> {
                Ok(
                    sqlx::query_scalar("SELECT raw FROM reconcile_statements WHERE id = $1")
                        .bind(statement_id)
                        .fetch_optional(self.read())
                        .await?,
                )
            }

            async fn finish_reconcile_apply(
                &self,
                run_id: &str,
                results: &[(String, String)],
                actor: &str,
                reason: &str,
            ) -> $crate::Result<()> {
                let now = $crate::now_ms();
                let mut tx = self.begin().await?;
                for (topup_id, result) in results {
                    sqlx::query(
                        "UPDATE reconcile_proposals SET applied_at = $3, applied_by = $4, result = $5
                         WHERE run_id = $1 AND topup_id = $2 AND applied_at IS NULL",
                    )
                    .bind(run_id)
                    .bind(topup_id)
                    .bind(now)
                    .bind(actor)
                    .bind(result)
                    .execute(&mut *tx)
                    .await?;
                }
                let applied = results.iter().filter(|(_, r)| r == "applied").count();
                let audit = $crate::common::AuditRecord {
                    actor,
                    action: "reconcile.apply",
                    subject: run_id,
                    before: Some(format!("{} proposals", results.len())),
                    after: Some(format!("{applied} applied")),
                    reason: Some(reason),
                    now,
                };
                Self::insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_reconcile;
