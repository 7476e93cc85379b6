//! The tunnel server against an in-memory connector: a duplex pipe
//! instead of TLS, the real handshake, HTTP/2 and control-stream code on
//! the connector's side, and the gateway's router for user requests.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use infra_tunnel::body::{LineReader, LineSender, channel};
use infra_tunnel::control::{ControlGate, HDR_CONTROL, StreamKind};
use infra_tunnel::handshake::{self, HandshakeError};
use infra_tunnel::proto::{AccessEvent, ConnectorMsg, ControlMsg, DestinationInfo, Hello, HelloReply, VERSION};
use infra_tunnel::{CONTROL_PATH, transport};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::state::AppState;
use crate::testing::{self, TestState};

mod recordings;

/// Bounds every wait, so a broken tunnel fails the test instead of
/// hanging it; nothing waits on the clock to order events.
const LIMIT: Duration = Duration::from_secs(20);

fn hello(access_key: &str, name: &str) -> Hello {
    let assertion = infra_auth::jwt::SigningKey::generate().unwrap();
    Hello {
        version: VERSION,
        access_key: access_key.to_owned(),
        name: name.to_owned(),
        instance_id: format!("{name}-instance"),
        destinations: vec![DestinationInfo {
            name: "web".into(),
            kind: infra_tunnel::proto::DestinationKind::Http,
            labels: Default::default(),
            direct_url: None,
            ssh_host_keys: vec![],
            webhook: None,
        }],
        assertion_kid: infra_auth::jwt::ed25519_kid(&assertion.public_x).unwrap(),
        assertion_key: assertion.public_x,
        software: String::new(),
    }
}

/// Starts the server's end of one tunnel on a pipe; returns the
/// connector's end and the server's task.
fn start(state: &AppState) -> (DuplexStream, JoinHandle<()>) {
    let (connector, server) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(super::serve(state.clone(), server, "test".into()));
    (connector, serving)
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("in time")
}

/// What the server said to a connector it refused.
async fn refusal(state: &AppState, hello: &Hello) -> String {
    let (io, serving) = start(state);
    let answer = within(handshake::connect(io, hello)).await;
    within(serving).await.unwrap();
    match answer {
        Err(HandshakeError::Refused(m)) => m,
        Err(e) => panic!("not a refusal: {e}"),
        Ok(_) => panic!("admitted"),
    }
}

#[tokio::test]
async fn refuses_another_protocol_version() {
    let t = testing::state().await;
    let key = testing::add_key(&t.state, infra_store::KeyKind::Connector, "dc1").await;
    let mut h = hello(&key, "dc1");
    h.version = VERSION + 1;
    let m = refusal(&t.state, &h).await;
    assert!(m.contains("is not supported; upgrade the connector"), "{m}");
    assert_eq!(t.state.hub.count("web"), 0);
}

#[tokio::test]
async fn refuses_connectors_without_a_valid_key_of_their_own() {
    let t = testing::state().await;
    let key = testing::add_key(&t.state, infra_store::KeyKind::Connector, "dc1").await;
    let not_connector = testing::add_key(&t.state, infra_store::KeyKind::User, "dc1").await;
    // The right key id with another secret.
    let last = if key.ends_with('a') { 'b' } else { 'a' };
    let wrong_secret = format!("{}{last}", &key[..key.len() - 1]);
    let mut forged_kid = hello(&key, "dc1");
    forged_kid.assertion_kid = "0123456789abcdef".into();
    let mut reserved = hello(&key, "dc1");
    reserved.destinations[0].name = "infra".into();
    let cases = [
        (hello("nope", "dc1"), "connector access key is invalid"),
        (hello(&wrong_secret, "dc1"), "connector access key is invalid"),
        (hello(&not_connector, "dc1"), "this is not a connector key"),
        (hello(&key, "dc2"), "this key is for connector 'dc1', not 'dc2'"),
        (forged_kid, "the assertion key id is not derived from the assertion key"),
        (reserved, "destination name 'infra' is reserved"),
    ];
    for (h, expected) in cases {
        let m = refusal(&t.state, &h).await;
        assert!(m.contains(expected), "{expected:?} not in {m:?}");
    }
    assert_eq!(t.state.hub.count("web"), 0);
    let mut c = t.state.store.conn().await.unwrap();
    let registered = infra_store::connectors::destination(&mut c, "web").await.unwrap();
    assert!(registered.is_none(), "a refused connector registered a destination");
}

/// A stream the server opened, as the connector's gate classified it.
struct Stream {
    kind: StreamKind,
    req: http::request::Parts,
    body: Incoming,
    /// The connector's side of the response body.
    reply: LineSender,
}

/// A connector that passed the handshake and serves HTTP/2 on its tunnel,
/// classifying each stream with the real [`ControlGate`].
struct Connector {
    reply: HelloReply,
    streams: mpsc::UnboundedReceiver<Stream>,
    /// The connector's side of the tunnel; aborting it drops the pipe.
    serving: JoinHandle<()>,
}

async fn connect(t: &TestState) -> (Connector, JoinHandle<()>) {
    connect_as(t, "dc1", "web").await
}

