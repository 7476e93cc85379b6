//! Starting and stopping the cluster's processes: files, ports, etcd and
//! kube-apiserver, the wait for `/readyz`, and the retry when a port picked
//! as free was taken.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use infra_auth::tls_ca::Ca;

use super::{KubeCluster, SA_ISSUER, http_client, workspace_root};
use crate::{Cli, free_port, tail};

/// How long [`KubeCluster::start`] waits for `/readyz` (about 5 s is usual).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one `/readyz` probe during start-up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Start attempts when a port picked as free was taken in the meantime.
const START_ATTEMPTS: u32 = 3;
/// The machine's kubectl dispatcher: it asks the server for `/version` and
/// runs the `kubectl.1.<minor>` closest to it.
const KUBECTL: &str = "/usr/bin/kubectl";
const ADMIN_USER: &str = "kube-admin";

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
            // How it proves itself to kubelets (the kubelet double).
            .arg(format!("--kubelet-client-certificate={}", file("kubelet-client.pem")))
            .arg(format!("--kubelet-client-key={}", file("kubelet-client-key.pem")))
            .arg("--kubelet-preferred-address-types=InternalIP")
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
    let (kubelet_ca, kubelet_cert, kubelet_key) = kubelet_client()?;
    let files = [
        ("kubelet-client-ca.pem", kubelet_ca),
        ("kubelet-client.pem", kubelet_cert),
        ("kubelet-client-key.pem", kubelet_key),
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

/// A CA that kubelets trust, and the API server's client certificate and
/// key from it: (CA, certificate, key) in PEM.
fn kubelet_client() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kubelet client CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    p.distinguished_name.push(DnType::OrganizationName, "system:masters");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
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
    fn tokens_are_random_hex() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(16).unwrap());
    }
}
