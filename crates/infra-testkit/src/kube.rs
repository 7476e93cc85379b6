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

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use infra_auth::tls_ca::Ca;
use serde_json::{Value, json};

use crate::{Cli, Output, free_port, tail};

/// How long [`KubeCluster::start`] waits for `/readyz` (about 5 s is usual).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one API request made by the harness.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one `/readyz` probe during start-up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Start attempts when a port picked as free was taken in the meantime.
const START_ATTEMPTS: u32 = 3;
/// Issuer and audience of service-account tokens, as in a real cluster.
const SA_ISSUER: &str = "https://kubernetes.default.svc";
/// The machine's kubectl dispatcher: it asks the server for `/version` and
/// runs the `kubectl.1.<minor>` closest to it.
const KUBECTL: &str = "/usr/bin/kubectl";
const ADMIN_USER: &str = "kube-admin";
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
    /// Starts etcd and kube-apiserver and waits (at most 60 s) until
    /// `/readyz` answers 200, then fills the aggregated ClusterRoles.
    ///
    /// The API server binary is `$INFRA_KUBE_APISERVER`, or whatever
    /// `scripts/kube-apiserver` prints (it builds it once, ~7 min, and
    /// installs etcd). Fails, never skips, when either cannot be had; the
    /// error carries the last lines of the server's log.
    pub async fn start() -> anyhow::Result<KubeCluster> {
        let apiserver_bin = apiserver_bin().await?;
        let etcd_bin = find_on_path("etcd")
            .context("etcd is not on PATH: install Debian's etcd-server (scripts/kube-apiserver does)")?;
        let dir = tempfile::Builder::new()
            .prefix("infra-kube-")
            .tempdir()
            .context("creating a temporary directory for the cluster")?;
        let admin_token = random_hex(16)?;
        write_files(dir.path(), &admin_token)?;
        let mut cluster = KubeCluster {
            url: String::new(),
            admin_token,
            apiserver: None,
            etcd: None,
            kubectl: Cli::new(Path::new(KUBECTL))?,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.spawn(&etcd_bin, &apiserver_bin, attempt)?;
            match cluster.wait_ready().await {
                Ok(()) => break,
                Err(e) => {
                    cluster.stop();
                    let in_use = [cluster.log_path(), cluster.etcd_log()]
                        .iter()
                        .any(|log| tail(log, 50).contains("address already in use"));
                    if !in_use || attempt >= START_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
        cluster
            .aggregate_cluster_roles()
            .await
            .context("filling the aggregated ClusterRoles view/edit/admin")?;
        Ok(cluster)
    }

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

    /// `kubectl apply -f -` with `yaml` as input; the output on success.
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
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [SA_ISSUER], "expirationSeconds": 3600},
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

    fn etcd_log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts etcd and kube-apiserver on fresh ports, with fresh logs;
    /// `attempt` numbers the etcd data directory so that a retry starts clean.
    fn spawn(&mut self, etcd_bin: &Path, apiserver_bin: &Path, attempt: u32) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        let [client_port, peer_port, port] = distinct_free_ports();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(etcd_bin);
        etcd.arg("--name=infra-test")
            .arg(format!("--data-dir={}", dir.join(format!("etcd-{attempt}")).display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=infra-test={peer_url}"));
        self.etcd = Some(spawn_logged(&mut etcd, &self.etcd_log())?);

        let file = |name: &str| format!("{}", dir.join(name).display());
        let mut apiserver = Command::new(apiserver_bin);
        apiserver
            .arg(format!("--etcd-servers={client_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg("--insecure-port=0")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--tls-cert-file={}", file("apiserver.pem")))
            .arg(format!("--tls-private-key-file={}", file("apiserver-key.pem")))
            .arg(format!("--token-auth-file={}", file("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-issuer={SA_ISSUER}"))
            .arg(format!("--service-account-key-file={}", file("sa-pub.pem")))
            .arg(format!("--service-account-signing-key-file={}", file("sa-key.pem")))
            .arg(format!("--api-audiences={SA_ISSUER}"))
            // Without controllers no `default` ServiceAccount is ever made,
            // and the plugin would reject every pod.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg(format!("--cert-dir={}", file("certs")))
            .arg("--enable-priority-and-fairness=false");
        self.apiserver = Some(spawn_logged(&mut apiserver, &self.log_path())?);
        self.url = format!("https://127.0.0.1:{port}");
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let client = http_client(&self.ca_pem()?, PROBE_TIMEOUT)?;
        let readyz = format!("{}/readyz", self.url);
        let mut last_err = String::from("no attempt made");
        loop {
            if let Some(status) = exited(&mut self.etcd) {
                bail!(
                    "etcd exited during start-up ({status}); last lines of {}:\n{}",
                    self.etcd_log().display(),
                    tail(&self.etcd_log(), 30)
                );
            }
            if let Some(status) = exited(&mut self.apiserver) {
                bail!(
                    "kube-apiserver exited during start-up ({status}); last lines of {}:\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), 50)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "kube-apiserver did not answer GET /readyz with 200 within {READY_TIMEOUT:?} (last: {last_err}); last lines of {}:\n{}",
                    self.log_path().display(),
                    tail(&self.log_path(), 50)
                );
            }
            match client.get(&readyz).bearer_auth(&self.admin_token).send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    last_err = format!("status {status}: {}", resp.text().await.unwrap_or_default());
                }
                Err(e) => last_err = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL and reap both processes (the API server first).
    fn stop(&mut self) {
        for mut child in [self.apiserver.take(), self.etcd.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kube-apiserver binary: `$INFRA_KUBE_APISERVER`, else the path
/// `scripts/kube-apiserver` prints (building it on first use).
async fn apiserver_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INFRA_KUBE_APISERVER") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "INFRA_KUBE_APISERVER={} is not a file", p.display());
        return Ok(p);
    }
    let script = workspace_root()?.join("scripts/kube-apiserver");
    let out = tokio::process::Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let stderr_tail = lines.get(lines.len().saturating_sub(30)..).unwrap_or_default();
    if !out.status.success() {
        bail!(
            "{} failed ({}); it builds kube-apiserver (or set INFRA_KUBE_APISERVER to a binary). Last lines:\n{}",
            script.display(),
            out.status,
            stderr_tail.join("\n")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    anyhow::ensure!(
        bin.is_file(),
        "{} printed {:?}, which is not a file",
        script.display(),
        stdout.trim()
    );
    Ok(bin)
}

/// Writes the CA, the serving certificate, the service-account key, the
/// token file and an empty kubeconfig into `dir`.
fn write_files(dir: &Path, admin_token: &str) -> anyhow::Result<()> {
    let ca = Ca::generate().context("generating the cluster CA")?;
    let serving = ca
        .issue_server_cert(&["127.0.0.1".to_string(), "localhost".to_string()])
        .context("issuing the API server's certificate")?;
    // ECDSA P-256. The API server signs tokens with the private key
    // (PKCS#8 is fine there) and verifies them with the public one, which
    // 1.20 cannot take from a PKCS#8 file: it gets its own PKIX file.
    let sa_key = rcgen::KeyPair::generate().context("generating the service-account key")?;
    let files = [
        ("ca.pem", ca.cert_pem.clone()),
        ("apiserver.pem", serving.chain_pem.clone()),
        ("apiserver-key.pem", serving.key_pem.expose().clone()),
        ("sa-key.pem", sa_key.serialize_pem()),
        ("sa-pub.pem", sa_key.public_key_pem()),
        // token,user,uid,"group,..."
        (
            "tokens.csv",
            format!("{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"),
        ),
        ("kubeconfig", String::new()),
    ];
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Spawns `cmd` with stdout and stderr written to `log` (truncated first).
fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = File::create(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file handle")?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))
}

/// The exit status of `child` if it has exited (it is then forgotten).
fn exited(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
    *child = None;
    Some(status)
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

/// Three different ports that were free a moment ago.
fn distinct_free_ports() -> [u16; 3] {
    loop {
        let ports = [free_port(), free_port(), free_port()];
        if ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2] {
            return ports;
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    // crates/infra-testkit → the workspace root, two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the testkit's manifest directory has no workspace root above it")
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
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

    #[test]
    fn tokens_are_random_hex() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16).unwrap());
    }
}
