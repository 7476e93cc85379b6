//! The tunnel between a connector and the server, both ends.
//!
//! The connector dials out (TLS, ALPN [`ALPN`]) to the server's one port.
//! After a one-line JSON handshake in each direction ([`handshake`]) the
//! connection carries HTTP/2 with the roles turned round: the **server is
//! the HTTP/2 client** and opens one stream per proxied request, the
//! **connector is the HTTP/2 server** and answers them. HTTP/2 gives
//! per-stream flow control (a slow client does not stall other streams),
//! streaming bodies both ways, cancellation (RST_STREAM) and keepalive
//! (PING) without a protocol of our own.
//!
//! One long-lived stream, the control stream, carries JSON lines both
//! ways: the server pushes state (signing keys, grants, revocations) down
//! its request body, the connector sends audit events and health up its
//! response body. It is told apart from user streams by a per-tunnel
//! secret, never by its path ([`control`]).
//!
//! The module is transport-agnostic: it works on any `AsyncRead +
//! AsyncWrite`, so tests use in-memory pipes.

pub mod body;
pub mod cancel;
pub mod control;
pub mod credential;
pub mod handshake;
pub mod hygiene;
pub mod path;
pub mod proto;
pub mod refusal;
pub mod transport;

/// ALPN protocol id that tells a tunnel apart from HTTPS on the one port.
pub const ALPN: &[u8] = b"infra-tunnel/1";

/// Path the server opens the control stream on. Informational only: the
/// connector recognises the control stream by its secret
/// ([`control::ControlGate`]), never by this path, and the gateway refuses
/// user requests under it.
pub const CONTROL_PATH: &str = "/_infra/control";
/// The namespace of paths Infra reserves on the tunnel; the gateway refuses
/// user requests in it, however they are spelled.
pub const RESERVED_PREFIX: &str = "/_infra";

/// Headers the server sets on each proxied request (after removing any a
/// client sent): which destination, and the client's address.
pub const HDR_DESTINATION: &str = "x-infra-destination";
pub const HDR_CLIENT_ADDR: &str = "x-infra-client-addr";
/// The host name the client used (for redirects back to it).
pub const HDR_HOST: &str = "x-infra-host";
/// On a tunnelled request: the client asked to upgrade to this protocol
/// (WebSocket). On the response: the upstream agreed.
pub const HDR_UPGRADE: &str = "x-infra-upgrade";
/// The upgrade a client asks for to carry a raw byte stream (a database
/// session) to a destination: `infra proxy` sends it.
pub const TCP_UPGRADE: &str = "infra-tcp/1";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both ends of the tunnel.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    b.map_err(Into::into).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// A body with these bytes.
pub fn full(b: impl Into<bytes::Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// Headers that belong to one connection, not to the request: never
/// forwarded (and illegal in HTTP/2).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Removes hop-by-hop headers and every header the sender named in
/// `Connection` (a client can otherwise ask a proxy to drop a header the
/// proxy itself set, or smuggle one past it).
pub fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}
