//! How the connector trusts the server: a CA file, a pinned certificate
//! fingerprint, or (for tests only) nothing.

use std::sync::Arc;

use anyhow::Context;
use infra_auth::chain::ChainVerifier;
use rustls::pki_types::{CertificateDer, pem::PemObject};

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
            .with_custom_certificate_verifier(Arc::new(ChainVerifier::new(Some(fp), provider)))
            .with_no_client_auth()
    } else if t.skip_verify {
        tracing::warn!("tls.skipVerify is set: the server's certificate is not checked");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainVerifier::new(None, provider)))
            .with_no_client_auth()
    } else {
        anyhow::bail!(
            "say how to trust the server: tls.caFile, tls.trustedFingerprint (printed by 'infra server'), or tls.skipVerify"
        )
    };
    cfg.alpn_protocols = vec![infra_tunnel::ALPN.to_vec()];
    Ok(cfg)
}
