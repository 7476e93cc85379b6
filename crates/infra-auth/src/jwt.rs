//! JWTs signed with Ed25519 (`alg: EdDSA`), published as a JWKS.
//!
//! Every token carries `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and a
//! `kid` header. Verification accepts only EdDSA (so `alg: none` and HMAC
//! key-confusion tokens fail), only keys in the given set, and requires every
//! one of those claims.

use std::collections::HashMap;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Secret, sha256_hex};

/// The key set's wire form lives in `infra-core`, so crates that only carry
/// keys need no cryptography; re-exported here where keys are made.
pub use infra_core::jwks::{Jwk, Jwks};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("could not generate a signing key")]
    Generate,
    #[error("stored signing key is not a valid Ed25519 PKCS#8 key")]
    BadKey,
    #[error("could not sign token")]
    Sign,
}

/// Why a token was refused. The messages are safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is signed with an algorithm other than EdDSA")]
    Algorithm,
    #[error("token is signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for another audience")]
    Audience,
    #[error("token is from another issuer")]
    Issuer,
    #[error("token is missing claim {0}")]
    MissingClaim(String),
}

/// A private signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pkcs8: Secret<Vec<u8>>,
    /// The public key, base64url (the JWK `x`).
    pub public_x: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, JwtError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| JwtError::Generate)?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    /// Loads a key; the kid is derived from the public key so it is the
    /// same on every replica.
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, JwtError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| JwtError::BadKey)?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = sha256_hex(&public)[..16].to_owned();
        Ok(Self {
            kid,
            pkcs8: Secret::new(pkcs8),
            public_x: URL_SAFE_NO_PAD.encode(public),
        })
    }

    /// The key whose private half is `seed` (a derived key, say).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, JwtError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| JwtError::BadKey)?;
        let doc = pair.to_pkcs8v1().map_err(|_| JwtError::BadKey)?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    pub fn pkcs8(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.kid, &self.public_x)
    }

    /// Signs any claims: tokens for other systems, whose claims are mapped
    /// by configuration.
    pub fn sign_value(&self, claims: &serde_json::Value) -> Result<String, JwtError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(self.pkcs8.expose()))
            .map_err(|_| JwtError::Sign)
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(self.pkcs8.expose()))
            .map_err(|_| JwtError::Sign)
    }
}

/// The key id of an Ed25519 public key given as a JWK `x` (base64url of the
/// 32 raw bytes): the same derivation [`SigningKey`] uses, so a key id can
/// be checked against its key rather than taken on the sender's word.
/// `None` when `x` is not an Ed25519 public key.
pub fn ed25519_kid(x: &str) -> Option<String> {
    let public = URL_SAFE_NO_PAD.decode(x).ok()?;
    (public.len() == 32).then(|| sha256_hex(&public)[..16].to_owned())
}

/// The claims of an Infra token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user's id.
    pub sub: String,
    /// The destination (or service) the token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// The user's name (their email for people).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The session or access key the token was issued through, so that
    /// ending it can end the token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 8693's actor: for a token a workload got by exchange, the
    /// workload its platform named (`system:serviceaccount:NS:NAME`), so
    /// the audit names it beside the service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// The `act` claim (RFC 8693, section 4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
}

/// A P-256 key for tokens Infra issues to systems that do not accept
/// EdDSA (cloud web-identity federation takes RS256 or ES256).
pub struct EsKey {
    pub kid: String,
    pkcs8: Secret<Vec<u8>>,
    x: String,
    y: String,
}

impl EsKey {
    pub fn generate() -> Result<Self, JwtError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| JwtError::Generate)?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, JwtError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(|_| JwtError::BadKey)?;
        // Uncompressed point: 0x04 || x || y.
        let public = pair.public_key().as_ref().to_vec();
        if public.len() != 65 {
            return Err(JwtError::BadKey);
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Ok(Self {
            kid: format!("es-{}", &sha256_hex(&public)[..13]),
            x: b64(&public[1..33]),
            y: b64(&public[33..65]),
            pkcs8: Secret::new(pkcs8),
        })
    }

    pub fn pkcs8(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: self.x.clone(),
            y: Some(self.y.clone()),
            kid: self.kid.clone(),
            alg: "ES256".into(),
            use_: "sig".into(),
        }
    }

    pub fn sign_value(&self, claims: &serde_json::Value) -> Result<String, JwtError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(self.pkcs8.expose()))
            .map_err(|_| JwtError::Sign)
    }
}

/// Verifies tokens against a key set, offline.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    issuer: String,
}

impl Verifier {
    /// Keys that are not Ed25519 are skipped: they can never verify a token
    /// this verifier accepts.
    pub fn new(jwks: &Jwks, issuer: &str) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        Self {
            keys,
            issuer: issuer.to_owned(),
        }
    }

    /// Checks signature, issuer, audience and time; returns the claims.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, VerifyError> {
        self.verify_as(token, audience)
    }

    /// [`Verifier::verify`] for claims of another shape (a signed audit
    /// checkpoint, say).
    pub fn verify_as<T: serde::de::DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => VerifyError::Algorithm,
            _ => VerifyError::Malformed,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Algorithm);
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(VerifyError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[audience]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<T>(token, key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => VerifyError::Signature,
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidAudience => VerifyError::Audience,
            ErrorKind::InvalidIssuer => VerifyError::Issuer,
            ErrorKind::MissingRequiredClaim(c) => VerifyError::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm => VerifyError::Algorithm,
            _ => VerifyError::Malformed,
        })?;
        Ok(data.claims)
    }
}

/// A [`Verifier`] that remembers tokens it has verified, so a client that
/// sends the same token on every request (the usual case) costs a hash
/// lookup instead of an Ed25519 check. A hit still checks the audience and
/// the time; anything else falls through to a full verification. Bounded:
/// past `capacity` tokens the cache starts afresh.
pub struct CachingVerifier {
    inner: Verifier,
    cache: std::sync::Mutex<HashMap<String, Claims>>,
    capacity: usize,
}

impl CachingVerifier {
    pub fn new(inner: Verifier, capacity: usize) -> Self {
        Self {
            inner,
            cache: std::sync::Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, VerifyError> {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache.get(token)
            && c.aud == audience
            && c.exp + leeway > now
            && c.nbf - leeway <= now
        {
            return Ok(c.clone());
        }
        let claims = self.inner.verify(token, audience)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.capacity {
                cache.clear();
            }
            cache.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests;
