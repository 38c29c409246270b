//! What an upstream answer means for the money: the pure decisions behind
//! the worker and the status resolver.
//!
//! An adapter classifies each answer it gets into an [`Outcome`] (a definite
//! success, a definite failure, provably not sent, refused before anything
//! was sent, or unknown). [`classify_attempt`] turns that outcome, with the
//! top-up's attempts so far and the retry policy, into what the store writes
//! ([`AttemptOutcome`]); [`classify_check`] does the same for a status query
//! ([`StatusAnswer`]). The rules that keep money safe live here, once:
//!
//! - only a definite success captures and only a definite failure releases;
//! - a request that provably never left is retried (a bounded number of
//!   times, then failed: nothing was delivered);
//! - anything unclear is UNKNOWN with the hold kept: never resent, never
//!   refunded; it waits for a status query, reconciliation or an operator.

use serde::Serialize;

/// A provider's answer to one top-up call, classified for safety.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider confirmed the delivery.
    Success {
        trans_id: Option<String>,
        ven_transid: Option<String>,
    },
    /// The provider definitely did not deliver (it said so).
    Failed { code: String, message: String },
    /// The request provably never reached the provider: resending is safe.
    NotSent { reason: String },
    /// No definite answer: it may or may not have been delivered.
    Unknown { reason: String, trans_id: Option<String> },
    /// The upstream refuses us before any top-up is processed (IP not on the
    /// allow-list, login rejected, our wallet there is empty): nothing was
    /// delivered, submission pauses.
    Blocked { reason: String },
    /// Never dispatched: the call waited in this process (in-flight cap,
    /// rate pacer) and gave up before anything left the machine. Not the
    /// upstream's fault, so it is not counted against the retry limit.
    Queued { reason: String },
}

/// A provider's answer to a status query about an earlier top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusAnswer {
    Delivered {
        trans_id: Option<String>,
        ven_transid: Option<String>,
    },
    NotDelivered {
        code: String,
        message: String,
    },
    /// Not found, unrecognised or unreachable: nothing is decided.
    StillUnknown {
        reason: String,
    },
}

/// How an exchange with the upstream is labelled in the evidence log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeOutcome {
    Success,
    Failed,
    Unknown,
    NotSent,
    Blocked,
}

impl ExchangeOutcome {
    pub const ALL: [ExchangeOutcome; 5] = [
        ExchangeOutcome::Success,
        ExchangeOutcome::Failed,
        ExchangeOutcome::Unknown,
        ExchangeOutcome::NotSent,
        ExchangeOutcome::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeOutcome::Success => "success",
            ExchangeOutcome::Failed => "failed",
            ExchangeOutcome::Unknown => "unknown",
            ExchangeOutcome::NotSent => "not_sent",
            ExchangeOutcome::Blocked => "blocked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// Compares with the stored name, as the SQL does.
impl PartialEq<&str> for ExchangeOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl TryFrom<String> for ExchangeOutcome {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ExchangeOutcome::parse(&text).ok_or_else(|| format!("unknown exchange outcome {text:?}"))
    }
}

/// Which call an exchange was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKind {
    /// A top-up request.
    Topup,
    /// A status query about an earlier top-up.
    Status,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Topup => "topup",
            ExchangeKind::Status => "status",
        }
    }
}

/// Compares with the stored name, as the SQL does.
impl PartialEq<&str> for ExchangeKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl TryFrom<String> for ExchangeKind {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "topup" => Ok(ExchangeKind::Topup),
            "status" => Ok(ExchangeKind::Status),
            _ => Err(format!("unknown exchange kind {text:?}")),
        }
    }
}

/// What one upstream attempt decides for its top-up (what the store writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success {
        trans_id: Option<String>,
        ven_transid: Option<String>,
    },
    /// A definite failure: the hold is released.
    Failed { code: String, message: String },
    /// Provably never sent: back to PENDING at `next_attempt_at`. When
    /// `count_attempt` is false (the upstream refused us before anything was
    /// sent, e.g. an IP block) the attempt is not counted against the limit.
    Retry {
        next_attempt_at: i64,
        reason: String,
        count_attempt: bool,
    },
    /// No definite answer: kept, checked by status query from `next_check_at`
    /// until `check_deadline`.
    Unknown {
        reason: String,
        trans_id: Option<String>,
        next_check_at: i64,
        check_deadline: i64,
    },
}

impl AttemptOutcome {
    /// The label of the resulting state change, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Success { .. } => "success",
            AttemptOutcome::Failed { .. } => "failed",
            AttemptOutcome::Unknown { .. } => "unknown",
            AttemptOutcome::Retry { .. } => "retry",
        }
    }
}

/// The settled end of a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalOutcome {
    Success,
    Failed,
}

