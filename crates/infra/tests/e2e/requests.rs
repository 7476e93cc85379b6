//! Just-in-time access through the real binary: policies, requests,
//! reviews, break-glass, expiry, the audit story and signed webhooks.
//! (The Kubernetes scenario, where the grant ends an open watch, is in
//! `kube/requests.rs`; the races across replicas are in `replicas.rs`;
//! webhooks and the console are in `requests/`.)

mod console;
mod webhooks;

use infra_testkit::Cli;

use super::common::{Backend, Env, json, start};
use super::gateway::user;

/// devs may ask for view or edit on `web` (and its parts) for up to an
/// hour; one member of sre approves, edit needs two; break-glass for 10m.
pub fn team(env: &Env) -> (Cli, Cli, Cli) {
    let a = &env.admin;
    let dev = user(env, "dev@example.com");
    let sre1 = user(env, "sre1@example.com");
    let sre2 = user(env, "sre2@example.com");
    for (g, who) in [
        ("devs", "dev@example.com"),
        ("sre", "sre1@example.com"),
        ("sre", "sre2@example.com"),
    ] {
        a.run(&["groups", "add", g]);
        a.run(&["groups", "adduser", g, who]).ok();
    }
    a.run(&[
        "access-policy",
        "add",
        "web-access",
        "--requesters",
        "devs",
        "--resource",
        "web",
        "--resource",
        "web.*",
        "--role",
        "view",
        "--role",
        "edit",
        "--max",
        "1h",
        "--approvers",
        "sre",
        "--approvals-for",
        "edit=2",
        "--break-glass",
        "10m",
    ])
    .ok();
    (dev, sre1, sre2)
}

/// Makes a request as `cli`; its JSON.
pub fn request(cli: &Cli, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["request", "add"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let v = json(cli.run(&all).ok());
    v.as_array().map_or(v.clone(), |a| a[0].clone())
}

pub fn grants_of(env: &Env, email: &str) -> Vec<serde_json::Value> {
    json(env.admin.run(&["grants", "list", "--user", email, "-o", "json"]).ok())
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn two_approvals_mean_two_and_the_requester_never_approves() {
    let env = start(Backend::Sqlite);
    let (dev, sre1, sre2) = team(&env);
    let r = request(
        &dev,
        &["web", "--role", "edit", "--for", "30m", "--reason", "INC-7 deploy fix"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["state"], "pending", "{r:#}");
    assert_eq!(r["approvalsNeeded"], 2, "{r:#}");
    assert!(r["asks"][0]["means"].as_str().unwrap().contains("edit"), "{r:#}");

    // The requester may not approve, though a member of nothing else.
    let out = dev.run(&["request", "approve", &id]);
    assert!(out.failed().stderr.contains("your own request"), "{out:?}");
    // One approval is not two.
    sre1.run(&["request", "approve", &id, "--reason", "looks right"]).ok();
    let shown = json(sre2.run(&["request", "show", &id, "-o", "json"]).ok());
    let shown = shown.as_array().map_or(shown.clone(), |a| a[0].clone());
    assert_eq!(shown["state"], "pending", "{shown:#}");
    assert_eq!(shown["approvals"], 1);
    assert!(
        shown["current"].is_array(),
        "a reviewer sees what the requester holds: {shown:#}"
    );
    assert!(
        grants_of(&env, "dev@example.com").is_empty(),
        "granted after one approval"
    );
    let again = sre1.run(&["request", "approve", &id]);
    assert!(again.failed().stderr.contains("already"), "{again:?}");
    // The second reviewer's approval grants it, ending by itself.
    sre2.run(&["request", "approve", &id, "--reason", "ok"]).ok();
    let held = grants_of(&env, "dev@example.com");
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(
        (held[0]["role"].as_str(), held[0]["resource"].as_str()),
        (Some("edit"), Some("web"))
    );
    assert!(held[0]["expires"].is_string(), "{held:#?}");
    // A decision is final.
    let late = sre1.run(&["request", "deny", &id]);
    assert!(late.failed().stderr.contains("final"), "{late:?}");

    // The whole story, by request.
    let story = json(env.admin.run(&["audit", "list", "--request", &id, "-o", "json"]).ok());
    let actions: Vec<&str> = story
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "request.create",
            "request.approve",
            "request.approve",
            "request.approve",
            "request.grant"
        ],
        "{story:#}"
    );
    let refused: Vec<&serde_json::Value> = story
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "denied")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "the requester's own approval is audited as refused: {story:#}"
    );
}

