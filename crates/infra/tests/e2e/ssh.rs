//! SSH through Infra: real OpenSSH sshd (two hosts, in temp directories on
//! free ports) set up by a connector with `sshdDir`, and the real `ssh` and
//! `scp` clients with short-lived certificates from the server. Neither
//! host has a public address, so every session goes through the gateway,
//! the tunnel and the connector (`infra ssh-proxy`).
//!
//! The tests run plain `ssh -F $HOME/.ssh/config`: OpenSSH reads the
//! config of the account's home from the password database, not `$HOME`,
//! and each test user has a temporary home.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let ssh_dir = cli.home().join(".infra/ssh");
    let port = h.port.to_string();
    let key = ssh_dir.join("id_ed25519");
    let args = [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-i",
        key.to_str().unwrap(),
        "-o",
        &format!("CertificateFile={}", cert.display()),
        "-o",
        &format!("UserKnownHostsFile={}", ssh_dir.join("known_hosts").display()),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("HostKeyAlias={alias}"),
        "-p",
        &port,
        "-l",
        login,
        "127.0.0.1",
        "echo",
        "in",
    ];
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
fn no_grant_wrong_login_and_another_host_are_refused() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    let bob = user(&h.env, "bob@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    grant(&h.env, "alice@example.com", "host2", &login);

    // No grant: refused with what to do.
    let out = bob.run(&["ssh", "host1", "--", "true"]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("no grant on host1"), "{out:?}");

    eventually!(15, || {
        let out = alice.run(&["ssh", "host1", "--", "true"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        let out = alice.run(&["ssh", "host2", "--", "true"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    // A login not granted: refused by Infra before ssh runs...
    let out = alice.run(&["ssh", "host1", "-l", "daemon", "--", "true"]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("not granted login 'daemon'"), "{out:?}");
    // ... by the server when asked for it outright, and audited ...
    let public = std::fs::read_to_string(alice.home().join(".infra/ssh/id_ed25519.pub")).unwrap();
    let body = serde_json::json!({"destination": "host1", "publicKey": public.trim(), "logins": ["daemon"]});
    let (status, v) = request_cert(&h.env, &alice, &body);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not granted login 'daemon'"),
        "{v}"
    );
    let denied = audit(&h.env, "ssh.certificate");
    assert!(
        denied
            .iter()
            .any(|e| e["result"] == "denied" && e["detail"] == "login daemon not granted"),
        "{denied:?}"
    );
    // ... and by sshd with a valid certificate for another login.
    let cert1 = alice.home().join(".infra/ssh/host1-cert.pub");
    let out = raw_ssh(&alice, &h.h1, "host1", "daemon", &cert1);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // The certificate for host1 opens host1 straight at its sshd...
    let out = raw_ssh(&alice, &h.h1, "host1", &login, &cert1);
    assert_eq!(out.status, 0, "{out:?}\n{}", h.h1.log());
    assert_eq!(out.stdout.trim(), "in");
    // ... but not host2: same user CA, same login, another host.
    let out = raw_ssh(&alice, &h.h2, "host2", &login, &cert1);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(
        h.h2.log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        h.h2.log()
    );
}

#[test]
fn expired_certificate_and_uncertified_host_are_refused() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    grant(&h.env, "alice@example.com", "rogue", &login);
    wait_for_access(&alice, "host1");

    // A five-second certificate: accepted at once, refused once expired.
    let ssh_dir = alice.home().join(".infra/ssh");
    let public = std::fs::read_to_string(ssh_dir.join("id_ed25519.pub")).unwrap();
    let body = serde_json::json!({"destination": "host1", "publicKey": public.trim(), "ttlSeconds": 5});
    let (status, v) = request_cert(&h.env, &alice, &body);
    assert_eq!(status, 200, "{v}");
    let short = ssh_dir.join("short-cert.pub");
    std::fs::write(&short, format!("{}\n", v["certificate"].as_str().unwrap())).unwrap();
    let out = raw_ssh(&alice, &h.h1, "host1", &login, &short);
    assert_eq!(out.status, 0, "{out:?}");
    std::thread::sleep(Duration::from_secs(7));
    let out = raw_ssh(&alice, &h.h1, "host1", &login, &short);
    assert_ne!(out.status, 0, "an expired certificate logged in: {out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // A grant that ends in two minutes gives a certificate that ends with it.
    h.env
        .admin
        .run(&[
            "grants",
            "add",
            "alice@example.com",
            "host2",
            "--role",
            &login,
            "--expires-in",
            "2m",
        ])
        .ok();
    let body = serde_json::json!({"destination": "host2", "publicKey": public.trim()});
    let (status, v) = request_cert(&h.env, &alice, &body);
    assert_eq!(status, 200, "{v}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = v["validBefore"].as_u64().unwrap() - now;
    assert!(left <= 121, "a certificate outliving its grant: {left} s");

    // `rogue` is answered by a host whose certificate names host1: ssh
    // refuses it rather than ask.
    let out = alice.run(&["ssh", "rogue", "--", "true"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("Host key verification failed") || out.stderr.contains("Certificate invalid"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("authenticity of host"), "{out:?}");
}

#[test]
fn bad_input_on_the_stream_and_the_api_is_refused() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    wait_for_access(&alice, "host1");

    // Garbage on the tunnel stream reaches sshd, which hangs up.
    let mut garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    garbage.extend((0..100_000u32).map(|i| (i * 31 % 256) as u8));
    let out = run_as(
        &alice,
        bin().to_str().unwrap(),
        &["ssh-proxy", "host1", "22"],
        Some(&garbage),
    );
    assert!(out.stdout.starts_with("SSH-2.0-OpenSSH"), "{out:?}");
    assert!(h.connector.healthy(), "{}", h.connector.log());

    // Keys Infra does not certify: DSA, short RSA, not a key at all.
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (t, bits) in [("dsa", "1024"), ("rsa", "2048")] {
        let p = dir.path().join(t);
        let out = run_as(
            &alice,
            "ssh-keygen",
            &["-q", "-t", t, "-b", bits, "-N", "", "-f", p.to_str().unwrap()],
            None,
        );
        assert_eq!(out.status, 0, "{out:?}");
        cases.push((
            std::fs::read_to_string(p.with_extension("pub")).unwrap(),
            if t == "dsa" { "not allowed" } else { "2048 bits" },
        ));
    }
    cases.push(("ssh-ed25519 AAAAnot-a-key".into(), "not in OpenSSH format"));
    cases.push(("-----BEGIN OPENSSH PRIVATE KEY-----".into(), "not in OpenSSH format"));
    for (public, why) in &cases {
        let body = serde_json::json!({"destination": "host1", "publicKey": public.trim()});
        let (status, v) = request_cert(&h.env, &alice, &body);
        assert_eq!(status, 400, "{public}: {v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{public}: {v}");
    }
    // A namespace on a host, a host that is no host, no body.
    for (body, status) in [
        (serde_json::json!({"destination": "host1.x", "publicKey": "k"}), 400),
        (serde_json::json!({"destination": "nohost", "publicKey": "k"}), 403),
        (
            serde_json::json!({"destination": "host1", "publicKey": "k", "extra": 1}),
            422,
        ),
    ] {
        let (s, v) = request_cert(&h.env, &alice, &body);
        assert_eq!(s, status, "{body}: {v}");
    }
    let denied = audit(&h.env, "ssh.certificate");
    assert!(
        denied.iter().filter(|e| e["result"] == "denied").count() >= cases.len(),
        "{denied:?}"
    );
    // Nothing crashed: sessions still work.
    let out = alice.run(&["ssh", "host1", "--", "echo", "still"]);
    assert_eq!(out.stdout.trim(), "still", "{out:?}");
}

#[test]
fn revoking_closes_a_tunneled_session() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    wait_for_access(&alice, "host1");
    let home = alice.home().to_owned();
    let long = std::thread::spawn(move || {
        let out = Command::new(bin())
            .env("HOME", &home)
            .args(["ssh", "host1", "--", "echo", "started;", "sleep", "60"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (Instant::now(), out)
    });
    eventually!(15, || {
        let text = serde_json::to_string(&audit(&h.env, "ssh.request"))?;
        anyhow::ensure!(text.matches("session start").count() >= 2, "{text}");
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let grants = json(alice.run(&["list", "-o", "json"]).ok());
    let id = grants[0]["id"].as_str().unwrap().to_owned();
    let revoked = Instant::now();
    h.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    let (ended, out) = long.join().unwrap();
    let took = ended.duration_since(revoked);
    eprintln!("ssh session ended {took:?} after the grant was removed");
    assert!(took < Duration::from_secs(10), "the session outlived its grant");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("started"));
    // New certificates and sessions are refused, and sshd no longer has
    // a principals file for the login.
    let out = alice.run(&["ssh", "host1", "--", "true"]);
    assert_ne!(out.status, 0);
    assert!(!h.h1.infra_dir().join("principals").join(&login).exists());
    let text = serde_json::to_string(&audit(&h.env, "ssh.deny")).unwrap();
    assert!(text.contains("reason=revoked"), "{text}");
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

#[test]
fn rotating_the_cas_keeps_hosts_and_clients_working() {
    // Certificates of 5 s: a new host CA key signs once every client
    // certificate issued before it has expired.
    let h = setup_full(false, vec!["--ssh-cert-ttl".into(), "5s".into()]);
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    wait_for_access(&alice, "host1");
    // The CA private keys are sealed in the store, never in the clear.
    let db = std::fs::read(h.env.server.data_dir.join("infra.db")).unwrap();
    let needle = b"OPENSSH PRIVATE KEY";
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "a CA key is stored in the clear"
    );

    let user_ca = h.h1.infra_dir().join("user_ca.pub");
    let host_cert = h.h1.infra_dir().join("host-cert.pub");
    let old_host_cert = std::fs::read_to_string(&host_cert).unwrap();
    let shown = h.env.admin.run(&["ssh-ca", "show", "user"]).ok().stdout.clone();
    assert_eq!(shown.lines().count(), 1, "{shown}");
    let old_cert = std::fs::read_to_string(alice.home().join(".infra/ssh/host1-cert.pub")).unwrap();
    h.env.admin.run(&["ssh-ca", "rotate", "user"]).ok();
    h.env.admin.run(&["ssh-ca", "rotate", "host"]).ok();
    // Both user CA keys are on the host within moments, and the host still
    // presents its certificate from the old host CA, which clients know.
    eventually!(5, || {
        let text = std::fs::read_to_string(&user_ca)?;
        anyhow::ensure!(text.lines().count() == 2, "{text}");
        Ok(())
    });
    assert_eq!(std::fs::read_to_string(&host_cert).unwrap(), old_host_cert);
    // A certificate from the old user CA still works...
    let ssh_dir = alice.home().join(".infra/ssh");
    let old = ssh_dir.join("old-cert.pub");
    std::fs::write(&old, &old_cert).unwrap();
    let out = raw_ssh(&alice, &h.h1, "host1", &login, &old);
    assert_eq!(
        out.status,
        0,
        "{out:?}\nknown_hosts: {}\nhost cert: {}\nCA: {:?}",
        std::fs::read_to_string(ssh_dir.join("known_hosts")).unwrap_or_default(),
        run_as(&alice, "ssh-keygen", &["-L", "-f", host_cert.to_str().unwrap()], None).stdout,
        h.env.server.get_json("/api/ssh/host-ca", None)
    );
    // ... and a new one from the new CA, whose response lists both host CA keys.
    let out = alice.run(&["ssh", "host1", "--", "echo", "new"]);
    assert_eq!(out.stdout.trim(), "new", "{out:?}\n{}", h.h1.log());
    assert_ne!(
        std::fs::read_to_string(ssh_dir.join("host1-cert.pub")).unwrap(),
        old_cert
    );
    let kh = std::fs::read_to_string(ssh_dir.join("known_hosts")).unwrap();
    assert_eq!(kh.matches("@cert-authority").count(), 2, "{kh}");
    // Once every older client certificate has expired, the host gets a
    // certificate from the new host CA, and clients trust it.
    eventually!(20, || {
        anyhow::ensure!(
            std::fs::read_to_string(&host_cert)? != old_host_cert,
            "host certificate not renewed"
        );
        Ok(())
    });
    let out = alice.run(&["ssh", "host1", "--", "echo", "after"]);
    assert_eq!(out.stdout.trim(), "after", "{out:?}");
    // sshd presents the new certificate to new connections, no reload.
    let new_cert = std::fs::read_to_string(&host_cert).unwrap();
    let blob = new_cert.split_whitespace().nth(1).unwrap().to_owned();
    let port = h.h1.port.to_string();
    let scan = run_as(
        &alice,
        "ssh-keyscan",
        &["-c", "-t", "ed25519", "-p", &port, "127.0.0.1"],
        None,
    );
    assert!(scan.stdout.contains(&blob), "{scan:?}");
    let rotations = audit(&h.env, "ssh-ca.rotate");
    assert_eq!(rotations.len(), 2, "{rotations:?}");
}

#[test]
fn removing_one_users_grant_refuses_their_certificate_and_sessions() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    let bob = user(&h.env, "bob@example.com");
    // Both hold the same login; alice also holds another.
    grant(&h.env, "alice@example.com", "host1", &login);
    grant(&h.env, "alice@example.com", "host1", "daemon");
    grant(&h.env, "bob@example.com", "host1", &login);
    wait_for_access(&alice, "host1");
    wait_for_access(&bob, "host1");
    let cert = alice.home().join(".infra/ssh/host1-cert.pub");
    let out = raw_ssh(&alice, &h.h1, "host1", &login, &cert);
    assert_eq!(out.status, 0, "{out:?}");

    // A tunneled session as alice, open while her other login goes: it may
    // have been using it (which login is in use is encrypted), so it ends.
    let home = alice.home().to_owned();
    let l = login.clone();
    let long = std::thread::spawn(move || {
        Command::new(bin())
            .env("HOME", &home)
            .args(["ssh", "host1", "-l", &l, "--", "sleep", "60"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    eventually!(15, || {
        let text = serde_json::to_string(&audit(&h.env, "ssh.request"))?;
        anyhow::ensure!(text.matches("session start").count() >= 3, "{text}");
        Ok(())
    });
    let list = json(alice.run(&["list", "-o", "json"]).ok());
    let daemon = list.as_array().unwrap().iter().find(|g| g["role"] == "daemon").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.env.admin.run(&["grants", "remove", "--id", &daemon]).ok();
    let out = long.join().unwrap();
    assert_ne!(out.status.code(), Some(0), "the session outlived a login it could use");

    // Alice's login grant goes; bob still holds the same login. Her
    // certificate (still within its hour) is refused by sshd; bob's works.
    let list = json(alice.run(&["list", "-o", "json"]).ok());
    let id = list.as_array().unwrap()[0]["id"].as_str().unwrap().to_owned();
    h.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    eventually!(10, || {
        let out = raw_ssh(&alice, &h.h1, "host1", &login, &cert);
        anyhow::ensure!(out.status != 0, "alice still gets in: {out:?}");
        Ok(())
    });
    let out = bob.run(&["ssh", "host1", "--", "echo", "bob"]);
    assert_eq!(out.stdout.trim(), "bob", "{out:?}");
}
