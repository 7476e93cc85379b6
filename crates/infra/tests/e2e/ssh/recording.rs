//! SSH recording mode: the connector terminates the user's SSH connection,
//! checks their certificate as sshd would, logs in to sshd with a
//! certificate of its own, and records the session.

use infra_testkit::{Connector, Sshd, current_login, eventually};

use super::{grant, relogin, run_as, wait_for_access};
use crate::e2e::common::{self, Backend, bin};
use crate::e2e::gateway::{connector_key, user};

#[test]
fn a_command_and_scp_through_a_recorded_host_are_recorded() {
    let env = common::start_with(Backend::Sqlite, vec![]);
    let key = connector_key(&env, "sshc");
    let mut h = Sshd::prepare().expect("prepare sshd");
    let extra = format!(
        "  - name: rec\n    kind: ssh\n    address: 127.0.0.1:{}\n    hostKeyFile: {}\n    sshdDir: {}\n    record: true\n",
        h.port,
        h.host_key_pub().display(),
        h.infra_dir().display()
    );
    let connector = Connector::start_with(&bin(), &env.server, &key, "sshc", &[], &extra).expect("start connector");
    h.wait_for_recording_files(20).expect("sshd files");
    h.start().expect("start sshd");
    let alice = user(&env, "alice@example.com");
    grant(&env, "alice@example.com", "rec", &current_login());
    relogin(&env, &alice, "alice@example.com");
    wait_for_access(&alice, "rec");
    let out = alice.run(&["ssh", "rec", "-l", &current_login(), "--", "echo", "recorded-$((6*7))"]);
    assert_eq!(out.status, 0, "{out:?}\n{}", connector.log());
    assert!(out.stdout.contains("recorded-42"), "{out:?}");
    let mut found = None;
    eventually!(30, || {
        let all = common::json(&env.admin.run(&["sessions", "list", "--kind", "ssh", "-o", "json"]));
        let items = all.as_array().cloned().unwrap_or_default();
        let r = items
            .iter()
            .find(|r| r["state"] == "stored" && r["exit"] == "exit 0")
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no stored SSH recording: {items:#?}"))?;
        found = Some(r);
        Ok(())
    });
    let r = found.unwrap();
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
    eventually!(30, || {
        let all = common::json(&env.admin.run(&["sessions", "list", "--kind", "ssh", "-o", "json"]));
        let items = all.as_array().cloned().unwrap_or_default();
        let mut transfers = 0;
        for r in items.iter().filter(|r| r["state"] == "stored") {
            let text = env
                .admin
                .run(&["sessions", "export", r["id"].as_str().unwrap(), "-f", "-"])
                .stdout;
            if text.contains("subsystem sftp closed") || text.contains("file transfer: scp") {
                transfers += 1;
            }
        }
        anyhow::ensure!(transfers >= 2, "{transfers} transfers recorded in {items:#?}");
        Ok(())
    });
}
