//! The gateway: `https://<destination>.<gateway domain>/…` goes into a
//! tunnel to a connector serving that destination. The server only routes;
//! the connector checks the credential and the grant.

use std::net::SocketAddr;

use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use infra_tunnel::{HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_HOST, HDR_UPGRADE};

use crate::error::ApiError;
use crate::state::AppState;

/// The destination a request is for, from its Host: `web.localhost:4443`
/// with gateway domain `localhost` is `web`. The server's own host name is
/// never a destination.
pub(crate) fn destination_of(host: &str, gateway_domain: &str, own_host: &str) -> Option<String> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let host = host.to_ascii_lowercase();
    if host == own_host {
        return None;
    }
    let label = host.strip_suffix(gateway_domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.') && infra_core::Resource::parse(label).is_ok()).then(|| label.to_owned())
}

/// The TLS server name the client asked for, when it sent one.
#[derive(Debug, Clone)]
pub(crate) struct Sni(pub(crate) String);

/// Whether `host` (with an optional port) is an IP address: clients send no
/// SNI for those, so one that did chose the name on purpose.
pub(crate) fn is_ip(host: &str) -> bool {
    let h = host.trim_start_matches('[');
    let h = match h.rsplit_once(']') {
        Some((ip, _)) => ip,
        None => h
            .rsplit_once(':')
            .filter(|(a, _)| !a.contains(':'))
            .map_or(h, |(a, _)| a),
    };
    h.parse::<std::net::IpAddr>().is_ok()
}

/// Middleware: gateway requests go to a tunnel, the rest to the API.
/// The destination comes from Host; when Host is a bare IP address, from
/// the TLS server name (a kubeconfig with `tls-server-name`, for clients
/// that cannot resolve `<destination>.<gateway domain>`).
pub(crate) async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if host.as_deref().is_none_or(is_ip)
        && let Some(Sni(name)) = req.extensions().get::<Sni>()
    {
        host = Some(name.clone());
    }
    let own = state.settings.public_host.as_str();
    match host
        .as_deref()
        .and_then(|h| destination_of(h, &state.settings.gateway_domain, own))
    {
        Some(dest) => {
            let started = std::time::Instant::now();
            let m = &crate::metrics::METRICS;
            // A name the client made up is not a label.
            let label = if state.gateway_names.contains(&dest) {
                dest.clone()
            } else {
                "unknown".to_owned()
            };
            m.gateway_in_flight.inc();
            let r = forward(state, dest, host.unwrap_or_default(), req).await;
            m.gateway_in_flight.dec();
            let class = format!("{}xx", r.status().as_u16() / 100);
            crate::metrics::gateway(&label, "http", class, started.elapsed());
            r
        }
        None => next.run(req).await,
    }
}

/// Why no tunnel answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelFailure {
    /// No live tunnel serves the destination.
    NoTunnel,
    /// A tunnel took the request and then failed: it is not retried, as
    /// its body may be partly gone.
    WentAway,
}

impl TunnelFailure {
    /// What the client is told.
    pub(crate) fn message(self, dest: &str) -> String {
        match self {
            TunnelFailure::NoTunnel => {
                format!("no connector is serving destination '{dest}' right now; see 'infra destinations list'")
            }
            TunnelFailure::WentAway => {
                format!("the connector serving '{dest}' went away during the request; try again")
            }
        }
    }
}

/// Sends `req` into a tunnel for `dest`, trying each in turn: a request a
/// dying tunnel did not take is handed to the next one, so losing one
/// connector of several loses no new requests.
pub(crate) async fn send_to_tunnel(
    hub: &crate::hub::Hub,
    dest: &str,
    mut req: http::Request<infra_tunnel::Body>,
) -> Result<http::Response<hyper::body::Incoming>, TunnelFailure> {
    for t in hub.tunnels(dest) {
        let mut send = t.send.clone();
        match send.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => {
                tracing::warn!(connector = %t.connector, destination = %dest, error = %e.error(), "tunnel request failed");
                let Some(r) = e.take_message() else {
                    return Err(TunnelFailure::WentAway);
                };
                t.closed.cancel();
                req = r;
            }
        }
    }
    Err(TunnelFailure::NoTunnel)
}

/// Whether `path` falls in the namespace Infra reserves on the tunnel
/// (`/_infra/…`), however it is spelled: percent-encoded (even twice),
/// with backslashes, doubled slashes, dot segments or another case. The
/// connector never takes a user request for its control stream anyway
/// (that is decided by a per-tunnel secret); this refusal is the second
/// wall.
pub(crate) fn in_reserved_namespace(path: &str) -> bool {
    let reserved = infra_tunnel::RESERVED_PREFIX.trim_start_matches('/');
    // Every gateway request passes here: without an escape the name must
    // be there as it is, and most paths can be waved through without a copy.
    if !path.contains('%') && !path.to_ascii_lowercase().contains(reserved) {
        return false;
    }
    infra_tunnel::path::segments(path)
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case(reserved))
}

