//! Transaction ids: `RLR` + 32 lowercase hex digits of a UUIDv7.
//!
//! Time-ordered (the first 48 bits are the millisecond clock, so ids sort by
//! creation and index well) and unguessable (74 random bits). The `RLR` prefix
//! is the one the previous system used, so operators recognise them.
//!
//! **Attempt ids.** What goes upstream as Latcom's `dist_transid` is the
//! attempt id of each send ([`attempt_id`]): the top-up id on its first
//! send, `<id>-<n>` on the n-th. A top-up is only sent again when the
//! provider provably did not deliver the earlier send (never connected,
//! refused before processing, our wallet there was empty), and the provider
//! may remember an id it answered: a fresh id for every send keeps a resend
//! from being mistaken for a duplicate. [`topup_of_attempt`] maps any attempt
//! id back to its top-up (status answers, reconciliation).

pub const TOPUP_ID_PREFIX: &str = "RLR";

pub fn new_topup_id() -> String {
    format!("{TOPUP_ID_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// Cheap shape check before an id is used in a lookup: one of ours, or one
/// imported from the old system ([`is_legacy_id`]).
pub fn valid_topup_id(text: &str) -> bool {
    is_own_id(text) || is_legacy_id(text)
}

/// `RLR` + 32 hex digits: issued by Recarga, unguessable.
pub fn is_own_id(text: &str) -> bool {
    text.len() == TOPUP_ID_PREFIX.len() + 32
        && text.starts_with(TOPUP_ID_PREFIX)
        && text[TOPUP_ID_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// `RLR` + 13 decimal digits (the old system's millisecond clock): kept for
/// imported top-ups, and guessable, so never readable without credentials.
pub fn is_legacy_id(text: &str) -> bool {
    text.len() == TOPUP_ID_PREFIX.len() + 13
        && text.starts_with(TOPUP_ID_PREFIX)
        && text[TOPUP_ID_PREFIX.len()..].bytes().all(|b| b.is_ascii_digit())
}

/// The `dist_transid` of the `send`-th send of a top-up (1-based).
pub fn attempt_id(topup_id: &str, send: i64) -> String {
    if send <= 1 {
        topup_id.to_string()
    } else {
        format!("{topup_id}-{send}")
    }
}

/// The top-up an attempt id belongs to.
pub fn topup_of_attempt(attempt: &str) -> &str {
    match attempt.rsplit_once('-') {
        Some((id, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => id,
        _ => attempt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_unique_and_ordered() {
        let a = new_topup_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_topup_id();
        assert!(valid_topup_id(&a) && valid_topup_id(&b));
        assert!(a < b);
        assert!(!valid_topup_id("RLR123"));
        assert!(!valid_topup_id(&a.replace("RLR", "XYZ")));
        assert!(valid_topup_id("RLR1760353500123") && is_legacy_id("RLR1760353500123"));
        assert!(!is_own_id("RLR1760353500123") && is_own_id(&a));
        assert!(!valid_topup_id("RLR176035350012") && !valid_topup_id("RLR17603535001234"));
    }

    #[test]
    fn attempt_ids_are_fresh_per_send_and_map_back() {
        let id = new_topup_id();
        assert_eq!(attempt_id(&id, 0), id);
        assert_eq!(attempt_id(&id, 1), id);
        assert_eq!(attempt_id(&id, 2), format!("{id}-2"));
        assert_ne!(attempt_id(&id, 2), attempt_id(&id, 3));
        for n in 0..5 {
            assert_eq!(topup_of_attempt(&attempt_id(&id, n)), id);
        }
        assert_eq!(topup_of_attempt("RLR1760353500123"), "RLR1760353500123");
    }
}
