//! Session recordings on the connector: the spool they are written to and
//! the shipper that sends them to the server.
//!
//! A recorded session writes its asciicast file here as it runs
//! (`recordings/ID.cast`, beside `ID.json`, what the session is), and the
//! shipper sends what the server does not have yet, in pieces of whole
//! lines, over whichever control stream is up. The files are deleted only
//! when the server says the recording is stored and its digest is in the
//! audit log: a server, or a recording store, that is down means the files
//! wait, and the shipper tries again with back-off, forever. What waits
//! counts against a disk budget; a recorded destination's `onFull` decides
//! what a new session does once it is spent.
//!
//! *What a `kill -9` loses:* nothing written. A recording found open at
//! start was cut short: its torn last line is dropped, a marker says so,
//! and it is shipped marked truncated.

pub(crate) mod tap;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use infra_record::asciicast::{Code, Event, Header};
use infra_tunnel::body::LineSender;
use infra_tunnel::proto::{ConnectorMsg, RecordingChunk, RecordingMeta};
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::OnFull;

/// The most one piece carries; lines are far shorter (see `tap`).
const PIECE: u64 = 256 * 1024;
/// A piece not acknowledged within this was lost with its stream.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Back-off between attempts to have a finished recording stored.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

pub(crate) struct Recordings {
    dir: PathBuf,
    budget: u64,
    /// The most one recording may hold.
    max: u64,
    inner: Mutex<Inner>,
    wake: Notify,
}

#[derive(Default)]
struct Inner {
    local: BTreeMap<String, Local>,
    /// The control streams up now, by a number of their own.
    streams: Vec<(u64, LineSender)>,
    next_stream: u64,
}

/// One recording kept here.
struct Local {
    meta: RecordingMeta,
    /// Bytes of whole lines in the file.
    size: u64,
    /// What the server says it has.
    acked: u64,
    /// The session still runs.
    open: bool,
    /// A piece is on its way on this stream, since then.
    in_flight: Option<(u64, Instant)>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// What [`Recordings::admit`] says of a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It runs, recorded.
    Record,
    /// It runs unrecorded; the audit detail says why.
    Unrecorded(String),
    /// It is refused, with this message for the user.
    Refused(String),
}

/// What a metrics scrape or a health check reads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Waiting {
    pub(crate) recordings: usize,
    pub(crate) bytes: u64,
}

