//! Shared set-up: a server on a chosen backend with a logged-in admin.

use std::path::PathBuf;

use infra_testkit::{Cli, Output, Postgres, Server, ServerOpts};

pub const ADMIN: &str = "admin@example.com";
pub const ADMIN_PW: &str = "admin-password-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Env {
    pub server: Server,
    pub admin: Cli,
    // Dropped after the server (fields drop in order).
    pub pg: Option<Postgres>,
}

/// The `infra` binary under test: this build's, or the one `INFRA_TEST_BIN`
/// names (to run a test against another build, such as showing that an
/// attack test fails on a release without the fix).
pub fn bin() -> PathBuf {
    std::env::var_os("INFRA_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_infra")), PathBuf::from)
}

pub fn start(backend: Backend) -> Env {
    start_with(backend, vec![])
}

pub fn start_with(backend: Backend, extra_args: Vec<String>) -> Env {
    start_with_env(backend, extra_args, vec![])
}

/// [`start_with`], with environment variables for the server.
pub fn start_with_env(backend: Backend, extra_args: Vec<String>, env: Vec<(String, String)>) -> Env {
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Postgres::start().expect("start PostgreSQL")),
    };
    let db_url = pg
        .as_ref()
        .map(|p| p.create_database("infra").expect("create database"));
    let server = Server::start(
        &bin(),
        ServerOpts {
            db_url,
            admin_email: Some(ADMIN.into()),
            admin_password: Some(ADMIN_PW.into()),
            extra_args,
            env,
            ..Default::default()
        },
    )
    .expect("start infra server");
    let admin = Cli::new(&bin()).expect("cli");
    login(&admin, &server, ADMIN, ADMIN_PW).ok();
    Env { server, admin, pg }
}

pub fn login(cli: &Cli, server: &Server, email: &str, password: &str) -> Output {
    cli.login_password(server, email, password, &[])
}

/// The session key a CLI saved at login.
pub fn session_key(cli: &Cli) -> String {
    let text = std::fs::read_to_string(cli.home().join(".infra/credentials.json")).expect("credentials");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["accessKey"].as_str().unwrap().to_owned()
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

/// Runs SQL directly against the server's database, bypassing Infra.
pub fn raw_sql(env: &Env, sql: &str) {
    match &env.pg {
        Some(pg) => {
            pg.psql("infra", sql).expect("psql");
        }
        None => {
            let url = format!("sqlite://{}", env.server.data_dir.join("infra.db").display());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            });
        }
    }
}

impl Drop for Env {
    /// A failing test shows what the server said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.server.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of the server log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// `curl ARGS URL`, with the response's headers: (status, headers, body).
pub fn curl_response(args: &[&str], url: &str) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (rest, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (code.trim().parse().unwrap_or(0), head.to_owned(), body.to_owned())
}

/// `PATH` with this build's `infra` first.
pub fn path_with_infra() -> String {
    let dir = bin().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// An interactive shell session as a person has it: `command` (which
/// ends in a shell) runs in a real terminal as the user of `cli`; once a
/// prompt shows, `typed` is typed and its output `expect` awaited, then
/// `exit` ends the shell and the command. `context` is shown on failure.
pub fn shell_session(cli: &Cli, command: &str, typed: &str, expect: &str, exit: &str, context: impl Fn() -> String) {
    let t = infra_testkit::Terminal::start(cli.home(), &path_with_infra(), command).expect("start a terminal");
    t.wait_for_prompt(30, &context).unwrap();
    t.type_line(typed);
    t.wait_for_text(expect, 15).unwrap();
    t.type_line(exit);
    t.wait_for_end(15).unwrap();
}

/// `asciinema cat FILE`, the reference player reading a recording, in a
/// terminal of its own (`script`): it opens `/dev/tty`, which a test run
/// without a terminal lacks. A status of 0 means it read the whole file.
pub fn asciinema_cat(file: &std::path::Path) -> Output {
    let cmd = format!("asciinema cat '{}'", file.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The text of recording `id`, as the admin exports it.
pub fn cast(env: &Env, id: &str) -> String {
    let out = env.admin.run(&["sessions", "export", id, "-f", "-"]);
    assert_eq!(out.status, 0, "{out:?}");
    out.stdout
}

/// `infra sessions play ID` shows `typed` (as the terminal echoed it) and,
/// after it, `shown` (its output).
pub fn assert_plays_in_order(env: &Env, id: &str, typed: &str, shown: &str) {
    let out = env.admin.run(&["sessions", "play", id, "--speed", "1000"]);
    assert_eq!(out.status, 0, "{out:?}");
    let at = out.stdout.find(typed).expect("the typed command in playback");
    let then = out.stdout.rfind(shown).expect("its output in playback");
    assert!(at < then, "{}", out.stdout);
}

/// One line to a session that answers each with `got LINE`, and its answer.
pub fn say(stdin: &mut impl std::io::Write, stdout: &mut impl std::io::BufRead, what: &str) {
    stdin.write_all(format!("{what}\n").as_bytes()).unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, format!("got {what}\n"));
}
