//! Password hashing with Argon2id.
//!
//! Parameters follow the OWASP Password Storage Cheat Sheet's first
//! Argon2id option: m = 19 MiB, t = 2, p = 1.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::Secret;

const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Minimum length for a password someone chooses (NIST SP 800-63B: 8).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Cap so a huge password cannot make hashing expensive for the server.
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("password must be at most {MAX_PASSWORD_LEN} characters")]
    TooLong,
    #[error("password hashing failed")]
    Hash,
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|_| PasswordError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks a new password against the policy.
pub fn check_policy(pw: &str) -> Result<(), PasswordError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash(pw: &Secret<String>) -> Result<String, PasswordError> {
    let h = hasher()?
        .hash_password(pw.expose().as_bytes())
        .map_err(|_| PasswordError::Hash)?;
    Ok(h.to_string())
}

/// Whether `pw` matches `phc`. With no stored hash (unknown user, or a user
/// without a password) a dummy hash is checked anyway so that the answer
/// takes the same time either way and reveals nothing.
pub fn verify(pw: &Secret<String>, phc: Option<&str>) -> bool {
    // A valid hash of a random password nobody knows, with the same cost.
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jb3kUfvP9Hs0yR1v8cXxPb7lZ7Jm0Q3V5nR3yq1r2yU";
    let Ok(h) = hasher() else { return false };
    if pw.expose().len() > MAX_PASSWORD_LEN {
        let _ = h.verify_password(b"x", DUMMY);
        return false;
    }
    match phc {
        Some(phc) => h.verify_password(pw.expose().as_bytes(), phc).is_ok(),
        None => {
            let _ = h.verify_password(pw.expose().as_bytes(), DUMMY);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pw = Secret::new("correct horse".to_owned());
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(&pw, Some(&h)));
        assert!(!verify(&Secret::new("wrong horse!".to_owned()), Some(&h)));
        assert!(!verify(&pw, None));
        assert!(!verify(&pw, Some("not a hash")));
    }

    #[test]
    fn policy() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("long enough").is_ok());
        assert!(check_policy(&"x".repeat(2000)).is_err());
    }
}
