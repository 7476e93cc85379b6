//! JSON lines in a file, rotated by size: `audit.jsonl`, then
//! `audit.jsonl.1` (newest) … `audit.jsonl.N`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use infra_store::AuditRow;

pub(crate) struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    pub(crate) fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self { path, max_bytes, keep }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the batch with one write and syncs it; rotates once the
    /// file is past its size (a file may exceed it by one batch).
    pub(crate) async fn write(&mut self, rows: &[AuditRow]) -> Result<(), String> {
        let mut buf = String::with_capacity(rows.len() * 400);
        for r in rows {
            buf.push_str(&super::json_line(r));
            buf.push('\n');
        }
        let (path, max, keep) = (self.path.clone(), self.max_bytes, self.keep);
        tokio::task::spawn_blocking(move || append(&path, buf.as_bytes(), max, keep))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

fn append(path: &Path, bytes: &[u8], max: u64, keep: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::audit_checkpoint::create_private_dir(dir)?;
    }
    // Readable by this user only: the audit trail is for the operator.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?
    };
    f.write_all(bytes)?;
    f.sync_data()?;
    if f.metadata()?.len() >= max {
        rotate(path, keep)?;
    }
    Ok(())
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `path` becomes `path.1`, `path.1` becomes `path.2`, …; the one past
/// `keep` is deleted.
fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(path, keep));
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    std::fs::rename(path, numbered(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        for i in 0..5 {
            append(&p, format!("{i}{}\n", "x".repeat(20)).as_bytes(), 10, 2).unwrap();
        }
        assert!(!p.exists());
        assert!(std::fs::read_to_string(numbered(&p, 1)).unwrap().starts_with('4'));
        assert!(std::fs::read_to_string(numbered(&p, 2)).unwrap().starts_with('3'));
        assert!(!numbered(&p, 3).exists());
    }
}
