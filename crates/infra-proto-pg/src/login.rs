//! The start of a PostgreSQL connection, server side, as state machines
//! with no I/O: bytes from the client go in through
//! [`Handshake::receive`], and [`Handshake::step`] says what to do next
//! (read more, write these bytes, switch to TLS, forward a cancel, go on
//! with the session, or refuse). One async driver runs them on a real
//! stream (`drive`); the tests run them on byte slices.
//!
//! - [`StartupReader`]: the startup packet, after answering the client's
//!   requests for encryption as the [`Transport`] allows.
//! - [`CleartextLogin`]: the same, then `AuthenticationCleartextPassword`
//!   and the client's `PasswordMessage` (for Infra, its token; only ever
//!   asked for over TLS).
//!
//! Every buffer is bounded: a startup packet or password message is at
//! most [`MAX_STARTUP`] bytes, and a length past that is refused as soon
//! as its four bytes are in.

use crate::{Fatal, MAX_STARTUP, SqlState, Startup, WireError, auth_cleartext, frame, parse_startup, password};

/// What a client that sends its startup in the clear to a listener that
/// requires TLS is told.
const REQUIRES_TLS: &str =
    "this Infra listener requires TLS: connect with sslmode=require and your Infra token as the password";

/// What already protects the connection; it decides the answer to the
/// client's SSLRequest and GSSENCRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP where TLS is required: an SSLRequest is accepted (`S`,
    /// then [`Step::TlsRequested`]); a GSSENCRequest is declined (`N`, as
    /// a server without GSSAPI does: the client then asks for TLS); a
    /// startup message sent in the clear is refused.
    TlsRequired,
    /// TLS is already up (the caller answered the SSLRequest): a startup
    /// message or a CancelRequest comes next, nothing else.
    Tls,
    /// A stream protected by another layer (an Infra tunnel): requests
    /// for encryption are declined with `N`, as a server without TLS
    /// does, and the client goes on inside the stream.
    Tunnel,
}

/// The key of a `CancelRequest`: the backend's process id and its secret.
/// The secret is the credential for the cancel, so it is never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelKey")
            .field("pid", &self.pid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The password a client sent (for Infra, its token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a handshake needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// More bytes from the client.
    NeedMore,
    /// Write these bytes to the client, then ask for the next step.
    Write(Vec<u8>),
    /// The client asked for TLS and `S` was the last write: run the TLS
    /// handshake, then call `tls_established` and go on.
    TlsRequested,
    /// The connection asks to cancel a running query and carries nothing
    /// else. PostgreSQL never answers it.
    Cancel(CancelKey),
    /// The handshake is over.
    Done(T),
    /// Refused: send the client [`Fatal::encode`] and close.
    Failed(Fatal),
}

/// A startup message: its parameters and the bytes the client sent after
/// it (pipelined messages, the session's first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub params: Vec<(String, String)>,
    pub leftover: Vec<u8>,
}

/// A client that sent its startup message and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub params: Vec<(String, String)>,
    pub password: Password,
    /// What the client sent after the password.
    pub leftover: Vec<u8>,
}

/// A handshake a driver can run: bytes in, steps out.
pub trait Handshake {
    type Done;
    /// Bytes the client sent.
    fn receive(&mut self, bytes: &[u8]);
    /// What to do next. After `Done`, `Cancel` or `Failed` the handshake
    /// is over and every further step is `Failed`.
    fn step(&mut self) -> Step<Self::Done>;
    /// What the handshake waits for, for the message of a time-out.
    fn waiting_for(&self) -> &'static str;
}

/// Reads the startup packet, answering requests for encryption first.
#[derive(Debug)]
pub struct StartupReader {
    transport: Transport,
    buf: Vec<u8>,
    state: ReaderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Reading,
    /// `S` was written; the caller runs TLS.
    AwaitTls,
    /// Bytes arrived between `S` and the end of the TLS handshake.
    Injected,
    Over,
}

/// The startup and then the password. (No `Debug`: its buffer may hold
/// the password.)
pub struct CleartextLogin {
    startup: StartupReader,
    phase: Phase,
}

enum Phase {
    Startup,
    Password {
        params: Vec<(String, String)>,
        buf: Vec<u8>,
    },
    Over,
}

fn over() -> Fatal {
    Fatal::new(SqlState::ProtocolViolation, "the login is already over")
}

fn protocol(message: impl Into<String>) -> Fatal {
    Fatal::new(SqlState::ProtocolViolation, message)
}

/// A startup packet that cannot be read. An unsupported protocol version
/// is a missing feature, as PostgreSQL reports it; the rest are
/// violations.
fn startup_error(e: &WireError) -> Fatal {
    let code = match e {
        WireError::Version { .. } => SqlState::FeatureNotSupported,
        _ => SqlState::ProtocolViolation,
    };
    Fatal::new(code, e.to_string())
}

