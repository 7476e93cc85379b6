//! The kubeconfig entries Infra keeps for the user: written by `infra
//! login` and `infra use`, removed by `infra logout`. For each granted
//! cluster there is a cluster and a user `infra:<cluster>`, whose exec plugin
//! is `infra tokens --destination <cluster>`, and contexts `infra:<cluster>`
//! and `infra:<cluster>.<namespace>`. Nothing else in the file is touched,
//! and the file is only rewritten when something of ours changed.

mod merge;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context;
use infra_api::Info;
use yaml_serde::Value;

use crate::client::Api;
use crate::config::{self, ClientConfig};
pub(crate) use merge::EXEC_API_VERSION;
use merge::{Access, Outcome, PREFIX, Trust};

/// The kubeconfig file, and how to name it to the user.
struct Kubeconfig {
    path: PathBuf,
    /// `~/.kube/config` rather than `/home/me/.kube/config`.
    shown: String,
}

impl Kubeconfig {
    fn locate() -> anyhow::Result<Self> {
        let home = dirs::home_dir().context("cannot find your home directory; set HOME")?;
        let path = merge::path(std::env::var_os("KUBECONFIG").as_deref(), &home);
        let shown = match path.strip_prefix(&home) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        };
        Ok(Self { path, shown })
    }

    /// Reads the file, applies `edit`, and writes the result back if it
    /// changed.
    fn edit(&self, edit: impl FnOnce(Value) -> anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
        edit_file(&self.path, edit).with_context(|| format!("update {} (the KUBECONFIG file)", self.path.display()))
    }
}

fn edit_file(path: &Path, edit: impl FnOnce(Value) -> anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
    let before = load(path)?;
    let outcome = edit(before.clone())?;
    if outcome.doc != before {
        save(path, &outcome.doc)?;
    }
    Ok(outcome)
}

/// The parsed file; `Null` when it is absent or empty.
fn load(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => yaml_serde::from_str(&s).context("not valid YAML; fix it, or point KUBECONFIG at another file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(e).context("read it"),
    }
}

/// Writes atomically, 0600. A symlinked kubeconfig stays a symlink: the
/// file it points at is the one replaced.
fn save(path: &Path, doc: &Value) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    config::write_private(&target, yaml_serde::to_string(doc)?.as_bytes())
}

/// What the logged-in user should have in the kubeconfig.
fn access(info: &Info, cfg: &ClientConfig) -> anyhow::Result<Access> {
    let trust = match (&cfg.ca_pem, cfg.skip_tls_verify) {
        (Some(pem), _) => Trust::Ca(pem.clone()),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::System,
    };
    let exe = std::env::current_exe().context("find the path of the running infra binary")?;
    let exe = exe
        .to_str()
        .with_context(|| {
            format!(
                "the path of infra ({}) is not UTF-8, so kubectl could not run it",
                exe.display()
            )
        })?
        .to_owned();
    Ok(Access::from_info(info, trust, exe))
}

/// Tells the user about our entries that went away.
fn report_removed(k: &Kubeconfig, o: &Outcome, why: &str) {
    if !o.removed.is_empty() {
        eprintln!(
            "Kubernetes: removed contexts {} from {} ({why})",
            o.removed.join(", "),
            k.shown
        );
    }
    if let Some(c) = &o.unset_current {
        eprintln!("Kubernetes: kubectl's current context {c} was removed; none is set now");
    }
}

/// After `infra login`: writes the contexts the user can reach and drops
/// the ones they no longer can.
pub(crate) async fn write_after_login(api: &Api, cfg: &ClientConfig) -> anyhow::Result<()> {
    let info: Info = api.get("/api/info").await?;
    let want = access(&info, cfg)?;
    let k = Kubeconfig::locate()?;
    let o = k.edit(|doc| merge::merge(doc, &want))?;
    report_removed(&k, &o, "no longer granted");
    if let Some(first) = want.clusters.first() {
        eprintln!(
            "Kubernetes: wrote contexts {} to {} (switch with 'infra use {}')",
            o.written.join(", "),
            k.shown,
            first.name
        );
    }
    Ok(())
}

/// `infra use CLUSTER[.NAMESPACE]`: refreshes our entries and makes that
/// context current.
pub(crate) async fn use_context(target: &str) -> anyhow::Result<()> {
    let target = target.strip_prefix(PREFIX).unwrap_or(target);
    let cfg = config::load_config()?.context("not logged in; run 'infra login SERVER' first")?;
    let api = Api::from_login()?;
    let info: Info = api.get("/api/info").await?;
    let want = access(&info, &cfg)?;
    let name = format!("{PREFIX}{target}");
    let found = want.context_names().contains(&name);
    let k = Kubeconfig::locate()?;
    // The refresh is written even when the target is not there: stale
    // entries should go either way.
    let o = k.edit(|doc| {
        let mut o = merge::merge(doc, &want)?;
        if found {
            merge::set_current(&mut o.doc, &name)?;
        }
        Ok(o)
    })?;
    report_removed(&k, &o, "no longer granted");
    if !found {
        let dest = target.split('.').next().unwrap_or(target);
        return Err(match info.kinds.get(dest) {
            Some(kind) if kind != "kubernetes" => anyhow::anyhow!(
                "{dest} is a {kind} destination, not a Kubernetes cluster; 'infra list' shows what you can reach"
            ),
            _ => anyhow::anyhow!("no Kubernetes access to {target}; 'infra list' shows what you can reach"),
        });
    }
    eprintln!("Kubernetes: switched to context {name} in {}", k.shown);
    Ok(())
}

/// At `infra logout`: removes every entry of ours, and the current context
/// if it was ours. Does nothing to a file without any.
pub(crate) fn remove_all() -> anyhow::Result<()> {
    let k = Kubeconfig::locate()?;
    let o = k.edit(merge::remove)?;
    report_removed(&k, &o, "logged out");
    Ok(())
}
