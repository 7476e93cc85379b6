//! The recorder on a Kubernetes `exec`/`attach` stream: both directions
//! pass through it, each chunk is recorded before it is forwarded, and the
//! recording closes when both directions have ended.
//!
//! A stream the recorder cannot read (not the WebSocket stream protocol)
//! or cannot write down ends: a recorded destination never carries a
//! session that is not recorded.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use infra_record::asciicast::Code;
use infra_record::exec::{Direction, ExecRecorder};
use infra_tunnel::proto::{RecordingKind, RecordingMeta};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Admission, Writing, marker_line};
use crate::admit::Admitted;
use crate::answer::Call;
use crate::clock::now_ms;

/// The most text one event holds: a large read of output becomes several
/// events at the same time, so every line stays short.
const EVENT_TEXT: usize = 16 * 1024;

pub(crate) struct Tap {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Without a terminal on the far side, output has bare line feeds that
    /// the user's own terminal showed as new lines: recorded that way.
    tty: bool,
    started_ms: i64,
    last_ms: i64,
    rec: ExecRecorder,
    out: Option<Writing>,
    exit: Option<String>,
}

impl Tap {
    pub(crate) fn new(out: Writing, plan: &Plan) -> Arc<Self> {
        let started_ms = plan.meta.started_ms;
        Arc::new(Self {
            inner: Mutex::new(Inner {
                tty: plan.tty,
                started_ms,
                last_ms: started_ms,
                rec: if plan.spdy {
                    ExecRecorder::spdy(started_ms)
                } else {
                    ExecRecorder::new(started_ms)
                },
                out: Some(out),
                exit: None,
            }),
        })
    }

    /// Records `bytes` going `dir`; `Err` ends the session.
    fn feed(&self, dir: Direction, bytes: &[u8]) -> Result<(), String> {
        let mut g = self.inner.lock().map_err(|_| "recorder poisoned".to_owned())?;
        let inner = &mut *g;
        // Times never go back in a recording, whatever the clock does.
        let at = now_ms().max(inner.last_ms);
        inner.last_ms = at;
        let events = match inner.rec.feed(dir, at, bytes) {
            Ok(e) => e,
            Err(e) => {
                let why = format!("the stream cannot be recorded: {e}");
                let time = (at - inner.started_ms).max(0) as f64 / 1000.0;
                if let Some(out) = inner.out.as_mut() {
                    let _ = out.append(marker_line(time, &why).as_bytes());
                }
                return Err(why);
            }
        };
        if events.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for mut e in events {
            if e.code == Code::Marker {
                inner.exit = Some(e.data.clone());
            }
            if e.code == Code::Output && !inner.tty {
                e.data = as_shown(&e.data);
            }
            for piece in pieces(&e.data) {
                infra_record::asciicast::write_event(&mut text, e.time, e.code, piece);
            }
        }
        let Some(out) = inner.out.as_mut() else {
            return Err("the recording is closed".into());
        };
        if !out.has_room(text.len()) {
            // Fail closed: the session ends with its recording, marked.
            let time = (at - inner.started_ms).max(0) as f64 / 1000.0;
            let why = "the recording reached its size limit (recordings.maxSize): the session ends";
            let _ = out.append(marker_line(time, why).as_bytes());
            return Err(why.into());
        }
        out.append(&text).map_err(|e| format!("{e:#}"))
    }

    /// The recording's id.
    pub(crate) fn id(&self) -> String {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.out.as_ref().map(|o| o.id().to_owned()))
            .unwrap_or_default()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if let Some(out) = inner.out.take() {
            let exit = inner.exit.clone().unwrap_or_else(|| "ended".into());
            out.finish(exit, inner.rec.bytes_in, inner.rec.bytes_out);
        }
    }
}

/// Output without a terminal as a terminal shows it: each bare line feed
/// as a new line (`\r\n`), as the user's terminal turned it.
fn as_shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    for (i, part) in s.split('\n').enumerate() {
        if i > 0 {
            if !out.ends_with('\r') {
                out.push('\r');
            }
            out.push('\n');
        }
        out.push_str(part);
    }
    out
}

/// `data` in pieces of at most [`EVENT_TEXT`] bytes, cut between
/// characters: a large read of output becomes several events at the same
/// time.
fn pieces(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(EVENT_TEXT);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, after) = rest.split_at(cut);
        rest = after;
        Some(piece)
    })
}