async fn forward(state: AppState, dest: String, host: String, mut req: Request) -> Response {
    if in_reserved_namespace(req.uri().path()) {
        return ApiError::not_found(format!(
            "{} is reserved for Infra and never reaches a destination",
            infra_tunnel::RESERVED_PREFIX
        ))
        .into_response();
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    // A WebSocket (or other) upgrade: the client's bytes will ride the
    // tunnel request body, the upstream's the response body.
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    infra_tunnel::strip_hop_by_hop(&mut parts.headers);
    // The reserved namespace in any spelling; the connector strips identity
    // headers with the same rule (it must see `Impersonate-*` to refuse it).
    infra_tunnel::hygiene::strip_reserved(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&dest) {
        parts.headers.insert(HDR_DESTINATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer) {
        parts.headers.insert(HDR_CLIENT_ADDR, v);
    }
    if let Ok(v) = HeaderValue::from_str(&host) {
        parts.headers.insert(HDR_HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = match format!("http://{dest}{path}").parse() {
        Ok(u) => u,
        Err(_) => return ApiError::bad_request("invalid request path").into_response(),
    };
    parts.version = http::Version::HTTP_2;
    let mut client_tx = None;
    let body = match &upgrade {
        Some(proto) => {
            parts.headers.insert(HDR_UPGRADE, proto.clone());
            // The stream now carries the client's bytes after the switch,
            // not the request's (empty) body: a `Content-Length: 0`, as an
            // SPDY upgrade POST has, would make HTTP/2 reset the stream.
            parts.headers.remove(header::CONTENT_LENGTH);
            let (tx, rx) = infra_tunnel::body::bytes_channel(16);
            client_tx = Some(tx);
            drop(body);
            infra_tunnel::boxed(rx)
        }
        None => infra_tunnel::boxed(body),
    };
    let req = http::Request::from_parts(parts, body);
    match send_to_tunnel(&state.hub, &dest, req).await {
        Ok(resp) => match (resp.headers().get(HDR_UPGRADE).cloned(), on_upgrade, client_tx) {
            (Some(proto), Some(on_upgrade), Some(tx)) => {
                switch_protocols(&state.tasks.clients, resp, proto, on_upgrade, tx)
            }
            _ => resp.map(AxumBody::new),
        },
        Err(f) => {
            let status = match f {
                TunnelFailure::NoTunnel => http::StatusCode::SERVICE_UNAVAILABLE,
                TunnelFailure::WentAway => http::StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, f.message(&dest)).into_response()
        }
    }
}

/// The upstream agreed to upgrade: answer the client 101, then join the
/// client's connection to the tunnel stream both ways, on the clients'
/// tracker (an upgraded stream is a client connection for the drain).
fn switch_protocols(
    tasks: &tokio_util::task::TaskTracker,
    resp: http::Response<hyper::body::Incoming>,
    proto: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Response {
    let (parts, upstream) = resp.into_parts();
    let mut out = Response::new(AxumBody::empty());
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in &parts.headers {
        if k.as_str() != HDR_UPGRADE && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k, v.clone());
        }
    }
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.headers_mut().insert(header::UPGRADE, proto);
    let reader_tasks = tasks.clone();
    tasks.spawn(async move {
        let Ok(client) = on_upgrade.await else { return };
        let (rd, wr) = tokio::io::split(hyper_util::rt::TokioIo::new(client));
        reader_tasks.spawn(infra_tunnel::body::reader_to_channel(rd, tx));
        infra_tunnel::body::body_to_writer(upstream, wr).await;
    });
    out
}

#[cfg(test)]
mod tests {
    use super::{destination_of, in_reserved_namespace, is_ip};

    #[test]
    fn reserved_namespace_in_every_spelling() {
        for p in [
            "/_infra/control",
            "/_infra",
            "//_infra/control",
            "/_infra/control/",
            "/%5Finfra/control",
            "/%5finfra%2Fcontrol",
            "/%255Finfra/control",
            "/./_infra/control",
            "/x/../_infra/control",
            "/_INFRA/control",
            "\\_infra\\control",
            "/%2e/_infra",
        ] {
            assert!(in_reserved_namespace(p), "{p}");
        }
        for p in [
            "/",
            "/echo",
            "/_infrastructure",
            "/api/_infra",
            "/x/_infra/control",
            "/%zz",
        ] {
            assert!(!in_reserved_namespace(p), "{p}");
        }
    }

    #[test]
    fn ip_hosts() {
        for ip in ["127.0.0.1", "127.0.0.1:4443", "[::1]:4443", "[::1]", "::1"] {
            assert!(is_ip(ip), "{ip}");
        }
        for name in [
            "dev.localhost",
            "dev.localhost:4443",
            "localhost",
            "1.2.3.4.example.com",
        ] {
            assert!(!is_ip(name), "{name}");
        }
    }

    #[test]
    fn hosts() {
        let d = |h| destination_of(h, "localhost", "localhost");
        assert_eq!(d("web.localhost:4443").as_deref(), Some("web"));
        assert_eq!(d("WEB.localhost").as_deref(), Some("web"));
        assert_eq!(d("localhost:4443"), None);
        assert_eq!(d("a.b.localhost"), None);
        assert_eq!(d("weblocalhost"), None);
        assert_eq!(d("127.0.0.1:4443"), None);
        assert_eq!(
            destination_of("infra.example.com", "example.com", "infra.example.com"),
            None
        );
        assert_eq!(
            destination_of("web.example.com", "example.com", "infra.example.com").as_deref(),
            Some("web")
        );
    }
}
