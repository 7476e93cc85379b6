//! The web console through the real server, as a browser's requests: sign
//! in with the form, the portal's *My access* page, its headers, and the
//! sign-out form's defences.

use std::process::Command;

use super::gateway::{user, web_env};

/// `curl` against the server: (status, headers, body).
pub fn curl(env: &super::common::Env, path: &str, args: &[&str]) -> (u16, String, String) {
    let ca = env.server.ca_path().display().to_string();
    let mut all = vec!["--cacert", ca.as_str()];
    all.extend_from_slice(args);
    super::common::curl_response(&all, &format!("{}{path}", env.server.url))
}

/// Posts the console's sign-in form as `email` (password
/// `user-password-1`) from the server's own origin: (status, headers).
fn post_sign_in(env: &super::common::Env, email: &str) -> (u16, String) {
    post_sign_in_with(env, email, "user-password-1")
}

fn post_sign_in_with(env: &super::common::Env, email: &str, password: &str) -> (u16, String) {
    let origin = format!("Origin: {}", env.server.url.trim_end_matches('/'));
    let email = format!("email={email}");
    let password = format!("password={password}");
    let args = [
        "-H",
        origin.as_str(),
        "--data-urlencode",
        email.as_str(),
        "--data-urlencode",
        password.as_str(),
    ];
    let (status, head, _) = curl(env, "/login", &args);
    (status, head)
}

/// Signs in with the console's form as `email`; the session cookie,
/// `name=value`.
pub fn sign_in(env: &super::common::Env, email: &str) -> String {
    sign_in_with(env, email, "user-password-1")
}

