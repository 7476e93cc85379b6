//! Envelope encryption of secrets at rest.
//!
//! Each secret is encrypted with its own random data key (AES-256-GCM), and
//! the data key is encrypted with the root key, which lives outside the
//! database (a file in the data directory, or `INFRA_ROOT_KEY`). A copy of
//! the database alone reveals no secret.
//!
//! Format: `v1.<root key id>.<b64 nonce|wrapped data key>.<b64 nonce|ciphertext>`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;

use crate::{RandomError, Secret, random_bytes, sha256_hex};

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was made with root key {found}, but the configured root key is {expected}")]
    WrongRootKey { found: String, expected: String },
    #[error("sealed value failed to decrypt: it was altered, or the root key is wrong")]
    Decrypt,
    #[error("root key must be 32 bytes, base64")]
    BadRootKey,
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The key that wraps every data key.
pub struct RootKey {
    bytes: Secret<Vec<u8>>,
    id: String,
}

impl RootKey {
    pub fn generate() -> Result<Self, EnvelopeError> {
        let b: [u8; 32] = random_bytes()?;
        Self::from_bytes(b.to_vec())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        if bytes.len() != 32 {
            return Err(EnvelopeError::BadRootKey);
        }
        let id = sha256_hex(&bytes)[..8].to_owned();
        Ok(Self {
            bytes: Secret::new(bytes),
            id,
        })
    }

    /// Parses the base64 text form (as kept in the key file).
    pub fn from_text(s: &str) -> Result<Self, EnvelopeError> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| EnvelopeError::BadRootKey)?;
        Self::from_bytes(b)
    }

    pub fn to_text(&self) -> Secret<String> {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.expose()))
    }

    /// A key for one purpose, derived from the root key (HMAC-SHA256 of
    /// `purpose`): every replica with the root key derives the same one,
    /// and nothing else does.
    pub fn derive(&self, purpose: &str) -> Secret<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.bytes.expose());
        let tag = aws_lc_rs::hmac::sign(&key, purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Secret::new(out)
    }

    /// A short fingerprint, stored beside each sealed value so a wrong key
    /// gives a clear error instead of a decryption failure.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn aead(key: &[u8]) -> Result<LessSafeKey, EnvelopeError> {
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| EnvelopeError::Decrypt)?,
    ))
}

fn encrypt(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let mut buf = plaintext.to_vec();
    aead(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| EnvelopeError::Decrypt)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

fn decrypt(key: &[u8], data: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let (nonce, ct) = data.split_at_checked(NONCE_LEN).ok_or(EnvelopeError::Malformed)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Malformed)?;
    let mut buf = ct.to_vec();
    let pt = aead(key)?
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| EnvelopeError::Decrypt)?;
    Ok(pt.to_vec())
}

/// Encrypts `plaintext`. `context` (e.g. `signing_key:<kid>`) is bound as
/// associated data, so a sealed value moved to another row fails to open.
pub fn seal(root: &RootKey, context: &str, plaintext: &[u8]) -> Result<String, EnvelopeError> {
    let dek = Secret::new(random_bytes::<32>()?.to_vec());
    let wrapped = encrypt(root.bytes.expose(), dek.expose(), context.as_bytes())?;
    let ct = encrypt(dek.expose(), plaintext, context.as_bytes())?;
    Ok(format!("v1.{}.{}.{}", root.id, B64.encode(wrapped), B64.encode(ct)))
}

pub fn open(root: &RootKey, context: &str, sealed: &str) -> Result<Secret<Vec<u8>>, EnvelopeError> {
    let mut parts = sealed.split('.');
    let (Some("v1"), Some(id), Some(wrapped), Some(ct), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(EnvelopeError::Malformed);
    };
    if id != root.id {
        return Err(EnvelopeError::WrongRootKey {
            found: id.into(),
            expected: root.id.clone(),
        });
    }
    let wrapped = B64.decode(wrapped).map_err(|_| EnvelopeError::Malformed)?;
    let ct = B64.decode(ct).map_err(|_| EnvelopeError::Malformed)?;
    let dek = Secret::new(decrypt(root.bytes.expose(), &wrapped, context.as_bytes())?);
    Ok(Secret::new(decrypt(dek.expose(), &ct, context.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let root = RootKey::generate().unwrap();
        let s = seal(&root, "ctx", b"private key").unwrap();
        assert!(!s.contains("private"));
        assert_eq!(open(&root, "ctx", &s).unwrap().expose(), b"private key");
        assert!(matches!(open(&root, "other", &s), Err(EnvelopeError::Decrypt)));
        let other = RootKey::generate().unwrap();
        assert!(matches!(
            open(&other, "ctx", &s),
            Err(EnvelopeError::WrongRootKey { .. })
        ));
        let mut bad = s.clone().into_bytes();
        let n = bad.len() - 3;
        bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
        assert!(open(&root, "ctx", &String::from_utf8(bad).unwrap()).is_err());
        let text = root.to_text();
        assert_eq!(RootKey::from_text(text.expose()).unwrap().id(), root.id());
    }
}
