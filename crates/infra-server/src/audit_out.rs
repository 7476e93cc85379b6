//! Audit events on stdout, one JSON line each (`{"audit": {...}}`): an
//! independent copy for a log system. Rendered once, after the commit, and
//! for connectors' batches on a thread of its own, so the writer that
//! acknowledges events does not wait for the rendering or the terminal.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use infra_store::AuditRow;

enum Msg {
    Rows(Vec<AuditRow>),
    /// Answered once everything sent before it is written.
    Flush(Sender<()>),
}

/// The stdout thread, started on first use.
fn out() -> Option<&'static Sender<Msg>> {
    static OUT: OnceLock<Option<Sender<Msg>>> = OnceLock::new();
    OUT.get_or_init(|| {
        let (tx, rx) = channel::<Msg>();
        std::thread::Builder::new()
            .name("audit-stdout".into())
            .spawn(move || {
                while let Ok(m) = rx.recv() {
                    match m {
                        Msg::Rows(rows) => print(&rows),
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Writes `rows` on the stdout thread.
pub(crate) fn emit_batch(rows: Vec<AuditRow>) {
    crate::metrics::audited_batch(&rows);
    match out() {
        Some(tx) => {
            if let Err(e) = tx.send(Msg::Rows(rows))
                && let Msg::Rows(rows) = e.0
            {
                print(&rows);
            }
        }
        None => print(&rows),
    }
}

/// Waits (at most `within`) until every line handed over is written: at
/// shutdown, so the stdout copy ends where the database does.
pub(crate) fn flush(within: std::time::Duration) {
    let Some(tx) = out() else { return };
    let (done, wait) = channel();
    if tx.send(Msg::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(within);
    }
}

/// Writes `rows` now, in one write.
pub(crate) fn print(rows: &[AuditRow]) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        audit: &'a AuditRow,
    }
    let mut buf = Vec::with_capacity(rows.len() * 400);
    for r in rows {
        if serde_json::to_writer(&mut buf, &Line { audit: r }).is_ok() {
            buf.push(b'\n');
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf);
    let _ = out.flush();
}
