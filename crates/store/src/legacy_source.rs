//! The old system's PostgreSQL database, read-only: the source of
//! `recarga import legacy`.
//!
//! The old schema was never migrated by a tool: which `CREATE TABLE` made a
//! production table cannot be known (`../shared/LEGACY.md` §4.1), so every
//! read first asks `information_schema` which columns exist and selects them
//! by name, as text (a missing column reads as NULL). Money columns are read
//! as the database prints them (exact decimals, never floats); times become
//! milliseconds, taking `TIMESTAMP` without a zone as UTC.
//!
//! The connection is read-only twice over: every session starts with
//! `default_transaction_read_only = on`, and this module only ever selects.

use crate::Result;
use recarga_domain::legacy::OldTopup;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// One row of the old `customers` table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OldCustomer {
    pub customer_id: String,
    pub company_name: Option<String>,
    #[serde(skip)]
    pub api_key: Option<String>,
    pub credit_limit: Option<String>,
    pub current_balance: Option<String>,
    pub is_active: Option<bool>,
    pub commission_percentage: Option<String>,
    /// `allowed_ips` as JSON text (`["1.2.3.4", …]`), when the column exists.
    pub allowed_ips: Option<String>,
    pub ip_whitelist_enabled: Option<bool>,
}

/// Per old status: how many rows, and the sums of the face value
/// (`amount_mxn`, else `amount`) and of the charge (`amount_usd`, else
/// `amount`), as exact decimals: computed by the old database itself, so the
/// tie-out compares against the source, not against our reading of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OldTotals {
    pub count: i64,
    pub face: String,
    pub charged: String,
}

/// A row of the old books beside the ledger (adjustments, billing records,
/// invoices with their items), as the old database rendered it in JSON.
#[derive(Debug, Clone)]
pub struct OldHistory {
    pub kind: &'static str,
    pub source_id: String,
    pub amount: Option<String>,
    pub detail: String,
    pub created_at_ms: Option<i64>,
}

pub struct LegacyDb {
    pool: PgPool,
    columns: BTreeMap<String, BTreeSet<String>>,
}

const TRANSACTION_COLUMNS: [&str; 14] = [
    "phone",
    "amount",
    "status",
    "reference",
    "operator_transaction_id",
    "amount_mxn",
    "amount_usd",
    "exchange_rate",
    "created_at",
    "processed_at",
    "response_time_ms",
    "latcom_response_message",
    "provider",
    "id",
];

