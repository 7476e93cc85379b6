//! A real Kubernetes API server (kube-apiserver on etcd) on free loopback
//! ports, for end-to-end tests of the Kubernetes connector.
//!
//! There is no kubelet, scheduler or controller manager: objects are stored
//! and RBAC is enforced, but a Deployment never gets pods. The one thing the
//! controllers would do that RBAC tests depend on, filling the aggregated
//! ClusterRoles `view`, `edit` and `admin`, is done once at start (see
//! [`KubeCluster::aggregate_cluster_roles`]).
//!
//! The API server is Debian's 1.20.2 built by `scripts/kube-apiserver`
//! (cached after the first build); `/usr/bin/kubectl` picks a client that
//! matches it.

mod start;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{Cli, Output};

/// Timeout of one API request made by the harness.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Issuer and audience of service-account tokens, as in a real cluster.
const SA_ISSUER: &str = "https://kubernetes.default.svc";
const RBAC_API: &str = "/apis/rbac.authorization.k8s.io/v1";
/// Aggregated in this order so that each sees the rules of the one before it
/// (`view` is labelled aggregate-to-edit, `edit` aggregate-to-admin).
const AGGREGATED_ROLES: [&str; 3] = ["view", "edit", "admin"];

/// A kube-apiserver and its etcd in a temporary directory, both killed on
/// drop. Clients authenticate with [`KubeCluster::admin_token`] (user
/// `kube-admin` in `system:masters`) and trust [`KubeCluster::ca_file`].
pub struct KubeCluster {
    url: String,
    admin_token: String,
    apiserver: Option<Child>,
    etcd: Option<Child>,
    kubectl: Cli,
    // Last field: removed after `Drop::drop` has stopped the processes.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("url", &self.url)
            .field("dir", &self.dir.path())
            .field("apiserver_pid", &self.apiserver.as_ref().map(Child::id))
            .field("etcd_pid", &self.etcd.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signs the API server's certificate, in PEM.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(self.ca_file()).with_context(|| format!("reading {}", self.ca_file().display()))
    }

    /// The file holding [`KubeCluster::ca_pem`].
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The key the API server signs service-account tokens with (ECDSA
    /// P-256, PKCS#8 PEM): for tests that need a token the API server
    /// would never issue, such as one already expired.
    pub fn service_account_key_pem(&self) -> anyhow::Result<String> {
        let p = self.dir.path().join("sa-key.pem");
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The `iss` of the cluster's service-account tokens.
    pub fn service_account_issuer(&self) -> &'static str {
        SA_ISSUER
    }

    /// A bearer token for `kube-admin` in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The API server's log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kube-apiserver.log")
    }

