//! Classifying a matched statement: every line gets exactly one class, and
//! every top-up of the period that the statement should have named and did
//! not gets one too; totals per class in MXN (and in the statement's unit,
//! which must tie out to the statement's total), per day and per month.
//! From the same evidence, the proposed outcomes of our UNKNOWN top-ups:
//! SUCCESS on a line with a carrier id or a provider's delivered status;
//! FAILED only from a provider's full statement inside its coverage (the
//! top-up absent, or a failure whose code proves non-delivery), never from a
//! `Fail` line alone. Nothing here applies anything: an operator does.

use super::format::{Delivery, Role, StatementKind};
use super::line::{Candidate, StatementLine};
use super::matching::{LineMatch, Rule, amount_agrees};
use crate::{FinalOutcome, Money, TopupStatus};
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::BTreeMap;

/// Who owes whom, by kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Both sides agree (delivered and SUCCESS, or not delivered and FAILED).
    Matched,
    /// Delivered and SUCCESS, but the amounts differ.
    AmountDiffers,
    /// Delivered at the provider or carrier, FAILED with us: the customer was
    /// refunded and the provider is still owed.
    DeliveredButFailed,
    /// SUCCESS with us, absent from a full statement (or said not delivered):
    /// the provider owes us, or the customer paid for nothing.
    SuccessNotInStatement,
    /// In the statement, and no top-up of ours matches it.
    UnknownToUs,
    /// Our UNKNOWN (or still in flight), and the statement says something.
    UnknownWithEvidence,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Matched,
        Class::AmountDiffers,
        Class::DeliveredButFailed,
        Class::SuccessNotInStatement,
        Class::UnknownToUs,
        Class::UnknownWithEvidence,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Matched => "matched",
            Class::AmountDiffers => "amount_differs",
            Class::DeliveredButFailed => "delivered_but_failed",
            Class::SuccessNotInStatement => "success_not_in_statement",
            Class::UnknownToUs => "unknown_to_us",
            Class::UnknownWithEvidence => "unknown_with_evidence",
        }
    }

    pub fn parse(text: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// The statement's dates in which "absent" may be said (inclusive, business days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Coverage {
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }
}

/// What kind of statement is being classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementTraits {
    pub role: Role,
    pub kind: StatementKind,
    pub coverage: Coverage,
}

/// One classified row: a line (`line` set) or a top-up the statement
/// should have named (`line` unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub class: Class,
    /// Index into the lines.
    pub line: Option<usize>,
    /// Index into the candidates.
    pub candidate: Option<usize>,
    pub rule: Option<Rule>,
    pub gap_ms: Option<i64>,
    pub day: NaiveDate,
    /// Our face value when matched, else what the line names in MXN (0 when
    /// it names no MXN value).
    pub mxn: Money,
    /// The line's amount in the statement's unit (0 for a top-up row).
    pub statement_amount: Money,
    pub note: &'static str,
}

/// A proposed settlement of an UNKNOWN top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub candidate: usize,
    pub line: Option<usize>,
    pub outcome: FinalOutcome,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassTotal {
    pub count: u64,
    pub lines: u64,
    pub topups: u64,
    pub mxn: Money,
    pub statement_amount: Money,
}

impl ClassTotal {
    fn add(&mut self, row: &Row) {
        self.count += 1;
        if row.line.is_some() {
            self.lines += 1;
        } else {
            self.topups += 1;
        }
        self.mxn = Money(self.mxn.0 + row.mxn.0);
        self.statement_amount = Money(self.statement_amount.0 + row.statement_amount.0);
    }
}

/// Totals per class, and per class per day (`YYYY-MM-DD`) and month (`YYYY-MM`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub classes: BTreeMap<Class, ClassTotal>,
    pub by_day: BTreeMap<String, BTreeMap<Class, ClassTotal>>,
    pub by_month: BTreeMap<String, BTreeMap<Class, ClassTotal>>,
}

