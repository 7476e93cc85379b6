//! Access requests in the web console, in Chromium.

use super::grants_of;
use crate::e2e::common::json;
use crate::e2e::gateway::user;

#[test]
fn in_a_browser_a_user_asks_from_the_portal_a_reviewer_approves_and_the_destination_appears() {
    let w = crate::e2e::gateway::web_env();
    let env = &w.env;
    let a = &env.admin;
    let _dev = user(env, "dev@example.com");
    let _sre = user(env, "sre@example.com");
    for (g, who) in [("devs", "dev@example.com"), ("sre", "sre@example.com")] {
        a.run(&["groups", "add", g]).ok();
        a.run(&["groups", "adduser", g, who]).ok();
    }
    a.run(&[
        "access-policy",
        "add",
        "web-users",
        "--requesters",
        "devs",
        "--resource",
        "web",
        "--role",
        "user",
        "--max",
        "4h",
        "--approvers",
        "sre",
    ])
    .ok();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/oidc/console_request.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args(["--url", &env.server.url, "--insecure", "--password", "user-password-1"])
        .args(["--requester", "dev@example.com", "--reviewer", "sre@example.com"])
        .args(["--destination", "web", "--role", "user"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    assert!(
        text("offered").contains("Request access") && !text("offered").contains("https://web."),
        "{r:#}"
    );
    assert!(
        text("asked").contains("pending") && text("asked").contains("HTTP: reach web"),
        "{r:#}"
    );
    assert!(text("reviewQueue").contains("Waiting for your review"), "{r:#}");
    let review = text("reviewPage");
    assert!(
        review.contains("dev@example.com holds now") && review.contains("new"),
        "{review}"
    );
    assert!(
        text("approved").contains("approved") && text("approved").contains("ok from the console"),
        "{r:#}"
    );
    assert!(text("portalAfter").contains("web"), "{r:#}");
    let held = grants_of(env, "dev@example.com");
    assert_eq!(held.len(), 1, "{held:#?}");

    // The pages pass axe, for the requester and the reviewer.
    let all = json(a.run(&["request", "list", "-o", "json"]).ok());
    let id = all[0]["id"].as_str().unwrap().to_owned();
    let detail = format!("/console/requests/{id}");
    for who in ["dev@example.com", "sre@example.com"] {
        let seen = crate::e2e::console::in_chromium(env, who, &["/console", "/console/requests", &detail]);
        let findings = crate::e2e::console::serious(&seen);
        assert!(findings.is_empty(), "axe for {who}: {findings:#?}");
    }
}
