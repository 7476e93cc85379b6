//! Load tool for the tunnel (used by scripts/bench-gateway, not by users):
//! opens N connector tunnels to a server and either holds them idle (to
//! measure the server's memory per tunnel), measures how long a grant
//! removal takes to reach every one of them, or ships audit events as a
//! busy connector would and measures how fast the server stores them.
//!
//! ```text
//! tunnel_swarm --port P --ca FILE --key KEY --name NAME --tunnels N [--dest D] idle SECONDS
//! tunnel_swarm --port P --ca FILE --key KEY --name NAME --tunnels N revoke ROUNDS ADMIN_KEY USER_EMAIL
//! tunnel_swarm --port P --ca FILE --key KEY --name NAME --tunnels N audit EVENTS RATE [ADMIN_KEY]
//! ```
//!
//! `audit`: every tunnel ships EVENTS events (RATE a second in all, 0 for
//! as fast as the server takes them) and prints the events stored a second
//! (counted from the server's acknowledgements) and the ship lag (from an
//! event being handed to the control stream to its acknowledgement). With
//! ADMIN_KEY it also creates and deletes a group in a loop meanwhile and
//! prints how long those API writes took.
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

/// Audit mode: what to send, and where each tunnel reports its figures.
#[derive(Clone)]
struct AuditLoad {
    events: u64,
    /// Events a second for this tunnel; 0 for unpaced.
    rate: f64,
    done: mpsc::UnboundedSender<AuditRun>,
}

/// One tunnel's audit run: when it started and ended, and each event's
/// ship lag in milliseconds.
struct AuditRun {
    started: Instant,
    ended: Instant,
    lag_ms: Vec<f64>,
}

