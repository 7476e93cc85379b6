//! SSH through Infra: real OpenSSH sshd (two hosts, in temp directories on
//! free ports) set up by a connector with `sshdDir`, and the real `ssh` and
//! `scp` clients with short-lived certificates from the server. Neither
//! host has a public address, so every session goes through the gateway,
//! the tunnel and the connector (`infra ssh-proxy`).
//!
//! The tests run plain `ssh -F $HOME/.ssh/config`: OpenSSH reads the
//! config of the account's home from the password database, not `$HOME`,
//! and each test user has a temporary home.

mod changes;
mod recording;
mod refusals;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use infra_testkit::{Cli, Connector, Output, Sshd, current_login, eventually};

use super::common::{Backend, Env, bin, json, session_key};
use super::gateway::{connector_key, user};

struct Hosts {
    env: Env,
    connector: Connector,
    h1: Sshd,
    h2: Sshd,
}

/// Two hosts behind one connector, and `rogue`: a destination whose
/// address is host1's sshd, whose host certificate names host1 only.
fn setup() -> Hosts {
    setup_with(false)
}

/// `direct`: host1 has a public address, so clients skip the tunnel.
fn setup_with(direct: bool) -> Hosts {
    setup_full(direct, Vec::new())
}

fn setup_full(direct: bool, server_args: Vec<String>) -> Hosts {
    let env = super::common::start_with(Backend::Sqlite, server_args);
    let key = connector_key(&env, "sshc");
    let mut h1 = Sshd::prepare().expect("prepare sshd");
    let mut h2 = Sshd::prepare().expect("prepare sshd");
    let mut extra = String::new();
    for (name, h) in [("host1", &h1), ("host2", &h2)] {
        extra.push_str(&format!(
            "  - name: {name}\n    kind: ssh\n    address: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n",
            h.port,
            h.host_key_pub().display(),
            h.infra_dir().display()
        ));
        if direct && name == "host1" {
            extra.push_str(&format!("    publicAddress: 127.0.0.1:{}\n", h.port));
        }
    }
    extra.push_str(&format!(
        "  - name: rogue\n    kind: ssh\n    address: 127.0.0.1:{}\n",
        h1.port
    ));
    let connector = Connector::start_with(&bin(), &env.server, &key, "sshc", &[], &extra).expect("start connector");
    for h in [&mut h1, &mut h2] {
        h.wait_for_infra_files(20).expect("sshd files");
        h.start().expect("start sshd");
    }
    Hosts { env, connector, h1, h2 }
}

fn grant(env: &Env, who: &str, host: &str, login: &str) {
    env.admin.run(&["grants", "add", who, host, "--role", login]).ok();
}

/// Logs `cli` in again (so it writes the SSH config for its grants),
/// adding the Include line without asking.
fn relogin(env: &Env, cli: &Cli, email: &str) -> Output {
    cli.login_password(&env.server, email, "user-password-1", &["--ssh-include"])
}

