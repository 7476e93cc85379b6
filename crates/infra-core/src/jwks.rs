//! JSON Web Key Sets as they travel: the server publishes one, connectors
//! receive one in their snapshot and verify tokens with it offline.
//!
//! Plain data here, so that a crate which only carries keys (the tunnel
//! protocol) needs no cryptography; signing and verifying live in
//! `infra-auth`.

use serde::{Deserialize, Serialize};

/// A key set (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key: an Ed25519 OKP key (RFC 8037) or the issuer's P-256
/// key for systems that do not accept EdDSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    /// EC keys only (the issuer's ES256 key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// An Ed25519 signing key with public part `x` (base64url).
    pub fn ed25519(kid: &str, x: &str) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: x.into(),
            y: None,
            kid: kid.into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let set = Jwks {
            keys: vec![Jwk::ed25519("k1", "AAAA")],
        };
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(
            json,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"k1","alg":"EdDSA","use":"sig"}]}"#
        );
        assert_eq!(serde_json::from_str::<Jwks>(&json).unwrap(), set);
    }
}
