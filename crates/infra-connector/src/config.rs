//! Connector configuration: YAML plus `INFRA_*` environment variables,
//! defaults in one place, unknown keys refused with their name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

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
}

/// How a destination is reached.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Http,
    Kubernetes(KubeConfig),
    Postgres(PgConfig),
    Ssh(SshConfig),
}

/// An SSH host: its sshd, and how the connector sets sshd up.
#[derive(Debug, Clone)]
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
    #[serde(default)]
    destinations: Vec<DestinationConfig>,
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
    pub(crate) destinations: Vec<Destination>,
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
        let rest = server
            .trim_end_matches('/')
            .strip_prefix("https://")
            .context("server URL must start with https://")?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse().context("server URL port")?,
            ),
            None => (rest.to_owned(), 443),
        };
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
        let mut destinations = Vec::new();
        for d in f.destinations {
            if !valid_name(&d.name) {
                bail!(
                    "invalid destination name '{}': use lower-case letters, digits and -",
                    d.name
                );
            }
            let (kind, url) = match d.kind.as_str() {
                "http" => {
                    if d.token_file.is_some()
                        || d.ca_file.is_some()
                        || d.in_cluster
                        || d.rbac_sync.is_some()
                        || d.admin_user.is_some()
                        || d.admin_password_file.is_some()
                        || d.listen.is_some()
                        || d.address.is_some()
                        || d.sshd_dir.is_some()
                    {
                        bail!(
                            "destination {}: tokenFile, caFile, inCluster and rbacSync are for kind kubernetes; adminUser, adminPasswordFile and listen for kind postgres",
                            d.name
                        );
                    }
                    let url = d
                        .url
                        .clone()
                        .with_context(|| format!("destination {}: 'url' is required for kind http", d.name))?;
                    (Kind::Http, url)
                }
                "kubernetes" => kube_destination(&d)?,
                "postgres" => pg_destination(&d)?,
                "ssh" => ssh_destination(&d)?,
                other => bail!(
                    "destination {}: kind '{other}' is not supported by this connector version (supported: http, kubernetes, postgres, ssh)",
                    d.name
                ),
            };
            let scheme = match kind {
                Kind::Http => "http",
                Kind::Kubernetes(_) => "https",
                Kind::Postgres(_) => "postgres",
                Kind::Ssh(_) => "ssh",
            };
            let rest = url
                .strip_prefix(&format!("{scheme}://"))
                .with_context(|| format!("destination {}: url must start with {scheme}:// (got {url})", d.name))?;
            // A path in the URL is a prefix for every request path.
            let (authority, path) = match rest.find('/') {
                Some(i) => (rest[..i].to_owned(), rest[i..].trim_end_matches('/').to_owned()),
                None => (rest.to_owned(), String::new()),
            };
            if !matches!(kind, Kind::Http) && d.upstream_auth.is_some() {
                bail!(
                    "destination {}: kind kubernetes authenticates with tokenFile (or inCluster), not upstreamAuth",
                    d.name
                );
            }
            let upstream_authorization = match d.upstream_auth {
                None => None,
                Some(UpstreamAuth {
                    bearer_token_file: Some(p),
                    basic_username: None,
                    basic_password_file: None,
                }) => Some(format!("Bearer {}", read_secret(&p, "upstream bearer token")?)),
                Some(UpstreamAuth {
                    bearer_token_file: None,
                    basic_username: Some(u),
                    basic_password_file: Some(p),
                }) => {
                    use base64::Engine;
                    let pw = read_secret(&p, "upstream password")?;
                    Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"))
                    ))
                }
                Some(_) => bail!(
                    "destination {}: upstreamAuth takes either bearerTokenFile, or basicUsername with basicPasswordFile",
                    d.name
                ),
            };
            destinations.push(Destination {
                name: d.name,
                kind,
                url: format!("{scheme}://{authority}{path}"),
                authority,
                upstream_authorization,
                labels: d.labels,
            });
        }
        if destinations.is_empty() {
            bail!("no destinations configured: add at least one under 'destinations:'");
        }
        // Two SSH hosts in one sshdDir would overwrite each other's files.
        let mut dirs = std::collections::BTreeSet::new();
        for d in &destinations {
            if let Kind::Ssh(SshConfig {
                sshd_dir: Some(dir), ..
            }) = &d.kind
                && !dirs.insert(dir.clone())
            {
                bail!(
                    "destination {}: sshdDir {} is used by another SSH destination; give each its own",
                    d.name,
                    dir.display()
                );
            }
        }
        Ok(Self {
            server: format!(
                "https://{}:{port}",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                }
            ),
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
            destinations,
        })
    }
}

