//! SPDY/3.1 frames as Kubernetes' older stream protocol uses them (kubectl
//! before 1.30, or any kubectl against a cluster before 1.30): the client
//! opens one stream per channel, naming it in a `streamtype` header
//! (`stdin`, `stdout`, `stderr`, `error`, `resize`), and each data frame
//! carries bytes of one stream.
//!
//! Header blocks are compressed with zlib and the SPDY/3 dictionary, one
//! compression context per direction for the whole connection: every
//! header block the client sends is inflated, in order, so the context
//! stays in step. The server's header blocks (replies) are skipped: what a
//! stream is, the client said when it opened it.

use std::collections::HashMap;

use crate::framing::{Protocol, StreamError};
use crate::k8s_ws::{ERROR, Message, RESIZE, STDERR, STDIN, STDOUT};

/// The zlib dictionary of SPDY/3 header blocks (its specification,
/// section 2.6.10.1).
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");
/// The largest header block, inflated.
const MAX_HEADERS: usize = 64 << 10;

const SYN_STREAM: u16 = 1;
const HEADERS: u16 = 8;

const TOO_LARGE: StreamError = StreamError::TooLarge(Protocol::Spdy);

fn bad(what: &'static str) -> StreamError {
    StreamError::Malformed(Protocol::Spdy, what)
}

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Both directions of one SPDY connection.
pub struct Session {
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    inflate: flate2::Decompress,
    dictionary_set: bool,
    /// Stream id → channel, from the client's SYN_STREAMs.
    streams: HashMap<u32, u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("streams", &self.streams).finish()
    }
}

impl Default for Session {
    fn default() -> Self {
        Self {
            from_client: Vec::new(),
            from_server: Vec::new(),
            inflate: flate2::Decompress::new(true),
            dictionary_set: false,
            streams: HashMap::new(),
        }
    }
}

impl Session {
    /// The channel messages `bytes` (going `side`) completes, in order.
    pub fn push(&mut self, side: Side, bytes: &[u8]) -> Result<Vec<Message>, StreamError> {
        let mut buf = std::mem::take(match side {
            Side::Client => &mut self.from_client,
            Side::Server => &mut self.from_server,
        });
        buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        let result = loop {
            let rest = &buf[at..];
            if rest.len() < 8 {
                break Ok(());
            }
            let len = usize::from(rest[5]) << 16 | usize::from(rest[6]) << 8 | usize::from(rest[7]);
            if rest.len() < 8 + len {
                break Ok(());
            }
            let payload = &rest[8..8 + len];
            let head = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if head & 0x8000_0000 != 0 {
                let kind = u16::from_be_bytes([rest[2], rest[3]]);
                if side == Side::Client
                    && let Err(e) = self.control(kind, payload)
                {
                    break Err(e);
                }
            } else {
                let id = head & 0x7fff_ffff;
                match self.streams.get(&id) {
                    Some(channel) if !payload.is_empty() => out.push(Message {
                        channel: *channel,
                        data: payload.to_vec(),
                    }),
                    Some(_) => {}
                    // Whatever the other side makes of it, it is not in
                    // the recording: the stream ends.
                    None => break Err(bad("data on a stream never opened")),
                }
            }
            at += 8 + len;
        };
        buf.drain(..at);
        *match side {
            Side::Client => &mut self.from_client,
            Side::Server => &mut self.from_server,
        } = buf;
        result.map(|()| out)
    }

    /// A control frame from the client: streams it opens, and every header
    /// block it sends (to keep the zlib context in step).
    fn control(&mut self, kind: u16, payload: &[u8]) -> Result<(), StreamError> {
        let (id, block) = match kind {
            SYN_STREAM if payload.len() >= 10 => (read_id(payload), &payload[10..]),
            HEADERS if payload.len() >= 4 => (read_id(payload), &payload[4..]),
            SYN_STREAM | HEADERS => return Err(bad("a short frame")),
            _ => return Ok(()),
        };
        let headers = self.inflate_block(block)?;
        if kind != SYN_STREAM {
            return Ok(());
        }
        // As the server reads it: the first value, up to a NUL (SPDY's
        // separator of several values).
        let t = header(&headers, b"streamtype")
            .and_then(|v| v.split(|b| *b == 0).next())
            .unwrap_or_default();
        let channel = match t {
            b"stdin" => STDIN,
            b"stdout" => STDOUT,
            b"stderr" => STDERR,
            b"error" => ERROR,
            b"resize" => RESIZE,
            _ => return Err(bad("a stream of a type this recorder does not know")),
        };
        if self.streams.insert(id, channel).is_some() {
            return Err(bad("a stream opened twice"));
        }
        Ok(())
    }

    fn inflate_block(&mut self, block: &[u8]) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::with_capacity(1024);
        let mut input = block;
        loop {
            let before_in = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            // Done once the input is used and zlib left room in the
            // output: a full output may hide more to come.
            let room = out.len() < out.capacity();
            match r {
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|_| bad("the header dictionary was refused"))?;
                    self.dictionary_set = true;
                }
                Err(_) => return Err(bad("a header block that does not inflate")),
                Ok(_) if out.len() >= MAX_HEADERS => return Err(TOO_LARGE),
                // A block always holds its count of headers.
                Ok(_) if input.is_empty() && room && out.len() < 4 => {
                    return Err(bad("a header block that does not inflate"));
                }
                Ok(_) if input.is_empty() && room => return Ok(out),
                Ok(_) => out.reserve(4096),
            }
        }
    }
}

