//! The one async driver of the login machines ([`crate::login`]): it
//! reads from the client when the machine needs bytes, writes what the
//! machine says to write, and stops at whatever the caller must decide
//! (TLS, a cancel, the session). It is the one place a refused login is
//! written back to the client.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::login::{CancelKey, Handshake, Step};
use crate::{Fatal, SqlState};

/// How long a client has for its login (from the connection, or from the
/// end of its TLS handshake): a silent client must not hold a connection
/// open for ever.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the client gets to take the error that tells it it was too
/// slow.
const FAREWELL: Duration = Duration::from_secs(1);

/// Where a driven handshake stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Driven<T> {
    /// `S` was sent: run TLS, call `tls_established`, and drive again.
    TlsRequested,
    /// A CancelRequest: the connection carries nothing else.
    Cancel(CancelKey),
    Done(T),
    /// Refused; the client has been sent the error.
    Refused(Fatal),
}

/// Why a handshake stopped before the machine said so.
#[derive(Debug, Error)]
pub enum DriveError {
    #[error("the client closed the connection during its login")]
    Closed,
    /// The client has been sent a connection-failure error.
    #[error("the client did not finish its login in time")]
    TimedOut,
    #[error("talking to the client: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `h` on `io` until it stops, failing at `deadline`.
pub async fn drive<H, S>(io: &mut S, h: &mut H, deadline: Instant) -> Result<Driven<H::Done>, DriveError>
where
    H: Handshake,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut chunk = [0u8; 4096];
    loop {
        match h.step() {
            Step::NeedMore => match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(DriveError::Closed),
                Ok(Ok(n)) => h.receive(chunk.get(..n).unwrap_or_default()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    let why = format!(
                        "timed out waiting for {} (the limit is {}s)",
                        h.waiting_for(),
                        LOGIN_TIMEOUT.as_secs()
                    );
                    let bye = Fatal::new(SqlState::ConnectionFailure, why).encode();
                    let _ = write(io, &bye, Instant::now() + FAREWELL).await;
                    return Err(DriveError::TimedOut);
                }
            },
            Step::Write(bytes) => write(io, &bytes, deadline).await?,
            Step::TlsRequested => return Ok(Driven::TlsRequested),
            Step::Cancel(key) => return Ok(Driven::Cancel(key)),
            Step::Done(done) => return Ok(Driven::Done(done)),
            Step::Failed(f) => {
                // The client may be gone already; the refusal stands anyway.
                let _ = write(io, &f.encode(), Instant::now() + FAREWELL).await;
                return Ok(Driven::Refused(f));
            }
        }
    }
}

/// Writes and flushes `bytes` (TLS streams buffer) by `until`.
async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], until: Instant) -> Result<(), DriveError> {
    let w = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout_at(until, w).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(DriveError::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::login::{CleartextLogin, StartupReader, Transport};
    use crate::{MAX_MESSAGE, error_fields, frame, startup_message};

    fn password_message(p: &str) -> Vec<u8> {
        let mut m = vec![b'p'];
        m.extend_from_slice(&u32::try_from(p.len() + 5).unwrap().to_be_bytes());
        m.extend_from_slice(p.as_bytes());
        m.push(0);
        m
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// The SQLSTATE and message of the ErrorResponse at the start of `b`.
    fn error_in(b: &[u8]) -> (String, String) {
        let (tag, n) = frame(b, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(tag, b'E');
        error_fields(&b[5..n])
    }

    #[tokio::test]
    async fn logs_in_over_a_stream_in_small_writes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let talk = tokio::spawn(async move {
            let startup = startup_message(&[("user", "alice"), ("database", "app")]);
            for b in startup.chunks(3) {
                client.write_all(b).await.unwrap();
            }
            let mut ask = [0u8; 9];
            client.read_exact(&mut ask).await.unwrap();
            assert_eq!(ask.to_vec(), crate::auth_cleartext());
            let mut rest = password_message("tok");
            rest.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
            client.write_all(&rest).await.unwrap();
            client
        });
        let mut login = CleartextLogin::new(Transport::Tls);
        let Ok(Driven::Done(l)) = drive(&mut server, &mut login, soon()).await else {
            panic!("no login")
        };
        assert_eq!(l.password.expose(), "tok");
        assert_eq!(l.leftover, b"Q\0\0\0\x0dselect 1\0");
        talk.await.unwrap();
    }

    #[tokio::test]
    async fn a_refusal_is_written_to_the_client() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&startup_message(&[("user", "a")])).await.unwrap();
        let mut login = CleartextLogin::new(Transport::TlsRequired);
        let Ok(Driven::Refused(f)) = drive(&mut server, &mut login, soon()).await else {
            panic!("not refused")
        };
        assert_eq!(f.code, SqlState::InvalidAuthorization);
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(error_in(&got), ("28000".to_owned(), f.message));
    }

    #[tokio::test]
    async fn tls_is_answered_then_handed_to_the_caller() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
        let mut login = CleartextLogin::new(Transport::TlsRequired);
        let r = drive(&mut server, &mut login, soon()).await.unwrap();
        assert_eq!(r, Driven::TlsRequested);
        let mut s = [0u8; 1];
        client.read_exact(&mut s).await.unwrap();
        assert_eq!(&s, b"S");
    }

    #[tokio::test]
    async fn a_silent_client_is_told_and_let_go() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut reader = StartupReader::new(Transport::Tunnel);
        let deadline = Instant::now() + Duration::from_millis(50);
        let r = drive(&mut server, &mut reader, deadline).await;
        assert!(matches!(r, Err(DriveError::TimedOut)), "{r:?}");
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let (code, msg) = error_in(&got);
        assert_eq!(code, "08006");
        assert!(msg.contains("a startup message"), "{msg}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_the_login() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&startup_message(&[("user", "a")])).await.unwrap();
        drop(client);
        let mut login = CleartextLogin::new(Transport::Tls);
        let r = drive(&mut server, &mut login, soon()).await;
        assert!(matches!(r, Err(DriveError::Closed | DriveError::Io(_))), "{r:?}");
    }
}
