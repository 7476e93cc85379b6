//! Helm charts of this workspace, handled by Helm's own code.
//!
//! There is no `helm` binary here; `scripts/helm` drives Helm v4's Go SDK
//! through the shared library that PyPI's `helm-python-sdk` ships (installed
//! by `scripts/test`). `template` is the client-only dry-run install that
//! `helm template` runs, so what the tests see is what `helm install` would
//! send: Helm's sorting, `values.schema.json`, `required` and `fail`
//! included; `upgrade --install` is a real release on a [`KubeCluster`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::{Cli, KubeCluster, Output};

/// `scripts/helm` with a private `HOME`, so no Helm configuration, cache or
/// kubeconfig of the machine is read.
pub struct Helm {
    cli: Cli,
    root: PathBuf,
}

/// What a render produced: the manifest (YAML documents, in install order)
/// and the chart's NOTES.txt.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub manifest: String,
    pub notes: String,
}

impl std::fmt::Debug for Helm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helm").field("cli", &self.cli).finish()
    }
}

impl Helm {
    pub fn new() -> anyhow::Result<Helm> {
        let root = crate::kube::workspace_root()?;
        let script = root.join("scripts/helm");
        anyhow::ensure!(script.is_file(), "{} is missing", script.display());
        Ok(Helm {
            cli: Cli::new(&script)?,
            root,
        })
    }

    /// The chart directory `deploy/helm/<name>`.
    pub fn chart(&self, name: &str) -> PathBuf {
        self.root.join("deploy/helm").join(name)
    }

    /// `helm template RELEASE CHART -n NAMESPACE -f V1 -f V2 ...` as it ran
    /// (later values documents override earlier ones key by key, as with
    /// helm's `-f`), for tests that expect a failure.
    pub fn try_template(&self, chart: &Path, release: &str, namespace: &str, values: &[&str]) -> Output {
        let chart = chart.display().to_string();
        self.run(&["template", "--json", "-n", namespace, release, &chart], values)
    }

    /// [`Helm::try_template`] that must succeed.
    pub fn template(&self, chart: &Path, release: &str, namespace: &str, values: &[&str]) -> anyhow::Result<Rendered> {
        let json = json_output(self.try_template(chart, release, namespace, values), "helm template")?;
        let field = |k: &str| json.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(Rendered {
            manifest: field("manifest"),
            notes: field("notes"),
        })
    }

    /// `helm lint --strict CHART -f V1 -f V2 ...`: fails on any warning or
    /// error.
    pub fn lint(&self, chart: &Path, values: &[&str]) -> Output {
        let chart = chart.display().to_string();
        self.run(&["lint", &chart], values)
    }

    /// `helm upgrade --install RELEASE CHART -n NAMESPACE -f ...` on `kube`
    /// as its admin: installs, or upgrades an existing release. The release
    /// (`name`, `revision`, `status`, `notes`, ...) on success.
    pub fn upgrade_install(
        &self,
        kube: &KubeCluster,
        chart: &Path,
        release: &str,
        namespace: &str,
        values: &[&str],
    ) -> anyhow::Result<Value> {
        let chart = chart.display().to_string();
        let ca = kube.ca_file().display().to_string();
        #[rustfmt::skip]
        let args = [
            "upgrade", "--install", "-n", namespace, release, &chart,
            "--kube-apiserver", kube.url(), "--kube-token", kube.admin_token(), "--kube-ca-file", &ca,
        ];
        json_output(self.run(&args, values), "helm upgrade --install")
    }

    /// `scripts/helm ARGS -f FILE...`, each values document in its own file.
    fn run(&self, args: &[&str], values: &[&str]) -> Output {
        let dir = match write_values(values) {
            Ok(dir) => dir,
            Err(e) => {
                return Output {
                    status: -1,
                    stdout: String::new(),
                    stderr: format!("testkit: {e:#}"),
                };
            }
        };
        let files: Vec<String> = (0..values.len())
            .map(|i| dir.path().join(values_file(i)).display().to_string())
            .collect();
        let mut full = args.to_vec();
        for f in &files {
            full.extend(["-f", f.as_str()]);
        }
        self.cli.run(&full)
    }
}

/// A fresh temporary directory with `values-<i>.yaml` for each document.
fn write_values(values: &[&str]) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("infra-helm-values-")
        .tempdir()
        .context("creating a directory for values files")?;
    for (i, doc) in values.iter().enumerate() {
        let path = dir.path().join(values_file(i));
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn values_file(i: usize) -> String {
    format!("values-{i}.yaml")
}

/// The JSON a successful run printed, or an error with both streams.
fn json_output(out: Output, what: &str) -> anyhow::Result<Value> {
    let stdout = crate::kube::checked(out, what)?;
    serde_json::from_str(&stdout).with_context(|| format!("{what} printed no JSON: {stdout}"))
}
