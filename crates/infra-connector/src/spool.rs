//! The audit spool: every event is written to a local file before it is
//! shipped, and forgotten only when the server says it is stored.
//!
//! A request's part is small: [`Spool::record`] numbers the event and
//! puts it in a queue, under a lock held for a push. Nothing is encoded
//! and no system call is made on the request's thread. One writer thread
//! takes everything queued at once, encodes each event once (the line
//! written to the file is the line shipped to the server), writes the
//! batch with one `write`, and only then offers it for shipping: the server
//! never holds an event the connector's disk does not.
//!
//! Events are numbered per connector instance; the server stores each
//! number once, so a resend after a reconnect or restart is never a
//! duplicate, and a connector cut off from the server loses nothing.
//!
//! One exception: an event a response must not end without
//! ([`Spool::record_now`]) is written by the request itself when no write
//! is in progress, with whatever else is queued; that is cheaper than
//! waking the writer and being woken back (measured: the round trip cost
//! direct mode about 5% of its requests a second).
//!
//! *What a `kill -9` can lose:* the events queued and not yet written,
//! which is what the writer has not reached (under load, a millisecond's
//! worth). Written events survive the process (they are in the OS's page
//! cache), and are synced to the disk every `SYNC_EVERY`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use infra_tunnel::proto::{AccessEvent, ConnectorMsg};
use tokio::sync::Notify;

/// Events queued and not yet written, at most, before new streams are
/// refused (see [`Spool::overloaded`]). Streams already let in still
/// record theirs: an event is never dropped.
pub(crate) const MAX_QUEUED: usize = 65_536;

pub(crate) struct Spool {
    /// What requests touch: the numbering and the queue.
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue stops being empty.
    wake: Condvar,
    queued: AtomicUsize,
    /// The last event number written to the file.
    written: AtomicI64,
    /// What the writer, the shipper and acknowledgements touch.
    inner: Mutex<Inner>,
    /// Woken when events are written, so ready to ship.
    pub(crate) added: Notify,
}

struct Queue {
    next_seq: i64,
    events: Vec<AccessEvent>,
}

/// One event as written to the file and sent to the server: a
/// `ConnectorMsg::Audit` JSON line.
#[derive(Clone)]
pub(crate) struct Line {
    pub(crate) seq: i64,
    pub(crate) bytes: Bytes,
    /// When it was written (or reloaded): its ship lag ends at the ack.
    pub(crate) written: std::time::Instant,
}

struct Inner {
    acked: i64,
    pending: VecDeque<Line>,
    file: File,
    path: PathBuf,
    acked_path: PathBuf,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, reloading unacknowledged
    /// events, and starts its writer thread.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("audit-spool.jsonl");
        let acked_path = dir.join("audit-acked");
        let acked: i64 = std::fs::read_to_string(&acked_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut pending = VecDeque::new();
        let mut last = acked;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                // A torn last line (crash mid-write) is skipped; every
                // complete line before it is kept.
                let Some(ev) = decode(&line?) else { continue };
                last = last.max(ev.seq);
                if ev.seq > acked {
                    pending.push_back(Line {
                        written: std::time::Instant::now(),
                        seq: ev.seq,
                        bytes: encode_one(&ev),
                    });
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let spool = Arc::new(Self {
            queue: Mutex::new(Queue {
                next_seq: last + 1,
                events: Vec::new(),
            }),
            wake: Condvar::new(),
            queued: AtomicUsize::new(0),
            written: AtomicI64::new(last),
            inner: Mutex::new(Inner {
                acked,
                pending,
                file,
                path,
                acked_path,
            }),
            added: Notify::new(),
        });
        let weak = Arc::downgrade(&spool);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(&weak))
            .context("start the audit writer")?;
        Ok(spool)
    }

    /// Numbers an event and queues it for the writer; returns its number.
    pub(crate) fn record(&self, ev: AccessEvent) -> i64 {
        let (seq, first) = self.push(ev);
        // One wake-up per batch: a writer that is busy finds the rest
        // when it comes back for more.
        if first {
            self.wake.notify_one();
        }
        seq
    }

    /// Records an event that must be in the file before its caller goes
    /// on (a response's last frame). When nobody is writing, the caller
    /// writes what is queued itself, its event included: no hand-off to
    /// the writer thread and back. Returns the number to wait for with
    /// [`Spool::written`] when someone else is writing.
    pub(crate) fn record_now(&self, ev: AccessEvent) -> Option<i64> {
        let (seq, _) = self.push(ev);
        match self.inner.try_lock() {
            Ok(g) => {
                self.write_locked(g);
                None
            }
            Err(_) => {
                self.wake.notify_one();
                Some(seq)
            }
        }
    }

    /// Numbers `ev` and queues it; returns its number and whether the
    /// queue was empty.
    fn push(&self, mut ev: AccessEvent) -> (i64, bool) {
        let Ok(mut q) = self.queue.lock() else {
            return (0, false);
        };
        let seq = q.next_seq;
        ev.seq = seq;
        q.next_seq += 1;
        q.events.push(ev);
        // Counted under the queue's lock: the writer takes events under
        // it too, so it never subtracts an event not yet added (the count
        // would wrap, and every stream be refused as overloaded).
        self.queued.fetch_add(1, Ordering::Relaxed);
        (seq, q.events.len() == 1)
    }

