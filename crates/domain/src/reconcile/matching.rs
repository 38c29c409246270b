//! Matching statement lines to our top-ups, one to one, in the order of the
//! issue (and of the old dispute's lesson 8): the provider's id, the
//! carrier's id, our id (every attempt id of a top-up), then phone + amount
//! within a time window (± 10 minutes by default; ± 1 business day for a
//! file with dates only). Each match records the rule that made it and the
//! time between the two sides. A line whose id names a top-up another line
//! already took is a duplicate (billed twice), never matched again.

use super::line::{Candidate, Expect, LineTime, StatementLine, normalise_id};
use std::collections::HashMap;

/// Default half-width of the time window.
pub const DEFAULT_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Half-width of the window for a file with dates only, in business days.
pub const DATE_ONLY_WINDOW_DAYS: i64 = 1;
const DAY_MS: i64 = 86_400_000;

/// Which rule made a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    UpstreamId,
    CarrierId,
    OurId,
    /// Phone, amount (through the crosswalk) and time window.
    PhoneAmountWindow,
    /// Phone and time window: the line's amount cannot be compared.
    PhoneWindow,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UpstreamId => "upstream_id",
            Rule::CarrierId => "carrier_id",
            Rule::OurId => "our_id",
            Rule::PhoneAmountWindow => "phone_amount_window",
            Rule::PhoneWindow => "phone_window",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchOptions {
    pub window_ms: i64,
    pub date_window_days: i64,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            window_ms: DEFAULT_WINDOW_MS,
            date_window_days: DATE_ONLY_WINDOW_DAYS,
        }
    }
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMatch {
    /// Matched to `candidate` by `rule`; `gap_ms` between the two sides
    /// (whole days for a date-only line).
    Matched {
        candidate: usize,
        rule: Rule,
        gap_ms: i64,
    },
    /// Its id names a top-up another line already matched.
    Duplicate {
        candidate: usize,
        rule: Rule,
    },
    Unmatched,
}

/// Time from a line to a top-up's life (accept to settlement), 0 inside it.
fn gap_ms(time: LineTime, c: &Candidate) -> i64 {
    match time {
        LineTime::At(ms) => {
            let (start, end) = (c.created_at, c.settled_at.max(c.created_at));
            if ms < start {
                start - ms
            } else if ms > end {
                ms - end
            } else {
                0
            }
        }
        LineTime::Day(d) => (d - c.day()).num_days().abs() * DAY_MS,
    }
}

fn within(time: LineTime, gap: i64, opts: &MatchOptions) -> bool {
    match time {
        LineTime::At(_) => gap <= opts.window_ms,
        LineTime::Day(_) => gap <= opts.date_window_days * DAY_MS,
    }
}

/// Whether a line's amount agrees with a top-up (through the crosswalk).
pub(super) fn amount_agrees(expect: Expect, c: &Candidate) -> bool {
    match expect {
        Expect::Face(m) => m == c.face_value,
        Expect::Sent(m) => m == c.amount_sent,
        Expect::Nothing => true,
    }
}

/// Every id of every candidate, upper-cased, to the first candidate with it.
fn index(cands: &[Candidate], ids: impl Fn(&Candidate) -> &[String]) -> HashMap<String, usize> {
    let mut map = HashMap::with_capacity(cands.len());
    for (i, c) in cands.iter().enumerate() {
        for id in ids(c) {
            map.entry(normalise_id(id)).or_insert(i);
        }
    }
    map
}

