//! SSH recording mode: the connector terminates the user's SSH connection,
//! checks their certificate as sshd would, logs in to sshd with a
//! certificate of its own, and records the session.

mod losses;

use std::time::{Duration, Instant};

use infra_testkit::{Cli, Connector, Sshd, Terminal, current_login, eventually};

use super::{gateway_ssh, grant, relogin, request_cert, run_as};
use crate::e2e::common::{self, Backend, Env, bin, cast, path_with_infra};
use crate::e2e::gateway::{connector_key, user};

/// A server, a connector with two hosts in recording mode (`rec` and
/// `rec2`), and alice granted the current login on both.
struct Recorded {
    env: Env,
    connector: Connector,
    _hosts: (Sshd, Sshd),
    alice: Cli,
}

fn recorded() -> Recorded {
    recorded_with("", "")
}

/// [`recorded`] with more settings for `rec2` and more of the connector's
/// configuration after its destinations.
fn recorded_with(rec2: &str, more: &str) -> Recorded {
    let env = common::start_with(Backend::Sqlite, vec![]);
    let key = connector_key(&env, "sshc");
    let mut hosts = (
        Sshd::prepare().expect("prepare sshd"),
        Sshd::prepare().expect("prepare sshd"),
    );
    let mut extra = String::new();
    for (name, h) in [("rec", &hosts.0), ("rec2", &hosts.1)] {
        extra.push_str(&format!(
            "  - name: {name}\n    kind: ssh\n    address: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n    record: true\n",
            h.port,
            h.host_key_pub().display(),
            h.infra_dir().display()
        ));
    }
    extra.push_str(rec2);
    extra.push_str(more);
    let connector = Connector::start_with(&bin(), &env.server, &key, "sshc", &[], &extra).expect("start connector");
    for h in [&mut hosts.0, &mut hosts.1] {
        h.wait_for_recording_files(20).expect("sshd files");
        h.start().expect("start sshd");
    }
    let alice = user(&env, "alice@example.com");
    grant(&env, "alice@example.com", "rec", &current_login());
    grant(&env, "alice@example.com", "rec2", &current_login());
    relogin(&env, &alice, "alice@example.com");
    // The grants reach the connector and sshd's files.
    eventually!(30, || {
        let out = alice.run(&["ssh", "rec", "-l", &current_login(), "--", "true"]);
        anyhow::ensure!(out.status == 0, "{out:?}\n{}\n{}", connector.log(), hosts.0.log());
        Ok(())
    });
    Recorded {
        env,
        connector,
        _hosts: hosts,
        alice,
    }
}

/// The SSH recordings the admin sees.
fn ssh_recordings(env: &Env) -> Vec<serde_json::Value> {
    let all = common::json(&env.admin.run(&["sessions", "list", "--kind", "ssh", "-o", "json"]));
    all.as_array().cloned().unwrap_or_default()
}

