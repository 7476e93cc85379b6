//! `infra connector`: the data plane, next to the infrastructure.
//!
//! It dials out to the server (no inbound port), receives the signing keys
//! and the grants for its destinations as the server pushes them, and
//! decides every request itself from the user's token and that state. The
//! upstream credentials in its configuration never leave it.

mod admit;
mod answer;
mod audit;
mod browser;
mod clock;
mod config;
mod direct;
mod front;
mod http_proxy;
mod kube;
mod metered;
mod metrics;
mod pg_audit;
mod pg_direct;
mod pg_roles;
mod pg_session;
mod pg_upstream;
mod rbac;
mod recording;
mod route;
mod spool;
mod ssh_host;
mod ssh_record;
mod state;
mod streams;
mod trust;
mod tunnel;
mod webhook;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use config::ConnectorArgs;

/// Entry points for the fuzz targets in `fuzz/`, which live outside the
/// crate: thin wrappers over crate-private parsers, no behaviour of their
/// own. Not an API; nothing else may use them.
#[doc(hidden)]
pub mod fuzzing {
    /// The header hygiene applied to every request before it is proxied.
    pub fn strip_client_headers(h: &mut http::HeaderMap) {
        crate::http_proxy::strip_client_headers(h);
    }

    /// What the Kubernetes request-info parser makes of a request, and the
    /// audit detail it writes for it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KubeRequestInfo {
        pub verb: String,
        pub group: String,
        pub resource: String,
        pub subresource: String,
        pub namespace: String,
        pub name: String,
        pub description: String,
    }

    pub fn kube_request_info(method: &http::Method, path: &str, query: &str) -> KubeRequestInfo {
        let i = crate::kube::RequestInfo::parse(method, path, query);
        let description = i.describe(query);
        KubeRequestInfo {
            verb: i.verb,
            group: i.group,
            resource: i.resource,
            subresource: i.subresource,
            namespace: i.namespace,
            name: i.name,
            description,
        }
    }
}

/// Runs the connector until SIGTERM or SIGINT. `init_logs` sets up logging
/// (JSON lines when given `true`).
pub async fn run(args: ConnectorArgs, init_logs: fn(bool)) -> anyhow::Result<()> {
    infra_metrics::mark_start();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logs(args.log_format.as_deref() == Some("json"));
    let print_sshd = args.print_sshd_config;
    let settings = config::Settings::resolve(args)?;
    if print_sshd {
        return print_sshd_setup(&settings);
    }
    let state = Arc::new(open_state(settings)?);
    let tls = Arc::new(trust::client_config(&state.settings.tls)?);
    let admin = tokio::net::TcpListener::bind(state.settings.admin_listen)
        .await
        .with_context(|| {
            format!(
                "listen on admin address {} (set adminListen)",
                state.settings.admin_listen
            )
        })?;
    tracing::info!(name = %state.settings.name, server = %state.settings.server, admin = %admin.local_addr()?, "infra connector starting");

    let shutdown = CancellationToken::new();
    // Not tracked: it must outlive the drain, so a second signal can end it.
    tokio::spawn(signals(shutdown.clone()));
    start_services(&state, admin, &shutdown);
    listen_direct(&state, &shutdown).await?;
    listen_webhook(&state, &shutdown).await?;
    tunnel::run(state.clone(), tls, shutdown).await;
    // Everything the tunnels, listeners and streams started, given the
    // same grace as requests in flight.
    state.tasks.close();
    if tokio::time::timeout(tunnel::DRAIN_GRACE, state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(tasks = state.tasks.len(), "stopping with sessions still open");
    }
    state.spool.flush(true);
    tracing::info!("stopped");
    Ok(())
}

fn print_sshd_setup(settings: &config::Settings) -> anyhow::Result<()> {
    let mut any = false;
    for d in &settings.destinations {
        if let config::Kind::Ssh(cfg) = &d.kind {
            print!("{}", ssh_host::print_setup(&d.name, cfg));
            any = true;
        }
    }
    if !any {
        anyhow::bail!("no destination of kind ssh in the configuration");
    }
    Ok(())
}

/// The data directory, this instance's id and its audit spool.
fn open_state(settings: config::Settings) -> anyhow::Result<state::State> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("create data directory {}", settings.data_dir.display()))?;
    let id_path = settings.data_dir.join("instance-id");
    let instance_id = match std::fs::read_to_string(&id_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => {
            let id = infra_auth::random_token(20)?;
            std::fs::write(&id_path, &id).with_context(|| format!("write {}", id_path.display()))?;
            id
        }
    };
    let spool = spool::Spool::open(&settings.data_dir)?;
    if spool.pending_len() > 0 {
        tracing::info!(
            events = spool.pending_len(),
            "audit events from an earlier run will be shipped"
        );
    }
    let webhook_key = match &settings.webhook {
        Some(_) => Some(webhook::load_or_make_key(&settings.data_dir)?),
        None => None,
    };
    state::State::new(settings, spool, instance_id, webhook_key)
}

/// Runs `service` as a task of the connector until it ends or shutdown.
fn until_shutdown(
    state: &state::State,
    shutdown: &CancellationToken,
    service: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.clone();
    state.tasks.spawn(async move {
        tokio::select! {
            () = service => {}
            () = shutdown.cancelled() => {}
        }
    });
}