impl StartupReader {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            buf: Vec::with_capacity(512),
            state: ReaderState::Reading,
        }
    }

    /// The TLS handshake that [`Step::TlsRequested`] asked for is done:
    /// what comes next arrives over TLS.
    pub fn tls_established(&mut self) {
        if self.state == ReaderState::AwaitTls {
            self.transport = Transport::Tls;
            self.state = ReaderState::Reading;
        }
    }

    fn fail(&mut self, f: Fatal) -> Step<Started> {
        self.state = ReaderState::Over;
        self.buf.clear();
        Step::Failed(f)
    }

    fn answer(&mut self, packet: Startup) -> Step<Started> {
        match (packet, self.transport) {
            (Startup::Cancel { pid, secret }, _) => {
                self.state = ReaderState::Over;
                Step::Cancel(CancelKey { pid, secret })
            }
            (Startup::Ssl, Transport::TlsRequired) => {
                // Bytes behind the SSLRequest came in the clear before the
                // handshake; reading them as if TLS had carried them would
                // let a man in the middle inject them (CVE-2021-23214).
                if !self.buf.is_empty() {
                    return self.fail(protocol("received unencrypted data after the SSLRequest"));
                }
                self.state = ReaderState::AwaitTls;
                Step::Write(b"S".to_vec())
            }
            (Startup::GssEnc, Transport::TlsRequired) | (Startup::Ssl | Startup::GssEnc, Transport::Tunnel) => {
                Step::Write(b"N".to_vec())
            }
            (Startup::Ssl | Startup::GssEnc, Transport::Tls) => {
                self.fail(protocol("expected a startup message after TLS"))
            }
            (Startup::Startup { .. }, Transport::TlsRequired) => {
                self.fail(Fatal::new(SqlState::InvalidAuthorization, REQUIRES_TLS))
            }
            (Startup::Startup { params }, Transport::Tls | Transport::Tunnel) => {
                self.state = ReaderState::Over;
                Step::Done(Started {
                    params,
                    leftover: std::mem::take(&mut self.buf),
                })
            }
        }
    }
}

impl Handshake for StartupReader {
    type Done = Started;

    fn receive(&mut self, bytes: &[u8]) {
        match self.state {
            ReaderState::Reading => self.buf.extend_from_slice(bytes),
            ReaderState::AwaitTls if !bytes.is_empty() => self.state = ReaderState::Injected,
            ReaderState::AwaitTls | ReaderState::Injected | ReaderState::Over => {}
        }
    }

    fn step(&mut self) -> Step<Started> {
        match self.state {
            ReaderState::Reading => {}
            ReaderState::AwaitTls => return Step::TlsRequested,
            ReaderState::Injected => return self.fail(protocol("received unencrypted data after the SSLRequest")),
            ReaderState::Over => return Step::Failed(over()),
        }
        match parse_startup(&self.buf) {
            Ok(None) => Step::NeedMore,
            Err(e) => self.fail(startup_error(&e)),
            Ok(Some((packet, n))) => {
                self.buf.drain(..n);
                self.answer(packet)
            }
        }
    }

    fn waiting_for(&self) -> &'static str {
        "a startup message"
    }
}

impl CleartextLogin {
    pub fn new(transport: Transport) -> Self {
        Self {
            startup: StartupReader::new(transport),
            phase: Phase::Startup,
        }
    }

    /// See [`StartupReader::tls_established`].
    pub fn tls_established(&mut self) {
        self.startup.tls_established();
    }

    fn fail(&mut self, f: Fatal) -> Step<Login> {
        self.phase = Phase::Over;
        Step::Failed(f)
    }

    fn startup_step(&mut self) -> Step<Login> {
        match self.startup.step() {
            Step::Done(Started { params, leftover }) => {
                // The client may only send the password once asked; bytes
                // it already sent are the start of its answer.
                self.phase = Phase::Password { params, buf: leftover };
                Step::Write(auth_cleartext())
            }
            Step::NeedMore => Step::NeedMore,
            Step::Write(b) => Step::Write(b),
            Step::TlsRequested => Step::TlsRequested,
            Step::Cancel(k) => {
                self.phase = Phase::Over;
                Step::Cancel(k)
            }
            Step::Failed(f) => self.fail(f),
        }
    }

    fn password_step(&mut self) -> Step<Login> {
        let Phase::Password { buf, .. } = &self.phase else {
            return Step::Failed(over());
        };
        let n = match frame(buf, MAX_STARTUP) {
            Ok(None) => return Step::NeedMore,
            Ok(Some((b'p', n))) => n,
            Ok(Some((tag, _))) => {
                let why = format!("expected a password message, got {:?}", char::from(tag));
                return self.fail(protocol(why));
            }
            Err(e) => return self.fail(protocol(format!("expected a password message: {e}"))),
        };
        let secret = match buf.get(5..n).map(password) {
            Some(Ok(p)) => Password(p.to_owned()),
            Some(Err(e)) => return self.fail(protocol(e.to_string())),
            None => return self.fail(protocol("expected a password message")),
        };
        match std::mem::replace(&mut self.phase, Phase::Over) {
            Phase::Password { params, mut buf } => {
                buf.drain(..n);
                Step::Done(Login {
                    params,
                    password: secret,
                    leftover: buf,
                })
            }
            Phase::Startup | Phase::Over => Step::Failed(over()),
        }
    }
}

impl Handshake for CleartextLogin {
    type Done = Login;

    fn receive(&mut self, bytes: &[u8]) {
        match &mut self.phase {
            Phase::Startup => self.startup.receive(bytes),
            Phase::Password { buf, .. } => buf.extend_from_slice(bytes),
            Phase::Over => {}
        }
    }

    fn step(&mut self) -> Step<Login> {
        match self.phase {
            Phase::Startup => self.startup_step(),
            Phase::Password { .. } => self.password_step(),
            Phase::Over => Step::Failed(over()),
        }
    }

    fn waiting_for(&self) -> &'static str {
        match self.phase {
            Phase::Password { .. } => "a password message",
            Phase::Startup | Phase::Over => "a startup message",
        }
    }
}

#[cfg(test)]
mod tests;
