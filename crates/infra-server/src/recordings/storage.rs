//! Where finished recordings are kept: a directory (the default; replicas
//! share it as a volume) or a bucket of any S3-compatible store. Keys are
//! recording ids, which are letters and digits only, so a key is never a
//! path of its own.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};

pub(crate) enum RecordingStore {
    Dir(PathBuf),
    S3 { store: AmazonS3, prefix: String },
}

/// A bucket, as configured: `s3://BUCKET[/PREFIX]`, and for a store other
/// than AWS its endpoint. Credentials and region come from the standard
/// `AWS_*` environment variables.
#[derive(Debug, Clone)]
pub(crate) struct S3Settings {
    pub(crate) url: String,
    pub(crate) endpoint: Option<String>,
}

/// How long one attempt at the store may take: a store that does not
/// answer is an outage, and the connector keeps the recording meanwhile.
const ATTEMPT: Duration = Duration::from_secs(10);

impl RecordingStore {
    pub(crate) fn dir(dir: PathBuf) -> anyhow::Result<Self> {
        crate::audit_checkpoint::create_private_dir(&dir)
            .with_context(|| format!("create the recordings directory {}", dir.display()))?;
        Ok(Self::Dir(dir))
    }

    pub(crate) fn s3(s: &S3Settings) -> anyhow::Result<Self> {
        let rest = s
            .url
            .strip_prefix("s3://")
            .context("the recordings bucket is s3://BUCKET or s3://BUCKET/PREFIX")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "the recordings bucket has no name: s3://BUCKET");
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: ATTEMPT,
                ..Default::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_timeout(ATTEMPT)
                    .with_connect_timeout(Duration::from_secs(3)),
            );
        if let Some(e) = &s.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().context("the recordings bucket")?;
        Ok(Self::S3 {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn path(dir: &std::path::Path, id: &str) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(super::valid_id(id), "not a recording id");
        Ok(dir.join(format!("{id}.cast")))
    }

    fn key(prefix: &str, id: &str) -> anyhow::Result<object_store::path::Path> {
        anyhow::ensure!(super::valid_id(id), "not a recording id");
        Ok(if prefix.is_empty() {
            object_store::path::Path::from(format!("{id}.cast"))
        } else {
            object_store::path::Path::from(format!("{prefix}/{id}.cast"))
        })
    }

    /// Stores a recording durably (a directory: written, synced, then
    /// renamed into place; a crash leaves the old state or the new, never
    /// half). Succeeds only once the store has it.
    pub(crate) async fn put(&self, id: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::Dir(dir) => {
                let path = Self::path(dir, id)?;
                let dir = dir.clone();
                let tmp = dir.join(format!("{id}.{}.tmp", infra_auth::random_token(12)?));
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    use std::io::Write as _;
                    use std::os::unix::fs::OpenOptionsExt as _;
                    // A fresh name, created here (never a file or a link
                    // someone placed), then renamed over the recording.
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&tmp)
                        .with_context(|| format!("create {}", tmp.display()))?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    std::fs::File::open(&dir)?.sync_all()?;
                    Ok(())
                })
                .await?
            }
            Self::S3 { store, prefix } => {
                store.put(&Self::key(prefix, id)?, PutPayload::from(bytes)).await?;
                Ok(())
            }
        }
    }

    /// Recording `id` from byte `from` on (0: all of it).
    pub(crate) async fn get(&self, id: &str, from: u64) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Dir(dir) => {
                let path = Self::path(dir, id)?;
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
                    use std::io::{Read as _, Seek as _};
                    use std::os::unix::fs::OpenOptionsExt as _;
                    // A link in place of a recording is not followed: it
                    // could point at any file the server can read.
                    let mut f = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .with_context(|| format!("read {}", path.display()))?;
                    f.seek(std::io::SeekFrom::Start(from))?;
                    let mut out = Vec::new();
                    f.read_to_end(&mut out)?;
                    Ok(out)
                })
                .await?
            }
            Self::S3 { store, prefix } => {
                let key = Self::key(prefix, id)?;
                let got = if from == 0 {
                    store.get(&key).await?
                } else {
                    let opts = object_store::GetOptions {
                        range: Some(object_store::GetRange::Offset(from)),
                        ..Default::default()
                    };
                    store.get_opts(&key, opts).await?
                };
                Ok(got.bytes().await?.to_vec())
            }
        }
    }

    /// Deletes a recording (retention); one already gone is no error.
    pub(crate) async fn delete(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Self::Dir(dir) => match tokio::fs::remove_file(Self::path(dir, id)?).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            Self::S3 { store, prefix } => match store.delete(&Self::key(prefix, id)?).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Where recordings go, for the log at start.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.display().to_string(),
            Self::S3 { prefix, .. } => format!("an S3 bucket (prefix '{prefix}')"),
        }
    }
}
