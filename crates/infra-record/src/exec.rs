//! A `kubectl exec` / `attach` / `debug` session over either of
//! Kubernetes' stream protocols (WebSocket, or SPDY/3.1 for older clients
//! and clusters) as asciicast events: what the user typed (stdin, `i`),
//! what came back (stdout and stderr, `o`), terminal resizes (`r`), and
//! the command's final status (a marker, `m`).

use crate::asciicast::{Code, Event, Utf8Stream};
use crate::framing::StreamError;
use crate::k8s_ws::{CLOSE, Decoder, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use crate::spdy;

/// The stream's framing, as the upgrade named it.
#[derive(Debug)]
enum Framing {
    WebSocket { from_client: Decoder, from_server: Decoder },
    Spdy(Box<spdy::Session>),
}

/// Why a stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Stream(StreamError),
    /// Bytes on a channel this recorder does not read (a base64
    /// subprotocol's `'0'`, say): not recorded, so the stream must end.
    Channel(u8),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Stream(e) => e.fmt(f),
            Error::Channel(c) => write!(f, "data on channel {c}, which this recorder does not read"),
        }
    }
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From kubectl to the cluster.
    FromClient,
    /// From the cluster to kubectl.
    FromServer,
}

/// Turns both directions of one session into events.
#[derive(Debug)]
pub struct ExecRecorder {
    started_ms: i64,
    framing: Framing,
    stdin: Utf8Stream,
    stdout: Utf8Stream,
    stderr: Utf8Stream,
    /// The terminal size, once the client said.
    pub size: Option<(u16, u16)>,
    /// Bytes seen each way.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl ExecRecorder {
    /// A session over WebSocket (`v5.channel.k8s.io` and its predecessors).
    pub fn new(started_ms: i64) -> Self {
        Self::with(
            started_ms,
            Framing::WebSocket {
                from_client: Decoder::default(),
                from_server: Decoder::default(),
            },
        )
    }

    /// A session over SPDY/3.1.
    pub fn spdy(started_ms: i64) -> Self {
        Self::with(started_ms, Framing::Spdy(Box::default()))
    }

