//! One destination of the configuration file, checked and resolved.

use anyhow::{Context, bail};

use super::*;

impl Destination {
    pub(super) fn from_config(d: DestinationConfig) -> anyhow::Result<Self> {
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
        let upstream_authorization = upstream_authorization(&d.name, d.upstream_auth)?;
        let recording = recording(&d.name, &kind, d.record, d.on_full.as_deref())?;
        Ok(Destination {
            name: d.name,
            kind,
            url: format!("{scheme}://{authority}{path}"),
            authority,
            upstream_authorization,
            labels: d.labels,
            recording,
        })
    }
}

/// Whether a destination's sessions are recorded: Kubernetes `exec` and
/// `attach` are, unless `record: false`.
fn recording(name: &str, kind: &Kind, record: Option<bool>, on_full: Option<&str>) -> anyhow::Result<Option<OnFull>> {
    let on = match (kind, record) {
        (Kind::Kubernetes(_), r) => r.unwrap_or(true),
        // SSH: recording mode, where the connector terminates SSH, and so
        // must know sshd's host key: without it, anyone between the
        // connector and sshd could read and change the session.
        (Kind::Ssh(ssh), r) => {
            let on = r.unwrap_or(false);
            if on && ssh.host_key_file.is_none() {
                bail!(
                    "destination {name}: recording mode needs hostKeyFile (sshd's public key, which the connector checks when it logs in), or sshdDir for the default /etc/ssh/ssh_host_ed25519_key.pub"
                );
            }
            on
        }
        (_, None | Some(false)) => false,
        (_, Some(true)) => {
            bail!("destination {name}: 'record' is for kinds kubernetes (exec and attach) and ssh (recording mode)")
        }
    };
    let policy = match on_full {
        None => OnFull::RefuseNewSessions,
        Some(s) => OnFull::parse(s).with_context(|| {
            format!("destination {name}: onFull '{s}' is not one of refuse-new-sessions, allow-unrecorded")
        })?,
    };
    if !on && on_full.is_some() {
        bail!("destination {name}: onFull applies only to a recorded destination");
    }
    Ok(on.then_some(policy))
}

/// The `Authorization` header a destination sends upstream, if any.
fn upstream_authorization(name: &str, auth: Option<UpstreamAuth>) -> anyhow::Result<Option<String>> {
    Ok(match auth {
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
            name
        ),
    })
}

/// Two SSH hosts in one sshdDir would overwrite each other's files.
pub(super) fn check_sshd_dirs(destinations: &[Destination]) -> anyhow::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for d in destinations {
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
    Ok(())
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

    #[test]
    fn recording_mode_needs_sshds_host_key() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let record = |yaml: &str| {
            let c = ssh(yaml).map_err(|e| e.to_string())?;
            recording("host1", &Kind::Ssh(c), Some(true), None).map_err(|e| format!("{e:#}"))
        };
        let e = record("address: a:22\n").unwrap_err();
        assert!(e.contains("recording mode needs hostKeyFile"), "{e}");
        let with_key = format!("address: a:22\nhostKeyFile: {}\n", key.path().display());
        assert_eq!(record(&with_key), Ok(Some(OnFull::RefuseNewSessions)));
    }
}