/// A connector named `name` serving `destination`.
async fn connect_as(t: &TestState, name: &str, destination: &str) -> (Connector, JoinHandle<()>) {
    let key = testing::add_key(&t.state, infra_store::KeyKind::Connector, name).await;
    let (io, server) = start(&t.state);
    let mut h = hello(&key, name);
    h.destinations[0].name = destination.to_owned();
    let (io, reply) = within(handshake::connect(io, &h)).await.unwrap();
    let gate = Arc::new(ControlGate::new(reply.control_secret.clone()));
    let (found, streams) = mpsc::unbounded_channel();
    let service = move |req: http::Request<Incoming>| {
        let (gate, found) = (gate.clone(), found.clone());
        async move {
            let kind = gate.classify(req.headers());
            let (req, body) = req.into_parts();
            let (reply, reply_body) = channel(16);
            let _ = found.send(Stream { kind, req, body, reply });
            Ok::<_, std::convert::Infallible>(http::Response::new(infra_tunnel::boxed(reply_body)))
        }
    };
    let serving = tokio::spawn(async move {
        // Never drained: the tests end the connector by dropping it.
        let never = CancellationToken::new();
        let _ = transport::serve(io, service, never, || true, Duration::ZERO).await;
    });
    let connector = Connector {
        reply,
        streams,
        serving,
    };
    (connector, server)
}

impl Connector {
    async fn next_stream(&mut self) -> Stream {
        within(self.streams.recv()).await.expect("a stream")
    }
}

/// Takes the connector's first stream, which must be the control stream:
/// it carries the tunnel's secret from the handshake reply. Returns the
/// connector's sending side and the reader of what the server pushes.
async fn control_stream(c: &mut Connector) -> (LineSender, LineReader<Incoming>) {
    let control = c.next_stream().await;
    assert_eq!(control.kind, StreamKind::Control);
    assert_eq!(control.req.uri.path(), CONTROL_PATH);
    let secret = c.reply.control_secret.expose();
    assert!(!secret.is_empty());
    assert_eq!(control.req.headers[HDR_CONTROL].as_bytes(), secret.as_bytes());
    (control.reply, LineReader::new(control.body))
}

/// Waits until the tunnel is serving: an audit event sent on the control
/// stream is acknowledged only once the server reads it, which it starts
/// after the tunnel is in the hub.
async fn wait_until_serving(to_server: &LineSender, from_server: &mut LineReader<Incoming>) {
    wait_until_serving_for(to_server, from_server, "web").await;
}

async fn wait_until_serving_for(to_server: &LineSender, from_server: &mut LineReader<Incoming>, destination: &str) {
    let ev = AccessEvent {
        seq: 1,
        time_ms: 0,
        user: "alice@example.com".into(),
        destination: destination.into(),
        source: "127.0.0.1".into(),
        result: infra_tunnel::proto::Outcome::Success,
        detail: "GET /".into(),
    };
    to_server.send(&ConnectorMsg::Audit(ev)).await.unwrap();
    loop {
        match within(from_server.next::<ControlMsg>()).await.unwrap() {
            Some(ControlMsg::AuditAck { seq }) => {
                assert_eq!(seq, 1);
                return;
            }
            Some(ControlMsg::Snapshot(_) | ControlMsg::RecordingAck { .. }) => {}
            None => panic!("the control stream ended"),
        }
    }
}

#[tokio::test]
async fn the_control_stream_carries_the_tunnel_secret_and_the_snapshot_first() {
    let t = testing::state().await;
    let (mut c, server) = connect(&t).await;
    assert!(c.reply.ok);
    let (to_server, mut from_server) = control_stream(&mut c).await;
    match within(from_server.next::<ControlMsg>()).await.unwrap() {
        Some(ControlMsg::Snapshot(s)) => assert!(!s.jwks.keys.is_empty(), "no signing keys pushed"),
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    wait_until_serving(&to_server, &mut from_server).await;
    assert_eq!(t.state.hub.count("web"), 1);
    // The connector goes away: the tunnel ends and leaves the hub.
    c.serving.abort();
    within(server).await.unwrap();
    assert_eq!(
        t.state.hub.count("web"),
        0,
        "the tunnel stayed in the hub after it ended"
    );
}

/// A gateway request whose client forges the control header (even with
/// the right secret) reaches the connector as a user stream, without the
/// header; one for the reserved path never reaches it.
#[tokio::test]
async fn user_requests_are_never_the_control_stream() {
    let t = testing::state().await;
    let (mut c, server) = connect(&t).await;
    let (to_server, mut from_server) = control_stream(&mut c).await;
    wait_until_serving(&to_server, &mut from_server).await;
    let router = crate::api::router(t.state.clone());
    let secret = c.reply.control_secret.expose().to_owned();

    let forged = http::Request::get("/echo")
        .header(http::header::HOST, "web.localhost")
        .header(HDR_CONTROL, &secret)
        .body(axum::body::Body::empty())
        .unwrap();
    let call = tokio::spawn(router.clone().oneshot(forged));
    let stream = c.next_stream().await;
    assert_eq!(stream.kind, StreamKind::User);
    assert_eq!(stream.req.uri.path(), "/echo");
    assert!(
        stream.req.headers.get(HDR_CONTROL).is_none(),
        "the client's control header reached the connector"
    );
    drop(stream.reply);
    let resp = within(call).await.unwrap().unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);

    let reserved = http::Request::get(CONTROL_PATH)
        .header(http::header::HOST, "web.localhost")
        .header(HDR_CONTROL, &secret)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = within(router.oneshot(reserved)).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::NOT_FOUND);
    let body = within(resp.into_body().collect()).await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("reserved for Infra"));
    assert!(c.streams.try_recv().is_err(), "a reserved path reached the connector");

    c.serving.abort();
    within(server).await.unwrap();
}

/// At shutdown the server closes its tunnels, and each one ends with
/// every task it started.
#[tokio::test]
async fn closing_tunnels_ends_them() {
    let t = testing::state().await;
    let (mut c, server) = connect(&t).await;
    let (to_server, mut from_server) = control_stream(&mut c).await;
    wait_until_serving(&to_server, &mut from_server).await;
    t.state.tasks.close_tunnels.cancel();
    within(server).await.unwrap();
    assert_eq!(t.state.hub.count("web"), 0);
    // The connector sees its tunnel end.
    within(c.serving).await.unwrap();
}