/// [`sign_in`] with another password (the first admin's, say).
pub fn sign_in_with(env: &super::common::Env, email: &str, password: &str) -> String {
    let (status, head) = post_sign_in_with(env, email, password);
    assert_eq!(status, 303, "{head}");
    header(&head, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The token in a console page's forms.
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned()
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_portal_shows_what_a_user_can_reach_and_signs_out_only_from_its_own_form() {
    let w = web_env();
    let env = &w.env;
    let _alice = user(env, "alice@example.com");
    let a = &env.admin;
    a.run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    a.run(&["groups", "add", "ops"]).ok();
    a.run(&["groups", "adduser", "ops", "alice@example.com"]).ok();
    a.run(&["grants", "add", "--group", "ops", "other", "--role", "admin"])
        .ok();
    let origin = env.server.url.trim_end_matches('/').to_owned();

    // Not signed in: to the sign-in form.
    let (status, head, _) = curl(env, "/console", &[]);
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/login"));

    // The sign-in form sets the session cookie and lands on the portal.
    let (status, head) = post_sign_in(env, "alice@example.com");
    assert_eq!(status, 303, "{head}");
    assert_eq!(header(&head, "location"), Some("/login/done"));
    let set_cookie = header(&head, "set-cookie").unwrap().to_owned();
    for attr in ["__Host-infra_session=", "Secure", "HttpOnly", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (status, head, _) = curl(env, "/login/done", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!((status, header(&head, "location")), (303, Some("/console")));

    let (status, head, body) = curl(env, "/console", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(status, 200, "{body}");
    // Exactly alice's destinations, how she holds them, and the way in.
    assert!(body.contains("alice@example.com"), "{body}");
    for want in [
        "<h2>web</h2>",
        "<h2>other</h2>",
        "user",
        "admin",
        "(group ops)",
        "https://web.",
    ] {
        assert!(body.contains(want), "{want} not in {body}");
    }
    assert!(!body.contains("<h2>infra</h2>"), "{body}");
    // Its defences: no framing, no inline code, no caching.
    let csp = header(&head, "content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert!(
        !body.contains("<script>") && !body.contains("style="),
        "inline code in {body}"
    );

    // Sign out: refused without the page's token, with another's, or
    // from another site; done with it.
    let csrf = csrf_of(&body);
    let post = |extra: &[&str]| {
        let mut args = vec!["-X", "POST", "-H"];
        let c = format!("Cookie: {cookie}");
        args.push(&c);
        args.extend_from_slice(extra);
        let (status, _, _) = curl(env, "/console/logout", &args);
        status
    };
    let own_origin = format!("Origin: {origin}");
    assert_eq!(post(&["-H", &own_origin, "-d", "csrf="]), 403);
    assert_eq!(
        post(&["-H", &own_origin, "-d", &format!("csrf={}", "0".repeat(64))]),
        403
    );
    assert_eq!(
        post(&["-H", "Origin: https://evil.example", "-d", &format!("csrf={csrf}")]),
        403
    );
    let (status, _, _) = curl(env, "/console", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(status, 200, "a refused sign-out must leave the session");
    assert_eq!(post(&["-H", &own_origin, "-d", &format!("csrf={csrf}")]), 303);
    let (status, head, _) = curl(env, "/console", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!((status, header(&head, "location")), (303, Some("/login")));
}

/// Every page's serious or critical axe-core findings, from `in_chromium`.
pub fn serious(result: &serde_json::Value) -> Vec<String> {
    result["pages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["violations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
                .map(move |v| format!("{}: {} ({})", p["path"], v["id"], v["nodes"]))
        })
        .collect()
}

/// The console in Chromium, through `crates/infra-testkit/oidc/console.mjs`:
/// what the browser shows, and axe-core's findings.
pub fn in_chromium(env: &super::common::Env, email: &str, pages: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/oidc/console.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&script).args(["--public", "/login", "--sign-out"]).args([
        "--url",
        &env.server.url,
        "--username",
        email,
        "--password",
        "user-password-1",
        "--insecure",
    ]);
    for p in pages {
        cmd.args(["--page", p]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn in_a_browser_the_portal_shows_each_destination_and_passes_axe() {
    let w = web_env();
    let env = &w.env;
    let _alice = user(env, "alice@example.com");
    env.admin
        .run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    let result = in_chromium(env, "alice@example.com", &["/console", "/console/account"]);
    assert!(
        result["pages"][0]["text"].as_str().unwrap().contains("Log in"),
        "{result:#}"
    );
    // The sign-in page first, then the signed-in pages, then the page's own
    // Sign out, posted by the browser.
    let page = &result["pages"][1];
    assert!(page["url"].as_str().unwrap().ends_with("/console"), "{page:#}");
    assert!(result["signedOut"].as_str().unwrap().ends_with("/login"), "{result:#}");
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("web") && text.contains("user") && !text.contains("other"),
        "{text}"
    );
    let account = &result["pages"][2];
    assert!(
        account["text"].as_str().unwrap().contains("this session"),
        "{account:#}"
    );
    let findings = serious(&result);
    assert!(findings.is_empty(), "axe: {findings:#?}");
}

#[test]
fn a_user_sees_and_ends_their_own_sessions_and_keys_from_the_page_only() {
    let w = web_env();
    let env = &w.env;
    let alice = user(env, "alice@example.com");
    let key = alice.run(&["keys", "add", "--name", "ci-bot", "--quiet"]);
    assert_eq!(key.status, 0, "{key:?}");
    let key = key.stdout.trim().to_owned();
    let works = |k: &str| env.server.get_json("/api/info", Some(k)).unwrap().0;
    assert_eq!(works(&key), 200);

    let cookie = sign_in(env, "alice@example.com");
    let (status, _, page) = curl(env, "/console/account", &["-H", &format!("Cookie: {cookie}")]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("ci-bot") && page.contains("this session"), "{page}");
    // Another user's keys are not there.
    assert!(!page.contains("admin@example.com"), "{page}");
    let id = key.split('.').next().unwrap();
    let csrf = csrf_of(&page);
    let origin = format!("Origin: {}", env.server.url.trim_end_matches('/'));
    let end = |extra: &[&str]| {
        let c = format!("Cookie: {cookie}");
        let mut args = vec!["-X", "POST", "-H", c.as_str(), "-H", origin.as_str()];
        args.extend_from_slice(extra);
        curl(env, &format!("/console/account/keys/{id}/end"), &args).0
    };
    assert_eq!(end(&["-d", "csrf=forged"]), 403);
    assert_eq!(works(&key), 200, "a forged post ended the key");
    assert_eq!(end(&["-d", &format!("csrf={csrf}")]), 303);
    assert_eq!(works(&key), 401, "the key still works after it was ended");

    // Changing the password: each mistake said at the form, then done.
    let change = |old: &str, new: &str, confirm: &str| {
        let c = format!("Cookie: {cookie}");
        let fields = [
            format!("csrf={csrf}"),
            format!("old_password={old}"),
            format!("password={new}"),
            format!("confirm={confirm}"),
        ];
        let mut args = vec!["-X", "POST", "-H", c.as_str(), "-H", origin.as_str()];
        for f in &fields {
            args.extend(["--data-urlencode", f.as_str()]);
        }
        curl(env, "/console/account/password", &args)
    };
    let (status, _, body) = change("user-password-1", "a-new-password-2", "another-password-3");
    assert_eq!(status, 400);
    assert!(body.contains("The two new passwords differ."), "{body}");
    let (status, _, body) = change("wrong-password-9", "a-new-password-2", "a-new-password-2");
    assert_eq!(status, 400);
    assert!(body.contains("old password is wrong"), "{body}");
    let (status, head, _) = change("user-password-1", "a-new-password-2", "a-new-password-2");
    assert_eq!(
        (status, header(&head, "location")),
        (303, Some("/console/account?changed=true"))
    );
    let (status, _, body) = curl(
        env,
        "/console/account?changed=true",
        &["-H", &format!("Cookie: {cookie}")],
    );
    assert_eq!(status, 200, "the session that changed the password stays");
    assert!(body.contains("Your password was changed"), "{body}");
    let out = alice.run(&["list"]);
    assert_ne!(out.status, 0, "the CLI's session outlived the password change: {out:?}");
}
