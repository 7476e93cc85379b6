//! Start-up on defaults, JSON logs, the OpenAPI document, graceful
//! shutdown, completions.

use std::process::Command;

use infra_testkit::{Server, ServerOpts, eventually};

use super::common::{Backend, bin};

#[test]
fn first_start_prints_a_one_time_admin_key_that_logs_in() {
    let server = Server::start(&bin(), ServerOpts::default()).unwrap();
    let log = server.log();
    let key = log
        .split_whitespace()
        .find(|w| w.len() == 37 && w.as_bytes()[12] == b'.')
        .unwrap_or_else(|| panic!("no access key printed:\n{log}"))
        .to_owned();
    let fp = log
        .lines()
        .find_map(|l| l.split("(SHA-256): ").nth(1))
        .expect("fingerprint printed")
        .trim()
        .to_owned();
    let cli = infra_testkit::Cli::new(&bin()).unwrap();
    let addr = format!("localhost:{}", server.port);
    cli.run(&["login", &addr, "--key", &key, "--tls-trusted-fingerprint", &fp])
        .ok();
    assert!(cli.run(&["info"]).ok().stdout.contains("admin@localhost"));
    // A wrong pin is refused before any credential is sent.
    let other = infra_testkit::Cli::new(&bin()).unwrap();
    let bad = "00:".repeat(31) + "00";
    let out = other.run(&["login", &addr, "--key", &key, "--tls-trusted-fingerprint", &bad]);
    assert!(
        out.failed().stderr.contains("do not match the fingerprint"),
        "{}",
        out.stderr
    );
    // Client files are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cli.home().join(".infra/credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn json_logs_openapi_and_graceful_shutdown() {
    let mut env = super::common::start_with(Backend::Sqlite, vec!["--log-format".into(), "json".into()]);
    let (status, doc) = env.server.get_json("/api/openapi.json", None).unwrap();
    assert_eq!(status, 200);
    for p in [
        "/api/users",
        "/api/grants",
        "/api/keys",
        "/api/audit/verify",
        "/api/login",
        "/api/tokens",
    ] {
        assert!(doc["paths"].get(p).is_some(), "OpenAPI lacks {p}");
    }
    // The log is JSON lines (tracing) and audit JSON lines; the banner aside.
    let log = env.server.log();
    let json_lines = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(json_lines >= 2, "{log}");
    assert!(log.contains(r#""audit":{"#), "audit events on stdout: {log}");

    let pid = env.server.pid().expect("running");
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    eventually!(10, || {
        let log = env.server.log();
        if log.contains("stopped") {
            Ok(())
        } else {
            Err(anyhow::anyhow!("not stopped yet"))
        }
    });
    env.server.restart().unwrap();
    env.admin.run(&["info"]).ok();
}

#[test]
fn openapi_flag_and_completions() {
    let out = Command::new(bin()).args(["server", "--openapi"]).output().unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["info"]["title"], "Infra API");
    let out = Command::new(bin()).args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("infra"));
    let out = Command::new(bin()).args(["grants", "add", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--expires-in"));
}

#[test]
fn a_server_that_cannot_listen_creates_nothing() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is another server running?"), "{err}");
    // No database: the next start still bootstraps and shows the one-time key.
    assert!(!dir.path().join("infra.db").exists());
}
