//! Forward-auth through real proxies: nginx (`auth_request`) and Caddy
//! (`forward_auth`) in front of a real upstream, each configured from the
//! file the docs give (`deploy/forward-auth/`); a real browser through
//! nginx; Envoy's gRPC `Check` from Envoy's own protos; Envoy's HTTP
//! service as Envoy calls it.

use std::process::Command;

use infra_testkit::{Cli, Proxy, ProxyKind, Upstream};
use serde_json::Value;

use super::common::{Backend, Env, json, start};
use super::gateway::{token, user};

const APP: &str = "wiki.localhost";

pub struct Fa {
    pub env: Env,
    _up: Upstream,
    pub proxy: Proxy,
    pub alice: Cli,
    pub bob: Cli,
}

/// A server, an upstream behind `kind`, destination `wiki` at the proxy
/// (alice may use it), and `docs` elsewhere (bob may use that).
pub fn setup(kind: ProxyKind) -> Fa {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let proxy = Proxy::start(kind, APP, &env.server, &up.url).expect("start the proxy");
    let a = &env.admin;
    a.run(&["destinations", "add", "wiki", "--url", &proxy.url]).ok();
    a.run(&["destinations", "add", "docs", "--url", "https://docs.localhost"])
        .ok();
    let alice = user(&env, "alice@example.com");
    let bob = user(&env, "bob@example.com");
    a.run(&["grants", "add", "alice@example.com", "wiki", "--role", "viewer"])
        .ok();
    a.run(&["grants", "add", "bob@example.com", "docs", "--role", "viewer"])
        .ok();
    Fa {
        env,
        _up: up,
        proxy,
        alice,
        bob,
    }
}

/// curl through the proxy: (status, headers, body). `-k`: the proxy's own
/// certificate is self-signed for the test.
pub fn curl(fa: &Fa, path: &str, args: &[&str]) -> (u16, String, String) {
    let resolve = format!("{APP}:{}:127.0.0.1", fa.proxy.port);
    let mut all = vec!["-k", "--resolve", &resolve];
    all.extend_from_slice(args);
    super::common::curl_response(&all, &format!("{}{path}", fa.proxy.url))
}

/// `n` anonymous forward-auth decisions for `wiki.example.com`, 8 at a
/// time: audit events by the thousand, quickly.
pub fn decisions(env: &Env, n: usize) {
    let url = format!("https://localhost:{}/api/forward-auth", env.server.port);
    let mut cmd = Command::new("curl");
    cmd.stdout(std::process::Stdio::null())
        .args(["-s", "--parallel", "--parallel-max", "8", "--cacert"])
        .arg(env.server.ca_path())
        .args(["-H", "X-Forwarded-Host: wiki.example.com"]);
    for _ in 0..n {
        cmd.arg(&url);
    }
    assert!(cmd.status().unwrap().success());
}

/// The headers the upstream's echo saw.
fn upstream_saw(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo ({e}): {body}"));
    v["headers"].clone()
}

