//! Verifying JWTs from other issuers: ID tokens from OpenID Connect
//! providers, and workload tokens (Kubernetes service accounts, CI systems)
//! exchanged for Infra credentials.
//!
//! Only asymmetric algorithms are accepted, the key must be in the issuer's
//! key set under the token's `kid`, and `iss`, `aud`, `exp` (and, for a
//! login, `nonce`) must match. Each refusal says which check failed.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused; each message is safe to show.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is signed with {0}, which is not accepted (asymmetric algorithms only)")]
    Algorithm(String),
    #[error("the token's key (kid {0:?}) is not in the issuer's key set")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify with the issuer's key")]
    Signature,
    #[error("the token was issued by {got:?}, not by {expected}")]
    Issuer { got: String, expected: String },
    #[error("the token is for audience {got}, not {expected}")]
    Audience { got: String, expected: String },
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the ID token's nonce does not match this login: it was issued for another login attempt (or replayed)")]
    Nonce,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
}

/// The `kid` of a token, to look its key up (and refetch the key set when
/// the issuer rotated).
pub fn kid(token: &str) -> Result<Option<String>, TokenError> {
    Ok(jsonwebtoken::decode_header(token)
        .map_err(|_| TokenError::Malformed)?
        .kid)
}

/// The unverified `iss`, to pick which issuer's rules apply.
pub fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let v: Value = jsonwebtoken::dangerous::insecure_decode(token)
        .map_err(|_| TokenError::Malformed)?
        .claims;
    v["iss"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| TokenError::MissingClaim("iss".into()))
}

/// Verifies `token` against `keys` and returns its claims.
pub fn verify(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    audience: &str,
    nonce: Option<&str>,
) -> Result<Value, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(k) => keys.find(k),
        // Without a kid, only an unambiguous key set will do.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey(header.kid.clone()))?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
        let claims: Value = jsonwebtoken::dangerous::insecure_decode(token)
            .map(|d| d.claims)
            .unwrap_or(Value::Null);
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidIssuer => TokenError::Issuer {
                got: claims["iss"].as_str().unwrap_or_default().to_owned(),
                expected: issuer.to_owned(),
            },
            ErrorKind::InvalidAudience => TokenError::Audience {
                got: claims["aud"].to_string(),
                expected: audience.to_owned(),
            },
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
            _ => TokenError::Malformed,
        }
    })?;
    if let Some(n) = nonce
        && data.claims["nonce"].as_str() != Some(n)
    {
        return Err(TokenError::Nonce);
    }
    Ok(data.claims)
}

/// A claim that may be a string or a list of strings (`groups`, `aud`), or
/// a path like `realm_access.roles`.
pub fn string_list(claims: &Value, name: &str) -> Vec<String> {
    let mut v = claims;
    for part in name.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn keypair() -> (EncodingKey, JwkSet) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let raw = kp.public_key_raw();
        use base64::Engine;
        let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b(&raw[1..33]), "y": b(&raw[33..65])}]}))
        .unwrap();
        (enc, set)
    }

    fn token(enc: &EncodingKey, claims: Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        encode(&h, &claims, enc).unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn checks_every_claim() {
        let (enc, set) = keypair();
        let good = serde_json::json!({"iss": "https://idp", "aud": "infra", "exp": now() + 60, "iat": now(), "nonce": "n1",
            "sub": "u1", "groups": ["a", "/t/b"]});
        let t = token(&enc, good.clone());
        let c = verify(&t, &set, "https://idp", "infra", Some("n1")).unwrap();
        assert_eq!(string_list(&c, "groups"), ["a", "/t/b"]);
        assert_eq!(
            verify(&t, &set, "https://idp", "infra", Some("n2")),
            Err(TokenError::Nonce)
        );
        assert!(matches!(
            verify(&t, &set, "https://other", "infra", None),
            Err(TokenError::Issuer { .. })
        ));
        assert!(matches!(
            verify(&t, &set, "https://idp", "else", None),
            Err(TokenError::Audience { .. })
        ));
        let mut expired = good.clone();
        expired["exp"] = (now() - 120).into();
        assert_eq!(
            verify(&token(&enc, expired), &set, "https://idp", "infra", None),
            Err(TokenError::Expired)
        );
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            verify(&token(&enc, no_exp), &set, "https://idp", "infra", None),
            Err(TokenError::MissingClaim(_))
        ));
        // Another key under the same kid: the signature fails.
        let (other, _) = keypair();
        assert_eq!(
            verify(&token(&other, good.clone()), &set, "https://idp", "infra", None),
            Err(TokenError::Signature)
        );
        // HS256 with the public key as secret (the classic confusion): refused.
        let hs = encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(b"x")).unwrap();
        assert!(matches!(
            verify(&hs, &set, "https://idp", "infra", None),
            Err(TokenError::Algorithm(_))
        ));
        assert_eq!(
            verify("nope", &set, "https://idp", "infra", None),
            Err(TokenError::Malformed)
        );
        assert_eq!(unverified_issuer(&t).unwrap(), "https://idp");
    }

    #[test]
    fn claim_paths() {
        let c = serde_json::json!({"realm_access": {"roles": ["x"]}, "g": "one"});
        assert_eq!(string_list(&c, "realm_access.roles"), ["x"]);
        assert_eq!(string_list(&c, "g"), ["one"]);
        assert!(string_list(&c, "missing").is_empty());
    }
}
