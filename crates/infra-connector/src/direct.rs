//! Direct mode: the connector's own TLS listener, so clients that can reach
//! it skip the server. The same checks run as for tunnelled requests, from
//! the same pushed state, so it keeps working while the server is down
//! (until tokens expire).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use infra_auth::Secret;
use infra_auth::tls_ca::Ca;
use infra_tunnel::{HDR_CLIENT_ADDR, HDR_DESTINATION};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::config::DirectConfig;
use crate::state::State;

/// The CA that signs the direct listener's certificate, kept in the data
/// directory so clients' trust survives restarts.
fn load_or_make_ca(dir: &Path) -> anyhow::Result<Ca> {
    let cert = dir.join("direct-ca.pem");
    let key = dir.join("direct-ca.key");
    if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&cert), std::fs::read_to_string(&key)) {
        return Ok(Ca {
            cert_pem: c,
            key_pem: Secret::new(k),
        });
    }
    let ca = Ca::generate()?;
    std::fs::write(&cert, &ca.cert_pem).with_context(|| format!("write {}", cert.display()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(&key)?, ca.key_pem.expose().as_bytes())?;
    Ok(ca)
}

pub(crate) fn tls_config(state: &State, d: &DirectConfig) -> anyhow::Result<rustls::ServerConfig> {
    let (chain, key) = match (&d.cert_file, &d.key_file) {
        (Some(c), Some(k)) => (
            std::fs::read_to_string(c).with_context(|| format!("read direct.certFile {}", c.display()))?,
            std::fs::read_to_string(k).with_context(|| format!("read direct.keyFile {}", k.display()))?,
        ),
        (None, None) => {
            let ca = load_or_make_ca(&state.settings.data_dir)?;
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
            names.extend(
                state
                    .settings
                    .destinations
                    .iter()
                    .map(|d| format!("{}.localhost", d.name)),
            );
            names.extend(d.names.iter().cloned());
            let s = ca.issue_server_cert(&names)?;
            (s.chain_pem, s.key_pem.expose().clone())
        }
        _ => anyhow::bail!(
            "direct: give both certFile and keyFile, or neither (a CA is then made in the data directory)"
        ),
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("direct TLS key")?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Which destination a direct request is for: the first label of its Host
/// if that names one, or the only destination there is.
fn destination_for(state: &State, host: Option<&str>) -> Option<String> {
    let label = host
        .and_then(|h| h.split(['.', ':']).next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let dests = &state.settings.destinations;
    if let Some(d) = dests.iter().find(|d| d.name == label) {
        return Some(d.name.clone());
    }
    (dests.len() == 1).then(|| dests[0].name.clone())
}

pub(crate) async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            () = shutdown.cancelled() => return,
        };
        // Small responses go out at once (no Nagle wait on a split write).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        state.tasks.clone().spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().host().map(str::to_owned));
                    // Clients never choose these (destination, address,
                    // host, upgrade: the reserved namespace in any
                    // spelling); the connector sets what it needs.
                    infra_tunnel::hygiene::strip_reserved(req.headers_mut());
                    let Some(dest) = destination_for(&state, host.as_deref()) else {
                        return Ok::<_, std::convert::Infallible>(crate::answer::json_error(
                            404,
                            "no such destination here: use https://<destination>.<host>/",
                        ));
                    };
                    if let Ok(v) = HeaderValue::from_str(&dest) {
                        req.headers_mut().insert(HDR_DESTINATION, v);
                    }
                    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
                        req.headers_mut().insert(HDR_CLIENT_ADDR, v);
                    }
                    Ok(crate::front::handle(state, req).await)
                }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = b.serve_connection_with_upgrades(TokioIo::new(tls), svc).await;
        });
    }
}
