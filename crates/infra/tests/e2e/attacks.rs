//! Attacks on the trust boundaries, tried the way an attacker would: through
//! the real server, gateway, tunnel and connector. Each test names the hole
//! it proves closed; docs/threat-model.md maps every boundary to these.

use std::time::Duration;

use base64::Engine as _;
use infra_auth::jwt::{Jwks, SigningKey};

use super::common::Env;
use super::gateway::{expect, web_env};

/// A TLS client config that trusts the server's CA (PEM), with these ALPN
/// protocols.
fn trusting(ca: &[u8], alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn;
    cfg
}

/// One TLS connection to the server's port with this server name and ALPN:
/// writes `request`, returns what came back within a few seconds (at most
/// 16 KiB; an answer that streams on is cut there).
pub fn raw_tls(env: &Env, sni: &str, alpn: &[&[u8]], request: &[u8]) -> String {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], env.server.port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = trusting(&ca, alpn.iter().map(|a| a.to_vec()).collect());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while out.len() < 16 * 1024 {
            match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

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

    let env = super::common::start(super::common::Backend::Sqlite);
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
    let mut child = std::process::Command::new(super::common::bin())
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
fn tunnel_hello(
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
fn serve_as_connector<F, Fut>(
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
            })
            .collect(),
        assertion_key: signing.jwk().x,
        assertion_kid: kid.to_owned(),
    }
}

