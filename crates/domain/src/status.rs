//! The top-up state machine.
//!
//! ```text
//! PENDING ──claim──> PROCESSING ──> SUCCESS | FAILED | UNKNOWN
//!    ^                  │
//!    └── retry ─────────┘   (only when the request provably never left)
//! UNKNOWN ──resolve──> SUCCESS | FAILED
//! ```
//!
//! SUCCESS and FAILED are final. UNKNOWN is never resent: the only ways out are
//! a status answer, reconciliation or an operator.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TopupStatus {
    Pending,
    Processing,
    Success,
    Failed,
    Unknown,
}

impl TopupStatus {
    pub const ALL: [TopupStatus; 5] = [
        TopupStatus::Pending,
        TopupStatus::Processing,
        TopupStatus::Success,
        TopupStatus::Failed,
        TopupStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopupStatus::Pending => "PENDING",
            TopupStatus::Processing => "PROCESSING",
            TopupStatus::Success => "SUCCESS",
            TopupStatus::Failed => "FAILED",
            TopupStatus::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// SUCCESS and FAILED never change again.
    pub fn is_final(self) -> bool {
        matches!(self, TopupStatus::Success | TopupStatus::Failed)
    }

    /// Whether `self -> next` is a legal step of the lifecycle. PENDING →
    /// FAILED is the expiry of a top-up that was never sent
    /// (`expired_not_sent`); everything else that settles went upstream.
    pub const fn can_become(self, next: TopupStatus) -> bool {
        use TopupStatus::*;
        matches!(
            (self, next),
            (Pending, Processing)
                | (Pending, Failed)
                | (Processing, Success)
                | (Processing, Failed)
                | (Processing, Unknown)
                | (Processing, Pending)
                | (Unknown, Success)
                | (Unknown, Failed)
        )
    }
}

impl fmt::Display for TopupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for TopupStatus {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        TopupStatus::parse(&text).ok_or_else(|| format!("unknown top-up status {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopupStatus::*;
    use proptest::prelude::*;

    #[test]
    fn finals_are_terminal() {
        for from in [Success, Failed] {
            for to in TopupStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn only_a_never_sent_pending_top_up_fails_without_an_answer() {
        // Expiry (`expired_not_sent`): PENDING was never sent, so failing it
        // releases safely; it can never succeed without being sent.
        assert!(Pending.can_become(Failed));
        assert!(!Pending.can_become(Success) && !Pending.can_become(Unknown));
    }

    #[test]
    fn unknown_is_never_resent() {
        assert!(!Unknown.can_become(Pending));
        assert!(!Unknown.can_become(Processing));
        assert!(Unknown.can_become(Success) && Unknown.can_become(Failed));
    }

    #[test]
    fn names_round_trip() {
        for s in TopupStatus::ALL {
            assert_eq!(TopupStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
    }

    proptest! {
        /// Any walk through legal steps reaches a final state at most once and
        /// never leaves it; a walk can only return to PENDING from PROCESSING.
        #[test]
        fn random_walks_respect_finality(steps in proptest::collection::vec(0usize..5, 0..20)) {
            let mut state = Pending;
            let mut finals = 0;
            for i in steps {
                let next = TopupStatus::ALL[i];
                if state.can_become(next) {
                    prop_assert!(!state.is_final());
                    if next == Pending { prop_assert_eq!(state, Processing); }
                    state = next;
                    if state.is_final() { finals += 1; }
                }
            }
            prop_assert!(finals <= 1);
        }
    }
}
