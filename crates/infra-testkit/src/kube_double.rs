//! The Kubernetes test double for what needs a kubelet: `exec`, `attach`,
//! `port-forward` and `logs -f`. A Go program (`kube-double/main.go`) built
//! from the vendored Kubernetes 1.20 source by `scripts/kube-double`, which
//! answers the streaming upgrades with the kubelet's own code (SPDY and
//! WebSocket `v5.channel.k8s.io`), checks the bearer token and refuses any
//! request whose `Impersonate-User` is not the expected user.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::tail;

/// A running double; killed on drop.
pub struct KubeDouble {
    url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for KubeDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDouble").field("url", &self.url).finish()
    }
}

impl KubeDouble {
    /// Starts the double accepting `token` and only requests impersonating
    /// `expect_user`. `websockets: false` makes it refuse WebSocket
    /// upgrades, as a server before 1.30 would, so kubectl falls back to SPDY.
    pub fn start(token: &str, expect_user: &str, websockets: bool) -> anyhow::Result<KubeDouble> {
        Self::start_with(token, expect_user, websockets, None)
    }

    /// A double that is also a kubelet for a real API server: it serves
    /// `/exec/...` and `/attach/...` to clients with a certificate from
    /// `kubelet_client_ca` (the API server's `--kubelet-client-certificate`).
    pub fn start_kubelet(kubelet_client_ca: &Path) -> anyhow::Result<KubeDouble> {
        Self::start_with("", "", false, Some(kubelet_client_ca))
    }

    fn start_with(
        token: &str,
        expect_user: &str,
        websockets: bool,
        kubelet_client_ca: Option<&Path>,
    ) -> anyhow::Result<KubeDouble> {
        let bin = double_bin()?;
        let dir = tempfile::Builder::new().prefix("infra-kube-double-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("double.log"))?;
        // A CA and a certificate it signs, as a cluster has (rustls refuses
        // a self-signed CA certificate used as the server's own).
        let ca = infra_auth::tls_ca::Ca::generate()?;
        let cert = ca.issue_server_cert(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
        std::fs::write(dir.path().join("cert.pem"), &cert.chain_pem)?;
        std::fs::write(dir.path().join("key.pem"), cert.key_pem.expose())?;
        std::fs::write(dir.path().join("sa-token"), token)?;
        let mut child = Command::new(&bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--token",
                token,
                "--expect-user",
                expect_user,
            ])
            .arg("--cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--key")
            .arg(dir.path().join("key.pem"))
            .arg(format!("--websockets={websockets}"))
            .args(
                kubelet_client_ca
                    .map(|ca| vec![format!("--kubelet-client-ca={}", ca.display())])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        // The first line on stdout is the URL, once it listens.
        let stdout = child.stdout.take().context("double stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.starts_with("https://") => l.trim().to_owned(),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "kube double did not start ({other:?}); log:\n{}",
                    tail(&dir.path().join("double.log"), 30)
                );
            }
        };
        Ok(KubeDouble {
            url,
            dir,
            child: Some(child),
        })
    }

    /// A connector's settings for this double as a Kubernetes cluster
    /// (`url`, `caFile`, and `tokenFile` with the token it accepts), each
    /// line indented under a destination; `rbacSync: false`, as a double
    /// has no RBAC API.
    pub fn settings(&self) -> String {
        format!(
            "    url: {}\n    tokenFile: {}\n    caFile: {}\n    rbacSync: false\n",
            self.url,
            self.dir.path().join("sa-token").display(),
            self.ca_file().display()
        )
    }

    /// A connector's destination `name` for this double (see [`settings`](Self::settings)).
    pub fn destination(&self, name: &str) -> String {
        format!("  - name: {name}\n    kind: kubernetes\n{}", self.settings())
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// The CA of its certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// What it received: one line per request (method, path, token present,
    /// impersonation headers, protocol chosen).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("double.log")).unwrap_or_default()
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `$INFRA_KUBE_DOUBLE`, else the path `scripts/kube-double` prints
/// (building it on first use).
fn double_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("INFRA_KUBE_DOUBLE") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "INFRA_KUBE_DOUBLE={} is not a file", p.display());
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .context("no workspace root")?;
    let script = root.join("scripts/kube-double");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    anyhow::ensure!(bin.is_file(), "{} printed {:?}", script.display(), stdout.trim());
    Ok(bin)
}
