//! Reconciliation: a provider's or a carrier's statement against our
//! top-ups, as pure decisions (`RECONCILE.md` has the formats and the old
//! dispute's lessons).
//!
//! | file | what |
//! |---|---|
//! | `format.rs` | statement formats and the price crosswalk, as data; the built-in `latcom` and `carrier` |
//! | `line.rs` | a statement line, one of our top-ups as a [`Candidate`], the Mexico City business day |
//! | `parse.rs` | a file read by its format: lines, and rejects with line numbers and reasons |
//! | `matching.rs` | one-to-one matching by id, then phone + amount + time window, recording the rule |
//! | `classify.rs` | a class for every line and every top-up of the coverage, totals, proposals for UNKNOWNs |
//!
//! The service reads the file and the top-ups, calls these in order
//! (`parse_statement`, `match_lines`, `classify`) and stores the run; an
//! operator applies the proposals through the ordinary resolution.

pub mod classify;
pub mod format;
pub mod line;
pub mod matching;
pub mod parse;

pub use classify::{
    Class, ClassTotal, Classification, Coverage, Proposal, Row, StatementTraits, TieOutError, Totals, classify,
};
pub use format::{AmountBasis, Crosswalk, CrosswalkEntry, Delivery, Role, StatementFormat, StatementKind};
pub use line::{Candidate, Expect, LineTime, StatementLine, business_day, normalise_id};
pub use matching::{LineMatch, MatchOptions, Rule, match_lines};
pub use parse::{FormatError, ParsedStatement, Reject, parse_statement, records_at_lines};
