//! A client environment for running the `infra` CLI with its own HOME.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long one CLI invocation may run before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What a CLI invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code; -1 when killed by a signal or when it could not run.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics, showing both streams, unless the command exited 0.
    #[allow(clippy::panic)]
    #[track_caller]
    pub fn ok(&self) -> &Self {
        if self.status != 0 {
            panic!(
                "command failed with status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.status, self.stdout, self.stderr
            );
        }
        self
    }

    /// Panics, showing both streams, if the command exited 0.
    #[allow(clippy::panic)]
    #[track_caller]
    pub fn failed(&self) -> &Self {
        if self.status == 0 {
            panic!(
                "command succeeded but was expected to fail\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout, self.stderr
            );
        }
        self
    }
}

/// A user's machine: the `infra` binary run with `HOME` set to a private
/// temporary directory, `KUBECONFIG` unset, `NO_COLOR=1`, and none of the test
/// process's `INFRA_*` variables.
pub struct Cli {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("bin", &self.bin)
            .field("home", &self.home.path())
            .finish()
    }
}

impl Cli {
    pub fn new(bin: &Path) -> anyhow::Result<Cli> {
        let home = tempfile::Builder::new()
            .prefix("infra-home-")
            .tempdir()
            .context("creating a temporary HOME")?;
        Ok(Cli {
            bin: bin.to_path_buf(),
            home,
        })
    }

    /// The HOME directory the CLI runs with.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs `infra ARGS` with no standard input.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[], None)
    }

    /// Runs `infra ARGS` with `stdin` as standard input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run_env(args, &[], Some(stdin))
    }

    /// Runs `infra ARGS` with extra environment variables (set after the
    /// clean-up, so `INFRA_*` given here do reach the CLI) and optional
    /// standard input. A run longer than 120 s is killed.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        match self.try_run(args, env, stdin) {
            Ok(out) => out,
            Err(e) => Output {
                status: -1,
                stdout: String::new(),
                stderr: format!("testkit: could not run {} {args:?}: {e:#}", self.bin.display()),
            },
        }
    }

    fn try_run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(self.home.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("INFRA_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("KUBECONFIG")
            .env("HOME", self.home.path())
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn")?;

        // Feed stdin and drain both pipes on their own threads so that no
        // pipe fills up and blocks the child.
        let writer = match (stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => {
                let input = input.to_owned();
                Some(std::thread::spawn(move || {
                    // The child may exit without reading: ignore EPIPE.
                    let _ = pipe.write_all(input.as_bytes());
                }))
            }
            _ => None,
        };
        let out_reader = child.stdout.take().map(reader);
        let err_reader = child.stderr.take().map(reader);

        let deadline = Instant::now() + RUN_TIMEOUT;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait().context("wait")? {
                break (status, false);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break (child.wait().context("wait after kill")?, true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out_reader.map(join_reader).unwrap_or_default();
        let mut stderr = err_reader.map(join_reader).unwrap_or_default();
        if timed_out {
            stderr.push_str(&format!("\ntestkit: killed after {RUN_TIMEOUT:?}"));
        }
        Ok(Output {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
        })
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_reader(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

/// What the examples and tests do as an admin or a user, through the CLI.
impl Cli {
    /// `infra login` to `server` as `email` with `password`, trusting the
    /// server's CA; `extra` flags are added (`--ssh-include`, say).
    pub fn login_password(&self, server: &crate::Server, email: &str, password: &str, extra: &[&str]) -> Output {
        let ca = server.ca_path();
        let addr = format!("127.0.0.1:{}", server.port);
        let mut args = vec!["login", addr.as_str(), "--user", email, "--tls-ca"];
        let ca = ca.to_string_lossy().into_owned();
        args.push(&ca);
        args.extend_from_slice(extra);
        self.run_env(&args, &[("INFRA_PASSWORD", password)], None)
    }

    /// A new connector access key named `name` (this must be an admin's CLI).
    pub fn connector_key(&self, name: &str) -> String {
        self.run(&["keys", "add", "--connector", "--name", name, "--quiet"])
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// Adds a user with a password (this must be an admin's CLI).
    pub fn add_user(&self, email: &str, password: &str) {
        self.run_stdin(&["users", "add", email, "--password-stdin"], password)
            .ok();
    }
}

/// The admin the examples start servers with.
pub const EXAMPLE_ADMIN: (&str, &str) = ("admin@example.com", "admin-password-1");

/// An `infra server` with the example admin, and that admin logged in.
pub fn server_with_admin(bin: &Path) -> anyhow::Result<(crate::Server, Cli)> {
    let server = crate::Server::start(
        bin,
        crate::ServerOpts {
            admin_email: Some(EXAMPLE_ADMIN.0.into()),
            admin_password: Some(EXAMPLE_ADMIN.1.into()),
            ..Default::default()
        },
    )?;
    let admin = Cli::new(bin)?;
    admin
        .login_password(&server, EXAMPLE_ADMIN.0, EXAMPLE_ADMIN.1, &[])
        .ok();
    Ok((server, admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Cli {
        Cli::new(Path::new("/bin/sh")).unwrap()
    }

    #[test]
    fn runs_with_clean_environment() {
        // (The INFRA_* clean-up only shows when the test process has such a
        // variable; scripts may run the suite with INFRA_SERVER set.)
        let cli = sh();
        let out = cli.run(&[
            "-c",
            "echo \"$HOME|${KUBECONFIG-unset}|$NO_COLOR|$(env | grep -c '^INFRA_')\"",
        ]);
        out.ok();
        let home = cli.home().display().to_string();
        assert_eq!(out.stdout.trim(), format!("{home}|unset|1|0"));
    }

    #[test]
    fn env_and_stdin_reach_the_child() {
        let cli = sh();
        let out = cli.run_env(
            &["-c", "read x; echo \"$x-$INFRA_SERVER\"; echo err >&2"],
            &[("INFRA_SERVER", "s1")],
            Some("hello\n"),
        );
        out.ok();
        assert_eq!(out.stdout, "hello-s1\n");
        assert_eq!(out.stderr, "err\n");
        let out = cli.run_stdin(&["-c", "cat"], "abc");
        assert_eq!(out.ok().stdout, "abc");
    }

    #[test]
    fn status_and_failure() {
        let cli = sh();
        let out = cli.run(&["-c", "exit 3"]);
        assert_eq!(out.status, 3);
        out.failed();
        let r = std::panic::catch_unwind(|| {
            out.ok();
        });
        assert!(r.is_err());
        let r = std::panic::catch_unwind(|| {
            cli.run(&["-c", "true"]).failed();
        });
        assert!(r.is_err());
    }

    #[test]
    fn missing_binary_is_a_failure_not_a_panic() {
        let cli = Cli::new(Path::new("/nonexistent/infra")).unwrap();
        let out = cli.run(&["list"]);
        assert_eq!(out.status, -1);
        assert!(out.stderr.contains("could not run"), "{}", out.stderr);
    }
}
