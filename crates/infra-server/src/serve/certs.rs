//! The listener's TLS: the serving certificate for the server's own names,
//! a copy of the CA for clients to trust, and the acceptor that picks a
//! certificate by SNI and offers every protocol the port speaks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use infra_auth::tls_ca::Ca;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;
use crate::state::AppState;

/// What start-up needs from the TLS set-up besides the acceptor: where the
/// CA copy is and its fingerprint, for the banner.
pub(super) struct ServingTls {
    pub(super) acceptor: TlsAcceptor,
    pub(super) ca_path: PathBuf,
    pub(super) fingerprint: String,
}

/// Issues the serving certificate, writes the CA to `DATA_DIR/ca.pem`, and
/// builds the acceptor.
pub(super) fn serving_tls(state: &AppState, ca: Ca) -> anyhow::Result<ServingTls> {
    let settings = &state.settings;
    let serving = ca.issue_server_cert(&serving_names(settings))?;
    let ca_path = settings.data_dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).with_context(|| format!("write {}", ca_path.display()))?;
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).context("parse CA certificate")?;
    let fingerprint = infra_auth::tls_ca::fingerprint(&ca_der);

    let default_key = crate::tls::certified_key(&serving.chain_pem, serving.key_pem.expose())?;
    let resolver = crate::tls::SniResolver::new(
        ca,
        default_key,
        settings.gateway_domain.clone(),
        settings.public_host.clone(),
        state.gateway_names.clone(),
    );
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        infra_tunnel::ALPN.to_vec(),
        // libpq 17 offers it after an SSLRequest.
        b"postgresql".to_vec(),
    ];
    Ok(ServingTls {
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        ca_path,
        fingerprint,
    })
}

/// The names the serving certificate covers: loopback, the public URL's
/// host, the listen address, the gateway wildcard and `--tls-san`.
fn serving_names(settings: &Settings) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "*.localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    if let Some(host) = url_host(&settings.public_url) {
        names.push(host);
    }
    if !settings.listen.ip().is_unspecified() {
        names.push(settings.listen.ip().to_string());
    }
    if settings.gateway_domain != "localhost" {
        names.push(format!("*.{}", settings.gateway_domain));
    }
    names.extend(settings.tls_sans.iter().cloned());
    names.dedup();
    names
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let hostport = rest.split('/').next()?;
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    Some(host.to_owned())
}
