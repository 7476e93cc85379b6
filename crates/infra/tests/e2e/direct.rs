//! Direct mode keeps working with the server down, and the audit events of
//! that time reach the server later, each exactly once. Bad input on the
//! server's one port harms nothing.

use std::io::{Read, Write};
use std::time::Duration;

use infra_testkit::{Connector, Upstream, eventually, free_port};

use super::common::{ADMIN, Backend, bin, json, start};
use super::gateway::{Gw, connector_key, token, web};

fn direct_get(ca: &[u8], port: u16, path: &str, token: &str) -> (u16, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
            .resolve("web.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        match c
            .get(format!("https://web.localhost:{port}{path}"))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, format!("{e:?}")),
        }
    })
}

fn audited(env: &super::common::Env, marker: &str) -> usize {
    let ev = json(
        env.admin
            .run(&["audit", "list", "--action", "http.request", "-o", "json"])
            .ok(),
    );
    ev.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap_or("").contains(marker))
        .count()
}

#[test]
fn direct_mode_survives_the_server_and_audit_is_shipped_once() {
    let mut env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let dport = free_port();
    let extra = format!("direct:\n  listen: 127.0.0.1:{dport}\n");
    let mut c = Connector::start_with(&bin(), &env.server, &key, "dc1", &web(&up), &extra).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let t = token(&env.admin, "web");
    let ca = std::fs::read(c.data_dir.join("data/direct-ca.pem")).unwrap();
    eventually!(10, || match direct_get(&ca, dport, "/echo/warmup", &t) {
        (200, _) => Ok(()),
        other => Err(anyhow::anyhow!("{other:?}")),
    });
    // Direct requests carry no forged identity either.
    let (s, body) = direct_get(&ca, dport, "/echo", "not-a-token");
    assert_eq!(s, 401, "{body}");

    env.server.stop();
    for i in 0..3 {
        let (s, body) = direct_get(&ca, dport, &format!("/echo/offline-{i}"), &t);
        assert_eq!(s, 200, "direct mode with the server down: {body}");
    }
    // The connector restarts while the server is still down: its spool
    // keeps the events.
    c.respawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    env.server.restart().unwrap();
    c.wait_ready().unwrap();
    eventually!(20, || {
        let n: usize = (0..3).map(|i| audited(&env, &format!("/echo/offline-{i} "))).sum();
        if n == 3 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{n} of 3 offline requests audited"))
        }
    });
    // Another reconnect sends nothing twice.
    c.restart().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(
            audited(&env, &format!("/echo/offline-{i} ")),
            1,
            "event {i} duplicated or lost"
        );
    }
    env.admin.run(&["audit", "verify"]).ok();
}

#[test]
fn garbage_on_the_server_port_harms_nothing() {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let _c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let t = token(&env.admin, "web");
    let gw = Gw::new(&env, &["web"], true);
    let addr = ("127.0.0.1", env.server.port);

    // Plain bytes, not TLS.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"\x00\x01garbage garbage\r\n\r\n").unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.read(&mut [0u8; 64]);

    // TLS with the tunnel ALPN, then garbage, an oversized line, and a
    // connector with a wrong key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    for payload in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![b'{'; 200_000],
        b"{\"version\":1}\n".to_vec(),
    ] {
        let ca = ca.clone();
        rt.block_on(async move {
            use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots.add(c.unwrap()).unwrap();
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = vec![infra_tunnel::ALPN.to_vec()];
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let _ = tls.write_all(&payload).await;
            let mut buf = vec![0u8; 4096];
            // The server answers with a refusal or closes; it never hangs.
            let r = tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf)).await;
            assert!(r.is_ok(), "server kept a garbage tunnel open");
        });
    }
    let bad = Connector::start(
        &bin(),
        &env.server,
        "AAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAA",
        "dc1",
        &web(&up),
    );
    let err = format!(
        "{:#}",
        bad.err().expect("a connector with a wrong key must not become ready")
    );
    assert!(err.contains("invalid, expired or revoked"), "{err}");
    assert!(
        env.server.log().contains("tunnel handshake failed"),
        "no log line for the garbage tunnels"
    );
    assert!(
        env.server.log().contains("connector refused"),
        "no log line for the wrong key"
    );

    // An oversized header gets a 431, and a slow client does not slow
    // others.
    let big = "x".repeat(512 * 1024);
    let (s, _) = gw.get("web", "/echo", Some(&t), &[("X-Big", &big)]);
    assert!(s == 431 || s == 0, "oversized header answered {s}");
    eventually!(5, || if env.server.log().contains("headers are too large") {
        Ok(())
    } else {
        Err(anyhow::anyhow!("no log line for the oversized header"))
    });
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01]).unwrap();
    for _ in 0..5 {
        assert_eq!(gw.get("web", "/echo", Some(&t), &[]).0, 200);
    }
    assert_eq!(env.server.get_json("/healthz", None).unwrap().0, 200);
}
