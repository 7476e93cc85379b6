//! The gateway: `https://<destination>.<gateway domain>/…` goes into a
//! tunnel to a connector serving that destination. The server only routes;
//! the connector checks the credential and the grant.

use std::net::SocketAddr;

use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use infra_tunnel::{HDR_CLIENT_ADDR, HDR_DESTINATION};

use crate::error::ApiError;
use crate::state::AppState;

/// Headers that belong to one hop and may not cross into HTTP/2.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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

/// Middleware: gateway requests go to a tunnel, the rest to the API.
pub(crate) async fn route(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let own = state.settings.public_host.as_str();
    match host.and_then(|h| destination_of(&h, &state.settings.gateway_domain, own)) {
        Some(dest) => forward(state, dest, req).await,
        None => next.run(req).await,
    }
}

fn unavailable(dest: &str) -> Response {
    ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        format!("no connector is serving destination '{dest}' right now; see 'infra destinations list'"),
    )
    .into_response()
}

async fn forward(state: AppState, dest: String, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let named: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        parts.headers.remove(n);
    }
    for n in HOP_BY_HOP {
        parts.headers.remove(n);
    }
    let infra: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-infra-"))
        .cloned()
        .collect();
    for n in infra {
        parts.headers.remove(n);
    }
    if let Ok(v) = HeaderValue::from_str(&dest) {
        parts.headers.insert(HDR_DESTINATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer) {
        parts.headers.insert(HDR_CLIENT_ADDR, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = match format!("http://{dest}{path}").parse() {
        Ok(u) => u,
        Err(_) => return ApiError::bad_request("invalid request path").into_response(),
    };
    parts.version = http::Version::HTTP_2;
    let mut req = http::Request::from_parts(parts, infra_tunnel::boxed(body));

    // Try each tunnel for the destination: a request a dying tunnel did not
    // take is handed to the next one, so losing one connector of several
    // loses no new requests.
    for t in state.hub.tunnels(&dest) {
        let mut send = t.send.clone();
        match send.try_send_request(req).await {
            Ok(resp) => return resp.map(AxumBody::new),
            Err(mut e) => {
                tracing::warn!(connector = %t.connector, destination = %dest, error = %e.error(), "tunnel request failed");
                match e.take_message() {
                    Some(r) => {
                        t.closed.cancel();
                        req = r;
                    }
                    None => {
                        return ApiError::new(
                            http::StatusCode::BAD_GATEWAY,
                            format!("the connector serving '{dest}' went away during the request; try again"),
                        )
                        .into_response();
                    }
                }
            }
        }
    }
    unavailable(&dest)
}

#[cfg(test)]
mod tests {
    use super::destination_of;

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
