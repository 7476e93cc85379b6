//! One PostgreSQL client session through the connector: the client is
//! already authenticated (its Infra token was checked on the stream that
//! carries it); the connector answers the startup, logs in upstream as the
//! user's own login role, then relays messages both ways, auditing each
//! query with its outcome, until either side ends or access is revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use infra_proto_pg::{MAX_MESSAGE, Startup, error_response, frame, parse_startup};
use infra_tunnel::proto::AccessEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::PgConfig;
use crate::decide::Identity;
use crate::pg_audit::Audit;
use crate::pg_roles::{Lease, Roles};
use crate::pg_upstream::{self, PgError};
use crate::state::{State, now_ms};

/// Startup parameters passed on to the database; the rest (`user`,
/// `options`, `replication`, ...) are the connector's to decide.
const PASSED_PARAMS: [&str; 7] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
];

/// Why a session's relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    ClientClosed,
    DatabaseClosed,
    Revoked,
    /// The client sent something that is not a PostgreSQL message.
    Protocol(String),
}

impl Ended {
    fn as_str(&self) -> &'static str {
        match self {
            Ended::ClientClosed => "client closed",
            Ended::DatabaseClosed => "database closed",
            Ended::Revoked => "access revoked",
            Ended::Protocol(_) => "protocol violation",
        }
    }
}

/// SQLSTATEs of a refused login: `invalid_password` (the password was
/// changed, by the user from a session or by another connector) and
/// `invalid_authorization_specification` (the role was set NOLOGIN).
const LOGIN_REFUSED: [&str; 2] = ["28P01", "28000"];

/// Who and where, for the audit events of one session.
pub(crate) struct Session {
    pub(crate) state: Arc<State>,
    pub(crate) destination: String,
    pub(crate) cfg: PgConfig,
    pub(crate) roles: Arc<Roles>,
    pub(crate) ident: Identity,
    pub(crate) source: String,
    pub(crate) cancel: CancellationToken,
}

impl Session {
    fn record(&self, result: infra_tunnel::proto::Outcome, detail: String) {
        self.state.spool.record(AccessEvent {
            seq: 0,
            time_ms: now_ms(),
            user: self.ident.email.clone(),
            destination: self.destination.clone(),
            source: self.source.clone(),
            result,
            detail,
        });
    }

    /// Serves the session on `io` (the client's bytes both ways).
    pub(crate) async fn serve<S>(self, mut io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let started = Instant::now();
        let mut buf = BytesMut::with_capacity(8192);
        let params = loop {
            match read_startup(&mut io, &mut buf).await {
                Ok(Some(Startup::Ssl | Startup::GssEnc)) => {
                    // The stream is already TLS to the client's Infra end.
                    if io.write_all(b"N").await.is_err() {
                        return;
                    }
                }
                Ok(Some(Startup::Cancel { pid, secret })) => {
                    self.cancel_query(pid, secret).await;
                    return;
                }
                Ok(Some(Startup::Startup { params })) => break params,
                Ok(None) => return,
                Err(e) => {
                    let _ = io.write_all(&error_response("FATAL", "08P01", &e)).await;
                    self.record(infra_tunnel::proto::Outcome::Denied, format!("bad startup packet: {e}"));
                    return;
                }
            }
        };
        self.run(io, params, buf, started).await;
    }

    /// The session after its startup packet (`params`); `buf` holds any
    /// bytes the client sent after it.
    pub(crate) async fn run<S>(self, mut io: S, params: Vec<(String, String)>, buf: BytesMut, started: Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        // libpq names the database after the user when none is given: then
        // the connector's default database is meant.
        let database = get("database")
            .filter(|d| !d.is_empty() && Some(*d) != get("user"))
            .unwrap_or(&self.cfg.database)
            .to_owned();
        let roles = self.ident.roles.clone();
        let (lease, upstream) = match self.login(&database, &params).await {
            Ok(v) => v,
            Err(e) => {
                let (code, msg) = match &e {
                    PgError::Server { code, message } => (code.as_str(), message.clone()),
                    other => ("08006", format!("cannot reach database {}: {other}", self.destination)),
                };
                let _ = io.write_all(&error_response("FATAL", code, &msg)).await;
                self.record(
                    infra_tunnel::proto::Outcome::Failure,
                    format!("session refused database={database} error={code} {msg}"),
                );
                return;
            }
        };
        let login = lease.name().to_owned();
        self.record(
            infra_tunnel::proto::Outcome::Success,
            format!(
                "session start database={database} login_role={login} granted={} client_app={}",
                roles.join(","),
                get("application_name").unwrap_or("")
            ),
        );
        let (ended, up_bytes, down_bytes) = if io.write_all(&upstream.greeting).await.is_err() {
            (Ended::ClientClosed, 0, 0)
        } else {
            self.relay(io, buf, upstream).await
        };
        self.record(
            infra_tunnel::proto::Outcome::Success,
            format!(
                "session end database={database} login_role={login} bytes_in={up_bytes} bytes_out={down_bytes} duration_ms={} ended={}",
                started.elapsed().as_millis(),
                ended.as_str()
            ),
        );
        if ended == Ended::Revoked
            && let Err(e) = self.roles.disable(&self.ident.email).await
        {
            tracing::warn!(destination = %self.destination, user = %self.ident.email, error = %e, "cannot disable the login role");
        }
        // The last session of the role: it may no longer log in.
        lease.end().await;
    }

