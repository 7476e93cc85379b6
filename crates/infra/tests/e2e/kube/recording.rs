//! Recorded `kubectl exec` sessions: a real kubectl in a terminal (tmux)
//! through the gateway and a connector to the kubelet double, the
//! recording played back and exported, its digest checked by
//! `infra audit verify`; and recordings that survive the server being down
//! and the connector being killed.

mod apiserver;
mod console;

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};

use infra_testkit::{Cli, Connector, KubeDouble, eventually};

use super::path_with_infra;
use crate::e2e::common::{self, Backend, Env, bin, cast, say};
use crate::e2e::gateway::{connector_key, user};

const SA_TOKEN: &str = "connector-sa-token";

/// A server, a connector serving `pods` (recorded, WebSocket double) and
/// `pods-spdy` (recorded, a double that speaks only SPDY), and alice with
/// `connect` on both.
struct Setup {
    env: Env,
    connector: Connector,
    alice: Cli,
    _doubles: (KubeDouble, KubeDouble),
}

fn setup() -> Setup {
    setup_with(vec![], vec![], "")
}

/// [`setup`] with the server's extra arguments and environment, and more
/// of the connector's configuration (`{ws}` is the WebSocket double's
/// destination settings).
fn setup_with(args: Vec<String>, server_env: Vec<(String, String)>, connector: &str) -> Setup {
    let ws = KubeDouble::start(SA_TOKEN, "alice@example.com", true).unwrap();
    let spdy = KubeDouble::start(SA_TOKEN, "alice@example.com", false).unwrap();
    let env = common::start_with_env(Backend::Sqlite, args, server_env);
    let key = connector_key(&env, "kc");
    let mut extra = ws.destination("pods") + &spdy.destination("pods-spdy");
    extra.push_str(&connector.replace("{ws}", &ws.settings()));
    let connector = Connector::start_with(&bin(), &env.server, &key, "kc", &[], &extra).unwrap();
    let alice = user(&env, "alice@example.com");
    for d in ["pods", "pods-spdy", "pods-open"] {
        env.admin
            .run(&["grants", "add", "alice@example.com", d, "--role", "connect"])
            .ok();
    }
    common::login(&alice, &env.server, "alice@example.com", "user-password-1").ok();
    Setup {
        env,
        connector,
        alice,
        _doubles: (ws, spdy),
    }
}

fn kubectl(cli: &Cli, dest: &str) -> Command {
    let mut c = Command::new("kubectl");
    c.env("HOME", cli.home())
        .env_remove("KUBECONFIG")
        .env("PATH", path_with_infra())
        .args(["--context", &format!("infra:{dest}")]);
    c
}

/// The recordings the admin sees, newest first.
fn recordings(env: &Env) -> Vec<serde_json::Value> {
    let out = env.admin.run(&["sessions", "list", "-o", "json"]);
    assert_eq!(out.status, 0, "{out:?}");
    common::json(&out).as_array().cloned().unwrap_or_default()
}

/// The one stored recording whose `command` is `command`.
fn stored(env: &Env, command: &str) -> serde_json::Value {
    let mut found = None;
    eventually!(30, || {
        let all = recordings(env);
        let r = all
            .iter()
            .find(|r| r["command"] == command)
            .ok_or_else(|| anyhow::anyhow!("no recording of {command:?} in {all:#?}"))?;
        anyhow::ensure!(r["state"] == "stored", "{r:#}");
        found = Some(r.clone());
        Ok(())
    });
    found.unwrap()
}

