//! `infra proxy` and `infra psql`: a local listener whose connections
//! travel to a database destination through the gateway, the tunnel and
//! its connector, as the logged-in user. Clients connect with no password:
//! the token goes on the stream that carries the session, and the
//! connector logs in to the database as the user's own login role.
//!
//! Whoever can connect to the listener acts as the user. A loopback TCP
//! port is open to every local user of the machine; a unix socket in a
//! directory only the user can enter is not. `infra psql` always uses
//! such a socket; `infra proxy --socket-dir` offers one.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use infra_api::Info;
use infra_proto_pg::drive::{DriveError, Driven, drive};
use infra_proto_pg::login::{StartupReader, Transport};
use infra_proto_pg::{Fatal, SqlState};
use infra_tunnel::refusal::Refusal;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use crate::client::Api;
use crate::config::{self, ClientConfig};

mod http_proxy;
mod workload;

use workload::Workload;

#[derive(Debug, Args)]
#[command(after_help = "\
Any PostgreSQL client then connects with no password, for example:
  infra proxy db --port 5433 &
  psql \"host=127.0.0.1 port=5433 dbname=app\"
  pgbench -h 127.0.0.1 -p 5433 app
On a machine other people use, anyone there can connect to a TCP port and act as you:
use a unix socket in a directory only you can enter instead:
  infra proxy db --socket-dir ~/.infra/run &
  psql \"host=$HOME/.infra/run dbname=app\"
Each connection is authorised on its own (your grants now), audited with every query,
and closed if your access is revoked.
An HTTP destination gets a local HTTP port instead, which adds your token to each request:
  infra proxy web --port 8080 &
  curl http://127.0.0.1:8080/
