//! What changes while hosts and sessions are up: revocation, CA rotation
//! and one user's grant removed.

use std::process::{Command, Stdio};
use std::time::Instant;

use infra_testkit::{current_login, eventually};

use super::{audit, grant, raw_ssh, run_as, setup, setup_full, wait_for_access};
use crate::e2e::common::{bin, json};
use crate::e2e::gateway::user;

#[test]
fn revoking_closes_a_tunneled_session() {
    let h = setup();
    let login = current_login();
    let alice = user(&h.env, "alice@example.com");
    grant(&h.env, "alice@example.com", "host1", &login);
    wait_for_access(&alice, "host1");
    let mut long = Command::new(bin())
        .env("HOME", alice.home())
        .args(["ssh", "host1", "--", "echo", "started;", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The session runs: its first output has arrived.
    let mut stdout = std::io::BufReader::new(long.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first.trim(), "started");
    let grants = json(alice.run(&["list", "-o", "json"]).ok());
    let id = grants[0]["id"].as_str().unwrap().to_owned();
    let revoked = Instant::now();
    h.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    let mut status = None;
    eventually!(15, || {
        status = long.try_wait()?;
        anyhow::ensure!(status.is_some(), "ssh still runs after the grant was removed");
        Ok(())
    });
    let took = revoked.elapsed();
    eprintln!("ssh session ended {took:?} after the grant was removed");
    assert_ne!(status.unwrap().code(), Some(0));
    // New certificates and sessions are refused, and sshd no longer has
    // a principals file for the login.
    let out = alice.run(&["ssh", "host1", "--", "true"]);
    assert_ne!(out.status, 0);
    assert!(!h.h1.infra_dir().join("principals").join(&login).exists());
    let text = serde_json::to_string(&audit(&h.env, "ssh.deny")).unwrap();
    assert!(text.contains("reason=revoked"), "{text}");
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
