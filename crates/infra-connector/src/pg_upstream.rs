//! The connector as a PostgreSQL client: connect and authenticate
//! (SCRAM-SHA-256, MD5 or cleartext, as the server asks), and a minimal
//! simple-query client for the admin connection that manages login roles.

use std::time::Duration;

use bytes::BytesMut;
use infra_proto_pg::{MAX_MESSAGE, error_fields, frame};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An error from the database, or from reaching it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    #[error("{message} (SQLSTATE {code})")]
    Server { code: String, message: String },
    #[error("{0}")]
    Io(String),
    #[error("unexpected answer from the database: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> Self {
        PgError::Io(e.to_string())
    }
}

/// An authenticated connection, and the messages the server sent from
/// `AuthenticationOk` up to and including the first `ReadyForQuery`
/// (parameters, the backend key), to be passed on to a client.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) greeting: Vec<u8>,
    /// Bytes read past the greeting (none in practice).
    pub(crate) extra: Vec<u8>,
}

async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Result<(u8, Vec<u8>), PgError> {
    loop {
        if let Some((tag, n)) = frame(buf, MAX_MESSAGE).map_err(|e| PgError::Protocol(e.to_string()))? {
            let m = buf.split_to(n);
            return Ok((tag, m[5..].to_vec()));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(PgError::Io("the database closed the connection".into()));
        }
    }
}

fn server_error(body: &[u8]) -> PgError {
    let (code, message) = error_fields(body);
    PgError::Server { code, message }
}

/// Connects to `host:port` as `user` and authenticates with `password`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    params: &[(&str, &str)],
    password: &str,
) -> Result<Connected, PgError> {
    let user = params
        .iter()
        .find(|(k, _)| *k == "user")
        .map(|(_, v)| *v)
        .unwrap_or_default();
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port)))
        .await
        .map_err(|_| PgError::Io(format!("connecting to {host}:{port} timed out")))??;
    s.set_nodelay(true)?;
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out)?;
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, body) = read_frame(&mut s, &mut buf).await?;
        match tag {
            b'E' => return Err(server_error(&body)),
            b'R' if body.len() >= 4 => {
                let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                out.clear();
                match code {
                    0 => break,
                    3 => frontend::password_message(password.as_bytes(), &mut out)?,
                    5 if data.len() == 4 => {
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.as_bytes(),
                            [data[0], data[1], data[2], data[3]],
                        );
                        frontend::password_message(hash.as_bytes(), &mut out)?;
                    }
                    10 => {
                        let offers_scram = data.split(|b| *b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offers_scram {
                            return Err(PgError::Protocol(
                                "the database offers no SASL mechanism Infra knows".into(),
                            ));
                        }
                        let sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response(SCRAM_SHA_256, sc.message(), &mut out)?;
                        scram = Some(sc);
                    }
                    11 => {
                        let sc = scram
                            .as_mut()
                            .ok_or_else(|| PgError::Protocol("SASL continue before SASL start".into()))?;
                        sc.update(data)?;
                        frontend::sasl_response(sc.message(), &mut out)?;
                    }
                    12 => {
                        let sc = scram
                            .as_mut()
                            .ok_or_else(|| PgError::Protocol("SASL final before SASL start".into()))?;
                        sc.finish(data)?;
                        continue;
                    }
                    other => return Err(PgError::Protocol(format!("authentication method {other}"))),
                }
                s.write_all(&out).await?;
            }
            other => {
                return Err(PgError::Protocol(format!(
                    "message '{}' during authentication",
                    char::from(other)
                )));
            }
        }
    }
    // AuthenticationOk: pass it on with everything up to ReadyForQuery.
    let mut greeting = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    loop {
        let (tag, body) = read_frame(&mut s, &mut buf).await?;
        if tag == b'E' {
            return Err(server_error(&body));
        }
        greeting.push(tag);
        greeting.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
        greeting.extend_from_slice(&body);
        if tag == b'Z' {
            break;
        }
    }
    Ok(Connected {
        stream: s,
        greeting,
        extra: buf.to_vec(),
    })
}

/// The admin connection: simple queries, rows as text.
pub(crate) struct Admin {
    stream: TcpStream,
    buf: BytesMut,
}

impl Admin {
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Self, PgError> {
        let c = connect(
            host,
            port,
            &[
                ("user", user),
                ("database", database),
                ("application_name", "infra-connector"),
            ],
            password,
        )
        .await?;
        Ok(Self {
            stream: c.stream,
            buf: BytesMut::from(&c.extra[..]),
        })
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last
    /// result, each column as text (`None` for NULL).
    pub(crate) async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.stream.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = read_frame(&mut self.stream, &mut self.buf).await?;
            match tag {
                b'T' => rows.clear(),
                b'D' => rows.push(data_row(&body)?),
                b'E' => error = Some(server_error(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }
}

fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, PgError> {
    let bad = || PgError::Protocol("malformed DataRow".into());
    let n = u16::from_be_bytes([*body.first().ok_or_else(bad)?, *body.get(1).ok_or_else(bad)?]);
    let mut at = 2usize;
    let mut row = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len_bytes = body.get(at..at + 4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        at += 4;
        if len < 0 {
            row.push(None);
            continue;
        }
        let v = body.get(at..at + len as usize).ok_or_else(bad)?;
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
        at += len as usize;
    }
    Ok(row)
}

/// `"name"` with quotes doubled: a safe SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `E'text'` with backslashes and quotes escaped: a safe string literal
/// whatever `standard_conforming_strings` says.
pub(crate) fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}
