//! The connector's side of the boundary: its control stream, its trust in
//! the server, its key, instance and audit events, and the grants it learns.

use std::time::Duration;

use base64::Engine as _;
use infra_auth::jwt::{Jwks, SigningKey};

use super::{raw_tls, trusting};
use crate::e2e::common::{self, Env};
use crate::e2e::gateway::{expect, web_env};

/// A POST over HTTP/2 (ALPN `h2`) to the server's port with this server
/// name: the answer's status, if one came within a few seconds.
fn h2_post(env: &Env, sni: &str, path: &str, body: &str) -> Option<u16> {
    use rustls::pki_types::ServerName;
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    let port = env.server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cfg = trusting(&ca, vec![b"h2".to_vec()]);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post(format!("https://{sni}:{port}{path}"))
            .header("content-type", "application/json")
            .body(infra_tunnel::full(body.to_owned()))
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await {
            Ok(Ok(r)) => Some(r.status().as_u16()),
            _ => None,
        }
    })
}

/// The claims of a token, unverified.
pub fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// An attacker's own signing key, a policy that grants its user `web`, and
/// a token for `web` signed with that key, shaped like Infra's.
struct Forgery {
    snapshot_line: String,
    token: String,
}

fn forgery(real_token: &str) -> Forgery {
    let key = SigningKey::generate().unwrap();
    let jwks = Jwks { keys: vec![key.jwk()] };
    let snapshot = serde_json::json!({
        "type": "snapshot",
        "jwks": jwks,
        "grants": [{
            "subjectKind": "user", "subjectId": "evil", "subjectName": "evil@attacker.example",
            "role": "admin", "resource": "web", "expiresAt": null
        }],
        "memberships": [],
        "revokedSessions": [],
    });
    let iss = payload(real_token)["iss"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": iss, "sub": "evil", "aud": "web", "exp": now + 3600, "iat": now, "nbf": now - 5,
        "jti": "forged", "name": "evil@attacker.example", "email": "evil@attacker.example", "groups": [],
    });
    Forgery {
        snapshot_line: format!("{snapshot}\n"),
        token: key.sign_value(&claims).unwrap(),
    }
}

/// Anonymous client on the gateway port: the connector's control stream
/// (keys, grants, SSH CA in; audit out) cannot be opened as a user request,
/// whatever the spelling of the path or the HTTP version.
#[test]
fn attack_control_stream_unreachable_from_the_gateway() {
    let w = web_env();
    let f = forgery(&w.t);
    let host = format!("web.localhost:{}", w.env.server.port);
    let body = &f.snapshot_line;
    let targets = [
        "/_infra/control".to_owned(),
        "//_infra/control".to_owned(),
        "/_infra/control/".to_owned(),
        "/%5Finfra/control".to_owned(),
        "/%5finfra%2Fcontrol".to_owned(),
        "/./_infra/control".to_owned(),
        "/x/../_infra/control".to_owned(),
        "/_INFRA/control".to_owned(),
        format!("https://{host}/_infra/control"),
    ];
    for target in &targets {
        let req = format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = raw_tls(&w.env, "web.localhost", &[b"http/1.1"], req.as_bytes());
        let status = answer.lines().next().unwrap_or_default().to_owned();
        assert!(
            !status.contains(" 200"),
            "{target}: the gateway let a user request in as the control stream: {answer}"
        );
    }
    // HTTP/2, with the exact path and a doubled slash.
    for path in ["/_infra/control", "//_infra/control", "/_infra/control/"] {
        let status = h2_post(&w.env, "web.localhost", path, body);
        assert_ne!(status, Some(200), "{path} over HTTP/2 reached the control stream");
        assert!(status.is_some(), "{path} over HTTP/2 got no answer at all");
    }
    // Whatever was sent, the connector's policy is still the server's: the
    // attacker's own token opens nothing, the real one still works.
    std::thread::sleep(Duration::from_millis(500));
    let (s, answer) = w.gw.get("web", "/echo", Some(&f.token), &[]);
    assert_eq!(s, 401, "a token signed by the attacker's key was accepted: {answer}");
    assert!(!answer.contains("evil@attacker.example"), "{answer}");
    expect(&w.gw, &w.t, 200, "");
}