/// A Kubernetes destination's URL and credentials, from the file or from
/// the pod it runs in.
fn kube_destination(d: &DestinationConfig) -> anyhow::Result<(Kind, String)> {
    let rbac_sync = d.rbac_sync.unwrap_or(true);
    if d.in_cluster {
        if d.url.is_some() || d.token_file.is_some() || d.ca_file.is_some() {
            bail!(
                "destination {}: inCluster takes url, tokenFile and caFile from the pod; remove them",
                d.name
            );
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").with_context(|| {
            format!(
                "destination {}: inCluster is set but KUBERNETES_SERVICE_HOST is not: is the connector running in a pod?",
                d.name
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let dir = Path::new(SA_DIR);
        return Ok((
            Kind::Kubernetes(KubeConfig {
                token_file: dir.join("token"),
                ca_file: dir.join("ca.crt"),
                rbac_sync,
            }),
            format!("https://{host}:{port}"),
        ));
    }
    let url = d.url.clone().with_context(|| {
        format!(
            "destination {}: kind kubernetes needs 'url' (the API server, https://...) or 'inCluster: true'",
            d.name
        )
    })?;
    let token_file = d.token_file.clone().with_context(|| {
        format!(
            "destination {}: kind kubernetes needs 'tokenFile': the connector's service-account token",
            d.name
        )
    })?;
    // Read once now, so a wrong path fails at start rather than per request.
    read_secret(&token_file, "Kubernetes token")?;
    let ca_file = d.ca_file.clone().with_context(|| {
        format!(
            "destination {}: kind kubernetes needs 'caFile': the CA certificate of the API server",
            d.name
        )
    })?;
    std::fs::metadata(&ca_file).with_context(|| format!("destination {}: caFile {}", d.name, ca_file.display()))?;
    Ok((
        Kind::Kubernetes(KubeConfig {
            token_file,
            ca_file,
            rbac_sync,
        }),
        url,
    ))
}

/// A PostgreSQL destination: `url: postgres://host[:port]/database`, the
/// admin role and its password file.
fn pg_destination(d: &DestinationConfig) -> anyhow::Result<(Kind, String)> {
    let url = d.url.clone().with_context(|| {
        format!(
            "destination {}: kind postgres needs 'url: postgres://host:port/database'",
            d.name
        )
    })?;
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .with_context(|| format!("destination {}: url must start with postgres:// (got {url})", d.name))?;
    if rest.contains('@') {
        bail!(
            "destination {}: put no credentials in the url; use adminUser and adminPasswordFile",
            d.name
        );
    }
    let (authority, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let database = database.split('?').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse()
                .with_context(|| format!("destination {}: url port '{p}'", d.name))?,
        ),
        None => (authority.to_owned(), 5432),
    };
    let admin_password_file = d.admin_password_file.clone().with_context(|| {
        format!(
            "destination {}: kind postgres needs 'adminPasswordFile': the password of adminUser, which manages login roles",
            d.name
        )
    })?;
    let keep_parameters = match d.query_parameters.as_deref() {
        None | Some("redact") => false,
        Some("keep") => true,
        Some(other) => bail!(
            "destination {}: queryParameters is 'redact' or 'keep', not '{other}'",
            d.name
        ),
    };
    Ok((
        Kind::Postgres(PgConfig {
            host: host.clone(),
            port,
            database: if database.is_empty() {
                "postgres".into()
            } else {
                database.to_owned()
            },
            admin_user: d.admin_user.clone().unwrap_or_else(|| "postgres".into()),
            admin_password: read_secret(&admin_password_file, "PostgreSQL admin password")?,
            keep_parameters,
            listen: d.listen,
        }),
        format!("postgres://{authority}"),
    ))
}

/// An SSH host: `address` (sshd, `host:port`), optional `publicAddress`,
/// `hostKeyFile`, `sshdDir` and `allow`.
fn ssh_destination(d: &DestinationConfig) -> anyhow::Result<(Kind, String)> {
    if d.url.is_some() {
        bail!(
            "destination {}: kind ssh takes 'address: host:port' (where sshd listens), not url",
            d.name
        );
    }
    let address = d.address.clone().with_context(|| {
        format!(
            "destination {}: kind ssh needs 'address: host:port' (where sshd listens)",
            d.name
        )
    })?;
    // host:port with a plain host name or address: it ends up in clients'
    // ssh configs, where anything else could be read as more options.
    let port_ok = |a: &str| {
        a.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty()
                && p.parse::<u16>().is_ok()
                && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c))
        })
    };
    if !port_ok(&address) {
        bail!(
            "destination {}: address '{address}' must be host:port, such as 10.0.0.7:22",
            d.name
        );
    }
    if let Some(p) = &d.public_address
        && !port_ok(p)
    {
        bail!("destination {}: publicAddress '{p}' must be host:port", d.name);
    }
    let mut allow = Vec::new();
    for a in &d.allow {
        allow.push(match a.as_str() {
            "port-forwarding" => "permit-port-forwarding",
            "agent-forwarding" => "permit-agent-forwarding",
            "x11-forwarding" => "permit-X11-forwarding",
            other => bail!(
                "destination {}: allow '{other}' is not known; use port-forwarding, agent-forwarding or x11-forwarding",
                d.name
            ),
        }
        .to_owned());
    }
    let host_key_file = match (&d.host_key_file, &d.sshd_dir) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(_)) => Some(PathBuf::from("/etc/ssh/ssh_host_ed25519_key.pub")),
        (None, None) => None,
    };
    if let Some(f) = &host_key_file {
        std::fs::metadata(f).with_context(|| {
            format!(
                "destination {}: hostKeyFile {} (the host's public key, certified so clients trust the host)",
                d.name,
                f.display()
            )
        })?;
    }
    Ok((
        Kind::Ssh(SshConfig {
            address: address.clone(),
            public_address: d.public_address.clone(),
            host_key_file,
            sshd_dir: d.sshd_dir.clone(),
            allow,
            reload: d.sshd_reload.clone(),
        }),
        format!("ssh://{address}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(yaml: &str) -> Result<SshConfig, String> {
        let d: DestinationConfig =
            yaml_serde::from_str(&format!("name: host1\nkind: ssh\n{yaml}")).map_err(|e| e.to_string())?;
        match ssh_destination(&d) {
            Ok((Kind::Ssh(c), url)) => {
                assert_eq!(url, format!("ssh://{}", c.address));
                Ok(c)
            }
            Ok(_) => Err("not ssh".into()),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    #[test]
    fn ssh_destinations() {
        let c = ssh("address: 10.0.0.7:22\nallow: [port-forwarding]\n").unwrap();
        assert_eq!(c.allow, ["permit-port-forwarding"]);
        assert!(c.host_key_file.is_none() && c.sshd_dir.is_none());
        for (yaml, why) in [
            ("", "needs 'address"),
            ("address: 10.0.0.7\n", "must be host:port"),
            (
                "address: 10.0.0.7:22\npublicAddress: x\n",
                "publicAddress 'x' must be host:port",
            ),
            ("url: ssh://x:22\n", "not url"),
            (
                "address: a:22\nallow: [root-login]\n",
                "allow 'root-login' is not known",
            ),
            (
                "address: a:22\nhostKeyFile: /nonexistent/key.pub\n",
                "hostKeyFile /nonexistent/key.pub",
            ),
            (
                "address: a:22\nsshdDir: /etc/ssh/infra-test-none\n",
                "/etc/ssh/ssh_host_ed25519_key.pub",
            ),
            ("address: a:22\nadress: b\n", "unknown field `adress`"),
        ] {
            let e = ssh(yaml).err().unwrap_or_default();
            // With sshdDir and no hostKeyFile, the default key path is used:
            // an error only where that key does not exist.
            if yaml.contains("sshdDir") && std::path::Path::new("/etc/ssh/ssh_host_ed25519_key.pub").exists() {
                continue;
            }
            assert!(e.contains(why), "{yaml:?}: {e}");
        }
    }
}