impl Recordings {
    /// Opens the spool in `dir`, closing the recordings a previous run
    /// left open as truncated.
    pub(crate) fn open(dir: &Path, budget: u64, max: u64) -> anyhow::Result<Arc<Self>> {
        // What was typed is in here: this user's only.
        {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("make {} private", dir.display()))?;
        }
        let mut local = BTreeMap::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match reopen(dir, id) {
                Ok(l) => {
                    local.insert(id.to_owned(), l);
                }
                Err(e) => {
                    tracing::warn!(recording = id, error = %format!("{e:#}"), "cannot read a spooled recording; left on disk")
                }
            }
        }
        if !local.is_empty() {
            tracing::info!(
                recordings = local.len(),
                "session recordings from an earlier run will be shipped"
            );
        }
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            budget,
            max,
            inner: Mutex::new(Inner {
                local,
                ..Inner::default()
            }),
            wake: Notify::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves plain data behind: go on.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn waiting(&self) -> Waiting {
        let g = self.lock();
        Waiting {
            recordings: g.local.len(),
            bytes: g.local.values().map(|l| l.size).sum(),
        }
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// Whether a new session on `destination` may start, and recorded or
    /// not: the one rule for every kind of recorded session. While the
    /// spool has spent its budget, the destination's `onFull` decides.
    pub(crate) fn admit(&self, destination: &str, on_full: OnFull) -> Admission {
        let waiting = self.waiting();
        if waiting.bytes < self.budget {
            return Admission::Record;
        }
        match on_full {
            OnFull::RefuseNewSessions => Admission::Refused(format!(
                "sessions on {destination} are recorded, and this connector's recording spool is full ({} recordings, {} bytes waiting for the server; budget {} bytes): new sessions are refused until they are shipped",
                waiting.recordings, waiting.bytes, self.budget
            )),
            OnFull::AllowUnrecorded => Admission::Unrecorded(
                "warning=not-recorded: the recording spool is full (onFull: allow-unrecorded)".into(),
            ),
        }
    }

    /// Starts a recording: its description, then its header line.
    pub(crate) fn start(self: &Arc<Self>, meta: RecordingMeta, title: String) -> anyhow::Result<Writing> {
        let id = infra_auth::random_token(24)?;
        write_meta(&self.dir, &id, &meta)?;
        let path = self.dir.join(format!("{id}.cast"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let mut header = Header::new(80, 24, meta.started_ms / 1000);
        header.title = Some(title);
        let mut w = Writing {
            recs: self.clone(),
            id: id.clone(),
            file,
            meta: meta.clone(),
            failed: false,
            size: 0,
        };
        self.lock().local.insert(
            id,
            Local {
                meta,
                size: 0,
                acked: 0,
                open: true,
                in_flight: None,
                retry_at: None,
                backoff: FIRST_RETRY,
            },
        );
        w.append(format!("{}\n", header.line()).as_bytes())?;
        Ok(w)
    }

    /// A control stream is up: pieces may go out on it until the guard is
    /// dropped.
    pub(crate) fn attach(self: &Arc<Self>, tx: LineSender) -> Attached {
        let mut g = self.lock();
        let n = g.next_stream;
        g.next_stream += 1;
        g.streams.push((n, tx));
        drop(g);
        self.wake.notify_one();
        Attached { recs: self.clone(), n }
    }

    /// The server's answer about one recording.
    pub(crate) fn ack(&self, id: &str, have: u64, stored: bool, error: Option<String>) {
        let mut g = self.lock();
        let Some(l) = g.local.get_mut(id) else { return };
        l.in_flight = None;
        l.acked = have.min(l.size);
        if stored {
            g.local.remove(id);
            drop(g);
            for ext in ["cast", "json"] {
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.{ext}")));
            }
            tracing::debug!(recording = id, "recording stored by the server");
        } else if let Some(e) = error {
            l.retry_at = Some(Instant::now() + l.backoff);
            tracing::warn!(recording = id, retry_in = ?l.backoff, error = %e, "the server cannot store a recording yet; it stays here");
            l.backoff = (l.backoff * 2).min(LAST_RETRY);
        }
        self.wake.notify_one();
    }

    /// Sends what the server does not have, for as long as the connector
    /// runs.
    pub(crate) async fn ship(self: Arc<Self>) {
        loop {
            let woke = self.wake.notified();
            tokio::pin!(woke);
            woke.as_mut().enable();
            for (n, tx, piece) in self.due() {
                let chunk = match self.read_piece(piece) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "cannot read a spooled recording");
                        continue;
                    }
                };
                let id = chunk.id.clone();
                if tx.send(&ConnectorMsg::Recording(chunk)).await.is_err() {
                    self.detach(n);
                    if let Some(l) = self.lock().local.get_mut(&id) {
                        l.in_flight = None;
                    }
                }
            }
            tokio::select! {
                () = woke => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The pieces to send now, each marked in flight.
    fn due(&self) -> Vec<(u64, LineSender, Piece)> {
        let mut g = self.lock();
        let Some((n, tx)) = g.streams.first().cloned() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in &mut g.local {
            if l.in_flight.is_some_and(|(_, at)| now.duration_since(at) < ACK_WAIT) {
                continue;
            }
            // After a refusal, nothing of it goes again before its time.
            if l.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let more = l.size > l.acked;
            let finish = !l.open;
            if !(more || finish) {
                continue;
            }
            l.in_flight = Some((n, now));
            l.retry_at = None;
            out.push((
                n,
                tx.clone(),
                Piece {
                    id: id.clone(),
                    from: l.acked,
                    to: l.size,
                    open: l.open,
                    meta: l.meta.clone(),
                },
            ));
        }
        out
    }

    fn read_piece(&self, p: Piece) -> anyhow::Result<RecordingChunk> {
        let mut data = Vec::new();
        if p.to > p.from {
            let path = self.dir.join(format!("{}.cast", p.id));
            let mut f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
            f.seek(SeekFrom::Start(p.from))?;
            f.take(PIECE.min(p.to - p.from)).read_to_end(&mut data)?;
            // Whole lines only: the server appends text.
            if p.from + (data.len() as u64) < p.to {
                let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                data.truncate(end);
            }
        }
        let last = p.from + data.len() as u64 == p.to && !p.open;
        let mut meta = p.meta;
        if !last {
            meta.ended_ms = None;
        }
        Ok(RecordingChunk {
            id: p.id,
            offset: p.from,
            data: String::from_utf8(data).context("a spooled recording is not UTF-8")?,
            meta,
        })
    }

    fn detach(&self, n: u64) {
        let mut g = self.lock();
        g.streams.retain(|(m, _)| *m != n);
        for l in g.local.values_mut() {
            if l.in_flight.is_some_and(|(m, _)| m == n) {
                l.in_flight = None;
            }
        }
    }
}

/// What to read and send of one recording.
struct Piece {
    id: String,
    from: u64,
    to: u64,
    open: bool,
    meta: RecordingMeta,
}

/// A control stream pieces go out on, for as long as this lives.
pub(crate) struct Attached {
    recs: Arc<Recordings>,
    n: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.recs.detach(self.n);
        self.recs.wake.notify_one();
    }
}

/// A recording being written by its session.
pub(crate) struct Writing {
    recs: Arc<Recordings>,
    id: String,
    file: File,
    meta: RecordingMeta,
    failed: bool,
    size: u64,
}

impl Writing {
    /// Whether `len` more bytes stay within the most one recording may
    /// hold (`recordings.maxSize`).
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.size.saturating_add(len as u64) <= self.recs.max
    }

    /// Appends whole lines and offers them for shipping. A failed write
    /// fails the session: it must not go on unrecorded.
    pub(crate) fn append(&mut self, lines: &[u8]) -> anyhow::Result<()> {
        if self.failed {
            anyhow::bail!("the recording could not be written");
        }
        if let Err(e) = self.file.write_all(lines) {
            self.failed = true;
            return Err(e).with_context(|| format!("write recording {}", self.id));
        }
        self.size += lines.len() as u64;
        if let Some(l) = self.recs.lock().local.get_mut(&self.id) {
            l.size += lines.len() as u64;
        }
        self.recs.wake.notify_one();
        Ok(())
    }

    /// The session ended: say how, and let the recording be stored.
    pub(crate) fn finish(mut self, exit: String, bytes_in: u64, bytes_out: u64) {
        self.meta.ended_ms = Some(now_ms());
        self.meta.exit = exit;
        self.meta.bytes_in = bytes_in;
        self.meta.bytes_out = bytes_out;
        let _ = self.file.sync_data();
        if let Err(e) = write_meta(&self.recs.dir, &self.id, &self.meta) {
            tracing::error!(recording = %self.id, error = %format!("{e:#}"), "cannot write a recording's description");
        }
        if let Some(l) = self.recs.lock().local.get_mut(&self.id) {
            l.meta = self.meta.clone();
            l.open = false;
        }
        self.recs.wake.notify_one();
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// What the recording is of, as known now.
    pub(crate) fn meta(&self) -> &RecordingMeta {
        &self.meta
    }

    /// Fills in what is learnt once the session runs (an SSH login is known
    /// only after authentication): kept here and sent with the next piece.
    pub(crate) fn describe(&mut self, f: impl FnOnce(&mut RecordingMeta)) {
        f(&mut self.meta);
        if let Err(e) = write_meta(&self.recs.dir, &self.id, &self.meta) {
            tracing::error!(recording = %self.id, error = %format!("{e:#}"), "cannot write a recording's description");
        }
        if let Some(l) = self.recs.lock().local.get_mut(&self.id) {
            l.meta = self.meta.clone();
        }
    }
}

/// A marker event at `time` (seconds into the recording), as a line.
pub(crate) fn marker_line(time: f64, why: &str) -> String {
    format!(
        "{}\n",
        Event {
            time,
            code: Code::Marker,
            data: why.to_owned(),
        }
        .line()
    )
}

fn write_meta(dir: &Path, id: &str, meta: &RecordingMeta) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{id}.json.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec(meta)?)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))?;
    Ok(())
}

