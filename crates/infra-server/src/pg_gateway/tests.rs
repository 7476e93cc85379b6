//! The gateway's side of a PostgreSQL session, in memory: a client on a
//! duplex pipe, fake connectors on real HTTP/2 tunnels over duplex pipes.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use infra_proto_pg::{MAX_MESSAGE, auth_cleartext, error_fields, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::hub::Tunnel;

const QUERY: &[u8] = b"Q\0\0\0\x0dselect 1\0";

/// What a fake connector saw of a stream: its headers and the first
/// chunk of its body.
#[derive(Debug)]
struct Seen {
    headers: http::HeaderMap,
    first: Bytes,
}

/// How a fake connector answers every stream.
#[derive(Clone, Copy)]
enum Answer {
    /// Takes the stream and sends these bytes down it.
    Accept(&'static [u8]),
    /// Refuses with this status and JSON body.
    Refuse(u16, &'static str),
}

/// A fake connector for `db` in `hub`; reports what it saw on the
/// returned channel.
async fn connector(hub: &Hub, answer: Answer) -> (Arc<Tunnel>, mpsc::Receiver<Seen>) {
    let (server_end, connector_end) = tokio::io::duplex(1 << 16);
    let (seen_tx, seen) = mpsc::channel(4);
    let service = move |req: http::Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let headers = req.headers().clone();
            let mut body = req.into_body();
            let first = match body.frame().await {
                Some(Ok(f)) => f.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            };
            let _ = seen_tx.send(Seen { headers, first }).await;
            let resp = match answer {
                Answer::Accept(bytes) => {
                    let mut r = http::Response::new(infra_tunnel::full(bytes));
                    r.headers_mut().insert(HDR_UPGRADE, TCP_UPGRADE.parse().unwrap());
                    r
                }
                Answer::Refuse(status, json) => {
                    let mut r = http::Response::new(infra_tunnel::full(json));
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    r
                }
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    };
    tokio::spawn(infra_tunnel::transport::serve(
        connector_end,
        service,
        CancellationToken::new(),
        || true,
        Duration::from_secs(1),
    ));
    let (send, conn) = infra_tunnel::transport::open(server_end).await.unwrap();
    tokio::spawn(conn);
    let t = Arc::new(Tunnel {
        id: hub.next_id(),
        connector: "c".into(),
        send,
        closed: CancellationToken::new(),
    });
    hub.add(&["db".to_owned()], t.clone());
    (t, seen)
}

/// Runs a session for `db` with a client that logs in with `token` and
/// pipelines a query; returns everything the client received.
async fn run(hub: Arc<Hub>, token: &str) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let gateway =
        tokio::spawn(async move { session(&hub, &TaskTracker::new(), "db".into(), server, "192.0.2.7".into()).await });
    client
        .write_all(&startup_message(&[("user", "alice"), ("database", "app")]))
        .await
        .unwrap();
    let mut login = vec![b'p'];
    login.extend_from_slice(&u32::try_from(token.len() + 5).unwrap().to_be_bytes());
    login.extend_from_slice(token.as_bytes());
    login.push(0);
    login.extend_from_slice(QUERY);
    client.write_all(&login).await.unwrap();
    let got = read_all(&mut client).await;
    tokio::time::timeout(Duration::from_secs(5), gateway)
        .await
        .unwrap()
        .unwrap();
    got
}

async fn read_all(client: &mut DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// The password request, then an error: its SQLSTATE and message.
fn refusal_in(got: &[u8]) -> (String, String) {
    let ask = auth_cleartext();
    assert_eq!(got[..ask.len()], ask[..], "{got:?}");
    let rest = &got[ask.len()..];
    let (tag, n) = frame(rest, MAX_MESSAGE).unwrap().unwrap();
    assert_eq!((tag, n), (b'E', rest.len()));
    error_fields(&rest[5..n])
}

#[tokio::test]
async fn no_connector_is_a_connection_failure() {
    let got = run(Arc::new(Hub::new()), "tok").await;
    let (code, msg) = refusal_in(&got);
    assert_eq!(code, "08006");
    assert!(msg.contains("no connector is serving destination 'db'"), "{msg}");
}

#[tokio::test]
async fn the_connectors_refusal_reaches_the_client() {
    let hub = Arc::new(Hub::new());
    let (_t, mut seen) = connector(&hub, Answer::Refuse(403, r#"{"code":403,"message":"no grant on db"}"#)).await;
    let got = run(hub, "tok.en").await;
    assert_eq!(refusal_in(&got), ("28000".to_owned(), "no grant on db".to_owned()));
    // The stream as the connector got it: routing, the token, and the
    // client's startup again followed by what it pipelined.
    let s = seen.recv().await.unwrap();
    assert_eq!(s.headers[HDR_DESTINATION], "db");
    assert_eq!(s.headers[HDR_CLIENT_ADDR], "192.0.2.7");
    assert_eq!(s.headers[HDR_UPGRADE], TCP_UPGRADE);
    assert_eq!(s.headers["authorization"], "Bearer tok.en");
    let startup = startup_message(&[("user", "alice"), ("database", "app")]);
    assert_eq!(s.first, [&startup[..], QUERY].concat());
}

#[tokio::test]
async fn an_accepted_session_is_spliced() {
    let hub = Arc::new(Hub::new());
    let (_t, _seen) = connector(&hub, Answer::Accept(b"from the database")).await;
    let got = run(hub, "tok").await;
    assert_eq!(got, [&auth_cleartext()[..], b"from the database"].concat());
}

#[tokio::test]
async fn a_dead_tunnel_is_passed_over() {
    let hub = Arc::new(Hub::new());
    let (dead, _) = connector(&hub, Answer::Accept(b"never")).await;
    dead.closed.cancel();
    let (_live, _seen) = connector(&hub, Answer::Accept(b"live")).await;
    for _ in 0..3 {
        let got = run(hub.clone(), "tok").await;
        assert_eq!(got, [&auth_cleartext()[..], b"live"].concat());
    }
}

/// A tunnel that takes the request but whose connection dies before
/// sending it hands the request back; the next tunnel serves it.
#[tokio::test]
async fn a_request_a_dying_tunnel_did_not_send_goes_to_the_next() {
    let hub = Hub::new();
    let (server_end, _connector_end) = tokio::io::duplex(1 << 16);
    // The first tunnel's connection is never driven: it queues the
    // request and then goes away.
    let (send, conn) = infra_tunnel::transport::open(server_end).await.unwrap();
    let dying = Arc::new(Tunnel {
        id: hub.next_id(),
        connector: "dying".into(),
        send,
        closed: CancellationToken::new(),
    });
    hub.add(&["db".to_owned()], dying.clone());
    let (_live, mut seen) = connector(
        &hub,
        Answer::Refuse(403, r#"{"code":403,"message":"from the live one"}"#),
    )
    .await;
    let (_tx, req) = stream_request("db", "192.0.2.7".into(), &sample_login()).unwrap();
    let mut sent = Box::pin(send_to_tunnel(&hub, "db", req));
    tokio::select! {
        biased;
        _ = &mut sent => panic!("answered before the dying tunnel went"),
        () = std::future::ready(()) => {}
    }
    drop(conn);
    let resp = sent.await.unwrap();
    assert_eq!(Refusal::read(resp).await.message, "from the live one");
    assert!(dying.closed.is_cancelled(), "the dying tunnel is marked closed");
    assert!(seen.recv().await.is_some());
}

fn sample_login() -> Login {
    use infra_proto_pg::login::{Handshake, Step};
    let mut l = CleartextLogin::new(Transport::Tls);
    l.receive(&startup_message(&[("user", "alice")]));
    l.receive(b"p\0\0\0\x08tok\0");
    loop {
        match l.step() {
            Step::Write(_) => {}
            Step::Done(login) => return login,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_bad_login_never_reaches_a_tunnel() {
    let hub = Arc::new(Hub::new());
    let (_t, mut seen) = connector(&hub, Answer::Accept(b"never")).await;
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let h = hub.clone();
    let gateway = tokio::spawn(async move { session(&h, &TaskTracker::new(), "db".into(), server, "p".into()).await });
    client.write_all(&SSL_REQUEST).await.unwrap();
    let got = read_all(&mut client).await;
    gateway.await.unwrap();
    let (tag, n) = frame(&got, MAX_MESSAGE).unwrap().unwrap();
    assert_eq!((tag, n), (b'E', got.len()));
    assert_eq!(error_fields(&got[5..]).0, "08P01");
    assert!(seen.try_recv().is_err(), "nothing was sent to the connector");
}
