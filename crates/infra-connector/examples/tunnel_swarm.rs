//! Load tool for the tunnel (used by scripts/bench-gateway, not by users):
//! opens N connector tunnels to a server and either holds them idle (to
//! measure the server's memory per tunnel) or measures how long a grant
//! removal takes to reach every one of them.
//!
//! ```text
//! tunnel_swarm --port P --ca FILE --key KEY --name NAME --tunnels N [--dest D] idle SECONDS
//! tunnel_swarm --port P --ca FILE --key KEY --name NAME --tunnels N revoke ROUNDS ADMIN_KEY USER_EMAIL
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use infra_tunnel::body::LineReader;
use infra_tunnel::proto::{ControlMsg, DestinationInfo, Hello, VERSION};
use infra_tunnel::{CONTROL_PATH, handshake, transport};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::sync::mpsc;

struct Args {
    port: u16,
    ca: String,
    key: String,
    name: String,
    tunnels: usize,
    dest: String,
    mode: Vec<String>,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        port: 0,
        ca: String::new(),
        key: String::new(),
        name: String::new(),
        tunnels: 1,
        dest: "web".into(),
        mode: vec![],
    };
    while let Some(x) = a.next() {
        match x.as_str() {
            "--port" => out.port = a.next().unwrap().parse().unwrap(),
            "--ca" => out.ca = a.next().unwrap(),
            "--key" => out.key = a.next().unwrap(),
            "--name" => out.name = a.next().unwrap(),
            "--tunnels" => out.tunnels = a.next().unwrap().parse().unwrap(),
            "--dest" => out.dest = a.next().unwrap(),
            _ => out.mode.push(x),
        }
    }
    out
}

/// (tunnel index, time, whether `user` has a grant on `web`)
type Seen = (usize, Instant, bool);

async fn open(
    i: usize,
    a: Arc<Args>,
    tls: Arc<rustls::ClientConfig>,
    user_id: Arc<str>,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", a.port)).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let hello = Hello {
        version: VERSION,
        access_key: a.key.clone(),
        name: a.name.clone(),
        instance_id: format!("swarm-{i}-{}", std::process::id()),
        destinations: vec![DestinationInfo {
            name: a.dest.clone(),
            kind: infra_tunnel::proto::DestinationKind::Http,
            labels: Default::default(),
            direct_url: None,
            ssh_host_keys: Vec::new(),
        }],
        assertion_key: "AAAA".into(),
        assertion_kid: format!("swarm{i}"),
    };
    let (io, _) = handshake::connect(stream, &hello).await.unwrap();
    let dest: Arc<str> = a.dest.clone().into();
    let svc = move |req: Request<Incoming>| {
        let tx = tx.clone();
        let user_id = user_id.clone();
        let dest = dest.clone();
        async move {
            if req.uri().path() == CONTROL_PATH {
                // The response body stays open as long as the reader runs.
                let (keep, body) = infra_tunnel::body::bytes_channel(1);
                tokio::spawn(async move {
                    let _keep = keep;
                    let mut lines = LineReader::new(req.into_body());
                    while let Ok(Some(msg)) = lines.next::<ControlMsg>().await {
                        if let ControlMsg::Snapshot(s) = msg {
                            let has = s.grants.iter().any(|g| g.subject_id == *user_id && g.resource == *dest);
                            let _ = tx.send((i, Instant::now(), has));
                        }
                    }
                });
                return Ok::<_, std::convert::Infallible>(Response::new(infra_tunnel::boxed(body)));
            }
            let mut r = Response::new(infra_tunnel::empty());
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            Ok(r)
        }
    };
    let never = tokio_util::sync::CancellationToken::new();
    let _ = transport::serve(io, svc, never, || true, Duration::from_secs(1)).await;
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let a = Arc::new(args());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&std::fs::read(&a.ca).unwrap()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![infra_tunnel::ALPN.to_vec()];
    let tls = Arc::new(cfg);

    let mode = a.mode.clone();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&a.ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let api = format!("https://localhost:{}", a.port);
    // For revoke mode: find the user's id.
    let user_id: Arc<str> = if mode.first().map(String::as_str) == Some("revoke") {
        let v: serde_json::Value = http
            .get(format!("{api}/api/users/{}", mode[3]))
            .bearer_auth(&mode[2])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["id"].as_str().unwrap().into()
    } else {
        "".into()
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let started = Instant::now();
    for i in 0..a.tunnels {
        tokio::spawn(open(i, a.clone(), tls.clone(), user_id.clone(), tx.clone()));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every tunnel gets a first snapshot.
    let mut up = std::collections::HashSet::new();
    while up.len() < a.tunnels {
        let (i, _, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap()
            .unwrap();
        up.insert(i);
    }
    eprintln!("{} tunnels up in {:?}", a.tunnels, started.elapsed());
    match mode.first().map(String::as_str) {
        Some("idle") => {
            println!("ready");
            tokio::time::sleep(Duration::from_secs(mode[1].parse().unwrap())).await;
        }
        Some("revoke") => {
            let rounds: usize = mode[1].parse().unwrap();
            let admin = &mode[2];
            let email = &mode[3];
            let mut lat = vec![];
            for _ in 0..rounds {
                let g: serde_json::Value = http
                    .post(format!("{api}/api/grants"))
                    .bearer_auth(admin)
                    .json(&serde_json::json!({"user": email, "resource": a.dest, "role": "user"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let mut have = std::collections::HashSet::new();
                while have.len() < a.tunnels {
                    let (i, _, has) = rx.recv().await.unwrap();
                    if has {
                        have.insert(i);
                    }
                }
                let t0 = Instant::now();
                http.delete(format!("{api}/api/grants/{}", g["id"].as_str().unwrap()))
                    .bearer_auth(admin)
                    .send()
                    .await
                    .unwrap();
                let mut gone = std::collections::HashSet::new();
                while gone.len() < a.tunnels {
                    let (i, t, has) = rx.recv().await.unwrap();
                    if !has && gone.insert(i) {
                        lat.push(t.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                    }
                }
            }
            let n = lat.len();
            let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
            println!(
                "revocation to {} tunnels x {rounds} rounds ({n} samples): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
                a.tunnels
            );
        }
        _ => panic!("mode: idle SECONDS | revoke ROUNDS ADMIN_KEY USER_EMAIL"),
    }
}
