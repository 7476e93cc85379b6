//! Access keys: `<id>.<secret>`.
//!
//! The id finds the row; only a SHA-256 of the secret is stored. The secret
//! has 24 characters from a 56-letter alphabet (~139 bits), so a fast hash is
//! enough and lookups stay cheap; the comparison is constant-time.

use subtle::ConstantTimeEq;

use crate::{RandomError, Secret, random_token, sha256_hex};

pub const ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 24;

/// A freshly made key: the full text (shown once) and what the store keeps.
#[derive(Debug)]
pub struct NewAccessKey {
    pub id: String,
    pub secret_hash: String,
    pub full: Secret<String>,
}

pub fn generate() -> Result<NewAccessKey, RandomError> {
    let id = random_token(ID_LEN)?;
    let secret = Secret::new(random_token(SECRET_LEN)?);
    let full = Secret::new(format!("{id}.{}", secret.expose()));
    Ok(NewAccessKey {
        secret_hash: sha256_hex(secret.expose().as_bytes()),
        id,
        full,
    })
}

/// Splits a presented key into id and secret, or `None` if it is not
/// shaped like a key (so it cannot be one).
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.split_once('.')?;
    let alnum = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric());
    (id.len() == ID_LEN && secret.len() == SECRET_LEN && alnum(id) && alnum(secret)).then_some((id, secret))
}

/// Constant-time check of a presented secret against the stored hash.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let h = sha256_hex(secret.as_bytes());
    h.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_and_check() {
        let k = generate().unwrap();
        let (id, secret) = parse(k.full.expose()).unwrap();
        assert_eq!(id, k.id);
        assert!(secret_matches(secret, &k.secret_hash));
        assert!(!secret_matches("x", &k.secret_hash));
        assert!(parse("nodot").is_none());
        assert!(parse("short.secret").is_none());
        assert!(parse(&format!("{id}.{secret}x")).is_none());
    }
}