/// A compromised connector (a valid connector key of its own) cannot take
/// over another connector's assertion key id, claim its audit instance (to
/// move its acknowledged sequence past unshipped events), or write audit
/// events about destinations it does not serve.
#[test]
fn attack_connector_key_cannot_tamper_with_another_connector() {
    use super::common::json;
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

/// An authenticated workload: a session borrowed through token exchange
/// (or from an identity provider: the same rule, `lender_of`, decides both)
/// cannot log in to a fresh session, and every key made from it, directly
/// or through another such key, is capped at its end and dies with it.
#[test]
fn attack_borrowed_session_cannot_mint_lasting_keys() {
    use super::identity::{WORKLOAD_ISS, WORKLOAD_SUB, exchange, sa_token, workload_issuer};
    let w = web_env();
    let env = &w.env;
    let enc = workload_issuer(env, "deployer@ci.example.com");
    let (s, v) = exchange(env, &sa_token(&enc, WORKLOAD_ISS, "infra", 600, WORKLOAD_SUB), None);
    assert_eq!(s, 200, "{v}");
    let borrowed = v["access_token"].as_str().unwrap().to_owned();
    let post = |path: &str, bearer: Option<&str>, body: serde_json::Value| {
        env.server
            .send_json("POST", path, bearer, body.to_string().as_bytes(), "application/json")
            .unwrap()
    };

    // A fresh session from the borrowed key would outlive the exchange.
    let (s, v) = post("/api/login", None, serde_json::json!({ "accessKey": borrowed }));
    assert_eq!(s, 403, "a borrowed key logged in to a fresh session: {v}");

    // Key from the borrowed session, then a key from that key: both capped.
    let (s, k1) = post("/api/keys", Some(&borrowed), serde_json::json!({ "name": "k1" }));
    assert_eq!(s, 201, "{k1}");
    assert!(
        !k1["key"]["expires"].is_null(),
        "a key from a borrowed session never expires: {k1}"
    );
    let k1_secret = k1["accessKey"].as_str().unwrap().to_owned();
    let (s, k2) = post("/api/keys", Some(&k1_secret), serde_json::json!({ "name": "k2" }));
    assert_eq!(s, 201, "{k2}");
    assert!(
        !k2["key"]["expires"].is_null(),
        "a key from a derived key never expires: {k2}"
    );
    let k2_secret = k2["accessKey"].as_str().unwrap().to_owned();
    let (s, v) = post("/api/login", None, serde_json::json!({ "accessKey": k2_secret }));
    assert_eq!(s, 403, "a derived key logged in to a fresh session: {v}");

    // Ending the borrowed session ends both.
    let id = borrowed.split('.').next().unwrap();
    env.admin.run(&["keys", "remove", id]).ok();
    for k in [&k1_secret, &k2_secret] {
        let (s, v) = env.server.get_json("/api/info", Some(k)).unwrap();
        assert_eq!(s, 401, "a key outlived the session it was borrowed from: {v}");
    }
}

/// An HTTPS client to the server's API whose connections come from
/// `source` (any 127.0.0.0/8 address: each is another client to the server).
fn api_client(env: &Env, source: [u8; 4]) -> reqwest::Client {
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], env.server.port)),
        )
        .local_address(std::net::IpAddr::from(source))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn try_login(client: &reqwest::Client, port: u16, email: &str, password: &str) -> u16 {
    let body = serde_json::json!({ "email": email, "password": password });
    match client
        .post(format!("https://localhost:{port}/api/login"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Anonymous client guessing passwords: concurrent guesses cannot all slip
/// past the lock check; a success on one's own account does not refill the
/// address's budget for spraying others; and one address's guesses do not
/// lock the owner out from elsewhere.
#[test]
fn attack_login_throttling_holds_under_races_sprays_and_lockout() {
    use infra_auth::lockout::{FREE_FAILURES, FREE_FAILURES_PER_ADDRESS};
    let env = super::common::start(super::common::Backend::Sqlite);
    for (email, pw) in [
        ("alice@example.com", "alice-password-1"),
        ("mallory@example.com", "mallory-pw-1"),
    ] {
        env.admin
            .run_stdin(&["users", "add", email, "--password-stdin"], pw)
            .ok();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = env.server.port;

    // 1. A race: 300 wrong passwords at once from one address.
    let attacker = api_client(&env, [127, 0, 0, 2]);
    let statuses: Vec<u16> = rt.block_on(async {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let c = attacker.clone();
                tokio::spawn(async move { try_login(&c, port, "alice@example.com", &format!("guess-{i}")).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let failures = statuses.iter().filter(|s| **s == 401).count() as i64;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // The policy allows FREE_FAILURES, then one more each time a lock
    // (1 s, 2 s, 4 s, 8 s, 16 s) runs out: five more only if the race
    // lasted half a minute.
    let allowed = FREE_FAILURES + 5;
    assert!(
        failures <= allowed,
        "{failures} of 300 concurrent wrong passwords were checked (at most {allowed} allowed); 429s: {refused}"
    );
    assert!(refused > 0, "{statuses:?}");

    // 2. The owner, from another address, is not locked out.
    let owner = api_client(&env, [127, 0, 0, 3]);
    assert_eq!(
        rt.block_on(try_login(&owner, port, "alice@example.com", "alice-password-1")),
        200
    );

    // 3. Spraying: wrong passwords at many accounts from one address, with a
    // success on the sprayer's own account now and then.
    let sprayer = api_client(&env, [127, 0, 0, 4]);
    let mut refused_at = None;
    for i in 0..(FREE_FAILURES_PER_ADDRESS + 10) {
        if i % 10 == 9 {
            let s = rt.block_on(try_login(&sprayer, port, "mallory@example.com", "mallory-pw-1"));
            if s == 429 {
                refused_at = Some(i);
                break;
            }
        }
        let s = rt.block_on(try_login(
            &sprayer,
            port,
            &format!("user{i}@example.com"),
            "Winter2026!",
        ));
        if s == 429 {
            refused_at = Some(i);
            break;
        }
    }
    assert!(
        refused_at.is_some(),
        "an address sprayed {} accounts without being throttled",
        FREE_FAILURES_PER_ADDRESS + 10
    );
}

/// A user in a group named like one Kubernetes reserves: Infra refuses to
/// make such a group, and one that exists anyway (made before this rule, or
/// written into the database) is never impersonated, so `system:masters`
/// gives no cluster-admin through Infra.
#[test]
fn attack_system_masters_group_is_never_impersonated() {
    use super::kube::{kubectl, setup};
    let k = setup();
    let admin = &k.env.admin;
    let out = admin.run(&["groups", "add", "system:masters"]);
    assert!(
        out.status != 0 && out.stderr.contains("reserved by Kubernetes"),
        "a group named system:masters was created: {out:?}"
    );
    let alice = super::gateway::user(&k.env, "alice@example.com");
    super::common::raw_sql(
        &k.env,
        "INSERT INTO infra_groups (id, name, created_at) VALUES ('g-masters', 'system:masters', 0)",
    );
    super::common::raw_sql(
        &k.env,
        "INSERT INTO group_members (group_id, user_id) SELECT 'g-masters', id FROM users WHERE email = 'alice@example.com'",
    );
    admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "connect"])
        .ok();
    super::common::login(&alice, &k.env.server, "alice@example.com", "user-password-1").ok();
    let out = infra_testkit::eventually!(20, || {
        let out = kubectl(&alice, &["auth", "can-i", "*", "*", "--all-namespaces"]);
        // "yes" or "no" is the API server's answer; anything else is the
        // way there still settling (grants reaching the connector).
        anyhow::ensure!(out.stdout.trim() == "yes" || out.stdout.trim() == "no", "{out:?}");
        Ok(out)
    });
    assert_eq!(out.stdout.trim(), "no", "system:masters was impersonated: {out:?}");
}

/// A sloppy or malicious identity provider: an email with spaces and
/// capitals is the same person as the clean one, never a look-alike
/// account, and a group named `system:masters` is dropped, with an audited
/// note, instead of becoming an Infra group.
#[test]
fn attack_provider_names_are_normalised_and_reserved_groups_dropped() {
    use super::identity::{audit, provider_login, setup};
    let h = setup();
    h.idp
        .put_user(
            "u-carol",
            serde_json::json!({
                "username": "carol", "password": "carol-pw", "email": " Carol@Example.COM ",
                "email_verified": true, "name": "Carol", "groups": ["system:masters", "devs"]
            }),
        )
        .unwrap();
    let carol = infra_testkit::Cli::new(&super::common::bin()).unwrap();
    let out = provider_login(&h, &carol, "carol", "carol-pw", "");
    assert_eq!(out.status, 0, "{out:?}");
    let users = super::common::json(h.env.admin.run(&["users", "list", "-o", "json"]).ok());
    let emails: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(emails.contains(&"carol@example.com"), "{emails:?}");
    assert!(
        emails.iter().all(|e| e.trim() == *e && e.to_ascii_lowercase() == *e),
        "a look-alike account was made: {emails:?}"
    );
    let groups = h.env.admin.run(&["groups", "list", "-o", "json"]).ok().stdout.clone();
    assert!(!groups.contains("system:masters"), "{groups}");
    assert!(groups.contains("devs"), "{groups}");
    let sync = audit(&h.env, "group.sync");
    assert!(sync.contains("dropped=system:masters"), "{sync}");
}

/// A connector for `a_b` (a compromised one, even) learns nothing of the
/// grants on `axb`, and the audit filter for `a_b` shows nothing of `axb`:
/// `_` in a destination name is a character, not a wildcard.
#[test]
fn attack_underscore_in_a_destination_name_is_no_wildcard() {
    use super::common::{ADMIN, json};
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

/// A user removed from a group (or disabled) at the identity provider: with
/// the default scopes Infra gets a refresh token and follows the removal;
/// a provider set up without one gives sessions capped at an hour, and the
/// admin and the user are told so.
#[test]
fn attack_provider_removal_is_followed_with_default_scopes() {
    use super::identity::{provider_login, setup};
    let h = setup();
    let providers = super::common::json(h.env.admin.run(&["providers", "list", "-o", "json"]).ok());
    let scopes = providers[0]["scopes"].to_string();
    assert!(
        scopes.contains("offline_access"),
        "default scopes ask for no refresh token: {scopes}"
    );

    // Followed: removed from a group at the provider, gone in Infra at the
    // next refresh (the test server refreshes every second).
    let alice = infra_testkit::Cli::new(&super::common::bin()).unwrap();
    let out = provider_login(&h, &alice, "alice", "alice-pw", "");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(alice.run(&["info"]).ok().stdout.contains("devs"));
    h.idp.put_user("u-alice", serde_json::json!({"groups": []})).unwrap();
    infra_testkit::eventually!(20, || {
        let info = alice.run(&["info"]).ok().stdout.clone();
        anyhow::ensure!(!info.contains("devs"), "still in devs: {info}");
        Ok(())
    });

    // Without offline_access: said at 'providers add' and at login, and the
    // session ends within an hour.
    h.env.admin.run(&["providers", "remove", "idp"]).ok();
    let issuer = h.idp.issuer.clone();
    let out = h.env.admin.run_env(
        &[
            "providers",
            "add",
            "idp",
            "--issuer",
            &issuer,
            "--client-id",
            "infra",
            "--scopes",
            "openid,email,profile,groups",
        ],
        &[("INFRA_PROVIDER_CLIENT_SECRET", "client-secret-1")],
        None,
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("refresh token"), "{out:?}");
    let bob = infra_testkit::Cli::new(&super::common::bin()).unwrap();
    let out = provider_login(&h, &bob, "bob", "bob-pw", "");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("gave no refresh token"), "{out:?}");
    let keys = super::common::json(bob.run(&["keys", "list", "--sessions", "-o", "json"]).ok());
    let expires = keys[0]["expires"].as_str().unwrap_or_default().to_owned();
    let secs = std::process::Command::new("date")
        .args(["-d", &expires, "+%s"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<i64>()
                .unwrap_or(i64::MAX)
        })
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        secs <= now + 3600,
        "a session without a refresh token lasts past an hour: {expires}"
    );
}

/// Anonymous clients starting provider sign-ins they never finish: each
/// costs a row in the store, so one address may have only a bounded number
/// in flight.
#[test]
fn attack_anonymous_sign_in_starts_are_bounded() {
    let h = super::identity::setup();
    let body = serde_json::json!({ "redirectUri": "http://127.0.0.1:9/callback" }).to_string();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let (s, _) = h
            .env
            .server
            .send_json(
                "POST",
                "/api/providers/idp/authorize",
                None,
                body.as_bytes(),
                "application/json",
            )
            .unwrap();
        statuses.push(s);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "60 unfinished sign-ins from one address were all accepted: {statuses:?}"
    );
}

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

/// A client sending a 20 MiB body to the API gets a readable 413, not a
/// reset connection.
#[test]
fn attack_oversized_body_gets_a_readable_413() {
    let env = super::common::start(super::common::Backend::Sqlite);
    let key = super::common::session_key(&env.admin);
    let client = api_client(&env, [127, 0, 0, 1]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = env.server.port;
    let (status, body) = rt.block_on(async move {
        let r = client
            .post(format!("https://localhost:{port}/api/users"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(vec![b'x'; 20 * 1024 * 1024])
            .send()
            .await
            .expect("an answer, not a reset connection");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too large"), "{body}");
}

/// Another local user on a shared machine: `infra proxy --socket-dir`
/// listens where only its user can connect (directory 0700, socket 0600),
/// and the session through it works.
#[test]
fn attack_infra_proxy_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = super::postgres::setup();
    let alice = super::postgres::reader(&db);
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("run");
    let mut child = std::process::Command::new(super::common::bin())
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

/// A page on another site posting the attacker's credentials to the
/// server's sign-in form (login CSRF): refused, and no session cookie is
/// set; the same form posted from the server's own page works.
#[test]
fn attack_login_form_posted_from_another_site_is_refused() {
    let env = super::common::start(super::common::Backend::Sqlite);
    let client = api_client(&env, [127, 0, 0, 1]);
    let port = env.server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let post = |origin: &'static str, site: &'static str| {
        let client = client.clone();
        rt.block_on(async move {
            let r = client
                .post(format!("https://localhost:{port}/login"))
                .header("origin", origin.replace("PORT", &port.to_string()))
                .header("sec-fetch-site", site)
                .form(&[
                    ("email", super::common::ADMIN),
                    ("password", super::common::ADMIN_PW),
                    ("rd", ""),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("set-cookie").is_some())
        })
    };
    let (status, cookie) = post("https://evil.example", "cross-site");
    assert_eq!(
        (status, cookie),
        (403, false),
        "a cross-site post logged the browser in"
    );
    let (status, cookie) = post("https://localhost:PORT", "same-origin");
    assert!(
        status < 400 && cookie,
        "the server's own form no longer works: {status}"
    );
}

/// A user with a small grant: cannot read the grants of a group they are
/// not in by naming themselves too (`?user=ME&group=X`), and cannot tell
/// which accounts exist from the answer (403 whether or not they do).
#[test]
fn attack_small_user_cannot_read_other_groups_or_enumerate_users() {
    use super::common::{ADMIN, session_key};
    let w = web_env();
    let env = &w.env;
    env.admin.run(&["groups", "add", "secret-team"]).ok();
    env.admin
        .run(&["grants", "add", "--group", "secret-team", "web", "--role", "admin"])
        .ok();
    let bob = super::gateway::user(env, "bob@example.com");
    let key = session_key(&bob);
    let (s, v) = env
        .server
        .get_json("/api/grants?user=bob@example.com&group=secret-team", Some(&key))
        .unwrap();
    assert_eq!(s, 403, "bob read a group's grants he is not in: {v}");
    assert!(!v.to_string().contains("\"role\":\"admin\""), "{v}");
    // His own grants, through his own groups, are his to see.
    let (s, _) = env
        .server
        .get_json("/api/grants?user=bob@example.com", Some(&key))
        .unwrap();
    assert_eq!(s, 200);

    let exists = env.server.get_json(&format!("/api/users/{ADMIN}"), Some(&key)).unwrap();
    let missing = env
        .server
        .get_json("/api/users/nobody@example.com", Some(&key))
        .unwrap();
    assert_eq!(exists.0, 403, "{exists:?}");
    assert_eq!(
        missing.0, exists.0,
        "the answer tells whether an account exists: {missing:?} vs {exists:?}"
    );
    for path in ["/api/grants?user=", "/api/keys?user="] {
        let a = env.server.get_json(&format!("{path}{ADMIN}"), Some(&key)).unwrap().0;
        let b = env
            .server
            .get_json(&format!("{path}nobody@example.com"), Some(&key))
            .unwrap()
            .0;
        assert_eq!((a, b), (403, 403), "{path}");
    }
}
