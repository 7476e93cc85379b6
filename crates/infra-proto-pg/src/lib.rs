//! PostgreSQL wire protocol (v3) framing, as Infra needs it between a
//! client and the connector: the untyped startup packet (SSLRequest,
//! CancelRequest, StartupMessage), tagged message frames in both
//! directions, the few message bodies the audit reads (Query, Parse, Bind,
//! Execute, Close, FunctionCall, CommandComplete, ErrorResponse), and the
//! messages the connector writes itself (ErrorResponse, AuthenticationOk).
//!
//! Pure functions over byte slices: no I/O, no policy. Every length is
//! checked before it is trusted; a malformed or oversized packet is an
//! error, never a panic or an allocation of the size it claims.
//!
//! [`login`] has the start of a connection (encryption requests, the
//! startup packet, the cleartext password) as state machines with no I/O;
//! [`drive`] (feature `tokio`, on by default) is the one async loop that
//! runs them on a stream.

use thiserror::Error;

#[cfg(feature = "tokio")]
pub mod drive;
pub mod login;
mod sqlstate;

pub use sqlstate::{Fatal, SqlState};

/// `SSLRequest` code in a startup packet.
pub const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest` code in a startup packet.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// `CancelRequest` code in a startup packet.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol version 3.0.
pub const PROTOCOL_3: i32 = 196_608;
/// The largest startup packet accepted (PostgreSQL itself allows 10,000).
pub const MAX_STARTUP: usize = 10_000;
/// The largest message accepted in either direction. PostgreSQL caps most
/// messages at 1 GB; COPY data arrives in many small messages, so this is
/// far above anything a real client sends and far below what would hurt.
pub const MAX_MESSAGE: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("startup packet length {0} is out of range (8..={MAX_STARTUP})")]
    StartupLength(i64),
    #[error("unsupported protocol version {major}.{minor}; use protocol 3.0")]
    Version { major: i32, minor: i32 },
    #[error("malformed startup packet: {0}")]
    Startup(&'static str),
    #[error("message '{tag}' length {len} is out of range (4..={max})", tag = char::from(*.tag))]
    MessageLength { tag: u8, len: i64, max: usize },
    #[error("malformed '{tag}' message: {why}", tag = char::from(*.tag))]
    Body { tag: u8, why: &'static str },
}

/// The first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// The client asks for TLS.
    Ssl,
    /// The client asks for GSSAPI encryption.
    GssEnc,
    /// Cancel the query running in backend `pid` (with its `secret`).
    Cancel { pid: i32, secret: i32 },
    /// Protocol 3.0 with its parameters (`user`, `database`, ...).
    Startup { params: Vec<(String, String)> },
}

impl Startup {
    /// The value of startup parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        match self {
            Startup::Startup { params } => params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses a startup packet at the start of `buf`: `Ok(None)` when more
/// bytes are needed, else the packet and how many bytes it took.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(Startup, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i64::from(be_i32(&buf[..4]));
    if !(8..=MAX_STARTUP as i64).contains(&len) {
        return Err(WireError::StartupLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let code = be_i32(&buf[4..8]);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if body.is_empty() => Startup::Ssl,
        GSSENC_REQUEST if body.is_empty() => Startup::GssEnc,
        CANCEL_REQUEST if body.len() == 8 => Startup::Cancel {
            pid: be_i32(&body[..4]),
            secret: be_i32(&body[4..8]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => return Err(WireError::Startup("wrong length for its code")),
        PROTOCOL_3 => Startup::Startup {
            params: startup_params(body)?,
        },
        v => {
            return Err(WireError::Version {
                major: v >> 16,
                minor: v & 0xffff,
            });
        }
    };
    Ok(Some((packet, len)))
}

/// `key\0value\0...\0`: pairs of C strings ended by an empty one.
fn startup_params(mut body: &[u8]) -> Result<Vec<(String, String)>, WireError> {
    let mut out = Vec::new();
    loop {
        let (key, rest) = cstr(body).ok_or(WireError::Startup("parameter name is not terminated"))?;
        if key.is_empty() {
            if !rest.is_empty() {
                return Err(WireError::Startup("bytes after the parameters"));
            }
            return Ok(out);
        }
        let (value, rest) = cstr(rest).ok_or(WireError::Startup("parameter value is not terminated"))?;
        if out.len() >= 64 {
            return Err(WireError::Startup("too many parameters"));
        }
        out.push((key.to_owned(), value.to_owned()));
        body = rest;
    }
}

/// A NUL-terminated UTF-8 string at the start of `b`, and what follows.
fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&b[..end]).ok()?;
    Some((s, &b[end + 1..]))
}

/// A tagged message at the start of `buf`: `Ok(None)` when more bytes are
/// needed, else its tag and its whole length (tag and length included).
pub fn frame(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i64::from(be_i32(&buf[1..5]));
    if len < 4 || len > max as i64 {
        return Err(WireError::MessageLength { tag, len, max });
    }
    let total = len as usize + 1;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((tag, total)))
}

/// A NUL-terminated byte string at the start of `b`, whatever its
/// encoding (the client's `client_encoding` decides it), and what follows.
fn cbytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

/// The SQL of a simple `Query` ('Q') message body, as bytes in the
/// client's encoding: everything up to the first NUL (or the whole body if
/// it has none, which the database refuses). Never an error, because the
/// audit must show whatever reached the database.
pub fn query_bytes(body: &[u8]) -> &[u8] {
    cbytes(body).map_or(body, |(q, _)| q)
}

/// The statement name and SQL of a `Parse` ('P') message body, as bytes.
pub fn parse_message(body: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let bad = WireError::Body {
        tag: b'P',
        why: "statement name or query is not NUL-terminated",
    };
    let (name, rest) = cbytes(body).ok_or(bad.clone())?;
    let (q, _) = cbytes(rest).ok_or(bad)?;
    Ok((name, q))
}

/// Parameter values as the wire carries them: `None` for NULL.
fn values(
    b: &[u8],
    mut at: usize,
    n: i16,
    bad: impl Fn(&'static str) -> WireError,
) -> Result<Vec<Option<&[u8]>>, WireError> {
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = b.get(at..at + 4).map(be_i32).ok_or(bad("parameter length"))?;
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = len as usize;
        out.push(Some(b.get(at..at + len).ok_or(bad("parameter value"))?));
        at += len;
    }
    Ok(out)
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    b.get(at..at + 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
}

/// Skips a count of format codes (Int16 n, then n Int16) at `at`.
fn skip_formats(b: &[u8], at: usize, bad: impl Fn(&'static str) -> WireError) -> Result<usize, WireError> {
    let n = i16_at(b, at).ok_or(bad("format count"))?;
    let n = usize::try_from(n).map_err(|_| bad("negative format count"))?;
    Ok(at + 2 + 2 * n)
}

/// What a `Bind` message says: portal, statement (names as bytes),
/// parameter values (`None` for NULL).
pub type Bind<'a> = (&'a [u8], &'a [u8], Vec<Option<&'a [u8]>>);

/// Portal, statement and parameter values of a `Bind` ('B') message body.
pub fn bind(body: &[u8]) -> Result<Bind<'_>, WireError> {
    let bad = |why| WireError::Body { tag: b'B', why };
    let (portal, rest) = cbytes(body).ok_or(bad("portal name"))?;
    let (statement, rest) = cbytes(rest).ok_or(bad("statement name"))?;
    let at = skip_formats(rest, 0, bad)?;
    let nparams = i16_at(rest, at).ok_or(bad("parameter count"))?;
    let params = values(rest, at + 2, nparams, bad)?;
    Ok((portal, statement, params))
}

/// The portal of an `Execute` ('E' from the client) message body, as bytes.
pub fn execute_portal(body: &[u8]) -> Option<&[u8]> {
    cbytes(body).map(|(p, _)| p)
}

/// What a `Close` ('C' from the client) message closes: `S` for a
/// prepared statement or `P` for a portal, and its name.
pub fn close_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    cbytes(rest).map(|(name, _)| (kind, name))
}

/// A `FunctionCall` ('F') message: the function's OID and its arguments
/// (`None` for NULL). The protocol's fast path: it runs a function with no
/// SQL text at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    pub oid: u32,
    pub args: Vec<Option<&'a [u8]>>,
}

/// The function and arguments of a `FunctionCall` ('F') message body.
pub fn function_call(body: &[u8]) -> Result<FunctionCall<'_>, WireError> {
    let bad = |why| WireError::Body { tag: b'F', why };
    let oid = body
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(bad("function OID"))?;
    let at = skip_formats(body, 4, bad)?;
    let nargs = i16_at(body, at).ok_or(bad("argument count"))?;
    let args = values(body, at + 2, nargs, bad)?;
    Ok(FunctionCall { oid, args })
}

/// The command tag of a `CommandComplete` ('C') message body.
pub fn command_tag(body: &[u8]) -> Option<&str> {
    cstr(body).map(|(t, _)| t)
}

/// SQLSTATE and message of an `ErrorResponse` ('E') body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut b = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, rest)) = cstr(rest) else { break };
        match field {
            b'C' => code = value.to_owned(),
            b'M' => message = value.to_owned(),
            _ => {}
        }
        b = rest;
    }
    (code, message)
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An `ErrorResponse` with severity `FATAL` (the connection ends) or
/// `ERROR`, a SQLSTATE `code` and a message for the user.
pub fn error_response(severity: &str, code: &str, msg: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', msg)] {
        body.push(field);
        body.extend_from_slice(value.replace('\0', " ").as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// `AuthenticationCleartextPassword`: the client sends its password (the
/// Infra token), over TLS.
pub fn auth_cleartext() -> Vec<u8> {
    message(b'R', &3i32.to_be_bytes())
}

/// The password of a `PasswordMessage` ('p') body.
pub fn password(body: &[u8]) -> Result<&str, WireError> {
    match cstr(body) {
        Some((p, [])) => Ok(p),
        _ => Err(WireError::Body {
            tag: b'p',
            why: "password is not one NUL-terminated UTF-8 string",
        }),
    }
}

/// A `StartupMessage` (protocol 3.0) with `params`, as a client sends it.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A `CancelRequest` packet.
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut out = 16u32.to_be_bytes().to_vec();
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&secret.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let m = startup_message(&[("user", "alice"), ("database", "app")]);
        let (s, n) = parse_startup(&m).unwrap().unwrap();
        assert_eq!(n, m.len());
        assert_eq!(s.param("database"), Some("app"));
        assert_eq!(s.param("user"), Some("alice"));
        // Byte by byte: never a result before the whole packet is there.
        for i in 0..m.len() {
            assert_eq!(parse_startup(&m[..i]).unwrap(), None, "{i}");
        }
    }

    #[test]
    fn special_startup_packets() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse_startup(&ssl).unwrap(), Some((Startup::Ssl, 8)));
        let c = cancel_request(42, -7);
        assert_eq!(
            parse_startup(&c).unwrap(),
            Some((Startup::Cancel { pid: 42, secret: -7 }, 16))
        );
    }

    #[test]
    fn absurd_startup_packets_are_errors() {
        for bad in [
            vec![0xff, 0xff, 0xff, 0xff],                                    // negative length
            vec![0x7f, 0xff, 0xff, 0xff],                                    // 2 GB
            vec![0, 0, 0, 3],                                                // shorter than its header
            vec![0, 0, 0, 8, 0, 2, 0, 0],                                    // protocol 2.0
            vec![0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2f, 1, 2, 3, 4],           // SSLRequest with a body
            [&[0, 0, 0, 10][..], &PROTOCOL_3.to_be_bytes(), b"ab"].concat(), // unterminated
        ] {
            assert!(parse_startup(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames() {
        let q = message(b'Q', b"select 1\0");
        assert_eq!(frame(&q, MAX_MESSAGE).unwrap(), Some((b'Q', q.len())));
        assert_eq!(frame(&q[..q.len() - 1], MAX_MESSAGE).unwrap(), None);
        assert_eq!(query_bytes(&q[5..]), b"select 1");
        assert!(frame(&[b'Q', 0, 0, 0, 3], MAX_MESSAGE).is_err());
        assert!(frame(&[b'Q', 0x7f, 0, 0, 0], 1024).is_err());
        // Whatever the bytes, the audit gets them: not UTF-8, unterminated.
        assert_eq!(query_bytes(b"select 'caf\xe9'\0"), b"select 'caf\xe9'");
        assert_eq!(query_bytes(b"no terminator"), b"no terminator");
        assert_eq!(query_bytes(b"a\0b\0"), b"a");
        assert_eq!(
            parse_message(b"s1\0select $1\0\0\0").unwrap(),
            (&b"s1"[..], &b"select $1"[..])
        );
        assert_eq!(
            parse_message(b"\xff\0select '\xe9'\0\0\0").unwrap(),
            (&b"\xff"[..], &b"select '\xe9'"[..])
        );
        assert!(parse_message(b"s1\0unterminated").is_err());
        assert_eq!(close_target(b"Ss1\0"), Some((b'S', &b"s1"[..])));
        assert_eq!(execute_portal(b"p\0\0\0\0\0"), Some(&b"p"[..]));
    }

    #[test]
    fn binds() {
        // portal "", statement "s", 1 format (text), 2 params: "42", NULL.
        let body = [
            &b"\0s\0"[..],
            &[0, 1, 0, 0],
            &[0, 2],
            &[0, 0, 0, 2],
            b"42",
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0],
        ]
        .concat();
        let (portal, st, params) = bind(&body).unwrap();
        assert_eq!((portal, st), (&b""[..], &b"s"[..]));
        assert_eq!(params, vec![Some(&b"42"[..]), None]);
        assert!(bind(&body[..body.len() - 7]).is_err());
        assert!(bind(&[&b"\0s\0"[..], &[0xff, 0xff]].concat()).is_err());
    }

    #[test]
    fn function_calls() {
        // OID 953, one format (text), one argument "ab", result text.
        let body = [
            &[0, 0, 3, 0xb9][..],
            &[0, 1, 0, 0],
            &[0, 1],
            &[0, 0, 0, 2],
            b"ab",
            &[0, 0],
        ]
        .concat();
        let f = function_call(&body).unwrap();
        assert_eq!(f.oid, 953);
        assert_eq!(f.args, vec![Some(&b"ab"[..])]);
        // A NULL argument and no format codes.
        let null = [
            &[0xff, 0xff, 0xff, 0xfe][..],
            &[0, 0],
            &[0, 1],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0],
        ]
        .concat();
        let f = function_call(&null).unwrap();
        assert_eq!((f.oid, f.args), (u32::MAX - 1, vec![None]));
        for cut in 0..body.len() - 2 {
            assert!(function_call(&body[..cut]).is_err(), "{cut}");
        }
        assert!(function_call(&[0, 0, 0, 1, 0xff, 0xff]).is_err());
    }

    /// What the fuzz target (fuzz/fuzz_targets/fuzz_pg_startup.rs) runs, on a million
    /// pseudo-random inputs, mostly mutations of valid messages, so every
    /// CI run exercises the parsers on garbage too.
    #[test]
    fn garbage_never_panics() {
        let seeds = [
            startup_message(&[("user", "alice"), ("database", "app")]),
            cancel_request(1, 2),
            message(b'Q', b"select 1\0"),
            message(b'P', b"s\0select $1\0\0\x01\0\0\0\x17"),
            [
                &b"B"[..],
                &[0, 0, 0, 20],
                b"\0s\0",
                &[0, 1, 0, 0],
                &[0, 1],
                &[0, 0, 0, 2],
                b"42",
                &[0, 0],
            ]
            .concat(),
            error_response("ERROR", "42501", "permission denied"),
            message(
                b'F',
                &[
                    &[0, 0, 3, 0xb9][..],
                    &[0, 1, 0, 0],
                    &[0, 1],
                    &[0, 0, 0, 2],
                    b"ab",
                    &[0, 0],
                ]
                .concat(),
            ),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..1_000_000u32 {
            let mut data = seeds[i as usize % seeds.len()].clone();
            for _ in 0..(rnd() % 4) {
                let r = rnd();
                match r % 3 {
                    0 if !data.is_empty() => {
                        let at = (r >> 8) as usize % data.len();
                        data[at] = (r >> 32) as u8;
                    }
                    1 => data.truncate((r >> 8) as usize % (data.len() + 1)),
                    _ => data.push((r >> 8) as u8),
                }
            }
            let _ = parse_startup(&data);
            let mut at = 0;
            while let Ok(Some((tag, len))) = frame(&data[at..], MAX_MESSAGE) {
                let body = &data[at + 5..at + len];
                let _ = (query_bytes(body), parse_message(body), bind(body), password(body));
                let _ = (execute_portal(body), command_tag(body), error_fields(body), tag);
                let _ = (function_call(body), close_target(body));
                at += len;
            }
        }
    }

    #[test]
    fn errors_read_back() {
        let e = error_response("FATAL", "28000", "no grant on db");
        let (tag, n) = frame(&e, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!((tag, n), (b'E', e.len()));
        assert_eq!(error_fields(&e[5..]), ("28000".to_owned(), "no grant on db".to_owned()));
        assert_eq!(command_tag(b"SELECT 1\0"), Some("SELECT 1"));
    }
}