/// A recording left by an earlier run. One still open then was cut short:
/// the torn end of its last line goes, a marker says why, and it is
/// closed as truncated at the time it was last written.
fn reopen(dir: &Path, id: &str) -> anyhow::Result<Local> {
    let mut meta: RecordingMeta = serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json")))?)?;
    let path = dir.join(format!("{id}.cast"));
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if meta.ended_ms.is_none() {
        file.set_len(whole as u64)?;
        let last = file.metadata()?.modified().ok().map_or_else(now_ms, |t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let mut tail = String::new();
        if whole == 0 {
            tail.push_str(&Header::new(80, 24, meta.started_ms / 1000).line());
            tail.push('\n');
        }
        // Never before the last event, whatever the clock did.
        let last_event = std::str::from_utf8(&text[..whole])
            .ok()
            .and_then(|t| t.lines().last())
            .and_then(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
            .map_or(0.0, |e| e.0);
        let marker = Event {
            time: ((last - meta.started_ms).max(0) as f64 / 1000.0).max(last_event),
            code: Code::Marker,
            data: "recording truncated: the connector stopped".into(),
        };
        tail.push_str(&marker.line());
        tail.push('\n');
        file.write_all(tail.as_bytes())?;
        file.sync_data()?;
        meta.ended_ms = Some(last);
        meta.truncated = true;
        if meta.exit.is_empty() {
            meta.exit = "truncated".into();
        }
        write_meta(dir, id, &meta)?;
    }
    let size = file.metadata()?.len();
    Ok(Local {
        meta,
        size,
        acked: 0,
        open: false,
        in_flight: None,
        retry_at: None,
        backoff: FIRST_RETRY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RecordingMeta {
        RecordingMeta {
            kind: infra_tunnel::proto::RecordingKind::Ssh,
            user: "alice@example.com".into(),
            destination: "web".into(),
            source: String::new(),
            target: String::new(),
            command: String::new(),
            started_ms: 0,
            ended_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            exit: String::new(),
            truncated: false,
        }
    }

    #[test]
    fn a_spent_budget_refuses_or_lets_through_as_the_destination_says() {
        let dir = tempfile::tempdir().unwrap();
        let recs = Recordings::open(dir.path(), 1, 1 << 20).unwrap();
        for on_full in [OnFull::RefuseNewSessions, OnFull::AllowUnrecorded] {
            assert_eq!(recs.admit("web", on_full), Admission::Record);
        }
        // A running session's header alone passes one byte.
        let mut w = recs.start(meta(), "title".into()).unwrap();
        match recs.admit("web", OnFull::RefuseNewSessions) {
            Admission::Refused(why) => assert!(why.contains("recording spool is full"), "{why}"),
            other => panic!("{other:?}"),
        }
        match recs.admit("web", OnFull::AllowUnrecorded) {
            Admission::Unrecorded(why) => assert!(why.starts_with("warning=not-recorded"), "{why}"),
            other => panic!("{other:?}"),
        }
        // What is learnt later is kept with it, on disk too.
        w.describe(|m| m.target = "deploy".into());
        let on_disk: RecordingMeta =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{}.json", w.id()))).unwrap()).unwrap();
        assert_eq!(on_disk.target, "deploy");
    }
}