/// The loops that run beside the tunnels for the connector's whole life.
fn start_services(state: &Arc<state::State>, admin: tokio::net::TcpListener, shutdown: &CancellationToken) {
    until_shutdown(state, shutdown, admin_server(admin, state.clone(), shutdown.clone()));
    // The spool reaches the disk within SYNC_EVERY, connected or not.
    let st = state.clone();
    until_shutdown(state, shutdown, async move {
        loop {
            tokio::time::sleep(tunnel::SYNC_EVERY).await;
            st.spool.flush(true);
        }
    });
    until_shutdown(state, shutdown, state.recordings.clone().ship());
    for (name, kube) in state.routes.kube() {
        until_shutdown(state, shutdown, kube.clone().reload_token_forever());
        until_shutdown(state, shutdown, rbac::run(state.clone(), name.to_owned(), kube.clone()));
    }
    // Grants that expire by time end open streams within a second.
    let st = state.clone();
    until_shutdown(state, shutdown, async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            st.recheck();
        }
    });
    // Login roles left able to log in (a connector stopped with sessions
    // open) are locked out; retried until the database answers.
    for (name, roles) in state.routes.pg() {
        let (name, roles) = (name.to_owned(), roles.clone());
        until_shutdown(state, shutdown, async move {
            let mut wait = std::time::Duration::from_secs(1);
            loop {
                match roles.lock_out_enabled().await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(destination = %name, roles = n, "login roles left enabled were locked out");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(destination = %name, error = %e, "cannot check the login roles yet; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(60));
                    }
                }
            }
        });
    }
    for d in &state.settings.destinations {
        if let config::Kind::Ssh(cfg) = &d.kind {
            until_shutdown(
                state,
                shutdown,
                ssh_host::run(state.clone(), d.name.clone(), cfg.clone()),
            );
        }
    }
}

/// Direct mode's listeners: PostgreSQL destinations with `listen`, and the
/// HTTP listener of `direct`.
async fn listen_direct(state: &Arc<state::State>, shutdown: &CancellationToken) -> anyhow::Result<()> {
    for d in &state.settings.destinations {
        let config::Kind::Postgres(cfg) = &d.kind else { continue };
        let Some(listen) = cfg.listen else { continue };
        // The direct-mode certificate (direct.certFile, or one from the
        // connector's own CA), offering PostgreSQL's ALPN name.
        let dc = state.settings.direct.clone().unwrap_or(config::DirectConfig {
            listen,
            cert_file: None,
            key_file: None,
            names: Vec::new(),
            url: None,
        });
        let mut tls = direct::tls_config(state, &dc)?;
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen} (destination {} listen)", d.name))?;
        tracing::info!(destination = %d.name, addr = %l.local_addr()?, "PostgreSQL direct mode listening");
        let serve = pg_direct::serve(
            state.clone(),
            d.name.clone(),
            cfg.clone(),
            l,
            Arc::new(tls),
            shutdown.clone(),
        );
        state.tasks.spawn(serve);
    }
    if let Some(d) = state.settings.direct.clone() {
        let tls = direct::tls_config(state, &d)?;
        let l = tokio::net::TcpListener::bind(d.listen)
            .await
            .with_context(|| format!("listen on direct.listen {}", d.listen))?;
        tracing::info!(addr = %l.local_addr()?, "direct mode listening");
        state
            .tasks
            .spawn(direct::serve(state.clone(), l, tls, shutdown.clone()));
    }
    Ok(())
}

/// The admission webhook's listener, when configured.
async fn listen_webhook(state: &Arc<state::State>, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let (Some(cfg), Some(key)) = (state.settings.webhook.clone(), state.webhook_key.clone()) else {
        return Ok(());
    };
    let l = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on webhook.listen {}", cfg.listen))?;
    tracing::info!(addr = %l.local_addr()?, cluster = %cfg.cluster, "admission webhook listening");
    state
        .tasks
        .spawn(webhook::serve(state.clone(), cfg, key, l, shutdown.clone()));
    Ok(())
}

async fn signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("draining: finishing requests in flight");
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    std::process::exit(130);
}

/// The readiness answer: the state, and what waits for the server.
fn health(state: &state::State, status: &str) -> String {
    let w = state.recordings.waiting();
    serde_json::json!({
        "status": status,
        "auditPending": state.spool.pending_len(),
        "recordingsWaiting": w.recordings,
        "recordingsWaitingBytes": w.bytes,
        "recordingsBudgetBytes": state.recordings.budget(),
    })
    .to_string()
}

/// The admin listener: `/readyz` (and `/healthz`) 200 once a tunnel is up
/// and grants have arrived, 503 while connecting; `/livez` 200 while the
/// process answers (a reconnect is no reason to restart it); `/metrics`.
async fn admin_server(listener: tokio::net::TcpListener, state: Arc<state::State>, shutdown: CancellationToken) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (st, shutdown) = (state.clone(), shutdown.clone());
        state.tasks.spawn(async move {
            let state = st;
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let json = "application/json";
                    let (status, ctype, body) = match req.uri().path() {
                        "/healthz" | "/readyz" if state.ready() => (200, json, health(&state, "ok")),
                        "/healthz" | "/readyz" => (503, json, health(&state, "connecting")),
                        "/livez" => (200, json, r#"{"status":"ok"}"#.to_owned()),
                        "/metrics" => (200, infra_metrics::CONTENT_TYPE, metrics::render(&state.metrics_now())),
                        _ => (
                            404,
                            json,
                            r#"{"code":404,"message":"not found: /livez, /readyz, /metrics"}"#.to_owned(),
                        ),
                    };
                    let mut r = http::Response::new(infra_tunnel::full(body));
                    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                    if let Ok(v) = http::HeaderValue::from_str(ctype) {
                        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            // A probe's keep-alive connection must not hold up the drain.
            tokio::select! {
                _ = conn => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