/// The retry and resolution policy (settings, in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPolicy {
    /// Attempts of a top-up whose request provably never left, before it fails.
    pub not_sent_attempts_max: i64,
    /// First retry delay of such a top-up; doubles per attempt.
    pub not_sent_retry_base_ms: i64,
    /// How long submission pauses while the upstream refuses us.
    pub blocked_pause_ms: i64,
    /// First delay before a status query of an UNKNOWN top-up; doubles.
    pub status_check_base_ms: i64,
    /// Longest delay between status queries.
    pub status_check_max_ms: i64,
    /// After this long an UNKNOWN top-up waits for an operator.
    pub unknown_deadline_ms: i64,
}

/// What a top-up call's outcome writes, given the attempts already made
/// (this one included) and the time now; and how the exchange is labelled.
pub fn classify_attempt(
    outcome: Outcome,
    attempts: i64,
    now: i64,
    policy: &AttemptPolicy,
) -> (AttemptOutcome, ExchangeOutcome) {
    match outcome {
        Outcome::Success { trans_id, ven_transid } => (
            AttemptOutcome::Success { trans_id, ven_transid },
            ExchangeOutcome::Success,
        ),
        Outcome::Failed { code, message } => (AttemptOutcome::Failed { code, message }, ExchangeOutcome::Failed),
        Outcome::NotSent { reason } if attempts < policy.not_sent_attempts_max => {
            let delay = policy.not_sent_retry_base_ms << (attempts.clamp(1, 10) - 1);
            let retry = AttemptOutcome::Retry {
                next_attempt_at: now + delay,
                reason,
                count_attempt: true,
            };
            (retry, ExchangeOutcome::NotSent)
        }
        Outcome::NotSent { reason } => (
            // Never sent, so nothing was delivered: failing releases safely.
            AttemptOutcome::Failed {
                code: "upstream_unreachable".into(),
                message: reason,
            },
            ExchangeOutcome::NotSent,
        ),
        Outcome::Blocked { reason } => {
            let retry = AttemptOutcome::Retry {
                next_attempt_at: now + policy.blocked_pause_ms,
                reason,
                count_attempt: false,
            };
            (retry, ExchangeOutcome::Blocked)
        }
        Outcome::Queued { reason } => {
            let retry = AttemptOutcome::Retry {
                next_attempt_at: now + 1,
                reason,
                count_attempt: false,
            };
            (retry, ExchangeOutcome::NotSent)
        }
        Outcome::Unknown { reason, trans_id } => {
            let unknown = AttemptOutcome::Unknown {
                reason,
                trans_id,
                next_check_at: now + policy.status_check_base_ms,
                check_deadline: now + policy.unknown_deadline_ms,
            };
            (unknown, ExchangeOutcome::Unknown)
        }
    }
}

/// What a status query about an UNKNOWN top-up decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckDecision {
    /// Settle it: capture or release, with the ids the answer carried.
    Resolve {
        outcome: FinalOutcome,
        trans_id: Option<String>,
        ven_transid: Option<String>,
        reason: String,
    },
    /// Nothing decided: ask again at `next_check_at`.
    AskAgain { next_check_at: i64, reason: String },
}