    /// Returns once event `seq` is in the file (it then survives this
    /// process being killed).
    pub(crate) async fn written(self: Arc<Self>, seq: i64) {
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            // Registered before the check, so a write between the two is
            // not missed.
            added.as_mut().enable();
            if self.written.load(Ordering::Acquire) >= seq {
                return;
            }
            added.await;
        }
    }

    /// The writer is behind by more than [`MAX_QUEUED`] events: new
    /// streams are refused until it catches up.
    pub(crate) fn overloaded(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > MAX_QUEUED
    }

    /// Writes everything queued: encoded once, one `write`, then offered
    /// for shipping.
    fn write_out(&self) {
        if let Ok(g) = self.inner.lock() {
            self.write_locked(g);
        }
    }

    fn write_locked(&self, mut g: std::sync::MutexGuard<'_, Inner>) {
        // The file's lock is held while the queue is taken, so two
        // writers (the thread, a flush, a request) keep the order.
        let events = match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut q.events),
            Err(_) => return,
        };
        if events.is_empty() {
            return;
        }
        let mut buf = BytesMut::with_capacity(events.len() * 256);
        let mut seqs = Vec::with_capacity(events.len());
        for ev in &events {
            let start = buf.len();
            encode_into(&mut buf, ev);
            seqs.push((ev.seq, start, buf.len()));
        }
        if let Err(e) = g.file.write_all(&buf) {
            tracing::error!(error = %e, "cannot write the audit spool; the events are kept in memory only");
        }
        let all = buf.freeze();
        let last = seqs.last().map_or(0, |s| s.0);
        for (seq, start, end) in seqs {
            g.pending.push_back(Line {
                written: std::time::Instant::now(),
                seq,
                bytes: all.slice(start..end),
            });
        }
        self.written.fetch_max(last, Ordering::Release);
        // Before the lock is let go: whoever takes it next (a flush) sees
        // the count without these events.
        self.queued.fetch_sub(events.len(), Ordering::Relaxed);
        drop(g);
        self.added.notify_waiters();
    }

    /// Written events after `after`, for shipping (at most `max`).
    pub(crate) fn after(&self, after: i64, max: usize) -> Vec<Line> {
        let Ok(g) = self.inner.lock() else { return vec![] };
        let start = g.pending.partition_point(|e| e.seq <= after);
        g.pending.range(start..).take(max).cloned().collect()
    }

    /// The server stored everything up to `seq`.
    pub(crate) fn ack(&self, seq: i64) {
        let Ok(mut g) = self.inner.lock() else { return };
        if seq <= g.acked {
            return;
        }
        g.acked = seq;
        let mut newest = None;
        while g.pending.front().is_some_and(|e| e.seq <= seq) {
            newest = g.pending.pop_front().map(|l| l.written);
        }
        if let Some(w) = newest {
            crate::metrics::METRICS
                .audit_ship_lag
                .observe(w.elapsed().as_secs_f64());
        }
        let _ = std::fs::write(&g.acked_path, seq.to_string());
        if g.pending.is_empty() {
            // Everything written is stored: start the file afresh (the
            // writer holds this lock while it writes, so nothing is cut).
            if let Ok(f) = OpenOptions::new().create(true).write(true).truncate(true).open(&g.path) {
                g.file = f;
            }
        }
    }

    /// Events not yet stored by the server, written or queued.
    pub(crate) fn pending_len(&self) -> usize {
        let written = self.inner.lock().map(|g| g.pending.len()).unwrap_or(0);
        written + self.queued.load(Ordering::Relaxed)
    }

    /// Writes what is queued (it then survives a crash of this process)
    /// and, with `durable`, syncs the file (it survives a crash of the
    /// machine).
    pub(crate) fn flush(&self, durable: bool) {
        self.write_out();
        if !durable {
            return;
        }
        let file = match self.inner.lock() {
            Ok(g) => g.file.try_clone(),
            Err(_) => return,
        };
        // The sync runs without the lock: the writer keeps writing while
        // the disk catches up.
        if let Ok(f) = file {
            let _ = f.sync_data();
        }
    }

    /// Every event not yet stored by the server (tests read what was
    /// recorded).
    #[cfg(test)]
    pub(crate) fn events(&self) -> Vec<AccessEvent> {
        self.flush(false);
        self.after(0, usize::MAX)
            .iter()
            .filter_map(|l| decode(std::str::from_utf8(&l.bytes).ok()?.trim_end()))
            .collect()
    }
}

/// The writer thread: waits for events, writes them, until the spool is
/// dropped.
fn writer(spool: &Weak<Spool>) {
    loop {
        let Some(s) = spool.upgrade() else { return };
        let ready = match s.queue.lock() {
            Ok(q) if q.events.is_empty() => {
                // A timeout, so the thread lets go of the spool now and
                // then and ends once nobody else holds it.
                match s.wake.wait_timeout(q, Duration::from_secs(1)) {
                    Ok((q, _)) => !q.events.is_empty(),
                    Err(_) => return,
                }
            }
            Ok(_) => true,
            Err(_) => return,
        };
        if ready {
            s.write_out();
        }
    }
}