/// The first stored SSH recording `pick` accepts.
fn stored_ssh(env: &Env, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut found = None;
    eventually!(30, || {
        let items = ssh_recordings(env);
        let r = items
            .iter()
            .find(|r| r["state"] == "stored" && pick(r))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no such stored SSH recording: {items:#?}"))?;
        found = Some(r);
        Ok(())
    });
    found.unwrap()
}

#[test]
fn a_command_and_scp_through_a_recorded_host_are_recorded() {
    let Recorded {
        env,
        connector,
        alice,
        _hosts,
    } = recorded();
    let out = alice.run(&["ssh", "rec", "-l", &current_login(), "--", "echo", "recorded-$((6*7))"]);
    assert_eq!(out.status, 0, "{out:?}\n{}", connector.log());
    assert!(out.stdout.contains("recorded-42"), "{out:?}");
    let r = stored_ssh(&env, |r| r["command"] == "echo recorded-$((6*7))");
    assert_eq!(r["exit"], "exit 0", "{r:#}");
    assert_eq!(r["target"], current_login(), "{r:#}");
    assert_eq!(r["command"], "echo recorded-$((6*7))", "{r:#}");
    let out = env
        .admin
        .run(&["sessions", "export", r["id"].as_str().unwrap(), "-f", "-"]);
    assert!(out.stdout.contains("recorded-42"), "{out:?}");
    assert!(out.stdout.contains("exec: echo recorded-$((6*7))"), "{out:?}");

    // scp (over sftp, as OpenSSH 9 does) through the recorded host, both
    // ways: the file arrives whole, and the recording says a transfer ran.
    let cfg = alice.home().join(".ssh/config");
    let cfg = cfg.to_str().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = alice.home().join("payload.bin");
    std::fs::write(&local, &data).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = remote_dir.path().join("copied.bin");
    let target = format!("rec:{}", remote.display());
    let up = run_as(
        &alice,
        "scp",
        &["-F", cfg, "-o", "BatchMode=yes", local.to_str().unwrap(), &target],
        None,
    );
    assert_eq!(up.status, 0, "{up:?}\n{}", connector.log());
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    let back = alice.home().join("back.bin");
    let down = run_as(
        &alice,
        "scp",
        &["-F", cfg, "-o", "BatchMode=yes", &target, back.to_str().unwrap()],
        None,
    );
    assert_eq!(down.status, 0, "{down:?}");
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // sftp, interactive commands from a batch file: put, list, get.
    let batch = alice.home().join("batch.sftp");
    let fetched = alice.home().join("fetched.bin");
    let sent = remote_dir.path().join("sent.bin");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nls {}\nget {} {}\n",
            local.display(),
            sent.display(),
            remote_dir.path().display(),
            sent.display(),
            fetched.display()
        ),
    )
    .unwrap();
    let sftp = run_as(
        &alice,
        "sftp",
        &["-F", cfg, "-o", "BatchMode=yes", "-b", batch.to_str().unwrap(), "rec"],
        None,
    );
    assert_eq!(sftp.status, 0, "{sftp:?}\n{}", connector.log());
    assert!(sftp.stdout.contains("sent.bin"), "{sftp:?}");
    assert_eq!(std::fs::read(&fetched).unwrap(), data);
    eventually!(30, || {
        let items = ssh_recordings(&env);
        let mut transfers = 0;
        for r in items.iter().filter(|r| r["state"] == "stored") {
            let text = cast(&env, r["id"].as_str().unwrap());
            if text.contains("subsystem sftp closed") || text.contains("file transfer: scp") {
                transfers += 1;
            }
        }
        anyhow::ensure!(transfers >= 3, "{transfers} transfers recorded in {items:#?}");
        Ok(())
    });
}

