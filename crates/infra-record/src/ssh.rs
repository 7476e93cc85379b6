//! An SSH connection as asciicast events, as a recorder that terminates the
//! user's connection sees it: channels, their requests and their data.
//!
//! Terminal channels (a shell, or a command) are recorded as text: what
//! was typed (`i`), what came back (`o`, stdout and stderr), the terminal's
//! size (`r`). Channels that carry files or connections rather than a
//! terminal (the `sftp` subsystem, `scp`, `rsync`, port forwarding) are
//! recorded as markers (`m`): what was opened, and at its close how many
//! bytes went each way; their bytes are not text and are not kept.

use std::collections::BTreeMap;

use crate::asciicast::{Code, Event, Utf8Stream};

/// What a channel was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Shell,
    Exec(String),
    Subsystem(String),
    /// `ssh -L`: a connection to `host:port` from the host.
    DirectTcpip {
        host: String,
        port: u32,
    },
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    FromClient,
    FromServer,
}

#[derive(Debug, Default)]
struct Channel {
    /// Recorded as text (a terminal), or only counted.
    text: bool,
    what: String,
    stdin: Utf8Stream,
    stdout: Utf8Stream,
    stderr: Utf8Stream,
    bytes_in: u64,
    bytes_out: u64,
}

/// One connection's recorder.
#[derive(Debug)]
pub struct SshRecorder {
    started_ms: i64,
    channels: BTreeMap<u32, Channel>,
    /// The terminal size, once a client asked for one.
    pub size: Option<(u32, u32)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// How the last command or shell ended.
    pub exit: Option<String>,
}