/// Matches every line, one to one (see the module docs). The result has
/// one entry per line, in order.
pub fn match_lines(lines: &[StatementLine], cands: &[Candidate], opts: &MatchOptions) -> Vec<LineMatch> {
    let mut out = vec![LineMatch::Unmatched; lines.len()];
    let mut used = vec![false; cands.len()];
    let by_id: [(Rule, HashMap<String, usize>); 3] = [
        (Rule::UpstreamId, index(cands, |c| &c.upstream_ids)),
        (Rule::CarrierId, index(cands, |c| &c.carrier_ids)),
        (Rule::OurId, index(cands, |c| &c.our_ids)),
    ];
    for (rule, map) in &by_id {
        for (i, line) in lines.iter().enumerate() {
            if out[i] != LineMatch::Unmatched {
                continue;
            }
            let id = match rule {
                Rule::UpstreamId => &line.upstream_id,
                Rule::CarrierId => &line.carrier_id,
                _ => &line.our_id,
            };
            let Some(&candidate) = id.as_ref().and_then(|id| map.get(id)) else {
                continue;
            };
            out[i] = if used[candidate] {
                LineMatch::Duplicate { candidate, rule: *rule }
            } else {
                used[candidate] = true;
                let gap_ms = gap_ms(line.time, &cands[candidate]);
                LineMatch::Matched {
                    candidate,
                    rule: *rule,
                    gap_ms,
                }
            };
        }
    }
    match_by_phone(lines, cands, opts, &mut out, &mut used);
    out
}

