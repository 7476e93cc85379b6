//! SSH recording mode, the connection: the connector is the SSH server the
//! user's ssh talks to (russh), and an SSH client of the host's sshd. Each
//! channel the user opens is opened on sshd too; its requests (pty, shell,
//! exec, subsystem, window changes, environment) and its data are passed
//! on, and recorded on the way (`infra_record::ssh`).
//!
//! `streams::ssh` sends a recorded host's sessions here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use infra_record::ssh::{Direction, SshRecorder, Start};
use russh::keys::ssh_key::{Certificate, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, client};

use super::tape::Tape;
use super::{RecorderKeys, check_user_cert};
use crate::clock::now_ms;
use crate::recording::{Admission, Writing};

/// How long logging in to sshd may take.
const UPSTREAM_LOGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// sshd, as the connector's client sees it.
pub(crate) struct Sshd {
    /// The host key sshd must present, when configured (`hostKeyFile`).
    expected: Option<PublicKey>,
}

impl client::Handler for Sshd {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(match (&self.expected, key) {
            (None, _) => true,
            (Some(want), russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }) => {
                key.key_data() == want.key_data()
            }
            (Some(want), russh::keys::PublicKeyOrCertificate::Certificate(c)) => c.public_key() == want.key_data(),
        })
    }
}

/// One user's connection.
pub(crate) struct Front {
    pub(crate) destination: String,
    pub(crate) user_id: String,
    pub(crate) user_cas: Vec<String>,
    /// The logins the stream was admitted with (the user's roles here).
    logins: Vec<String>,
    pub(crate) sshd_address: String,
    pub(crate) keys: Arc<RecorderKeys>,
    pub(crate) tape: Arc<Mutex<Tape>>,
    upstream: Option<client::Handle<Sshd>>,
    channels: HashMap<ChannelId, russh::ChannelWriteHalf<client::Msg>>,
    login: Option<String>,
    /// The user's certificate allows port forwarding (sshd checks the
    /// recorder's certificate too, which says the same).
    forwarding: bool,
    /// The user's certificate allows a terminal.
    pty: bool,
    /// Channels that have started a shell, command, subsystem or
    /// forwarding: each starts once (a second request would relabel what
    /// runs, and sshd ignores it anyway).
    started: HashSet<ChannelId>,
}

impl Front {
    pub(crate) fn new(
        destination: String,
        user_id: String,
        user_cas: Vec<String>,
        logins: Vec<String>,
        sshd_address: String,
        keys: Arc<RecorderKeys>,
        tape: Arc<Mutex<Tape>>,
    ) -> Self {
        Self {
            destination,
            user_id,
            user_cas,
            logins,
            sshd_address,
            keys,
            tape,
            upstream: None,
            channels: HashMap::new(),
            login: None,
            forwarding: false,
            pty: false,
            started: HashSet::new(),
        }
    }

    fn record(&self, events: Vec<infra_record::asciicast::Event>) -> Result<(), russh::Error> {
        let mut t = self.tape.lock().map_err(|_| russh::Error::Disconnect)?;
        t.put(events).map_err(|why| {
            tracing::warn!(destination = %self.destination, reason = %why, "ending a recorded SSH session");
            russh::Error::Disconnect
        })
    }

    fn recorder<R>(&self, f: impl FnOnce(&mut SshRecorder) -> R) -> Result<R, russh::Error> {
        let mut t = self.tape.lock().map_err(|_| russh::Error::Disconnect)?;
        Ok(f(&mut t.rec))
    }

    /// Logs in to sshd as `login` with a certificate of the recorder's,
    /// carrying the permissions of the user's `user_cert`.
    async fn connect_upstream(&mut self, login: &str, user_cert: &Certificate) -> anyhow::Result<()> {
        tokio::time::timeout(UPSTREAM_LOGIN, self.login_upstream(login, user_cert))
            .await
            .map_err(|_| anyhow::anyhow!("sshd at {} did not answer within {UPSTREAM_LOGIN:?}", self.sshd_address))?
    }

