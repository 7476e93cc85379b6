//! Attacks on the trust boundaries, tried the way an attacker would: through
//! the real server, gateway, tunnel and connector. Each test names the hole
//! it proves closed; docs/threat-model.md maps every boundary to these.
//!
//! One file per side of the boundary; the TLS helpers they share are here.

mod api;
mod cluster_trust;
mod connector;
mod ports;
mod providers;

use std::time::Duration;

use super::common::Env;

/// A TLS client config that trusts the server's CA (PEM), with these ALPN
/// protocols.
fn trusting(ca: &[u8], alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn;
    cfg
}

/// One TLS connection to the server's port with this server name and ALPN:
/// writes `request`, returns what came back within a few seconds (at most
/// 16 KiB; an answer that streams on is cut there).
pub fn raw_tls(env: &Env, sni: &str, alpn: &[&[u8]], request: &[u8]) -> String {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], env.server.port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = trusting(&ca, alpn.iter().map(|a| a.to_vec()).collect());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while out.len() < 16 * 1024 {
            match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}
