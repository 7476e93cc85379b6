//! A TLS server-certificate check by pin rather than by CA file: used by the
//! CLI on first contact (to read the chain a server presents, then trust the
//! CA that matches the fingerprint the user gave) and by connectors
//! configured with `tls.trustedFingerprint`.
//!
//! A pin names a CA. It is a trust anchor, not a certificate to look for:
//! the server's leaf must chain to the pinned CA by signature and name the
//! server, exactly as if the CA had been given as a file. A chain that
//! merely *contains* the pinned CA (`[attacker's leaf, real CA]`) is
//! refused. Handshake signatures are always verified, so the server must
//! hold the key of the leaf it shows.

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
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        if let Ok(mut s) = self.seen.lock() {
            s.clone_from(&chain);
        }
        let Some(want) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let Some(anchor) = chain.iter().find(|c| normalize_fingerprint(&fingerprint(c)) == *want) else {
            return Err(rustls::Error::General(
                "no certificate the server presented matches tls.trustedFingerprint".into(),
            ));
        };
        // The pinned certificate becomes the only root, and the ordinary
        // WebPKI check runs: signature chain, validity, name.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(anchor.clone()))
            .map_err(|_| rustls::Error::General("the pinned certificate is not a usable CA".into()))?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| {
                rustls::Error::General(format!(
                    "the server's certificate is not issued by the pinned CA for this name: {e}"
                ))
            })
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

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::tls_ca::Ca;

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap())
            .collect()
    }

    fn check(pin: &str, chain: &[CertificateDer<'static>], name: &str) -> Result<(), rustls::Error> {
        let v = ChainVerifier::new(Some(pin), Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn pin_is_an_anchor_not_a_member() {
        let ca = Ca::generate().unwrap();
        let ca_der = ders(&ca.cert_pem).remove(0);
        let pin = fingerprint(&ca_der);
        let good = ders(&ca.issue_server_cert(&["localhost".into()]).unwrap().chain_pem);
        // The real chain, for the name it was issued to.
        check(&pin, &good, "localhost").unwrap();
        // The same chain for another name.
        assert!(check(&pin, &good, "evil.example").is_err());
        // A leaf of the attacker's own with the real CA appended.
        let kp = rcgen::KeyPair::generate().unwrap();
        let own = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let mitm = vec![own.der().clone(), ca_der.clone()];
        assert!(check(&pin, &mitm, "localhost").is_err());
        // A leaf from another CA entirely.
        let other = Ca::generate().unwrap();
        let foreign = ders(&other.issue_server_cert(&["localhost".into()]).unwrap().chain_pem);
        assert!(check(&pin, &foreign, "localhost").is_err());
    }
}
