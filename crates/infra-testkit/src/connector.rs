//! An `infra connector` process with its own data directory and a
//! configuration written from the options.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{Server, free_port, tail};

/// One destination of a connector (`kind: http`).
#[derive(Debug, Clone)]
pub struct HttpDest {
    pub name: String,
    pub url: String,
    /// Written to a file and set as `upstreamAuth.bearerTokenFile`.
    pub upstream_token: Option<String>,
}

/// A running connector. Stopped (SIGKILL) on drop.
pub struct Connector {
    pub name: String,
    pub admin_port: u16,
    pub data_dir: PathBuf,
    bin: PathBuf,
    key: String,
    child: Option<Child>,
    _temp: tempfile::TempDir,
}

impl Connector {
    /// Starts a connector for `server` with `key` and waits (≤ 30 s) until
    /// its `/healthz` says the tunnel is up and grants have arrived.
    pub fn start(bin: &Path, server: &Server, key: &str, name: &str, dests: &[HttpDest]) -> anyhow::Result<Connector> {
        Self::start_with(bin, server, key, name, dests, "")
    }

    /// Like [`Connector::start`], with `extra` appended to the YAML (top-level keys).
    pub fn start_with(
        bin: &Path,
        server: &Server,
        key: &str,
        name: &str,
        dests: &[HttpDest],
        extra: &str,
    ) -> anyhow::Result<Connector> {
        let temp = tempfile::Builder::new().prefix("infra-connector-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let admin_port = free_port();
        // `extra` may bring its own `tls:` block (to test other kinds of trust).
        let tls = if extra.contains("tls:") {
            String::new()
        } else {
            format!("tls:\n  caFile: {}\n", server.ca_path().display())
        };
        let mut yaml = format!(
            "server: https://localhost:{}\nname: {name}\n{tls}adminListen: 127.0.0.1:{admin_port}\ndataDir: {}\ndestinations:\n",
            server.port,
            dir.join("data").display()
        );
        for d in dests {
            yaml.push_str(&format!("  - name: {}\n    kind: http\n    url: {}\n", d.name, d.url));
            if let Some(t) = &d.upstream_token {
                let p = dir.join(format!("{}.token", d.name));
                std::fs::write(&p, t)?;
                yaml.push_str(&format!("    upstreamAuth:\n      bearerTokenFile: {}\n", p.display()));
            }
        }
        yaml.push_str(extra);
        std::fs::write(dir.join("connector.yaml"), yaml)?;
        let mut c = Connector {
            name: name.to_owned(),
            admin_port,
            data_dir: dir,
            bin: bin.to_owned(),
            key: key.to_owned(),
            child: None,
            _temp: temp,
        };
        c.spawn()?;
        c.wait_ready()?;
        Ok(c)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["connector", "--config"])
            .arg(self.data_dir.join("connector.yaml"))
            .env("INFRA_ACCESS_KEY", &self.key)
            .env("INFRA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("INFRA_") && k != "INFRA_ACCESS_KEY" && k != "INFRA_LOG" {
                cmd.env_remove(k);
            }
        }
        self.child = Some(cmd.spawn().context("start infra connector")?);
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("connector.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether `/healthz` answers 200 now.
    pub fn healthy(&self) -> bool {
        self.admin_get("/healthz").is_some_and(|(status, _)| status == 200)
    }

    /// What `/readyz` says (the state, and what waits for the server),
    /// whether ready or not.
    pub fn health(&self) -> Option<serde_json::Value> {
        let (_, body) = self.admin_get("/readyz")?;
        serde_json::from_str(&body).ok()
    }

    /// `GET path` on the admin listener: the status and the body.
    fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .ok()?;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.get(9..12)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Some((status, body))
    }

    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.healthy() {
                return Ok(());
            }
            // Refusals and a wrong pin are final: no point waiting them out.
            let log = self.log();
            if ["server refused the connector", "does not match tls.trustedFingerprint"]
                .iter()
                .any(|m| log.contains(m))
            {
                bail!("infra connector cannot connect:\n{}", tail(&self.log_path(), 20));
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("infra connector exited with {status}:\n{}", tail(&self.log_path(), 50));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("infra connector not ready after 30 s:\n{}", tail(&self.log_path(), 50))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the connector vanishes without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for it to exit (≤ 15 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same configuration and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// Starts it again without waiting for readiness.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill();
    }
}
