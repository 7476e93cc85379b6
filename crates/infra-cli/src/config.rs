//! Client state in `~/.infra/`: `config.json` (server and how to trust it)
//! and `credentials.json` (the session key), both 0600, and `tokens/`, the
//! cache of `infra tokens` for kubectl.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientConfig {
    /// `https://host:port`.
    pub(crate) server: String,
    /// The CA to trust for this server, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_pem: Option<String>,
    #[serde(default)]
    pub(crate) skip_tls_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Credentials {
    pub(crate) access_key: String,
    pub(crate) expires: Option<String>,
}

pub(crate) fn dir() -> anyhow::Result<PathBuf> {
    let home = dirs::home_dir().context("cannot find your home directory; set HOME")?;
    Ok(home.join(".infra"))
}

fn read<T: for<'de> Deserialize<'de>>(name: &str) -> anyhow::Result<Option<T>> {
    let p = dir()?.join(name);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(serde_json::from_str(&s).with_context(|| {
            format!("{} is damaged; run 'infra logout' and log in again", p.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Writes `~/.infra/<name>` atomically with mode 0600, in a 0700 directory.
fn write<T: Serialize>(name: &str, v: &T) -> anyhow::Result<()> {
    let d = dir()?;
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    }
    write_private(&d.join(name), serde_json::to_string_pretty(v)?.as_bytes())
}

/// Writes `path` atomically with mode 0600: a temporary file in the same
/// directory, synced, then renamed over the target, so a reader (kubectl, a
/// second `infra`) sees the old file or the new one, never half of one. The
/// temporary name carries the process id because kubectl may run several
/// `infra tokens` at once. Missing parent directories are created 0700.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
    dirs.create(&parent)
        .with_context(|| format!("create {}", parent.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("write {}", path.display()))
}

pub(crate) fn load_config() -> anyhow::Result<Option<ClientConfig>> {
    read("config.json")
}

pub(crate) fn save_config(c: &ClientConfig) -> anyhow::Result<()> {
    write("config.json", c)
}

pub(crate) fn load_credentials() -> anyhow::Result<Option<Credentials>> {
    read("credentials.json")
}

pub(crate) fn save_credentials(c: &Credentials) -> anyhow::Result<()> {
    write("credentials.json", c)
}

/// Where `infra tokens` caches tokens for kubectl: `~/.infra/tokens/`.
pub(crate) fn tokens_dir() -> anyhow::Result<PathBuf> {
    Ok(dir()?.join("tokens"))
}

/// Forgets every cached token (at login and logout: a token belongs to the
/// session that asked for it).
pub(crate) fn clear_tokens() -> anyhow::Result<()> {
    // SSH keys and certificates too: they are the session's as well.
    for d in [tokens_dir()?, dir()?.join("ssh")] {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", d.display())),
        }
    }
    Ok(())
}

/// Removes everything `infra login` wrote in `~/.infra/`.
pub(crate) fn clear() -> anyhow::Result<()> {
    clear_tokens()?;
    for name in ["credentials.json", "config.json"] {
        match std::fs::remove_file(dir()?.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("remove client state"),
        }
    }
    Ok(())
}
