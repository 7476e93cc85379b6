//! What reaches the server's port and the local proxy: chosen TLS server
//! names, dot segments in paths, a silent database client, and the proxy's
//! socket on a shared machine.

use std::time::Duration;

use super::{raw_tls, trusting};
use crate::e2e::common::{self, Env};
use crate::e2e::gateway::{expect, web_env};
use crate::e2e::postgres;

/// Whether a TLS client that checks the name gets a certificate for `sni`.
fn certificate_for(env: &Env, sni: &str) -> bool {
    use rustls::pki_types::ServerName;
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    let port = env.server.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = trusting(&ca, vec![]);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .is_ok()
    })
}

/// Anonymous client choosing server names: the CA signs gateway
/// certificates only for destinations that exist.
#[test]
fn attack_gateway_certificates_only_for_existing_destinations() {
    let w = web_env();
    assert!(
        certificate_for(&w.env, "web.localhost"),
        "no certificate for an existing destination"
    );
    for name in ["nosuch.localhost", "attacker-chosen-1.localhost", "a-b-c-d.localhost"] {
        assert!(
            !certificate_for(&w.env, name),
            "the CA signed a certificate for {name}, which is no destination"
        );
    }
}

/// Anonymous client on the database port: after TLS it says nothing. The
/// gateway does not keep the connection for ever.
#[test]
fn attack_silent_postgres_client_is_dropped() {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = web_env();
    let ca = std::fs::read(w.env.server.ca_path()).unwrap();
    let port = w.env.server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let closed = rt.block_on(async move {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
        let mut s = [0u8; 1];
        tcp.read_exact(&mut s).await.unwrap();
        assert_eq!(&s, b"S");
        let cfg = trusting(&ca, vec![]);
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from("web.localhost").unwrap(), tcp)
            .await
            .unwrap();
        // Say nothing; wait well past the server's limit for the close.
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut buf))
            .await
            .is_ok()
    });
    assert!(closed, "the gateway held a silent client's connection open");
}

/// Another local user on a shared machine: `infra proxy --socket-dir`
/// listens where only its user can connect (directory 0700, socket 0600),
/// and the session through it works.
#[test]
fn attack_infra_proxy_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = postgres::setup();
    let alice = postgres::reader(&db);
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("run");
    let mut child = std::process::Command::new(common::bin())
        .args(["proxy", "db", "--socket-dir"])
        .arg(&sock_dir)
        .env("HOME", alice.home())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sock = sock_dir.join(".s.PGSQL.5432");
    infra_testkit::eventually!(20, || {
        anyhow::ensure!(sock.exists(), "no socket yet");
        Ok(())
    });
    let dir_mode = std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o777;
    let sock_mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    let out = std::process::Command::new("psql")
        .arg(format!("host={} port=5432 dbname=app", sock_dir.display()))
        .args(["-XAtc", "select current_user"])
        .env("PGUSER", "alice@example.com")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(dir_mode, 0o700, "socket directory is {dir_mode:o}");
    assert_eq!(sock_mode, 0o600, "socket is {sock_mode:o}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "alice@example.com",
        "{out:?}"
    );
}

/// An authenticated user of a destination whose URL has a path prefix
/// (`http://host/app`): `..` in any spelling would let the upstream server
/// resolve the request to a path outside the prefix, with the connector's
/// upstream credential attached. Such paths are refused, never forwarded.
#[test]
fn attack_dot_segments_never_reach_the_upstream() {
    let w = web_env();
    let host = format!("web.localhost:{}", w.env.server.port);
    for path in [
        "/echo/../admin",
        "/echo/%2e%2e/admin",
        "/echo/%252e%252e/admin",
        "/echo/.%2E/admin",
        "/echo/./x",
    ] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            w.t
        );
        let answer = raw_tls(&w.env, "web.localhost", &[b"http/1.1"], req.as_bytes());
        let status = answer.lines().next().unwrap_or_default().to_owned();
        assert!(status.contains(" 400"), "{path} was forwarded: {answer}");
    }
    expect(&w.gw, &w.t, 200, "");
}
