//! The audit spool: every proxied request is written to a local file before
//! it is shipped, and forgotten only when the server says it is stored.
//!
//! Events are numbered per connector instance; the server stores each
//! number once, so a resend after a reconnect or restart is never a
//! duplicate, and a connector cut off from the server loses nothing.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use infra_tunnel::proto::AccessEvent;
use tokio::sync::Notify;

pub(crate) struct Spool {
    inner: Mutex<Inner>,
    /// Woken when an event is added.
    pub(crate) added: Notify,
}

struct Inner {
    next_seq: i64,
    acked: i64,
    pending: VecDeque<AccessEvent>,
    file: BufWriter<File>,
    path: PathBuf,
    acked_path: PathBuf,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, reloading unacknowledged events.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
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
                let line = line?;
                // A torn last line (crash mid-write) is skipped; every
                // complete line before it is kept.
                if let Ok(ev) = serde_json::from_str::<AccessEvent>(&line) {
                    last = last.max(ev.seq);
                    if ev.seq > acked {
                        pending.push_back(ev);
                    }
                }
            }
        }
        let file = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?,
        );
        Ok(Self {
            inner: Mutex::new(Inner {
                next_seq: last + 1,
                acked,
                pending,
                file,
                path,
                acked_path,
            }),
            added: Notify::new(),
        })
    }

    /// Numbers and writes an event.
    pub(crate) fn record(&self, mut ev: AccessEvent) {
        let Ok(mut g) = self.inner.lock() else { return };
        ev.seq = g.next_seq;
        g.next_seq += 1;
        match serde_json::to_vec(&ev) {
            Ok(mut line) => {
                line.push(b'\n');
                // Handed to the OS at once (it survives this process being
                // killed); synced to disk by `flush(true)` every SYNC_EVERY.
                if let Err(e) = g.file.write_all(&line).and_then(|()| g.file.flush()) {
                    tracing::error!(error = %e, "cannot write the audit spool; the event is kept in memory only");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode audit event"),
        }
        g.pending.push_back(ev);
        drop(g);
        self.added.notify_waiters();
    }

    /// Events after `after`, for shipping (at most `max`).
    pub(crate) fn after(&self, after: i64, max: usize) -> Vec<AccessEvent> {
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
        while g.pending.front().is_some_and(|e| e.seq <= seq) {
            g.pending.pop_front();
        }
        let _ = std::fs::write(&g.acked_path, seq.to_string());
        if g.pending.is_empty() {
            // Everything is stored: start the file afresh.
            if let Ok(f) = OpenOptions::new().create(true).write(true).truncate(true).open(&g.path) {
                g.file = BufWriter::new(f);
            }
        }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.inner.lock().map(|g| g.pending.len()).unwrap_or(0)
    }

    /// Hands buffered events to the OS (they survive a crash of this
    /// process), and with `durable` also to the disk (they survive a crash
    /// of the machine).
    pub(crate) fn flush(&self, durable: bool) {
        let file = match self.inner.lock() {
            Ok(mut g) => {
                let _ = g.file.flush();
                if !durable {
                    return;
                }
                g.file.get_ref().try_clone()
            }
            Err(_) => return,
        };
        // The sync runs without the lock: requests keep recording while the
        // disk catches up.
        if let Ok(f) = file {
            let _ = f.sync_data();
        }
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

    #[test]
    fn survives_restart_and_forgets_only_acked() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Spool::open(&dir).unwrap();
        for _ in 0..5 {
            s.record(ev());
        }
        s.ack(2);
        s.flush(true);
        drop(s);
        let s = Spool::open(&dir).unwrap();
        let seqs: Vec<i64> = s.after(0, 100).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        s.record(ev());
        assert_eq!(s.after(5, 100)[0].seq, 6, "numbering continues");
        s.ack(6);
        assert_eq!(s.pending_len(), 0);
        s.flush(true);
        drop(s);
        let s = Spool::open(&dir).unwrap();
        assert_eq!(s.pending_len(), 0);
        s.record(ev());
        assert_eq!(s.after(0, 100)[0].seq, 7);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