As a workload (the sidecar Infra's admission webhook injects), with the platform's token
instead of a login, and INFRA_SERVER and INFRA_SERVER_CA set:
  infra proxy db --port 5432 --workload-token /var/run/secrets/infra/token")]
pub struct ProxyArgs {
    /// The database destination (see 'infra list').
    destination: String,
    /// Local port to listen on; 0 picks a free one and prints it. With
    /// --socket-dir, the port in the socket's name [default: 5432].
    #[arg(long, short, default_value_t = 0)]
    port: u16,
    /// Listen on a unix socket in this directory (made 0700, socket 0600)
    /// instead of a TCP port: only you can connect.
    #[arg(long, value_name = "DIR")]
    socket_dir: Option<std::path::PathBuf>,
    /// Act as a workload: exchange the JWT in this file (re-read each time,
    /// as the platform rotates it) instead of using a login.
    #[arg(long, value_name = "FILE", env = "INFRA_WORKLOAD_TOKEN_FILE")]
    workload_token: Option<std::path::PathBuf>,
    /// With --workload-token: the destination's kind, so the proxy listens at once and finds the
    /// destination at the first connection (a grant given later needs no restart).
    #[arg(long, value_parser = ["postgres", "http"], requires = "workload_token")]
    kind: Option<String>,
    /// Wait (60 s at most) until a proxy listens on --port, then exit: the sidecar's postStart
    /// hook, which holds the pod's other containers until the proxy is up.
    #[arg(long, hide = true)]
    ready_check: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Runs the system psql through Infra as you; arguments after -- go to psql:
  infra psql db
  infra psql db --database app -- -c 'select current_user'")]
pub struct PsqlArgs {
    /// The database destination (see 'infra list').
    destination: String,
    /// The database to open (default: the connector's configured one).
    #[arg(long, short)]
    database: Option<String>,
    /// Arguments for psql.
    #[arg(last = true)]
    args: Vec<String>,
}

/// Where and how to reach a destination through the gateway.
#[derive(Clone)]
pub(crate) struct Target {
    destination: String,
    /// Address to dial.
    host: String,
    port: u16,
    /// The gateway name: TLS server name and Host.
    name: String,
    tls: Arc<rustls::ClientConfig>,
    source: Source,
}

/// Whose credential the proxy's connections carry.
#[derive(Clone)]
pub(crate) enum Source {
    /// The logged-in user's (or `INFRA_ACCESS_KEY`'s).
    Login,
    /// A workload's, by token exchange.
    Workload(Arc<Workload>),
}

/// Where a proxy's connections go.
#[derive(Clone)]
pub(crate) enum Route {
    /// Found at start (a login: no grant, no proxy).
    Known(Target),
    /// A workload's: found at its first connection and kept, so the
    /// sidecar listens at once and a grant given later needs no restart.
    Lazy {
        destination: String,
        workload: Arc<Workload>,
        found: Arc<tokio::sync::Mutex<Option<Target>>>,
    },
}

impl Route {
    fn destination(&self) -> &str {
        match self {
            Route::Known(t) => &t.destination,
            Route::Lazy { destination, .. } => destination,
        }
    }

    pub(crate) async fn target(&self) -> anyhow::Result<Target> {
        match self {
            Route::Known(t) => Ok(t.clone()),
            Route::Lazy {
                destination,
                workload,
                found,
            } => {
                let mut found = found.lock().await;
                if let Some(t) = &*found {
                    return Ok(t.clone());
                }
                let (t, _) = locate(destination, Source::Workload(workload.clone())).await?;
                *found = Some(t.clone());
                Ok(t)
            }
        }
    }
}

impl Source {
    async fn token(&self, destination: &str) -> anyhow::Result<String> {
        match self {
            Source::Login => Ok(crate::tokens::token_for(destination).await?.token),
            Source::Workload(w) => w.token(destination).await,
        }
    }
}

async fn target(destination: &str) -> anyhow::Result<Target> {
    gateway_target(destination, "postgres", "a database").await
}

/// The gateway address for `destination`, which must be of `kind`.
pub(crate) async fn gateway_target(destination: &str, kind: &str, what: &str) -> anyhow::Result<Target> {
    let (t, k) = locate(destination, Source::Login).await?;
    if k != kind {
        anyhow::bail!("{destination} is a {k} destination, not {what}");
    }
    Ok(t)
}

/// Where `destination` is reached through the gateway, and its kind.
async fn locate(destination: &str, source: Source) -> anyhow::Result<(Target, String)> {
    let (cfg, api, who) = match &source {
        Source::Login => (
            config::load_config()?.context("not logged in; run 'infra login SERVER' first")?,
            Api::from_login()?,
            "you have",
        ),
        Source::Workload(w) => (
            w.client_config().clone(),
            w.api().await?,
            "this workload's service account has",
        ),
    };
    let info: Info = api.get("/api/info").await?;
    let url = info
        .urls
        .get(destination)
        .with_context(|| format!("{who} no grant on {destination}; 'infra list' shows what it can reach"))?;
    let kind = info.kinds.get(destination).cloned().unwrap_or_default();
    let authority = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (name, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().context("gateway port")?),
        None => (authority.clone(), 443),
    };
    // `*.localhost` is the loopback (RFC 6761); not every resolver knows.
    let host = if name.ends_with(".localhost") {
        "127.0.0.1".to_owned()
    } else {
        name.clone()
    };
    Ok((
        Target {
            destination: destination.to_owned(),
            host,
            port,
            name,
            tls: Arc::new(tls_config(&cfg)?),
            source,
        },
        kind,
    ))
}

fn tls_config(cfg: &ClientConfig) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut c = if cfg.skip_tls_verify {
        b.dangerous()
            .with_custom_certificate_verifier(Arc::new(infra_auth::chain::ChainVerifier::new(None, provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &cfg.ca_pem {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.context("the saved server CA")?)?;
            }
        }
        b.with_root_certificates(roots).with_no_client_auth()
    };
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// A unix socket `DIR/.s.PGSQL.PORT` (the name libpq looks for), in a
/// directory only this user may enter, the socket itself 0600.
fn private_socket(dir: &std::path::Path, port: u16) -> anyhow::Result<(UnixListener, std::path::PathBuf)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("make {} private (0700)", dir.display()))?;
    let path = dir.join(format!(".s.PGSQL.{port}"));
    // A socket left by an earlier run is in the way; anything else is not ours.
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        anyhow::ensure!(
            m.file_type().is_socket(),
            "{} exists and is not a socket; remove it or choose another directory",
            path.display()
        );
        std::fs::remove_file(&path).with_context(|| format!("remove the old socket {}", path.display()))?;
    }
    let l = UnixListener::bind(&path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("make {} private (0600)", path.display()))?;
    Ok((l, path))
}