    async fn login_upstream(&mut self, login: &str, user_cert: &Certificate) -> anyhow::Result<()> {
        let tcp = tokio::net::TcpStream::connect(&self.sshd_address).await?;
        let _ = tcp.set_nodelay(true);
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect_stream(
            config,
            tcp,
            Sshd {
                expected: self.keys.sshd.clone(),
            },
        )
        .await?;
        let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)?;
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let cert = self.keys.sign_login(
            key.public_key(),
            &self.destination,
            login,
            &self.user_id,
            user_cert,
            now,
        )?;
        let ok = handle.authenticate_openssh_cert(login, Arc::new(key), cert).await?;
        anyhow::ensure!(ok.success(), "sshd refused the recorder's certificate for {login}");
        self.upstream = Some(handle);
        self.login = Some(login.to_owned());
        if let Ok(mut t) = self.tape.lock()
            && let Some(out) = t.out.as_mut()
        {
            out.describe(|m| m.target = login.to_owned());
        }
        Ok(())
    }

    /// Opens `start`'s channel on sshd for the user's `channel`, and
    /// passes what sshd sends back, recorded, until it closes.
    async fn open_upstream(
        &mut self,
        channel: &Channel<Msg>,
        handle: russh::server::Handle,
        direct: Option<(String, u32, String, u32)>,
    ) -> Result<bool, russh::Error> {
        let Some(up) = self.upstream.as_ref() else {
            return Ok(false);
        };
        let opened = match &direct {
            None => up.channel_open_session().await,
            Some((host, port, oh, op)) => up.channel_open_direct_tcpip(host.clone(), *port, oh.clone(), *op).await,
        };
        let Ok(upstream) = opened else { return Ok(false) };
        let id = channel.id();
        if let Some((host, port, ..)) = direct {
            self.started.insert(id);
            let at = now_ms();
            let events = self.recorder(|r| r.start(u32::from(id), at, Start::DirectTcpip { host, port }))?;
            self.record(events)?;
        }
        let (mut read, write) = upstream.split();
        self.channels.insert(id, write);
        let tape = self.tape.clone();
        tokio::spawn(async move {
            while let Some(msg) = read.wait().await {
                let at = now_ms();
                let (events, forwarded) = {
                    let Ok(mut t) = tape.lock() else { return };
                    match &msg {
                        ChannelMsg::Data { data } => {
                            (t.rec.data(u32::from(id), at, Direction::FromServer, false, data), true)
                        }
                        ChannelMsg::ExtendedData { data, .. } => {
                            (t.rec.data(u32::from(id), at, Direction::FromServer, true, data), true)
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            (t.rec.exit(u32::from(id), at, format!("exit {exit_status}")), true)
                        }
                        ChannelMsg::Close => (t.rec.close(u32::from(id), at), true),
                        _ => (Vec::new(), true),
                    }
                };
                let failed = tape.lock().map(|mut t| t.put(events).is_err()).unwrap_or(true);
                if failed {
                    let _ = handle.close(id).await;
                    return;
                }
                // Recorded, then passed on.
                let sent = match msg {
                    ChannelMsg::Data { data } => handle.data(id, data).await.is_ok(),
                    ChannelMsg::ExtendedData { data, ext } => handle.extended_data(id, ext, data).await.is_ok(),
                    ChannelMsg::ExitStatus { exit_status } => handle.exit_status_request(id, exit_status).await.is_ok(),
                    ChannelMsg::Eof => handle.eof(id).await.is_ok(),
                    ChannelMsg::Close => {
                        let _ = handle.close(id).await;
                        return;
                    }
                    _ => forwarded,
                };
                if !sent {
                    return;
                }
            }
            let _ = handle.close(id).await;
        });
        Ok(true)
    }
}

impl russh::server::Handler for Front {
    type Error = russh::Error;

