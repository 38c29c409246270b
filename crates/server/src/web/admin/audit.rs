//! The audit log, and how its rows read to people.

use super::AUDIT_PAGE_ROWS;
use super::Chrome;
use crate::state::App;
use crate::web::auth::OperatorSession;
use crate::web::{WebError, render};
use crate::web::{amount, when};
use askama::Template;
use axum::extract::Query;
use axum::extract::State;
use axum::response::Response;
use recarga_domain::Money;
use recarga_store::AuditEntry;
use serde::Deserialize;

pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub at: String,
    pub action: String,
    pub subject: String,
    pub before: String,
    pub after: String,
    pub reason: String,
}

/// Row fields that change on every write and say nothing to a reader.
const AUDIT_NOISE: [&str; 3] = ["updated_at", "version", "created_at"];
/// Fields of a customer row that hold minor units.
const AUDIT_MONEY: [&str; 5] = ["balance", "credit_limit", "min_topup", "max_topup", "daily_limit"];

/// Before / after as a person reads them: balances as decimals, and for a
/// changed customer row only the fields that changed.
fn humanize(action: &str, before: Option<&str>, after: Option<&str>) -> (String, String) {
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    if action == "balance.adjust" {
        let dec = |v: Option<&str>| {
            v.and_then(|t| t.parse::<i64>().ok())
                .map(|m| amount(Money(m)))
                .unwrap_or_else(|| text(v))
        };
        return (dec(before), dec(after));
    }
    let parse = |v: Option<&str>| v.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    // Customer rows keep money in minor units; show it as people read it.
    let show = |k: &str, v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if AUDIT_MONEY.contains(&k) => {
            n.as_i64().map(|m| amount(Money(m))).unwrap_or_else(|| n.to_string())
        }
        other => other.to_string(),
    };
    match (parse(before), parse(after)) {
        (Some(serde_json::Value::Object(b)), Some(serde_json::Value::Object(a))) => {
            let mut olds = Vec::new();
            let mut news = Vec::new();
            for (k, new) in &a {
                if AUDIT_NOISE.contains(&k.as_str()) {
                    continue;
                }
                let old = b.get(k).cloned().unwrap_or(serde_json::Value::Null);
                if &old != new {
                    olds.push(format!("{k}: {}", show(k, &old)));
                    news.push(format!("{k}: {}", show(k, new)));
                }
            }
            (olds.join(", "), news.join(", "))
        }
        (None, Some(serde_json::Value::Object(a))) => {
            let fields: Vec<String> = a
                .iter()
                .filter(|(k, _)| !AUDIT_NOISE.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}: {}", show(k, v)))
                .collect();
            (text(before), fields.join(", "))
        }
        _ => (text(before), text(after)),
    }
}

impl From<&AuditEntry> for AuditRow {
    fn from(a: &AuditEntry) -> Self {
        let (before, after) = humanize(&a.action, a.before.as_deref(), a.after.as_deref());
        AuditRow {
            id: a.id,
            actor: a.actor.clone(),
            at: when(a.created_at),
            action: a.action.clone(),
            subject: a.subject.clone().unwrap_or_default(),
            before,
            after,
            reason: a.reason.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    chrome: Chrome,
    audit: Vec<AuditRow>,
    subject: String,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    subject: String,
    /// Keyset cursor (an audit row id); anything else is the first page.
    #[serde(default)]
    before: Option<String>,
}

pub(super) async fn audit(
    State(app): State<App>,
    op: OperatorSession,
    Query(aq): Query<AuditQuery>,
) -> Result<Response, WebError> {
    let subject = Some(aq.subject.trim()).filter(|s| !s.is_empty());
    let before = aq.before.as_deref().and_then(|b| b.parse().ok());
    let mut rows = app.store.audit_entries(subject, before, AUDIT_PAGE_ROWS + 1).await?;
    let next = if rows.len() as i64 > AUDIT_PAGE_ROWS {
        rows.truncate(AUDIT_PAGE_ROWS as usize);
        rows.last().map(|r| {
            format!(
                "/admin/audit?subject={}&before={}",
                crate::web::q(subject.unwrap_or("")),
                r.id
            )
        })
    } else {
        None
    };
    render(&AuditPage {
        chrome: Chrome::new(&op, &app, "audit"),
        audit: rows.iter().map(AuditRow::from).collect(),
        subject: aq.subject,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows_read_like_people_write() {
        assert_eq!(
            humanize("balance.adjust", Some("0"), Some("100050")),
            ("0.00".to_string(), "1,000.50".to_string())
        );
        let before = r#"{"id":"C","credit_limit":0,"daily_limit":null,"name":"A","version":1,"updated_at":5}"#;
        let after = r#"{"id":"C","credit_limit":50000,"daily_limit":30000,"name":"A","version":2,"updated_at":9}"#;
        let (b, a) = humanize("customer.update", Some(before), Some(after));
        assert_eq!(b, "credit_limit: 0.00, daily_limit: null");
        assert_eq!(a, "credit_limit: 500.00, daily_limit: 300.00");
        assert_eq!(
            humanize("topup.resolve", Some("UNKNOWN"), Some("FAILED")),
            ("UNKNOWN".to_string(), "FAILED".to_string())
        );
    }
}