/// `POST /api/ssh/certificates` with `body`, as the user of `cli`.
fn request_cert(env: &Env, cli: &Cli, body: &serde_json::Value) -> (u16, serde_json::Value) {
    env.server
        .send_json(
            "POST",
            "/api/ssh/certificates",
            Some(&session_key(cli)),
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap()
}

/// Runs a program as the user of `cli` (their HOME), with `infra` on PATH.
fn run_as(cli: &Cli, prog: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("HOME", cli.home())
        .env("PATH", path)
        .env_remove("INFRA_SERVER")
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {prog}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn audit(env: &Env, action: &str) -> Vec<serde_json::Value> {
    let v = json(env.admin.run(&["audit", "list", "--action", action, "-o", "json"]).ok());
    v.as_array().cloned().unwrap_or_default()
}

/// Waits until the grant reached the connector and sshd's files.
fn wait_for_access(cli: &Cli, host: &str) {
    eventually!(15, || {
        let out = cli.run(&["ssh", host, "-l", &current_login(), "--", "true"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
}

/// ssh straight to a host's sshd with a key and certificate, trusting the
/// host by Infra's host CA under `alias`.
fn raw_ssh(cli: &Cli, h: &Sshd, alias: &str, login: &str, cert: &Path) -> Output {
    let port = h.port.to_string();
    ssh_with_cert(cli, alias, cert, &["-p", &port, "-l", login, "127.0.0.1", "echo", "in"])
}

/// ssh to `alias` through the gateway (`infra ssh-proxy`) with a key and
/// certificate chosen here, not the ones Infra's config names.
fn gateway_ssh(cli: &Cli, alias: &str, login: &str, cert: &Path) -> Output {
    let proxy = format!("ProxyCommand=infra ssh-proxy {alias} %p");
    ssh_with_cert(cli, alias, cert, &["-o", &proxy, "-l", login, alias, "echo", "in"])
}

fn ssh_with_cert(cli: &Cli, alias: &str, cert: &Path, rest: &[&str]) -> Output {
    let ssh_dir = cli.home().join(".infra/ssh");
    let key = ssh_dir.join("id_ed25519");
    let mut args = vec![
        "-F".to_owned(),
        "/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        format!("CertificateFile={}", cert.display()),
        "-o".into(),
        format!("UserKnownHostsFile={}", ssh_dir.join("known_hosts").display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("HostKeyAlias={alias}"),
    ];
    args.extend(rest.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_as(cli, "ssh", &args, None)
}

#[test]
fn infra_ssh_and_plain_ssh_scp_log_in_as_the_granted_login() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);

    // `infra ssh` through the tunnel, with no host-key prompt (a prompt
    // would fail here: there is no terminal).
    let out = eventually!(15, || {
        let out = alice.run(&["ssh", "host1", "--", "whoami"]);
        anyhow::ensure!(out.status == 0, "{out:?}\n{}", h.h1.log());
        Ok(out)
    });
    assert_eq!(out.stdout.trim(), login);
    assert!(!out.stderr.contains("authenticity of host"), "{out:?}");
    // The key is the client's own, the certificate short-lived, both 0600.
    let ssh_dir = alice.home().join(".infra/ssh");
    for f in ["id_ed25519", "host1-cert.pub"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ssh_dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let cert = run_as(
        &alice,
        "ssh-keygen",
        &["-L", "-f", ssh_dir.join("host1-cert.pub").to_str().unwrap()],
        None,
    );
    assert!(cert.stdout.contains(&format!("infra:host1:{login}")), "{cert:?}");
    assert!(cert.stdout.contains("Key ID: \"alice@example.com serial="), "{cert:?}");
    assert!(cert.stdout.contains("permit-pty"), "{cert:?}");
    assert!(!cert.stdout.contains("permit-port-forwarding"), "{cert:?}");

    // `infra list` shows the host and the login.
    let list = alice.run(&["list"]).ok().stdout.clone();
    assert!(list.contains(&format!("infra ssh host1 -l {login}")), "{list}");

    // After login: plain ssh and scp, through ~/.ssh/config's Include.
    let out = relogin(&h.env, &alice, "alice@example.com");
    assert_eq!(out.status, 0, "{out:?}");
    let user_config = alice.home().join(".ssh/config");
    let text = std::fs::read_to_string(&user_config).unwrap();
    assert!(
        text.contains(&format!("Include {}", alice.home().join(".ssh/infra/config").display())),
        "{text}"
    );
    let cfg = user_config.to_str().unwrap().to_owned();
    let out = run_as(
        &alice,
        "ssh",
        &["-F", &cfg, "-o", "BatchMode=yes", "host1", "whoami"],
        None,
    );
    assert_eq!(out.status, 0, "{out:?}\n{}", h.h1.log());
    assert_eq!(out.stdout.trim(), login);

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = alice.home().join("payload.bin");
    std::fs::write(&local, &data).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("copied.bin");
    let out = run_as(
        &alice,
        "scp",
        &[
            "-F",
            &cfg,
            "-o",
            "BatchMode=yes",
            local.to_str().unwrap(),
            &format!("host1:{}", remote.display()),
        ],
        None,
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    let back = alice.home().join("back.bin");
    let out = run_as(
        &alice,
        "scp",
        &[
            "-F",
            &cfg,
            "-o",
            "BatchMode=yes",
            &format!("host1:{}", remote.display()),
            back.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // The certificate expiring soon is renewed by ssh's Match exec line.
    let cert_path = ssh_dir.join("host1-cert.pub");
    let before = std::fs::read_to_string(&cert_path).unwrap();
    std::fs::write(ssh_dir.join("host1.json"), "{}").unwrap();
    let out = run_as(
        &alice,
        "ssh",
        &["-F", &cfg, "-o", "BatchMode=yes", "host1", "true"],
        None,
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_ne!(
        std::fs::read_to_string(&cert_path).unwrap(),
        before,
        "a new certificate"
    );

    // Audit: the issuance, and each tunneled session's start and end.
    let issued = audit(&h.env, "ssh.certificate");
    assert!(
        issued.iter().any(|e| e["actor"] == "alice@example.com"
            && e["target"] == "host1"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("logins={login} serial="))),
        "{issued:?}"
    );
    eventually!(10, || {
        let sessions = audit(&h.env, "ssh.request");
        let text = serde_json::to_string(&sessions)?;
        anyhow::ensure!(text.contains("session start") && text.contains("session end"), "{text}");
        anyhow::ensure!(text.contains("bytes_out="), "{text}");
        Ok(())
    });

    // Logout removes the SSH config and the Include line.
    alice.run(&["logout"]).ok();
    assert!(!alice.home().join(".ssh/infra/config").exists());
    let text = std::fs::read_to_string(&user_config).unwrap();
    assert!(!text.contains("Include"), "{text}");
    assert!(!ssh_dir.exists(), "keys and certificates go with the session");
}

#[test]
fn a_host_with_a_public_address_is_reached_directly() {
    let h = setup_with(true);
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    let out = eventually!(15, || {
        let out = alice.run(&["ssh", "host1", "--", "whoami"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(out)
    });
    assert_eq!(out.stdout.trim(), login);
    // Straight to sshd: the connector carried no session.
    std::thread::sleep(Duration::from_secs(1));
    assert!(audit(&h.env, "ssh.request").is_empty());
    // The SSH config names the address instead of a ProxyCommand.
    assert_eq!(relogin(&h.env, &alice, "alice@example.com").status, 0);
    let cfg = std::fs::read_to_string(alice.home().join(".ssh/infra/config")).unwrap();
    assert!(
        cfg.contains(&format!("Port {}", h.h1.port)) && !cfg.contains("ProxyCommand"),
        "{cfg}"
    );
    let user_config = alice.home().join(".ssh/config");
    let out = run_as(
        &alice,
        "ssh",
        &[
            "-F",
            user_config.to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "host1",
            "whoami",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), login, "{out:?}");
    // --tunnel goes through Infra all the same.
    let out = alice.run(&["ssh", "host1", "--tunnel", "--", "whoami"]);
    assert_eq!(out.stdout.trim(), login, "{out:?}");
    eventually!(10, || {
        anyhow::ensure!(!audit(&h.env, "ssh.request").is_empty(), "no tunneled session");
        Ok(())
    });
}
