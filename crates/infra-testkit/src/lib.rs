//! Test harness: real PostgreSQL servers, `infra server` processes and CLI
//! environments, each on free ports and in their own temporary directories.
//!
//! Everything here is synchronous so that plain `#[test]` functions can use
//! it; HTTP calls run on a private runtime in a helper thread, so they also
//! work (blocking) from inside an async test. The exception is
//! [`KubeCluster`] (a real kube-apiserver), whose start and API calls are
//! async and need a tokio runtime.

mod cli;
mod connector;
mod helm;
pub mod kube;
pub mod kube_double;
pub mod oidc;
mod postgres;
pub mod proxy;
mod s3;
mod server;
mod sshd;
mod terminal;
mod upstream;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cli::{Cli, EXAMPLE_ADMIN, Output, server_with_admin};
pub use connector::{Connector, HttpDest};
pub use helm::{Helm, Rendered};
pub use kube::KubeCluster;
pub use kube_double::KubeDouble;
pub use oidc::OidcProvider;
pub use postgres::Postgres;
pub use proxy::{Proxy, ProxyKind};
pub use s3::S3;
pub use server::{Server, ServerOpts};
pub use sshd::{Sshd, current_login};
pub use terminal::Terminal;
pub use upstream::Upstream;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
///
/// When the loopback interface cannot bind any port at all, which means no
/// test can run here.
#[allow(clippy::panic)]
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"),
    }
}

/// The `infra` binary of this build, found next to the running test
/// executable (`target/<profile>/infra`, one level above `deps/`).
///
/// Integration tests of the `infra` crate itself should prefer
/// `env!("CARGO_BIN_EXE_infra")`.
pub fn infra_bin() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    if let Some(p) = std::env::var_os("INFRA_TEST_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("test executable has no parent directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps directory has no parent")?;
    }
    let bin = dir.join("infra");
    anyhow::ensure!(
        bin.is_file(),
        "the infra binary is not at {} (build it first: cargo build -p infra)",
        bin.display()
    );
    Ok(bin)
}

/// A timeout accepted by [`eventually!`]: seconds as any integer or float, or a
/// [`Duration`].
pub trait Timeout {
    fn duration(self) -> Duration;
}

macro_rules! int_timeout {
    ($($t:ty),*) => {$(
        impl Timeout for $t {
            fn duration(self) -> Duration {
                Duration::from_secs(u64::try_from(self).unwrap_or(0))
            }
        }
    )*};
}
int_timeout!(i32, i64, u32, u64, usize);

impl Timeout for f64 {
    fn duration(self) -> Duration {
        Duration::try_from_secs_f64(self).unwrap_or(Duration::ZERO)
    }
}

impl Timeout for Duration {
    fn duration(self) -> Duration {
        self
    }
}

/// Polls `f` every 100 ms until it returns `Ok`, and returns that value.
///
/// # Panics
///
/// When `timeout` passes without an `Ok`, with the last error in the message.
/// Use it through [`eventually!`].
#[allow(clippy::panic)]
pub fn eventually_fn<T>(timeout: impl Timeout, mut f: impl FnMut() -> anyhow::Result<T>) -> T {
    let timeout = timeout.duration();
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match f() {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!(
                        "eventually: condition not met within {:?} ({attempts} attempts); last error: {e:#}",
                        timeout
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `eventually!(timeout_secs, || -> anyhow::Result<T> { ... })` polls the
/// closure every 100 ms until it returns `Ok(value)` and evaluates to that
/// value; after `timeout_secs` it panics with the last error. Use it instead
/// of sleeping in tests.
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $f:expr $(,)?) => {
        $crate::eventually_fn($timeout, $f)
    };
}

/// The last `n` lines of the file at `path`, or a note that it cannot be read.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// For a benchmark's environment program: prints `info` (what the script
/// needs: addresses, paths) as one JSON line, then holds everything up
/// until the script closes its standard input.
pub fn hold_until_stdin_closes(info: &serde_json::Value) {
    use std::io::{Read as _, Write as _};
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{info}");
    let _ = out.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let p = free_port();
        assert_ne!(p, 0);
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }

    #[test]
    fn eventually_returns_first_ok() {
        let mut n = 0;
        let v = eventually!(5, || {
            n += 1;
            anyhow::ensure!(n >= 3, "only {n}");
            Ok(n * 10)
        });
        assert_eq!(v, 30);
    }

    #[test]
    #[should_panic(expected = "last error: still 42")]
    fn eventually_panics_with_last_error() {
        let _: () = eventually!(0.3, || anyhow::bail!("still 42"));
    }

    #[test]
    fn tail_takes_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), "c\nd");
        assert_eq!(tail(&p, 10), "a\nb\nc\nd");
        assert!(tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
