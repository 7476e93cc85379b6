//! The admin console through the real server, as a browser's requests:
//! a `view` admin sees every page and can change nothing whatever they
//! post; forms without this session's token or from another origin are
//! refused; what users can put into names and the audit log renders as
//! text on every page.

use super::common::json;
use super::console::{csrf_of, curl, sign_in};
use super::gateway::{user, web_env};

/// Every admin page, for a caller with a role on Infra.
const ADMIN_PAGES: [&str; 11] = [
    "/console/users",
    "/console/users/alice%40example.com",
    "/console/groups",
    "/console/groups/ops",
    "/console/grants",
    "/console/destinations",
    "/console/destinations/web",
    "/console/identity",
    "/console/service-accounts",
    "/console/audit",
    "/console/audit/1",
];

/// A second admin who signs in with the console's form (the first
/// admin's password is the testkit's own).
fn admin_in_browser(env: &super::common::Env) -> String {
    let _root = user(env, "root@example.com");
    env.admin
        .run(&["grants", "add", "root@example.com", "infra", "--role", "admin"])
        .ok();
    sign_in(env, "root@example.com")
}

/// The `action`s of a page's `method="post"` forms.
fn post_actions(page: &str) -> Vec<String> {
    page.split("<form")
        .skip(1)
        .filter(|f| f.split('>').next().is_some_and(|tag| tag.contains("method=\"post\"")))
        .filter_map(|f| f.split("action=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

/// Posts `fields` to `path` with `cookie`, from `origin`: the status and body.
fn post(env: &super::common::Env, cookie: &str, origin: &str, path: &str, fields: &[String]) -> (u16, String) {
    let c = format!("Cookie: {cookie}");
    let o = format!("Origin: {origin}");
    let mut args = vec!["-X", "POST", "-H", c.as_str(), "-H", o.as_str()];
    for f in fields {
        args.extend(["--data-urlencode", f.as_str()]);
    }
    if fields.is_empty() {
        args.extend(["-d", ""]);
    }
    let (status, _, body) = curl(env, path, &args);
    (status, body)
}

#[test]
fn attack_a_view_admin_sees_every_page_and_changes_nothing() {
    let w = web_env();
    let env = &w.env;
    let a = &env.admin;
    let viewer = user(env, "viewer@example.com");
    let _alice = user(env, "alice@example.com");
    a.run(&["grants", "add", "viewer@example.com", "infra", "--role", "view"])
        .ok();
    a.run(&["groups", "add", "ops"]).ok();
    a.run(&["groups", "adduser", "ops", "alice@example.com"]).ok();
    a.run(&["grants", "add", "--group", "ops", "web", "--role", "user"])
        .ok();
    let origin = env.server.url.trim_end_matches('/').to_owned();
    let cookie = sign_in(env, "viewer@example.com");

    // Every page shows, with no control that changes anything.
    let mut token = String::new();
    for path in ADMIN_PAGES {
        let (status, _, page) = curl(env, path, &["-H", &format!("Cookie: {cookie}")]);
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.contains("Administration"), "{path}: no admin navigation");
        let posts = post_actions(&page);
        assert!(
            posts
                .iter()
                .all(|p| p == "/console/logout" || p == "/console/audit/verify"),
            "{path} offers a view admin {posts:?}"
        );
        token = csrf_of(&page);
    }
    // The same in Chromium: what the viewer sees has no control that
    // changes anything, and passes axe.
    let seen = super::console::in_chromium(env, "viewer@example.com", &ADMIN_PAGES);
    for page in seen["pages"].as_array().unwrap().iter().skip(1) {
        let text = page["text"].as_str().unwrap();
        assert!(text.contains("Service accounts"), "no admin navigation: {page:#}");
        for control in ["Remove", "Add a ", "Rotate", "Make a key", "Grant access", "Grant this"] {
            assert!(
                !text.contains(control),
                "{} shows the viewer {control}: {text}",
                page["path"]
            );
        }
    }
    let findings = super::console::serious(&seen);
    assert!(findings.is_empty(), "axe: {findings:#?}");
    let (_, _, reach) = curl(env, "/console/destinations/web", &["-H", &format!("Cookie: {cookie}")]);
    assert!(
        reach.contains("alice@example.com") && reach.contains(">ops</a>"),
        "{reach}"
    );
    assert!(
        reach.contains("connector dc1") && reach.contains("connected"),
        "{reach}"
    );
    // The same answer on the command line.
    let paths = json(viewer.run(&["destinations", "access", "web", "-o", "json"]).ok());
    let via = |email: &str| {
        paths
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user"] == email)
            .map(|p| p["group"].clone())
    };
    assert_eq!(via("alice@example.com"), Some(serde_json::json!("ops")), "{paths:#}");
    assert_eq!(via("admin@example.com"), Some(serde_json::Value::Null), "{paths:#}");
    assert_eq!(via("viewer@example.com"), None, "{paths:#}");
    // The running connector, its version and its open tunnel.
    let (_, _, dests) = curl(env, "/console/destinations", &["-H", &format!("Cookie: {cookie}")]);
    let connectors = dests.split("id=\"connectors\"").nth(1).unwrap_or_default();
    assert!(
        connectors.contains("<td>dc1</td>") && connectors.contains(env!("CARGO_PKG_VERSION")),
        "{connectors}"
    );

    // The forms a view admin does not get, forged with their own valid
    // token from the console's origin: the API refuses each and audits it.
    let t = format!("csrf={token}");
    let f = |s: &str| s.to_owned();
    let forged: Vec<(&str, Vec<String>)> = vec![
        ("/console/users", vec![t.clone(), f("email=mallory@example.com")]),
        ("/console/users/alice%40example.com/remove", vec![t.clone()]),
        ("/console/groups", vec![t.clone(), f("name=mallory")]),
        (
            "/console/groups/ops/members",
            vec![t.clone(), f("email=viewer@example.com")],
        ),
        ("/console/groups/ops/remove", vec![t.clone()]),
        (
            "/console/grants",
            vec![
                t.clone(),
                f("subject=user"),
                f("to=viewer@example.com"),
                f("role=admin"),
                f("resource=infra"),
            ],
        ),
        ("/console/service-accounts", vec![t.clone(), f("email=bot@example.com")]),
        ("/console/identity/ssh-ca/rotate", vec![t.clone(), f("kind=user")]),
        ("/console/destinations/web/remove", vec![t.clone()]),
    ];
    for (path, fields) in &forged {
        let (status, body) = post(env, &cookie, &origin, path, fields);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("you need role admin on infra"), "{path}: {body}");
    }
    let users = json(a.run(&["users", "list", "-o", "json"]).ok()).to_string();
    assert!(
        !users.contains("mallory") && !users.contains("bot@example.com") && users.contains("alice@example.com"),
        "{users}"
    );
    let groups = json(a.run(&["groups", "list", "-o", "json"]).ok()).to_string();
    assert!(
        groups.contains("ops") && !groups.contains("mallory") && !groups.contains("viewer@"),
        "{groups}"
    );
    let grants = json(
        a.run(&["grants", "list", "--user", "viewer@example.com", "-o", "json"])
            .ok(),
    );
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants:#}");
    let denials = json(
        a.run(&[
            "audit",
            "list",
            "--user",
            "viewer@example.com",
            "--action",
            "authz.deny",
            "-o",
            "json",
        ])
        .ok(),
    );
    assert_eq!(
        denials.as_array().unwrap().len(),
        forged.len(),
        "each refused post is audited: {denials:#}"
    );
}

#[test]
fn attack_admin_forms_without_the_session_token_or_from_another_site_are_refused() {
    let w = web_env();
    let env = &w.env;
    let origin = env.server.url.trim_end_matches('/').to_owned();
    let cookie = admin_in_browser(env);
    let (_, _, page) = curl(env, "/console/users", &["-H", &format!("Cookie: {cookie}")]);
    let token = csrf_of(&page);
    let email = "email=eve@example.com".to_owned();
    let cases = [
        (origin.as_str(), vec![email.clone()]),
        (origin.as_str(), vec![email.clone(), "csrf=".into()]),
        (origin.as_str(), vec![email.clone(), format!("csrf={}", "0".repeat(64))]),
        ("https://evil.example", vec![email.clone(), format!("csrf={token}")]),
        ("null", vec![email.clone(), format!("csrf={token}")]),
    ];
    for (from, fields) in &cases {
        let (status, body) = post(env, &cookie, from, "/console/users", fields);
        assert_eq!(status, 403, "{from} {fields:?}: {body}");
    }
    // Another user's session token is worth nothing in this session.
    let _bob = user(env, "bob@example.com");
    let bob = sign_in(env, "bob@example.com");
    let (_, _, bobs) = curl(env, "/console", &["-H", &format!("Cookie: {bob}")]);
    let (status, _) = post(
        env,
        &cookie,
        &origin,
        "/console/users",
        &[email.clone(), format!("csrf={}", csrf_of(&bobs))],
    );
    assert_eq!(status, 403);
    let users = json(env.admin.run(&["users", "list", "-o", "json"]).ok()).to_string();
    assert!(!users.contains("eve@example.com"), "{users}");
    // With its own token, from its own page: done.
    let (status, body) = post(
        env,
        &cookie,
        &origin,
        "/console/users",
        &[email, format!("csrf={token}")],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Added eve@example.com") && body.contains("one-time password"),
        "{body}"
    );
}

#[test]
fn attack_markup_in_names_and_the_audit_log_renders_as_text_on_every_page() {
    let w = web_env();
    let env = &w.env;
    let a = &env.admin;
    // What anyone can put into what the console shows: a login attempt's
    // email (audited as typed), a workload issuer's audience and mappings;
    // and in emails, the characters that matter in attributes.
    let marks = "<img src=x onerror=alert(1)>";
    let body = serde_json::json!({"email": marks, "password": "x"}).to_string();
    let (status, _) = env
        .server
        .send_json("POST", "/api/login", None, body.as_bytes(), "application/json")
        .unwrap();
    assert_eq!(status, 401);
    let odd = "o'neil&co@example.com";
    a.run(&["users", "add", odd, "--service"]).ok();
    a.run(&["grants", "add", odd, "web", "--role", "user"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    // The example key of RFC 7517, appendix A.1.
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#,
    )
    .unwrap();
    a.run(&[
        "workload-issuers",
        "add",
        "ci",
        "--issuer",
        "https://ci.example.com",
        "--jwks-file",
        jwks.to_str().unwrap(),
        "--audience",
        "\"><script>alert(2)</script>",
        "--map",
        &format!("<b>repo</b>={odd}"),
    ])
    .ok();

    let cookie = admin_in_browser(env);
    let mut shown = String::new();
    let pages = ADMIN_PAGES
        .iter()
        .filter(|p| !p.contains("alice") && !p.contains("/ops"))
        .chain(&[
            "/console",
            "/console/audit?result=failure",
            "/console/users/o'neil%26co%40example.com",
        ]);
    for path in pages {
        let (status, _, page) = curl(env, path, &["-H", &format!("Cookie: {cookie}")]);
        assert_eq!(status, 200, "{path}: {page}");
        for raw in ["<img src=x", "<script>alert", "<b>repo", "o'neil&co"] {
            assert!(!page.contains(raw), "{path} renders {raw} as markup: {page}");
        }
        shown.push_str(&page);
    }
    // Each was on some page, as text.
    for escaped in [
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;script&gt;alert(2)&lt;/script&gt;",
        "&lt;b&gt;repo&lt;/b&gt;",
        "o'neil&amp;co@example.com",
    ] {
        assert!(shown.contains(escaped), "{escaped} was on no page");
    }
}

#[test]
fn in_a_browser_an_admin_gives_a_new_user_access_and_the_console_shows_why() {
    let w = web_env();
    let env = &w.env;
    let _root = admin_in_browser(env);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/oidc/console_flow.mjs");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args(["--url", &env.server.url, "--insecure"])
        .args(["--admin", "root@example.com", "--password", "user-password-1"])
        .args(["--user", "dana@example.com", "--user-password", "dana-password-1"])
        .args(["--group", "team", "--destination", "web", "--role", "user"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    assert!(text("userAdded").contains("Added dana@example.com."), "{r:#}");
    assert!(
        text("memberAdded").contains("Added dana@example.com to the group."),
        "{r:#}"
    );
    assert!(text("granted").contains("Granted user on web to team."), "{r:#}");
    // Who can reach web: the admin by a grant to them, dana through team.
    let who = text("whoCanReach");
    let line = |email: &str| who.lines().find(|l| l.contains(email)).unwrap_or_default().to_owned();
    assert!(line("dana@example.com").contains("group team"), "{who}");
    assert!(line("admin@example.com").contains("a grant to them"), "{who}");
    assert!(!who.contains("root@example.com"), "root holds nothing on web: {who}");
    let user_page = text("userPage");
    assert!(
        user_page.contains("web") && user_page.contains("group team"),
        "{user_page}"
    );
    assert_eq!(
        r["followed"],
        true,
        "the audit page did not follow: {}",
        text("auditText")
    );
    assert!(text("auditText").contains("grant.create"), "{r:#}");
    let mine = text("myAccess");
    assert!(mine.contains("web") && mine.contains("(group team)"), "{mine}");

    // Every admin page passes axe (the user's pages are checked in
    // console.rs).
    let pages: Vec<String> = ADMIN_PAGES
        .iter()
        .map(|p| p.replace("alice", "dana").replace("/ops", "/team"))
        .collect();
    let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
    let result = super::console::in_chromium(env, "root@example.com", &pages);
    let findings = super::console::serious(&result);
    assert!(findings.is_empty(), "axe: {findings:#?}");
}

#[test]
fn attack_a_burst_of_events_cannot_hide_one_from_the_followed_audit_page() {
    let env = super::common::start(super::common::Backend::Sqlite);
    let env = &env;
    let viewer = user(env, "viewer@example.com");
    drop(viewer);
    env.admin
        .run(&["grants", "add", "viewer@example.com", "infra", "--role", "view"])
        .ok();
    let cookie = sign_in(env, "viewer@example.com");
    let c = format!("Cookie: {cookie}");
    let (_, _, page) = curl(env, "/console/audit", &["-H", &c]);
    let newest = |page: &str| -> i64 {
        page.split("data-seq=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = newest(&page);
    // The event to hide, then more than a thousand in one go (each a
    // refused post, each audited), faster than the page polls: more than
    // one answer can carry.
    const BURST: usize = 1050;
    let origin = format!("Origin: {}", env.server.url.trim_end_matches('/'));
    let token = format!("csrf={}", csrf_of(&page));
    let (status, _) = post(
        env,
        &cookie,
        &origin[8..],
        "/console/groups",
        &[token.clone(), "name=the-one".into()],
    );
    assert_eq!(status, 403);
    let url = format!("{}/console/groups", env.server.url);
    let ca = env.server.ca_path().display().to_string();
    let mut args = vec![
        "-sS",
        "-o",
        "/dev/null",
        "--cacert",
        ca.as_str(),
        "-H",
        c.as_str(),
        "-H",
        origin.as_str(),
        "-d",
        token.as_str(),
        "-d",
        "name=burst",
    ];
    args.extend(std::iter::repeat_n(url.as_str(), BURST));
    let out = std::process::Command::new("curl").args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // Denials are written by the audit intake, a moment later.
    let denials = || {
        json(
            env.admin
                .run(&["audit", "list", "--action", "authz.deny", "-o", "json"])
                .ok(),
        )
        .as_array()
        .map_or(0, Vec::len)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while denials() < BURST + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the denials were not all written: {} of {}",
            denials(),
            BURST + 1
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // What the page's script asks for: the oldest new events first, a
    // batch at a time, until none is left.
    let mut after = before;
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..20 {
        let (status, head, rows) = curl(env, &format!("/console/audit/rows?after={after}"), &["-H", &c]);
        assert_eq!(status, 200, "{rows}");
        let seqs: Vec<i64> = rows
            .split("data-seq=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "newest first in a batch: {seqs:?}"
        );
        seen.extend(seqs.iter().rev());
        after = seqs.first().copied().unwrap_or(after);
        let more = super::console::header(&head, "x-infra-more") == Some("true");
        if !more {
            break;
        }
    }
    let want: Vec<i64> = (before + 1..=before + 1 + BURST as i64).collect();
    assert_eq!(seen, want, "every event, in order, none skipped");
    let (_, _, first) = curl(env, &format!("/console/audit/{}", before + 1), &["-H", &c]);
    assert!(first.contains("the-one") || first.contains("authz.deny"), "{first}");
}

#[test]
fn attack_a_user_with_a_small_grant_reads_nothing_an_admin_page_or_its_api_shows() {
    let w = web_env();
    let env = &w.env;
    let a = &env.admin;
    let alice = user(env, "alice@example.com");
    let viewer = user(env, "viewer@example.com");
    a.run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    a.run(&["grants", "add", "viewer@example.com", "infra", "--role", "view"])
        .ok();
    a.run(&["groups", "add", "ops"]).ok();
    a.run(&[
        "request-webhooks",
        "add",
        "chan",
        "--url",
        "https://hooks.example.com/services/T0/B0/SECRETPATH",
        "--format",
        "slack",
    ])
    .ok();
    let key = super::common::session_key(&alice);
    // The reads the console's administration pages are built on: each
    // needs a role on Infra, and a small grant is none.
    for path in [
        "/api/connectors",
        "/api/destinations/web",
        "/api/destinations/web/access",
        "/api/groups/ops",
        "/api/users?kind=service",
        "/api/request-webhooks",
        "/api/audit?request=abc",
        "/api/audit?newestFirst=true&result=denied",
    ] {
        let (status, body) = env.server.get_json(path, Some(&key)).unwrap();
        assert_eq!(status, 403, "{path}: {body}");
    }
    let cookie = sign_in(env, "alice@example.com");
    for path in ADMIN_PAGES
        .iter()
        .filter(|p| !p.contains("alice"))
        .chain(&["/console/audit/rows?after=0", "/console/users/viewer%40example.com"])
    {
        let (status, _, page) = curl(env, path, &["-H", &format!("Cookie: {cookie}")]);
        assert_eq!(status, 403, "{path}: {page}");
        assert!(!page.contains("viewer@example.com"), "{path} shows another user");
    }
    // Her own page is hers: what she can reach, and nobody else.
    let (status, _, own) = curl(
        env,
        "/console/users/alice%40example.com",
        &["-H", &format!("Cookie: {cookie}")],
    );
    assert_eq!(status, 200, "{own}");
    assert!(own.contains(">web</a>") && !own.contains("viewer@example.com"), "{own}");
    // A viewer sees the receiver, not its URL's secret path.
    let hooks = json(viewer.run(&["request-webhooks", "list", "-o", "json"]).ok()).to_string();
    assert!(
        hooks.contains("hooks.example.com") && !hooks.contains("SECRETPATH"),
        "{hooks}"
    );
    let audit = json(
        viewer
            .run(&["audit", "list", "--action", "request-webhook.create", "-o", "json"])
            .ok(),
    )
    .to_string();
    assert!(!audit.contains("SECRETPATH"), "{audit}");
    let full = json(a.run(&["request-webhooks", "list", "-o", "json"]).ok()).to_string();
    assert!(full.contains("SECRETPATH"), "an admin sees the whole URL: {full}");
}
