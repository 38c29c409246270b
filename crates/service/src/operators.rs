//! Operator accounts for the pages: argon2 passwords, roles, and the rules
//! of creating one (the panel and `recarga admin create` share them).

use crate::error::{Result, ServiceError};
use recarga_store::{NewOperator, Operator, Store};

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
    if !ROLES.contains(&role) {
        return Err(ServiceError::invalid("role", "the role is admin or viewer"));
    }
    if password.chars().count() < PASSWORD_MIN_LEN {
        return Err(ServiceError::invalid(
            "password",
            format!("the password must be at least {PASSWORD_MIN_LEN} characters"),
        ));
    }
    let password_hash = hash_password(password).map_err(ServiceError::Internal)?;
    let new = NewOperator {
        email,
        password_hash,
        role: role.to_string(),
    };
    Ok(store.create_operator(&new, actor).await?)
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
        assert_eq!(generate_password().len(), 24);
        assert_eq!(normalize_email(" Ana@Example.com ").unwrap(), "ana@example.com");
        assert!(normalize_email("nope").is_err());
    }
}
