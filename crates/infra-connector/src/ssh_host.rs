//! SSH hosts: what sshd needs to trust Infra's certificates (kept up to
//! date in one directory the connector owns), and the relay for sessions
//! that come through the tunnel as `infra-tcp/1` streams.
//!
//! The connector never edits `sshd_config` itself: it writes a snippet in
//! its directory for the admin to `Include` once (or prints it with
//! `--print-sshd-config`). In that directory it keeps:
//!
//! - `user_ca.pub`: the user CA keys (`TrustedUserCAKeys`);
//! - `principals/<login>`: the one principal that may log in as `<login>`
//!   on this host, `infra:<host>:<login>`, for each granted login only
//!   (`AuthorizedPrincipalsFile`); a login nobody is granted has no file,
//!   so sshd refuses every certificate for it;
//! - `host-cert.pub`: the host key's certificate from the host CA
//!   (`HostCertificate`), renewed every day;
//! - `sshd_config`: those three lines.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{Request, Response};
use hyper::body::Incoming;
use infra_core::{Resource, Role};
use infra_tunnel::Body;
use infra_tunnel::proto::{Inventory, Outcome};

use crate::admit::Admitted;
use crate::clock::now_ms;
use crate::config::SshConfig;
use crate::route::Target;
use crate::state::{Pushed, State};

/// The sshd_config lines that make sshd use the files in `dir`.
pub(crate) fn sshd_snippet(destination: &str, dir: &Path) -> String {
    format!(
        "# Written by infra connector for SSH host {destination}. Include this file from\n\
         # /etc/ssh/sshd_config (Include {d}/sshd_config) and reload sshd once.\n\
         TrustedUserCAKeys {d}/user_ca.pub\n\
         AuthorizedPrincipalsFile {d}/principals/%u\n\
         HostCertificate {d}/host-cert.pub\n",
        d = dir.display()
    )
}

/// The host's public key line, as the connector reports it for a host
/// certificate; None (and a warning) if it cannot be read.
pub(crate) fn host_key(destination: &str, cfg: &SshConfig) -> Option<String> {
    let path = cfg.host_key_file.as_ref()?;
    match std::fs::read_to_string(path) {
        Ok(s) => s.lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()),
        Err(e) => {
            tracing::warn!(destination, file = %path.display(), error = %e, "cannot read the SSH host key: no host certificate");
            None
        }
    }
}