/// Turns a status answer into a decision; `checks` is the number of queries
/// made so far (this one included), which sets the backoff.
pub fn classify_check(answer: StatusAnswer, checks: i64, now: i64, policy: &AttemptPolicy) -> CheckDecision {
    match answer {
        StatusAnswer::Delivered { trans_id, ven_transid } => CheckDecision::Resolve {
            outcome: FinalOutcome::Success,
            trans_id,
            ven_transid,
            reason: "upstream status query: delivered".into(),
        },
        StatusAnswer::NotDelivered { code, message } => CheckDecision::Resolve {
            outcome: FinalOutcome::Failed,
            trans_id: None,
            ven_transid: None,
            reason: format!("upstream status query: not delivered ({code}: {message})"),
        },
        StatusAnswer::StillUnknown { reason } => {
            let shift = checks.clamp(1, 20) - 1;
            let delay = policy
                .status_check_base_ms
                .saturating_mul(1 << shift)
                .min(policy.status_check_max_ms);
            CheckDecision::AskAgain {
                next_check_at: now + delay,
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: AttemptPolicy = AttemptPolicy {
        not_sent_attempts_max: 5,
        not_sent_retry_base_ms: 2_000,
        blocked_pause_ms: 5_000,
        status_check_base_ms: 5_000,
        status_check_max_ms: 300_000,
        unknown_deadline_ms: 86_400_000,
    };

    #[test]
    fn not_sent_retries_then_fails_and_blocked_never_counts() {
        let not_sent = || Outcome::NotSent {
            reason: "refused".into(),
        };
        let (o, label) = classify_attempt(not_sent(), 1, 1000, &POLICY);
        assert_eq!(label, ExchangeOutcome::NotSent);
        assert!(matches!(
            o,
            AttemptOutcome::Retry {
                next_attempt_at: 3000,
                count_attempt: true,
                ..
            }
        ));
        let (o, _) = classify_attempt(not_sent(), 3, 1000, &POLICY);
        assert!(
            matches!(
                o,
                AttemptOutcome::Retry {
                    next_attempt_at: 9000,
                    ..
                }
            ),
            "doubles"
        );
        let queued = Outcome::Queued { reason: "cap".into() };
        let (o, label) = classify_attempt(queued, 99, 1000, &POLICY);
        assert_eq!(label, ExchangeOutcome::NotSent);
        assert!(
            matches!(
                o,
                AttemptOutcome::Retry {
                    count_attempt: false,
                    ..
                }
            ),
            "never sent, not counted, never failed: {o:?}"
        );
        let (o, _) = classify_attempt(not_sent(), 5, 1000, &POLICY);
        assert!(matches!(o, AttemptOutcome::Failed { ref code, .. } if code == "upstream_unreachable"));
        let (o, _) = classify_attempt(Outcome::Blocked { reason: "ip".into() }, 99, 0, &POLICY);
        assert!(matches!(
            o,
            AttemptOutcome::Retry {
                count_attempt: false,
                next_attempt_at: 5000,
                ..
            }
        ));
    }

    #[test]
    fn status_checks_back_off_to_a_ceiling() {
        let still = || StatusAnswer::StillUnknown { reason: "?".into() };
        let at = |checks| match classify_check(still(), checks, 0, &POLICY) {
            CheckDecision::AskAgain { next_check_at, .. } => next_check_at,
            other => panic!("{other:?}"),
        };
        assert_eq!((at(1), at(2), at(3)), (5_000, 10_000, 20_000));
        assert_eq!(at(20), 300_000);
        assert!(matches!(
            classify_check(
                StatusAnswer::Delivered {
                    trans_id: None,
                    ven_transid: None
                },
                1,
                0,
                &POLICY
            ),
            CheckDecision::Resolve {
                outcome: FinalOutcome::Success,
                ..
            }
        ));
    }

    fn arb_outcome() -> impl Strategy<Value = Outcome> {
        let text = "[a-z]{0,8}";
        prop_oneof![
            (proptest::option::of(text), proptest::option::of(text))
                .prop_map(|(trans_id, ven_transid)| Outcome::Success { trans_id, ven_transid }),
            (text, text).prop_map(|(code, message)| Outcome::Failed { code, message }),
            text.prop_map(|reason| Outcome::NotSent { reason }),
            (text, proptest::option::of(text)).prop_map(|(reason, trans_id)| Outcome::Unknown { reason, trans_id }),
            text.prop_map(|reason| Outcome::Blocked { reason }),
            text.prop_map(|reason| Outcome::Queued { reason }),
        ]
    }

    proptest! {
        /// An unclear answer is never turned into a refund (Failed) or a
        /// resend (Retry); only a definite answer settles; only a request that
        /// provably never left (or was refused before sending) is retried.
        #[test]
        fn unclear_answers_are_never_refunded_or_resent(
            outcome in arb_outcome(), attempts in 0i64..20, now in 0i64..1_000_000_000,
        ) {
            let (decision, _) = classify_attempt(outcome.clone(), attempts, now, &POLICY);
            match (&outcome, &decision) {
                (Outcome::Unknown { .. }, d) => {
                    let kept = matches!(d, AttemptOutcome::Unknown { .. });
                    prop_assert!(kept);
                }
                (Outcome::Success { .. }, d) => {
                    let captured = matches!(d, AttemptOutcome::Success { .. });
                    prop_assert!(captured);
                }
                (Outcome::Failed { .. } | Outcome::NotSent { .. } | Outcome::Blocked { .. } | Outcome::Queued { .. }, AttemptOutcome::Unknown { .. }) => {
                    prop_assert!(false, "a definite answer became UNKNOWN");
                }
                _ => {}
            }
            if let AttemptOutcome::Retry { next_attempt_at, .. } = decision {
                let not_sent = matches!(outcome, Outcome::NotSent { .. } | Outcome::Blocked { .. } | Outcome::Queued { .. });
                prop_assert!(not_sent);
                prop_assert!(next_attempt_at > now);
            }
            if let AttemptOutcome::Failed { .. } = decision {
                let definite = matches!(outcome, Outcome::Failed { .. } | Outcome::NotSent { .. });
                prop_assert!(definite);
            }
        }
    }
}
