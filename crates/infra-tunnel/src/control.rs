//! Telling the control stream apart from user streams, by construction.
//!
//! The server makes a fresh secret for each tunnel and hands it to the
//! connector in the handshake reply, inside that tunnel's TLS. The first
//! stream the server opens carries it in [`HDR_CONTROL`]. The connector
//! takes exactly one stream bearing it as the control stream; every other
//! stream goes to admission, whatever its path, method, headers or HTTP
//! version. A user request cannot be the control stream: nobody but the
//! server and this connector knows the secret, the gateway removes every
//! `x-infra-*` header a client sends, and even a stream carrying the
//! secret is refused once the control stream is taken.
//!
//! *Architecture Invariant:* no path names the control stream. Nothing a
//! client chooses about its request can make the connector treat it as
//! anything but a user request.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

/// The header the server's control stream carries the tunnel secret in.
pub const HDR_CONTROL: &str = "x-infra-control";

/// The system random number generator failed; no secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// The per-tunnel secret. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ControlSecret(String);

impl std::fmt::Debug for ControlSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlSecret(..)")
    }
}

impl ControlSecret {
    /// A fresh secret from the OS generator (256 bits).
    pub fn generate() -> Result<Self, RandomError> {
        use base64::Engine as _;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| RandomError)?;
        Ok(Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a stream on the tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The server's control stream: pushed state in, audit out.
    Control,
    /// Anything else: a user request, which goes through admission.
    User,
}

/// The connector's side: one per tunnel connection.
#[derive(Debug)]
pub struct ControlGate {
    secret: ControlSecret,
    taken: AtomicBool,
}

impl ControlGate {
    pub fn new(secret: ControlSecret) -> Self {
        Self {
            secret,
            taken: AtomicBool::new(false),
        }
    }

    /// Classifies a stream by its headers. At most one stream per tunnel is
    /// ever [`StreamKind::Control`]: the first that carries the secret.
    pub fn classify(&self, headers: &http::HeaderMap) -> StreamKind {
        let secret = self.secret.expose().as_bytes();
        // In constant time: how long a guess takes says nothing about how
        // much of it was right (only its length shows).
        let carries = !secret.is_empty()
            && headers
                .get(HDR_CONTROL)
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(secret)));
        if carries && !self.taken.swap(true, Ordering::AcqRel) {
            StreamKind::Control
        } else {
            StreamKind::User
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = v {
            h.insert(HDR_CONTROL, http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_first_stream_with_the_secret_is_control() {
        let s = ControlSecret::generate().unwrap();
        let gate = ControlGate::new(s.clone());
        assert_eq!(gate.classify(&headers(None)), StreamKind::User);
        assert_eq!(gate.classify(&headers(Some("guess"))), StreamKind::User);
        assert_eq!(gate.classify(&headers(Some(""))), StreamKind::User);
        assert_eq!(gate.classify(&headers(Some(s.expose()))), StreamKind::Control);
        // Taken: even the right secret is a user stream now.
        assert_eq!(gate.classify(&headers(Some(s.expose()))), StreamKind::User);
    }

    #[test]
    fn an_empty_secret_opens_nothing() {
        let gate = ControlGate::new(ControlSecret::default());
        assert_eq!(gate.classify(&headers(Some(""))), StreamKind::User);
        assert_eq!(gate.classify(&headers(None)), StreamKind::User);
    }

    #[test]
    fn the_secret_is_not_printed() {
        let s = ControlSecret::generate().unwrap();
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