/// The last rule: same phone, amount agreeing, nearest in time within the
/// window, among top-ups no line took. Lines go in time order.
fn match_by_phone(
    lines: &[StatementLine],
    cands: &[Candidate],
    opts: &MatchOptions,
    out: &mut [LineMatch],
    used: &mut [bool],
) {
    let mut by_phone: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in cands.iter().enumerate() {
        if !used[i] {
            by_phone.entry(c.phone.as_str()).or_default().push(i);
        }
    }
    let mut order: Vec<usize> = (0..lines.len())
        .filter(|&i| out[i] == LineMatch::Unmatched && lines[i].phone.is_some())
        .collect();
    order.sort_by_key(|&i| match lines[i].time {
        LineTime::At(ms) => ms,
        LineTime::Day(d) => d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()),
    });
    for i in order {
        let line = &lines[i];
        let Some(phone) = line.phone.as_ref() else { continue };
        let Some(pool) = by_phone.get(phone.as_str()) else {
            continue;
        };
        let best = pool
            .iter()
            .filter(|&&c| !used[c] && amount_agrees(line.expect, &cands[c]))
            .map(|&c| (gap_ms(line.time, &cands[c]), cands[c].created_at, c))
            .filter(|&(gap, _, _)| within(line.time, gap, opts))
            .min();
        if let Some((gap_ms, _, candidate)) = best {
            used[candidate] = true;
            let rule = if line.expect == Expect::Nothing {
                Rule::PhoneWindow
            } else {
                Rule::PhoneAmountWindow
            };
            out[i] = LineMatch::Matched {
                candidate,
                rule,
                gap_ms,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::Delivery;
    use super::*;
    use crate::{Money, Msisdn, TopupStatus};
    use proptest::prelude::*;

    const T0: i64 = 1_742_324_000_000; // 2025-03-18 18:53 UTC

    fn cand(id: &str, phone: &str, face: i64, at: i64) -> Candidate {
        Candidate {
            id: id.into(),
            our_ids: vec![id.into()],
            upstream_ids: vec![format!("LT{id}")],
            carrier_ids: Vec::new(),
            phone: phone.into(),
            face_value: Money::major(face),
            amount_sent: Money::major(face),
            status: TopupStatus::Success,
            created_at: at,
            settled_at: at + 3_000,
        }
    }

    fn line(no: u64, phone: &str, face: i64, at: i64) -> StatementLine {
        StatementLine {
            line_no: no,
            time: LineTime::At(at),
            phone: Some(Msisdn::parse(phone).expect("phone")),
            amount: Money::major(face),
            expect: Expect::Face(Money::major(face)),
            product: None,
            upstream_id: None,
            carrier_id: None,
            our_id: None,
            delivery: Delivery::Delivered,
            definite_failure: false,
            status: None,
        }
    }

    #[test]
    fn rules_apply_in_order_and_ids_beat_windows() {
        let cands = vec![
            cand("a", "5512345678", 20, T0),
            cand("b", "5512345678", 20, T0 + 60_000),
            cand("c", "5599999999", 50, T0),
        ];
        let mut by_upstream = line(2, "5512345678", 20, T0 + 60_000);
        by_upstream.upstream_id = Some("LTA".into());
        let by_window = line(3, "5512345678", 20, T0 + 50_000);
        let mut by_ours = line(4, "5599999999", 50, T0 + 3_600_000);
        by_ours.our_id = Some("C".into());
        let mut duplicate = line(5, "5512345678", 20, T0);
        duplicate.upstream_id = Some("LTA".into());
        let too_far = line(6, "5599999999", 50, T0 + DEFAULT_WINDOW_MS + 10_000);
        let m = match_lines(
            &[by_upstream, by_window, by_ours, duplicate, too_far],
            &cands,
            &MatchOptions::default(),
        );
        assert_eq!(
            m[0],
            LineMatch::Matched {
                candidate: 0,
                rule: Rule::UpstreamId,
                gap_ms: 57_000
            }
        );
        assert_eq!(
            m[1],
            LineMatch::Matched {
                candidate: 1,
                rule: Rule::PhoneAmountWindow,
                gap_ms: 10_000
            }
        );
        assert!(matches!(
            m[2],
            LineMatch::Matched {
                candidate: 2,
                rule: Rule::OurId,
                ..
            }
        ));
        assert_eq!(
            m[3],
            LineMatch::Duplicate {
                candidate: 0,
                rule: Rule::UpstreamId
            }
        );
        assert_eq!(m[4], LineMatch::Unmatched, "c is taken, and too far anyway");
    }

    #[test]
    fn amounts_must_agree_and_dates_match_within_a_day() {
        let cands = vec![cand("a", "5512345678", 20, T0)];
        let wrong_amount = line(2, "5512345678", 30, T0);
        assert_eq!(
            match_lines(&[wrong_amount], &cands, &MatchOptions::default())[0],
            LineMatch::Unmatched
        );
        let mut dated = line(2, "5512345678", 7, T0);
        dated.expect = Expect::Nothing;
        dated.time = LineTime::Day(cands[0].day().succ_opt().expect("next day"));
        assert_eq!(
            match_lines(&[dated.clone()], &cands, &MatchOptions::default())[0],
            LineMatch::Matched {
                candidate: 0,
                rule: Rule::PhoneWindow,
                gap_ms: DAY_MS
            }
        );
        dated.time = LineTime::Day(cands[0].day() + chrono::Days::new(2));
        assert_eq!(
            match_lines(&[dated], &cands, &MatchOptions::default())[0],
            LineMatch::Unmatched
        );
    }

    proptest! {
        /// Whatever the lines and top-ups, no top-up is matched twice and
        /// every phone match is within the window with agreeing amounts.
        #[test]
        fn never_one_topup_twice(
            cands in prop::collection::vec((0u8..3, 1i64..4, 0i64..3_600), 0..30),
            lines in prop::collection::vec((0u8..3, 1i64..4, 0i64..3_600, prop::option::of(0usize..30)), 0..40),
        ) {
            let phone = |p: u8| format!("55123456{:02}", p);
            let cands: Vec<Candidate> = cands.iter().enumerate()
                .map(|(i, &(p, f, t))| cand(&i.to_string(), &phone(p), f * 10, T0 + t * 1000))
                .collect();
            let lines: Vec<StatementLine> = lines.iter().enumerate().map(|(i, &(p, f, t, id))| {
                let mut l = line(i as u64 + 2, &phone(p), f * 10, T0 + t * 1000);
                l.upstream_id = id.map(|id| format!("LT{id}"));
                l
            }).collect();
            let opts = MatchOptions { window_ms: 600_000, date_window_days: 1 };
            let m = match_lines(&lines, &cands, &opts);
            let mut taken = std::collections::HashSet::new();
            for (i, r) in m.iter().enumerate() {
                if let LineMatch::Matched { candidate, rule, gap_ms } = *r {
                    prop_assert!(taken.insert(candidate), "top-up {} matched twice", candidate);
                    if rule == Rule::PhoneAmountWindow {
                        prop_assert!(gap_ms <= opts.window_ms);
                        prop_assert_eq!(cands[candidate].phone.as_str(), lines[i].phone.as_ref().map(|p| p.as_str()).unwrap_or(""));
                        prop_assert_eq!(Expect::Face(cands[candidate].face_value), lines[i].expect);
                    }
                }
            }
        }
    }
}