impl Totals {
    pub fn of(rows: &[Row]) -> Totals {
        let mut t = Totals {
            classes: Class::ALL.into_iter().map(|c| (c, ClassTotal::default())).collect(),
            ..Totals::default()
        };
        for row in rows {
            t.classes.entry(row.class).or_default().add(row);
            let day = row.day.format("%Y-%m-%d").to_string();
            let month = day[..7].to_string();
            t.by_day.entry(day).or_default().entry(row.class).or_default().add(row);
            t.by_month
                .entry(month)
                .or_default()
                .entry(row.class)
                .or_default()
                .add(row);
        }
        t
    }

    /// Σ statement amounts over the classes.
    pub fn statement_amount(&self) -> Money {
        Money(self.classes.values().map(|c| c.statement_amount.0).sum())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub rows: Vec<Row>,
    pub proposals: Vec<Proposal>,
    pub totals: Totals,
}

/// The lines' classes do not add up to the statement's total.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the classes add up to {classes}, the statement to {statement}: the run does not tie out")]
pub struct TieOutError {
    pub classes: Money,
    pub statement: Money,
}

/// Classifies every line and every top-up of the coverage (see the module docs).
pub fn classify(
    traits: &StatementTraits,
    lines: &[StatementLine],
    cands: &[Candidate],
    matches: &[LineMatch],
) -> Result<Classification, TieOutError> {
    let mut rows = Vec::with_capacity(lines.len());
    let mut proposals = Vec::new();
    let mut matched = vec![false; cands.len()];
    for (i, (line, m)) in lines.iter().zip(matches).enumerate() {
        let row = match *m {
            LineMatch::Matched {
                candidate,
                rule,
                gap_ms,
            } => {
                matched[candidate] = true;
                let c = &cands[candidate];
                let (class, note) = line_class(line, c);
                if c.status == TopupStatus::Unknown
                    && let Some((outcome, reason)) = propose_from_line(traits, line, c)
                {
                    proposals.push(Proposal {
                        candidate,
                        line: Some(i),
                        outcome,
                        reason,
                    });
                }
                Row {
                    class,
                    line: Some(i),
                    candidate: Some(candidate),
                    rule: Some(rule),
                    gap_ms: Some(gap_ms),
                    day: line.day(),
                    mxn: c.face_value,
                    statement_amount: line.amount,
                    note,
                }
            }
            LineMatch::Duplicate { candidate, rule } => unknown_line(
                i,
                line,
                Some(candidate),
                Some(rule),
                "a second line for a top-up already matched",
            ),
            LineMatch::Unmatched => unknown_line(i, line, None, None, "no top-up of ours matches"),
        };
        rows.push(row);
    }
    let total = Money(lines.iter().map(|l| l.amount.0).sum());
    for (candidate, c) in cands.iter().enumerate() {
        if matched[candidate] || !traits.coverage.contains(c.day()) || traits.kind != StatementKind::Full {
            continue;
        }
        let Some((class, note)) = absent_class(traits, c) else {
            continue;
        };
        if c.status == TopupStatus::Unknown && traits.role == Role::Provider {
            proposals.push(Proposal {
                candidate,
                line: None,
                outcome: FinalOutcome::Failed,
                reason: "absent from the provider's full statement inside its coverage",
            });
        }
        rows.push(Row {
            class,
            line: None,
            candidate: Some(candidate),
            rule: None,
            gap_ms: None,
            day: c.day(),
            mxn: c.face_value,
            statement_amount: Money(0),
            note,
        });
    }
    let totals = Totals::of(&rows);
    if totals.statement_amount() != total {
        return Err(TieOutError {
            classes: totals.statement_amount(),
            statement: total,
        });
    }
    Ok(Classification {
        rows,
        proposals,
        totals,
    })
}

fn unknown_line(
    i: usize,
    line: &StatementLine,
    candidate: Option<usize>,
    rule: Option<Rule>,
    note: &'static str,
) -> Row {
    Row {
        class: Class::UnknownToUs,
        line: Some(i),
        candidate,
        rule,
        gap_ms: None,
        day: line.day(),
        mxn: line.mxn().unwrap_or(Money(0)),
        statement_amount: line.amount,
        note,
    }
}

/// The class of a matched line.
fn line_class(line: &StatementLine, c: &Candidate) -> (Class, &'static str) {
    match (c.status, line.shows_delivery()) {
        (TopupStatus::Success, true) if amount_agrees(line.expect, c) => (Class::Matched, "delivered and SUCCESS"),
        (TopupStatus::Success, true) => (Class::AmountDiffers, "delivered and SUCCESS, amounts differ"),
        (TopupStatus::Success, false) => (
            Class::SuccessNotInStatement,
            "SUCCESS with us, the statement says not delivered",
        ),
        (TopupStatus::Failed, true) => (Class::DeliveredButFailed, "delivered, FAILED with us"),
        (TopupStatus::Failed, false) => (Class::Matched, "not delivered and FAILED"),
        (TopupStatus::Unknown, _) => (Class::UnknownWithEvidence, "UNKNOWN with us"),
        (_, _) => (Class::UnknownWithEvidence, "still in flight with us"),
    }
}

/// What a matched line proves about an UNKNOWN top-up.
fn propose_from_line(
    traits: &StatementTraits,
    line: &StatementLine,
    c: &Candidate,
) -> Option<(FinalOutcome, &'static str)> {
    if line.carrier_id.is_some() {
        return Some((
            FinalOutcome::Success,
            "a statement line with the carrier's id: delivered",
        ));
    }
    let provider = traits.role == Role::Provider;
    if provider && line.delivery == Delivery::Delivered {
        return Some((FinalOutcome::Success, "the provider's statement says delivered"));
    }
    let definite = provider
        && traits.kind == StatementKind::Full
        && traits.coverage.contains(c.day())
        && line.delivery == Delivery::NotDelivered
        && line.definite_failure;
    definite.then_some((
        FinalOutcome::Failed,
        "the provider's full statement: a failure whose code proves nothing was delivered",
    ))
}

/// The class of a top-up of the coverage that a full statement left out.
fn absent_class(traits: &StatementTraits, c: &Candidate) -> Option<(Class, &'static str)> {
    match c.status {
        TopupStatus::Success => Some((
            Class::SuccessNotInStatement,
            "SUCCESS with us, absent from the statement",
        )),
        TopupStatus::Unknown if traits.role == Role::Provider => Some((
            Class::UnknownWithEvidence,
            "UNKNOWN with us, absent from the provider's full statement",
        )),
        TopupStatus::Unknown => Some((
            Class::UnknownWithEvidence,
            "UNKNOWN with us, absent from the carrier's statement",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::line::{Expect, LineTime};
    use super::super::matching::{MatchOptions, match_lines};
    use super::*;
    use crate::Msisdn;

    const T0: i64 = 1_742_324_000_000;

    fn cand(id: &str, status: TopupStatus, face: i64) -> Candidate {
        Candidate {
            id: id.into(),
            our_ids: vec![id.into()],
            upstream_ids: vec![format!("LT{id}")],
            carrier_ids: Vec::new(),
            phone: "5512345678".into(),
            face_value: Money::major(face),
            amount_sent: Money::major(face),
            status,
            created_at: T0,
            settled_at: T0 + 5_000,
        }
    }

    fn line(no: u64, id: &str, face: i64, delivery: Delivery, carrier: Option<&str>) -> StatementLine {
        StatementLine {
            line_no: no,
            time: LineTime::At(T0 + 1_000),
            phone: Some(Msisdn::parse("5512345678").expect("phone")),
            amount: Money::major(face),
            expect: Expect::Sent(Money::major(face)),
            product: None,
            upstream_id: Some(format!("LT{id}").to_ascii_uppercase()),
            carrier_id: carrier.map(str::to_string),
            our_id: None,
            delivery,
            definite_failure: false,
            status: None,
        }
    }

    fn traits(role: Role, kind: StatementKind) -> StatementTraits {
        let day = super::super::line::business_day(T0);
        StatementTraits {
            role,
            kind,
            coverage: Coverage { from: day, to: day },
        }
    }

    fn run(t: &StatementTraits, lines: &[StatementLine], cands: &[Candidate]) -> Classification {
        let m = match_lines(lines, cands, &MatchOptions::default());
        classify(t, lines, cands, &m).expect("ties out")
    }

    #[test]
    fn every_class_from_a_provider_full_statement() {
        use Delivery::*;
        let cands = vec![
            cand("ok", TopupStatus::Success, 20),
            cand("amt", TopupStatus::Success, 20),
            cand("dbf", TopupStatus::Failed, 30),
            cand("gone", TopupStatus::Success, 40),
            cand("unk1", TopupStatus::Unknown, 50),
            cand("unk2", TopupStatus::Unknown, 60),
            cand("unk3", TopupStatus::Unknown, 70),
            cand("ff", TopupStatus::Failed, 80),
        ];
        let mut wallet = line(8, "unk3", 70, NotDelivered, None);
        wallet.definite_failure = true;
        let lines = vec![
            line(2, "ok", 20, Delivered, Some("9001")),
            line(3, "amt", 25, Delivered, Some("9002")),
            line(4, "dbf", 30, NotDelivered, Some("9003")),
            line(5, "stranger", 10, Delivered, Some("9004")),
            line(6, "unk1", 50, Delivered, None),
            line(7, "ff", 80, NotDelivered, None),
            wallet,
        ];
        let c = run(&traits(Role::Provider, StatementKind::Full), &lines, &cands);
        let classes: Vec<(Class, Option<usize>)> = c.rows.iter().map(|r| (r.class, r.candidate)).collect();
        assert_eq!(
            classes,
            vec![
                (Class::Matched, Some(0)),
                (Class::AmountDiffers, Some(1)),
                (Class::DeliveredButFailed, Some(2)),
                (Class::UnknownToUs, None),
                (Class::UnknownWithEvidence, Some(4)),
                (Class::Matched, Some(7)),
                (Class::UnknownWithEvidence, Some(6)),
                (Class::SuccessNotInStatement, Some(3)),
                (Class::UnknownWithEvidence, Some(5)),
            ]
        );
        let props: Vec<(usize, FinalOutcome)> = c.proposals.iter().map(|p| (p.candidate, p.outcome)).collect();
        assert_eq!(
            props,
            vec![
                (4, FinalOutcome::Success),
                (6, FinalOutcome::Failed),
                (5, FinalOutcome::Failed)
            ]
        );
        let t = &c.totals.classes;
        assert_eq!(t[&Class::Matched].mxn, Money::major(100));
        assert_eq!(t[&Class::UnknownWithEvidence].mxn, Money::major(180));
        assert_eq!(t[&Class::UnknownToUs].statement_amount, Money::major(10));
        assert_eq!(
            c.totals.statement_amount(),
            Money::major(20 + 25 + 30 + 10 + 50 + 80 + 70)
        );
        assert_eq!(c.totals.by_month.len(), 1);
    }

    #[test]
    fn a_fail_line_alone_or_a_carrier_settles_no_failure_and_exceptions_say_no_absence() {
        let cands = vec![cand("u", TopupStatus::Unknown, 20), cand("s", TopupStatus::Success, 30)];
        let fail = line(2, "u", 20, Delivery::NotDelivered, None);
        let c = run(
            &traits(Role::Provider, StatementKind::Full),
            std::slice::from_ref(&fail),
            &cands,
        );
        assert!(c.proposals.is_empty(), "a plain Fail proves nothing: {:?}", c.proposals);
        let c = run(&traits(Role::Carrier, StatementKind::Full), &[], &cands);
        assert!(c.proposals.is_empty(), "a carrier cannot fail a top-up");
        assert_eq!(c.totals.classes[&Class::SuccessNotInStatement].count, 1);
        let c = run(&traits(Role::Carrier, StatementKind::Exceptions), &[], &cands);
        assert!(c.rows.is_empty(), "an exceptions list says nothing of absence");
        let billed = line(2, "u", 20, Delivery::Delivered, Some("777"));
        let c = run(&traits(Role::Carrier, StatementKind::Exceptions), &[billed], &cands);
        assert_eq!(c.proposals.len(), 1);
        assert_eq!(c.proposals[0].outcome, FinalOutcome::Success);
    }

    #[test]
    fn outside_the_coverage_nothing_is_absent() {
        let mut old = cand("o", TopupStatus::Success, 20);
        old.created_at -= 3 * 86_400_000;
        let c = run(&traits(Role::Provider, StatementKind::Full), &[], &[old]);
        assert!(c.rows.is_empty());
    }
}
