//! `infra ssh`, `infra ssh-proxy` and the SSH config `infra login` writes.
//!
//! A key pair is made on this machine (`~/.infra/ssh/id_ed25519`, 0600)
//! and never leaves it; the server certifies its public key for one host
//! and the logins granted there, for at most an hour. The system `ssh`
//! then logs in with that certificate and trusts the host by Infra's host
//! CA (an `@cert-authority` line in `~/.infra/ssh/known_hosts`), so there
//! is no first-use prompt and a host Infra did not certify is refused.
//! Hosts without a public address are reached through the gateway and
//! the connector's tunnel with `infra ssh-proxy` as the `ProxyCommand`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use infra_api::{Info, SshCertRequest, SshCertResponse};
use serde::{Deserialize, Serialize};

use crate::client::Api;
use crate::config;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  infra ssh host1                    # a shell on host1 (your only login there)
  infra ssh host1 -l deploy          # as login 'deploy'
  infra ssh host1 -- uname -a        # run a command
After 'infra login', plain ssh, scp, rsync and git work too: ssh host1.")]
pub struct SshArgs {
    /// The SSH host (see 'infra list').
    destination: String,
    /// The login to use; needed when you are granted more than one on the host.
    #[arg(short = 'l', long)]
    login: Option<String>,
    /// Go through the Infra gateway even if the host can be reached directly.
    #[arg(long)]
    tunnel: bool,
    /// A remote command and its arguments.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
For ssh's ProxyCommand; 'infra login' writes it into ~/.ssh/infra/config:
  ssh -o ProxyCommand='infra ssh-proxy %h %p' host1")]
pub struct SshProxyArgs {
    /// The SSH host (destination name).
    destination: String,
    /// The port ssh asks for; the connector knows where sshd listens, so it is not used.
    port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct SshCertArgs {
    /// The SSH host whose certificate to renew if it expires soon.
    destination: String,
}

/// What is cached next to a host's certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertMeta {
    logins: Vec<String>,
    valid_before: u64,
    direct_address: Option<String>,
}

/// A certificate is renewed when less than this is left, so a session
/// never starts with one about to lapse.
const RENEW_BEFORE_SECS: u64 = 120;

pub(crate) fn ssh_dir() -> anyhow::Result<PathBuf> {
    Ok(config::dir()?.join("ssh"))
}

struct Paths {
    key: PathBuf,
    public: PathBuf,
    cert: PathBuf,
    meta: PathBuf,
    known_hosts: PathBuf,
}

fn paths(destination: &str) -> anyhow::Result<Paths> {
    let d = ssh_dir()?;
    Ok(Paths {
        key: d.join("id_ed25519"),
        public: d.join("id_ed25519.pub"),
        cert: d.join(format!("{destination}-cert.pub")),
        meta: d.join(format!("{destination}.json")),
        known_hosts: d.join("known_hosts"),
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The public key, making the key pair on first use.
fn public_key(p: &Paths) -> anyhow::Result<String> {
    if let (Ok(public), true) = (std::fs::read_to_string(&p.public), p.key.exists()) {
        return Ok(public.trim().to_owned());
    }
    let dir = p.key.parent().context("key directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let user = config::load_config()?
        .and_then(|c| c.user)
        .unwrap_or_else(|| "infra".into());
    let (private, public) = infra_auth::ssh_ca::client_key(&format!("{user} (infra)"))?;
    config::write_private(&p.key, private.expose().as_bytes())?;
    config::write_private(&p.public, format!("{public}\n").as_bytes())?;
    Ok(public)
}

/// A certificate for `destination` valid for at least a while more:
/// the cached one, or a new one from the server.
async fn ensure_cert(destination: &str, wanted: Option<&str>) -> anyhow::Result<CertMeta> {
    // The name goes into file names and the ssh config: nothing but a
    // destination name will do.
    if destination.is_empty()
        || !destination
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        anyhow::bail!("{destination:?} is not a destination name ('infra list' shows your hosts)");
    }
    let p = paths(destination)?;
    // A cached certificate serves unless it lacks the login asked for (a
    // grant made since).
    if let Some(meta) = cached(&p).filter(|m| wanted.is_none_or(|w| m.logins.iter().any(|l| l == w))) {
        return Ok(meta);
    }
    let public = public_key(&p)?;
    let api = Api::from_login()?;
    let resp: SshCertResponse = api
        .post(
            "/api/ssh/certificates",
            &SshCertRequest {
                destination: destination.to_owned(),
                public_key: public,
                logins: Vec::new(),
                ttl_seconds: None,
            },
        )
        .await?;
    if let Some(a) = &resp.direct_address {
        check_address(a)?;
    }
    config::write_private(&p.cert, format!("{}\n", resp.certificate).as_bytes())?;
    write_known_hosts(&p.known_hosts, &resp.host_ca)?;
    let meta = CertMeta {
        logins: resp.logins,
        valid_before: resp.valid_before,
        direct_address: resp.direct_address,
    };
    config::write_private(&p.meta, &serde_json::to_vec_pretty(&meta)?)?;
    Ok(meta)
}

fn cached(p: &Paths) -> Option<CertMeta> {
    let meta: CertMeta = serde_json::from_slice(&std::fs::read(&p.meta).ok()?).ok()?;
    let cert = infra_auth::ssh_ca::parse_certificate(&std::fs::read_to_string(&p.cert).ok()?).ok()?;
    let public = std::fs::read_to_string(&p.public).ok()?;
    let same_key = cert.public_key() == infra_auth::ssh_ca::parse_allowed_key(&public).ok()?.key_data();
    (same_key && p.key.exists() && cert.valid_before() > now_secs() + RENEW_BEFORE_SECS).then_some(meta)
}

/// Trust for hosts: Infra's host CA keys, for every host name. Only ssh
/// runs that name this file trust it; they also set `HostKeyAlias` to the
/// destination, which is the name in each host certificate.
fn write_known_hosts(path: &Path, host_ca: &[String]) -> anyhow::Result<()> {
    let mut s = String::from("# Written by infra: the host CA of your Infra server.\n");
    for k in host_ca {
        s.push_str(&format!("@cert-authority * {k}\n"));
    }
    config::write_private(path, s.as_bytes())
}

fn pick_login(destination: &str, meta: &CertMeta, wanted: Option<&str>) -> anyhow::Result<String> {
    match wanted {
        Some(l) if meta.logins.iter().any(|g| g == l) => Ok(l.to_owned()),
        Some(l) => anyhow::bail!(
            "you are not granted login '{l}' on {destination}; you may use: {} (ask an admin for another: infra grants add EMAIL {destination} --role {l})",
            meta.logins.join(", ")
        ),
        None => match meta.logins.as_slice() {
            [one] => Ok(one.clone()),
            many => anyhow::bail!(
                "you may log in to {destination} as {}: choose one with -l LOGIN",
                many.join(", ")
            ),
        },
    }
}

fn infra_exe() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("find the infra binary")?;
    let s = exe.to_string_lossy().into_owned();
    // ssh reads '%' as a token and '"' ends a quoted word in its config.
    if s.contains(['"', '\n']) {
        anyhow::bail!("the infra binary's path {s:?} cannot be written into an ssh config; move it");
    }
    Ok(s.replace('%', "%%"))
}

/// A direct address from the server is `host:port` with a plain host:
/// it is written into ssh configs, where anything else could add options.
fn check_address(a: &str) -> anyhow::Result<()> {
    let ok = a.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty()
            && p.parse::<u16>().is_ok()
            && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c))
    });
    if !ok {
        anyhow::bail!(
            "the server gave {a:?} as the host's address, which is not host:port; ask an admin to check the connector's publicAddress"
        );
    }
    Ok(())
}

