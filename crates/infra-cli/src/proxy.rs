//! `infra proxy` and `infra psql`: a local listener whose connections
//! travel to a database destination through the gateway, the tunnel and
//! its connector, as the logged-in user. Clients connect to
//! `127.0.0.1:PORT` with no password: the token goes on the stream that
//! carries the session, and the connector logs in to the database as the
//! user's own login role.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use infra_api::Info;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Api;
use crate::config::{self, ClientConfig};

#[derive(Debug, Args)]
#[command(after_help = "\
Any PostgreSQL client then connects to 127.0.0.1:PORT with no password, for example:
  infra proxy db --port 5433 &
  psql \"host=127.0.0.1 port=5433 dbname=app\"
  pgbench -h 127.0.0.1 -p 5433 app
Each connection is authorised on its own (your grants now), audited with every query,
and closed if your access is revoked.")]
pub struct ProxyArgs {
    /// The database destination (see 'infra list').
    destination: String,
    /// Local port to listen on; 0 picks a free one and prints it.
    #[arg(long, short, default_value_t = 0)]
    port: u16,
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
}

async fn target(destination: &str) -> anyhow::Result<Target> {
    gateway_target(destination, "postgres", "a database").await
}

/// The gateway address for `destination`, which must be of `kind`.
pub(crate) async fn gateway_target(destination: &str, kind: &str, what: &str) -> anyhow::Result<Target> {
    let cfg = config::load_config()?.context("not logged in; run 'infra login SERVER' first")?;
    let info: Info = Api::from_login()?.get("/api/info").await?;
    let url = info
        .urls
        .get(destination)
        .with_context(|| format!("you have no grant on {destination}; 'infra list' shows what you can reach"))?;
    if let Some(k) = info.kinds.get(destination)
        && k != kind
    {
        anyhow::bail!("{destination} is a {k} destination, not {what}");
    }
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
    Ok(Target {
        destination: destination.to_owned(),
        host,
        port,
        name,
        tls: Arc::new(tls_config(&cfg)?),
    })
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

pub(crate) async fn proxy(a: ProxyArgs) -> anyhow::Result<()> {
    let t = target(&a.destination).await?;
    let l = TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{} (choose another with --port)", a.port))?;
    let port = l.local_addr()?.port();
    eprintln!(
        "Proxying 127.0.0.1:{port} to {} as {}; connect with:\n  psql \"host=127.0.0.1 port={port} dbname=DATABASE\"",
        t.destination,
        config::load_config()?.and_then(|c| c.user).unwrap_or_default()
    );
    serve(l, t).await
}

async fn serve(l: TcpListener, t: Target) -> anyhow::Result<()> {
    loop {
        let (c, _) = l.accept().await?;
        let t = t.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(c, &t).await {
                eprintln!("{}: {e:#}", t.destination);
            }
        });
    }
}

/// One client connection: open a stream through the gateway, then copy.
async fn connection(mut client: TcpStream, t: &Target) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let token = match crate::tokens::token_for(&t.destination).await {
        Ok(r) => r.token,
        Err(e) => return refuse(client, "28000", &format!("{e:#}")).await,
    };
    let mut upgraded = match open_stream(t, &token).await? {
        Ok(u) => u,
        Err(refusal) => return refuse(client, refusal.sqlstate(), &refusal.message).await,
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upgraded).await;
    Ok(())
}

/// Why the gateway would not open a stream.
pub(crate) struct Refusal {
    pub(crate) status: http::StatusCode,
    pub(crate) message: String,
}

impl Refusal {
    fn sqlstate(&self) -> &'static str {
        if self.status == http::StatusCode::UNAUTHORIZED || self.status == http::StatusCode::FORBIDDEN {
            "28000"
        } else {
            "08006"
        }
    }
}

/// Opens an `infra-tcp/1` stream to `t` through the gateway with `token`:
/// the outer error is a failure to talk to the gateway, the inner one its
/// refusal (with the reason from the connector or server).
pub(crate) async fn open_stream(
    t: &Target,
    token: &str,
) -> anyhow::Result<Result<TokioIo<hyper::upgrade::Upgraded>, Refusal>> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("connect to the Infra gateway {}:{}", t.host, t.port))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(t.name.clone()).context("gateway name")?;
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS with the Infra gateway")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn.with_upgrades());
    let req = http::Request::get("/")
        .header(http::header::HOST, &t.name)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, infra_tunnel::TCP_UPGRADE)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await.context("request to the Infra gateway")?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<infra_api::ErrorBody>(&body)
            .map(|e| e.message)
            .ok()
            .unwrap_or_else(|| format!("the Infra gateway answered {status}"));
        return Ok(Err(Refusal { status, message }));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .context("switch to the stream through the Infra gateway")?;
    Ok(Ok(TokioIo::new(upgraded)))
}

/// Tells a PostgreSQL client why it cannot connect: answers its startup
/// (declining TLS) with an ErrorResponse it shows to the user.
async fn refuse(mut client: TcpStream, code: &str, message: &str) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match infra_proto_pg::parse_startup(&buf) {
            Ok(Some((infra_proto_pg::Startup::Ssl | infra_proto_pg::Startup::GssEnc, n))) => {
                buf.drain(..n);
                client.write_all(b"N").await?;
                continue;
            }
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => {}
        }
        let n = tokio::time::timeout_at(deadline, client.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    client
        .write_all(&infra_proto_pg::error_response("FATAL", code, message))
        .await?;
    Ok(())
}

pub(crate) async fn psql(a: PsqlArgs) -> anyhow::Result<()> {
    let t = target(&a.destination).await?;
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = l.local_addr()?.port();
    tokio::spawn(serve(l, t));
    let user = config::load_config()?.and_then(|c| c.user).unwrap_or_default();
    let mut conninfo = format!("host=127.0.0.1 port={port} user='{}'", user.replace('\'', "\\'"));
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
    std::process::exit(status.code().unwrap_or(1));
}
