//! The kinds of ledger entries. Every balance change is one entry of one of
//! these kinds, written in the same transaction as the change.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// A top-up's price taken at accept (negative).
    Hold,
    /// A held top-up delivered: the hold becomes final (zero amount).
    Capture,
    /// A held top-up definitely not delivered: the hold comes back (positive).
    Release,
    /// An operator adds funds, with a reason.
    Credit,
    /// An operator removes funds, with a reason.
    Debit,
    /// A correction of an earlier entry, with a reason.
    Reversal,
    /// The opening balance of a customer imported from the old system (one
    /// per customer; its reason names the old balance and the import run).
    Import,
}

impl LedgerKind {
    pub const ALL: [LedgerKind; 7] = [
        LedgerKind::Hold,
        LedgerKind::Capture,
        LedgerKind::Release,
        LedgerKind::Credit,
        LedgerKind::Debit,
        LedgerKind::Reversal,
        LedgerKind::Import,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Hold => "hold",
            LedgerKind::Capture => "capture",
            LedgerKind::Release => "release",
            LedgerKind::Credit => "credit",
            LedgerKind::Debit => "debit",
            LedgerKind::Reversal => "reversal",
            LedgerKind::Import => "import",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Entries that belong to a top-up (and must name it).
    pub fn is_topup_entry(self) -> bool {
        matches!(self, LedgerKind::Hold | LedgerKind::Capture | LedgerKind::Release)
    }

    /// An operator adjustment of `amount`: a credit when positive, else a debit.
    pub fn adjustment(amount: i64) -> Self {
        if amount > 0 {
            LedgerKind::Credit
        } else {
            LedgerKind::Debit
        }
    }
}

impl std::fmt::Display for LedgerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the stored name, as the SQL does (`kind = 'hold'`).
impl PartialEq<&str> for LedgerKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl TryFrom<String> for LedgerKind {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        LedgerKind::parse(&text).ok_or_else(|| format!("unknown ledger kind {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in LedgerKind::ALL {
            assert_eq!(LedgerKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert_eq!(LedgerKind::adjustment(5), LedgerKind::Credit);
        assert_eq!(LedgerKind::adjustment(-5), LedgerKind::Debit);
    }
}
