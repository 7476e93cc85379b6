//! Client state in `~/.infra/`: `config.json` (server and how to trust it)
//! and `credentials.json` (the session key), both 0600.

use std::path::PathBuf;

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

/// Writes atomically (temp file, then rename) with mode 0600.
fn write<T: Serialize>(name: &str, v: &T) -> anyhow::Result<()> {
    let d = dir()?;
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = d.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).with_context(|| format!("write {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(v)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, d.join(name))?;
    Ok(())
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

/// Removes everything `infra login` wrote.
pub(crate) fn clear() -> anyhow::Result<()> {
    for name in ["credentials.json", "config.json"] {
        match std::fs::remove_file(dir()?.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("remove client state"),
        }
    }
    Ok(())
}
