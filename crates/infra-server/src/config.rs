//! Server settings: flags, `INFRA_*` environment variables and an optional
//! YAML file, with every default in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// `infra server` flags. Each can also come from the environment variable
/// shown, or from the YAML file given with `--config` (same names in
/// camelCase); flags win over the file.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// YAML settings file.
    #[arg(long, env = "INFRA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the SQLite database, root key and CA copy live.
    #[arg(long, env = "INFRA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data directory.
    #[arg(long, env = "INFRA_DB")]
    pub db: Option<String>,
    /// Address to serve HTTPS on [default: 127.0.0.1:4443].
    #[arg(long, env = "INFRA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (`/metrics`), liveness (`/livez`) and
    /// readiness (`/readyz`) over plain HTTP on this address, e.g.
    /// 127.0.0.1:9090 [default: off; never on the public port].
    #[arg(long, env = "INFRA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export every audit event as JSON lines to this file (rotated by size).
    #[arg(long, env = "INFRA_AUDIT_EXPORT_FILE")]
    pub audit_export_file: Option<PathBuf>,
    /// Rotate the export file at this size: bytes, or with KB, MB, GB [default: 100MB].
    #[arg(long, env = "INFRA_AUDIT_EXPORT_FILE_MAX_SIZE")]
    pub audit_export_file_max_size: Option<String>,
    /// Rotated export files kept [default: 10].
    #[arg(long, env = "INFRA_AUDIT_EXPORT_FILE_KEEP")]
    pub audit_export_file_keep: Option<u32>,
    /// Export every audit event to a syslog collector: tcp://HOST:PORT or udp://HOST:PORT (RFC 5424).
    #[arg(long, env = "INFRA_AUDIT_EXPORT_SYSLOG")]
    pub audit_export_syslog: Option<String>,
    /// Export every audit event to an HTTP webhook (batches of JSON, retried until 2xx).
    #[arg(long, env = "INFRA_AUDIT_EXPORT_WEBHOOK")]
    pub audit_export_webhook: Option<String>,
    /// Bearer token the webhook is sent with (prefer the environment variable).
    #[arg(long, env = "INFRA_AUDIT_EXPORT_WEBHOOK_TOKEN", hide_env_values = true)]
    pub audit_export_webhook_token: Option<String>,
    /// Archive and delete audit events older than this (e.g. 90d) [default: keep all].
    #[arg(long, env = "INFRA_AUDIT_RETENTION")]
    pub audit_retention: Option<String>,
    /// Keep at most this many audit events in the database; older ones are archived [default: no limit].
    #[arg(long, env = "INFRA_AUDIT_RETENTION_EVENTS")]
    pub audit_retention_events: Option<u64>,
    /// Keep the audit events in the database under this size (e.g. 10GB; estimated from the newest events' size); older ones are archived.
    #[arg(long, env = "INFRA_AUDIT_RETENTION_SIZE")]
    pub audit_retention_size: Option<String>,
    /// Where archived audit events go, as compressed JSON lines [default: DATA_DIR/audit-archive].
    /// Replicas should share it.
    #[arg(long, env = "INFRA_AUDIT_ARCHIVE_DIR")]
    pub audit_archive_dir: Option<PathBuf>,
    /// How often retention looks for events to archive [default: 1m].
    #[arg(long, env = "INFRA_AUDIT_RETENTION_INTERVAL")]
    pub audit_retention_interval: Option<String>,
    /// Where session recordings are stored [default: DATA_DIR/recordings].
    /// Replicas share it (a shared volume).
    #[arg(long, env = "INFRA_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Store session recordings in this bucket instead: s3://BUCKET[/PREFIX].
    /// Credentials and region from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
    #[arg(long, env = "INFRA_RECORDINGS_S3")]
    pub recordings_s3: Option<String>,
    /// The endpoint of an S3-compatible store other than AWS, such as http://minio:9000.
    #[arg(long, env = "INFRA_RECORDINGS_S3_ENDPOINT")]
    pub recordings_s3_endpoint: Option<String>,
    /// Delete session recordings older than this (e.g. 90d), oldest first, each deletion audited [default: keep all].
    #[arg(long, env = "INFRA_RECORDINGS_RETENTION")]
    pub recordings_retention: Option<String>,
    /// Keep the stored session recordings under this total size (e.g. 50GB), deleting the oldest first [default: no limit].
    #[arg(long, env = "INFRA_RECORDINGS_RETENTION_SIZE")]
    pub recordings_retention_size: Option<String>,
    /// URL clients use to reach this server; the token issuer (`iss`).
    /// Default: https://<listen address>, with localhost for loopback.
    #[arg(long, env = "INFRA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// URL connectors use to reach this replica (each replica its own;
    /// the public URL stays shared) [default: the public URL].
    #[arg(long, env = "INFRA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// HTTP destinations are served at https://<destination>.<gateway domain>:<port>/ [default: localhost].
    #[arg(long, env = "INFRA_GATEWAY_DOMAIN")]
    pub gateway_domain: Option<String>,
    /// Extra DNS names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san", env = "INFRA_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// File holding the base64 root key that encrypts secrets at rest.
    /// Default: DATA_DIR/root.key, created on first start. INFRA_ROOT_KEY may hold the key itself.
    #[arg(long, env = "INFRA_ROOT_KEY_FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "INFRA_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Lifetime of tokens for destinations [default: 5m].
    #[arg(long, env = "INFRA_TOKEN_TTL")]
    pub token_ttl: Option<String>,
    /// Longest an SSH user certificate is valid; never longer than the session [default: 1h].
    #[arg(long, env = "INFRA_SSH_CERT_TTL")]
    pub ssh_cert_ttl: Option<String>,
    /// Send browsers that must log in straight to this identity provider (its login page instead of Infra's password form).
    #[arg(long, env = "INFRA_DEFAULT_PROVIDER")]
    pub default_provider: Option<String>,
    /// How often a session from an identity provider is refreshed, reading the user's groups again [default: 5m].
    #[arg(long, env = "INFRA_PROVIDER_REFRESH")]
    pub provider_refresh: Option<String>,
    /// Infra as an issuer: the claim that carries the user's groups in tokens for other systems [default: groups; "" leaves it out].
    #[arg(long, env = "INFRA_ISSUER_GROUPS_CLAIM")]
    pub issuer_groups_claim: Option<String>,
    /// Infra as an issuer: the claim that carries the email [default: email; "" leaves it out].
    #[arg(long, env = "INFRA_ISSUER_EMAIL_CLAIM")]
    pub issuer_email_claim: Option<String>,
    /// Infra as an issuer: sign tokens for other systems with EdDSA (Ed25519) or ES256 (P-256; for cloud web-identity federation) [default: EdDSA].
    #[arg(long, env = "INFRA_ISSUER_ALG", value_parser = ["EdDSA", "ES256"])]
    pub issuer_alg: Option<String>,
    /// Infra as an issuer: a fixed claim in every token for other systems, NAME=VALUE (a tenant, say); repeatable.
    #[arg(long = "issuer-claim", env = "INFRA_ISSUER_CLAIMS", value_delimiter = ',')]
    pub issuer_claims: Vec<String>,
    /// Longest a CLI session lasts before logging in again [default: 12h].
    #[arg(long, env = "INFRA_SESSION_TTL")]
    pub session_ttl: Option<String>,
    /// A session unused this long ends [default: 1h].
    #[arg(long, env = "INFRA_SESSION_INACTIVITY")]
    pub session_inactivity: Option<String>,
    /// How long SIGTERM waits for requests in flight [default: 10s].
    #[arg(long, env = "INFRA_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    pub openapi: bool,
}

