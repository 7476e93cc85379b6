//! A `kubectl exec` / `attach` / `debug` session over Kubernetes' WebSocket
//! stream protocol as asciicast events: what the user typed (stdin, `i`),
//! what came back (stdout and stderr, `o`), terminal resizes (`r`), and
//! the command's final status (a marker, `m`).

use crate::asciicast::{Code, Event, Utf8Stream};
use crate::k8s_ws::{self, CLOSE, Decoder, ERROR, RESIZE, STDERR, STDIN, STDOUT};

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
    from_client: Decoder,
    from_server: Decoder,
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
    pub fn new(started_ms: i64) -> Self {
        Self {
            started_ms,
            from_client: Decoder::default(),
            from_server: Decoder::default(),
            stdin: Utf8Stream::default(),
            stdout: Utf8Stream::default(),
            stderr: Utf8Stream::default(),
            size: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The events `bytes`, seen going `dir` at `at_ms`, complete.
    pub fn feed(&mut self, dir: Direction, at_ms: i64, bytes: &[u8]) -> Result<Vec<Event>, k8s_ws::Error> {
        let time = (at_ms - self.started_ms).max(0) as f64 / 1000.0;
        let messages = match dir {
            Direction::FromClient => {
                self.bytes_in += bytes.len() as u64;
                self.from_client.push(bytes)?
            }
            Direction::FromServer => {
                self.bytes_out += bytes.len() as u64;
                self.from_server.push(bytes)?
            }
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
                    if let Some((w, h)) = resize(&m.data) {
                        self.size = Some((w, h));
                        emit(Code::Resize, format!("{w}x{h}"));
                    }
                }
                (Direction::FromServer, STDOUT) => emit(Code::Output, self.stdout.push(&m.data)),
                (Direction::FromServer, STDERR) => emit(Code::Output, self.stderr.push(&m.data)),
                (Direction::FromServer, ERROR) => emit(Code::Marker, status(&m.data)),
                (_, CLOSE) => {}
                _ => {}
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
    fn a_clean_end_is_exit_0() {
        assert_eq!(status(br#"{"metadata":{},"status":"Success"}"#), "exit 0");
        assert_eq!(status(b"not json"), "not json");
    }
}
