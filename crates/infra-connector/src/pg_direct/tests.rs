//! The direct listener's protocol, in memory: a client on a duplex pipe
//! (with real TLS over it), up to the access decision.

use std::sync::Arc;

use infra_proto_pg::{MAX_MESSAGE, auth_cleartext, cancel_request, error_fields, frame, startup_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;

use super::*;
use crate::config::DirectConfig;
use crate::pg_session::tests::{GSSENC, SSL, closed_port, events, only_error, pg, read_all, state};

fn acceptor(state: &State) -> tokio_rustls::TlsAcceptor {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let d = DirectConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_file: None,
        key_file: None,
        names: Vec::new(),
        url: None,
    };
    let mut tls = crate::direct::tls_config(state, &d).unwrap();
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// A client's TLS, trusting whatever the listener shows (the certificate
/// is not what is tested here).
async fn tls_client(io: DuplexStream) -> tokio_rustls::client::TlsStream<DuplexStream> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = infra_auth::chain::ChainVerifier::new(None, provider.clone());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, io)
        .await
        .unwrap()
}

/// Serves one connection of the direct listener for `db` on a duplex pipe.
fn serve_one(state: &Arc<State>, cfg: PgConfig) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let acceptor = acceptor(state);
    let task = tokio::spawn(connection(
        state.clone(),
        "db".into(),
        cfg,
        acceptor,
        server,
        "192.0.2.7".into(),
    ));
    (client, task)
}

#[tokio::test]
async fn a_startup_in_the_clear_is_refused() {
    let state = state("direct-clear");
    let (mut client, task) = serve_one(&state, pg(closed_port().await));
    client.write_all(&startup_message(&[("user", "a")])).await.unwrap();
    let (code, msg) = only_error(&read_all(&mut client).await);
    assert_eq!(code, "28000");
    assert!(msg.contains("requires TLS"), "{msg}");
    task.await.unwrap();
}

#[tokio::test]
async fn a_cancel_is_forwarded_and_audited_as_anonymous() {
    let state = state("direct-cancel");
    let db = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut client, task) = serve_one(&state, pg(db.local_addr().unwrap().port()));
    client.write_all(&cancel_request(42, 7)).await.unwrap();
    let (mut conn, _) = db.accept().await.unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, cancel_request(42, 7));
    task.await.unwrap();
    assert_eq!(
        events(&state),
        [(
            "anonymous".to_owned(),
            "success".to_owned(),
            "cancel request pid=42 sent".to_owned()
        )]
    );
}

/// GSSAPI declined, TLS granted, the startup and the token over TLS: the
/// login reaches the access decision, which has no grants yet.
#[tokio::test]
async fn the_login_runs_over_tls_up_to_the_decision() {
    let state = state("direct-login");
    let (mut client, task) = serve_one(&state, pg(closed_port().await));
    let mut answer = [0u8; 1];
    client.write_all(&GSSENC).await.unwrap();
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    client.write_all(&SSL).await.unwrap();
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut tls = tls_client(client).await;
    tls.write_all(&startup_message(&[("user", "alice@example.com")]))
        .await
        .unwrap();
    let mut ask = vec![0u8; auth_cleartext().len()];
    tls.read_exact(&mut ask).await.unwrap();
    assert_eq!(ask, auth_cleartext());
    tls.write_all(b"p\0\0\0\x08tok\0").await.unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    let (tag, n) = frame(&got, MAX_MESSAGE).unwrap().unwrap();
    assert_eq!(tag, b'E');
    let (code, msg) = error_fields(&got[5..n]);
    assert_eq!(code, "57P03");
    assert!(msg.contains("not received its grants"), "{msg}");
    task.await.unwrap();
}