#[test]
fn denied_expired_cancelled_or_outside_the_policy_grant_nothing() {
    let env = start(Backend::Sqlite);
    let (dev, sre1, _) = team(&env);
    let a = &env.admin;
    // Denied.
    let r = request(&dev, &["web", "--role", "view", "--for", "30m", "--reason", "look"]);
    let id = r["id"].as_str().unwrap().to_owned();
    sre1.run(&["request", "deny", &id, "--reason", "not now"]).ok();
    let approve = sre1.run(&["request", "approve", &id]);
    assert!(approve.failed().stderr.contains("final"), "{approve:?}");
    // Cancelled.
    let r = request(&dev, &["web", "--role", "view", "--for", "30m", "--reason", "look"]);
    let id = r["id"].as_str().unwrap().to_owned();
    dev.run(&["request", "cancel", &id]).ok();
    assert!(sre1.run(&["request", "approve", &id]).failed().stderr.contains("final"));
    // Expired unreviewed.
    a.run(&[
        "access-policy",
        "add",
        "quick",
        "--requesters",
        "devs",
        "--resource",
        "other",
        "--role",
        "view",
        "--max",
        "1h",
        "--approvers",
        "sre",
        "--review-within",
        "2s",
    ])
    .ok();
    let r = request(&dev, &["other", "--role", "view", "--for", "30m", "--reason", "look"]);
    let id = r["id"].as_str().unwrap().to_owned();
    infra_testkit::eventually!(15, || {
        let s = json(dev.run(&["request", "show", &id, "-o", "json"]).ok());
        let s = s.as_array().map_or(s.clone(), |a| a[0].clone());
        anyhow::ensure!(s["state"] == "expired", "{s:#}");
        Ok(())
    });
    assert!(sre1.run(&["request", "approve", &id]).failed().stderr.contains("final"));
    assert!(grants_of(&env, "dev@example.com").is_empty());

    // Outside the policy: not a requester, too long, a role not offered.
    let outsider = user(&env, "eve@example.com");
    let out = outsider.run(&[
        "request", "add", "web", "--role", "view", "--for", "10m", "--reason", "x",
    ]);
    assert!(out.failed().stderr.contains("may not request"), "{out:?}");
    let out = dev.run(&[
        "request", "add", "web", "--role", "view", "--for", "2h", "--reason", "x",
    ]);
    assert!(out.failed().stderr.contains("at most"), "{out:?}");
    let out = dev.run(&[
        "request", "add", "web", "--role", "admin", "--for", "10m", "--reason", "x",
    ]);
    assert!(out.failed().stderr.contains("does not cover"), "{out:?}");
    assert!(grants_of(&env, "eve@example.com").is_empty());
    let refusals = json(
        a.run(&[
            "audit",
            "list",
            "--action",
            "request.create",
            "--result",
            "denied",
            "-o",
            "json",
        ])
        .ok(),
    );
    assert_eq!(refusals.as_array().unwrap().len(), 3, "{refusals:#}");
    // Another user's request is not theirs to see.
    let seen = outsider.run(&["request", "show", &id]);
    assert!(seen.failed().stderr.contains("not found"), "{seen:?}");
}

