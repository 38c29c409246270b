//! Operator accounts for the pages: argon2 passwords, roles, and the rules
//! of creating and changing one (the panel and `recarga admin …` share
//! them): disable, enable, set the role, reset the password. Every change is
//! one audited store call; disabling and a new password end the operator's
//! sessions, and every page request re-reads the account, so a change counts
//! from the operator's next request (and ends its live streams).

use crate::error::{Result, ServiceError};
use recarga_store::{NewOperator, Operator, OperatorChange, Store};

/// Shortest operator password.
pub const PASSWORD_MIN_LEN: usize = 12;
/// The roles: `admin` may change things, `viewer` only looks.
pub const ROLES: [&str; 2] = ["admin", "viewer"];

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> std::result::Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify_password(password: &str, stored: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    match PasswordHash::new(stored) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// [`verify_password`] with a caller's working memory: argon2's blocks (19
/// MiB with the default parameters) are taken from `memory`, grown when a
/// hash needs more, and kept for the next check. A thread that checks many
/// passwords holds one buffer instead of allocating and freeing 19 MiB per
/// check (which the allocator may keep resident per thread).
pub fn verify_password_in(password: &str, stored: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::phc::PasswordHash;
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0_u8; expected.as_bytes().len()];
    let hashed = argon2::Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    hashed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

/// A new random operator password (shown once).
pub fn generate_password() -> String {
    rand::random::<[u8; 12]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises and checks an operator's login name.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_ascii_lowercase();
    if email.is_empty() || !email.contains('@') || email.len() > 200 {
        return Err(ServiceError::invalid(
            "email",
            "an operator logs in with an email address",
        ));
    }
    Ok(email)
}

/// Creates an operator account, audited.
pub async fn create(store: &dyn Store, email: &str, role: &str, password: &str, actor: &str) -> Result<Operator> {
    let email = normalize_email(email)?;
    check_role(role)?;
    check_password(password)?;
    let password_hash = hash_password(password).map_err(ServiceError::Internal)?;
    let new = NewOperator {
        email,
        password_hash,
        role: role.to_string(),
    };
    Ok(store.create_operator(&new, actor).await?)
}

/// Checks a role name.
pub fn check_role(role: &str) -> Result<()> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ServiceError::invalid("role", "the role is admin or viewer"))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < PASSWORD_MIN_LEN {
        return Err(ServiceError::invalid(
            "password",
            format!("the password must be at least {PASSWORD_MIN_LEN} characters"),
        ));
    }
    Ok(())
}

async fn change(store: &dyn Store, email: &str, change: OperatorChange, actor: &str) -> Result<Operator> {
    let email = normalize_email(email)?;
    Ok(store.update_operator(&email, &change, actor).await?)
}

/// Enables or disables an operator, audited; disabling ends its sessions.
pub async fn set_active(store: &dyn Store, email: &str, active: bool, actor: &str) -> Result<Operator> {
    change(store, email, OperatorChange::Active(active), actor).await
}

/// Makes an operator `admin` or `viewer`, audited.
pub async fn set_role(store: &dyn Store, email: &str, role: &str, actor: &str) -> Result<Operator> {
    check_role(role)?;
    change(store, email, OperatorChange::Role(role.to_string()), actor).await
}

/// Gives an operator a new password, audited; its sessions end.
pub async fn reset_password(store: &dyn Store, email: &str, password: &str, actor: &str) -> Result<Operator> {
    check_password(password)?;
    let hash = hash_password(password).map_err(ServiceError::Internal)?;
    change(store, email, OperatorChange::Password(hash), actor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse battery!", &h));
        assert!(!verify_password("x", "not a hash"));
        let mut memory = Vec::new();
        assert!(verify_password_in("correct horse battery", &h, &mut memory));
        assert!(!verify_password_in("correct horse battery!", &h, &mut memory));
        assert!(!verify_password_in("x", "not a hash", &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "the default parameters' 19 MiB, kept");
        assert_eq!(generate_password().len(), 24);
        assert_eq!(normalize_email(" Ana@Example.com ").unwrap(), "ana@example.com");
        assert!(normalize_email("nope").is_err());
    }
}
