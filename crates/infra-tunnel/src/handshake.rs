//! The one-line JSON handshake that opens a tunnel.
//!
//! Connector: `Hello` + `\n`; server: `HelloReply` + `\n`; then HTTP/2.
//! Lines are bounded and time-limited, so garbage or a silent peer on the
//! tunnel port costs one small buffer for a few seconds.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::proto::{Hello, HelloReply, VERSION};

/// Longest handshake line.
pub const MAX_LINE: u64 = 64 * 1024;
/// How long a peer may take to send its line.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent nothing within {TIMEOUT:?}")]
    Timeout,
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("handshake line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("handshake is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u32),
    #[error("server refused the connector: {0}")]
    Refused(String),
}

async fn write_line<S: AsyncWrite + Unpin, T: Serialize>(io: &mut S, v: &T) -> Result<(), HandshakeError> {
    let mut line = serde_json::to_vec(v).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    line.push(b'\n');
    io.write_all(&line).await?;
    io.flush().await?;
    Ok(())
}

async fn read_line<S: AsyncRead + Unpin, T: DeserializeOwned>(io: &mut BufReader<S>) -> Result<T, HandshakeError> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, (&mut *io).take(MAX_LINE + 1).read_until(b'\n', &mut buf))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    if n == 0 {
        return Err(HandshakeError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 > MAX_LINE {
            HandshakeError::TooLong
        } else {
            HandshakeError::Closed
        });
    }
    serde_json::from_slice(&buf).map_err(|e| HandshakeError::Malformed(e.to_string()))
}

/// Connector side: sends `hello`, waits for the reply. The returned reader
/// keeps any bytes read past the reply for HTTP/2.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    hello: &Hello,
) -> Result<(BufReader<S>, HelloReply), HandshakeError> {
    let mut io = BufReader::new(io);
    write_line(io.get_mut(), hello).await?;
    let reply: HelloReply = read_line(&mut io).await?;
    if !reply.ok {
        return Err(HandshakeError::Refused(
            reply.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    Ok((io, reply))
}

/// Server side: reads the connector's hello.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Result<(BufReader<S>, Hello), HandshakeError> {
    let mut io = BufReader::new(io);
    let hello: Hello = read_line(&mut io).await?;
    if hello.version != VERSION {
        let _ = reply(
            &mut io,
            &refusal(&format!(
                "protocol version {} is not supported; upgrade the connector",
                hello.version
            )),
        )
        .await;
        return Err(HandshakeError::Version(hello.version));
    }
    Ok((io, hello))
}

/// Server side: answers.
pub async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    r: &HelloReply,
) -> Result<(), HandshakeError> {
    write_line(io.get_mut(), r).await
}

pub fn refusal(msg: &str) -> HelloReply {
    HelloReply {
        ok: false,
        error: Some(msg.into()),
        issuer: None,
        audit_acked: 0,
        replicas: vec![],
        control_secret: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: VERSION,
            access_key: "k".into(),
            name: "dc1".into(),
            instance_id: "i".into(),
            destinations: vec![],
            assertion_key: "x".into(),
            assertion_kid: "k".into(),
            software: String::new(),
        }
    }

    #[tokio::test]
    async fn round_trip_keeps_bytes_after_the_reply() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let (mut io, h) = accept(b).await.unwrap();
            assert_eq!(h.name, "dc1");
            let ok = HelloReply {
                ok: true,
                error: None,
                issuer: Some("iss".into()),
                audit_acked: 3,
                replicas: vec![],
                control_secret: Default::default(),
            };
            let mut line = serde_json::to_vec(&ok).unwrap();
            line.extend_from_slice(b"\nPRI * HTTP/2.0");
            io.get_mut().write_all(&line).await.unwrap();
            io
        });
        let (mut io, r) = connect(a, &hello()).await.unwrap();
        assert_eq!(r.audit_acked, 3);
        let mut rest = [0u8; 14];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PRI * HTTP/2.0");
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn garbage_and_oversize_are_refused() {
        for input in [
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![b'{'; 70_000],
            b"\x16\x03\x01\x00".to_vec(),
        ] {
            let (mut a, b) = tokio::io::duplex(1 << 20);
            let t = tokio::spawn(async move { accept(b).await.map(|_| ()) });
            a.write_all(&input).await.unwrap();
            drop(a);
            assert!(t.await.unwrap().is_err());
        }
    }

    #[tokio::test]
    async fn refusal_reaches_the_connector() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (mut io, _) = accept(b).await.unwrap();
            reply(&mut io, &refusal("access key revoked")).await.unwrap();
        });
        match connect(a, &hello()).await {
            Err(HandshakeError::Refused(m)) => assert_eq!(m, "access key revoked"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