#[test]
fn auto_approval_several_destinations_and_a_group_membership_that_is_taken_back() {
    let env = start(Backend::Sqlite);
    let (dev, sre1, _) = team(&env);
    let a = &env.admin;
    a.run(&["groups", "add", "oncall"]).ok();
    a.run(&[
        "access-policy",
        "add",
        "peek",
        "--requesters",
        "devs",
        "--resource",
        "*",
        "--role",
        "view",
        "--max",
        "1h",
        "--auto-approve",
        "view",
    ])
    .ok();
    a.run(&[
        "access-policy",
        "add",
        "shift",
        "--requesters",
        "devs",
        "--group",
        "oncall",
        "--max",
        "1h",
        "--approvers",
        "sre",
    ])
    .ok();

    // Auto-approval only for the on-call group: dev is not on call, so a
    // request under it waits.
    a.run(&[
        "access-policy",
        "add",
        "oncall-view",
        "--requesters",
        "devs",
        "--resource",
        "gamma",
        "--role",
        "view",
        "--max",
        "1h",
        "--approvers",
        "sre",
        "--auto-approve",
        "view",
        "--auto-approve-members",
        "oncall",
    ])
    .ok();
    let waits = request(&dev, &["gamma", "--role", "view", "--for", "20m", "--reason", "look"]);
    assert_eq!(waits["state"], "pending", "{waits:#}");

    // Two destinations in one request, granted at once by the policy.
    let r = request(
        &dev,
        &[
            "alpha",
            "beta",
            "--role",
            "view",
            "--for",
            "20m",
            "--reason",
            "look around",
        ],
    );
    assert_eq!(r["state"], "approved", "{r:#}");
    assert_eq!(r["asks"].as_array().unwrap().len(), 2);
    let held: Vec<String> = grants_of(&env, "dev@example.com")
        .iter()
        .map(|g| g["resource"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held, ["alpha", "beta"]);
    let id = r["id"].as_str().unwrap();
    let story = json(a.run(&["audit", "list", "--request", id, "-o", "json"]).ok()).to_string();
    assert!(story.contains("auto-approve"), "{story}");

    // A group's membership, for a few seconds: added on approval, taken
    // back at the end.
    let r = request(&dev, &["--group", "oncall", "--for", "3s", "--reason", "my shift"]);
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(
        r["asks"][0]["means"].as_str().unwrap().contains("membership of oncall"),
        "{r:#}"
    );
    sre1.run(&["request", "approve", &id]).ok();
    let members = |g: &str| {
        json(a.run(&["groups", "list", "-o", "json"]).ok())
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == g)
            .map(|x| x["members"].to_string())
            .unwrap_or_default()
    };
    assert!(members("oncall").contains("dev@example.com"));
    infra_testkit::eventually!(15, || {
        anyhow::ensure!(!members("oncall").contains("dev@example.com"), "still a member");
        Ok(())
    });
    let s = json(dev.run(&["request", "show", &id, "-o", "json"]).ok());
    assert_eq!(s[0]["state"], "ended", "{s:#}");
}

#[test]
fn attack_approval_follows_the_policy_as_it_is_now_and_powerful_groups_are_not_requestable() {
    let env = start(Backend::Sqlite);
    let (dev, sre1, _) = team(&env);
    let a = &env.admin;
    // Asked as a member of devs; no longer one when the approval comes.
    let r = request(&dev, &["web", "--role", "view", "--for", "30m", "--reason", "look"]);
    let id = r["id"].as_str().unwrap().to_owned();
    a.run(&["groups", "removeuser", "devs", "dev@example.com"]).ok();
    let out = sre1.run(&["request", "approve", &id]);
    assert!(out.failed().stderr.contains("no longer fits"), "{out:?}");
    assert!(grants_of(&env, "dev@example.com").is_empty());
    a.run(&["groups", "adduser", "devs", "dev@example.com"]).ok();

    // A group that holds a role on Infra, or reviews requests, cannot be
    // asked for, whatever a policy says.
    a.run(&["groups", "add", "admins"]).ok();
    a.run(&["grants", "add", "--group", "admins", "infra", "--role", "admin"])
        .ok();
    a.run(&[
        "access-policy",
        "add",
        "escalate",
        "--requesters",
        "devs",
        "--group",
        "admins",
        "--group",
        "sre",
        "--max",
        "1h",
        "--approvers",
        "sre",
    ])
    .ok();
    for g in ["admins", "sre"] {
        let out = dev.run(&["request", "add", "--group", g, "--for", "10m", "--reason", "x"]);
        assert!(out.failed().stderr.contains("not requestable"), "{g}: {out:?}");
    }

    // Break-glass cannot be renewed by itself while it holds.
    request(
        &dev,
        &[
            "web",
            "--role",
            "edit",
            "--for",
            "5m",
            "--reason",
            "OUTAGE",
            "--break-glass",
        ],
    );
    let again = dev.run(&[
        "request",
        "add",
        "web",
        "--role",
        "edit",
        "--for",
        "5m",
        "--reason",
        "more",
        "--break-glass",
    ]);
    assert!(again.failed().stderr.contains("ask for a review"), "{again:?}");
}
