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
}
