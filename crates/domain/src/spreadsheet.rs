//! CSV cells that a spreadsheet cannot run as formulas, and their exact inverse.
//!
//! A spreadsheet opening a CSV treats a cell that starts with `=`, `+`, `-`
//! or `@` (and, in some, a tab or carriage return before them) as a formula:
//! a customer's reference `=HYPERLINK("https://evil.example", "click")` would
//! run in an operator's spreadsheet. Every CSV we write passes its free-text
//! cells (references, messages, names, upstream codes and ids, customer ids)
//! through [`guard_cell`], which prefixes such a cell with `'` so it is shown
//! as text. Columns we produce ourselves in a fixed numeric or normalised form
//! (amounts, digits-only phones, our top-up ids, states, currencies, times)
//! are never passed through it and never altered, and a cell that is a plain
//! decimal number (`-3.07`, `+5215512345678`) is a value, not a formula, so
//! the guard leaves it alone too.
//!
//! [`unguard_cell`] is the exact inverse: `unguard_cell(&guard_cell(s)) == s`
//! for every `s`. **Every importer of our CSVs** (reconciliation files,
//! carriers' statements, legacy exports, anything that reads back a file this
//! system wrote) must pass the same free-text columns through
//! [`unguard_cell`], so a reference that really starts with `=` or `'` comes
//! back byte for byte.

use std::borrow::Cow;

/// The first characters that make a spreadsheet read a cell as a formula.
pub const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// The prefix that makes a spreadsheet show a cell as text.
pub const TEXT_PREFIX: char = '\'';

/// `text` made safe to open in a spreadsheet: `'` in front when it would be
/// read as a formula (or when it already starts with `'` in front of one, so
/// that [`unguard_cell`] can tell the two apart); unchanged otherwise.
pub fn guard_cell(text: &str) -> Cow<'_, str> {
    if needs_prefix(text) {
        Cow::Owned(format!("{TEXT_PREFIX}{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The cell as it was before [`guard_cell`]: removes the one `'` that the
/// guard added, and nothing else. Importers of our CSV files must use it on
/// every free-text column (see the module docs).
pub fn unguard_cell(cell: &str) -> Cow<'_, str> {
    match cell.strip_prefix(TEXT_PREFIX) {
        Some(rest) if needs_prefix(rest) => Cow::Borrowed(rest),
        _ => Cow::Borrowed(cell),
    }
}

/// True when a spreadsheet would run `text`, or when `text` is `'` in front
/// of something the guard prefixes (so the prefix stays unambiguous).
fn needs_prefix(text: &str) -> bool {
    match text.chars().next() {
        Some(TEXT_PREFIX) => needs_prefix(&text[TEXT_PREFIX.len_utf8()..]),
        Some(c) if FORMULA_STARTS.contains(&c) => !is_plain_number(text),
        _ => false,
    }
}

/// An optional sign, digits, and an optional `.` followed by digits.
fn is_plain_number(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formulas_are_prefixed() {
        for text in [
            "=HYPERLINK(\"https://evil.example\",\"click\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A9)",
            "\t=1+1",
            "\r=1+1",
            "-",
            "=",
        ] {
            assert_eq!(guard_cell(text), format!("'{text}"), "{text:?}");
        }
    }

    #[test]
    fn ordinary_text_and_plain_numbers_are_untouched() {
        for text in [
            "order-1001",
            "RLR0192f5a0c3d47e8a9b1c2d3e4f506172",
            "",
            "5512345678",
            "-3.07",
            "+5215512345678",
            "-120054",
            "20.50",
            "a=b",
            "'quoted",
            "''",
        ] {
            assert_eq!(guard_cell(text), text, "{text:?}");
            assert!(matches!(guard_cell(text), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn a_quote_in_front_of_a_formula_is_prefixed_too() {
        assert_eq!(guard_cell("'=1+1"), "''=1+1");
        assert_eq!(unguard_cell("''=1+1"), "'=1+1");
        assert_eq!(unguard_cell("'=1+1"), "=1+1");
        // A leading quote the guard did not add stays.
        assert_eq!(unguard_cell("'quoted"), "'quoted");
        assert_eq!(unguard_cell("'-3.07"), "'-3.07");
    }

    proptest! {
        #[test]
        fn unguard_inverts_guard(text in "['=+@\\t\\r-]{0,3}\\PC{0,12}") {
            let guarded = guard_cell(&text);
            prop_assert_eq!(unguard_cell(&guarded), text.as_str());
        }

        #[test]
        fn a_guarded_cell_never_starts_a_formula(text in "['=+@\\t\\r-]{0,3}\\PC{0,12}") {
            let guarded = guard_cell(&text);
            let first = guarded.chars().next();
            prop_assert!(
                first.is_none_or(|c| !FORMULA_STARTS.contains(&c)) || is_plain_number(&guarded)
            );
        }
    }
}