/// Keeps `cfg.sshd_dir` in step with each pushed snapshot, and tells the
/// server which certificate extensions this host allows.
pub(crate) async fn run(state: Arc<State>, destination: String, cfg: SshConfig) {
    state.set_inventory(Inventory {
        destination: destination.clone(),
        ssh_extensions: cfg.allow.clone(),
        ..Default::default()
    });
    let Some(dir) = cfg.sshd_dir.clone() else { return };
    let recorder_ca = state.ssh_recorders.get(&destination).map(|k| k.ca_public());
    let mut snapshots = state.subscribe_snapshots();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        if let Some(s) = snap
            && let Err(e) = write_files(&dir, &destination, &s, cfg.reload.as_deref(), recorder_ca.as_deref())
        {
            tracing::warn!(destination = %destination, dir = %dir.display(), error = %format!("{e:#}"), "cannot update sshd files");
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// `recorder_ca`: in recording mode, the connector's own CA, which sshd
/// then trusts instead of Infra's (its per-session certificates carry the
/// same principals).
fn write_files(
    dir: &Path,
    destination: &str,
    pushed: &Pushed,
    reload: Option<&str>,
    recorder_ca: Option<&str>,
) -> anyhow::Result<()> {
    let s = &pushed.snapshot;
    let principals = dir.join("principals");
    std::fs::create_dir_all(&principals).with_context(|| format!("create {}", principals.display()))?;
    // Principals first: a revocation must reach sshd even if another file
    // cannot be written.
    let resource = Resource::parse(destination).context("destination name")?;
    let logins = pushed.grants.logins_for(&resource, now_ms());
    for (login, users) in &logins {
        let login = login.as_str();
        // Login names come from grants (validated role names); refuse any
        // that could leave the directory all the same.
        if login.contains('/') || login.starts_with('.') {
            continue;
        }
        let lines: String = users
            .iter()
            .map(|u| format!("{}\n", infra_auth::ssh_ca::principal(destination, login, u)))
            .collect();
        write_if_changed(&principals.join(login), &lines)?;
    }
    for entry in std::fs::read_dir(&principals)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let granted = Role::parse(&name).is_ok_and(|r| logins.contains_key(&r));
        if !granted && !name.starts_with(".tmp") {
            std::fs::remove_file(entry.path()).with_context(|| format!("remove {}", entry.path().display()))?;
            tracing::info!(destination, login = %name, "login no longer granted: sshd will refuse it");
        }
    }
    let mut snippet = sshd_snippet(destination, dir);
    if recorder_ca.is_some() {
        // Only the connector connects, and it checks sshd's key itself.
        snippet = snippet
            .lines()
            .filter(|l| !l.starts_with("HostCertificate"))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    write_if_changed(&dir.join("sshd_config"), &snippet)?;
    let cas = match recorder_ca {
        // Recording mode: sshd trusts the recorder only, so an Infra
        // certificate taken straight to sshd (bypassing the recorder) is
        // refused; every session is recorded.
        Some(ca) => vec![ca.to_owned()],
        None => s.ssh.user_ca.clone(),
    };
    if !cas.is_empty() {
        write_if_changed(&dir.join("user_ca.pub"), &(cas.join("\n") + "\n"))?;
    }
    // In recording mode the host certificate is the connector's own.
    if let Some(cert) = s.ssh.host_certs.get(destination).and_then(|c| c.first())
        && recorder_ca.is_none()
        && write_if_changed(&dir.join("host-cert.pub"), &format!("{cert}\n"))?
        && let Some(cmd) = reload
    {
        // OpenSSH 9.8 and later load host certificates only at start or
        // SIGHUP; older ones read them at each connection.
        match std::process::Command::new("sh").arg("-c").arg(cmd).status() {
            Ok(st) if st.success() => tracing::info!(destination, "new host certificate; sshd reloaded"),
            Ok(st) => tracing::warn!(destination, command = cmd, %st, "sshd reload command failed"),
            Err(e) => tracing::warn!(destination, command = cmd, error = %e, "cannot run the sshd reload command"),
        }
    }
    Ok(())
}

/// Atomically replaces `path` (mode 0644, as sshd wants) if its content
/// differs; says whether it did.
fn write_if_changed(path: &Path, content: &str) -> anyhow::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{name}"));
    std::fs::write(&tmp, content).with_context(|| format!("write {}", tmp.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(true)
}

/// What `--print-sshd-config` shows for each SSH destination.
pub(crate) fn print_setup(destination: &str, cfg: &SshConfig) -> String {
    let dir = cfg.sshd_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    let mut out = format!("## SSH host {destination} (sshd at {})\n", cfg.address);
    out.push_str(&sshd_snippet(destination, &dir));
    if cfg.sshd_dir.is_none() {
        out.push_str(&format!(
            "# sshdDir is not set: the connector does not keep {} up to date. Set sshdDir: {} on the\n\
             # connector that runs on this host, or copy the files there yourself.\n",
            dir.display(),
            dir.display()
        ));
    }
    out
}

pub(crate) const DEFAULT_DIR: &str = "/etc/ssh/infra";

/// Why an SSH session's relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Either side closed.
    Closed,
    /// Access was revoked.
    Revoked,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::Revoked => "revoked",
        }
    }
}

/// One tunneled SSH session: connect to sshd, then copy both ways until
/// either side ends or access is revoked. The bytes are SSH's own,
/// encrypted end to end between the client and sshd.
pub(crate) async fn session(a: Admitted, req: Request<Incoming>) -> Result<Response<Body>, (u16, String)> {
    let Target::Ssh(cfg) = &a.route.target else {
        return Err((500, "not an SSH host".into()));
    };
    let destination = &a.route.name;
    let started = Instant::now();
    let connected = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&cfg.address)).await;
    let tcp = match connected {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return Err((
                502,
                format!("cannot reach sshd of {destination} at {}: {e}", cfg.address),
            ));
        }
        Err(_) => {
            return Err((
                504,
                format!("sshd of {destination} at {} did not answer in 10 s", cfg.address),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    a.audit.record(
        Outcome::Success,
        format!(
            "session start sshd={} roles={} connector={}",
            cfg.address,
            a.ident.roles.join(","),
            a.state.settings.name
        ),
    );
    let (rd, wr) = tcp.into_split();
    let (bytes_in, bytes_out) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counted_in = bytes_in.clone();
    let tasks = a.state.tasks.clone();
    let up = tasks.spawn(infra_tunnel::body::body_to_writer_counted(
        req.into_body(),
        wr,
        move |n| {
            counted_in.fetch_add(n as u64, Ordering::Relaxed);
        },
    ));
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    let counted_out = bytes_out.clone();
    let down = infra_tunnel::body::reader_to_channel_counted(rd, tx, move |n| {
        counted_out.fetch_add(n as u64, Ordering::Relaxed);
    });
    tasks.spawn(async move {
        let ended = tokio::select! {
            () = down => Ended::Closed,
            () = a.watch.token().cancelled() => Ended::Revoked,
        };
        up.abort();
        let outcome = match ended {
            Ended::Closed => Outcome::Success,
            Ended::Revoked => Outcome::Denied,
        };
        a.audit.record(
            outcome,
            format!(
                "session end reason={} bytes_in={} bytes_out={} duration_ms={}",
                ended.as_str(),
                bytes_in.load(Ordering::Relaxed),
                bytes_out.load(Ordering::Relaxed),
                started.elapsed().as_millis()
            ),
        );
    });
    Ok(Response::new(infra_tunnel::boxed(rx)))
}
