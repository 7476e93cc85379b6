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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use infra_tunnel::Body;
use infra_tunnel::proto::{AccessEvent, Inventory, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::SshConfig;
use crate::decide::Identity;
use crate::state::{State, now_ms};

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
    let mut snapshots = state.subscribe_snapshots();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        if let Some(s) = snap
            && let Err(e) = write_files(&dir, &destination, &s, cfg.reload.as_deref())
        {
            tracing::warn!(destination = %destination, dir = %dir.display(), error = %format!("{e:#}"), "cannot update sshd files");
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// Why an SSH session's relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// sshd or the client closed the connection.
    Closed,
    /// The user's access was revoked while the session was open.
    Revoked,
}

impl SessionEnd {
    /// The `reason=` word in the audit detail.
    fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::Revoked => "revoked",
        }
    }

    fn outcome(self) -> infra_tunnel::proto::Outcome {
        match self {
            SessionEnd::Closed => infra_tunnel::proto::Outcome::Success,
            SessionEnd::Revoked => infra_tunnel::proto::Outcome::Denied,
        }
    }
}

/// For each login granted on `destination`, the user ids holding it now
/// (group grants through the pushed memberships).
fn granted_logins(s: &Snapshot, destination: &str, now: i64) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in s
        .grants
        .iter()
        .filter(|g| g.resource == destination && g.expires_at.is_none_or(|e| e > now))
    {
        let users = out.entry(g.role.clone()).or_default();
        if g.subject_kind == infra_tunnel::proto::SubjectKind::Group {
            users.extend(
                s.memberships
                    .iter()
                    .filter(|(group, _)| *group == g.subject_id)
                    .map(|(_, user)| user.clone()),
            );
        } else {
            users.insert(g.subject_id.clone());
        }
    }
    out.retain(|_, users| !users.is_empty());
    out
}

fn write_files(dir: &Path, destination: &str, s: &Snapshot, reload: Option<&str>) -> anyhow::Result<()> {
    let principals = dir.join("principals");
    std::fs::create_dir_all(&principals).with_context(|| format!("create {}", principals.display()))?;
    // Principals first: a revocation must reach sshd even if another file
    // cannot be written.
    let logins = granted_logins(s, destination, now_ms());
    for (login, users) in &logins {
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
        if !logins.contains_key(&name) && !name.starts_with(".tmp") {
            std::fs::remove_file(entry.path()).with_context(|| format!("remove {}", entry.path().display()))?;
            tracing::info!(destination, login = %name, "login no longer granted: sshd will refuse it");
        }
    }
    write_if_changed(&dir.join("sshd_config"), &sshd_snippet(destination, dir))?;
    if !s.ssh.user_ca.is_empty() {
        write_if_changed(&dir.join("user_ca.pub"), &(s.ssh.user_ca.join("\n") + "\n"))?;
    }
    if let Some(cert) = s.ssh.host_certs.get(destination).and_then(|c| c.first())
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

/// One tunneled SSH session: connect to sshd, then copy both ways until
/// either side ends or access is revoked. The bytes are SSH's own,
/// encrypted end to end between the client and sshd.
pub(crate) async fn session(
    state: Arc<State>,
    destination: String,
    cfg: SshConfig,
    ident: Identity,
    source: String,
    (cancel, active_id): (CancellationToken, Option<u64>),
    req: Request<Incoming>,
) -> Result<Response<Body>, (u16, String)> {
    let started = Instant::now();
    let connected = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&cfg.address)).await;
    let tcp = match connected {
        Ok(Ok(t)) => t,
        failed => {
            if let Some(id) = active_id {
                state.untrack(id);
            }
            return Err(match failed {
                Ok(Err(e)) => (
                    502,
                    format!("cannot reach sshd of {destination} at {}: {e}", cfg.address),
                ),
                _ => (
                    504,
                    format!("sshd of {destination} at {} did not answer in 10 s", cfg.address),
                ),
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let record = {
        let (state, destination, email, source) = (state.clone(), destination.clone(), ident.email.clone(), source);
        move |result: infra_tunnel::proto::Outcome, detail: String| {
            state.spool.record(AccessEvent {
                seq: 0,
                time_ms: now_ms(),
                user: email.clone(),
                destination: destination.clone(),
                source: source.clone(),
                result,
                detail,
            });
        }
    };
    record(
        infra_tunnel::proto::Outcome::Success,
        format!(
            "session start sshd={} roles={} connector={}",
            cfg.address,
            ident.roles.join(","),
            state.settings.name
        ),
    );
    let (mut rd, mut wr) = tcp.into_split();
    let (bytes_in, bytes_out) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut body = req.into_body();
    let counted_in = bytes_in.clone();
    let up = tokio::spawn(async move {
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            if let Ok(d) = frame.into_data() {
                counted_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                if wr.write_all(&d).await.is_err() {
                    return;
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    let counted_out = bytes_out.clone();
    let down = async move {
        let mut buf = bytes::BytesMut::new();
        loop {
            buf.reserve(infra_tunnel::body::READ_CHUNK);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    counted_out.fetch_add(n as u64, Ordering::Relaxed);
                    if tx.send(buf.split().freeze()).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let st = state.clone();
    tokio::spawn(async move {
        let ended = tokio::select! {
            () = down => SessionEnd::Closed,
            () = cancel.cancelled() => SessionEnd::Revoked,
        };
        up.abort();
        if let Some(id) = active_id {
            st.untrack(id);
        }
        record(
            ended.outcome(),
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
