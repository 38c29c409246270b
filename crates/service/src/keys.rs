//! API keys: `rk_<prefix>_<secret>`.
//!
//! The 12-hex-digit prefix is public (it is how a key is found and named in
//! logs and lists); the 40-hex-digit secret (160 random bits) is shown once and
//! never stored: the database keeps the SHA-256 digest of the whole key, and
//! verification compares digests in constant time. A fast digest is right
//! here: the secret is random, not a human password, so there is nothing to
//! brute-force, and argon2 on every request would cost tens of milliseconds.
//!
//! **Imported keys** are the old system's keys, kept so that its clients run
//! unchanged (`recarga key import`). They are arbitrary strings that may
//! repeat across customers, so they are found by the customer id the client
//! sends (`x-customer-id`) and the key's digest; only the digest is stored,
//! and lists name them by a random `imp_…` prefix and their first characters.

use crate::error::{Result, ServiceError};
use recarga_store::{ApiKey, NewApiKey, Store};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "rk_";

pub struct IssuedKey {
    /// The full key, to be shown once.
    pub plaintext: String,
    pub record: NewApiKey,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn digest(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Issues a key for `customer_id`, stores its digest, returns the plaintext
/// (shown once) and the key's id.
pub async fn issue_key(
    store: &dyn Store,
    customer_id: &str,
    label: Option<String>,
    actor: &str,
) -> Result<(String, String)> {
    if store.get_customer(customer_id).await?.is_none() {
        return Err(ServiceError::NotFound);
    }
    let issued = issue(customer_id, label);
    store.insert_api_key(&issued.record, actor).await?;
    Ok((issued.plaintext, issued.record.id))
}

/// Imports a key of the old system (digest only); returns it as stored and
/// the warnings of its import (short, or a key some customer already has).
pub async fn import_key(
    store: &dyn Store,
    customer_id: &str,
    plaintext: &str,
    label: Option<String>,
    actor: &str,
) -> Result<(ApiKey, Vec<String>)> {
    if store.get_customer(customer_id).await?.is_none() {
        return Err(ServiceError::NotFound);
    }
    let (record, mut warnings) = import(customer_id, plaintext, label).map_err(|e| ServiceError::invalid("key", e))?;
    if let Some(other) = store
        .keys_with_digest(&record.digest)
        .await?
        .iter()
        .find(|k| k.revoked_at.is_none())
    {
        warnings.push(if other.customer_id == customer_id {
            format!("this key is already imported for {customer_id} ({}): imported again", other.prefix)
        } else {
            "this key is also a key of another customer: it only opens this account together with x-customer-id; rotate it"
                .to_string()
        });
    }
    store.insert_api_key(&record, actor).await?;
    let stored = store.find_api_key(&record.id).await?.ok_or(ServiceError::NotFound)?;
    Ok((stored, warnings))
}

/// Issues a successor of the key `id` (id or prefix) and retires the old one
/// after `overlap_s` seconds; returns the successor's plaintext (shown once),
/// its id, and the old key as retired.
pub async fn rotate_key(store: &dyn Store, id: &str, overlap_s: u64, actor: &str) -> Result<(String, String, ApiKey)> {
    let old = store.find_api_key(id).await?.ok_or(ServiceError::NotFound)?;
    let successor = issue(&old.customer_id, Some(format!("successor of {}", old.prefix)));
    let until = recarga_store::now_ms() + overlap_s as i64 * 1000;
    let retired = store.rotate_api_key(&old.id, &successor.record, until, actor).await?;
    Ok((successor.plaintext, successor.record.id, retired))
}

/// Imported keys shorter than this are imported with a warning.
pub const IMPORTED_KEY_MIN_CHARS: usize = 12;
/// Longest imported key accepted.
pub const IMPORTED_KEY_MAX_CHARS: usize = 512;

/// An old key to import (digest only), or why it cannot be.
pub fn import(customer_id: &str, plaintext: &str, label: Option<String>) -> Result<(NewApiKey, Vec<String>), String> {
    let chars = plaintext.chars().count();
    if chars == 0 || chars > IMPORTED_KEY_MAX_CHARS {
        return Err(format!("a key is 1-{IMPORTED_KEY_MAX_CHARS} characters"));
    }
    if !plaintext.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a key is printable ASCII without spaces".into());
    }
    let mut warnings = Vec::new();
    if chars < IMPORTED_KEY_MIN_CHARS {
        warnings.push(format!(
            "the key has only {chars} characters (fewer than {IMPORTED_KEY_MIN_CHARS}): easy to guess; rotate it soon"
        ));
    }
    let hint: String = plaintext.chars().take(4).collect();
    Ok((
        NewApiKey {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            customer_id: customer_id.to_string(),
            prefix: format!("imp_{}", hex(&rand::random::<[u8; 6]>())),
            digest: digest(plaintext),
            label,
            kind: "imported".into(),
            hint: Some(format!("{hint}…")),
        },
        warnings,
    ))
}

/// A new random key for `customer_id`.
pub fn issue(customer_id: &str, label: Option<String>) -> IssuedKey {
    let prefix = hex(&rand::random::<[u8; 6]>());
    let secret = hex(&rand::random::<[u8; 20]>());
    let plaintext = format!("{KEY_PREFIX}{prefix}_{secret}");
    IssuedKey {
        record: NewApiKey {
            id: format!("key_{}", uuid::Uuid::now_v7().simple()),
            customer_id: customer_id.to_string(),
            prefix: prefix.clone(),
            digest: digest(&plaintext),
            label,
            kind: "issued".into(),
            hint: None,
        },
        plaintext,
    }
}

/// The lookup prefix of a presented key, if it has the right shape.
pub fn prefix_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let shaped =
        prefix.len() == 12 && secret.len() == 40 && prefix.bytes().chain(secret.bytes()).all(|b| b.is_ascii_hexdigit());
    shaped.then_some(prefix)
}