impl LegacyDb {
    /// Connects read-only and learns which columns the old tables have.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new().max_connections(2).connect_with(options).await?;
        let rows = sqlx::query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema()",
        )
        .fetch_all(&pool)
        .await?;
        let mut columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in rows {
            columns.entry(row.get(0)).or_default().insert(row.get(1));
        }
        if !columns.get("customers").is_some_and(|c| c.contains("customer_id")) {
            return Err(crate::StoreError::Constraint(
                "the source has no customers.customer_id: not a database of the old system".into(),
            ));
        }
        Ok(LegacyDb { pool, columns })
    }

    pub fn has_table(&self, table: &str) -> bool {
        self.columns.contains_key(table)
    }

    /// `t."col"::text AS col`, or `NULL::text AS col` when the column is absent.
    fn text_col(&self, table: &str, col: &str) -> String {
        if self.columns.get(table).is_some_and(|c| c.contains(col)) {
            format!("t.\"{col}\"::text AS \"{col}\"")
        } else {
            format!("NULL::text AS \"{col}\"")
        }
    }

    fn ms_col(&self, table: &str, col: &str) -> String {
        if self.columns.get(table).is_some_and(|c| c.contains(col)) {
            format!("CAST(EXTRACT(EPOCH FROM t.\"{col}\") * 1000 AS BIGINT) AS \"{col}\"")
        } else {
            format!("NULL::bigint AS \"{col}\"")
        }
    }

    fn bool_col(&self, table: &str, col: &str) -> String {
        if self.columns.get(table).is_some_and(|c| c.contains(col)) {
            format!("t.\"{col}\"::boolean AS \"{col}\"")
        } else {
            format!("NULL::boolean AS \"{col}\"")
        }
    }

    pub async fn customers(&self) -> Result<Vec<OldCustomer>> {
        let cols = [
            self.text_col("customers", "customer_id"),
            self.text_col("customers", "company_name"),
            self.text_col("customers", "api_key"),
            self.text_col("customers", "credit_limit"),
            self.text_col("customers", "current_balance"),
            self.bool_col("customers", "is_active"),
            self.text_col("customers", "commission_percentage"),
            self.text_col("customers", "allowed_ips"),
            self.bool_col("customers", "ip_whitelist_enabled"),
        ];
        let sql = format!("SELECT {} FROM customers t ORDER BY t.customer_id", cols.join(", "));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| OldCustomer {
                customer_id: r.get::<Option<String>, _>(0).unwrap_or_default(),
                company_name: r.get(1),
                api_key: r.get(2),
                credit_limit: r.get(3),
                current_balance: r.get(4),
                is_active: r.get(5),
                commission_percentage: r.get(6),
                allowed_ips: r.get(7),
                ip_whitelist_enabled: r.get(8),
            })
            .collect())
    }

    /// Every old transaction of `customer_id`, oldest first.
    pub async fn transactions(&self, customer_id: &str) -> Result<Vec<OldTopup>> {
        let t = "transactions";
        let mut cols = vec![self.text_col(t, "transaction_id")];
        for c in TRANSACTION_COLUMNS {
            cols.push(match c {
                "created_at" | "processed_at" => self.ms_col(t, c),
                _ => self.text_col(t, c),
            });
        }
        let order = if self.columns.get(t).is_some_and(|c| c.contains("id")) {
            "t.id"
        } else {
            "t.transaction_id"
        };
        let sql = format!(
            "SELECT {} FROM transactions t WHERE t.customer_id = $1 ORDER BY {order}",
            cols.join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| OldTopup {
                transaction_id: r.get::<Option<String>, _>("transaction_id").unwrap_or_default(),
                customer_id: customer_id.to_string(),
                phone: r.get("phone"),
                amount: r.get("amount"),
                status: r.get("status"),
                reference: r.get("reference"),
                operator_transaction_id: r.get("operator_transaction_id"),
                amount_mxn: r.get("amount_mxn"),
                amount_usd: r.get("amount_usd"),
                exchange_rate: r.get("exchange_rate"),
                created_at_ms: r.get("created_at"),
                processed_at_ms: r.get("processed_at"),
                response_time_ms: r
                    .get::<Option<String>, _>("response_time_ms")
                    .and_then(|v| v.parse().ok()),
                response_message: r.get("latcom_response_message"),
                provider: r.get("provider"),
                serial: r.get::<Option<String>, _>("id").and_then(|v| v.parse().ok()),
            })
            .collect())
    }

    /// Per old status (as stored, `''` for NULL): counts and exact sums.
    pub async fn totals(&self, customer_id: &str) -> Result<BTreeMap<String, OldTotals>> {
        let has = |c: &str| self.columns.get("transactions").is_some_and(|cols| cols.contains(c));
        let amount = if has("amount") { "t.amount" } else { "NULL::numeric" };
        let face = if has("amount_mxn") {
            format!("COALESCE(t.amount_mxn, {amount})")
        } else {
            amount.to_string()
        };
        let charged = if has("amount_usd") {
            format!("COALESCE(t.amount_usd, {amount})")
        } else {
            amount.to_string()
        };
        let sql = format!(
            "SELECT COALESCE(t.status, '')::text, COUNT(*), COALESCE(SUM({face}), 0)::text,
                    COALESCE(SUM({charged}), 0)::text
             FROM transactions t WHERE t.customer_id = $1 GROUP BY 1 ORDER BY 1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(customer_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let totals = OldTotals {
                    count: r.get(1),
                    face: r.get(2),
                    charged: r.get(3),
                };
                (r.get::<String, _>(0), totals)
            })
            .collect())
    }

    /// The old books of `customer_id` that exist in this database.
    pub async fn history(&self, customer_id: &str) -> Result<Vec<OldHistory>> {
        let mut out = Vec::new();
        for (table, kind, id_col) in [
            ("balance_adjustments", "adjustment", "id"),
            ("billing_records", "billing", "id"),
            ("invoices", "invoice", "invoice_number"),
        ] {
            if !self.has_table(table) {
                continue;
            }
            let detail = if table == "invoices" && self.has_table("invoice_items") {
                "(row_to_json(t)::jsonb || jsonb_build_object('items', COALESCE((SELECT jsonb_agg(to_jsonb(i) ORDER BY i.id)
                   FROM invoice_items i WHERE i.invoice_number = t.invoice_number), '[]'::jsonb)))::text"
            } else {
                "row_to_json(t)::text"
            };
            let amount = match table {
                "invoices" => self.text_col(table, "total"),
                _ => self.text_col(table, "amount"),
            };
            let sql = format!(
                "SELECT t.\"{id_col}\"::text, {amount}, {detail}, {created}
                 FROM {table} t WHERE t.customer_id = $1 ORDER BY t.\"{id_col}\"",
                created = self.ms_col(table, "created_at"),
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(customer_id)
                .fetch_all(&self.pool)
                .await?;
            for r in rows {
                out.push(OldHistory {
                    kind,
                    source_id: format!("{kind}:{}", r.get::<String, _>(0)),
                    amount: r.get(1),
                    detail: r.get(2),
                    created_at_ms: r.get(3),
                });
            }
        }
        Ok(out)
    }
}
