//! Keeping the tunnel up: dial out, handshake, serve the server's streams,
//! and on any failure reconnect with jittered exponential back-off.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use infra_tunnel::body::{LineReader, channel};
use infra_tunnel::control::{ControlGate, StreamKind};
use infra_tunnel::proto::{ConnectorMsg, ControlMsg, DestinationInfo, DestinationKind, Hello, VERSION};
use infra_tunnel::{Body, handshake, transport};
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

use crate::state::State;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long requests in flight may take to finish on SIGTERM.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How often the audit spool is synced to disk while events flow.
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(100);
/// How long the audit shipper waits after an event for more to join it.
const SHIP_GATHER: Duration = Duration::from_millis(2);

/// One server replica to keep a tunnel to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    url: String,
    host: String,
    port: u16,
}

/// Runs until `shutdown`: a tunnel to the configured server, and one to
/// every other replica the servers name, each reconnecting on its own.
pub(crate) async fn run(state: Arc<State>, tls: Arc<rustls::ClientConfig>, shutdown: CancellationToken) {
    let s = &state.settings;
    let seed = Target {
        url: s.server.clone(),
        host: s.server_host.clone(),
        port: s.server_port,
    };
    let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut known = std::collections::HashSet::from([seed.url.clone()]);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(run_one(
        state.clone(),
        tls.clone(),
        shutdown.clone(),
        seed,
        found_tx.clone(),
    ));
    loop {
        tokio::select! {
            Some(url) = found_rx.recv() => {
                match crate::config::parse_server(&url) {
                    Ok((url, host, port)) if known.insert(url.clone()) => {
                        tracing::info!(replica = %url, "server replica found; opening a tunnel to it too");
                        let t = Target { url, host, port };
                        tasks.spawn(run_one(state.clone(), tls.clone(), shutdown.clone(), t, found_tx.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(replica = %url, error = %e, "ignoring a replica URL"),
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Keeps one tunnel up, with jittered exponential back-off.
async fn run_one(
    state: Arc<State>,
    tls: Arc<rustls::ClientConfig>,
    shutdown: CancellationToken,
    target: Target,
    found: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = std::time::Instant::now();
        // connect_once watches `shutdown` itself, so that it can drain.
        let result = connect_once(&state, tls.clone(), &shutdown, &target, &found).await;
        match result {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::warn!(server = %target.url, "tunnel closed; reconnecting"),
            Err(e) => {
                tracing::warn!(server = %target.url, error = %format!("{e:#}"), "tunnel failed; reconnecting")
            }
        }
        // A tunnel that stayed up a while starts the back-off afresh.
        if started.elapsed() > Duration::from_secs(30) {
            backoff = MIN_BACKOFF;
        }
        let jitter = Duration::from_millis(
            u64::from(infra_auth::random_bytes::<2>().map(u16::from_le_bytes).unwrap_or(0)) % 250,
        );
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Counts a tunnel as up until dropped.
struct Up(Arc<State>);

impl Drop for Up {
    fn drop(&mut self) {
        self.0.tunnels_up.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connect_once(
    state: &Arc<State>,
    tls: Arc<rustls::ClientConfig>,
    shutdown: &CancellationToken,
    target: &Target,
    found: &tokio::sync::mpsc::UnboundedSender<String>,
) -> anyhow::Result<()> {
    let s = &state.settings;
    let setup = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .with_context(|| format!("connect to {}", target.url))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(target.host.clone()).context("server host name")?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .context("TLS handshake with the server")?;
        if tls.get_ref().1.alpn_protocol() != Some(infra_tunnel::ALPN) {
            anyhow::bail!(
                "the server does not speak the tunnel protocol (ALPN); is {} an Infra server?",
                target.url
            );
        }
        let hello = Hello {
            version: VERSION,
            access_key: s.access_key.clone(),
            name: s.name.clone(),
            instance_id: state.instance_id.clone(),
            destinations: s
                .destinations
                .iter()
                .map(|d| DestinationInfo {
                    name: d.name.clone(),
                    kind: match d.kind {
                        crate::config::Kind::Http => DestinationKind::Http,
                        crate::config::Kind::Kubernetes(_) => DestinationKind::Kubernetes,
                        crate::config::Kind::Postgres(_) => DestinationKind::Postgres,
                        crate::config::Kind::Ssh(_) => DestinationKind::Ssh,
                    },
                    labels: d.labels.clone(),
                    direct_url: match &d.kind {
                        crate::config::Kind::Ssh(c) => c.public_address.as_ref().map(|a| format!("ssh://{a}")),
                        _ => s.direct.as_ref().map(|x| {
                            x.url
                                .clone()
                                .unwrap_or_else(|| format!("https://{}.localhost:{}/", d.name, x.listen.port()))
                        }),
                    },
                    ssh_host_keys: match (&d.kind, state.ssh_recorders.get(&d.name)) {
                        // Recording mode: users meet the connector's key.
                        (crate::config::Kind::Ssh(_), Some(keys)) => vec![keys.host_public()],
                        (crate::config::Kind::Ssh(c), None) => {
                            crate::ssh_host::host_key(&d.name, c).into_iter().collect()
                        }
                        _ => Vec::new(),
                    },
                    webhook: match (&s.webhook, &state.webhook_key) {
                        (Some(w), Some(key)) if w.cluster == d.name => crate::webhook::key_info(w, key),
                        _ => None,
                    },
                })
                .collect(),
            assertion_key: state.assertion_key.public_x.clone(),
            assertion_kid: state.assertion_key.kid.clone(),
            software: env!("CARGO_PKG_VERSION").into(),
        };
        let (io, reply) = handshake::connect(tls, &hello).await?;
        Ok::<_, anyhow::Error>((io, reply))
    };
    let (io, reply) = tokio::select! {
        r = setup => r?,
        () = shutdown.cancelled() => return Ok(()),
    };
    if reply.control_secret.expose().is_empty() {
        anyhow::bail!("the server gave this tunnel no control secret; upgrade the server to this connector's version");
    }
    state.set_issuer(reply.issuer.clone().unwrap_or_default());
    state.spool.ack(reply.audit_acked);
    state.tunnels_up.fetch_add(1, Ordering::Relaxed);
    let _up = Up(state.clone());
    for r in &reply.replicas {
        let _ = found.send(r.clone());
    }
    tracing::info!(server = %target.url, destinations = s.destinations.len(), "tunnel up");

    // The control stream is the one stream that carries this tunnel's
    // secret; every other stream is a user request and goes to admission.
    let gate = Arc::new(ControlGate::new(reply.control_secret.clone()));
    let st = state.clone();
    let service = move |req: Request<Incoming>| {
        let (st, gate) = (st.clone(), gate.clone());
        async move {
            match gate.classify(req.headers()) {
                StreamKind::Control => Ok::<_, std::convert::Infallible>(control(st, req)),
                StreamKind::User => Ok(crate::front::handle(st, req).await),
            }
        }
    };
    // The control stream is one of the streams in flight; it ends when the
    // server closes the connection after GOAWAY, or at the grace period.
    let st = state.clone();
    transport::serve(io, service, shutdown.clone(), move || st.inflight() == 0, DRAIN_GRACE)
        .await
        .context("tunnel connection")?;
    Ok(())
}

/// The control stream: pushed state in, audit events and health out.
fn control(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (tx, body) = channel(64);
    let reader_state = state.clone();
    let ack_tx = tx.clone();
    let tasks = state.tasks.clone();
    // Recordings go out on this stream while it is up.
    let attached = state.recordings.attach(tx.clone());
    tasks.spawn(async move {
        let _attached = attached;
        let mut lines = LineReader::new(req.into_body());
        loop {
            match lines.next::<ControlMsg>().await {
                Ok(Some(ControlMsg::Snapshot(s))) => {
                    tracing::debug!(grants = s.grants.len(), "grants updated");
                    reader_state.apply(s);
                }
                Ok(Some(ControlMsg::AuditAck { seq })) => reader_state.spool.ack(seq),
                Ok(Some(ControlMsg::RecordingAck {
                    id,
                    have,
                    stored,
                    error,
                })) => reader_state.recordings.ack(&id, have, stored, error),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "control stream failed");
                    break;
                }
            }
        }
        drop(ack_tx);
    });
    // What the Kubernetes destinations offer to grant: now, and on change.
    let inv_tx = tx.clone();
    let mut inventories = state.subscribe_inventories();
    tasks.spawn(async move {
        loop {
            let all: Vec<_> = inventories.borrow_and_update().values().cloned().collect();
            for inv in all {
                if inv_tx.send(&ConnectorMsg::Inventory(inv)).await.is_err() {
                    return;
                }
            }
            if inventories.changed().await.is_err() {
                return;
            }
        }
    });
    // Ship audit events: what is pending now, then each new one, in
    // batches.
    tasks.spawn(async move {
        let mut sent = 0i64;
        loop {
            let added = state.spool.added.notified();
            let batch = state.spool.after(sent, 1000);
            let full = batch.len() == 1000;
            if let Some(last) = batch.last() {
                sent = last.seq;
                // The lines the spool wrote are the messages: one frame
                // for the batch, nothing encoded again.
                let mut frame = bytes::BytesMut::with_capacity(batch.iter().map(|l| l.bytes.len()).sum());
                for l in &batch {
                    frame.extend_from_slice(&l.bytes);
                }
                if tx.send_encoded(frame.freeze()).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                // Under load, gather a moment's events into one batch rather
                // than waking for each (the spool already holds them).
                () = added => tokio::time::sleep(SHIP_GATHER).await,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if tx.send(&ConnectorMsg::Health { ok: true }).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(infra_tunnel::boxed(body));
    *r.status_mut() = StatusCode::OK;
    r
}
