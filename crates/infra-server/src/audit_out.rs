//! Audit events on stdout, one JSON line each (`{"audit": {...}}`): an
//! independent copy for a log system. Rendered once, after the commit, and
//! for connectors' batches on a thread of its own, so the writer that
//! acknowledges events does not wait for the rendering or the terminal.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use infra_store::AuditRow;

/// Writes `rows` on the stdout thread.
pub(crate) fn emit_batch(rows: Vec<AuditRow>) {
    static OUT: OnceLock<Option<Sender<Vec<AuditRow>>>> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let (tx, rx) = channel::<Vec<AuditRow>>();
        std::thread::Builder::new()
            .name("audit-stdout".into())
            .spawn(move || {
                while let Ok(rows) = rx.recv() {
                    print(&rows);
                }
            })
            .ok()
            .map(|_| tx)
    });
    match out {
        Some(tx) => {
            if let Err(e) = tx.send(rows) {
                print(&e.0);
            }
        }
        None => print(&rows),
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
