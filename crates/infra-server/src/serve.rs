//! The HTTPS listener: TLS with the CA-signed serving certificate, HTTP/1.1
//! and HTTP/2, and graceful shutdown (SIGTERM drains requests in flight
//! within the grace period; a second signal exits at once).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::bootstrap::{self, FirstAdmin};
use crate::config::{ServerArgs, Settings};
use crate::state::{AppState, Inner};

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<()> {
    if args.openapi {
        println!("{}", crate::api::openapi_json());
        return Ok(());
    }
    let settings = Settings::resolve(args)?;
    init_logs(settings.json_logs);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("create data directory {}", settings.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    // Take the port before anything is created: a server that cannot
    // listen must not bootstrap (and print, unseen) a one-time admin key.
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "listen on {} (is another server running? use --listen)",
            settings.listen
        )
    })?;
    let root_key = bootstrap::root_key(&settings.root_key_file)?;
    let store = infra_store::Store::open(&settings.db_url)
        .await
        .with_context(|| format!("open database {}", redact_url(&settings.db_url)))?;
    let state = AppState(Arc::new(Inner {
        store,
        root_key,
        settings: settings.clone(),
        hub: crate::hub::Hub::new(),
        gateway_names: crate::tls::KnownNames::default(),
        hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        oidc: crate::oidc::Oidc::new(),
    }));

    let ca = bootstrap::ca(&state).await?;
    bootstrap::signing_key(&state).await?;
    crate::ssh::ensure(&state)
        .await
        .map_err(|e| anyhow::anyhow!("create the SSH certificate authorities: {}", e.message))?;
    let first_admin = bootstrap::first_admin(&state).await?;

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
    let serving = ca.issue_server_cert(&names)?;
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
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let addr = listener.local_addr()?;
    tracing::info!(%addr, url = %settings.public_url, db = %redact_url(&settings.db_url), "infra server listening");
    print_banner(&settings, &fingerprint, &ca_path, first_admin);

    let router = crate::api::router(state.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    tokio::spawn(watch_changes(state.clone(), shutdown.clone()));
    tokio::spawn(heartbeat(state.clone(), shutdown.clone()));
    tokio::spawn(crate::tls::keep_names(state.clone(), shutdown.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Small responses must not wait for Nagle's algorithm (40 ms stalls).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A PostgreSQL client asks for TLS with an 8-byte SSLRequest
            // first; everything else starts with a TLS ClientHello.
            let mut tcp = tcp;
            let pg = match starts_with_ssl_request(&tcp).await {
                Some(true) => {
                    let mut req = [0u8; 8];
                    if tcp.read_exact(&mut req).await.is_err() || tcp.write_all(b"S").await.is_err() {
                        return;
                    }
                    true
                }
                Some(false) => false,
                None => {
                    let msg = "Infra's gateway requires TLS: connect with sslmode=require";
                    let _ = tcp
                        .write_all(&infra_proto_pg::error_response("FATAL", "08004", msg))
                        .await;
                    return;
                }
            };
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            if pg {
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                crate::pg_gateway::serve(state, tls, sni, peer.ip().to_string()).await;
                return;
            }
            if tls.get_ref().1.alpn_protocol() == Some(infra_tunnel::ALPN) {
                crate::tunnel_server::serve(state, tls, peer.ip().to_string()).await;
                return;
            }
            let sni = tls.get_ref().1.server_name().map(|n| crate::gateway::Sni(n.to_owned()));
            let svc = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                if let Some(s) = &sni {
                    req.extensions_mut().insert(s.clone());
                }
                req
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A client that dribbles its headers (slowloris) is cut off;
            // headers are capped at hyper's default (~400 KiB) → 431.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                // Say plainly when a client was cut off for misbehaving;
                // ordinary disconnects stay at debug.
                match e.downcast_ref::<hyper::Error>() {
                    Some(h) if h.is_timeout() => {
                        tracing::info!(%peer, "closed a connection that was too slow to send its request headers")
                    }
                    Some(h) if h.is_parse_too_large() => {
                        tracing::warn!(%peer, "refused a request whose headers are too large (431)")
                    }
                    Some(h) if h.is_parse() => tracing::info!(%peer, error = %h, "refused a malformed request"),
                    _ => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
            }
        });
    }
    tracing::info!(grace = ?settings.shutdown_grace, "shutting down: draining requests in flight");
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Tells connectors' pushers when anything was written, on this replica or
/// another: the audit chain head moves with every write.
async fn watch_changes(state: AppState, shutdown: CancellationToken) {
    let mut last = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(mut c) = state.store.conn().await else { continue };
        if let Ok(m) = infra_store::connectors::change_marker(&mut c).await {
            if last.is_some_and(|l| l != m) {
                state.hub.changed();
            }
            last = Some(m);
        }
    }
}

/// Tells the store (and through it, connectors) that this replica is
/// alive and where it is reached.
async fn heartbeat(state: AppState, shutdown: CancellationToken) {
    let id = infra_auth::random_token(16).unwrap_or_default();
    loop {
        if let Ok(mut c) = state.store.conn().await {
            let url = &state.settings.advertise_url;
            if let Err(e) = infra_store::connectors::heartbeat_replica(&mut c, &id, url, infra_store::now_ms()).await {
                tracing::warn!(error = %e, "cannot record this replica's heartbeat");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
        // A second signal means "now".
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    }
}

fn print_banner(s: &Settings, fingerprint: &str, ca_path: &std::path::Path, first: FirstAdmin) {
    let host = s.public_url.trim_start_matches("https://");
    eprintln!();
    eprintln!("  Infra server is running at {}", s.public_url);
    eprintln!("  TLS CA certificate: {}", ca_path.display());
    eprintln!("  TLS CA fingerprint (SHA-256): {fingerprint}");
    match first {
        FirstAdmin::Existing => {
            eprintln!("  Log in with: infra login {host} --tls-trusted-fingerprint {fingerprint}");
        }
        FirstAdmin::FromEnvironment(email) => {
            eprintln!("  First admin: {email} (password from INFRA_ADMIN_PASSWORD)");
            eprintln!("  Log in with: infra login {host} --user {email} --tls-trusted-fingerprint {fingerprint}");
        }
        FirstAdmin::Key(k) => {
            eprintln!("  First admin: admin@localhost. One-time admin access key (shown only now):");
            eprintln!();
            eprintln!("    {}", k.expose());
            eprintln!();
            eprintln!(
                "  Log in with: infra login {host} --key {} --tls-trusted-fingerprint {fingerprint}",
                k.expose()
            );
            eprintln!(
                "  then add yourself: infra users add you@example.com && infra grants add you@example.com infra --role admin"
            );
        }
    }
    eprintln!();
}

fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFRA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json { b.json().try_init() } else { b.try_init() };
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

/// Hides a password in a database URL before it is logged.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether a new connection opens with a PostgreSQL SSLRequest: `Some(true)`
/// for one, `Some(false)` for anything else that is not PostgreSQL (TLS),
/// `None` for a PostgreSQL client that did not ask for TLS. Looks without
/// consuming, and gives up (as not PostgreSQL) after 10 s.
async fn starts_with_ssl_request(tcp: &tokio::net::TcpStream) -> Option<bool> {
    let mut b = [0u8; 8];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut b)).await {
            Ok(Ok(n)) => n,
            _ => return Some(false),
        };
        // TLS records start with 0x16; a PostgreSQL startup packet's length
        // starts with 0x00.
        if n == 0 || b[0] != 0 {
            return Some(false);
        }
        if n >= 8 {
            return if b == crate::pg_gateway::SSL_REQUEST {
                Some(true)
            } else {
                None
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
