//! An `infra server` process on a free port, with its own data directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{free_port, tail};

/// How long [`Server::start`] waits for `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Server::stop`] waits after SIGTERM before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one HTTP request made by the harness.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one `/healthz` probe during start-up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Options for [`Server::start`].
#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    /// `--db URL`; SQLite in the data directory when `None`.
    pub db_url: Option<String>,
    /// `INFRA_ADMIN_EMAIL` for the process.
    pub admin_email: Option<String>,
    /// `INFRA_ADMIN_PASSWORD` for the process.
    pub admin_password: Option<String>,
    /// `--data-dir`; a temporary directory kept for the server's life when `None`.
    pub data_dir: Option<PathBuf>,
    /// Appended after the standard arguments.
    pub extra_args: Vec<String>,
    /// Extra environment variables, set last.
    pub env: Vec<(String, String)>,
    /// The port to listen on; a free one when `None`.
    pub port: Option<u16>,
}

/// A running `infra server`: `BIN server --data-dir DIR --listen
/// 127.0.0.1:PORT [--db URL] [extra_args]`, stdout and stderr appended to
/// `DIR/server.log`. Stopped on drop.
pub struct Server {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    bin: PathBuf,
    opts: ServerOpts,
    child: Option<Child>,
    // Dropped after the process is stopped (fields drop after `Drop::drop`).
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url)
            .field("data_dir", &self.data_dir)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Server {
    /// Starts the server and waits (at most 30 s) until `GET /healthz` answers
    /// 200 over TLS trusting `DIR/ca.pem`. If the process exits first or the
    /// time runs out, the error carries the last 50 lines of `server.log`.
    pub fn start(bin: &Path, opts: ServerOpts) -> anyhow::Result<Server> {
        let (data_dir, temp) = match &opts.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating data directory {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("infra-server-")
                    .tempdir()
                    .context("creating a temporary data directory")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let port = opts.port.unwrap_or_else(free_port);
        let mut server = Server {
            url: format!("https://127.0.0.1:{port}"),
            port,
            data_dir,
            bin: bin.to_path_buf(),
            opts,
            child: None,
            _temp: temp,
        };
        server.spawn_and_wait()?;
        Ok(server)
    }

    /// A handle on a server started some other way (listening on `port`,
    /// with its data in `data_dir`), for the CLI helpers. It is not
    /// stopped when dropped.
    pub fn attach(port: u16, data_dir: &Path) -> Server {
        Server {
            url: format!("https://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            bin: PathBuf::new(),
            opts: ServerOpts::default(),
            child: None,
            _temp: None,
        }
    }

    /// `DIR/ca.pem`: the CA the server's TLS certificate chains to.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    /// `DIR/server.log`
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// Everything the process (and earlier runs in the same data directory)
    /// wrote so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (`kill -TERM PID`), up to 10 s for the process to exit, then
    /// SIGKILL. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: the server vanishes mid-work, as in a crash. Start it
    /// again with [`Server::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped or killed server with the same data directory,
    /// port and options.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn_and_wait()
    }

    /// Stops the server and starts it again with the same data directory,
    /// port and options.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// `GET path` (e.g. `/api/users`), optionally with `Authorization: Bearer`.
    /// Returns the status and the body as JSON (a non-JSON body becomes a
    /// `Value::String`; an empty one `Value::Null`).
    pub fn get_json(&self, path: &str, bearer: Option<&str>) -> anyhow::Result<(u16, serde_json::Value)> {
        self.send_json("GET", path, bearer, &[], "application/json")
    }

    /// Sends `body` with `method` to `path` with the given content type.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
        content_type: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.request(method, path, bearer, body, content_type, REQUEST_TIMEOUT)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
        content_type: &str,
        timeout: Duration,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let ca = std::fs::read(self.ca_path()).with_context(|| format!("reading {}", self.ca_path().display()))?;
        let req = Request {
            ca,
            method: method.to_string(),
            url: format!("{}{}", self.url, path),
            bearer: bearer.map(str::to_string),
            body: body.to_vec(),
            content_type: content_type.to_string(),
            timeout,
        };
        let (status, bytes) = run_request(req)?;
        Ok((status, body_to_json(&bytes)))
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port));
        if let Some(db) = &self.opts.db_url {
            cmd.arg("--db").arg(db);
        }
        cmd.args(&self.opts.extra_args);
        // The test process's own INFRA_* settings must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("INFRA_") {
                cmd.env_remove(&k);
            }
        }
        if let Some(e) = &self.opts.admin_email {
            cmd.env("INFRA_ADMIN_EMAIL", e);
        }
        if let Some(p) = &self.opts.admin_password {
            cmd.env("INFRA_ADMIN_PASSWORD", p);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} server", self.bin.display()))?;
        self.child = Some(child);

        let started = Instant::now();
        let mut last_err = String::from("no attempt made");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "infra server exited during start-up ({status}); last lines of {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 50)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                bail!(
                    "infra server did not answer GET /healthz with 200 within {START_TIMEOUT:?} (last: {last_err}); last lines of {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 50)
                );
            }
            if self.ca_path().is_file() {
                match self.request("GET", "/healthz", None, &[], "", PROBE_TIMEOUT) {
                    Ok((200, _)) => return Ok(()),
                    Ok((status, body)) => last_err = format!("status {status}: {body}"),
                    Err(e) => last_err = format!("{e:#}"),
                }
            } else {
                last_err = format!("{} not written yet", self.ca_path().display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    ca: Vec<u8>,
    method: String,
    url: String,
    bearer: Option<String>,
    body: Vec<u8>,
    content_type: String,
    timeout: Duration,
}

/// Runs one request on a private current-thread runtime in its own thread, so
/// callers may be plain tests or (blocking) async tests alike.
fn run_request(req: Request) -> anyhow::Result<(u16, Vec<u8>)> {
    let handle = std::thread::Builder::new()
        .name("testkit-http".into())
        .spawn(move || -> anyhow::Result<(u16, Vec<u8>)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?;
            rt.block_on(send(req))
        })
        .context("spawning the HTTP thread")?;
    match handle.join() {
        Ok(r) => r,
        Err(_) => bail!("the HTTP thread panicked"),
    }
}