/// The YAML file's shape; unknown keys are an error naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    db: Option<String>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    audit_export_file: Option<PathBuf>,
    audit_export_file_max_size: Option<String>,
    audit_export_file_keep: Option<u32>,
    audit_export_syslog: Option<String>,
    audit_export_webhook: Option<String>,
    audit_retention: Option<String>,
    audit_retention_events: Option<u64>,
    audit_retention_size: Option<String>,
    audit_archive_dir: Option<PathBuf>,
    audit_retention_interval: Option<String>,
    recordings_dir: Option<PathBuf>,
    recordings_s3: Option<String>,
    recordings_s3_endpoint: Option<String>,
    recordings_retention: Option<String>,
    recordings_retention_size: Option<String>,
    public_url: Option<String>,
    advertise_url: Option<String>,
    gateway_domain: Option<String>,
    #[serde(default)]
    tls_san: Vec<String>,
    root_key_file: Option<PathBuf>,
    log_format: Option<String>,
    token_ttl: Option<String>,
    ssh_cert_ttl: Option<String>,
    default_provider: Option<String>,
    provider_refresh: Option<String>,
    #[serde(default)]
    issuer_claims: Option<IssuerClaimsFile>,
    session_ttl: Option<String>,
    session_inactivity: Option<String>,
    shutdown_grace: Option<String>,
}

