//! A real OpenSSH `sshd` in a temporary directory on a free loopback port.
//!
//! It is made in two steps, as on a real host: [`Sshd::prepare`] makes the
//! host key and the directory the connector keeps Infra's files in
//! (`sshdDir`); the connector writes them; [`Sshd::start`] then runs sshd
//! with an `Include` of the snippet the connector wrote. A plain key is
//! also authorized (`client_key`), for the benchmark's baseline.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

pub struct Sshd {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    _temp: tempfile::TempDir,
}

/// The login the tests use: the user running them (sshd not running as
/// root can only log in as that user).
pub fn current_login() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .context("run ssh-keygen (apt-get install openssh-client)")?;
    if !out.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Sshd {
    /// The host key and directories; sshd is not running yet.
    pub fn prepare() -> anyhow::Result<Sshd> {
        let temp = tempfile::Builder::new().prefix("infra-sshd-").tempdir()?;
        let dir = temp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("infra"))?;
        keygen(&dir.join("ssh_host_ed25519_key"), "host")?;
        keygen(&dir.join("client_key"), "baseline")?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        Ok(Sshd {
            port: free_port(),
            dir,
            child: None,
            _temp: temp,
        })
    }

    /// The host's public key: the connector's `hostKeyFile`.
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key.pub")
    }

    /// Where the connector keeps sshd's Infra files: its `sshdDir`.
    pub fn infra_dir(&self) -> PathBuf {
        self.dir.join("infra")
    }

    /// A key in `authorized_keys`: plain public-key login, no Infra.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits (≤ `secs`) for the connector to have written the snippet,
    /// the user CA and the host certificate.
    pub fn wait_for_infra_files(&self, secs: u64) -> anyhow::Result<()> {
        self.wait_for(&["sshd_config", "user_ca.pub", "host-cert.pub"], secs)
    }

    /// The same for a host in recording mode, which has no host
    /// certificate of its own (users meet the connector's).
    pub fn wait_for_recording_files(&self, secs: u64) -> anyhow::Result<()> {
        self.wait_for(&["sshd_config", "user_ca.pub"], secs)
    }

    fn wait_for(&self, files: &[&str], secs: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let d = self.infra_dir();
        loop {
            if files.iter().all(|f| d.join(f).exists()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the connector did not write sshd's files in {} within {secs} s",
                    d.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs sshd (checking its configuration first) and waits until it
    /// accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        // sshd started as root wants its privilege separation directory.
        if std::fs::metadata("/run").is_ok() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let d = &self.dir;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/ssh_host_ed25519_key\nPidFile {d}/sshd.pid\n\
             UsePAM no\nStrictModes no\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n\
             MaxStartups 100:30:200\nSubsystem sftp internal-sftp\nInclude {d}/infra/sshd_config\n",
            port = self.port,
            d = d.display()
        );
        let cfg = d.join("sshd_config");
        std::fs::write(&cfg, config)?;
        let check = Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(&cfg)
            .output()
            .context("run /usr/sbin/sshd (apt-get install openssh-server)")?;
        if !check.status.success() {
            bail!("sshd -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        let log = OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start sshd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("sshd exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("sshd did not listen on port {} within 10 s: {}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
