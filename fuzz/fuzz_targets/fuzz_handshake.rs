//! The tunnel handshake, both ends (`handshake::accept` on the server,
//! `handshake::connect` on the connector), fed what the other end sends:
//! arbitrary bytes, arriving in chunks of a size the input picks, from a
//! peer that then closes. Then what the server does with a `Hello` before
//! it trusts anything in it: the access key's shape, the destination
//! names, the direct URLs, the SSH host keys.
//!
//! Input: a mode byte (which end; whether the line is pushed to just under
//! the 64 KiB limit with leading JSON whitespace, so the length check is
//! reached without 64 KiB inputs), a chunk-size byte, [a filler byte],
//! then the peer's bytes.
//!
//! Asserts: no panic; a line is accepted only if it ends within the limit;
//! the bytes after the line are handed on intact (they are HTTP/2);
//! an accepted `Hello`/`HelloReply` round-trips through JSON; the server
//! writes nothing but a one-line refusal for a wrong version, and nothing
//! at all otherwise; the connector writes exactly its `Hello` line; the
//! access key splits into what it was made of.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use infra_tunnel::handshake::{self, HandshakeError, MAX_LINE};
use infra_tunnel::proto::{Hello, HelloReply, VERSION};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The other end: hands out its bytes `chunk` at a time, then EOF, and
/// keeps what it is sent.
struct Peer<'a> {
    data: &'a [u8],
    chunk: usize,
    written: Vec<u8>,
}

impl AsyncRead for Peer<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
}

fn hello() -> Hello {
    Hello {
        version: VERSION,
        access_key: "k".into(),
        name: "dc1".into(),
        instance_id: "i".into(),
        destinations: vec![],
        assertion_key: "x".into(),
        assertion_kid: "k".into(),
    }
}

/// Where the handshake line ends, if it may be accepted at all.
fn line_end(input: &[u8]) -> usize {
    let nl = input
        .iter()
        .position(|b| *b == b'\n')
        .expect("an accepted line has its newline");
    assert!(nl as u64 <= MAX_LINE, "a line of {nl} bytes was accepted");
    nl
}

fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) {
    let a = serde_json::to_vec(v).expect("serialise");
    let back: T = serde_json::from_slice(&a).expect("what we serialise we parse");
    assert_eq!(serde_json::to_vec(&back).expect("serialise"), a);
}

/// What the server checks in a `Hello` before it trusts any of it.
fn server_checks(h: &Hello) {
    if let Some((id, secret)) = infra_auth::access_key::parse(&h.access_key) {
        assert_eq!(format!("{id}.{secret}"), h.access_key);
        assert!(id.chars().chain(secret.chars()).all(|c| c.is_ascii_alphanumeric()));
    }
    for d in &h.destinations {
        let _ = infra_core::Resource::parse(&d.name);
        if let Some(u) = &d.direct_url {
            let _ = infra_server::fuzzing::valid_direct_url(u);
        }
        for k in d.ssh_host_keys.iter().take(4) {
            let _ = infra_auth::ssh_ca::parse_allowed_key(k);
        }
    }
}

async fn server(input: &[u8], chunk: usize) {
    let mut peer = Peer {
        data: input,
        chunk,
        written: Vec::new(),
    };
    match handshake::accept(&mut peer).await {
        Ok((mut io, h)) => {
            assert_eq!(h.version, VERSION);
            let nl = line_end(input);
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.expect("in-memory read");
            assert_eq!(rest, &input[nl + 1..], "bytes after the hello were lost");
            drop(io);
            assert!(peer.written.is_empty(), "the server answered before deciding");
            json_round_trip(&h);
            server_checks(&h);
        }
        Err(HandshakeError::Version(v)) => {
            assert_ne!(v, VERSION);
            assert!(peer.written.len() < 256 && peer.written.ends_with(b"\n"));
            let r: HelloReply = serde_json::from_slice(&peer.written).expect("the refusal is a reply line");
            assert!(!r.ok);
        }
        Err(_) => assert!(peer.written.is_empty(), "the server wrote to a peer it refused"),
    }
}

async fn connector(input: &[u8], chunk: usize) {
    let mut peer = Peer {
        data: input,
        chunk,
        written: Vec::new(),
    };
    let hello = hello();
    let result = handshake::connect(&mut peer, &hello).await;
    if let Ok((mut io, reply)) = result {
        assert!(reply.ok);
        let nl = line_end(input);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("in-memory read");
        assert_eq!(rest, &input[nl + 1..], "bytes after the reply were lost");
        json_round_trip(&reply);
    }
    let mut line = serde_json::to_vec(&hello).expect("serialise");
    line.push(b'\n');
    assert_eq!(peer.written, line, "the connector sent more than its hello");
}

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk) + 1;
    let owned;
    let input: &[u8] = match rest {
        [filler, tail @ ..] if mode & 2 != 0 => {
            // Leading whitespace is valid JSON: the line reaches the limit
            // on either side of it depending on the tail's length.
            let pad = MAX_LINE as usize - 256 + usize::from(*filler);
            owned = [vec![b' '; pad], tail.to_vec()].concat();
            &owned
        }
        _ => rest,
    };
    let chunk = if mode & 2 != 0 { chunk * 256 } else { chunk };
    RT.with(|rt| {
        rt.block_on(async {
            if mode & 1 == 0 {
                server(input, chunk).await;
            } else {
                connector(input, chunk).await;
            }
        })
    });
});
