//! The session's start, in memory: a client on a duplex pipe, a plain TCP
//! listener playing the database where one is reached. Nothing here needs
//! PostgreSQL; the relay and the login roles are tested end to end.

use std::sync::Arc;

use infra_proto_pg::{MAX_MESSAGE, cancel_request, error_fields, frame, startup_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;

use super::*;
use crate::config::{Settings, TlsConfig};
use crate::pg_roles::Roles;
use crate::spool::Spool;
use crate::state::State;
use infra_auth::decide::Identity;

pub(crate) const SSL: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
pub(crate) const GSSENC: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// A connector serving database `db`, with no grants yet, its data (spool,
/// direct-mode CA) in a fresh directory named after the test.
pub(crate) fn state(test: &str) -> Arc<State> {
    let dir = std::env::temp_dir().join(format!("infra-pg-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = Settings {
        server: "https://infra.invalid".into(),
        server_host: "infra.invalid".into(),
        server_port: 443,
        access_key: String::new(),
        name: "test".into(),
        tls: TlsConfig::default(),
        data_dir: dir.clone(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        direct: None,
        webhook: None,
        destinations: vec![crate::config::Destination {
            name: "db".into(),
            kind: crate::config::Kind::Postgres(pg(1)),
            url: "postgres://127.0.0.1:1".into(),
            authority: "127.0.0.1:1".into(),
            upstream_authorization: None,
            labels: Default::default(),
            recording: None,
        }],
        recording_budget: 1 << 20,
        recording_max: 1 << 20,
    };
    Arc::new(State::new(settings, Spool::open(&dir).unwrap(), "instance".into(), None).unwrap())
}

/// A database at `port` (nothing need listen there).
pub(crate) fn pg(port: u16) -> PgConfig {
    PgConfig {
        host: "127.0.0.1".into(),
        port,
        database: "app".into(),
        admin_user: "infra_admin".into(),
        admin_password: "secret".into(),
        keep_parameters: false,
        listen: None,
    }
}

/// A port where nothing listens.
pub(crate) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// What a token for alice says.
pub(crate) fn alice() -> infra_auth::jwt::Claims {
    infra_auth::jwt::Claims {
        iss: "https://infra.invalid".into(),
        sub: "u1".into(),
        aud: "db".into(),
        exp: i64::MAX,
        iat: 0,
        nbf: 0,
        jti: "j".into(),
        name: "alice@example.com".into(),
        email: None,
        groups: Vec::new(),
        sid: None,
        act: None,
    }
}

fn session(state: &Arc<State>, cfg: PgConfig) -> Session {
    Session {
        destination: "db".into(),
        roles: Arc::new(Roles::new(cfg.clone())),
        cfg,
        ident: Identity {
            claims: alice(),
            user_id: "u1".into(),
            email: "alice@example.com".into(),
            groups: Vec::new(),
            roles: vec!["read".into()],
            current_groups: Vec::new(),
        },
        audit: Audit::new(state.spool.clone(), "postgres", "alice@example.com", "db", "192.0.2.7"),
        cancel: CancellationToken::new(),
    }
}

pub(crate) async fn read_all(client: &mut DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// The SQLSTATE and message of the one ErrorResponse in `b`.
pub(crate) fn only_error(b: &[u8]) -> (String, String) {
    let (tag, n) = frame(b, MAX_MESSAGE).unwrap().unwrap();
    assert_eq!((tag, n), (b'E', b.len()), "{b:?}");
    error_fields(&b[5..])
}

/// The audit events recorded so far: (user, result, detail).
pub(crate) fn events(state: &State) -> Vec<(String, String, String)> {
    state
        .spool
        .events()
        .into_iter()
        .map(|e| (e.user, e.result.as_str().to_owned(), e.detail))
        .collect()
}

#[tokio::test]
async fn encryption_is_declined_and_a_bad_startup_is_denied() {
    let state = state("bad-startup");
    let (mut client, server) = tokio::io::duplex(4096);
    let serving = tokio::spawn(session(&state, pg(closed_port().await)).serve(server));
    let mut answer = [0u8; 1];
    for request in [SSL, GSSENC] {
        client.write_all(&request).await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
    }
    // Protocol 2.0.
    client.write_all(&[0, 0, 0, 8, 0, 2, 0, 0]).await.unwrap();
    let (code, msg) = only_error(&read_all(&mut client).await);
    assert_eq!(code, "0A000", "{msg}");
    serving.await.unwrap();
    let ev = events(&state);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let (user, result, detail) = &ev[0];
    assert_eq!((user.as_str(), result.as_str()), ("alice@example.com", "denied"));
    assert!(
        detail.starts_with("bad startup packet: unsupported protocol version 2.0"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_cancel_reaches_the_database_and_is_audited() {
    let state = state("cancel");
    let db = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = db.local_addr().unwrap().port();
    let (mut client, server) = tokio::io::duplex(4096);
    let serving = tokio::spawn(session(&state, pg(port)).serve(server));
    client.write_all(&cancel_request(42, 7)).await.unwrap();
    let (mut conn, _) = db.accept().await.unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, cancel_request(42, 7));
    serving.await.unwrap();
    assert_eq!(
        events(&state),
        [(
            "alice@example.com".to_owned(),
            "success".to_owned(),
            "cancel request pid=42 sent".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_cancel_the_database_does_not_take_is_audited_as_failed() {
    let state = state("cancel-failed");
    let anonymous = Audit::new(state.spool.clone(), "postgres", "anonymous", "db", "192.0.2.7");
    cancel_query(&anonymous, &pg(closed_port().await), CancelKey { pid: 9, secret: 1 }).await;
    let ev = events(&state);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "anonymous");
    assert!(ev[0].2.starts_with("cancel request pid=9 failed: "), "{}", ev[0].2);
}

/// The startup is read, the session goes on to log in upstream; with no
/// database there, the client is told and the refusal is audited.
#[tokio::test]
async fn after_the_startup_an_unreachable_database_is_a_failure() {
    let state = state("unreachable");
    let (mut client, server) = tokio::io::duplex(4096);
    let serving = tokio::spawn(session(&state, pg(closed_port().await)).serve(server));
    client.write_all(&SSL).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    client
        .write_all(&startup_message(&[("user", "alice@example.com"), ("database", "app")]))
        .await
        .unwrap();
    let (code, msg) = only_error(&read_all(&mut client).await);
    assert_eq!(code, "08006", "{msg}");
    assert!(msg.contains("cannot reach database db"), "{msg}");
    serving.await.unwrap();
    let ev = events(&state);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].1, "failure");
    assert!(
        ev[0].2.starts_with("session refused database=app error=08006"),
        "{}",
        ev[0].2
    );
}