/// Finds the destination as a workload, retrying until the server says
/// yes: a pod's sidecar starts before an admin may have granted it, and its
/// log is where the reason is read.
async fn locate_as_workload(destination: &str, w: Arc<Workload>) -> (Target, String) {
    let mut wait = std::time::Duration::from_secs(2);
    loop {
        match locate(destination, Source::Workload(w.clone())).await {
            Ok(found) => return found,
            Err(e) => {
                eprintln!(
                    "{destination}: not reachable yet, retrying in {}s: {e:#}",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// `--ready-check`: waits until something listens on `port`.
async fn ready_check(port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no proxy listens on 127.0.0.1:{port} after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(crate) async fn proxy(a: ProxyArgs) -> anyhow::Result<()> {
    if a.ready_check {
        return ready_check(a.port).await;
    }
    let (route, kind) = match (&a.workload_token, &a.kind) {
        (Some(f), kind) => {
            let workload = Arc::new(Workload::from_env(f.clone())?);
            let kind = match kind {
                Some(k) => k.clone(),
                None => locate_as_workload(&a.destination, workload.clone()).await.1,
            };
            let route = Route::Lazy {
                destination: a.destination.clone(),
                workload,
                found: Arc::default(),
            };
            (route, kind)
        }
        (None, _) => {
            let (t, kind) = locate(&a.destination, Source::Login).await?;
            (Route::Known(t), kind)
        }
    };
    let who = match &route {
        Route::Known(_) => config::load_config()?.and_then(|c| c.user).unwrap_or_default(),
        Route::Lazy { .. } => "this workload".to_owned(),
    };
    let t = route.clone();
    match kind.as_str() {
        "postgres" => {}
        "http" => return http_proxy::serve(route, a.port, &who).await,
        k => anyhow::bail!(
            "{} is a {k} destination; infra proxy serves postgres and http ones",
            a.destination
        ),
    }
    if let Some(dir) = &a.socket_dir {
        let port = if a.port == 0 { 5432 } else { a.port };
        let (l, path) = private_socket(dir, port)?;
        eprintln!(
            "Proxying {} to {} as {} (only you can connect); connect with:\n  psql \"host={} port={port} dbname=DATABASE\"",
            path.display(),
            t.destination(),
            who,
            dir.display()
        );
        return serve_unix(l, route).await;
    }
    let l = TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{} (choose another with --port)", a.port))?;
    let port = l.local_addr()?.port();
    eprintln!(
        "Proxying 127.0.0.1:{port} to {} as {} (any local user can connect to this port; --socket-dir is private); connect with:\n  psql \"host=127.0.0.1 port={port} dbname=DATABASE\"",
        t.destination(),
        who
    );
    serve(l, route).await
}

async fn serve(l: TcpListener, t: Route) -> anyhow::Result<()> {
    loop {
        let (c, _) = l.accept().await?;
        c.set_nodelay(true)?;
        spawn_connection(c, t.clone());
    }
}

async fn serve_unix(l: UnixListener, t: Route) -> anyhow::Result<()> {
    loop {
        let (c, _) = l.accept().await?;
        spawn_connection(c, t.clone());
    }
}

fn spawn_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(c: S, route: Route) {
    tokio::spawn(async move {
        if let Err(e) = connection(c, &route).await {
            eprintln!("{}: {e:#}", route.destination());
        }
    });
}

/// One client connection: open a stream through the gateway, then copy.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(client: S, route: &Route) -> anyhow::Result<()> {
    let t = match route.target().await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: connection refused: {e:#}", route.destination());
            return refuse(client, &Fatal::new(SqlState::InvalidAuthorization, format!("{e:#}"))).await;
        }
    };
    relay(client, &t).await
}

/// Opens the stream for one client to `t` and copies both ways.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(mut client: S, t: &Target) -> anyhow::Result<()> {
    let token = match t.source.token(&t.destination).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: connection refused: {e:#}", t.destination);
            return refuse(client, &Fatal::new(SqlState::InvalidAuthorization, format!("{e:#}"))).await;
        }
    };
    let mut upgraded = match open_stream(t, &token).await? {
        Ok(u) => u,
        Err(refusal) => {
            eprintln!("{}: connection refused: {}", t.destination, refusal.to_pg().message);
            return refuse(client, &refusal.to_pg()).await;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upgraded).await;
    Ok(())
}

/// A TLS connection to the gateway that serves `t`.
pub(crate) async fn connect_gateway(t: &Target) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("connect to the Infra gateway {}:{}", t.host, t.port))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(t.name.clone()).context("gateway name")?;
    tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS with the Infra gateway")
}

/// Opens an `infra-tcp/1` stream to `t` through the gateway with `token`:
/// the outer error is a failure to talk to the gateway, the inner one its
/// refusal (with the reason from the connector or server).
pub(crate) async fn open_stream(
    t: &Target,
    token: &str,
) -> anyhow::Result<Result<TokioIo<hyper::upgrade::Upgraded>, Refusal>> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(connect_gateway(t).await?)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = http::Request::get("/")
        .header(http::header::HOST, &t.name)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, infra_tunnel::TCP_UPGRADE)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await.context("request to the Infra gateway")?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Err(Refusal::read(resp).await));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .context("switch to the stream through the Infra gateway")?;
    Ok(Ok(TokioIo::new(upgraded)))
}