/// Settings after defaults are applied and values validated.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) db_url: String,
    pub(crate) listen: SocketAddr,
    /// Where `/metrics`, `/livez` and `/readyz` are served, if anywhere.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Where audit events are exported to.
    pub(crate) audit_export: AuditExport,
    /// Audit retention, when configured.
    pub(crate) audit_retention: Option<Retention>,
    /// Where archived audit events are (read by verification too).
    pub(crate) audit_archive_dir: PathBuf,
    /// Where session recordings are stored: this directory, unless a
    /// bucket is set.
    pub(crate) recordings_dir: PathBuf,
    pub(crate) recordings_s3: Option<crate::recordings::storage::S3Settings>,
    /// How long and how much of them is kept.
    pub(crate) recordings_limits: infra_record::retention::Limits,
    pub(crate) public_url: String,
    pub(crate) advertise_url: String,
    /// The host part of `public_url`, lower-cased.
    pub(crate) public_host: String,
    pub(crate) gateway_domain: String,
    pub(crate) tls_sans: Vec<String>,
    pub(crate) root_key_file: PathBuf,
    pub(crate) json_logs: bool,
    pub(crate) token_ttl: Duration,
    pub(crate) ssh_cert_ttl: Duration,
    pub(crate) issuer_claims: IssuerClaims,
    pub(crate) provider_refresh: Duration,
    pub(crate) default_provider: Option<String>,
    pub(crate) session_ttl: Duration,
    pub(crate) session_inactivity: Duration,
    pub(crate) shutdown_grace: Duration,
}

fn dur(name: &str, v: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => infra_core::parse_duration(&s).with_context(|| format!("setting {name}")),
    }
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => Path::new(&h).join(".infra").join("server"),
        None => PathBuf::from("infra-data"),
    }
}

impl Settings {
    pub(crate) fn resolve(a: ServerArgs) -> anyhow::Result<Self> {
        let f = read_file(a.config.as_deref())?;
        let data_dir = a.data_dir.or(f.data_dir).unwrap_or_else(default_data_dir);
        let db_url =
            a.db.or(f.db)
                .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("infra.db").display()));
        let archive_dir = a
            .audit_archive_dir
            .or(f.audit_archive_dir)
            .unwrap_or_else(|| data_dir.join("audit-archive"));
        let recordings = Recordings::resolve(
            [
                a.recordings_s3.or(f.recordings_s3),
                a.recordings_s3_endpoint.or(f.recordings_s3_endpoint),
                a.recordings_retention.or(f.recordings_retention),
                a.recordings_retention_size.or(f.recordings_retention_size),
            ],
            a.recordings_dir.or(f.recordings_dir),
            &data_dir,
        )?;
        let listen = a
            .listen
            .or(f.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4443)));
        let public_url = public_url(a.public_url.or(f.public_url), listen)?;
        let public_host = host_of(&public_url);
        let gateway_domain = a
            .gateway_domain
            .or(f.gateway_domain)
            .unwrap_or_else(|| "localhost".into())
            .to_ascii_lowercase();
        let mut tls_sans = a.tls_san;
        tls_sans.extend(f.tls_san);
        let log_format = a.log_format.or(f.log_format).unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            anyhow::bail!("log format must be text or json, got {log_format}");
        }
        let issuer_flags = IssuerFlags {
            claims: a.issuer_claims,
            alg: a.issuer_alg,
            groups: a.issuer_groups_claim,
            email: a.issuer_email_claim,
        };
        Ok(Self {
            root_key_file: a
                .root_key_file
                .or(f.root_key_file)
                .unwrap_or_else(|| data_dir.join("root.key")),
            data_dir,
            db_url,
            listen,
            metrics_listen: a.metrics_listen.or(f.metrics_listen),
            audit_retention: retention(
                a.audit_retention.or(f.audit_retention),
                a.audit_retention_events.or(f.audit_retention_events),
                a.audit_retention_size.or(f.audit_retention_size),
                &archive_dir,
                a.audit_retention_interval.or(f.audit_retention_interval),
            )?,
            audit_archive_dir: archive_dir.clone(),
            recordings_dir: recordings.dir,
            recordings_s3: recordings.s3,
            recordings_limits: recordings.limits,
            audit_export: AuditExport {
                file: a.audit_export_file.or(f.audit_export_file),
                file_max_bytes: size(
                    "audit export file size",
                    a.audit_export_file_max_size.or(f.audit_export_file_max_size),
                    100_000_000,
                )?,
                file_keep: a.audit_export_file_keep.or(f.audit_export_file_keep).unwrap_or(10),
                syslog: a.audit_export_syslog.or(f.audit_export_syslog),
                webhook: a.audit_export_webhook.or(f.audit_export_webhook),
                webhook_token: a.audit_export_webhook_token,
            },
            advertise_url: a
                .advertise_url
                .or(f.advertise_url)
                .unwrap_or_else(|| public_url.clone()),
            public_url,
            public_host,
            gateway_domain,
            tls_sans,
            json_logs: log_format == "json",
            token_ttl: dur("token TTL", a.token_ttl.or(f.token_ttl), Duration::from_secs(300))?,
            issuer_claims: issuer_claims(issuer_flags, f.issuer_claims.unwrap_or_default())?,
            default_provider: a.default_provider.or(f.default_provider),
            provider_refresh: dur(
                "provider refresh",
                a.provider_refresh.or(f.provider_refresh),
                Duration::from_secs(300),
            )?,
            ssh_cert_ttl: ssh_cert_ttl(a.ssh_cert_ttl.or(f.ssh_cert_ttl))?,
            session_ttl: dur(
                "session TTL",
                a.session_ttl.or(f.session_ttl),
                Duration::from_secs(12 * 3600),
            )?,
            session_inactivity: dur(
                "session inactivity",
                a.session_inactivity.or(f.session_inactivity),
                Duration::from_secs(3600),
            )?,
            shutdown_grace: dur(
                "shutdown grace",
                a.shutdown_grace.or(f.shutdown_grace),
                Duration::from_secs(10),
            )?,
        })
    }
}

