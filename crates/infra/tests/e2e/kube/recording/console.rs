//! Recordings in the web console: a running session followed live in the
//! player (real Chromium), seek to the end and back, axe-clean; and who
//! may read a recording, and how much without an audit event.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use infra_testkit::eventually;

use super::{echo_session, recordings, say, setup};
use crate::e2e::common::{ADMIN, ADMIN_PW};
use crate::e2e::console::{curl, serious, sign_in, sign_in_with};

#[test]
fn the_console_follows_a_running_session_and_plays_it_back() {
    let s = setup();
    let (mut child, mut stdin, mut stdout) = echo_session(&s.alice);
    say(&mut stdin, &mut stdout, "live-one");
    let mut id = String::new();
    eventually!(15, || {
        let all = recordings(&s.env);
        let r = all
            .iter()
            .find(|r| r["state"] == "live")
            .ok_or_else(|| anyhow::anyhow!("no running recording in {all:#?}"))?;
        id = r["id"].as_str().unwrap_or_default().to_owned();
        Ok(())
    });

    let shots = std::env::var_os("INFRA_SCREENSHOTS").map(std::path::PathBuf::from);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/oidc/console_player.mjs");
    let mut node = Command::new("node");
    node.arg(&script)
        .args([
            "--url",
            &s.env.server.url,
            "--username",
            ADMIN,
            "--password",
            ADMIN_PW,
            "--insecure",
        ])
        .args(["--path", &format!("/console/recordings/{id}")])
        .args(["--first", "got live-one", "--wait", "got live-two"]);
    if let Some(dir) = &shots {
        node.arg("--screenshot").arg(dir.join("recording-live.png"));
    }
    let mut node = node.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Once the page shows the session as it is, the session goes on: the
    // page must follow it.
    let mut err = std::io::BufReader::new(node.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("loaded") {
        line.clear();
    }
    assert!(line.contains("loaded"), "the player never showed the session: {line}");
    say(&mut stdin, &mut stdout, "live-two");
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["shown"].as_str().unwrap().contains("got live-two"), "{result:#}");
    assert!(result["atEnd"].as_str().unwrap().contains("got live-two"), "{result:#}");
    assert!(!result["atStart"].as_str().unwrap().contains("got live"), "{result:#}");
    assert!(result["clock"].as_str().unwrap().contains("running"), "{result:#}");
    let findings =
        serious(&serde_json::json!({ "pages": [{ "path": "recording", "violations": result["violations"] }] }));
    assert!(findings.is_empty(), "axe: {findings:#?}");
    drop(stdin);
    let _ = child.wait();

    // Reading is for those with a view role; following needs the token
    // the first, audited, reading gave.
    let alice = sign_in(&s.env, "alice@example.com");
    let path = format!("/console/recordings/{id}/cast");
    let (status, _, _) = curl(&s.env, &path, &["-H", &format!("Cookie: {alice}")]);
    assert_eq!(status, 403);
    let admin = sign_in_with(&s.env, ADMIN, ADMIN_PW);
    let (status, _, body) = curl(&s.env, &format!("{path}?from=10"), &["-H", &format!("Cookie: {admin}")]);
    assert_eq!(status, 403, "{body}");
    // Another site's page cannot make the admin's browser read one.
    let (status, _, body) = curl(
        &s.env,
        &path,
        &["-H", &format!("Cookie: {admin}"), "-H", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(status, 403, "{body}");
    let (status, head, _) = curl(&s.env, &path, &["-H", &format!("Cookie: {admin}")]);
    assert_eq!(status, 200);
    let watch = crate::e2e::console::header(&head, "x-infra-watch").unwrap().to_owned();
    let (status, _, body) = curl(
        &s.env,
        &format!("{path}?from=10&watch={watch}"),
        &["-H", &format!("Cookie: {admin}")],
    );
    assert_eq!(status, 200);
    assert!(body.contains("got live-two"), "{body}");
    let views =
        crate::e2e::common::json(
            &s.env
                .admin
                .run(&["audit", "list", "--action", "recording.view", "-o", "json"]),
        );
    let by_admin = views
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == ADMIN && e["detail"].as_str().unwrap_or_default().contains(&id))
        .count();
    assert_eq!(
        by_admin, 2,
        "one per reading from the start (the player's, then curl's): {views:#}"
    );
}
