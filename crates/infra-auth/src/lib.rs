//! Credentials: JWT signing and verification with rotating Ed25519 keys,
//! password hashing, access keys, envelope encryption of secrets at rest,
//! and the X.509 CA behind the server's TLS.
//!
//! Everything here is synchronous and free of storage: callers load keys
//! and hashes from the store and hand them in.

pub mod access_key;
pub mod chain;
pub mod decide;
pub mod envelope;
pub mod jwt;
pub mod lockout;
pub mod oidc;
pub mod password;
pub mod secret;
pub mod ssh_ca;
pub mod tls_ca;
pub mod webhook_ca;

pub use secret::Secret;

/// Fills a buffer from the operating system's CSPRNG.
///
/// The OS generator failing is not recoverable for a credential authority,
/// so the error carries no detail.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    // By hand: the audit chain hashes every event, and `hex::encode`
    // builds its string a `char` at a time (it showed in the profile).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Random identifier from an alphabet without look-alike characters.
pub fn random_token(len: usize) -> Result<String, RandomError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let bytes: [u8; 64] = random_bytes()?;
        for b in bytes {
            // Rejection sampling keeps the distribution uniform.
            let limit = 256 - (256 % ALPHABET.len());
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Compares two secrets in time that depends only on their lengths.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
