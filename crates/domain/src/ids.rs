//! Transaction ids: `RLR` + 32 lowercase hex digits of a UUIDv7.
//!
//! Time-ordered (the first 48 bits are the millisecond clock, so ids sort by
//! creation and index well) and unguessable (74 random bits). The `RLR` prefix
//! is the one the previous system used, so operators recognise them. The same
//! id goes upstream as Latcom's `dist_transid`.

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
}
