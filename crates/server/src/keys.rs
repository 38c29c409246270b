//! API keys: `rk_<prefix>_<secret>`.
//!
//! The 12-hex-digit prefix is public (it is how a key is found and named in
//! logs and lists); the 40-hex-digit secret (160 random bits) is shown once and
//! never stored: the database keeps the SHA-256 digest of the whole key, and
//! verification compares digests in constant time. A fast digest is right
//! here: the secret is random, not a human password, so there is nothing to
//! brute-force, and argon2 on every request would cost tens of milliseconds.

use recarga_store::{ApiKey, NewApiKey};
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

/// Whether `presented` is the key stored as `stored` and still valid.
pub fn verify(presented: &str, stored: &ApiKey) -> bool {
    let matches: bool = digest(presented).as_bytes().ct_eq(stored.digest.as_bytes()).into();
    matches && stored.revoked_at.is_none()
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
    fn keys_are_unique() {
        assert_ne!(issue("C", None).plaintext, issue("C", None).plaintext);
    }
}
