//! Just-in-time access through the real binary: policies, requests,
//! reviews, break-glass, expiry, the audit story and signed webhooks.
//! (The Kubernetes scenario, where the grant ends an open watch, is in
//! `kube/requests.rs`; the races across replicas are in `replicas.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

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

fn grants_of(env: &Env, email: &str) -> Vec<serde_json::Value> {
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

/// What a receiver got: each POST's head and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A local receiver: answers 500 to the first POST, then 200; keeps every
/// request (headers and body).
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let first = seen.lock().unwrap().is_empty();
            seen.lock()
                .unwrap()
                .push((head, String::from_utf8_lossy(&body).into_owned()));
            let status = if first { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks `X-Infra-Signature: t=UNIX,v1=HEX` against HMAC-SHA256(secret, "UNIX.BODY").
fn signed(secret: &str, head: &str, body: &str) -> bool {
    let Some(sig) = header(head, "x-infra-signature") else {
        return false;
    };
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let want: String = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

#[test]
fn break_glass_is_granted_at_once_flagged_and_every_event_reaches_the_webhook_signed() {
    let env = start(Backend::Sqlite);
    let (dev, _, _) = team(&env);
    let (url, got) = receiver();
    let out = env
        .admin
        .run(&["request-webhooks", "add", "team", "--url", &url])
        .ok()
        .clone();
    let secret = out.stdout.trim().to_owned();
    assert_eq!(secret.len(), 32, "{out:?}");

    // Longer than break-glass allows: refused; within it: granted at once.
    let long = dev.run(&[
        "request",
        "add",
        "web",
        "--role",
        "edit",
        "--for",
        "30m",
        "--reason",
        "x",
        "--break-glass",
    ]);
    assert!(long.failed().stderr.contains("break-glass"), "{long:?}");
    let r = request(
        &dev,
        &[
            "web",
            "--role",
            "edit",
            "--for",
            "5m",
            "--reason",
            "OUTAGE-1",
            "--break-glass",
        ],
    );
    assert_eq!(
        (r["state"].as_str(), r["breakGlass"].as_bool()),
        (Some("approved"), Some(true)),
        "{r:#}"
    );
    let held = grants_of(&env, "dev@example.com");
    assert_eq!(held.len(), 1, "{held:#?}");
    let id = r["id"].as_str().unwrap().to_owned();
    let flagged = json(
        env.admin
            .run(&["audit", "list", "--action", "request.break-glass", "-o", "json"])
            .ok(),
    );
    assert!(flagged.to_string().contains(&id), "{flagged:#}");

    // Every request event reaches the receiver, signed, in order; the
    // first was refused once and sent again.
    infra_testkit::eventually!(20, || {
        let seen = got.lock().unwrap().clone();
        let events: Vec<String> = seen
            .iter()
            .map(|(h, _)| header(h, "x-infra-event").unwrap_or_default().to_owned())
            .collect();
        anyhow::ensure!(
            events.ends_with(&["request.create".into(), "request.break-glass".into()]) && events.len() >= 3,
            "{events:?}"
        );
        Ok(())
    });
    let seen = got.lock().unwrap().clone();
    for (head, body) in &seen {
        assert!(signed(&secret, head, body), "a bad signature: {head}{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        // Every event names its request; refusals (anyone can cause
        // them) are not sent.
        assert!(
            v["detail"].as_str().unwrap_or_default().starts_with("request="),
            "{v:#}"
        );
        assert_ne!(v["result"], "denied", "{v:#}");
    }
    let deliveries: Vec<&str> = seen
        .iter()
        .map(|(h, _)| header(h, "x-infra-delivery").unwrap())
        .collect();
    assert_eq!(
        deliveries[0], deliveries[1],
        "the refused event was sent again: {deliveries:?}"
    );
    let events: Vec<&str> = seen.iter().map(|(h, _)| header(h, "x-infra-event").unwrap()).collect();
    assert!(
        events.iter().all(|e| e.starts_with("request.")),
        "only request events: {events:?}"
    );
    // A forged signature does not pass the check the receiver makes.
    assert!(!signed("another-secret", &seen[1].0, &seen[1].1));
}

#[test]
fn in_a_browser_a_user_asks_from_the_portal_a_reviewer_approves_and_the_destination_appears() {
    let w = super::gateway::web_env();
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
        let seen = super::console::in_chromium(env, who, &["/console", "/console/requests", &detail]);
        for page in seen["pages"].as_array().unwrap() {
            let serious: Vec<&serde_json::Value> = page["violations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
                .collect();
            assert!(serious.is_empty(), "axe on {} for {who}: {serious:#?}", page["path"]);
        }
    }
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
