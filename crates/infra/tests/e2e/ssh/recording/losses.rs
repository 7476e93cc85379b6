//! Recorded SSH sessions that lose their server or their connector midway:
//! the recording arrives whole, or whole up to a kill and marked truncated.

use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use infra_testkit::{Cli, eventually};

use super::{recorded, recorded_with, ssh_recordings, stored_ssh};
use crate::e2e::common::{self, bin, cast, say};

/// The remote command: a loop that answers each line.
const LOOP: &str = "sh -c 'while read l; do echo \"got $l\"; done'";

/// `infra ssh rec` running [`LOOP`], as alice, without a terminal.
fn echo_session(alice: &Cli) -> (Child, ChildStdin, std::io::BufReader<ChildStdout>) {
    let mut child = Command::new(bin())
        .env("HOME", alice.home())
        .env_remove("INFRA_SERVER")
        .args(["ssh", "rec", "--", LOOP])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

#[test]
fn recorded_ssh_sessions_survive_the_server_down_and_the_connector_killed() {
    let mut s = recorded();

    // The server goes down mid-session: the session is cut (its data path
    // ran through the server), the recording waits on the connector's
    // disk, and arrives whole once the server is back.
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "before the server went down");
    s.env.server.kill();
    let _ = child.wait();
    eventually!(15, || {
        let h = s.connector.health().ok_or_else(|| anyhow::anyhow!("no health"))?;
        anyhow::ensure!(h["status"] == "connecting", "{h}");
        anyhow::ensure!(h["recordingsWaitingBytes"].as_u64() > Some(0), "{h}");
        Ok(())
    });
    s.env.server.start_again().unwrap();
    let r = stored_ssh(&s.env, |r| {
        r["command"] == LOOP && r["truncated"] == false && r["exit"] != ""
    });
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("got before the server went down"), "{text}");
    eventually!(30, || {
        anyhow::ensure!(s.connector.healthy(), "the connector is not back");
        Ok(())
    });

    // The connector is killed mid-session: what it recorded up to the kill
    // is shipped when it starts again, marked truncated.
    common::login(&s.alice, &s.env.server, "alice@example.com", "user-password-1").ok();
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "before the connector was killed");
    s.connector.kill();
    let _ = child.wait();
    s.connector.restart().unwrap();
    let r = stored_ssh(&s.env, |r| r["command"] == LOOP && r["truncated"] == true);
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("got before the connector was killed"), "{text}");
    assert!(text.contains("recording truncated: the connector stopped"), "{text}");
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
    // Nothing is left behind: every session's recording is stored.
    eventually!(30, || {
        let all = ssh_recordings(&s.env);
        anyhow::ensure!(all.iter().all(|r| r["state"] == "stored"), "{all:#?}");
        Ok(())
    });
}

#[test]
fn a_full_spool_refuses_or_lets_through_unrecorded_as_the_host_says() {
    // A budget of one byte: a running session fills it.
    let s = recorded_with("    onFull: allow-unrecorded\n", "recordings:\n  budget: \"1\"\n");
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "holding the spool");
    // rec refuses (the default)...
    let out = s.alice.run(&["ssh", "rec", "--", "echo", "unrecorded?"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(!out.stdout.contains("unrecorded?"), "{out:?}");
    // ... rec2 lets the session run without a recording, and says so.
    let out = s.alice.run(&["ssh", "rec2", "--", "echo", "let-$((1+1))"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("let-2"), "{out:?}");
    // Both are in the audit log.
    eventually!(15, || {
        let audit = common::json(
            &s.env
                .admin
                .run(&["audit", "list", "--action", "ssh.request", "-o", "json"]),
        );
        let text = audit.to_string();
        anyhow::ensure!(text.contains("session refused: sessions on rec are recorded"), "{text}");
        anyhow::ensure!(text.contains("recording spool is full"), "{text}");
        anyhow::ensure!(text.contains("warning=not-recorded"), "{text}");
        Ok(())
    });
    drop(stdin);
    let _ = child.wait();
    let all = ssh_recordings(&s.env);
    assert!(
        all.iter()
            .all(|r| r["destination"] != "rec2" || r["command"] != "echo let-$((1+1))"),
        "{all:#?}"
    );
}
