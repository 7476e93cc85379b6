//! A throwaway PostgreSQL server on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{free_port, tail};

/// A PostgreSQL server in its own temporary directory, trusting every local
/// connection (or, from [`Postgres::start_with_password`], only Unix-socket
/// ones), stopped and deleted on drop.
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// The superuser's password, when TCP connections need one.
    password: Option<String>,
    // Last field: removed after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Postgres {
    /// Initialises and starts a server. The error carries the output of
    /// `initdb`/`pg_ctl` and the server log when it does not come up.
    pub fn start() -> anyhow::Result<Postgres> {
        Self::start_inner(None)
    }

    /// Like [`Postgres::start`], but TCP connections must authenticate with
    /// a password (SCRAM-SHA-256, PostgreSQL's default method) and the
    /// superuser `postgres` has `password`.
    pub fn start_with_password(password: &str) -> anyhow::Result<Postgres> {
        Self::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> anyhow::Result<Postgres> {
        let bin_dir = pg_bin_dir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("infra-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        if as_postgres {
            run_checked(
                Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path()),
                "chown the PostgreSQL directory to postgres",
            )?;
        }
        let data = dir.path().join("data");
        let mut pg = Postgres {
            port: 0,
            bin_dir,
            data,
            as_postgres,
            password,
            dir,
        };

        let initdb = pg.bin("initdb");
        let out = pg
            .command(&initdb)
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(pg.auth_args()?)
            .env("LC_ALL", "C")
            .output()
            .with_context(|| format!("running {}", initdb.display()))?;
        if !out.status.success() {
            bail!("initdb failed ({}):\n{}", out.status, both(&out));
        }

        // The port was free a moment ago; another process may take it before
        // the postmaster binds it, so try a few.
        let mut last_err = None;
        for _ in 0..5 {
            pg.port = free_port();
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(e) => {
                    let retry = format!("{e:#}").contains("Address already in use");
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        // Drop still runs `pg_ctl stop`, in case a postmaster outlived a
        // timed-out `pg_ctl start`.
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let log = self.log_path();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let pg_ctl = self.bin("pg_ctl");
        // `-l` matters: without it the postmaster inherits our pipes and
        // `output()` would wait for it to exit.
        let out = self
            .command(&pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start", "-o"])
            .arg(opts)
            .output()
            .with_context(|| format!("running {}", pg_ctl.display()))?;
        if !out.status.success() {
            bail!(
                "pg_ctl start on port {} failed ({}):\n{}\n--- {} ---\n{}",
                self.port,
                out.status,
                both(&out),
                log.display(),
                tail(&log, 50)
            );
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    fn auth_args(&self) -> anyhow::Result<Vec<String>> {
        let Some(pw) = &self.password else {
            return Ok(vec!["-A".into(), "trust".into()]);
        };
        let file = self.dir.path().join("pwfile");
        std::fs::write(&file, pw)?;
        if self.as_postgres {
            run_checked(
                Command::new("chown").arg("postgres:postgres").arg(&file),
                "chown the password file",
            )?;
        }
        Ok(vec![
            "--auth-local=trust".into(),
            "--auth-host=scram-sha-256".into(),
            format!("--pwfile={}", file.display()),
        ])
    }

    /// The `bin` directory of the PostgreSQL installation (psql, pgbench).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn url(&self) -> String {
        self.db_url("postgres")
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn db_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let createdb = self.bin("createdb");
        let out = Command::new(&createdb)
            .envs(self.password.as_ref().map(|p| ("PGPASSWORD", p.as_str())))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("--")
            .arg(name)
            .output()
            .with_context(|| format!("running {}", createdb.display()))?;
        if !out.status.success() {
            bail!("createdb {name} failed ({}):\n{}", out.status, both(&out));
        }
        Ok(self.db_url(name))
    }

    /// Runs `sql` with `psql` in database `db` as the superuser and returns
    /// its unaligned, tuples-only output (`psql -XAtq`), trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let psql = self.bin("psql");
        let out = Command::new(&psql)
            .envs(self.password.as_ref().map(|p| ("PGPASSWORD", p.as_str())))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .output()
            .with_context(|| format!("running {}", psql.display()))?;
        if !out.status.success() {
            bail!("psql failed ({}) for {sql:?}:\n{}", out.status, both(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c.current_dir(self.dir.path());
            c
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 || !self.data.join("PG_VERSION").exists() {
            return;
        }
        let _ = self
            .command(&self.bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "20", "stop", "-m", "immediate"])
            .stdin(std::process::Stdio::null())
            .output();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb` and `pg_ctl`.
fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let bin = e.path().join("bin");
            if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
                // "15", "16", "9.6": order by the major version number.
                let major = name.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
                found.push((major, bin));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server found under {}/*/bin (install the postgresql package; scripts/test does)",
            root.display()
        ),
    }
}

fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                // Real, effective, saved, fs: the effective one decides.
                return rest.split_whitespace().nth(1) == Some("0");
            }
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, both(&out));
    }
    Ok(())
}

fn both(out: &std::process::Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_answers_queries() {
        let pg = Postgres::start().unwrap();
        assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
        let url = pg.create_database("testkit_db").unwrap();
        assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/testkit_db", pg.port()));
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
        );
        assert_eq!(
            pg.psql("testkit_db", "SELECT current_database()").unwrap(),
            "testkit_db"
        );
        assert!(pg.psql("postgres", "SELECT * FROM no_such_table").is_err());
        let data = pg.data.clone();
        drop(pg);
        assert!(!data.exists(), "drop removes the directory");
    }

    #[test]
    fn two_servers_run_side_by_side() {
        let a = Postgres::start().unwrap();
        let b = Postgres::start().unwrap();
        assert_ne!(a.port(), b.port());
        assert_eq!(a.psql("postgres", "SELECT 2").unwrap(), "2");
        assert_eq!(b.psql("postgres", "SELECT 3").unwrap(), "3");
    }
}
