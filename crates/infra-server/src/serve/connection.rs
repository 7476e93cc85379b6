//! One port, several protocols: each accepted connection is sniffed (a
//! PostgreSQL SSLRequest or a TLS ClientHello), taken through TLS, and
//! handed by what it asked for to the PostgreSQL gateway, the tunnel server
//! or the HTTP stack (API, web pages, gateway).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::state::AppState;
use crate::tasks::TrackedExecutor;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to open: its first bytes, then the TLS
/// handshake.
const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// A PostgreSQL client that asked for TLS (and was told yes).
    Postgres,
    /// Anything else: a TLS ClientHello.
    Tls,
}

/// What a connection speaks once TLS is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Postgres,
    /// A connector's tunnel (ALPN `infra-tunnel/1`).
    Tunnel,
    /// HTTP/1.1 or HTTP/2: the API, the web pages, the gateway.
    Http,
}

fn protocol(opening: Opening, tls: &TlsStream<TcpStream>) -> Protocol {
    if opening == Opening::Postgres {
        Protocol::Postgres
    } else if tls.get_ref().1.alpn_protocol() == Some(infra_tunnel::ALPN) {
        Protocol::Tunnel
    } else {
        Protocol::Http
    }
}

/// Accepts connections until `shutdown`; each is served on the clients'
/// tracker, and its HTTP side watched by `graceful`.
pub(super) async fn accept_loop(
    listener: &TcpListener,
    acceptor: TlsAcceptor,
    state: &AppState,
    graceful: &GracefulShutdown,
    shutdown: &CancellationToken,
) {
    let router = crate::api::router(state.clone());
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
        let conn = Connection {
            state: state.clone(),
            acceptor: acceptor.clone(),
            router: router.clone(),
            peer,
        };
        state.tasks.clients.spawn(conn.serve(tcp, graceful.watcher()));
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    state: AppState,
    acceptor: TlsAcceptor,
    router: Router,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(self, mut tcp: TcpStream, watcher: Watcher) {
        let Some(opening) = open(&mut tcp).await else { return };
        let tls = match tokio::time::timeout(OPENING_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let source = self.peer.ip().to_string();
        match protocol(opening, &tls) {
            Protocol::Postgres => {
                // hyper's graceful shutdown has nothing to say to these
                // (the clients' tracker drains them).
                drop(watcher);
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                crate::pg_gateway::serve(self.state, tls, sni, source).await;
            }
            Protocol::Tunnel => {
                // A tunnel outlives the clients it carries: it moves to the
                // tunnels' tracker, which shutdown ends after the clients'.
                let tunnels = self.state.tasks.tunnels.clone();
                tunnels.spawn(crate::tunnel_server::serve(self.state, tls, source));
            }
            Protocol::Http => self.serve_http(tls, watcher).await,
        }
    }

    /// HTTP/1.1 or HTTP/2 (with upgrades) through the router.
    async fn serve_http(self, tls: TlsStream<TcpStream>, watcher: Watcher) {
        let peer = self.peer;
        let sni = tls.get_ref().1.server_name().map(|n| crate::gateway::Sni(n.to_owned()));
        let svc = self
            .router
            .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                if let Some(s) = &sni {
                    req.extensions_mut().insert(s.clone());
                }
                req
            });
        let mut builder = auto::Builder::new(TrackedExecutor(self.state.tasks.clients.clone()));
        // A client that dribbles its headers (slowloris) is cut off;
        // headers are capped at hyper's default (~400 KiB) → 431.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(svc));
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            log_http_end(peer, e.as_ref());
        }
    }
}

/// Says plainly when a client was cut off for misbehaving; ordinary
/// disconnects stay at debug.
fn log_http_end(peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
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

/// Reads how the client opens. A PostgreSQL client asks for TLS with an
/// 8-byte SSLRequest first and is answered `S`; everything else starts
/// with a TLS ClientHello. `None`: the connection is over (it failed, or a
/// PostgreSQL client that did not ask for TLS was told why).
async fn open(tcp: &mut TcpStream) -> Option<Opening> {
    match starts_with_ssl_request(tcp).await {
        Some(true) => {
            let mut req = [0u8; 8];
            if tcp.read_exact(&mut req).await.is_err() || tcp.write_all(b"S").await.is_err() {
                return None;
            }
            Some(Opening::Postgres)
        }
        Some(false) => Some(Opening::Tls),
        None => {
            let msg = "Infra's gateway requires TLS: connect with sslmode=require";
            let _ = tcp
                .write_all(&infra_proto_pg::error_response("FATAL", "08004", msg))
                .await;
            None
        }
    }
}

/// Whether a new connection opens with a PostgreSQL SSLRequest: `Some(true)`
/// for one, `Some(false)` for anything else that is not PostgreSQL (TLS),
/// `None` for a PostgreSQL client that did not ask for TLS. Looks without
/// consuming, and gives up (as not PostgreSQL) after 10 s.
async fn starts_with_ssl_request(tcp: &TcpStream) -> Option<bool> {
    let mut b = [0u8; 8];
    let deadline = tokio::time::Instant::now() + OPENING_TIMEOUT;
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
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