    async fn auth_openssh_certificate(&mut self, user: &str, certificate: &Certificate) -> Result<Auth, Self::Error> {
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        if let Err(why) = check_user_cert(certificate, &self.user_cas, &self.destination, user, &self.user_id, now) {
            tracing::info!(destination = %self.destination, login = user, reason = %why, "SSH certificate refused");
            return Ok(Auth::reject());
        }
        // A certificate outlives a grant: the login must be granted now,
        // as the stream was admitted.
        if !self.logins.iter().any(|l| l == user) {
            tracing::info!(destination = %self.destination, login = user, "SSH certificate refused: the login is not granted now");
            return Ok(Auth::reject());
        }
        self.forwarding = super::permits(certificate, "permit-port-forwarding");
        self.pty = super::permits(certificate, "permit-pty");
        if let Err(e) = self.connect_upstream(user, certificate).await {
            tracing::warn!(destination = %self.destination, login = user, error = %format!("{e:#}"), "cannot log in to sshd for a recorded session");
            return Ok(Auth::reject());
        }
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let handle = session.handle();
        if self.open_upstream(&channel, handle, None).await? {
            reply.accept().await;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.forwarding {
            tracing::info!(destination = %self.destination, "port forwarding refused: the user's certificate does not allow it");
            return Ok(());
        }
        let direct = Some((
            host_to_connect.to_owned(),
            port_to_connect,
            originator_address.to_owned(),
            originator_port,
        ));
        let handle = session.handle();
        if self.open_upstream(&channel, handle, direct).await? {
            reply.accept().await;
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.pty {
            session.channel_failure(channel)?;
            return Ok(());
        }
        let at = now_ms();
        let events = self.recorder(|r| r.size(at, col_width, row_height))?;
        self.record(events)?;
        if let Some(up) = self.channels.get(&channel) {
            up.request_pty(false, term, col_width, row_height, pix_width, pix_height, modes)
                .await?;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let at = now_ms();
        let events = self.recorder(|r| r.size(at, col_width, row_height))?;
        self.record(events)?;
        if let Some(up) = self.channels.get(&channel) {
            up.window_change(col_width, row_height, pix_width, pix_height).await?;
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let at = now_ms();
        let event = self.recorder(|r| r.env(at, variable_name, variable_value))?;
        self.record(vec![event])?;
        if let Some(up) = self.channels.get(&channel) {
            up.set_env(false, variable_name, variable_value).await?;
        }
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.start(channel, Start::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Start::Exec(command), session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, Start::Subsystem(name.to_owned()), session).await
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], _session: &mut Session) -> Result<(), Self::Error> {
        let at = now_ms();
        let events = self.recorder(|r| r.data(u32::from(channel), at, Direction::FromClient, false, data))?;
        self.record(events)?;
        if let Some(up) = self.channels.get(&channel) {
            up.data_bytes(bytes::Bytes::copy_from_slice(data)).await?;
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(up) = self.channels.get(&channel) {
            up.eof().await?;
        }
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(up) = self.channels.remove(&channel) {
            let _ = up.close().await;
        }
        Ok(())
    }
}

impl Front {
    /// A shell, command or subsystem on `channel`: recorded, then asked of
    /// sshd; the user hears sshd's answer.
    async fn start(&mut self, channel: ChannelId, what: Start, session: &mut Session) -> Result<(), russh::Error> {
        if !self.channels.contains_key(&channel) || !self.started.insert(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        let at = now_ms();
        let events = self.recorder(|r| r.start(u32::from(channel), at, what.clone()))?;
        self.record(events)?;
        if let Start::Exec(command) | Start::Subsystem(command) = &what
            && let Ok(mut t) = self.tape.lock()
            && let Some(out) = t.out.as_mut()
            && out.meta().command.is_empty()
        {
            // The first command names the recording.
            out.describe(|m| m.command = command.clone());
        }
        let Some(up) = self.channels.get(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let asked = match what {
            Start::Shell => up.request_shell(true).await,
            Start::Exec(c) => up.exec(true, c).await,
            Start::Subsystem(s) => up.request_subsystem(true, s).await,
            Start::DirectTcpip { .. } => Ok(()),
        };
        match asked {
            Ok(()) => session.channel_success(channel)?,
            Err(_) => session.channel_failure(channel)?,
        }
        Ok(())
    }
}

/// A session to a host in recording mode: the user's SSH connection
/// arrives as the stream's bytes and is served here; the recording runs
/// from the connection's start to its end.
pub(crate) async fn serve(
    a: crate::admit::Admitted,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<infra_tunnel::Body>, (u16, String)> {
    let crate::route::Target::Ssh(cfg) = &a.route.target else {
        return Err((500, "not an SSH host".into()));
    };
    let destination = a.route.name.clone();
    let Some(keys) = a.state.ssh_recorders.get(&destination).cloned() else {
        return Err((500, "no recorder keys for this host".into()));
    };
    let Some(pushed) = a.state.subscribe_snapshots().borrow().clone() else {
        return Err((
            503,
            "this connector has not received its grants yet; try again shortly".into(),
        ));
    };
    let ssh = &pushed.snapshot.ssh;
    let certificates: Vec<Certificate> = ssh
        .host_certs
        .get(&destination)
        .into_iter()
        .flatten()
        .filter_map(|l| Certificate::from_openssh(l).ok())
        .collect();
    let (out, unrecorded) = admit(&a)?;
    let tape = Arc::new(Mutex::new(Tape {
        rec: SshRecorder::new(now_ms()),
        out,
        unrecorded,
    }));
    let front = Front::new(
        destination.clone(),
        a.ident.user_id.clone(),
        ssh.user_ca.clone(),
        a.ident.roles.clone(),
        cfg.address.clone(),
        keys.clone(),
        tape.clone(),
    );
    let config = Arc::new(russh::server::Config {
        keys: vec![keys.host.clone()],
        certificates,
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        auth_rejection_time: std::time::Duration::from_millis(100),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    });
    let (client_side, server_side) = tokio::io::duplex(256 * 1024);
    let (rd, wr) = tokio::io::split(client_side);
    let tasks = a.state.tasks.clone();
    // Revocation cuts the user's stream here whatever the SSH session
    // does: the pipes end with `cut`.
    let cut = tokio_util::sync::CancellationToken::new();
    tasks.spawn(until(
        cut.clone(),
        infra_tunnel::body::body_to_writer(req.into_body(), wr),
    ));
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    tasks.spawn(until(cut.clone(), infra_tunnel::body::reader_to_channel(rd, tx)));
    tasks.spawn(async move {
        let ended = match russh::server::run_stream(config, server_side, front).await {
            Ok(mut running) => {
                let handle = running.handle();
                tokio::select! {
                    r = &mut running => if r.is_ok() { "closed" } else { "error" },
                    () = a.watch.token().cancelled() => {
                        // The session runs on a task of russh's own, which
                        // dropping does not stop: tell the user why, give
                        // it a moment to go, then cut.
                        let bye = handle.disconnect(russh::Disconnect::ByApplication, "access revoked".into(), String::new());
                        let grace = std::time::Duration::from_millis(500);
                        // Neither may hold the cut back: a client that
                        // stops reading can fill russh's queue.
                        let _ = tokio::time::timeout(grace, bye).await;
                        let _ = tokio::time::timeout(grace, &mut running).await;
                        cut.cancel();
                        "revoked"
                    }
                }
            }
            Err(_) => "error",
        };
        let (bytes_in, bytes_out) = match tape.lock() {
            Ok(mut t) => {
                t.close(ended);
                (t.rec.bytes_in, t.rec.bytes_out)
            }
            Err(_) => return,
        };
        let outcome = if ended == "revoked" {
            infra_tunnel::proto::Outcome::Denied
        } else {
            infra_tunnel::proto::Outcome::Success
        };
        a.audit.record(
            outcome,
            format!("session end reason={ended} bytes_in={bytes_in} bytes_out={bytes_out}"),
        );
    });
    Ok(http::Response::new(infra_tunnel::boxed(rx)))
}

/// Runs `f` until `cut` is cancelled.
async fn until(cut: tokio_util::sync::CancellationToken, f: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = f => {}
        () = cut.cancelled() => {}
    }
}

/// Whether the admitted user's new connection may start, and the
/// recording it writes to (`None`, `true`: let run unrecorded by the
/// host's `onFull`); audited either way.
fn admit(a: &crate::admit::Admitted) -> Result<(Option<Writing>, bool), (u16, String)> {
    let destination = &a.route.name;
    let on_full = a.route.recording.unwrap_or(crate::config::OnFull::RefuseNewSessions);
    let admitted = match a.state.recordings.admit(destination, on_full) {
        Admission::Record => {
            let out = start_recording(a)?;
            let detail = format!(
                "session start recording={} connector={}",
                out.id(),
                a.state.settings.name
            );
            a.audit.record(infra_tunnel::proto::Outcome::Success, detail);
            (Some(out), false)
        }
        Admission::Refused(why) => return Err((503, why)),
        Admission::Unrecorded(why) => {
            let detail = format!("session start {why} connector={}", a.state.settings.name);
            a.audit.record(infra_tunnel::proto::Outcome::Success, detail);
            (None, true)
        }
    };
    Ok(admitted)
}

/// The recording of a new SSH connection by the admitted user.
fn start_recording(a: &crate::admit::Admitted) -> Result<Writing, (u16, String)> {
    let destination = &a.route.name;
    let meta = infra_tunnel::proto::RecordingMeta {
        kind: infra_tunnel::proto::RecordingKind::Ssh,
        user: a.ident.email.clone(),
        destination: destination.clone(),
        source: a.source.clone(),
        target: String::new(),
        command: String::new(),
        started_ms: now_ms(),
        ended_ms: None,
        bytes_in: 0,
        bytes_out: 0,
        exit: String::new(),
        truncated: false,
    };
    let title = format!("{} on {destination} (SSH)", a.ident.email);
    a.state
        .recordings
        .start(meta, title)
        .map_err(|e| (503, format!("the session cannot be recorded, so it is refused: {e:#}")))
}