fn admits_refuses_and_signs_in(kind: ProxyKind) {
    let fa = setup(kind);
    let log = || fa.proxy.log();
    let alice = token(&fa.alice, "wiki");
    let bearer = format!("Authorization: Bearer {alice}");

    // A granted user: Infra's identity reaches the upstream, the client's
    // forged one does not, nor the credential.
    let (s, _, body) = curl(
        &fa,
        "/echo/page",
        &[
            "-H",
            &bearer,
            "-H",
            "X-Forwarded-User: mallory@example.com",
            "-H",
            "X-Auth-Request-User: mallory@example.com",
            "-H",
            "X-Forwarded-Groups: admins",
            "-H",
            "X-Auth-Request-Email: mallory@example.com",
        ],
    );
    assert_eq!(s, 200, "{body}\n{}", log());
    let h = upstream_saw(&body);
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-auth-request-user",
        "x-auth-request-email",
    ] {
        assert_eq!(h[name], "alice@example.com", "{name}: {h}");
    }
    assert!(h.get("x-forwarded-groups").is_none_or(|g| g == ""), "{h}");
    assert!(h.get("authorization").is_none(), "{h}");

    // The token as the browser's cookie: the upstream gets the other
    // cookies only.
    let cookie = format!("Cookie: theme=dark; __Host-infra_token={alice}; sid=app");
    let (s, _, body) = curl(&fa, "/echo/c", &["-H", &cookie]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(upstream_saw(&body)["cookie"], "theme=dark; sid=app");
    // A form on the application's own page posts with the cookie; a page
    // of another origin may not.
    let own = format!("Origin: {}", fa.proxy.url);
    let (s, _, body) = curl(&fa, "/echo/form", &["-X", "POST", "-H", &cookie, "-H", &own]);
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = curl(
        &fa,
        "/echo/form",
        &["-X", "POST", "-H", &cookie, "-H", "Origin: https://evil.example.com"],
    );
    assert_eq!(s, 403, "{body}");

    // A grant removed: bob's token, minted while he had one, opens
    // nothing at once (403 with the reason), and the upstream is never
    // asked.
    let a = &fa.env.admin;
    a.run(&["grants", "add", "bob@example.com", "wiki", "--role", "viewer"])
        .ok();
    let bob_wiki = token(&fa.bob, "wiki");
    let bob_auth = format!("Authorization: Bearer {bob_wiki}");
    assert_eq!(curl(&fa, "/echo/x", &["-H", &bob_auth]).0, 200);
    a.run(&["grants", "remove", "bob@example.com", "wiki", "--role", "viewer"])
        .ok();
    let (s, _, body) = curl(&fa, "/echo/x", &["-H", &bob_auth]);
    assert_eq!(s, 403, "{body}");
    if kind == ProxyKind::Caddy {
        // Caddy hands Infra's answer to the client; nginx shows its own
        // 403 page (the reason is in the audit log either way).
        assert!(body.contains("no grant on wiki"), "{body}");
    }

    // Bob's token for another application, with that application's host:
    // the proxy names its own host, so it is no key here.
    let bob_docs = token(&fa.bob, "docs");
    let (s, _, body) = curl(
        &fa,
        "/echo/x",
        &[
            "-H",
            &format!("Authorization: Bearer {bob_docs}"),
            "-H",
            "X-Forwarded-Host: docs.localhost",
        ],
    );
    assert_eq!(s, 403, "{body}");
    assert!(!body.contains("\"path\""), "{body}");

    // Anonymous: an API client gets 401; a browser is sent to sign in,
    // and back to this very page afterwards.
    let (s, _, _) = curl(&fa, "/echo/x", &[]);
    assert_eq!(s, 401);
    let (s, head, _) = curl(&fa, "/echo/x?y=1", &["-H", "Accept: text/html"]);
    assert_eq!(s, 302, "{head}");
    let back = format!(
        "location: https://localhost:{}/authorize?rd=https%3A%2F%2F{APP}%3A{}%2Fecho%2Fx%3Fy%3D1",
        fa.env.server.port, fa.proxy.port
    );
    assert!(head.to_ascii_lowercase().contains(&back.to_ascii_lowercase()), "{head}");

    // Every decision is in the audit log.
    let events = json(
        fa.env
            .admin
            .run(&["audit", "list", "--destination", "wiki", "-o", "json"])
            .ok(),
    );
    let actions: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let count = |action: &str, actor: &str| actions.iter().filter(|(a, u)| a == action && u == actor).count();
    assert_eq!(count("forward_auth.allow", "alice@example.com"), 3, "{actions:?}");
    assert_eq!(count("forward_auth.allow", "bob@example.com"), 1, "{actions:?}");
    assert_eq!(count("forward_auth.deny", "bob@example.com"), 1, "{actions:?}");
    assert_eq!(count("forward_auth.deny", "anonymous"), 3, "{actions:?}");
}

#[test]
fn nginx_admits_refuses_and_signs_in() {
    admits_refuses_and_signs_in(ProxyKind::Nginx);
}

#[test]
fn caddy_admits_refuses_and_signs_in() {
    admits_refuses_and_signs_in(ProxyKind::Caddy);
}

#[test]
fn a_browser_signs_in_through_nginx_and_comes_back_to_the_page() {
    let h = super::identity::setup_with(vec!["--default-provider".into(), "idp".into()]);
    let up = Upstream::start().unwrap();
    let proxy = Proxy::start(ProxyKind::Nginx, APP, &h.env.server, &up.url).expect("start nginx");
    let a = &h.env.admin;
    a.run(&["destinations", "add", "wiki", "--url", &proxy.url]).ok();
    a.run(&["groups", "add", "devs"]).ok();
    a.run(&["grants", "add", "--group", "devs", "wiki", "--role", "viewer"])
        .ok();
    let page = format!("{}/echo/hello?x=1", proxy.url);
    let out = infra_testkit::oidc::browser(&page, "alice", "alice-pw", &[]);
    assert_eq!(out.status, 0, "{out:?}\n{}", proxy.log());
    let seen: Value = serde_json::from_str(out.stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(seen["url"], page.as_str(), "{seen}");
    let text = seen["text"].as_str().unwrap();
    let echo: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(echo["path"], "/echo/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-user"], "alice@example.com", "{echo}");
    let groups = echo["headers"]["x-forwarded-groups"].as_str().unwrap_or_default();
    assert!(groups.split(',').any(|g| g == "devs"), "{echo}");
    // The browser's token cookie stayed with the proxy.
    assert!(echo["headers"].get("cookie").is_none(), "{echo}");
}