    fn with(started_ms: i64, framing: Framing) -> Self {
        Self {
            started_ms,
            framing,
            stdin: Utf8Stream::default(),
            stdout: Utf8Stream::default(),
            stderr: Utf8Stream::default(),
            size: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The events `bytes`, seen going `dir` at `at_ms`, complete.
    pub fn feed(&mut self, dir: Direction, at_ms: i64, bytes: &[u8]) -> Result<Vec<Event>, Error> {
        let time = (at_ms - self.started_ms).max(0) as f64 / 1000.0;
        match dir {
            Direction::FromClient => self.bytes_in += bytes.len() as u64,
            Direction::FromServer => self.bytes_out += bytes.len() as u64,
        }
        let messages = match (&mut self.framing, dir) {
            (Framing::WebSocket { from_client, .. }, Direction::FromClient) => {
                from_client.push(bytes).map_err(Error::Stream)?
            }
            (Framing::WebSocket { from_server, .. }, Direction::FromServer) => {
                from_server.push(bytes).map_err(Error::Stream)?
            }
            (Framing::Spdy(s), Direction::FromClient) => s.push(spdy::Side::Client, bytes).map_err(Error::Stream)?,
            (Framing::Spdy(s), Direction::FromServer) => s.push(spdy::Side::Server, bytes).map_err(Error::Stream)?,
        };
        let mut out = Vec::new();
        let mut emit = |code, data: String| {
            if !data.is_empty() {
                out.push(Event { time, code, data });
            }
        };
        for m in messages {
            match (dir, m.channel) {
                (Direction::FromClient, STDIN) => emit(Code::Input, self.stdin.push(&m.data)),
                (Direction::FromClient, RESIZE) => {
                    // SPDY carries a stream of JSON objects, one per line.
                    for one in m.data.split(|b| *b == b'\n') {
                        if let Some((w, h)) = resize(one) {
                            self.size = Some((w, h));
                            emit(Code::Resize, format!("{w}x{h}"));
                        }
                    }
                }
                (Direction::FromServer, STDOUT) => emit(Code::Output, self.stdout.push(&m.data)),
                (Direction::FromServer, STDERR) => emit(Code::Output, self.stderr.push(&m.data)),
                (Direction::FromServer, ERROR) => emit(Code::Marker, status(&m.data)),
                (_, CLOSE) => {}
                // Empty messages carry nothing (the server's "ready").
                _ if m.data.is_empty() => {}
                (_, other) => return Err(Error::Channel(other)),
            }
        }
        Ok(out)
    }
}

/// `{"Width":80,"Height":24}` as (80, 24).
fn resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let w = u16::try_from(v["Width"].as_u64()?).ok()?;
    let h = u16::try_from(v["Height"].as_u64()?).ok()?;
    Some((w, h))
}

/// The command's end, from the server's `Status`: `exit 0`, `exit 2`, or
/// its message.
fn status(data: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return String::from_utf8_lossy(data).into_owned();
    };
    if v["status"] == "Success" {
        return "exit 0".into();
    }
    let code = v["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["reason"] == "ExitCode")
        .and_then(|c| c["message"].as_str());
    match code {
        Some(c) => format!("exit {c}"),
        None => v["message"].as_str().unwrap_or("ended").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s_ws::encode;

    fn client(channel: u8, data: &[u8]) -> Vec<u8> {
        encode(true, 2, &[&[channel][..], data].concat(), Some([7, 1, 2, 3]))
    }

    fn server(channel: u8, data: &[u8]) -> Vec<u8> {
        encode(true, 2, &[&[channel][..], data].concat(), None)
    }

    #[test]
    fn a_session_reads_as_typed_commands_and_their_output() {
        let mut r = ExecRecorder::new(1_000);
        let mut lines = Vec::new();
        let mut feed = |dir, at, bytes: Vec<u8>| {
            for e in r.feed(dir, at, &bytes).unwrap() {
                lines.push(e.line());
            }
        };
        feed(
            Direction::FromClient,
            1_000,
            client(RESIZE, br#"{"Width":120,"Height":40}"#),
        );
        feed(Direction::FromClient, 1_500, client(STDIN, b"ls\r"));
        // Output split in the middle of a character (the second é).
        let out = "ls\r\nfichier-\u{e9}t\u{e9}.txt\r\n".as_bytes();
        feed(Direction::FromServer, 1_600, server(STDOUT, &out[..15]));
        feed(Direction::FromServer, 1_601, server(STDOUT, &out[15..]));
        feed(Direction::FromServer, 1_700, server(STDERR, b"warn\r\n"));
        feed(
            Direction::FromServer,
            2_250,
            server(
                ERROR,
                br#"{"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}"#,
            ),
        );
        assert_eq!(
            lines,
            [
                r#"[0.0,"r","120x40"]"#,
                r#"[0.5,"i","ls\r"]"#,
                r#"[0.6,"o","ls\r\nfichier-ét"]"#,
                r#"[0.601,"o","é.txt\r\n"]"#,
                r#"[0.7,"o","warn\r\n"]"#,
                r#"[1.25,"m","exit 2"]"#,
            ]
        );
        assert_eq!(r.size, Some((120, 40)));
    }

    #[test]
    fn a_spdy_session_reads_the_same() {
        use crate::spdy::{data, deflater, syn_stream};
        let mut z = deflater();
        let mut r = ExecRecorder::spdy(0);
        let mut opened = Vec::new();
        for (id, t) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
            opened.extend(syn_stream(&mut z, id, &[("streamtype", t)]));
        }
        assert!(r.feed(Direction::FromClient, 0, &opened).unwrap().is_empty());
        let typed = [data(7, b"{\"Width\":90,\"Height\":20}\n"), data(3, b"id\r")].concat();
        let lines: Vec<String> = r
            .feed(Direction::FromClient, 100, &typed)
            .unwrap()
            .iter()
            .map(Event::line)
            .collect();
        assert_eq!(lines, [r#"[0.1,"r","90x20"]"#, r#"[0.1,"i","id\r"]"#]);
        let shown = [data(5, b"uid=0\r\n"), data(1, br#"{"status":"Success"}"#)].concat();
        let lines: Vec<String> = r
            .feed(Direction::FromServer, 200, &shown)
            .unwrap()
            .iter()
            .map(Event::line)
            .collect();
        assert_eq!(lines, [r#"[0.2,"o","uid=0\r\n"]"#, r#"[0.2,"m","exit 0"]"#]);
    }

    #[test]
    fn a_channel_it_does_not_read_ends_the_stream() {
        // v4.base64.channel.k8s.io: the channel is an ASCII digit.
        let mut r = ExecRecorder::new(0);
        let typed = encode(true, 1, b"0aWQK", Some([1, 2, 3, 4]));
        assert_eq!(r.feed(Direction::FromClient, 0, &typed), Err(Error::Channel(b'0')));
        let mut r = ExecRecorder::new(0);
        assert_eq!(
            r.feed(Direction::FromClient, 0, &client(STDOUT, b"x")),
            Err(Error::Channel(STDOUT))
        );
        let mut r = ExecRecorder::new(0);
        assert!(
            r.feed(Direction::FromServer, 0, &server(STDOUT, b""))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_clean_end_is_exit_0() {
        assert_eq!(status(br#"{"metadata":{},"status":"Success"}"#), "exit 0");
        assert_eq!(status(b"not json"), "not json");
    }
}