    /// Logs in upstream as the user's login role. A refused login (the
    /// user set their own password from a session, or another connector
    /// reset it) re-establishes the role with a new password and tries
    /// once more.
    async fn login(
        &self,
        database: &str,
        params: &[(String, String)],
    ) -> Result<(Lease, pg_upstream::Connected), PgError> {
        let mut fresh = false;
        loop {
            let (lease, password, guard) = self
                .roles
                .ensure(&self.ident.email, &self.ident.user_id, &self.ident.roles, fresh)
                .await?;
            let mut up: Vec<(&str, &str)> = vec![("user", lease.name()), ("database", database)];
            for (k, v) in params {
                if PASSED_PARAMS.contains(&k.as_str()) {
                    up.push((k, v));
                }
            }
            let r = pg_upstream::connect(&self.cfg.host, self.cfg.port, &up, &password).await;
            drop(guard);
            match r {
                Ok(c) => return Ok((lease, c)),
                Err(PgError::Server { code, message }) if !fresh && LOGIN_REFUSED.contains(&code.as_str()) => {
                    // Worth an event: the usual cause is a user who set
                    // their own role's password.
                    self.record(
                        infra_tunnel::proto::Outcome::Failure,
                        format!(
                            "login as {} refused ({code} {message}); giving the role a new password and trying once more",
                            lease.name()
                        ),
                    );
                    lease.end().await;
                    fresh = true;
                }
                Err(e) => {
                    lease.end().await;
                    return Err(e);
                }
            }
        }
    }

    pub(crate) async fn cancel_query(&self, pid: i32, secret: i32) {
        let r = async {
            let mut s = tokio::net::TcpStream::connect((self.cfg.host.as_str(), self.cfg.port)).await?;
            s.write_all(&infra_proto_pg::cancel_request(pid, secret)).await?;
            s.shutdown().await
        }
        .await;
        let outcome = match r {
            Ok(()) => "sent".to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        self.record(
            infra_tunnel::proto::Outcome::Success,
            format!("cancel request pid={pid} {outcome}"),
        );
    }

    /// Messages both ways until one side ends or access is revoked; returns
    /// why it ended and the bytes each way. Each direction runs on its own,
    /// so a client that pipelines while the database answers never stalls
    /// either; both see the audit, which is never held across an await.
    async fn relay<S>(&self, io: S, client_buf: BytesMut, upstream: pg_upstream::Connected) -> (Ended, u64, u64)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (mut cr, mut cw) = tokio::io::split(io);
        let (mut ur, mut uw) = upstream.stream.into_split();
        let audit = std::sync::Mutex::new(Audit::new(self.cfg.keep_parameters));
        let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
        let to_database = async {
            // Bytes that came with the startup packet are messages too.
            let mut buf = client_buf;
            loop {
                if !buf.is_empty() {
                    // The audit sees each message before the database does.
                    let taken = take_frames(&mut buf, &mut audit.lock().unwrap_or_else(|p| p.into_inner()));
                    match taken {
                        Ok(Some(chunk)) => {
                            bytes_in.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            if uw.write_all(&chunk).await.is_err() {
                                return Ended::DatabaseClosed;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => return Ended::Protocol(e),
                    }
                }
                match cr.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return Ended::ClientClosed,
                    Ok(_) => {}
                }
            }
        };
        let to_client = async {
            let mut buf = BytesMut::from(&upstream.extra[..]);
            loop {
                let mut n = 0;
                let mut events = Vec::new();
                {
                    let mut a = audit.lock().unwrap_or_else(|p| p.into_inner());
                    while let Ok(Some((tag, len))) = frame(&buf[n..], usize::MAX >> 1) {
                        events.extend(a.server(tag, &buf[n + 5..n + len]));
                        n += len;
                    }
                }
                for e in events {
                    self.record(e.outcome.into(), e.detail);
                }
                if n > 0 {
                    let chunk = buf.split_to(n);
                    bytes_out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if cw.write_all(&chunk).await.is_err() {
                        return Ended::ClientClosed;
                    }
                }
                match ur.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return Ended::DatabaseClosed,
                    Ok(_) => {}
                }
            }
        };
        let ended = tokio::select! {
            () = self.cancel.cancelled() => Ended::Revoked,
            e = to_database => e,
            e = to_client => e,
        };
        match &ended {
            Ended::Revoked => {
                let msg = "your access to this database was revoked; the session is closed";
                let _ = cw.write_all(&error_response("FATAL", "57P01", msg)).await;
            }
            Ended::Protocol(e) => {
                let _ = cw.write_all(&error_response("FATAL", "08P01", e)).await;
                self.record(infra_tunnel::proto::Outcome::Denied, format!("protocol violation: {e}"));
            }
            Ended::ClientClosed | Ended::DatabaseClosed => {}
        }
        // Statements the database got but did not answer: recorded now,
        // with an unknown outcome, never dropped.
        let in_flight = audit
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .end(ended.as_str());
        for e in in_flight {
            self.record(e.outcome.into(), e.detail);
        }
        (ended, bytes_in.into_inner(), bytes_out.into_inner())
    }
}

/// Takes the whole messages at the front of `buf` (each is looked at by
/// the audit), leaving a partial one for later; an invalid frame is an
/// error that ends the session.
fn take_frames(buf: &mut BytesMut, audit: &mut Audit) -> Result<Option<BytesMut>, String> {
    let mut n = 0;
    loop {
        match frame(&buf[n..], MAX_MESSAGE) {
            Ok(Some((tag, len))) => {
                audit.client(tag, &buf[n + 5..n + len]);
                n += len;
            }
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((n > 0).then(|| buf.split_to(n)))
}

pub(crate) async fn read_startup<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<Startup>, String> {
    loop {
        match parse_startup(buf) {
            Ok(Some((s, n))) => {
                let _ = buf.split_to(n);
                return Ok(Some(s));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
