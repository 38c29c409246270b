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

/// Cheap shape check before an id is used in a lookup.
pub fn valid_topup_id(text: &str) -> bool {
    text.len() == TOPUP_ID_PREFIX.len() + 32
        && text.starts_with(TOPUP_ID_PREFIX)
        && text[TOPUP_ID_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
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
    }
}