fn read_id(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff
}

/// The value of `name` in an inflated header block.
fn header<'a>(block: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let take = |b: &'a [u8], at: usize| -> Option<(&'a [u8], usize)> {
        let n = usize::try_from(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?)).ok()?;
        Some((b.get(at + 4..at + 4 + n)?, at + 4 + n))
    };
    let count = u32::from_be_bytes(block.get(..4)?.try_into().ok()?);
    let mut at = 4;
    for _ in 0..count {
        let (k, next) = take(block, at)?;
        let (v, next) = take(block, next)?;
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
        at = next;
    }
    None
}

/// A frame as a client would send it, with a header block compressed by
/// `deflate` (one context per connection): for tests.
#[cfg(test)]
pub(crate) fn syn_stream(deflate: &mut flate2::Compress, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        block.extend_from_slice(&(k.len() as u32).to_be_bytes());
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&(v.len() as u32).to_be_bytes());
        block.extend_from_slice(v.as_bytes());
    }
    let mut z = Vec::with_capacity(block.len() + 64);
    deflate
        .compress_vec(&block, &mut z, flate2::FlushCompress::Sync)
        .unwrap();
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    payload.extend_from_slice(&z);
    let mut f = vec![0x80, 3, 0, 1, 0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&payload);
    f
}

/// A data frame: for tests.
#[cfg(test)]
pub(crate) fn data(id: u32, bytes: &[u8]) -> Vec<u8> {
    let mut f = id.to_be_bytes().to_vec();
    f.push(0);
    f.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(bytes);
    f
}

#[cfg(test)]
pub(crate) fn deflater() -> flate2::Compress {
    let mut c = flate2::Compress::new(flate2::Compression::best(), true);
    c.set_dictionary(DICTIONARY).unwrap();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_named_by_their_headers_whatever_the_chunking() {
        let mut z = deflater();
        let mut client = Vec::new();
        for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
            client.extend(syn_stream(&mut z, id, &[("streamtype", t), ("port", "")]));
        }
        client.extend(data(3, b"ls\r"));
        client.extend(data(7, br#"{"Width":100,"Height":30}"#));
        let mut s = Session::default();
        let mut got = Vec::new();
        // One byte at a time: frames and header blocks are cut anywhere.
        for b in &client {
            got.extend(s.push(Side::Client, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            got,
            [
                Message {
                    channel: STDIN,
                    data: b"ls\r".to_vec()
                },
                Message {
                    channel: RESIZE,
                    data: br#"{"Width":100,"Height":30}"#.to_vec()
                },
            ]
        );
        let mut server = data(5, b"file.txt\r\n");
        // A SYN_REPLY's header block is the server's: skipped.
        server.splice(0..0, [0x80, 3, 0, 2, 0, 0, 0, 6, 0, 0, 0, 5, 0xde, 0xad]);
        server.extend(data(1, br#"{"status":"Success"}"#));
        let got = s.push(Side::Server, &server).unwrap();
        assert_eq!(
            got[0],
            Message {
                channel: STDOUT,
                data: b"file.txt\r\n".to_vec()
            }
        );
        assert_eq!(got[1].channel, ERROR);
    }

    #[test]
    fn streams_the_server_reads_otherwise_end_the_recording() {
        // A NUL-separated value: the server reads "stdin".
        let mut z = deflater();
        let mut s = Session::default();
        let open = syn_stream(&mut z, 3, &[("streamtype", "stdin\0x")]);
        assert!(s.push(Side::Client, &open).is_ok());
        let got = s.push(Side::Client, &data(3, b"id\r")).unwrap();
        assert_eq!(
            got,
            [Message {
                channel: STDIN,
                data: b"id\r".to_vec()
            }]
        );
        // Data on a stream never opened, an unknown type, a stream opened twice.
        assert!(s.push(Side::Client, &data(9, b"hidden")).is_err());
        let mut z = deflater();
        let mut s = Session::default();
        assert!(
            s.push(Side::Client, &syn_stream(&mut z, 1, &[("streamtype", "stdinx")]))
                .is_err()
        );
        let mut z = deflater();
        let mut s = Session::default();
        assert!(
            s.push(Side::Client, &syn_stream(&mut z, 1, &[("streamtype", "stdin")]))
                .is_ok()
        );
        assert!(
            s.push(Side::Client, &syn_stream(&mut z, 1, &[("streamtype", "stdout")]))
                .is_err()
        );
    }

    #[test]
    fn garbage_is_refused_and_frames_are_bounded() {
        let mut s = Session::default();
        let mut bad = vec![0x80, 3, 0, 1, 0, 0, 0, 12];
        bad.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(s.push(Side::Client, &bad).is_err());
        // A frame's length is 24 bits: the most a recorder holds waiting
        // for the rest of one is 16 MiB.
        let mut s = Session::default();
        assert_eq!(s.push(Side::Server, &[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]), Ok(vec![]));
    }
}