/// Where session recordings go and how long they stay.
struct Recordings {
    dir: PathBuf,
    s3: Option<crate::recordings::storage::S3Settings>,
    limits: infra_record::retention::Limits,
}

impl Recordings {
    /// From the settings: bucket, endpoint, age, size; and the directory.
    fn resolve(given: [Option<String>; 4], dir: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<Self> {
        let [s3, endpoint, age, size_limit] = given;
        Ok(Self {
            dir: dir.unwrap_or_else(|| data_dir.join("recordings")),
            s3: s3.map(|url| crate::recordings::storage::S3Settings { url, endpoint }),
            limits: infra_record::retention::Limits {
                max_age_ms: age
                    .map(|s| dur("recordings retention", Some(s), Duration::ZERO))
                    .transpose()?
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                max_total_bytes: size_limit
                    .map(|s| size("recordings retention size", Some(s), 0))
                    .transpose()?,
            },
        })
    }
}

/// Audit export targets, as configured (checked when the server builds
/// them at start).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditExport {
    pub(crate) file: Option<PathBuf>,
    pub(crate) file_max_bytes: u64,
    pub(crate) file_keep: u32,
    pub(crate) syslog: Option<String>,
    pub(crate) webhook: Option<String>,
    pub(crate) webhook_token: Option<String>,
}

/// What audit retention keeps, and where the rest goes.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_events: Option<u64>,
    /// The audit table's size bound, in bytes (estimated, see
    /// `audit_retention`).
    pub(crate) max_bytes: Option<u64>,
    pub(crate) dir: PathBuf,
    pub(crate) interval: Duration,
}

/// Retention from its settings: `None` when neither bound is set.
fn retention(
    age: Option<String>,
    events: Option<u64>,
    bytes: Option<String>,
    dir: &Path,
    interval: Option<String>,
) -> anyhow::Result<Option<Retention>> {
    if age.is_none() && events.is_none() && bytes.is_none() {
        return Ok(None);
    }
    let max_bytes = match bytes {
        Some(b) => Some(size("audit retention size", Some(b), 0)?),
        None => None,
    };
    let max_age = match age {
        Some(a) => Some(dur("audit retention", Some(a), Duration::ZERO)?),
        None => None,
    };
    if events == Some(0) {
        anyhow::bail!("audit retention events: keep at least one event");
    }
    Ok(Some(Retention {
        max_age,
        max_events: events,
        max_bytes,
        dir: dir.to_path_buf(),
        interval: dur("audit retention interval", interval, Duration::from_secs(60))?,
    }))
}

