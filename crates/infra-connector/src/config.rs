//! Connector configuration: YAML plus `INFRA_*` environment variables,
//! defaults in one place, unknown keys refused with their name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

mod destination;

/// `infra connector` flags; each overrides the file.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectorArgs {
    /// YAML configuration file (see docs/connectors.md).
    #[arg(long, env = "INFRA_CONNECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server URL, such as https://infra.example.com:4443.
    #[arg(long, env = "INFRA_SERVER")]
    pub server: Option<String>,
    /// Connector access key (from 'infra keys add --connector'). Better: INFRA_ACCESS_KEY or accessKeyFile.
    #[arg(long, env = "INFRA_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,
    /// Connector name; several connectors with one name share the load.
    #[arg(long, env = "INFRA_CONNECTOR_NAME")]
    pub name: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "INFRA_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Print the sshd_config lines each SSH destination needs, and exit.
    #[arg(long)]
    pub print_sshd_config: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TlsConfig {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) trusted_fingerprint: Option<String>,
    #[serde(default)]
    pub(crate) skip_verify: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpstreamAuth {
    pub(crate) bearer_token_file: Option<PathBuf>,
    pub(crate) basic_username: Option<String>,
    pub(crate) basic_password_file: Option<PathBuf>,
}

/// Direct mode: the connector's own TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DirectConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    /// Extra names for the generated certificate.
    #[serde(default)]
    pub(crate) names: Vec<String>,
    /// The URL clients use, shown by 'infra destinations list'.
    pub(crate) url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DestinationConfig {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) url: Option<String>,
    pub(crate) upstream_auth: Option<UpstreamAuth>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// Kubernetes: the service-account token the connector acts with.
    pub(crate) token_file: Option<PathBuf>,
    /// Kubernetes: the CA that signs the API server's certificate.
    pub(crate) ca_file: Option<PathBuf>,
    /// Kubernetes: take url, token and CA from the pod's service account.
    #[serde(default)]
    pub(crate) in_cluster: bool,
    /// Kubernetes: turn grants into RoleBindings (default true).
    pub(crate) rbac_sync: Option<bool>,
    /// PostgreSQL: the role the connector manages login roles with.
    pub(crate) admin_user: Option<String>,
    /// PostgreSQL: that role's password.
    pub(crate) admin_password_file: Option<PathBuf>,
    /// PostgreSQL: `redact` (default) or `keep` bind parameters in the audit log.
    pub(crate) query_parameters: Option<String>,
    /// PostgreSQL: direct mode, a TLS PostgreSQL listener where clients
    /// log in with their Infra token as the password.
    pub(crate) listen: Option<SocketAddr>,
    /// SSH: where the connector reaches sshd, `host:port`.
    pub(crate) address: Option<String>,
    /// SSH: where clients can reach sshd without the tunnel, if they can.
    pub(crate) public_address: Option<String>,
    /// SSH: the host's public key, certified by the host CA.
    pub(crate) host_key_file: Option<PathBuf>,
    /// SSH: the directory the connector keeps sshd's Infra files in.
    pub(crate) sshd_dir: Option<PathBuf>,
    /// SSH: forwarding the host allows in certificates:
    /// `port-forwarding`, `agent-forwarding`, `x11-forwarding`.
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// SSH: a shell command that makes sshd load a new host certificate
    /// (OpenSSH 9.8+ reads it only at start or SIGHUP).
    pub(crate) sshd_reload: Option<String>,
    /// Kubernetes: record exec and attach sessions (default true).
    pub(crate) record: Option<bool>,
    /// What a recorded destination does when the recording spool is full:
    /// `refuse-new-sessions` (default) or `allow-unrecorded`.
    pub(crate) on_full: Option<String>,
}

/// What a recorded destination does with a new session when the
/// connector's recording spool is over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFull {
    /// Refuse it: nothing runs unrecorded.
    RefuseNewSessions,
    /// Let it run without a recording, and say so in the audit log.
    AllowUnrecorded,
}

impl OnFull {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "refuse-new-sessions" => Some(Self::RefuseNewSessions),
            "allow-unrecorded" => Some(Self::AllowUnrecorded),
            _ => None,
        }
    }
}