/// A value for an ssh option: quoted when it has spaces (ssh splits words).
fn ssh_value(v: &str) -> anyhow::Result<String> {
    if v.contains(['"', '\n']) {
        anyhow::bail!("{v:?} cannot be written into an ssh option");
    }
    Ok(if v.contains(' ') {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    })
}

/// Quotes for the shell ssh runs a ProxyCommand with.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The ssh options that make a session use Infra's key, certificate and
/// host trust, and (without a direct address) the tunnel.
fn ssh_options(destination: &str, p: &Paths, direct: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let mut o = vec![
        ("IdentityFile".to_owned(), p.key.display().to_string()),
        ("CertificateFile".into(), p.cert.display().to_string()),
        ("IdentitiesOnly".into(), "yes".into()),
        ("IdentityAgent".into(), "none".into()),
        ("UserKnownHostsFile".into(), p.known_hosts.display().to_string()),
        ("GlobalKnownHostsFile".into(), "/dev/null".into()),
        ("StrictHostKeyChecking".into(), "yes".into()),
        ("HostKeyAlias".into(), destination.to_owned()),
        ("CheckHostIP".into(), "no".into()),
        ("UpdateHostKeys".into(), "no".into()),
    ];
    match direct {
        Some(addr) => {
            let (host, port) = addr.rsplit_once(':').context("direct address is host:port")?;
            o.push(("HostName".into(), host.trim_matches(['[', ']']).to_owned()));
            o.push(("Port".into(), port.to_owned()));
        }
        None => o.push((
            "ProxyCommand".into(),
            format!("{} ssh-proxy {} %p", sh_quote(&infra_exe()?), destination),
        )),
    }
    Ok(o)
}