async fn send(req: Request) -> anyhow::Result<(u16, Vec<u8>)> {
    let certs = reqwest::Certificate::from_pem_bundle(&req.ca).context("parsing ca.pem")?;
    anyhow::ensure!(!certs.is_empty(), "ca.pem holds no certificate");
    let client = reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(req.timeout)
        .build()
        .context("building the HTTP client")?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .with_context(|| format!("bad HTTP method {:?}", req.method))?;
    let mut rb = client.request(method, &req.url);
    if let Some(token) = &req.bearer {
        rb = rb.bearer_auth(token);
    }
    if !req.body.is_empty() {
        rb = rb
            .header(reqwest::header::CONTENT_TYPE, &req.content_type)
            .body(req.body);
    }
    let resp = rb.send().await.with_context(|| format!("{} {}", req.method, req.url))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("reading the body of {} {}", req.method, req.url))?;
    Ok((status, bytes.to_vec()))
}

fn body_to_json(bytes: &[u8]) -> serde_json::Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_json() {
        assert_eq!(body_to_json(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(body_to_json(b"not json"), serde_json::json!("not json"));
        assert_eq!(body_to_json(b""), serde_json::Value::Null);
    }

    #[test]
    fn start_reports_early_exit_with_log() {
        // `false` exits at once: the error must say so and carry the log.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.log"), "earlier line\n").unwrap();
        let err = Server::start(
            Path::new("/bin/false"),
            ServerOpts {
                data_dir: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("exited during start-up"), "{msg}");
        assert!(msg.contains("earlier line"), "{msg}");
    }
}