/// `recordings:` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordingsFile {
    /// Most disk the recordings waiting to be shipped may take, such as `2GiB`.
    budget: Option<String>,
    /// Most one recording may hold; a session that would pass it ends.
    max_size: Option<String>,
}

/// Recordings kept when the server cannot take them, at most, by default.
const RECORDING_BUDGET: u64 = 2 << 30;
/// One recording, at most, by default.
const RECORDING_MAX: u64 = 1 << 30;

/// How a destination is reached.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Http,
    Kubernetes(KubeConfig),
    Postgres(PgConfig),
    Ssh(SshConfig),
}

/// An SSH host: its sshd, and how the connector sets sshd up.
#[derive(Debug, Clone, Default)]
pub(crate) struct SshConfig {
    pub(crate) address: String,
    pub(crate) public_address: Option<String>,
    pub(crate) host_key_file: Option<PathBuf>,
    pub(crate) sshd_dir: Option<PathBuf>,
    /// Certificate extensions beyond `permit-pty`.
    pub(crate) allow: Vec<String>,
    /// Run after a new host certificate is written.
    pub(crate) reload: Option<String>,
}

/// A PostgreSQL server and the connector's admin role on it.
#[derive(Debug, Clone)]
pub(crate) struct PgConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The database clients get when they name none, and the admin uses.
    pub(crate) database: String,
    pub(crate) admin_user: String,
    pub(crate) admin_password: String,
    /// Whether bind parameters are written to the audit log.
    pub(crate) keep_parameters: bool,
    /// Direct mode: where clients connect with TLS and their token.
    pub(crate) listen: Option<SocketAddr>,
}

/// A Kubernetes API server and the connector's own credentials for it.
#[derive(Debug, Clone)]
pub(crate) struct KubeConfig {
    pub(crate) token_file: PathBuf,
    pub(crate) ca_file: PathBuf,
    pub(crate) rbac_sync: bool,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    access_key: Option<String>,
    access_key_file: Option<PathBuf>,
    name: Option<String>,
    #[serde(default)]
    tls: TlsConfig,
    data_dir: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    direct: Option<DirectConfig>,
    webhook: Option<WebhookFile>,
    #[serde(default)]
    recordings: RecordingsFile,
    #[serde(default)]
    destinations: Vec<DestinationConfig>,
}

/// `webhook:` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookFile {
    listen: SocketAddr,
    cluster: Option<String>,
    names: Vec<String>,
    image: String,
    server: Option<String>,
}

/// The admission webhook that injects `infra proxy` sidecars into the pods
/// of a cluster this connector serves.
#[derive(Debug, Clone)]
pub(crate) struct WebhookConfig {
    pub(crate) listen: SocketAddr,
    /// The Kubernetes destination whose pods it admits.
    pub(crate) cluster: String,
    /// The names the API server reaches it by (the Service's DNS name),
    /// certified by the server's webhook CA.
    pub(crate) names: Vec<String>,
    /// The `infra` image the sidecars run.
    pub(crate) image: String,
    /// The server URL the sidecars dial.
    pub(crate) server: String,
}

impl WebhookConfig {
    fn resolve(f: WebhookFile, destinations: &[Destination], server: &str) -> anyhow::Result<Self> {
        let clusters: Vec<&str> = destinations
            .iter()
            .filter(|d| matches!(d.kind, Kind::Kubernetes(_)))
            .map(|d| d.name.as_str())
            .collect();
        let cluster = match (f.cluster, clusters.as_slice()) {
            (Some(c), _) if clusters.contains(&c.as_str()) => c,
            (Some(c), _) => bail!("webhook.cluster: {c} is not a destination of kind kubernetes here"),
            (None, [one]) => (*one).to_owned(),
            (None, []) => bail!("webhook: serve a destination of kind kubernetes (the cluster whose pods it admits)"),
            (None, _) => bail!("webhook: several clusters are served; name one with webhook.cluster"),
        };
        if f.names.is_empty() {
            bail!("webhook.names: the names the API server reaches the webhook by, such as infra-connector.infra.svc");
        }
        if f.image.trim().is_empty() {
            bail!("webhook.image: the infra image the sidecars run");
        }
        let server = match f.server {
            Some(s) => parse_server(&s).context("webhook.server")?.0,
            None => server.to_owned(),
        };
        Ok(Self {
            listen: f.listen,
            cluster,
            names: f.names,
            image: f.image,
            server,
        })
    }
}