/// Tells a PostgreSQL client why it cannot connect: answers its startup
/// (declining TLS: the socket is local) with an ErrorResponse it shows to
/// the user.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut client: S, f: &Fatal) -> anyhow::Result<()> {
    let mut startup = StartupReader::new(Transport::Tunnel);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    match drive(&mut client, &mut startup, deadline).await {
        Ok(Driven::Done(_)) => {}
        // A cancel is never answered; a bad startup was, by `drive`.
        Ok(Driven::Cancel(_) | Driven::TlsRequested | Driven::Refused(_)) | Err(DriveError::Closed) => {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    client.write_all(&f.encode()).await?;
    Ok(())
}

pub(crate) async fn psql(a: PsqlArgs) -> anyhow::Result<()> {
    let t = target(&a.destination).await?;
    // A socket only this user can reach, gone when psql ends.
    let dir = std::env::temp_dir().join(format!(
        "infra-psql-{}-{}",
        std::process::id(),
        infra_auth::random_token(8).map_err(|_| anyhow::anyhow!("no randomness"))?
    ));
    let port = 5432;
    let (l, _) = private_socket(&dir, port)?;
    let cleanup = RemoveOnDrop(dir.clone());
    tokio::spawn(serve_unix(l, Route::Known(t)));
    let user = config::load_config()?.and_then(|c| c.user).unwrap_or_default();
    let host = dir.display().to_string();
    let mut conninfo = format!(
        "host='{}' port={port} user='{}'",
        host.replace('\'', "\\'"),
        user.replace('\'', "\\'")
    );
    if let Some(db) = &a.database {
        conninfo.push_str(&format!(" dbname='{}'", db.replace('\'', "\\'")));
    }
    let status = tokio::process::Command::new("psql")
        .arg(conninfo)
        .args(&a.args)
        .env("PGSSLMODE", "disable")
        .status()
        .await
        .context("run psql (is the PostgreSQL client installed? apt-get install postgresql-client)")?;
    drop(cleanup);
    std::process::exit(status.code().unwrap_or(1));
}

/// Removes a directory (the private socket's) when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
