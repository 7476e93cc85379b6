//! The recording of one SSH connection in recording mode, shared by its
//! channels' tasks: events written down before what they describe is
//! passed on, and closed with how the connection ended.

use infra_record::ssh::SshRecorder;

use crate::clock::now_ms;
use crate::recording::{Writing, marker_line};

/// What the recording is written to, shared by the channels' tasks.
pub(crate) struct Tape {
    pub(crate) rec: SshRecorder,
    /// `None` once closed, and for a session let run unrecorded.
    pub(crate) out: Option<Writing>,
    /// `onFull: allow-unrecorded` let this session run with no recording.
    pub(crate) unrecorded: bool,
}

impl Tape {
    /// Writes `events` down; `Err` ends the session (fail closed).
    pub(crate) fn put(&mut self, events: Vec<infra_record::asciicast::Event>) -> Result<(), String> {
        if events.is_empty() || self.unrecorded {
            return Ok(());
        }
        let mut text = Vec::new();
        for e in &events {
            e.write_line(&mut text);
        }
        let Some(out) = self.out.as_mut() else {
            return Err("the recording is closed".into());
        };
        if !out.has_room(text.len()) {
            let why = "the recording reached its size limit (recordings.maxSize): the session ends";
            let time = events.first().map_or(0.0, |e| e.time);
            let _ = out.append(marker_line(time, why).as_bytes());
            return Err(why.into());
        }
        out.append(&text).map_err(|e| format!("{e:#}"))
    }

    /// Closes the recording: a last marker when the session did not end by
    /// itself, then how it ended.
    pub(crate) fn close(&mut self, ended: &str) {
        let Some(mut out) = self.out.take() else { return };
        if ended != "closed" {
            let note = match ended {
                "revoked" => "session ended: access revoked",
                _ => "session ended: connection error",
            };
            let e = self.rec.marker(now_ms(), note);
            let _ = out.append(format!("{}\n", e.line()).as_bytes());
        }
        let exit = self.rec.exit.clone().unwrap_or_else(|| ended.to_owned());
        out.finish(exit, self.rec.bytes_in, self.rec.bytes_out);
    }
}
