//! Deciding to trust a server: a CA file, a pinned CA fingerprint (as
//! `infra server` prints at start), or, explicitly, nothing.
//!
//! With a fingerprint, a first handshake records the certificates the
//! server presents without trusting them; if one of them matches the pin it
//! becomes the trusted CA, and every later connection verifies normally
//! against it (name checks included).

use std::sync::{Arc, Mutex};

use anyhow::Context;
use infra_auth::tls_ca::{fingerprint, normalize_fingerprint};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

/// Records the presented chain and accepts it; used only to read the
/// chain, never to send anything.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            c.push(end_entity.to_vec());
            c.extend(intermediates.iter().map(|i| i.to_vec()));
        }
        Ok(ServerCertVerified::assertion())
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

/// Connects to `host:port`, finds the certificate in the presented chain
/// whose SHA-256 matches `pin`, and returns it as PEM.
pub(crate) async fn ca_from_fingerprint(host: &str, port: u16, pin: &str) -> anyhow::Result<String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rec = Arc::new(Recorder {
        chain: Mutex::new(vec![]),
        provider: provider.clone(),
    });
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
    let chain = rec.chain.lock().map_err(|_| anyhow::anyhow!("internal lock"))?.clone();
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