/// Network attacker between connector and server: a connector that pins the
/// server's CA by fingerprint must not hand its access key to a server that
/// merely shows that CA next to a leaf of its own.
#[test]
fn attack_pinned_connector_refuses_a_chain_that_only_contains_the_ca() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
    use tokio::io::AsyncBufReadExt;

    let env = common::start(common::Backend::Sqlite);
    let key = env.admin.connector_key("dc1");
    let ca_pem = std::fs::read(env.server.ca_path()).unwrap();
    let ca_der = CertificateDer::pem_slice_iter(&ca_pem).next().unwrap().unwrap();
    let pin = infra_auth::tls_ca::fingerprint(&ca_der);

    // The man in the middle: its own key and leaf for `localhost`, with the
    // real Infra CA appended to the chain it presents.
    let kp = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let chain = vec![leaf.der().clone(), ca_der.clone().into_owned()];
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialize_der())),
            )
            .unwrap();
    cfg.alpn_protocols = vec![infra_tunnel::ALPN.to_vec()];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let outcome = match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let mut line = String::new();
                        let mut r = tokio::io::BufReader::new(tls);
                        let _ = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
                        format!("hello: {line}")
                    }
                    Err(e) => format!("refused: {e}"),
                };
                let _ = tx.send(outcome);
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("connector.yaml");
    std::fs::write(
        &cfg_path,
        format!(
            "server: https://localhost:{port}\nname: dc1\ntls:\n  trustedFingerprint: \"{pin}\"\ndataDir: {}\ndestinations:\n  - name: web\n    kind: http\n    url: http://127.0.0.1:9\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args(["connector", "--config"])
        .arg(&cfg_path)
        .env("INFRA_ACCESS_KEY", &key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Two attempts seen (the connector retries after the first failure).
    let seen: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!seen.is_empty(), "the connector never tried the man in the middle");
    for s in &seen {
        assert!(
            !s.contains(&key),
            "the connector sent its access key to the man in the middle: {s}"
        );
        assert!(
            s.starts_with("refused"),
            "the connector completed TLS with the man in the middle: {s}"
        );
    }
}

/// A tunnel client that speaks as a connector: TLS with the tunnel ALPN and
/// the handshake line. Returns the server's reply and, when accepted, the
/// connection for HTTP/2.
pub(super) fn tunnel_hello(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    hello: &infra_tunnel::proto::Hello,
) -> Result<
    (
        infra_tunnel::proto::HelloReply,
        tokio::io::BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    ),
    String,
> {
    use rustls::pki_types::ServerName;
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    let port = env.server.port;
    rt.block_on(async move {
        let cfg = trusting(&ca, vec![infra_tunnel::ALPN.to_vec()]);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        match infra_tunnel::handshake::connect(tls, hello).await {
            Ok((io, reply)) => Ok((reply, io)),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// Answers the server's streams on an accepted tunnel with `service`, as a
/// connector would, until the returned token is cancelled.
pub(super) fn serve_as_connector<F, Fut>(
    rt: &tokio::runtime::Runtime,
    io: tokio::io::BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    service: F,
) -> tokio_util::sync::CancellationToken
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Result<http::Response<infra_tunnel::Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let drain = tokio_util::sync::CancellationToken::new();
    rt.spawn(infra_tunnel::transport::serve(
        io,
        service,
        drain.clone(),
        || true,
        Duration::from_secs(1),
    ));
    drain
}

fn hello_as(name: &str, key: &str, instance: &str, signing: &SigningKey, kid: &str) -> infra_tunnel::proto::Hello {
    hello_serving(name, key, instance, signing, kid, &[&format!("{name}-web")])
}

fn hello_serving(
    name: &str,
    key: &str,
    instance: &str,
    signing: &SigningKey,
    kid: &str,
    destinations: &[&str],
) -> infra_tunnel::proto::Hello {
    infra_tunnel::proto::Hello {
        version: infra_tunnel::proto::VERSION,
        access_key: key.to_owned(),
        name: name.to_owned(),
        instance_id: instance.to_owned(),
        destinations: destinations
            .iter()
            .map(|d| infra_tunnel::proto::DestinationInfo {
                name: (*d).to_owned(),
                kind: infra_tunnel::proto::DestinationKind::Http,
                labels: Default::default(),
                direct_url: None,
                ssh_host_keys: vec![],
                webhook: None,
            })
            .collect(),
        assertion_key: signing.jwk().x,
        assertion_kid: kid.to_owned(),
        software: String::new(),
    }
}

/// A compromised connector (a valid connector key of its own) cannot take
/// over another connector's assertion key id, claim its audit instance (to
/// move its acknowledged sequence past unshipped events), or write audit
/// events about destinations it does not serve.
#[test]
fn attack_connector_key_cannot_tamper_with_another_connector() {
    use common::json;
    let w = web_env();
    let env = &w.env;
    let dc1_kid = {
        let (s, jwks) = env.server.get_json("/api/connectors/jwks", None).unwrap();
        assert_eq!(s, 200);
        jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
    };
    let dc1_instance = {
        let events = json(
            env.admin
                .run(&["audit", "list", "--action", "connector.connect", "-o", "json"])
                .ok(),
        );
        let detail = events.as_array().unwrap()[0]["detail"].as_str().unwrap().to_owned();
        let inst = detail
            .split_whitespace()
            .find_map(|w| w.strip_prefix("instance="))
            .unwrap();
        inst.to_owned()
    };
    let evil_key = env.admin.connector_key("evil");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mine = SigningKey::generate().unwrap();

    // 1. Another connector's key id, with the attacker's own key.
    let reply = tunnel_hello(env, &rt, &hello_as("evil", &evil_key, "evil-instance", &mine, &dc1_kid));
    assert!(reply.is_err(), "a connector registered its key under dc1's key id");
    let (s, jwks) = env.server.get_json("/api/connectors/dc1/jwks", None).unwrap();
    assert_eq!(s, 200);
    assert_eq!(jwks["keys"][0]["kid"], dc1_kid.as_str());
    assert_ne!(
        jwks["keys"][0]["x"],
        mine.jwk().x.as_str(),
        "dc1's assertion key was replaced"
    );

    // 2. Another connector's audit instance.
    let reply = tunnel_hello(env, &rt, &hello_as("evil", &evil_key, &dc1_instance, &mine, &mine.kid));
    assert!(reply.is_err(), "a connector claimed dc1's audit instance");

    // 2b. Text for an admin's terminal or page in what admins are shown
    // of it: its instance id and version. Refused at the handshake.
    let escape = "evil\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}";
    let reply = tunnel_hello(env, &rt, &hello_as("evil", &evil_key, escape, &mine, &mine.kid));
    assert!(reply.is_err(), "an instance id with a terminal escape was accepted");
    let mut spoofed = hello_as("evil", &evil_key, "evil-instance", &mine, &mine.kid);
    spoofed.software = "1.0\u{202e}0.9".into();
    assert!(
        tunnel_hello(env, &rt, &spoofed).is_err(),
        "a version with a bidi override was accepted"
    );

    // 3. Audit events about a destination it does not serve.
    let (reply, io) = tunnel_hello(
        env,
        &rt,
        &hello_as("evil", &evil_key, "evil-instance", &mine, &mine.kid),
    )
    .expect("the attacker's own connector is accepted");
    assert!(reply.ok);
    let forged = serde_json::json!({
        "type": "audit", "seq": 1, "timeMs": 1, "user": "forged@attacker.example",
        "destination": "web", "source": "203.0.113.9", "result": "success", "detail": "GET /forged"
    });
    // The answer stays open after the event, as a connector's does: a
    // stream that ends would end the tunnel before the batch is stored.
    let service = move |_req: http::Request<hyper::body::Incoming>| {
        let forged = forged.clone();
        async move {
            let (tx, body) = infra_tunnel::body::channel(16);
            tokio::spawn(async move {
                let _ = tx.send(&forged).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            Ok::<_, std::convert::Infallible>(http::Response::new(infra_tunnel::boxed(body)))
        }
    };
    let drain = serve_as_connector(&rt, io, service);
    infra_testkit::eventually!(20, || {
        let refused = json(
            env.admin
                .run(&["audit", "list", "--action", "connector.audit_refused", "-o", "json"])
                .ok(),
        );
        if refused.as_array().is_some_and(|a| !a.is_empty()) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("no refusal recorded yet"))
        }
    });
    let all = env.admin.run(&["audit", "list", "-o", "json"]).ok().stdout.clone();
    assert!(
        !all.contains("forged@attacker.example"),
        "a forged event for dc1's destination was stored"
    );
    drain.cancel();
}

/// A connector for `a_b` (a compromised one, even) learns nothing of the
/// grants on `axb`, and the audit filter for `a_b` shows nothing of `axb`:
/// `_` in a destination name is a character, not a wildcard.
#[test]
fn attack_underscore_in_a_destination_name_is_no_wildcard() {
    use common::{ADMIN, json};
    let w = web_env();
    let env = &w.env;
    env.admin
        .run(&["grants", "add", ADMIN, "axb.ns", "--role", "user"])
        .ok();
    let events = json(
        env.admin
            .run(&["audit", "list", "--destination", "a_b", "-o", "json"])
            .ok(),
    );
    assert_eq!(events.as_array().map(Vec::len), Some(0), "{events}");

    let key = env.admin.connector_key("under");
    let signing = SigningKey::generate().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hello = hello_serving("under", &key, "under-instance", &signing, &signing.kid, &["a_b"]);
    let (reply, io) = tunnel_hello(env, &rt, &hello).expect("the connector is accepted");
    assert!(reply.ok);
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let service = move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            tokio::spawn(async move {
                let mut lines = infra_tunnel::body::LineReader::new(req.into_body());
                if let Ok(Some(v)) = lines.next::<serde_json::Value>().await {
                    let _ = tx.send(v);
                }
            });
            Ok::<_, std::convert::Infallible>(http::Response::new(infra_tunnel::empty()))
        }
    };
    let drain = serve_as_connector(&rt, io, service);
    let snapshot = rx.recv_timeout(Duration::from_secs(20)).expect("a snapshot");
    drain.cancel();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let grants = snapshot["grants"].as_array().unwrap();
    assert!(
        grants.iter().all(|g| g["resource"] != "axb.ns"),
        "the connector for a_b received the grants on axb: {grants:?}"
    );
}
