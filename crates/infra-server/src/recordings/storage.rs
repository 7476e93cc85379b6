//! Where finished recordings are kept: a directory (the default; replicas
//! share it as a volume). Keys are recording ids, which are letters and
//! digits only, so a key is never a path of its own.

use std::path::PathBuf;

use anyhow::Context;

pub(crate) enum RecordingStore {
    Dir(PathBuf),
}

impl RecordingStore {
    pub(crate) fn dir(dir: PathBuf) -> anyhow::Result<Self> {
        crate::audit_checkpoint::create_private_dir(&dir)
            .with_context(|| format!("create the recordings directory {}", dir.display()))?;
        Ok(Self::Dir(dir))
    }

    fn path(dir: &std::path::Path, id: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(super::valid_id(id), "not a recording id");
        Ok(dir.join(format!("{id}.cast")))
    }

    /// Stores a recording durably (written, synced, then renamed into
    /// place: a crash leaves the old state or the new, never half).
    pub(crate) async fn put(&self, id: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Dir(dir) => {
                let path = Self::path(dir, id)?;
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    use std::io::Write as _;
                    let tmp = path.with_extension("cast.tmp");
                    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    std::fs::File::open(&dir)?.sync_all()?;
                    Ok(())
                })
                .await?
            }
        }
    }

    pub(crate) async fn get(&self, id: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Dir(dir) => {
                let path = Self::path(dir, id)?;
                tokio::fs::read(&path)
                    .await
                    .with_context(|| format!("read {}", path.display()))
            }
        }
    }
}