/// A validated destination.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// `http(s)://host:port` with an optional path prefix, no trailing slash.
    pub(crate) url: String,
    pub(crate) authority: String,
    /// The value of the `Authorization` header to send upstream, if any.
    pub(crate) upstream_authorization: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// Sessions are recorded, and what happens when the spool is full;
    /// `None` when they are not.
    pub(crate) recording: Option<OnFull>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) server: String,
    pub(crate) server_host: String,
    pub(crate) server_port: u16,
    pub(crate) access_key: String,
    pub(crate) name: String,
    pub(crate) tls: TlsConfig,
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) direct: Option<DirectConfig>,
    pub(crate) webhook: Option<WebhookConfig>,
    pub(crate) destinations: Vec<Destination>,
    /// Most bytes of recordings kept waiting for the server.
    pub(crate) recording_budget: u64,
    /// Most bytes of one recording.
    pub(crate) recording_max: u64,
}

pub(crate) fn read_secret(p: &Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p).with_context(|| format!("read {what} from {}", p.display()))?;
    Ok(s.trim().to_owned())
}

/// `https://host[:port]` → (normalised URL, host, port).
pub(crate) fn parse_server(server: &str) -> anyhow::Result<(String, String, u16)> {
    let rest = server
        .trim_end_matches('/')
        .strip_prefix("https://")
        .context("server URL must start with https://")?;
    let rest = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse().context("server URL port")?,
        ),
        _ => (rest.trim_matches(['[', ']']).to_owned(), 443),
    };
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok((format!("https://{url_host}:{port}"), host, port))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
}

impl Settings {
    pub(crate) fn resolve(a: ConnectorArgs) -> anyhow::Result<Self> {
        let f: FileConfig = match &a.config {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("read config file {}", p.display()))?;
                yaml_serde::from_str(&text).with_context(|| format!("config file {}", p.display()))?
            }
        };
        let server = a
            .server
            .or(f.server)
            .context("no server: set 'server:' in the config, --server or INFRA_SERVER")?;
        let (server, host, port) = parse_server(&server)?;
        let access_key = match (a.access_key, f.access_key, f.access_key_file) {
            (Some(k), _, _) | (None, Some(k), _) => k,
            (None, None, Some(p)) => read_secret(&p, "access key")?,
            (None, None, None) => {
                bail!(
                    "no access key: create one with 'infra keys add --connector --name NAME' and set INFRA_ACCESS_KEY or accessKeyFile"
                )
            }
        };
        let name = a
            .name
            .or(f.name)
            .context("no connector name: set 'name:' in the config or --name")?;
        if !valid_name(&name) {
            bail!("invalid connector name '{name}': use lower-case letters, digits and -");
        }
        let data_dir = f.data_dir.unwrap_or_else(|| match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".infra").join("connector").join(&name),
            None => PathBuf::from("infra-connector-data"),
        });
        let destinations = f
            .destinations
            .into_iter()
            .map(Destination::from_config)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if destinations.is_empty() {
            bail!("no destinations configured: add at least one under 'destinations:'");
        }
        destination::check_sshd_dirs(&destinations)?;
        let webhook = f
            .webhook
            .map(|w| WebhookConfig::resolve(w, &destinations, &server))
            .transpose()?;
        Ok(Self {
            server,
            server_host: host,
            server_port: port,
            access_key,
            name,
            tls: f.tls,
            data_dir,
            admin_listen: f
                .admin_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4480))),
            direct: f.direct,
            webhook,
            destinations,
            recording_budget: match f.recordings.budget {
                Some(b) => infra_core::parse_size(&b).context("recordings.budget")?,
                None => RECORDING_BUDGET,
            },
            recording_max: match f.recordings.max_size {
                Some(b) => infra_core::parse_size(&b).context("recordings.maxSize")?,
                None => RECORDING_MAX,
            },
        })
    }
}