#[test]
fn an_interactive_shell_through_a_recorded_host_is_recorded_and_played() {
    let s = recorded();
    common::shell_session(
        &s.alice,
        "infra ssh rec",
        "echo typed-$((6*7))",
        "typed-42",
        "exit 5",
        || s.connector.log(),
    );
    let r = stored_ssh(&s.env, |r| r["exit"] == "exit 5");
    assert_eq!(r["user"], "alice@example.com", "{r:#}");
    assert_eq!(r["destination"], "rec", "{r:#}");
    assert_eq!(r["target"], current_login(), "{r:#}");
    assert_eq!(r["truncated"], false, "{r:#}");
    let id = r["id"].as_str().unwrap().to_owned();

    // Played back: the command as the terminal echoed it, then its output.
    common::assert_plays_in_order(&s.env, &id, "echo typed-$((6*7))", "typed-42");
    let text = cast(&s.env, &id);
    assert!(text.contains("\"shell\""), "{text}");
    assert!(
        text.contains("\"r\", \"100x30\"") || text.contains("\"r\",\"100x30\""),
        "{text}"
    );

    // Exported: asciinema reads it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ssh.cast");
    let out = s
        .env
        .admin
        .run(&["sessions", "export", &id, "-f", file.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out:?}");
    let cat = common::asciinema_cat(&file);
    assert_eq!(cat.status, 0, "{cat:?}");
    assert!(cat.stdout.contains("typed-42"), "{cat:?}");
}

#[test]
fn recording_mode_refuses_bad_certificates_and_ends_a_revoked_session() {
    let s = recorded();
    let login = current_login();
    let ssh_dir = s.alice.home().join(".infra/ssh");
    let rec_cert = ssh_dir.join("rec-cert.pub");
    let rec2_cert = ssh_dir.join("rec2-cert.pub");
    let out = s.alice.run(&["ssh", "rec2", "--", "true"]);
    assert_eq!(out.status, 0, "{out:?}");

    // Each certificate opens its own host through the recorder...
    let out = gateway_ssh(&s.alice, "rec", &login, &rec_cert);
    assert_eq!(out.status, 0, "{out:?}\n{}", s.connector.log());
    assert_eq!(out.stdout.trim(), "in");
    // ... but not another host, nor another login.
    let out = gateway_ssh(&s.alice, "rec", &login, &rec2_cert);
    assert_ne!(out.status, 0, "rec2's certificate opened rec: {out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let out = gateway_ssh(&s.alice, "rec", "daemon", &rec_cert);
    assert_ne!(out.status, 0, "another login: {out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // Straight to sshd, around the recorder, with the same certificate
    // (any host key taken): sshd trusts only the recorder's CA.
    let port = s._hosts.0.port.to_string();
    let key = ssh_dir.join("id_ed25519");
    let cert_opt = format!("CertificateFile={}", rec_cert.display());
    let around = run_as(
        &s.alice,
        "ssh",
        &[
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
            &cert_opt,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-p",
            &port,
            "-l",
            &login,
            "127.0.0.1",
            "echo",
            "in",
        ],
        None,
    );
    assert_ne!(around.status, 0, "an unrecorded login straight to sshd: {around:?}");
    assert!(around.stderr.contains("Permission denied"), "{around:?}");

    // A five-second certificate: accepted at once, refused once expired.
    let public = std::fs::read_to_string(ssh_dir.join("id_ed25519.pub")).unwrap();
    let body = serde_json::json!({"destination": "rec", "publicKey": public.trim(), "ttlSeconds": 5});
    let (status, v) = request_cert(&s.env, &s.alice, &body);
    assert_eq!(status, 200, "{v}");
    let short = ssh_dir.join("short-cert.pub");
    std::fs::write(&short, format!("{}\n", v["certificate"].as_str().unwrap())).unwrap();
    let out = gateway_ssh(&s.alice, "rec", &login, &short);
    assert_eq!(out.status, 0, "{out:?}");
    std::thread::sleep(Duration::from_secs(7));
    let out = gateway_ssh(&s.alice, "rec", &login, &short);
    assert_ne!(out.status, 0, "an expired certificate logged in: {out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let log = s.connector.log();
    for why in [
        &format!("not valid for login {login} on rec"),
        "not valid for login daemon on rec",
    ] {
        assert!(log.contains(why), "{why:?} not in the connector's log:\n{log}");
    }
    // An expired certificate is refused by russh before the check, or by it.
    assert!(
        log.contains("Certificate is expired or not yet valid")
            || log.contains("not signed by an Infra user CA, or not valid now"),
        "{log}"
    );

    // A shell runs; the grant is removed: the session ends at once, and
    // its recording is closed and stored, saying why it ended.
    let t = Terminal::start(s.alice.home(), &path_with_infra(), "infra ssh rec").unwrap();
    t.wait_for_prompt(30, || s.connector.log()).unwrap();
    t.type_line("echo before-$((2*21))");
    t.wait_for_text("before-42", 15).unwrap();
    let grants = common::json(&s.alice.run(&["list", "-o", "json"]));
    let id = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["resource"] == "rec")
        .and_then(|g| g["id"].as_str())
        .unwrap()
        .to_owned();
    let revoked = Instant::now();
    s.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    if let Err(e) = t.wait_for_end(15) {
        panic!("{e}\n{}", s.connector.log());
    }
    eprintln!(
        "recorded ssh session ended {:?} after the grant was removed",
        revoked.elapsed()
    );
    let r = stored_ssh(&s.env, |r| r["exit"] == "revoked");
    assert_eq!(r["truncated"], false, "{r:#}");
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("before-42"), "{text}");
    assert!(text.contains("session ended: access revoked"), "{text}");
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn forwarding_through_a_recorded_host_is_what_the_host_allows_and_is_recorded() {
    // rec does not allow port forwarding; rec2 does.
    let s = recorded_with("    allow: [port-forwarding]\n", "");
    let cfg = s.alice.home().join(".ssh/config");
    let cfg = cfg.to_str().unwrap();
    let out = s.alice.run(&["ssh", "rec2", "--", "true"]);
    assert_eq!(out.status, 0, "{out:?}");
    let target = format!("127.0.0.1:{}", s._hosts.1.port);
    // `ssh -W`: a direct-tcpip channel to sshd's own port; what comes back
    // is its banner.
    let forward = |host: &str| {
        run_as(
            &s.alice,
            "ssh",
            &["-F", cfg, "-o", "BatchMode=yes", "-W", &target, host],
            None,
        )
    };
    let out = forward("rec");
    assert_ne!(out.status, 0, "a forwarding the host does not allow: {out:?}");
    assert!(!out.stdout.contains("SSH-2.0-"), "{out:?}");
    let out = forward("rec2");
    assert!(out.stdout.starts_with("SSH-2.0-"), "{out:?}\n{}", s.connector.log());
    // The forwarding is in the recording as a marker, with its byte counts.
    let marker = format!("port forwarding to {target} closed");
    eventually!(30, || {
        let items = ssh_recordings(&s.env);
        let found = items
            .iter()
            .filter(|r| r["destination"] == "rec2" && r["state"] == "stored")
            .any(|r| cast(&s.env, r["id"].as_str().unwrap_or_default()).contains(&marker));
        anyhow::ensure!(found, "no recording with {marker:?} in {items:#?}");
        Ok(())
    });
}
