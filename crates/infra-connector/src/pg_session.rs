//! One PostgreSQL client session through the connector: the client is
//! already authenticated (its Infra token was checked on the stream that
//! carries it); the connector answers the startup, logs in upstream as the
//! user's own login role, then relays messages both ways, auditing each
//! query with its outcome, until either side ends or access is revoked.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use infra_proto_pg::{MAX_MESSAGE, Startup, error_response, frame, parse_startup};
use infra_tunnel::proto::AccessEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::PgConfig;
use crate::decide::Identity;
use crate::pg_roles::Roles;
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
/// Query text kept in an audit event.
const MAX_AUDIT_SQL: usize = 4096;

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
    fn record(&self, result: &str, detail: String) {
        self.state.spool.record(AccessEvent {
            seq: 0,
            time_ms: now_ms(),
            user: self.ident.email.clone(),
            destination: self.destination.clone(),
            source: self.source.clone(),
            result: result.into(),
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
                    self.record("denied", format!("bad startup packet: {e}"));
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
        let connected = async {
            let (login, password, guard) = self.roles.ensure(&self.ident.email, &roles).await?;
            let mut up: Vec<(&str, &str)> = vec![("user", &login), ("database", &database)];
            for (k, v) in &params {
                if PASSED_PARAMS.contains(&k.as_str()) {
                    up.push((k, v));
                }
            }
            let c = pg_upstream::connect(&self.cfg.host, self.cfg.port, &up, &password).await?;
            drop(guard);
            Ok::<_, PgError>((login, c))
        }
        .await;
        let (login, upstream) = match connected {
            Ok(v) => v,
            Err(e) => {
                let (code, msg) = match &e {
                    PgError::Server { code, message } => (code.as_str(), message.clone()),
                    other => ("08006", format!("cannot reach database {}: {other}", self.destination)),
                };
                let _ = io.write_all(&error_response("FATAL", code, &msg)).await;
                self.record(
                    "failure",
                    format!("session refused database={database} error={code} {msg}"),
                );
                return;
            }
        };
        self.record(
            "success",
            format!(
                "session start database={database} login_role={login} granted={} client_app={}",
                roles.join(","),
                get("application_name").unwrap_or("")
            ),
        );
        if io.write_all(&upstream.greeting).await.is_err() {
            return;
        }
        let (ended, up_bytes, down_bytes) = self.relay(io, buf, upstream).await;
        self.record(
            "success",
            format!(
                "session end database={database} login_role={login} bytes_in={up_bytes} bytes_out={down_bytes} duration_ms={} ended={ended}",
                started.elapsed().as_millis()
            ),
        );
        if ended == "access revoked"
            && let Err(e) = self.roles.disable(&self.ident.email).await
        {
            tracing::warn!(destination = %self.destination, user = %self.ident.email, error = %e, "cannot disable the login role");
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
        self.record("success", format!("cancel request pid={pid} {outcome}"));
    }

    /// Messages both ways until one side ends or access is revoked; returns
    /// why it ended and the bytes each way.
    async fn relay<S>(
        &self,
        io: S,
        mut client_buf: BytesMut,
        upstream: pg_upstream::Connected,
    ) -> (&'static str, u64, u64)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (mut cr, mut cw) = tokio::io::split(io);
        let (mut ur, mut uw) = upstream.stream.into_split();
        let mut audit = Audit::new(self.cfg.keep_parameters);
        let mut up_buf = BytesMut::from(&upstream.extra[..]);
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        // Bytes that came with the startup packet are messages too.
        let mut pending_client = !client_buf.is_empty();
        loop {
            if pending_client {
                pending_client = false;
                match take_frames(&mut client_buf, &mut audit) {
                    Ok(Some(chunk)) => {
                        bytes_in += chunk.len() as u64;
                        if uw.write_all(&chunk).await.is_err() {
                            return ("database closed", bytes_in, bytes_out);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = cw.write_all(&error_response("FATAL", "08P01", &e)).await;
                        self.record("denied", format!("protocol violation: {e}"));
                        return ("protocol violation", bytes_in, bytes_out);
                    }
                }
            }
            tokio::select! {
                () = self.cancel.cancelled() => {
                    let msg = "your access to this database was revoked; the session is closed";
                    let _ = cw.write_all(&error_response("FATAL", "57P01", msg)).await;
                    return ("access revoked", bytes_in, bytes_out);
                }
                r = cr.read_buf(&mut client_buf) => {
                    match r {
                        Ok(0) | Err(_) => return ("client closed", bytes_in, bytes_out),
                        Ok(_) => pending_client = true,
                    }
                }
                r = ur.read_buf(&mut up_buf) => {
                    match r {
                        Ok(0) | Err(_) => return ("database closed", bytes_in, bytes_out),
                        Ok(_) => {}
                    }
                    let mut n = 0;
                    while let Ok(Some((tag, len))) = frame(&up_buf[n..], usize::MAX >> 1) {
                        for (result, detail) in audit.server(tag, &up_buf[n + 5..n + len]) {
                            self.record(result, detail);
                        }
                        n += len;
                    }
                    if n > 0 {
                        let chunk = up_buf.split_to(n);
                        bytes_out += chunk.len() as u64;
                        if cw.write_all(&chunk).await.is_err() {
                            return ("client closed", bytes_in, bytes_out);
                        }
                    }
                }
            }
        }
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

/// Follows the conversation to audit each statement with its outcome:
/// statements are queued as the client sends them and reported when the
/// server says it is ready again.
struct Audit {
    keep_parameters: bool,
    /// Statement name → SQL, from Parse.
    prepared: HashMap<String, String>,
    /// Portal name → (SQL, parameters), from Bind.
    portals: HashMap<String, (String, String)>,
    pending: VecDeque<Pending>,
    /// Outcome of the statements since the last ReadyForQuery.
    tags: Vec<String>,
    error: Option<String>,
}

struct Pending {
    sql: String,
    params: String,
    started: Instant,
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_AUDIT_SQL {
        return s.to_owned();
    }
    let mut cut = MAX_AUDIT_SQL;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

impl Audit {
    fn new(keep_parameters: bool) -> Self {
        Self {
            keep_parameters,
            prepared: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            tags: Vec::new(),
            error: None,
        }
    }

    fn client(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Q' => {
                if let Ok(sql) = infra_proto_pg::query_text(body) {
                    self.pending.push_back(Pending {
                        sql: clip(sql),
                        params: String::new(),
                        started: Instant::now(),
                    });
                }
            }
            b'P' => {
                if let Ok((name, sql)) = infra_proto_pg::parse_text(body) {
                    if self.prepared.len() > 10_000 {
                        self.prepared.clear();
                    }
                    self.prepared.insert(name.to_owned(), clip(sql));
                }
            }
            b'B' => {
                if let Ok((portal, statement, params)) = infra_proto_pg::bind(body) {
                    let sql = self.prepared.get(statement).cloned().unwrap_or_default();
                    let shown = if self.keep_parameters {
                        let vals: Vec<String> = params
                            .iter()
                            .map(|p| match p {
                                None => "NULL".into(),
                                Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
                            })
                            .collect();
                        format!("[{}]", vals.join(", "))
                    } else {
                        format!("{} redacted", params.len())
                    };
                    self.portals.insert(portal.to_owned(), (sql, shown));
                }
            }
            b'E' => {
                if let Some(portal) = infra_proto_pg::execute_portal(body) {
                    let (sql, params) = self.portals.get(portal).cloned().unwrap_or_default();
                    self.pending.push_back(Pending {
                        sql,
                        params,
                        started: Instant::now(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Server message `tag`: returns the audit events it completes.
    fn server(&mut self, tag: u8, body: &[u8]) -> Vec<(&'static str, String)> {
        match tag {
            b'C' => {
                if let Some(t) = infra_proto_pg::command_tag(body) {
                    self.tags.push(t.to_owned());
                }
                Vec::new()
            }
            b'E' => {
                let (code, message) = infra_proto_pg::error_fields(body);
                if self.error.is_none() {
                    self.error = Some(format!("{code} {message}"));
                }
                Vec::new()
            }
            b'Z' => {
                let tags = std::mem::take(&mut self.tags).join(";");
                let error = self.error.take();
                self.pending
                    .drain(..)
                    .map(|p| {
                        let mut d = format!("query={:?}", p.sql);
                        if !p.params.is_empty() {
                            d.push_str(&format!(" params={}", p.params));
                        }
                        d.push_str(&format!(" duration_ms={}", p.started.elapsed().as_millis()));
                        match &error {
                            Some(e) => {
                                d.push_str(&format!(" error={e:?}"));
                                ("failure", d)
                            }
                            None => {
                                d.push_str(&format!(" tag={tags:?}"));
                                ("success", d)
                            }
                        }
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}
