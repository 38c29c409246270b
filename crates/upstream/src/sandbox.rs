//! The in-process sandbox provider: deterministic by the phone's last three
//! digits, so every path of the lifecycle can be driven from a request.
//!
//! | last 3 | behaviour |
//! |---|---|
//! | `991` | definite failure "Bolton is not allowed for tariff plan" |
//! | `992` | definite failure "Action not allowed" |
//! | `993` | no answer (timeout), but delivered |
//! | `994` | no answer (timeout), not delivered |
//! | `995` | success after 20 s (unknown if that exceeds the call timeout) |
//! | `996` | HTTP 500, but delivered |
//! | other | success |
//!
//! Latency is uniform in a configured range. The status query reports the
//! truth for anything the sandbox has seen, and "not found" otherwise (as
//! after a restart, since its journal lives in memory). The journal counts
//! deliveries per `dist_transid`, so tests can prove nothing was sent twice.

use crate::{Attempt, ExchangeLog, Outcome, Provider, StatusAnswer, StatusCheck, TopupRequest, now_ms};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// How long a call waits for an answer before it counts as unknown.
    pub timeout_ms: u64,
    /// The delay of the `995` script.
    pub slow_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency_min_ms: 2_000,
            latency_max_ms: 7_000,
            timeout_ms: 40_000,
            slow_ms: 20_000,
        }
    }
}

/// What the sandbox knows about one `dist_transid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalEntry {
    /// Top-up calls received for this id.
    pub calls: u32,
    /// Times the phone was actually recharged.
    pub deliveries: u32,
    pub trans_id: String,
    pub ven_transid: String,
}

pub struct Sandbox {
    config: SandboxConfig,
    journal: Mutex<HashMap<String, JournalEntry>>,
    seq: AtomicU64,
}

enum Script {
    Fail(&'static str, &'static str),
    Timeout { delivered: bool },
    Slow,
    ServerError,
    Ok,
}

fn script(last3: &str) -> Script {
    match last3 {
        "991" => Script::Fail("-120010", "Bolton is not allowed for tariff plan"),
        "992" => Script::Fail("-120020", "Action not allowed"),
        "993" => Script::Timeout { delivered: true },
        "994" => Script::Timeout { delivered: false },
        "995" => Script::Slow,
        "996" => Script::ServerError,
        _ => Script::Ok,
    }
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        Sandbox {
            config,
            journal: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
        }
    }

    /// The ground truth for one id, if the sandbox has seen it.
    pub fn journal_entry(&self, topup_id: &str) -> Option<JournalEntry> {
        self.lock().get(topup_id).cloned()
    }

    /// Every id the sandbox has seen.
    pub fn journal(&self) -> HashMap<String, JournalEntry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JournalEntry>> {
        // A poisoned journal only means a test thread panicked; keep reading.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn latency(&self) -> Duration {
        let (lo, hi) = (
            self.config.latency_min_ms,
            self.config.latency_max_ms.max(self.config.latency_min_ms),
        );
        Duration::from_millis(if hi > lo { rand::random_range(lo..=hi) } else { lo })
    }

    /// Records the call (and the delivery, when there is one) and returns the ids.
    fn record(&self, topup_id: &str, delivered: bool) -> (String, String) {
        let mut journal = self.lock();
        let entry = journal.entry(topup_id.to_string()).or_default();
        entry.calls += 1;
        if delivered {
            entry.deliveries += 1;
            if entry.trans_id.is_empty() {
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                entry.trans_id = format!("SB{n:08}");
                entry.ven_transid = format!("{}", 700_000 + n);
            }
        }
        (entry.trans_id.clone(), entry.ven_transid.clone())
    }
}