pub(crate) async fn ssh(a: SshArgs) -> anyhow::Result<()> {
    let meta = ensure_cert(&a.destination, a.login.as_deref()).await?;
    let login = pick_login(&a.destination, &meta, a.login.as_deref())?;
    let p = paths(&a.destination)?;
    let direct = meta.direct_address.as_deref().filter(|_| !a.tunnel);
    let mut cmd = std::process::Command::new("ssh");
    for (k, v) in ssh_options(&a.destination, &p, direct)? {
        let v = if k == "ProxyCommand" { v } else { ssh_value(&v)? };
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd.arg("-l").arg(&login).arg(&a.destination);
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    Err(e).context("run ssh (is the OpenSSH client installed? apt-get install openssh-client)")
}

/// `ProxyCommand`: stdin and stdout become a stream to the host's sshd
/// through the gateway and the connector.
pub(crate) async fn proxy(a: SshProxyArgs) -> anyhow::Result<()> {
    let _ = a.port;
    let t = crate::proxy::gateway_target(&a.destination, "ssh", "an SSH host").await?;
    let token = crate::tokens::token_for(&a.destination).await?.token;
    let stream = match crate::proxy::open_stream(&t, &token).await? {
        Ok(s) => s,
        Err(r) => anyhow::bail!("{}", r.message),
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Standard input and output are blocking pipes or sockets from ssh:
    // one thread each moves them, the runtime moves the stream.
    let (up_tx, mut up_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if up_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (down_tx, mut down_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        while let Some(b) = down_rx.blocking_recv() {
            if stdout.write_all(&b).and_then(|()| stdout.flush()).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(b) = up_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if down_tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(down_tx);
    let _ = writer.join();
    // The stdin thread may be blocked in read(); the session is over.
    std::process::exit(0);
}

/// `infra ssh-cert HOST`: renews the certificate if needed (ssh runs it
/// from a `Match exec` line before it reads the certificate).
pub(crate) async fn cert(a: SshCertArgs) -> anyhow::Result<()> {
    ensure_cert(&a.destination, None).await.map(|_| ())
}

const CONFIG_HEADER: &str = "# Written by 'infra login'; 'infra logout' removes it. Do not edit: it is rewritten.\n";
const INCLUDE_COMMENT: &str = "# Added by 'infra login': SSH hosts you reach through Infra.";

fn ssh_config_paths() -> anyhow::Result<(PathBuf, PathBuf)> {
    let home = dirs::home_dir().context("cannot find your home directory; set HOME")?;
    let ssh = home.join(".ssh");
    Ok((ssh.join("infra").join("config"), ssh.join("config")))
}

/// After login: a certificate for each granted SSH host, and
/// `~/.ssh/infra/config` with a `Host` block for each. `include`: add the
/// `Include` line to `~/.ssh/config` (Some(true)), leave it (Some(false)),
/// or ask when there is a terminal (None).
pub(crate) async fn write_after_login(info: &Info, include: Option<bool>) -> anyhow::Result<()> {
    let (path, user_config) = ssh_config_paths()?;
    let hosts: Vec<&String> = info
        .kinds
        .iter()
        .filter(|(_, k)| k.as_str() == "ssh")
        .map(|(d, _)| d)
        .collect();
    if hosts.is_empty() {
        return remove_config();
    }
    let exe = sh_quote(&infra_exe()?);
    let mut out = String::from(CONFIG_HEADER);
    let mut written = Vec::new();
    for host in hosts {
        let meta = match ensure_cert(host, None).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("warning: SSH host {host} left out of ~/.ssh/infra/config: {e:#}");
                continue;
            }
        };
        let p = paths(host)?;
        out.push_str(&format!("\nHost {host}\n"));
        if let [one] = meta.logins.as_slice()
            && one.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            out.push_str(&format!("    User {one}\n"));
        }
        for (k, v) in ssh_options(host, &p, meta.direct_address.as_deref())? {
            let v = if k == "ProxyCommand" { v } else { ssh_value(&v)? };
            out.push_str(&format!("    {k} {v}\n"));
        }
        // Runs before ssh reads the certificate: renews it when it is
        // about to expire, so plain ssh keeps working all session long.
        out.push_str(&format!("Match originalhost {host} exec \"{exe} ssh-cert {host}\"\n"));
        written.push(host.clone());
    }
    let dir = path.parent().context("ssh config directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    config::write_private(&path, out.as_bytes())?;
    eprintln!("SSH: wrote hosts {} to {}", written.join(", "), path.display());
    let line = format!("Include {}", ssh_value(&path.display().to_string())?);
    let current = std::fs::read_to_string(&user_config).unwrap_or_default();
    if current.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let add = match include {
        Some(v) => v,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            eprint!(
                "Add '{line}' to {} so plain ssh, scp and git reach them? [Y/n] ",
                user_config.display()
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            !answer.trim().to_lowercase().starts_with('n')
        }
        None => false,
    };
    if add {
        // At the top: an Include after a Host block would apply only there.
        let new = format!("{INCLUDE_COMMENT}\n{line}\n\n{current}");
        config::write_private(&user_config, new.as_bytes())?;
        eprintln!("SSH: added '{line}' to {}", user_config.display());
    } else {
        eprintln!(
            "SSH: for plain ssh, put this line at the top of {}:\n  {line}\n  (or log in with --ssh-include); 'infra ssh HOST' works either way",
            user_config.display()
        );
    }
    Ok(())
}

/// Removes `~/.ssh/infra/config` and the `Include` line login added.
pub(crate) fn remove_config() -> anyhow::Result<()> {
    let (path, user_config) = ssh_config_paths()?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    if let Ok(current) = std::fs::read_to_string(&user_config) {
        let line = format!("Include {}", ssh_value(&path.display().to_string()).unwrap_or_default());
        if current.lines().any(|l| l.trim() == line) {
            let kept: Vec<&str> = current
                .lines()
                .filter(|l| l.trim() != line && *l != INCLUDE_COMMENT)
                .collect();
            let mut text = kept.join("\n").trim_start_matches('\n').to_owned();
            if !text.is_empty() {
                text.push('\n');
            }
            config::write_private(&user_config, text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_choice() {
        let m = CertMeta {
            logins: vec!["deploy".into(), "root".into()],
            valid_before: 0,
            direct_address: None,
        };
        assert_eq!(pick_login("h", &m, Some("root")).unwrap(), "root");
        let e = pick_login("h", &m, None).unwrap_err().to_string();
        assert!(e.contains("deploy, root") && e.contains("-l"), "{e}");
        let e = pick_login("h", &m, Some("nobody")).unwrap_err().to_string();
        assert!(e.contains("not granted login 'nobody'"), "{e}");
        let one = CertMeta {
            logins: vec!["root".into()],
            ..m
        };
        assert_eq!(pick_login("h", &one, None).unwrap(), "root");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/usr/bin/infra"), "'/usr/bin/infra'");
        assert_eq!(sh_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
