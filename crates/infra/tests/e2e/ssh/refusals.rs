//! What sshd and the server refuse: no grant, the wrong login, another
//! host, an expired certificate, an uncertified host, bad input.

use std::time::Duration;

use infra_testkit::{current_login, eventually};

use super::{audit, grant, raw_ssh, request_cert, run_as, setup, wait_for_access};
use crate::e2e::common::bin;
use crate::e2e::gateway::user;

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