#[async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn is_live(&self) -> bool {
        false
    }

    async fn topup(&self, req: &TopupRequest) -> Attempt {
        let started = now_ms();
        let request = serde_json::json!({
            "targetMSISDN": req.phone.as_str(),
            "dist_transid": req.topup_id,
            "productId": req.product_id,
            "amount": req.amount_sent.to_decimal_string(),
        })
        .to_string();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let (outcome, response, http_status) = match script(req.phone.last3()) {
            Script::Fail(code, message) => {
                self.record(&req.topup_id, false);
                tokio::time::sleep(self.latency()).await;
                let body =
                    serde_json::json!({"status": "Fail", "vendorResponseCode": code, "vendorResponseMsg": message});
                (
                    Outcome::Failed {
                        code: code.into(),
                        message: message.into(),
                    },
                    Some(body.to_string()),
                    Some(200),
                )
            }
            Script::Timeout { delivered } => {
                self.record(&req.topup_id, delivered);
                tokio::time::sleep(timeout).await;
                (
                    Outcome::Unknown {
                        reason: "timeout: no answer".into(),
                        trans_id: None,
                    },
                    None,
                    None,
                )
            }
            Script::Slow => {
                let (trans_id, ven) = self.record(&req.topup_id, true);
                let slow = Duration::from_millis(self.config.slow_ms);
                if slow > timeout {
                    tokio::time::sleep(timeout).await;
                    (
                        Outcome::Unknown {
                            reason: "timeout: no answer".into(),
                            trans_id: None,
                        },
                        None,
                        None,
                    )
                } else {
                    tokio::time::sleep(slow).await;
                    success(trans_id, ven)
                }
            }
            Script::ServerError => {
                self.record(&req.topup_id, true);
                tokio::time::sleep(self.latency()).await;
                (
                    Outcome::Unknown {
                        reason: "HTTP 500 from upstream".into(),
                        trans_id: None,
                    },
                    Some("Internal Server Error".into()),
                    Some(500),
                )
            }
            Script::Ok => {
                let (trans_id, ven) = self.record(&req.topup_id, true);
                tokio::time::sleep(self.latency()).await;
                success(trans_id, ven)
            }
        };
        let (trans_id, ven_transid) = match &outcome {
            Outcome::Success { trans_id, ven_transid } => (trans_id.clone(), ven_transid.clone()),
            _ => (None, None),
        };
        Attempt {
            outcome,
            exchange: ExchangeLog {
                request: Some(request),
                response,
                http_status,
                trans_id,
                ven_transid,
                started_at_ms: started,
                ended_at_ms: now_ms(),
            },
        }
    }

    async fn status(&self, topup_id: &str, _trans_id: Option<&str>) -> StatusCheck {
        let started = now_ms();
        let entry = self.journal_entry(topup_id);
        let answer = match &entry {
            Some(e) if e.deliveries > 0 => StatusAnswer::Delivered {
                trans_id: Some(e.trans_id.clone()),
                ven_transid: Some(e.ven_transid.clone()),
            },
            Some(_) => StatusAnswer::NotDelivered {
                code: "not_delivered".into(),
                message: "transaction failed".into(),
            },
            None => StatusAnswer::StillUnknown {
                reason: "transaction not found".into(),
            },
        };
        let response = match &answer {
            StatusAnswer::Delivered { trans_id, .. } => serde_json::json!({"status": "Success", "transId": trans_id}),
            StatusAnswer::NotDelivered { .. } => serde_json::json!({"status": "Fail"}),
            StatusAnswer::StillUnknown { .. } => serde_json::json!({"error": "not found"}),
        };
        StatusCheck {
            answer,
            exchange: ExchangeLog {
                request: Some(serde_json::json!({"dist_transid": topup_id}).to_string()),
                response: Some(response.to_string()),
                http_status: Some(200),
                trans_id: entry.as_ref().map(|e| e.trans_id.clone()).filter(|t| !t.is_empty()),
                ven_transid: entry.map(|e| e.ven_transid).filter(|t| !t.is_empty()),
                started_at_ms: started,
                ended_at_ms: now_ms(),
            },
        }
    }
}

fn success(trans_id: String, ven: String) -> (Outcome, Option<String>, Option<i64>) {
    let body = serde_json::json!({"status": "Success", "transId": trans_id, "venTransid": ven, "responseCode": "0"});
    (
        Outcome::Success {
            trans_id: Some(trans_id),
            ven_transid: Some(ven),
        },
        Some(body.to_string()),
        Some(200),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use recarga_domain::{Money, Msisdn};

    fn fast() -> Sandbox {
        Sandbox::new(SandboxConfig {
            latency_min_ms: 0,
            latency_max_ms: 1,
            timeout_ms: 30,
            slow_ms: 10,
        })
    }

    fn req(phone: &str) -> TopupRequest {
        TopupRequest {
            topup_id: format!("RLR{phone}"),
            phone: Msisdn::parse(phone).unwrap(),
            product_id: "XOOM_10_MXN".into(),
            amount_sent: Money::major(10),
        }
    }

    #[tokio::test]
    async fn scripts_by_last_three_digits() {
        let sb = fast();
        assert!(matches!(
            sb.topup(&req("5512345000")).await.outcome,
            Outcome::Success { .. }
        ));
        assert!(
            matches!(sb.topup(&req("5512345991")).await.outcome, Outcome::Failed { ref message, .. } if message.contains("Bolton"))
        );
        assert!(
            matches!(sb.topup(&req("5512345992")).await.outcome, Outcome::Failed { ref message, .. } if message == "Action not allowed")
        );
        assert!(matches!(
            sb.topup(&req("5512345993")).await.outcome,
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            sb.topup(&req("5512345994")).await.outcome,
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            sb.topup(&req("5512345995")).await.outcome,
            Outcome::Success { .. }
        ));
        let e500 = sb.topup(&req("5512345996")).await;
        assert!(matches!(e500.outcome, Outcome::Unknown { .. }));
        assert_eq!(e500.exchange.http_status, Some(500));
    }

    #[tokio::test]
    async fn status_tells_the_truth_it_knows() {
        let sb = fast();
        sb.topup(&req("5512345993")).await;
        sb.topup(&req("5512345994")).await;
        sb.topup(&req("5512345996")).await;
        assert!(matches!(
            sb.status("RLR5512345993", None).await.answer,
            StatusAnswer::Delivered { .. }
        ));
        assert!(matches!(
            sb.status("RLR5512345994", None).await.answer,
            StatusAnswer::NotDelivered { .. }
        ));
        assert!(matches!(
            sb.status("RLR5512345996", None).await.answer,
            StatusAnswer::Delivered { .. }
        ));
        assert!(matches!(
            sb.status("RLRnever", None).await.answer,
            StatusAnswer::StillUnknown { .. }
        ));
        assert_eq!(sb.journal_entry("RLR5512345993").unwrap().deliveries, 1);
    }

    #[tokio::test]
    async fn slow_success_beyond_the_timeout_is_unknown() {
        let sb = Sandbox::new(SandboxConfig {
            latency_min_ms: 0,
            latency_max_ms: 0,
            timeout_ms: 5,
            slow_ms: 50,
        });
        assert!(matches!(
            sb.topup(&req("5512345995")).await.outcome,
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            sb.status("RLR5512345995", None).await.answer,
            StatusAnswer::Delivered { .. }
        ));
    }
}
