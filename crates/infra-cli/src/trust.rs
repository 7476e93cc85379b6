//! Deciding to trust a server: a CA file, a pinned CA fingerprint (as
//! `infra server` prints at start), or, explicitly, nothing.
//!
//! With a fingerprint, a first handshake records the certificates the
//! server presents without trusting them; if one of them matches the pin it
//! becomes the trusted CA, and every later connection verifies normally
//! against it (name checks included).

use std::sync::Arc;

use anyhow::Context;
use infra_auth::chain::ChainVerifier;
use infra_auth::tls_ca::{fingerprint, normalize_fingerprint};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// Connects to `host:port`, finds the certificate in the presented chain
/// whose SHA-256 matches `pin`, and returns it as PEM.
pub(crate) async fn ca_from_fingerprint(host: &str, port: u16, pin: &str) -> anyhow::Result<String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rec = Arc::new(ChainVerifier::new(None, provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(rec.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connect to {host}:{port}; is the server running?"))?;
    let name = ServerName::try_from(host.to_owned()).context("server name")?;
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let want = normalize_fingerprint(pin);
    let chain = rec.seen();
    for der in &chain {
        if normalize_fingerprint(&fingerprint(der)) == want {
            return Ok(to_pem(der));
        }
    }
    let seen: Vec<String> = chain.iter().map(|d| fingerprint(d)).collect();
    anyhow::bail!(
        "the server's certificates do not match the fingerprint you gave ({pin}); it presented {}. \
         Check the fingerprint the server printed at start; if they really differ, someone may be intercepting the connection",
        seen.join(", ")
    )
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Checks that a CA file holds at least one certificate.
pub(crate) fn check_ca_pem(pem: &str) -> anyhow::Result<()> {
    let n = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .count();
    if n == 0 {
        anyhow::bail!("no PEM certificate found in the CA file");
    }
    Ok(())
}