#[test]
fn an_interactive_kubectl_exec_is_recorded_played_exported_and_verified() {
    let s = setup();
    let term = tempfile::tempdir().unwrap();
    // kubectl exec -it in a terminal; the "pod" runs a shell on a pty of
    // its own (script), as a container runtime gives a tty.
    let cmd = "kubectl --context infra:pods exec -it web -n dev -- script -qfec sh /dev/null";
    common::shell_session(&s.alice, cmd, "echo one-$((40+2))", "one-42", "exit 7", || {
        s.connector.log()
    });

    let r = stored(&s.env, "script -qfec sh /dev/null");
    assert_eq!(r["user"], "alice@example.com", "{r:#}");
    assert_eq!(r["destination"], "pods", "{r:#}");
    assert_eq!(r["target"], "dev/web/main", "{r:#}");
    assert_eq!(r["kind"], "kube-exec", "{r:#}");
    assert_eq!(r["exit"], "exit 7", "{r:#}");
    assert_eq!(r["truncated"], false, "{r:#}");
    let id = r["id"].as_str().unwrap().to_owned();

    // Played back: the command as the terminal echoed it, then its output.
    common::assert_plays_in_order(&s.env, &id, "echo one-$((40+2))", "one-42");

    // Exported: asciinema reads it.
    let file = term.path().join("session.cast");
    let out = s
        .env
        .admin
        .run(&["sessions", "export", &id, "-f", file.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out:?}");
    let cat = common::asciinema_cat(&file);
    assert_eq!(cat.status, 0, "{cat:?}");
    assert!(cat.stdout.contains("one-42"), "{cat:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().any(|l| l.contains(r#""r""#)), "no resize event:\n{text}");
    assert!(text.lines().any(|l| l.contains(r#""i""#)), "no input event:\n{text}");

    // Watching is audited; the digest is in the audit log.
    let events = common::json(
        &s.env
            .admin
            .run(&["audit", "list", "--action", "recording.view", "-o", "json"]),
    );
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events:#}");
    let events = common::json(
        &s.env
            .admin
            .run(&["audit", "list", "--action", "session.recorded", "-o", "json"]),
    );
    let detail = events[0]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.contains(&format!("recording={id}")) && detail.contains("sha256="),
        "{detail}"
    );

    // infra audit verify hashes the recording again.
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("1 session recordings match"), "{out:?}");
    let path = s.env.server.data_dir.join("recordings").join(format!("{id}.cast"));
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("one-42", "one-43")).unwrap();
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("was changed in the recording store"), "{out:?}");
    std::fs::remove_file(&path).unwrap();
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("is missing from the recording store"), "{out:?}");
    // A link put in a recording's place is not followed (it could point
    // at the root key): reading fails, and verification says so.
    std::os::unix::fs::symlink(s.env.server.data_dir.join("root.key"), &path).unwrap();
    let out = s.env.admin.run(&["sessions", "export", &id, "-f", "-"]);
    assert_ne!(out.status, 0, "{out:?}");
    let key = std::fs::read_to_string(s.env.server.data_dir.join("root.key")).unwrap();
    assert!(!out.stdout.contains(key.trim()) && !out.stderr.contains(key.trim()));
    let out = s.env.admin.run(&["audit", "verify"]);
    assert!(out.stderr.contains("is missing from the recording store"), "{out:?}");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &original).unwrap();
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");

    // Over SPDY (older kubectl or clusters) a session is recorded the same.
    let out = kubectl(&s.alice, "pods-spdy")
        .args(["exec", "web", "-n", "dev", "--", "sh", "-c", "echo over-$((6*7))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = stored(&s.env, "sh -c echo over-$((6*7))");
    assert_eq!(r["destination"], "pods-spdy", "{r:#}");
    assert_eq!(r["exit"], "exit 0", "{r:#}");
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("over-42"), "{text}");

    // A user whose grant is taken away mid-session is cut off at once, and
    // the recording is closed, complete.
    let mut child = kubectl(&s.alice, "pods")
        .args([
            "exec",
            "-i",
            "web",
            "-n",
            "dev",
            "--",
            "sh",
            "-c",
            "while read l; do echo \"got $l\"; done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"before revoke\n").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got before revoke\n");
    s.env
        .admin
        .run(&["grants", "remove", "alice@example.com", "pods", "--role", "connect"])
        .ok();
    let mut ended = None;
    eventually!(15, || {
        ended = child.try_wait()?;
        anyhow::ensure!(ended.is_some(), "kubectl still runs after the grant was removed");
        Ok(())
    });
    assert!(!ended.unwrap().success());
    let r = stored(&s.env, "sh -c while read l; do echo \"got $l\"; done");
    assert_eq!(r["truncated"], false, "{r:#}");
}

/// `kubectl exec -i` of a loop that answers each line, as alice.
fn echo_session(
    alice: &Cli,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = kubectl(alice, "pods")
        .args([
            "exec",
            "-i",
            "web",
            "-n",
            "dev",
            "--",
            "sh",
            "-c",
            "while read l; do echo \"got $l\"; done",
        ])
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
fn recordings_survive_the_server_down_and_the_connector_killed() {
    let mut s = setup();
    const LOOP: &str = "sh -c while read l; do echo \"got $l\"; done";

    // The server goes down mid-session: the session is cut (its data path
    // ran through the server), the recording waits on the connector's
    // disk, which its health says, and arrives once the server is back.
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "before the server went down");
    s.env.server.kill();
    let _ = child.wait();
    eventually!(15, || {
        let h = s.connector.health().ok_or_else(|| anyhow::anyhow!("no health"))?;
        anyhow::ensure!(h["status"] == "connecting" && h["recordingsWaiting"] == 1, "{h}");
        anyhow::ensure!(h["recordingsWaitingBytes"].as_u64() > Some(0), "{h}");
        Ok(())
    });
    s.env.server.start_again().unwrap();
    let r = stored(&s.env, LOOP);
    assert_eq!(r["truncated"], false, "{r:#}");
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("got before the server went down"), "{text}");
    eventually!(15, || {
        let h = s.connector.health().ok_or_else(|| anyhow::anyhow!("no health"))?;
        anyhow::ensure!(h["recordingsWaiting"] == 0, "{h}");
        Ok(())
    });
    eventually!(30, || {
        anyhow::ensure!(s.connector.healthy(), "the connector is not back");
        Ok(())
    });

    // The connector is killed mid-session: what it recorded up to the kill
    // is shipped when it starts again, marked truncated.
    common::login(&s.alice, &s.env.server, "alice@example.com", "user-password-1").ok();
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "before the connector was killed");
    // What was typed is on disk: the connector's own user's only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let spool = s.connector.data_dir.join("data/recordings");
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{spool:?} is {mode:o}");
        for f in std::fs::read_dir(&spool).unwrap() {
            let mode = f.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "a spool file is {mode:o}");
        }
    }
    s.connector.kill();
    let _ = child.wait();
    s.connector.restart().unwrap();
    let mut truncated = None;
    eventually!(30, || {
        let all = recordings(&s.env);
        let r = all
            .iter()
            .find(|r| r["command"] == LOOP && r["truncated"] == true)
            .ok_or_else(|| anyhow::anyhow!("no truncated recording in {all:#?}"))?;
        anyhow::ensure!(r["state"] == "stored", "{r:#}");
        truncated = Some(r.clone());
        Ok(())
    });
    let r = truncated.unwrap();
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("got before the connector was killed"), "{text}");
    assert!(text.contains("recording truncated: the connector stopped"), "{text}");
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("2 session recordings match"), "{out:?}");
}

