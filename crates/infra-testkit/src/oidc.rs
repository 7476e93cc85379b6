//! A real OpenID Connect provider (npm `oidc-provider`, with a login form
//! of its own) on a free loopback port, and the scripted user and browser
//! that drive it (`oidc/drive.mjs`, `oidc/browser.mjs` with Chromium).
//!
//! `scripts/test` installs the Node packages (`npm ci` in `oidc/`) and
//! Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::Output;

pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    admin_token: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The directory of the Node scripts, in the workspace the tests run from.
///
/// Found from the crate directory cargo gives the running test (at run
/// time): the one compiled in can be another checkout's, since cargo
/// reuses a build from another clone that shares the target directory.
pub fn oidc_dir() -> PathBuf {
    let here = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    for start in here
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new(env!("CARGO_MANIFEST_DIR"))])
    {
        for dir in start.ancestors() {
            let candidate = dir.join("crates/infra-testkit/oidc");
            if candidate.join("provider.mjs").exists() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

fn node() -> anyhow::Result<()> {
    if !oidc_dir().join("node_modules").join("oidc-provider").exists() {
        bail!(
            "the test OIDC provider is not installed: run 'npm ci --prefix {}' (scripts/test does)",
            oidc_dir().display()
        );
    }
    Ok(())
}

impl OidcProvider {
    /// Starts the provider with `config` (see `oidc/provider.mjs`: clients,
    /// users, groupsInIdToken, TTLs); `port` and `adminToken` are filled in.
    pub fn start(mut config: serde_json::Value) -> anyhow::Result<OidcProvider> {
        node()?;
        let dir = tempfile::Builder::new().prefix("infra-oidc-").tempdir()?;
        let admin_token = format!("admin-{}", std::process::id());
        config["port"] = 0.into();
        config["host"] = "127.0.0.1".into();
        config["adminToken"] = admin_token.clone().into();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, config.to_string())?;
        let log = std::fs::File::create(dir.path().join("provider.log"))?;
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("run node (apt-get install nodejs npm)")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let v: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.path().join("provider.log")).unwrap_or_default();
                bail!("the OIDC provider did not start: {line}\n{log}");
            }
        };
        Ok(OidcProvider {
            issuer: v["issuer"].as_str().unwrap_or_default().to_owned(),
            port: u16::try_from(v["port"].as_u64().unwrap_or(0)).unwrap_or(0),
            admin_token,
            child,
            _dir: dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("provider.log")).unwrap_or_default()
    }

    fn admin(&self, method: &str, path: &str, body: &serde_json::Value) -> anyhow::Result<u16> {
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            self.admin_token,
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("provider admin answer")?;
        Ok(status)
    }

    /// Creates or changes a user (fields merged): `{"groups": [...]}`,
    /// `{"disabled": true}`, ...
    pub fn put_user(&self, sub: &str, fields: serde_json::Value) -> anyhow::Result<()> {
        let s = self.admin("PUT", &format!("/_admin/users/{sub}"), &fields)?;
        anyhow::ensure!(s < 300, "PUT user: HTTP {s}");
        Ok(())
    }

    /// Makes the next token response carry a tampered ID token, e.g.
    /// `{"idToken": {"aud": "someone-else"}}` (see provider.mjs).
    pub fn tamper(&self, t: serde_json::Value) -> anyhow::Result<()> {
        let s = self.admin("PUT", "/_admin/tamper", &t)?;
        anyhow::ensure!(s < 300, "PUT tamper: HTTP {s}");
        Ok(())
    }

    /// A `BROWSER` program for the CLI: it logs in as `user` at the
    /// provider's form and follows the final redirect (to the CLI's
    /// loopback listener). `extra` goes to drive.mjs (`--state-override X`).
    pub fn browser_script(&self, dir: &Path, user: &str, password: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let p = dir.join(format!("browser-{user}.sh"));
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nexec node '{}' code --url \"$1\" --username '{user}' --password '{password}' --follow {extra} >>'{}' 2>&1\n",
                oidc_dir().join("drive.mjs").display(),
                dir.join(format!("browser-{user}.log")).display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }

    /// `drive.mjs code` without following: logs in at the form for the
    /// authorization `url` and returns the redirect (with code and state).
    pub fn drive_code(&self, url: &str, user: &str, password: &str) -> Output {
        run(Command::new("node").arg(oidc_dir().join("drive.mjs")).args([
            "code",
            "--url",
            url,
            "--username",
            user,
            "--password",
            password,
        ]))
    }

    /// `drive.mjs device`: enters `code` at `uri` and logs in.
    pub fn drive_device(&self, uri: &str, code: &str, user: &str, password: &str) -> Output {
        run(Command::new("node").arg(oidc_dir().join("drive.mjs")).args([
            "device",
            "--uri",
            uri,
            "--code",
            code,
            "--username",
            user,
            "--password",
            password,
        ]))
    }
}

/// `browser.mjs`: headless Chromium opens `url`, clicks links whose text
/// contains each of `clicks`, logs in at the provider's form.
pub fn browser(url: &str, user: &str, password: &str, clicks: &[&str]) -> Output {
    if let Err(e) = node() {
        return Output {
            status: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        };
    }
    let mut cmd = Command::new("node");
    cmd.arg(oidc_dir().join("browser.mjs")).args([
        "--url",
        url,
        "--username",
        user,
        "--password",
        password,
        "--insecure",
    ]);
    for c in clicks {
        cmd.args(["--click", c]);
    }
    run(&mut cmd)
}

fn run(cmd: &mut Command) -> Output {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => Output {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Output {
            status: -1,
            stdout: String::new(),
            stderr: format!("run node: {e}"),
        },
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