fn encode_into(buf: &mut BytesMut, ev: &AccessEvent) {
    // `ConnectorMsg::Audit` borrows nothing, so the event is cloned only
    // in the type system's eyes: serde writes the same fields.
    let mut w = buf.writer();
    if let Err(e) = serde_json::to_writer(&mut w, &AuditLine { ev }) {
        tracing::error!(error = %e, "cannot encode audit event");
    }
    let buf = w.into_inner();
    buf.put_u8(b'\n');
}

fn encode_one(ev: &AccessEvent) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    encode_into(&mut buf, ev);
    buf.freeze()
}

/// A spool line: the shipped message, or (files from before lines were
/// shipped as they are) a bare event.
fn decode(line: &str) -> Option<AccessEvent> {
    match serde_json::from_str::<ConnectorMsg>(line) {
        Ok(ConnectorMsg::Audit(ev)) => Some(ev),
        Ok(_) => None,
        Err(_) => serde_json::from_str::<AccessEvent>(line).ok(),
    }
}

/// Serialises as `ConnectorMsg::Audit(ev)` without owning `ev`.
struct AuditLine<'a> {
    ev: &'a AccessEvent,
}

impl serde::Serialize for AuditLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(tag = "type", rename_all = "camelCase")]
        enum Msg<'a> {
            Audit(&'a AccessEvent),
        }
        Msg::Audit(self.ev).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> AccessEvent {
        AccessEvent {
            seq: 0,
            time_ms: 1,
            user: "u".into(),
            destination: "web".into(),
            source: "s".into(),
            result: infra_tunnel::proto::Outcome::Success,
            detail: String::new(),
        }
    }

    /// An empty directory for one test (each test runs in its own
    /// process, so the process id keeps them apart).
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn seqs(s: &Spool) -> Vec<i64> {
        s.flush(false);
        s.after(0, 100).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn survives_restart_and_forgets_only_acked() {
        let dir = fresh_dir("spool-test");
        let s = Spool::open(&dir).unwrap();
        for _ in 0..5 {
            s.record(ev());
        }
        s.flush(true);
        s.ack(2);
        drop(s);
        let s = Spool::open(&dir).unwrap();
        assert_eq!(seqs(&s), [3, 4, 5]);
        s.record(ev());
        assert_eq!(seqs(&s), [3, 4, 5, 6], "numbering continues");
        s.ack(6);
        assert_eq!(s.pending_len(), 0);
        s.flush(true);
        drop(s);
        let s = Spool::open(&dir).unwrap();
        assert_eq!(s.pending_len(), 0);
        s.record(ev());
        assert_eq!(seqs(&s), [7]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shipped_line_is_the_message_the_server_reads() {
        let dir = fresh_dir("spool-line");
        let s = Spool::open(&dir).unwrap();
        s.record(ev());
        s.flush(false);
        let line = s.after(0, 1).remove(0);
        assert!(line.bytes.ends_with(b"\n"));
        let msg: ConnectorMsg = serde_json::from_slice(&line.bytes).unwrap();
        let ConnectorMsg::Audit(got) = msg else {
            panic!("not an audit message")
        };
        assert_eq!(got, AccessEvent { seq: 1, ..ev() });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_thread_writes_without_a_flush() {
        let dir = fresh_dir("spool-writer");
        let s = Spool::open(&dir).unwrap();
        s.record(ev());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.after(0, 1).is_empty() {
            assert!(std::time::Instant::now() < deadline, "the writer never wrote");
            std::thread::sleep(Duration::from_millis(1));
        }
        let on_disk = std::fs::read_to_string(dir.join("audit-spool.jsonl")).unwrap();
        assert_eq!(on_disk.lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_writer_that_falls_behind_makes_the_spool_overloaded_and_loses_nothing() {
        let dir = fresh_dir("spool-behind");
        let s = Spool::open(&dir).unwrap();
        {
            // The writer cannot write while the file's lock is held (as
            // when the disk stops answering).
            let _stuck = s.inner.lock().unwrap();
            for _ in 0..=MAX_QUEUED {
                s.record(ev());
            }
            assert!(s.overloaded());
        }
        s.flush(false);
        assert!(!s.overloaded());
        assert_eq!(s.after(0, usize::MAX).len(), MAX_QUEUED + 1, "every event was kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_spools_written_by_earlier_versions() {
        let dir = fresh_dir("spool-old");
        std::fs::create_dir_all(&dir).unwrap();
        let old = serde_json::to_string(&AccessEvent { seq: 4, ..ev() }).unwrap();
        std::fs::write(dir.join("audit-spool.jsonl"), format!("{old}\n{{\"torn")).unwrap();
        let s = Spool::open(&dir).unwrap();
        assert_eq!(seqs(&s), [4]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