/// `check.py`: Envoy's CheckRequest for `host` `path` with `headers`.
fn envoy_check(env: &Env, host: &str, method: &str, path: &str, headers: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra-testkit/envoy/check.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--target", &format!("127.0.0.1:{}", env.server.port)])
        .args(["--ca", env.server.ca_path().to_str().unwrap()])
        .args(["--host", host, "--method", method, "--path", path]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn envoy_grpc_check_allows_with_headers_and_denies_with_status_and_body() {
    let env = start(Backend::Sqlite);
    let a = &env.admin;
    a.run(&["destinations", "add", "wiki", "--url", "https://wiki.example.com"])
        .ok();
    let alice = user(&env, "alice@example.com");
    let bob = user(&env, "bob@example.com");
    a.run(&["grants", "add", "alice@example.com", "wiki", "--role", "viewer"])
        .ok();
    a.run(&["grants", "add", "bob@example.com", "wiki", "--role", "viewer"])
        .ok();
    let t = token(&alice, "wiki");
    let bt = token(&bob, "wiki");
    a.run(&["grants", "remove", "bob@example.com", "wiki", "--role", "viewer"])
        .ok();

    // Allowed: gRPC OK, Infra's identity set (overwriting), every client
    // identity header in any spelling and the credential removed.
    let r = envoy_check(
        &env,
        "wiki.example.com",
        "POST",
        "/edit?page=1",
        &[
            &format!("authorization=Bearer {t}"),
            "x-forwarded-user=mallory@example.com",
            "x_auth_request_user=mallory@example.com",
            "x-forwarded-proto=https",
            "cookie=theme=dark",
        ],
    );
    assert_eq!(r["status"], 0, "{r}");
    let ok = &r["ok"];
    assert_eq!(ok["headers"]["x-forwarded-user"], "alice@example.com", "{r}");
    assert_eq!(ok["headers"]["x-auth-request-email"], "alice@example.com", "{r}");
    assert_eq!(ok["headers"]["cookie"], "theme=dark", "{r}");
    let removed: Vec<&str> = ok["headers_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for h in ["authorization", "x-forwarded-user", "x_auth_request_user"] {
        assert!(removed.contains(&h), "{h} not removed: {r}");
    }
    assert!(!removed.contains(&"x-forwarded-proto"), "Envoy's own header: {r}");

    // No grant: PERMISSION_DENIED (7), HTTP 403 with the JSON reason.
    let r = envoy_check(
        &env,
        "wiki.example.com",
        "GET",
        "/",
        &[&format!("authorization=Bearer {bt}")],
    );
    assert_eq!(r["status"], 7, "{r}");
    assert_eq!(r["denied"]["http_status"], 403, "{r}");
    let body: Value = serde_json::from_str(r["denied"]["body"].as_str().unwrap()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("no grant"), "{body}");

    // Anonymous: UNAUTHENTICATED (16); a browser gets a 302 to sign in,
    // an API client a 401 with where to sign in.
    let r = envoy_check(&env, "wiki.example.com", "GET", "/p", &["accept=text/html"]);
    assert_eq!(r["status"], 16, "{r}");
    assert_eq!(r["denied"]["http_status"], 302, "{r}");
    let to = r["denied"]["headers"]["location"].as_str().unwrap();
    assert!(
        to.starts_with(&format!(
            "https://localhost:{}/authorize?rd=https%3A%2F%2Fwiki.example.com%2Fp",
            env.server.port
        )),
        "{to}"
    );
    let r = envoy_check(&env, "wiki.example.com", "GET", "/p", &[]);
    assert_eq!(r["denied"]["http_status"], 401, "{r}");

    // A host no destination has.
    let r = envoy_check(
        &env,
        "other.example.com",
        "GET",
        "/",
        &[&format!("authorization=Bearer {t}")],
    );
    assert_eq!(r["denied"]["http_status"], 403, "{r}");
}

#[test]
fn envoy_http_service_reads_the_host_not_a_forwarded_one() {
    let env = start(Backend::Sqlite);
    let a = &env.admin;
    a.run(&["destinations", "add", "wiki", "--url", "https://wiki.example.com"])
        .ok();
    a.run(&["destinations", "add", "docs", "--url", "https://docs.example.com"])
        .ok();
    let alice = user(&env, "alice@example.com");
    a.run(&["grants", "add", "alice@example.com", "docs", "--role", "viewer"])
        .ok();
    let docs = token(&alice, "docs");
    // As Envoy calls it: the original method, Host and path after the
    // prefix.
    let call = |host: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "DELETE",
            ])
            .args(["--cacert", env.server.ca_path().to_str().unwrap()])
            .args([
                "-H",
                &format!("Host: {host}"),
                "-H",
                &format!("Authorization: Bearer {docs}"),
            ])
            .args(extra)
            .arg(format!("https://localhost:{}/api/ext-authz/items/1", env.server.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = call("docs.example.com", &[]);
    assert!(out.ends_with("200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("x-forwarded-user: alice@example.com"),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("x-envoy-auth-headers-to-remove: authorization"),
        "{out}"
    );
    // The client names docs in X-Forwarded-Host while Envoy asks about
    // wiki: wiki is decided, and the docs token is no key to it.
    let out = call("wiki.example.com", &["-H", "X-Forwarded-Host: docs.example.com"]);
    assert!(out.ends_with("403"), "{out}");
}
