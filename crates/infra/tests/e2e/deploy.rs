//! The deployment files users copy, run here as plain processes (no
//! container engine runs on this machine): `deploy/compose/compose.yaml`'s
//! topology, with the commands and settings read from that file, and the
//! systemd units checked by `systemd-analyze verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra_testkit::{Cli, Postgres, Upstream, free_port};
use serde_json::Value;

use super::common::bin;
use super::gateway::token;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// A compose service: its command and environment, as strings.
struct Service {
    command: Vec<String>,
    env: BTreeMap<String, String>,
}

fn service(compose: &yaml_serde::Value, name: &str) -> Service {
    let s = &compose["services"][name];
    let command = s["command"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{name} has no command"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let env = s["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Service { command, env }
}

/// Kills the processes when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_ok(url: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url])
            .output()
            .unwrap();
        if out.stdout == b"200" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never ready at {url}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_compose_topology_runs_as_processes() {
    let compose: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo("deploy/compose/compose.yaml")).unwrap()).unwrap();
    let pg = Postgres::start().unwrap();
    let db = pg.create_database("infra").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root_key = "q4Lk0aWmvC0J9w1m8b5yQm6v1fQ0Yl4F2k3v8p9s7aE=";
    let ports = [free_port(), free_port()];
    let metrics = [free_port(), free_port()];
    let mut procs = Procs(Vec::new());

    // The two replicas: compose's command and environment, with the
    // container addresses made local.
    for (i, name) in ["server-1", "server-2"].iter().enumerate() {
        let s = service(&compose, name);
        assert_eq!(s.command[0], "server");
        let local = |v: &str| {
            v.replace("0.0.0.0:4443", &format!("127.0.0.1:{}", ports[i]))
                .replace("0.0.0.0:9090", &format!("127.0.0.1:{}", metrics[i]))
                .replace("https://server-1:4443", &format!("https://localhost:{}", ports[0]))
                .replace("https://server-2:4443", &format!("https://localhost:{}", ports[1]))
                .replace("https://localhost:4443", &format!("https://localhost:{}", ports[0]))
        };
        let args: Vec<String> = s.command.iter().map(|a| local(a)).collect();
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(bin());
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &s.env {
            let v = match k.as_str() {
                "INFRA_DB" => db.clone(),
                "INFRA_ROOT_KEY" => root_key.to_owned(),
                "INFRA_ADMIN_EMAIL" => "admin@example.com".to_owned(),
                "INFRA_ADMIN_PASSWORD" => "admin-password-1".to_owned(),
                _ => local(v),
            };
            cmd.env(k, v);
        }
        // What the image sets.
        cmd.env("INFRA_DATA_DIR", &data).env("HOME", &data);
        let child = cmd
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        procs.0.push(child);
        wait_ok(&format!("http://127.0.0.1:{}/readyz", metrics[i]), name, &log);
    }

    // The admin, and the connector's key, as the compose comments say.
    let admin = Cli::new(&bin()).unwrap();
    let server1 = infra_testkit::Server::attach(ports[0], &dir.path().join("server-1"));
    assert_eq!(
        admin
            .login_password(&server1, "admin@example.com", "admin-password-1", &[])
            .status,
        0
    );
    let key = admin
        .run(&["keys", "add", "--connector", "--name", "compose", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();

    // The connector, with compose's connector.yaml made local.
    let up = Upstream::start().unwrap();
    let admin_port = free_port();
    let conf = std::fs::read_to_string(repo("deploy/compose/connector.yaml"))
        .unwrap()
        .replace("https://server-1:4443", &format!("https://localhost:{}", ports[0]))
        .replace(
            "/var/lib/server-1/ca.pem",
            &dir.path().join("server-1/ca.pem").display().to_string(),
        )
        .replace("0.0.0.0:4480", &format!("127.0.0.1:{admin_port}"))
        .replace(
            "dataDir: /var/lib/infra",
            &format!("dataDir: {}", dir.path().join("connector").display()),
        )
        .replace("http://upstream:8080", &up.url);
    let conf_path = dir.path().join("connector.yaml");
    std::fs::write(&conf_path, conf).unwrap();
    let c = service(&compose, "connector");
    let args: Vec<String> = c
        .command
        .iter()
        .map(|a| a.replace("/etc/infra/connector.yaml", conf_path.to_str().unwrap()))
        .collect();
    assert!(c.env.contains_key("INFRA_ACCESS_KEY"));
    let log = dir.path().join("connector.log");
    procs.0.push(
        Command::new(bin())
            .args(&args)
            .env("INFRA_ACCESS_KEY", &key)
            .env("HOME", dir.path())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("connector.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ok(
        &format!("http://127.0.0.1:{admin_port}/readyz"),
        "connector",
        &dir.path().join("connector.err"),
    );

    // A request through each replica (the connector keeps a tunnel to
    // each: the first tells it the other's address).
    admin
        .run(&["grants", "add", "admin@example.com", "web", "--role", "user"])
        .ok();
    let t = token(&admin, "web");
    for port in ports {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("curl")
                .args(["-sS", "--cacert"])
                .arg(dir.path().join("server-1/ca.pem"))
                .args(["--resolve", &format!("web.localhost:{port}:127.0.0.1")])
                .args(["-H", &format!("Authorization: Bearer {t}")])
                .arg(format!("https://web.localhost:{port}/echo/compose"))
                .output()
                .unwrap();
            if let Ok(echo) = serde_json::from_slice::<Value>(&out.stdout) {
                assert_eq!(echo["path"], "/echo/compose");
                assert_eq!(echo["headers"]["x-forwarded-user"], "admin@example.com");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no answer through the replica on {port}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_systemd_units_verify() {
    // systemd-analyze checks the units as systemd would load them (every
    // directive known, values valid); the binary path is this build's.
    let dir = tempfile::tempdir().unwrap();
    for unit in ["infra-server.service", "infra-connector.service"] {
        let text = std::fs::read_to_string(repo(&format!("deploy/systemd/{unit}")))
            .unwrap()
            .replace("/usr/local/bin/infra", bin().to_str().unwrap());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("infra-server.service"))
        .arg(dir.path().join("infra-connector.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("infra {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&want), "{text}");
    let commit = text.trim().trim_end_matches(')').rsplit(' ').next().unwrap_or_default();
    let git = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&git.stdout).trim().to_owned();
    assert_eq!(commit, head, "{text}");
}
