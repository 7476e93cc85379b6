//! A TLS server-certificate check by pin rather than by CA: used by the CLI
//! on first contact (to read the chain a server presents, then trust the CA
//! that matches the fingerprint the user gave) and by connectors configured
//! with `tls.trustedFingerprint`. Handshake signatures are always verified,
//! so the server must hold the key of the certificate it shows.

use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::tls_ca::{fingerprint, normalize_fingerprint};

#[derive(Debug)]
pub struct ChainVerifier {
    /// Normalised SHA-256 a certificate of the chain must have; `None`
    /// accepts any chain (only to read it, or when verification is
    /// explicitly skipped).
    pin: Option<String>,
    seen: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ChainVerifier {
    pub fn new(pin: Option<&str>, provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self {
            pin: pin.map(normalize_fingerprint),
            seen: Mutex::new(Vec::new()),
            provider,
        }
    }

    /// The DER certificates of the last chain presented, leaf first.
    pub fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        let ok = match &self.pin {
            None => true,
            Some(want) => chain.iter().any(|c| normalize_fingerprint(&fingerprint(c)) == *want),
        };
        if let Ok(mut s) = self.seen.lock() {
            *s = chain;
        }
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match tls.trustedFingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