/// The client's bytes (the tunnel request body) into the upstream,
/// recorded on the way.
pub(crate) async fn from_client<B, W>(mut body: B, mut w: W, tap: Arc<Tap>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    W: AsyncWrite + Unpin,
{
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(d) = frame.into_data() else { continue };
        if let Err(why) = tap.feed(Direction::FromClient, &d) {
            tracing::warn!(recording = %tap.id(), reason = %why, "ending a recorded session");
            break;
        }
        if w.write_all(&d).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// The upstream's bytes to the client, recorded on the way.
pub(crate) async fn from_server<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<Bytes>, tap: Arc<Tap>) {
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(infra_tunnel::body::READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let chunk = buf.split().freeze();
                if let Err(why) = tap.feed(Direction::FromServer, &chunk) {
                    tracing::warn!(recording = %tap.id(), reason = %why, "ending a recorded session");
                    return;
                }
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A session to record: what it is, and whether it has a terminal.
pub(crate) struct Plan {
    pub(crate) meta: RecordingMeta,
    pub(crate) tty: bool,
    /// Framed as SPDY/3.1, not WebSocket.
    pub(crate) spdy: bool,
}

/// Whether this request starts a session to record, and what it is: an
/// `exec` or `attach` on a recorded cluster. `Err` is the refusal (status
/// and message) of a session that cannot be recorded.
pub(crate) fn plan(
    a: &Admitted,
    call: &Call,
    upgrade: Option<&http::HeaderValue>,
) -> Result<Option<Plan>, (u16, String)> {
    let (Some(on_full), Some(info), Some(proto)) = (a.route.recording, &call.info, upgrade) else {
        return Ok(None);
    };
    // Fail closed: every upgraded stream of a recorded cluster is recorded
    // (exec, attach, and any other, such as a proxy's, which ends if the
    // recorder cannot read it), except port-forward, which carries a
    // connection's bytes and no terminal.
    if info.subresource == "portforward" {
        return Ok(None);
    }
    let name = &a.route.name;
    match a.state.recordings.admit(name, on_full) {
        Admission::Record => {}
        Admission::Refused(why) => return Err((503, why)),
        Admission::Unrecorded(why) => {
            a.audit
                .record(infra_tunnel::proto::Outcome::Success, call.detail(0, 0, &why));
            return Ok(None);
        }
    }
    // WebSocket (kubectl 1.30+ with clusters 1.30+) or SPDY/3.1 (the rest).
    let spdy = !proto.as_bytes().eq_ignore_ascii_case(b"websocket");
    let query = call.path.split_once('?').map_or("", |(_, q)| q);
    let mut container = None;
    let mut command = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            // The first, as the API server takes it.
            "container" if container.is_none() => container = Some(v.into_owned()),
            "command" => command.push(v.into_owned()),
            _ => {}
        }
    }
    let container = container.unwrap_or_default();
    // As the API server reads it: the first `tty`, anything but false.
    let tty = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "tty")
        .is_some_and(|(_, v)| !matches!(&*v, "" | "0" | "false" | "False" | "FALSE"));
    let mut target = format!("{}/{}", info.namespace, info.name);
    if !container.is_empty() {
        target = format!("{target}/{container}");
    }
    Ok(Some(Plan {
        tty,
        spdy,
        meta: RecordingMeta {
            kind: RecordingKind::KubeExec,
            user: a.ident.email.clone(),
            destination: name.clone(),
            source: a.source.clone(),
            target,
            command: command.join(" "),
            started_ms: now_ms(),
            ended_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            exit: String::new(),
            truncated: false,
        },
    }))
}

/// The title a player shows.
pub(crate) fn title(m: &RecordingMeta) -> String {
    let what = if m.command.is_empty() { "attach" } else { &m.command };
    format!("{} on {}: {} ({what})", m.user, m.destination, m.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_without_a_terminal_is_recorded_as_shown() {
        assert_eq!(as_shown("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
    }

    #[test]
    fn long_output_is_cut_between_characters() {
        let data = "é".repeat(EVENT_TEXT);
        let parts: Vec<&str> = pieces(&data).collect();
        assert!(parts.len() >= 2);
        assert!(parts.iter().all(|p| p.len() <= EVENT_TEXT));
        assert_eq!(parts.concat(), data);
        assert_eq!(pieces("").count(), 0);
    }
}