/// Three sessions, each saying `what` and ending.
fn short_session(alice: &Cli, what: &str) {
    let (mut child, mut stdin, mut stdout) = echo_session(alice);
    say(&mut stdin, &mut stdout, what);
    drop(stdin);
    let _ = child.wait();
}

#[test]
fn recordings_go_to_an_s3_store_wait_out_its_outage_and_are_retained_by_size() {
    let s3 = infra_testkit::S3::start("recordings").unwrap();
    let args = vec![
        "--recordings-s3".to_owned(),
        "s3://recordings/casts".to_owned(),
        "--recordings-s3-endpoint".to_owned(),
        s3.endpoint(),
        "--recordings-retention-size".to_owned(),
        "600".to_owned(),
    ];
    // A budget of one byte: any recording waiting fills it.
    let more =
        "  - name: pods-open\n    kind: kubernetes\n{ws}    onFull: allow-unrecorded\nrecordings:\n  budget: \"1\"\n";
    let s = setup_with(args, s3.env(), more);
    const LOOP: &str = "sh -c while read l; do echo \"got $l\"; done";

    short_session(&s.alice, "first");
    let first = stored(&s.env, LOOP);
    let first_id = first["id"].as_str().unwrap().to_owned();
    let key = format!("casts/{first_id}.cast");
    let object = s3.get(&key).unwrap().expect("the recording is in the bucket");
    assert!(String::from_utf8_lossy(&object).contains("got first"));
    assert!(
        !s.env
            .server
            .data_dir
            .join("recordings")
            .join(format!("{first_id}.cast"))
            .exists()
    );

    // The store hangs: the finished recording is not stored, and says so;
    // the connector keeps it and tries again until the store is back.
    s3.pause();
    short_session(&s.alice, "during the outage");
    eventually!(30, || {
        let all = recordings(&s.env);
        let r = all
            .iter()
            .find(|r| r["state"] == "live" && !r["ended"].as_str().unwrap_or_default().is_empty())
            .ok_or_else(|| anyhow::anyhow!("no finished, unstored recording in {all:#?}"))?;
        anyhow::ensure!(r["command"] == LOOP, "{r:#}");
        let h = s.connector.health().ok_or_else(|| anyhow::anyhow!("no health"))?;
        anyhow::ensure!(h["recordingsWaiting"] == 1, "{h}");
        Ok(())
    });
    // The server gives up on the store (each attempt is bounded) and says
    // why; the connector keeps the recording.
    eventually!(60, || {
        let log = s.connector.log();
        anyhow::ensure!(log.contains("the server cannot store a recording yet"), "{log}");
        Ok(())
    });
    // The spool is over its budget: the recorded destination refuses new
    // sessions and says why; the one that allows it runs them unrecorded,
    // with a warning in the audit log.
    let out = kubectl(&s.alice, "pods")
        .args(["exec", "web", "-n", "dev", "--", "echo", "refused"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recording spool is full"), "{err}");
    let out = kubectl(&s.alice, "pods-open")
        .args(["exec", "web", "-n", "dev", "--", "echo", "unrecorded"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unrecorded");
    let events = common::json(
        &s.env
            .admin
            .run(&["audit", "list", "--destination", "pods-open", "-o", "json"]),
    );
    assert!(
        events.as_array().unwrap().iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("warning=not-recorded")),
        "{events:#}"
    );
    s3.resume();
    eventually!(90, || {
        let all = recordings(&s.env);
        anyhow::ensure!(all.len() == 2 && all.iter().all(|r| r["state"] == "stored"), "{all:#?}");
        let h = s.connector.health().ok_or_else(|| anyhow::anyhow!("no health"))?;
        anyhow::ensure!(h["recordingsWaiting"] == 0, "{h}");
        Ok(())
    });
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("2 session recordings match"), "{out:?}");

    // Edited in the bucket: caught.
    let text = String::from_utf8(object).unwrap();
    s3.put(&key, text.replace("got first", "got fir5t").as_bytes()).unwrap();
    let out = s.env.admin.run(&["audit", "verify"]);
    assert!(out.stderr.contains("was changed in the recording store"), "{out:?}");
    s3.put(&key, text.as_bytes()).unwrap();

    // Past the size limit the oldest go first, each deletion audited, and
    // a deleted recording is no longer listed nor expected by verify.
    short_session(&s.alice, "third");
    short_session(&s.alice, "fourth");
    let mut deleted = Vec::new();
    eventually!(30, || {
        let events = common::json(
            &s.env
                .admin
                .run(&["audit", "list", "--action", "recording.delete", "-o", "json"]),
        );
        deleted = events.as_array().cloned().unwrap_or_default();
        anyhow::ensure!(!deleted.is_empty(), "nothing deleted");
        Ok(())
    });
    let detail = deleted[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("recording={first_id}")) && detail.contains("reason=size"),
        "{detail}"
    );
    assert!(
        s3.get(&key).unwrap().is_none(),
        "the deleted recording is still in the bucket"
    );
    let listed = recordings(&s.env);
    assert!(listed.iter().all(|r| r["id"] != first_id.as_str()), "{listed:#?}");
    let total: i64 = listed
        .iter()
        .filter(|r| r["state"] == "stored")
        .map(|r| r["size"].as_i64().unwrap_or(0))
        .sum();
    assert!(total <= 600, "{listed:#?}");
    let out = s.env.admin.run(&["audit", "verify"]);
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn a_session_that_outgrows_the_recording_limit_ends_with_it() {
    let s = setup_with(vec![], vec![], "recordings:\n  maxSize: \"4000\"\n");
    let out = kubectl(&s.alice, "pods")
        .args([
            "exec",
            "web",
            "-n",
            "dev",
            "--",
            "sh",
            "-c",
            "yes a-line-of-output | head -c 200000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the session ran past the limit");
    assert!(out.stdout.len() < 200_000, "{} bytes shown", out.stdout.len());
    let r = stored(&s.env, "sh -c yes a-line-of-output | head -c 200000");
    let text = cast(&s.env, r["id"].as_str().unwrap());
    assert!(text.contains("reached its size limit"), "{text}");
    assert!(text.len() < 6000, "{} bytes", text.len());
}
