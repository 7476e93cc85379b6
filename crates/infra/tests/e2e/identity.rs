//! Identity providers against a real OpenID Connect provider (npm
//! `oidc-provider` with its own login form, testkit `OidcProvider`): CLI
//! login by code + PKCE (the provider's form driven over HTTP as the
//! "browser"), the device grant, groups (path-style too) and their grants,
//! refresh that follows the provider, every refusal; a browser (headless
//! Chromium) reaching an HTTP destination; workload token exchange; Infra
//! as an issuer checked by PyJWT.

mod refusals;
pub mod workload;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use infra_testkit::{Cli, Connector, HttpDest, OidcProvider, Output, Upstream};

use super::common::{Backend, Env, bin, json};

const SECRET: &str = "client-secret-1";

pub struct Idp {
    pub env: Env,
    pub idp: OidcProvider,
    dir: tempfile::TempDir,
}

pub fn setup() -> Idp {
    setup_with(Vec::new())
}

pub fn setup_with(mut server_args: Vec<String>) -> Idp {
    server_args.extend(["--provider-refresh".into(), "1s".into()]);
    let env = super::common::start_with(Backend::Sqlite, server_args);
    let idp = OidcProvider::start(serde_json::json!({
        "clients": [{
            "client_id": "infra", "client_secret": SECRET,
            "redirect_uris": ["http://127.0.0.1/callback", format!("https://localhost:{}/oidc/callback", env.server.port)],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic"
        }],
        "users": [
            {"sub": "u-alice", "username": "alice", "password": "alice-pw", "email": "alice@example.com", "name": "Alice",
             "groups": ["devs", "/tenant-a/root/admins"]},
            {"sub": "u-bob", "username": "bob", "password": "bob-pw", "email": "bob@example.com", "name": "Bob", "groups": []},
            {"sub": "u-mallory", "username": "mallory", "password": "mallory-pw", "email": "admin@example.com",
             "email_verified": false, "name": "Mallory", "groups": ["ops"]}
        ],
        "groupsInIdToken": true
    }))
    .expect("start the OIDC provider");
    add_provider(&env, &idp.issuer, &[]);
    Idp {
        env,
        idp,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// `infra providers add idp` for the test provider, with `extra` flags.
fn add_provider(env: &Env, issuer: &str, extra: &[&str]) {
    let mut args = vec!["providers", "add", "idp", "--issuer", issuer, "--client-id", "infra"];
    args.extend_from_slice(extra);
    env.admin
        .run_env(&args, &[("INFRA_PROVIDER_CLIENT_SECRET", SECRET)], None)
        .ok();
}

fn addr(env: &Env) -> String {
    format!("127.0.0.1:{}", env.server.port)
}

/// `infra login --provider idp` with a scripted browser that logs in as `user`.
pub fn provider_login(h: &Idp, cli: &Cli, user: &str, password: &str, extra: &str) -> Output {
    let browser = h.idp.browser_script(h.dir.path(), user, password, extra).unwrap();
    let ca = h.env.server.ca_path();
    cli.run_env(
        &[
            "login",
            &addr(&h.env),
            "--tls-ca",
            ca.to_str().unwrap(),
            "--provider",
            "idp",
        ],
        &[("BROWSER", browser.to_str().unwrap())],
        None,
    )
}

pub fn audit(env: &Env, action: &str) -> String {
    env.admin
        .run(&["audit", "list", "--action", action, "-o", "json"])
        .ok()
        .stdout
        .clone()
}

#[test]
fn cli_login_maps_groups_and_refresh_follows_the_provider() {
    let h = setup();
    // Grants to the provider's groups, one of them path-style.
    for g in ["devs", "/tenant-a/root/admins"] {
        h.env.admin.run(&["groups", "add", g]).ok();
    }
    h.env
        .admin
        .run(&[
            "grants",
            "add",
            "--group",
            "/tenant-a/root/admins",
            "infra",
            "--role",
            "view",
        ])
        .ok();

    let alice = Cli::new(&bin()).unwrap();
    let out = provider_login(&h, &alice, "alice", "alice-pw", "");
    assert_eq!(out.status, 0, "{out:?}\n{}", h.idp.log());
    let info = alice.run(&["info"]).ok().stdout.clone();
    assert!(info.contains("alice@example.com"), "{info}");
    assert!(
        info.contains("/tenant-a/root/admins") && info.contains("devs"),
        "{info}"
    );
    // The path-style group's grant applies.
    alice.run(&["users", "list"]).ok();

    // Removed from the group at the provider: gone at the next refresh.
    h.idp
        .put_user("u-alice", serde_json::json!({"groups": ["devs"]}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = alice.run(&["users", "list"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("view"), "{out:?}");
    let info = alice.run(&["info"]).ok().stdout.clone();
    assert!(!info.contains("/tenant-a/root/admins"), "{info}");
    assert!(audit(&h.env, "group.sync").contains("removed=/tenant-a/root/admins"));

    // Disabled at the provider: the refresh fails and the session ends.
    h.idp
        .put_user("u-alice", serde_json::json!({"disabled": true}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = alice.run(&["info"]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("session ended"), "{out:?}");
    let out = alice.run(&["info"]);
    assert_ne!(out.status, 0, "the session stays ended: {out:?}");
    assert!(audit(&h.env, "login.refresh").contains("session ended"));
    let logins = audit(&h.env, "login");
    assert!(logins.contains("method=oidc:idp"), "{logins}");
}

#[test]
fn device_grant_logs_in_without_a_browser() {
    let h = setup();
    let bob = Cli::new(&bin()).unwrap();
    let ca = h.env.server.ca_path();
    let mut child = Command::new(bin())
        .args([
            "login",
            &addr(&h.env),
            "--tls-ca",
            ca.to_str().unwrap(),
            "--provider",
            "idp",
            "--device",
        ])
        .env("HOME", bob.home())
        .env_remove("INFRA_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let (mut uri, mut code) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("To log in through idp, open ") {
            uri = rest.split_whitespace().next().unwrap_or_default().to_owned();
        } else if !uri.is_empty() && !line.trim().is_empty() && !line.trim().contains(' ') {
            code = line.trim().to_owned();
            break;
        }
    }
    assert!(!code.is_empty(), "no user code shown");
    let out = h.idp.drive_device(&uri, &code, "bob", "bob-pw");
    assert_eq!(out.status, 0, "{out:?}");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(bob.run(&["info"]).ok().stdout.contains("bob@example.com"));
}

/// A connector serving HTTP destination `web` (the upstream's echo).
fn web_connector(env: &Env, up: &Upstream) -> Connector {
    let key = super::gateway::connector_key(env, "webc");
    let dest = HttpDest {
        name: "web".into(),
        url: up.url.clone(),
        upstream_token: None,
    };
    Connector::start(&bin(), &env.server, &key, "webc", &[dest]).unwrap()
}

/// `web_connector`, with a grant on `web` for group `devs`.
fn web_for_devs(env: &Env, up: &Upstream) -> Connector {
    let c = web_connector(env, up);
    env.admin.run(&["groups", "add", "devs"]).ok();
    env.admin
        .run(&["grants", "add", "--group", "devs", "web", "--role", "user"])
        .ok();
    c
}

#[test]
fn a_browser_logs_in_through_the_provider_to_an_http_destination() {
    // With a default provider the browser goes from the destination
    // straight to the provider's login form; without one it clicks
    // "Sign in with idp" on Infra's page (the second half).
    let h = setup_with(vec!["--default-provider".into(), "idp".into()]);
    let up = Upstream::start().unwrap();
    let _c = web_for_devs(&h.env, &up);
    let url = format!("https://web.localhost:{}/echo/hello", h.env.server.port);
    let out = infra_testkit::oidc::browser(&url, "alice", "alice-pw", &[]);
    assert_eq!(out.status, 0, "{out:?}\n{}", h.idp.log());
    let page: serde_json::Value = serde_json::from_str(out.stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(page["url"].as_str().unwrap().starts_with(&url), "{page}");
    let text = page["text"].as_str().unwrap();
    assert!(
        text.contains("/echo/hello") && text.contains("alice@example.com"),
        "{text}"
    );
    // Without a default provider: Infra's own page, the provider a link on it.
    let h2 = setup();
    let _c2 = web_for_devs(&h2.env, &up);
    let url2 = format!("https://web.localhost:{}/echo/again", h2.env.server.port);
    let out = infra_testkit::oidc::browser(&url2, "alice", "alice-pw", &["Sign in with idp"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("/echo/again") && out.stdout.contains("alice@example.com"),
        "{out:?}"
    );
}

#[test]
fn borrowed_sessions_cannot_make_lasting_keys() {
    let h = setup();
    let alice = Cli::new(&bin()).unwrap();
    assert_eq!(provider_login(&h, &alice, "alice", "alice-pw", "").status, 0);
    // A key made from a provider session ends with the session.
    let out = alice.run(&["keys", "add", "--name", "mine", "--quiet"]);
    assert_eq!(out.status, 0, "{out:?}");
    let keys = json(alice.run(&["keys", "list", "-o", "json"]).ok());
    let mine = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "mine")
        .unwrap()
        .clone();
    assert!(mine["expires"].is_string(), "{mine}");
    // A provider session cannot be turned into a password-less 12 h session.
    let key = super::common::session_key(&alice);
    let body = serde_json::json!({"accessKey": key});
    let (s, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/login",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    assert_eq!(s, 403, "{v}");
    // Nor a key made from it; and a key that key makes is capped in turn.
    let mine_secret = out.stdout.trim().to_owned();
    let post = |path: &str, bearer: Option<&str>, body: serde_json::Value| {
        h.env
            .server
            .send_json("POST", path, bearer, body.to_string().as_bytes(), "application/json")
            .unwrap()
    };
    let (s, v) = post("/api/login", None, serde_json::json!({"accessKey": mine_secret}));
    assert_eq!(s, 403, "{v}");
    let (s, v) = post(
        "/api/keys",
        Some(&mine_secret),
        serde_json::json!({"name": "grandchild"}),
    );
    assert_eq!(s, 201, "{v}");
    assert!(v["key"]["expires"].is_string(), "{v}");
}