/// A size from the file, or `default`.
fn size(what: &str, given: Option<String>, default: u64) -> anyhow::Result<u64> {
    match given {
        None => Ok(default),
        Some(s) => infra_core::parse_size(&s).with_context(|| what.to_owned()),
    }
}

/// The YAML file, if one is given.
fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(p) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("read config file {}", p.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("config file {}", p.display()))
}

/// The public URL, without a trailing slash: the one given, or
/// `https://<listen address>` with localhost for loopback.
fn public_url(given: Option<String>, listen: SocketAddr) -> anyhow::Result<String> {
    let url = given.unwrap_or_else(|| {
        let host = if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            match listen {
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                SocketAddr::V4(v4) => v4.ip().to_string(),
            }
        };
        format!("https://{host}:{}", listen.port())
    });
    let url = url.trim_end_matches('/').to_owned();
    if !url.starts_with("https://") {
        anyhow::bail!("public URL must start with https://, got {url}");
    }
    Ok(url)
}

/// The host part of an `https://` URL, lower-cased (an IPv6 address
/// without its brackets).
fn host_of(url: &str) -> String {
    url.trim_start_matches("https://")
        .split('/')
        .next()
        .map(|hp| {
            if hp.starts_with('[') {
                hp.split(']').next().unwrap_or(hp).trim_start_matches('[')
            } else {
                hp.rsplit_once(':').map_or(hp, |(h, _)| h)
            }
        })
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The flags about Infra as an issuer, which win over the file's
/// `issuerClaims`.
struct IssuerFlags {
    claims: Vec<String>,
    alg: Option<String>,
    groups: Option<String>,
    email: Option<String>,
}

/// Claims tokens carry when Infra issues them for other systems; none may
/// be one Infra sets itself.
fn issuer_claims(flags: IssuerFlags, f: IssuerClaimsFile) -> anyhow::Result<IssuerClaims> {
    const RESERVED: [&str; 8] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "name"];
    let mut extra = f.extra;
    for kv in &flags.claims {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--issuer-claim {kv}: write NAME=VALUE"))?;
        extra.insert(k.to_owned(), v.to_owned());
    }
    if let Some(k) = extra.keys().find(|k| RESERVED.contains(&k.as_str())) {
        anyhow::bail!("issuer claim {k} is set by Infra itself; choose another name");
    }
    let alg = flags.alg.or(f.alg).unwrap_or_else(|| "EdDSA".into());
    if alg != "EdDSA" && alg != "ES256" {
        anyhow::bail!("issuerClaims.alg is EdDSA or ES256, not {alg}");
    }
    let groups = flags.groups.or(f.groups).unwrap_or_else(|| "groups".into());
    let email = flags.email.or(f.email).unwrap_or_else(|| "email".into());
    if let Some(k) = [&groups, &email].into_iter().find(|k| RESERVED.contains(&k.as_str())) {
        anyhow::bail!("issuer claim {k} is set by Infra itself; choose another name");
    }
    Ok(IssuerClaims {
        es256: alg == "ES256",
        groups,
        email,
        extra,
    })
}

/// The longest an SSH user certificate lives [default: 1h, at most 12h].
fn ssh_cert_ttl(given: Option<String>) -> anyhow::Result<Duration> {
    let t = dur("SSH certificate TTL", given, Duration::from_secs(3600))?;
    // Retired CA keys stay trusted a day: certificates must end well before.
    if t > Duration::from_secs(12 * 3600) {
        anyhow::bail!("--ssh-cert-ttl is at most 12h (short certificates are the point)");
    }
    Ok(t)
}

/// How tokens for other systems (Infra as an issuer) carry the user.
#[derive(Debug, Clone, Default)]
pub(crate) struct IssuerClaims {
    pub(crate) es256: bool,
    pub(crate) groups: String,
    pub(crate) email: String,
    pub(crate) extra: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerClaimsFile {
    alg: Option<String>,
    groups: Option<String>,
    email: Option<String>,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, String>,
}
