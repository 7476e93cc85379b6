//! The kubeconfig edits (`infra_api::kubeconfig`, shared with the web
//! console's download) and where the user's kubeconfig file is.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub(crate) use infra_api::kubeconfig::*;

/// The kubeconfig file to edit: the first path in `KUBECONFIG` (kubectl
/// reads them all, and writes new entries to the first), else
/// `~/.kube/config`. Empty list elements are skipped, as kubectl does.
pub(crate) fn path(kubeconfig_env: Option<&OsStr>, home: &Path) -> PathBuf {
    kubeconfig_env
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
        .unwrap_or_else(|| home.join(".kube").join("config"))
}