    /// The API server's log so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs `kubectl --server URL --certificate-authority CA --token ADMIN
    /// ARGS` with an empty `KUBECONFIG` and a private `HOME`, so no
    /// kubeconfig of the machine is read or written. Killed after 120 s.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl ARGS` with `input` on stdin (`create -f -`, say).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        self.kubectl_stdin(args, Some(input))
    }

    /// `kubectl apply -f -` with `yaml` as input; the output on success.
    /// The CA a kubelet trusts the API server's client certificate by.
    pub fn kubelet_client_ca(&self) -> PathBuf {
        self.dir.path().join("kubelet-client-ca.pem")
    }

    /// A Node whose kubelet listens on 127.0.0.1:`port` (the kubelet
    /// double), Ready, and a Pod `namespace/pod` with one container `main`
    /// scheduled on it: `kubectl exec` then goes API server → kubelet.
    pub fn add_node_with_pod(&self, node: &str, port: u16, namespace: &str, pod: &str) -> anyhow::Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 127.0.0.1\n  daemonEndpoints:\n    kubeletEndpoint:\n      Port: {port}\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: KubeletReady\n    message: the kubelet double\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {namespace}\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: debian:12\n"
        ))?;
        Ok(())
    }

    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        checked(self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)), "kubectl apply")
    }

    /// `kubectl apply --dry-run=server --validate=strict -o json -f -`: every
    /// object in `yaml` goes through the API server's decoding, defaulting,
    /// validation and admission without being stored, after kubectl has
    /// checked each field against the server's OpenAPI schema (an unknown
    /// or misspelt field is an error, not a warning). The objects as the
    /// server would store them, on success.
    pub fn dry_run(&self, yaml: &str) -> anyhow::Result<Vec<Value>> {
        let out = checked(
            self.kubectl_stdin(
                &[
                    "apply",
                    "--dry-run=server",
                    "--validate=strict",
                    "-o",
                    "json",
                    "-f",
                    "-",
                ],
                Some(yaml),
            ),
            "kubectl apply --dry-run=server",
        )?;
        let json: Value =
            serde_json::from_str(&out).with_context(|| format!("kubectl apply -o json printed no JSON: {out}"))?;
        // One object is printed as itself, several as a List.
        Ok(match json.get("items").and_then(Value::as_array) {
            Some(items) if json.get("kind").and_then(Value::as_str) == Some("List") => items.clone(),
            _ => vec![json],
        })
    }

    /// `kubectl create namespace NAME`.
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        checked(
            self.kubectl(&["create", "namespace", name]),
            &format!("kubectl create namespace {name}"),
        )
        .map(drop)
    }

    /// Applies `deploy/kubernetes/connector.yaml` (the RBAC objects matter;
    /// the Deployment just sits there without controllers) and returns a
    /// token file with a real service-account token for
    /// `infra/infra-connector` (TokenRequest API, valid 1 h) and the CA
    /// file: the connector's credentials as it would have them in a pod.
    pub async fn connector_identity(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let manifest = workspace_root()?.join("deploy/kubernetes/connector.yaml");
        let path = manifest.display().to_string();
        checked(
            self.kubectl(&["apply", "-f", &path]),
            &format!("kubectl apply -f {path}"),
        )?;
        let token = self.service_account_token("infra", "infra-connector").await?;
        let token_file = self.dir.path().join("infra-connector.token");
        std::fs::write(&token_file, token).with_context(|| format!("writing {}", token_file.display()))?;
        Ok((token_file, self.ca_file()))
    }

    /// A token for service account `namespace/name` from the TokenRequest
    /// API (audience `https://kubernetes.default.svc`, valid 1 h).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        self.token_request(namespace, name, SA_ISSUER, 3600).await
    }

    /// A token for service account `namespace/name` for `audience`, valid
    /// `seconds` (600 at least), issued by the API server's TokenRequest
    /// API as the kubelet asks for a projected token.
    pub async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        seconds: u32,
    ) -> anyhow::Result<String> {
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": seconds},
        });
        let resp = self
            .send(self.request(reqwest::Method::POST, &path)?.json(&body))
            .await?;
        match resp.pointer("/status/token").and_then(Value::as_str) {
            Some(t) => Ok(t.to_string()),
            None => bail!("POST {path}: no status.token in {resp}"),
        }
    }

    /// Sets the rules of `view`, `edit` and `admin` to the union of the
    /// ClusterRoles their `aggregationRule` selects, as kube-controller-
    /// manager's aggregation controller would. [`KubeCluster::start`] runs it
    /// once; run it again after adding labelled ClusterRoles.
    pub async fn aggregate_cluster_roles(&self) -> anyhow::Result<()> {
        for name in AGGREGATED_ROLES {
            let path = format!("{RBAC_API}/clusterroles/{name}");
            let role = self.send(self.request(reqwest::Method::GET, &path)?).await?;
            let selectors = role
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .with_context(|| format!("ClusterRole {name} has no aggregationRule"))?;
            let mut rules: Vec<Value> = Vec::new();
            for selector in selectors {
                let list = self
                    .send(
                        self.request(reqwest::Method::GET, &format!("{RBAC_API}/clusterroles"))?
                            .query(&[("labelSelector", label_selector(selector)?)]),
                    )
                    .await?;
                let mut items: Vec<&Value> = list
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .collect();
                items.sort_by_key(|r| r.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default());
                for source in items {
                    if source.pointer("/metadata/name").and_then(Value::as_str) == Some(name) {
                        continue;
                    }
                    for rule in source.get("rules").and_then(Value::as_array).into_iter().flatten() {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
            anyhow::ensure!(!rules.is_empty(), "no rules found to aggregate into ClusterRole {name}");
            self.send(
                self.request(reqwest::Method::PATCH, &path)?
                    .header(reqwest::header::CONTENT_TYPE, "application/merge-patch+json")
                    .body(json!({ "rules": rules }).to_string()),
            )
            .await?;
        }
        Ok(())
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let ca = self.ca_file().display().to_string();
        let mut full = vec![
            "--server",
            self.url.as_str(),
            "--certificate-authority",
            ca.as_str(),
            "--token",
            self.admin_token.as_str(),
        ];
        full.extend_from_slice(args);
        let kubeconfig = self.dir.path().join("kubeconfig").display().to_string();
        self.kubectl
            .run_env(&full, &[("KUBECONFIG", kubeconfig.as_str())], stdin)
    }

    /// A request to `path` on the API server as `kube-admin`.
    fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let client = http_client(&self.ca_pem()?, REQUEST_TIMEOUT)?;
        Ok(client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token))
    }

    /// Sends `rb` and returns the JSON body of a 2xx answer; anything else is
    /// an error with the status and body.
    async fn send(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (client, req) = rb.build_split();
        let req = req.context("building a request to the API server")?;
        let what = format!("{} {}", req.method(), req.url());
        let resp = client.execute(req).await.with_context(|| what.clone())?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the body of {what}"))?;
        if !status.is_success() {
            bail!("{what}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON: {body}"))
    }
}

fn http_client(ca_pem: &str, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).context("parsing the cluster CA")?;
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

/// `k=v,k2=v2` from a LabelSelector with only `matchLabels` (what the
/// bootstrap aggregation rules use).
fn label_selector(selector: &Value) -> anyhow::Result<String> {
    anyhow::ensure!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions in an aggregationRule are not supported: {selector}"
    );
    let labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .with_context(|| format!("a selector without matchLabels: {selector}"))?;
    Ok(labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(","))
}

/// The output of a successful run, or an error with both streams.
pub(crate) fn checked(out: Output, what: &str) -> anyhow::Result<String> {
    if out.status != 0 {
        bail!(
            "{what} failed with status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout)
}

pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    // crates/infra-testkit → the workspace root, two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the testkit's manifest directory has no workspace root above it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let sel = json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}});
        assert_eq!(
            label_selector(&sel).unwrap(),
            "rbac.authorization.k8s.io/aggregate-to-view=true"
        );
        let sel = json!({"matchLabels": {"a": "1", "b": "2"}});
        assert_eq!(label_selector(&sel).unwrap(), "a=1,b=2");
        assert!(label_selector(&json!({"matchExpressions": []})).is_err());
    }
}
