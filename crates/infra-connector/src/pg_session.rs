//! One PostgreSQL client session through the connector: the client is
//! already authenticated (its Infra token was checked on the stream that
//! carries it); the connector answers the startup, logs in upstream as the
//! user's own login role, then relays messages both ways, auditing each
//! query with its outcome, until either side ends or access is revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use infra_proto_pg::drive::{Driven, LOGIN_TIMEOUT, drive};
use infra_proto_pg::login::{CancelKey, StartupReader, Transport};
use infra_proto_pg::{MAX_MESSAGE, error_response, frame};
use infra_tunnel::proto::Outcome;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::admit::Admitted;
use crate::audit::Audit;
use crate::config::PgConfig;
use crate::pg_audit::Audit as QueryAudit;
use crate::pg_roles::{Lease, Roles};
use crate::pg_upstream::{self, PgError};
use crate::route::Target;
use infra_auth::decide::Identity;

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
    pub(crate) destination: String,
    pub(crate) cfg: PgConfig,
    pub(crate) roles: Arc<Roles>,
    pub(crate) ident: Identity,
    pub(crate) audit: Audit,
    pub(crate) cancel: CancellationToken,
}

/// How long the database gets to take a cancel.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Forwards a CancelRequest to the database and audits it: the one path
/// for cancels, tunnelled or direct.
pub(crate) async fn cancel_query(audit: &Audit, cfg: &PgConfig, key: CancelKey) {
    let send = async {
        let mut s = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        s.write_all(&infra_proto_pg::cancel_request(key.pid, key.secret))
            .await?;
        s.shutdown().await
    };
    let outcome = match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
        Ok(Ok(())) => "sent".to_owned(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => format!("failed: no answer within {}s", CANCEL_TIMEOUT.as_secs()),
    };
    audit.record(Outcome::Success, format!("cancel request pid={} {outcome}", key.pid));
}

impl Session {
    /// The session of an admitted stream to a database.
    pub(crate) fn new(a: &Admitted) -> Option<Self> {
        let Target::Pg { cfg, roles } = &a.route.target else {
            return None;
        };
        Some(Self {
            destination: a.route.name.clone(),
            cfg: cfg.clone(),
            roles: roles.clone(),
            ident: a.ident.clone(),
            audit: a.audit.clone(),
            cancel: a.watch.token().clone(),
        })
    }

    fn record(&self, result: Outcome, detail: String) {
        self.audit.record(result, detail);
    }

    /// Serves the session on `io` (the client's bytes both ways), from its
    /// startup packet. The stream is already protected to the client's
    /// Infra end, so requests for encryption are declined.
    pub(crate) async fn serve<S>(self, mut io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let started = Instant::now();
        let mut startup = StartupReader::new(Transport::Tunnel);
        let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
        match drive(&mut io, &mut startup, deadline).await {
            Ok(Driven::Done(s)) => self.run(io, s.params, BytesMut::from(&s.leftover[..]), started).await,
            Ok(Driven::Cancel(key)) => cancel_query(&self.audit, &self.cfg, key).await,
            Ok(Driven::Refused(f)) => self.record(Outcome::Denied, format!("bad startup packet: {}", f.message)),
            Ok(Driven::TlsRequested) | Err(_) => {}
        }
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
                    Outcome::Failure,
                    format!("session refused database={database} error={code} {msg}"),
                );
                return;
            }
        };
        let login = lease.name().to_owned();
        self.record(
            Outcome::Success,
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
            Outcome::Success,
            format!(
                "session end database={database} login_role={login} bytes_in={up_bytes} bytes_out={down_bytes} duration_ms={} ended={}",
                started.elapsed().as_millis(),
                ended.as_str()
            ),
        );
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
                    Outcome::Failure,
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
        let audit = std::sync::Mutex::new(QueryAudit::new(self.cfg.keep_parameters));
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
                    self.record(e.outcome, e.detail);
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
                // The role may no longer log in before the client hears that
                // the session is over: a client that reconnects at once
                // must not find it open.
                if let Err(e) = self.roles.disable(&self.ident.email).await {
                    tracing::warn!(destination = %self.destination, user = %self.ident.email, error = %e, "cannot disable the login role");
                }
                let msg = "your access to this database was revoked; the session is closed";
                let _ = cw.write_all(&error_response("FATAL", "57P01", msg)).await;
            }
            Ended::Protocol(e) => {
                let _ = cw.write_all(&error_response("FATAL", "08P01", e)).await;
                self.record(Outcome::Denied, format!("protocol violation: {e}"));
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
            self.record(e.outcome, e.detail);
        }
        (ended, bytes_in.into_inner(), bytes_out.into_inner())
    }
}

/// Takes the whole messages at the front of `buf` (each is looked at by
/// the audit), leaving a partial one for later; an invalid frame is an
/// error that ends the session.
fn take_frames(buf: &mut BytesMut, audit: &mut QueryAudit) -> Result<Option<BytesMut>, String> {
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

/// Also the helpers of `pg_direct`'s tests.
#[cfg(test)]
pub(crate) mod tests;
