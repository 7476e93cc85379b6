//! A real nginx or Caddy in front of an upstream, asking an Infra server
//! about each request (forward-auth), configured from the very files the
//! docs give users (`deploy/forward-auth/`), with the example names
//! replaced by this test's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Server, free_port};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Nginx,
    Caddy,
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    pub kind: ProxyKind,
    pub port: u16,
    /// `https://<app host>:<port>`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

impl Proxy {
    /// Starts `kind` serving `https://<app_host>:<port>` (a certificate of
    /// its own, self-signed), deciding through `infra`, proxying to
    /// `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(kind: ProxyKind, app_host: &str, infra: &Server, upstream: &str) -> anyhow::Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let cert = rcgen::generate_simple_self_signed(vec![app_host.to_owned()])?;
        let (crt, key) = (dir.path().join("app.pem"), dir.path().join("app.key"));
        std::fs::write(&crt, cert.cert.pem())?;
        std::fs::write(&key, cert.signing_key.serialize_pem())?;
        let up = upstream.trim_start_matches("http://").trim_end_matches('/');
        let ca = infra.ca_path();
        let file = match kind {
            ProxyKind::Nginx => "deploy/forward-auth/nginx.conf",
            ProxyKind::Caddy => "deploy/forward-auth/Caddyfile",
        };
        let template = std::fs::read_to_string(repo_file(file)).with_context(|| format!("read {file}"))?;
        let infra_at = format!("127.0.0.1:{}", infra.port);
        let site = match kind {
            ProxyKind::Nginx => template
                .replace("infra.example.com:443", &infra_at)
                .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;")),
            ProxyKind::Caddy => template
                .replace("https://infra.example.com {", &format!("https://{infra_at} {{"))
                .replace("wiki.example.com {", &format!("https://{app_host}:{port} {{")),
        };
        let site = site
            .replace("infra.example.com", "localhost")
            .replace("/etc/nginx/tls/wiki.example.com.pem", &crt.display().to_string())
            .replace("/etc/nginx/tls/wiki.example.com.key", &key.display().to_string())
            .replace("/etc/caddy/tls/wiki.example.com.pem", &crt.display().to_string())
            .replace("/etc/caddy/tls/wiki.example.com.key", &key.display().to_string())
            .replace("wiki.example.com", app_host)
            .replace("/etc/infra/ca.pem", &ca.display().to_string())
            .replace("127.0.0.1:8080", up);
        let d = dir.path().display();
        let child = match kind {
            ProxyKind::Nginx => {
                let conf = dir.path().join("nginx.conf");
                std::fs::write(dir.path().join("site.conf"), site)?;
                std::fs::write(
                    &conf,
                    format!(
                        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                         events {{ worker_connections 1024; }}\n\
                         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                         include {d}/site.conf;\n}}\n"
                    ),
                )?;
                Command::new(nginx()?)
                    .args(["-e", &format!("{d}/error.log"), "-p", &d.to_string(), "-c"])
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
                    .spawn()
                    .context("start nginx")?
            }
            ProxyKind::Caddy => {
                let conf = dir.path().join("Caddyfile");
                std::fs::write(
                    &conf,
                    format!(
                        "{{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system {d}/data\n}}\n\n{site}"
                    ),
                )?;
                Command::new("caddy")
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf)
                    .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
                    .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"))
                    .env("HOME", dir.path())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
                    .spawn()
                    .context("start caddy (Debian package caddy)")?
            }
        };
        let mut p = Proxy {
            kind,
            port,
            url: format!("https://{app_host}:{port}"),
            child,
            dir,
        };
        p.wait_listening()?;
        Ok(p)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{:?} exited with {status}:\n{}", self.kind, self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{:?} did not listen on {} within 20 s:\n{}",
            self.kind,
            self.port,
            self.log()
        )
    }

    /// What the proxy wrote to stderr and its error log.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian installs nginx in /usr/sbin, which is not on every PATH.
fn nginx() -> anyhow::Result<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("nginx is not installed (Debian package nginx-light or nginx); scripts/test installs it")
}
