//! How the connector trusts the server: a CA file, a pinned certificate
//! fingerprint, or (for tests only) nothing.

use std::sync::Arc;

use anyhow::Context;
use infra_auth::tls_ca::{fingerprint, normalize_fingerprint};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

use crate::config::TlsConfig;

pub(crate) fn client_config(t: &TlsConfig) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut cfg = if let Some(path) = &t.ca_file {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(path).with_context(|| format!("read tls.caFile {}", path.display()))?;
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.context("tls.caFile")?)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else if let Some(fp) = &t.trusted_fingerprint {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                want: normalize_fingerprint(fp),
                provider,
            }))
            .with_no_client_auth()
    } else if t.skip_verify {
        tracing::warn!("tls.skipVerify is set: the server's certificate is not checked");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                want: String::new(),
                provider,
            }))
            .with_no_client_auth()
    } else {
        anyhow::bail!(
            "say how to trust the server: tls.caFile, tls.trustedFingerprint (printed by 'infra server'), or tls.skipVerify"
        )
    };
    cfg.alpn_protocols = vec![infra_tunnel::ALPN.to_vec()];
    Ok(cfg)
}

/// Accepts a chain that contains the pinned certificate (an empty pin
/// accepts anything: `skipVerify`). Handshake signatures are always
/// checked, so the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct Pinned {
    want: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.want.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let hit = std::iter::once(end_entity)
            .chain(intermediates)
            .any(|c| normalize_fingerprint(&fingerprint(c)) == self.want);
        if hit {
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