/// Whether `presented` is the key stored as `stored` and still valid now.
pub fn verify(presented: &str, stored: &ApiKey) -> bool {
    let matches: bool = digest(presented).as_bytes().ct_eq(stored.digest.as_bytes()).into();
    matches && stored.is_valid_at(recarga_store::now_ms())
}

/// Finds and checks the key a request presents: an issued key by its
/// prefix, an imported one by the claimed customer id and its digest. A
/// claimed customer id must match the key's customer.
pub async fn authenticate(
    store: &dyn Store,
    presented: &str,
    claimed_customer: Option<&str>,
) -> recarga_store::Result<Option<(ApiKey, recarga_store::Customer)>> {
    let found = match (prefix_of(presented), claimed_customer) {
        (Some(prefix), _) => store.find_caller(prefix).await?,
        (None, Some(customer)) => store.find_imported_caller(customer, &digest(presented)).await?,
        (None, None) => None,
    };
    Ok(found.filter(|(key, _)| verify(presented, key) && claimed_customer.is_none_or(|c| c == key.customer_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(issued: &IssuedKey) -> ApiKey {
        ApiKey {
            id: issued.record.id.clone(),
            customer_id: issued.record.customer_id.clone(),
            prefix: issued.record.prefix.clone(),
            digest: issued.record.digest.clone(),
            label: None,
            created_at: 0,
            revoked_at: None,
            kind: "issued".into(),
            hint: None,
            expires_at: None,
            last_used_at: None,
            replaced_by: None,
        }
    }

    #[test]
    fn issued_keys_verify_and_others_do_not() {
        let k = issue("C1", None);
        assert_eq!(prefix_of(&k.plaintext), Some(k.record.prefix.as_str()));
        let row = stored(&k);
        assert!(verify(&k.plaintext, &row));
        let mut tampered = k.plaintext.clone();
        tampered.pop();
        tampered.push(if k.plaintext.ends_with('0') { '1' } else { '0' });
        assert!(!verify(&tampered, &row));
        assert!(!k.record.digest.contains(&k.plaintext[16..]));
        let revoked = ApiKey {
            revoked_at: Some(1),
            ..row
        };
        assert!(!verify(&k.plaintext, &revoked));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "rk_",
            "rk_abc_def",
            "xx_0123456789ab_0123456789012345678901234567890123456789",
            "rk_0123456789ab_zz23456789012345678901234567890123456789",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn imported_keys_keep_only_a_digest_and_expire_after_rotation() {
        let (record, warnings) = import("C1", "legacy-key-0001", None).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(record.kind, "imported");
        assert_eq!(record.hint.as_deref(), Some("lega…"));
        assert!(!record.digest.contains("legacy") && !record.prefix.contains("legacy"));
        let (_, warnings) = import("C1", "short", None).unwrap();
        assert_eq!(warnings.len(), 1, "a short key is imported with a warning");
        assert!(import("C1", "", None).is_err() && import("C1", "with space", None).is_err());
        let issued = issue("C1", None);
        let mut row = stored(&issued);
        assert!(verify(&issued.plaintext, &row));
        row.expires_at = Some(recarga_store::now_ms() - 1);
        assert!(!verify(&issued.plaintext, &row), "past its rotation overlap");
        row.expires_at = Some(recarga_store::now_ms() + 60_000);
        assert!(verify(&issued.plaintext, &row), "inside the overlap");
    }

    #[test]
    fn keys_are_unique() {
        assert_ne!(issue("C", None).plaintext, issue("C", None).plaintext);
    }
}
