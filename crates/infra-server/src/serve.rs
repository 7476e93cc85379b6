//! The server's life: start-up (settings, data directory, store, CA and
//! the first admin), the one TLS port, and graceful shutdown.
//!
//! SIGTERM stops accepting and drains within the grace period: the
//! clients' connections first (HTTP requests in flight finish, PostgreSQL
//! sessions and upgraded streams run until they end), then the tunnels
//! that carried them, then the background loops; what is left at the
//! deadline is cut. A second signal exits at once.

mod certs;
mod connection;
mod observe;

use std::sync::Arc;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{self, FirstAdmin};
use crate::config::{ServerArgs, Settings};
use crate::state::{AppState, Inner};

pub(crate) async fn run(args: ServerArgs, init_logs: fn(bool)) -> anyhow::Result<()> {
    if args.openapi {
        println!("{}", crate::api::openapi_json());
        return Ok(());
    }
    let settings = Settings::resolve(args)?;
    init_logs(settings.json_logs);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    make_data_dir(&settings)?;
    // Take the port before anything is created: a server that cannot
    // listen must not bootstrap (and print, unseen) a one-time admin key.
    let listener = TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "listen on {} (is another server running? use --listen)",
            settings.listen
        )
    })?;
    let state = open_state(settings).await?;
    let ca = bootstrap::ca(&state).await?;
    bootstrap::signing_key(&state).await?;
    crate::ssh::ensure(&state)
        .await
        .map_err(|e| anyhow::anyhow!("create the SSH certificate authorities: {}", e.message))?;
    let first_admin = bootstrap::first_admin(&state).await?;
    let tls = certs::serving_tls(&state, ca)?;

    let settings = &state.settings;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, url = %settings.public_url, db = %redact_url(&settings.db_url), "infra server listening");
    print_banner(settings, &tls.fingerprint, &tls.ca_path, first_admin);

    infra_metrics::mark_start();
    let sinks = export_sinks(&state.settings.audit_export)?;
    if let Some(addr) = settings.metrics_listen {
        // It answers through the drain (`/readyz` says "stopping") and
        // stops with the tunnels.
        observe::start(&state, addr, state.tasks.close_tunnels.clone()).await?;
    }
    let shutdown = CancellationToken::new();
    // Not tracked: it waits for a second signal, which exits the process
    // at once, so it must not hold up the drain.
    tokio::spawn(signals(shutdown.clone()));
    start_background(&state, &shutdown);
    crate::audit_export::start(&state.store, sinks, &state.tasks.background, &shutdown);
    if let Some(r) = state.settings.audit_retention.clone() {
        state
            .tasks
            .background
            .spawn(crate::audit_retention::run(state.clone(), r, shutdown.clone()));
    }
    state
        .tasks
        .background
        .spawn(crate::recordings::retention::run(state.clone(), shutdown.clone()));
    tracing::info!(store = %state.recording_store.describe(), "session recordings are kept in {}", state.recording_store.describe());
    let graceful = GracefulShutdown::new();
    connection::accept_loop(&listener, tls.acceptor, &state, &graceful, &shutdown).await;
    drain(&state, graceful).await;
    crate::audit_out::flush(std::time::Duration::from_secs(5));
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the data directory, readable by this user only.
fn make_data_dir(settings: &Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("create data directory {}", settings.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// The root key and the store, and the state every request shares.
async fn open_state(settings: Settings) -> anyhow::Result<AppState> {
    let root_key = bootstrap::root_key(&settings.root_key_file)?;
    let store = infra_store::Store::open(&settings.db_url)
        .await
        .with_context(|| format!("open database {}", redact_url(&settings.db_url)))?;
    let recording_store = match &settings.recordings_s3 {
        Some(s3) => crate::recordings::storage::RecordingStore::s3(s3)?,
        None => crate::recordings::storage::RecordingStore::dir(settings.recordings_dir.clone())?,
    };
    Ok(AppState(Arc::new(Inner {
        recording_store,
        store,
        root_key,
        settings,
        hub: crate::hub::Hub::new(),
        gateway_names: crate::gateway_names::KnownNames::default(),
        hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        oidc: crate::oidc::Oidc::new(),
        tasks: crate::tasks::Tasks::default(),
        audit_intake: crate::audit_intake::Intake::new(),
        forward_auth: crate::forward_auth::Apps::default(),
    })))
}

/// The loops that run for the server's life, until `shutdown`.
fn start_background(state: &AppState, shutdown: &CancellationToken) {
    let tasks = &state.tasks.background;
    // The writer outlives the clients' drain: their last decisions are
    // recorded before it stops.
    state
        .audit_intake
        .start(&state.store, tasks, state.tasks.close_tunnels.clone());
    tasks.spawn(crate::forward_auth::http::keep(state.clone(), shutdown.clone()));
    tasks.spawn(watch_changes(state.clone(), shutdown.clone()));
    tasks.spawn(heartbeat(state.clone(), shutdown.clone()));
    tasks.spawn(crate::request_events::run(state.clone(), shutdown.clone()));
    tasks.spawn(crate::gateway_names::keep_names(
        state.gateway_names.clone(),
        state.store.clone(),
        state.hub.subscribe(),
        shutdown.clone(),
    ));
}

/// The audit export targets the settings name; a bad one stops the start.
fn export_sinks(c: &crate::config::AuditExport) -> anyhow::Result<Vec<crate::audit_export::Sink>> {
    use crate::audit_export::{FileSink, Sink, SyslogSink, WebhookSink};
    let mut sinks = Vec::new();
    if let Some(p) = &c.file {
        sinks.push(Sink::File(FileSink::new(p.clone(), c.file_max_bytes, c.file_keep)));
    }
    if let Some(u) = &c.syslog {
        sinks.push(Sink::Syslog(SyslogSink::parse(u).map_err(anyhow::Error::msg)?));
    }
    if let Some(u) = &c.webhook {
        sinks.push(Sink::Webhook(
            WebhookSink::new(u, c.webhook_token.clone()).map_err(anyhow::Error::msg)?,
        ));
    }
    Ok(sinks)
}

/// Ends what the listener started, within the grace period: the clients'
/// connections first, since they ride the tunnels; then the tunnels (their
/// connectors reconnect to another replica) and the background loops.
async fn drain(state: &AppState, graceful: GracefulShutdown) {
    let grace = state.settings.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining requests in flight");
    let deadline = tokio::time::Instant::now() + grace;
    let tasks = &state.tasks;
    tasks.clients.close();
    let clients = async {
        graceful.shutdown().await;
        tasks.clients.wait().await;
    };
    let clients_done = tokio::time::timeout_at(deadline, clients).await.is_ok();
    tasks.close_tunnels.cancel();
    tasks.tunnels.close();
    tasks.background.close();
    let rest = async {
        tasks.tunnels.wait().await;
        tasks.background.wait().await;
    };
    let rest_done = tokio::time::timeout_at(deadline, rest).await.is_ok();
    if !(clients_done && rest_done) {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Tells connectors' pushers when anything they decide with changed, on
/// this replica or another (the store's change marker; audit events alone,
/// such as proxied requests', do not move it).
async fn watch_changes(state: AppState, shutdown: CancellationToken) {
    let mut last = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            () = shutdown.cancelled() => return,
        }
        let Ok(mut c) = state.store.conn().await else { continue };
        if let Ok(m) = infra_store::connectors::change_marker(&mut c).await {
            if last.is_some_and(|l| l != m) {
                state.hub.changed();
            }
            last = Some(m);
        }
    }
}

/// Tells the store (and through it, connectors) that this replica is
/// alive and where it is reached.
async fn heartbeat(state: AppState, shutdown: CancellationToken) {
    let id = infra_auth::random_token(16).unwrap_or_default();
    loop {
        if let Ok(mut c) = state.store.conn().await {
            let url = &state.settings.advertise_url;
            if let Err(e) = infra_store::connectors::heartbeat_replica(&mut c, &id, url, infra_store::now_ms()).await {
                tracing::warn!(error = %e, "cannot record this replica's heartbeat");
            }
        }
        // Sessions ended long enough ago that their tokens have expired.
        let before = infra_store::now_ms() - crate::signing::retention_ms(&state);
        if let Ok(mut tx) = state.store.write().await
            && infra_store::connectors::forget_revoked_sessions(tx.conn(), before)
                .await
                .is_ok()
            && infra_store::keys::prune_expired_exchange_keys(tx.conn(), before)
                .await
                .is_ok()
        {
            let _ = tx.commit().await;
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
        // A second signal means "now".
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    }
}

fn print_banner(s: &Settings, fingerprint: &str, ca_path: &std::path::Path, first: FirstAdmin) {
    let host = s.public_url.trim_start_matches("https://");
    eprintln!();
    eprintln!("  Infra server is running at {}", s.public_url);
    eprintln!("  TLS CA certificate: {}", ca_path.display());
    eprintln!("  TLS CA fingerprint (SHA-256): {fingerprint}");
    match first {
        FirstAdmin::Existing => {
            eprintln!("  Log in with: infra login {host} --tls-trusted-fingerprint {fingerprint}");
        }
        FirstAdmin::FromEnvironment(email) => {
            eprintln!("  First admin: {email} (password from INFRA_ADMIN_PASSWORD)");
            eprintln!("  Log in with: infra login {host} --user {email} --tls-trusted-fingerprint {fingerprint}");
        }
        FirstAdmin::Key(k) => {
            eprintln!("  First admin: admin@localhost. One-time admin access key (shown only now):");
            eprintln!();
            eprintln!("    {}", k.expose());
            eprintln!();
            eprintln!(
                "  Log in with: infra login {host} --key {} --tls-trusted-fingerprint {fingerprint}",
                k.expose()
            );
            eprintln!(
                "  then add yourself: infra users add you@example.com && infra grants add you@example.com infra --role admin"
            );
        }
    }
    eprintln!();
}

/// Hides a password in a database URL before it is logged.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