/// Commands that move files, not a terminal's text: exactly the forms
/// scp, rsync and sftp send (`scp … -t|-f PATH`, `rsync --server …`,
/// `…/sftp-server`), and nothing a shell could read as more than one
/// command. Anything else is recorded as text: a command line that only
/// looks like a transfer (`scp; bash -i`) must not hide a shell.
fn transfers_files(command: &str) -> bool {
    // Shell syntax that could run, redirect or substitute anything else.
    if command.contains([
        ';', '&', '|', '$', '`', '(', ')', '<', '>', '\n', '\r', '\\', '\'', '"', '{', '}',
    ]) {
        return false;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let Some(first) = words.first() else { return false };
    match first.rsplit('/').next().unwrap_or(first) {
        "scp" => words[1..].iter().any(|w| matches!(*w, "-t" | "-f")),
        "rsync" => words.get(1) == Some(&"--server"),
        "sftp-server" => true,
        _ => false,
    }
}

impl SshRecorder {
    pub fn new(started_ms: i64) -> Self {
        Self {
            started_ms,
            channels: BTreeMap::new(),
            size: None,
            bytes_in: 0,
            bytes_out: 0,
            exit: None,
        }
    }

    fn event(&self, at_ms: i64, code: Code, data: String) -> Event {
        Event {
            time: (at_ms - self.started_ms).max(0) as f64 / 1000.0,
            code,
            data,
        }
    }

    /// A note in the recording at `at_ms`, such as why the session ended.
    pub fn marker(&self, at_ms: i64, text: impl Into<String>) -> Event {
        self.event(at_ms, Code::Marker, text.into())
    }

    /// The client set `name` to `value` for a channel (sshd's
    /// `AcceptEnv` decides whether it takes it): recorded, as it can change
    /// what the session runs.
    pub fn env(&self, at_ms: i64, name: &str, value: &str) -> Event {
        self.event(at_ms, Code::Marker, format!("env {name}={value}"))
    }

    /// A terminal of `cols`×`rows` (a pty request or a window change).
    pub fn size(&mut self, at_ms: i64, cols: u32, rows: u32) -> Vec<Event> {
        self.size = Some((cols, rows));
        vec![self.event(at_ms, Code::Resize, format!("{cols}x{rows}"))]
    }

    /// Channel `ch` starts `what`.
    pub fn start(&mut self, ch: u32, at_ms: i64, what: Start) -> Vec<Event> {
        let (text, label) = match &what {
            Start::Shell => (true, "shell".to_owned()),
            Start::Exec(c) if transfers_files(c) => (false, format!("file transfer: {c}")),
            Start::Exec(c) => (true, format!("exec: {c}")),
            Start::Subsystem(s) => (false, format!("subsystem {s}")),
            Start::DirectTcpip { host, port } => (false, format!("port forwarding to {host}:{port}")),
        };
        let marker = self.event(at_ms, Code::Marker, label.clone());
        self.channels.insert(
            ch,
            Channel {
                text,
                what: label,
                ..Channel::default()
            },
        );
        vec![marker]
    }

    /// Bytes on channel `ch` going `dir` (`stderr`: the server's extended
    /// data).
    pub fn data(&mut self, ch: u32, at_ms: i64, dir: Direction, stderr: bool, bytes: &[u8]) -> Vec<Event> {
        match dir {
            Direction::FromClient => self.bytes_in += bytes.len() as u64,
            Direction::FromServer => self.bytes_out += bytes.len() as u64,
        }
        let time = (at_ms - self.started_ms).max(0) as f64 / 1000.0;
        let Some(c) = self.channels.get_mut(&ch) else {
            return Vec::new();
        };
        match dir {
            Direction::FromClient => c.bytes_in += bytes.len() as u64,
            Direction::FromServer => c.bytes_out += bytes.len() as u64,
        }
        if !c.text {
            return Vec::new();
        }
        let (code, text) = match (dir, stderr) {
            (Direction::FromClient, _) => (Code::Input, c.stdin.push(bytes)),
            (Direction::FromServer, false) => (Code::Output, c.stdout.push(bytes)),
            (Direction::FromServer, true) => (Code::Output, c.stderr.push(bytes)),
        };
        if text.is_empty() {
            return Vec::new();
        }
        vec![Event { time, code, data: text }]
    }

    /// The command or shell on `ch` ended: `exit 0`, or the signal.
    pub fn exit(&mut self, ch: u32, at_ms: i64, how: String) -> Vec<Event> {
        let label = match self.channels.get(&ch) {
            Some(c) if !c.text => format!("{} ended: {how}", c.what),
            _ => how.clone(),
        };
        self.exit = Some(how);
        vec![self.event(at_ms, Code::Marker, label)]
    }

    /// Channel `ch` closed: for one only counted, how much it carried.
    pub fn close(&mut self, ch: u32, at_ms: i64) -> Vec<Event> {
        match self.channels.remove(&ch) {
            Some(c) if !c.text => vec![self.event(
                at_ms,
                Code::Marker,
                format!("{} closed: {} bytes in, {} bytes out", c.what, c.bytes_in, c.bytes_out),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(events: Vec<Event>) -> Vec<String> {
        events.iter().map(Event::line).collect()
    }

    #[test]
    fn a_shell_is_text_and_a_transfer_is_counted() {
        let mut r = SshRecorder::new(0);
        let mut all = Vec::new();
        all.extend(r.size(0, 120, 40));
        all.extend(r.start(0, 10, Start::Shell));
        all.extend(r.data(0, 500, Direction::FromClient, false, b"ls\r"));
        all.extend(r.data(0, 600, Direction::FromServer, false, b"ls\r\nnotes.txt\r\n"));
        all.extend(r.data(0, 610, Direction::FromServer, true, b"warning\r\n"));
        all.extend(r.start(1, 700, Start::Subsystem("sftp".into())));
        all.extend(r.data(1, 710, Direction::FromClient, false, &[0, 0, 0, 5, 1, 0, 0, 0, 3]));
        all.extend(r.data(1, 720, Direction::FromServer, false, &[0xff, 0xfe]));
        all.extend(r.close(1, 800));
        all.extend(r.start(2, 900, Start::Exec("scp -t /tmp".into())));
        all.extend(r.close(2, 950));
        all.extend(r.start(
            3,
            960,
            Start::DirectTcpip {
                host: "db".into(),
                port: 5432,
            },
        ));
        all.extend(r.close(3, 970));
        all.extend(r.exit(0, 1_000, "exit 0".into()));
        assert_eq!(
            lines(all),
            [
                r#"[0.0,"r","120x40"]"#,
                r#"[0.01,"m","shell"]"#,
                r#"[0.5,"i","ls\r"]"#,
                r#"[0.6,"o","ls\r\nnotes.txt\r\n"]"#,
                r#"[0.61,"o","warning\r\n"]"#,
                r#"[0.7,"m","subsystem sftp"]"#,
                r#"[0.8,"m","subsystem sftp closed: 9 bytes in, 2 bytes out"]"#,
                r#"[0.9,"m","file transfer: scp -t /tmp"]"#,
                r#"[0.95,"m","file transfer: scp -t /tmp closed: 0 bytes in, 0 bytes out"]"#,
                r#"[0.96,"m","port forwarding to db:5432"]"#,
                r#"[0.97,"m","port forwarding to db:5432 closed: 0 bytes in, 0 bytes out"]"#,
                r#"[1.0,"m","exit 0"]"#,
            ]
        );
        assert_eq!((r.bytes_in, r.bytes_out), (12, 26));
        assert_eq!(r.exit.as_deref(), Some("exit 0"));
    }

    #[test]
    fn an_environment_request_is_a_marker() {
        let r = SshRecorder::new(1_000);
        assert_eq!(r.env(1_500, "LC_X", "1").line(), r#"[0.5,"m","env LC_X=1"]"#);
    }

    #[test]
    fn an_exec_is_text_unless_it_moves_files() {
        assert!(transfers_files("scp -f /etc/hosts"));
        assert!(transfers_files("/usr/bin/scp -t ."));
        assert!(transfers_files("rsync --server -vlogDtpre.iLsfxC . /tmp"));
        assert!(!transfers_files("uptime"));
        assert!(!transfers_files("echo scp"));
        // What only looks like a transfer is recorded as text.
        for hidden in [
            "scp 2>/dev/null; bash -i",
            "scp -t /tmp && sh",
            "true rsync --server; sh -i",
            "rsync --server $(sh)",
            "scp -t `sh`",
            "scp -t /tmp\nsh",
            "scp -t x | sh",
            "scp",
            "rsync --daemon",
        ] {
            assert!(!transfers_files(hidden), "{hidden:?}");
        }
    }
}