/// Ships `load.events` events on the control stream `tx` and reads the
/// acknowledgements from `acks`.
async fn ship_audit(
    dest: Arc<str>,
    load: AuditLoad,
    tx: infra_tunnel::body::LineSender,
    mut acks: mpsc::UnboundedReceiver<i64>,
) {
    use infra_tunnel::proto::{AccessEvent, ConnectorMsg, Outcome};
    const BATCH: u64 = 500;
    let sent: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let started = Instant::now();
    let sender = {
        let sent = sent.clone();
        async move {
            let mut seq = 0u64;
            while seq < load.events {
                let n = BATCH.min(load.events - seq);
                if load.rate > 0.0 {
                    let due = started + Duration::from_secs_f64(seq as f64 / load.rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut frame = Vec::with_capacity(n as usize * 200);
                for k in 1..=n {
                    let ev = AccessEvent {
                        seq: (seq + k) as i64,
                        time_ms: 0,
                        user: "bench@example.com".into(),
                        destination: dest.to_string(),
                        source: "127.0.0.1:40000".into(),
                        result: Outcome::Success,
                        detail: format!("GET /items/{} status=200 bytes=1024 duration_ms=0", seq + k),
                    };
                    serde_json::to_writer(&mut frame, &ConnectorMsg::Audit(ev)).unwrap();
                    frame.push(b'\n');
                }
                let now = Instant::now();
                sent.lock().unwrap().extend(std::iter::repeat_n(now, n as usize));
                tx.send_encoded(frame.into()).await.unwrap();
                seq += n;
            }
        }
    };
    tokio::spawn(sender);
    let mut lag_ms = Vec::with_capacity(load.events as usize);
    let mut acked = 0u64;
    while acked < load.events {
        let seq = tokio::time::timeout(Duration::from_secs(120), acks.recv())
            .await
            .expect("no acknowledgement for two minutes")
            .expect("control stream closed") as u64;
        let now = Instant::now();
        let sent = sent.lock().unwrap();
        for s in acked..seq.min(load.events) {
            lag_ms.push(now.saturating_duration_since(sent[s as usize]).as_secs_f64() * 1000.0);
        }
        acked = acked.max(seq);
    }
    let _ = load.done.send(AuditRun {
        started,
        ended: Instant::now(),
        lag_ms,
    });
}

async fn open(
    i: usize,
    a: Arc<Args>,
    tls: Arc<rustls::ClientConfig>,
    user_id: Arc<str>,
    tx: mpsc::UnboundedSender<Seen>,
    audit: Option<AuditLoad>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", a.port)).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let assertion = infra_auth::jwt::SigningKey::generate().unwrap();
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
            webhook: None,
        }],
        // A real key: the server checks that the id is derived from it.
        assertion_key: assertion.public_x.clone(),
        assertion_kid: assertion.kid.clone(),
        software: String::new(),
    };
    let (io, _) = handshake::connect(stream, &hello).await.unwrap();
    let dest: Arc<str> = a.dest.clone().into();
    let svc = move |req: Request<Incoming>| {
        let tx = tx.clone();
        let user_id = user_id.clone();
        let dest = dest.clone();
        let audit = audit.clone();
        async move {
            if req.uri().path() == CONTROL_PATH {
                // The response body stays open as long as the reader runs.
                let (keep, body) = infra_tunnel::body::channel(64);
                let (ack_tx, ack_rx) = mpsc::unbounded_channel();
                if let Some(load) = audit {
                    tokio::spawn(ship_audit(dest.clone(), load, keep.clone(), ack_rx));
                }
                tokio::spawn(async move {
                    let _keep = keep;
                    let mut lines = LineReader::new(req.into_body());
                    while let Ok(Some(msg)) = lines.next::<ControlMsg>().await {
                        match msg {
                            ControlMsg::Snapshot(s) => {
                                let has = s.grants.iter().any(|g| g.subject_id == *user_id && g.resource == *dest);
                                let _ = tx.send((i, Instant::now(), has));
                            }
                            ControlMsg::AuditAck { seq } => {
                                let _ = ack_tx.send(seq);
                            }
                            // The swarm records no sessions.
                            ControlMsg::RecordingAck { .. } => {}
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
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AuditRun>();
    let audit = (mode.first().map(String::as_str) == Some("audit")).then(|| AuditLoad {
        events: mode[1].parse().unwrap(),
        rate: mode[2].parse::<f64>().unwrap() / a.tunnels as f64,
        done: done_tx,
    });
    let started = Instant::now();
    for i in 0..a.tunnels {
        tokio::spawn(open(
            i,
            a.clone(),
            tls.clone(),
            user_id.clone(),
            tx.clone(),
            audit.clone(),
        ));
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
        Some("revoke") => revoke(&a, &mode, &http, &api, &mut rx).await,
        Some("audit") => audit_mode(&a, &mode, &http, &api, &mut done_rx).await,
        _ => panic!("mode: idle SECONDS | revoke ROUNDS ADMIN_KEY USER_EMAIL | audit EVENTS RATE [ADMIN_KEY]"),
    }
}

/// Adds and removes a grant, `rounds` times, and times each removal's
/// arrival at every tunnel.
async fn revoke(a: &Args, mode: &[String], http: &reqwest::Client, api: &str, rx: &mut mpsc::UnboundedReceiver<Seen>) {
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

/// Waits for every tunnel's audit run (and the API writes meanwhile) and
/// prints the figures.
async fn audit_mode(
    a: &Args,
    mode: &[String],
    http: &reqwest::Client,
    api: &str,
    done_rx: &mut mpsc::UnboundedReceiver<AuditRun>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let probe = mode.get(3).cloned().map(|admin| {
        let (http, api, stop) = (http.clone(), api.to_owned(), stop.clone());
        tokio::spawn(async move {
            let mut lat = vec![];
            for k in 0.. {
                if stop.is_cancelled() {
                    break;
                }
                for req in [
                    http.post(format!("{api}/api/groups"))
                        .json(&serde_json::json!({ "name": format!("probe-{}-{k}", std::process::id()) })),
                    http.delete(format!("{api}/api/groups/probe-{}-{k}", std::process::id())),
                ] {
                    let t = Instant::now();
                    let r = req.bearer_auth(&admin).send().await.unwrap();
                    assert!(r.status().is_success(), "API write failed: {}", r.status());
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            lat
        })
    });
    let mut runs = vec![];
    while runs.len() < a.tunnels {
        runs.push(done_rx.recv().await.unwrap());
    }
    let first = runs.iter().map(|r| r.started).min().unwrap();
    let last = runs.iter().map(|r| r.ended).max().unwrap();
    let mut lag: Vec<f64> = runs.into_iter().flat_map(|r| r.lag_ms).collect();
    let n = lag.len();
    let secs = last.duration_since(first).as_secs_f64();
    let (p50, p99) = (pct(&mut lag, 0.5), pct(&mut lag, 0.99));
    println!(
        "audit: {n} events from {} tunnels stored in {secs:.2} s: {:.0} events/s; ship lag p50 {p50:.1} ms, p99 {p99:.1} ms",
        a.tunnels,
        n as f64 / secs
    );
    stop.cancel();
    if let Some(p) = probe {
        let mut lat = p.await.unwrap();
        let n = lat.len();
        if n > 0 {
            let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
            println!("api writes meanwhile: {n}, p50 {p50:.1} ms, p99 {p99:.1} ms");
        }
    }
}
