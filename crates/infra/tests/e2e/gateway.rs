//! HTTP destinations through the gateway, a tunnel and a connector, with a
//! real upstream: who gets in, what the upstream sees, revocation, failover.

mod connectors;
mod streams;

use std::time::Duration;

use infra_testkit::{Cli, Connector, HttpDest, Upstream, eventually};

use super::common::{ADMIN, Backend, Env, bin, json, login, start};

const UPSTREAM_SECRET: &str = "upstream-secret-token";

/// An HTTPS client for `<dest>.localhost` names, trusting the server's CA.
pub struct Gw {
    pub rt: tokio::runtime::Runtime,
    pub client: reqwest::Client,
    port: u16,
}

impl Gw {
    pub fn new(env: &Env, dests: &[&str], http1: bool) -> Gw {
        let ca = std::fs::read(env.server.ca_path()).unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], env.server.port));
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(60));
        for d in dests {
            b = b.resolve(&format!("{d}.localhost"), addr);
        }
        if http1 {
            b = b.http1_only();
        }
        Gw {
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: b.build().unwrap(),
            port: env.server.port,
        }
    }

    pub fn url(&self, dest: &str, path: &str) -> String {
        format!("https://{dest}.localhost:{}{path}", self.port)
    }

    /// GET with optional bearer token and extra headers: status and body.
    pub fn get(&self, dest: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> (u16, String) {
        self.rt.block_on(async {
            let mut r = self.client.get(self.url(dest, path));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match r.send().await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    (s, resp.text().await.unwrap_or_default())
                }
                Err(e) => (0, format!("{e:?}")),
            }
        })
    }
}

pub fn token(cli: &Cli, dest: &str) -> String {
    cli.run(&["tokens", "--destination", dest, "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

pub fn user(env: &Env, email: &str) -> Cli {
    env.admin
        .run_stdin(&["users", "add", email, "--password-stdin"], "user-password-1")
        .ok();
    let c = Cli::new(&bin()).unwrap();
    login(&c, &env.server, email, "user-password-1").ok();
    c
}

pub fn connector_key(env: &Env, name: &str) -> String {
    env.admin.connector_key(name)
}

pub fn web(up: &Upstream) -> Vec<HttpDest> {
    vec![
        HttpDest {
            name: "web".into(),
            url: up.url.clone(),
            upstream_token: Some(UPSTREAM_SECRET.into()),
        },
        HttpDest {
            name: "other".into(),
            url: up.url.clone(),
            upstream_token: None,
        },
    ]
}

/// A server, an upstream, connector `dc1` serving `web` and `other`, a
/// client for `web`, and the admin's token for it, once `web` answers.
/// Fields drop in order: client, connector, upstream, then the server.
pub struct WebEnv {
    pub gw: Gw,
    pub c: Connector,
    pub t: String,
    /// Kept alive for the connector to reach.
    pub _up: Upstream,
    pub env: Env,
}

pub fn web_env() -> WebEnv {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let t = token(&env.admin, "web");
    let gw = Gw::new(&env, &["web"], false);
    expect(&gw, &t, 200, "");
    WebEnv { gw, c, t, _up: up, env }
}

/// Waits (≤ 10 s) until GET web/echo with `t` answers `status` with a
/// body containing `text`.
pub fn expect(gw: &Gw, t: &str, status: u16, text: &str) {
    eventually!(10, || match gw.get("web", "/echo", Some(t), &[]) {
        (s, body) if s == status && body.contains(text) => Ok(()),
        other => Err(anyhow::anyhow!("want {status}, got {other:?}")),
    });
}

#[test]
fn gateway_checks_identity_and_strips_client_headers() {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let _c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    let alice = user(&env, "alice@example.com");
    let bob = user(&env, "bob@example.com");
    env.admin
        .run(&["grants", "add", "alice@example.com", "web", "--role", "admin"])
        .ok();
    env.admin
        .run(&["grants", "add", "bob@example.com", "other", "--role", "user"])
        .ok();
    let gw = Gw::new(&env, &["web", "other"], true);

    // No credential: 401 that says how to get one.
    let (s, body) = gw.get("web", "/echo", None, &[]);
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("infra tokens --destination web"), "{body}");

    // A valid user without a grant: 403 naming what is missing.
    let bob_other = token(&bob, "other");
    let out = bob.run(&["tokens", "--destination", "web", "--quiet"]);
    assert!(out.failed().stderr.contains("no grant on web"));
    // A token for destination A does not open destination B.
    let (s, body) = gw.get("web", "/echo", Some(&bob_other), &[]);
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("not for web"), "{body}");

    // With a grant: the upstream sees who, its own credential, never the
    // user's token, and none of the client's identity claims.
    let t = token(&alice, "web");
    let (s, body) = gw.get(
        "web",
        "/echo/path?q=1",
        Some(&t),
        &[
            ("X-Forwarded-User", "root@example.com"),
            ("X-Forwarded-Groups", "admins"),
            ("X-Infra-Assertion", "forged"),
            ("Impersonate-User", "root"),
            ("Connection", "X-Smuggled"),
            ("X-Smuggled", "1"),
            ("Forwarded", "for=1.2.3.4"),
        ],
    );
    assert_eq!(s, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["path"], "/echo/path?q=1");
    assert_eq!(h["x-forwarded-user"], "alice@example.com");
    assert_eq!(h["x-forwarded-email"], "alice@example.com");
    assert_eq!(h["x-forwarded-role"], "admin");
    assert_eq!(h["authorization"], format!("Bearer {UPSTREAM_SECRET}"));
    assert!(!body.contains(&t), "the user's token reached the upstream");
    for gone in ["impersonate-user", "x-smuggled", "forwarded"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_ne!(h["x-infra-assertion"], "forged");
    // Basic auth with the token as password works too (for browsers and
    // tools that only speak Basic).
    let basic = gw.rt.block_on(async {
        gw.client
            .get(gw.url("web", "/echo"))
            .basic_auth("x", Some(&t))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(basic, 200);

    // The assertion verifies against the published connector keys.
    let (_, jwks) = env.server.get_json("/api/connectors/jwks", None).unwrap();
    let jwks: infra_auth::jwt::Jwks = serde_json::from_value(jwks).unwrap();
    let iss = format!("https://localhost:{}/connectors/dc1", env.server.port);
    let claims = infra_auth::jwt::Verifier::new(&jwks, &iss)
        .verify(h["x-infra-assertion"].as_str().unwrap(), "web")
        .unwrap();
    assert_eq!(claims.name, "alice@example.com");

    // Every request, allowed or not, is in the audit log.
    eventually!(10, || {
        let ev = json(
            env.admin
                .run(&["audit", "list", "--destination", "web", "-o", "json"])
                .ok(),
        );
        let n = ev
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "http.request" && e["actor"] == "alice@example.com")
            .count();
        let d = ev
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "http.deny")
            .count();
        if n >= 2 && d >= 2 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("audit has {n} requests, {d} denials"))
        }
    });
    let ds = json(env.admin.run(&["destinations", "list", "-o", "json"]).ok());
    assert_eq!(ds[1]["name"], "web");
    assert_eq!(ds[1]["health"], "connected");
}

#[test]
fn revocation_refuses_new_requests_and_cuts_open_streams() {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let _c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    let alice = user(&env, "alice@example.com");
    env.admin.run(&["groups", "add", "devs"]).ok();
    env.admin.run(&["groups", "adduser", "devs", "alice@example.com"]).ok();
    env.admin
        .run(&["grants", "add", "--group", "devs", "web", "--role", "user"])
        .ok();
    let t = token(&alice, "web");
    let gw = Gw::new(&env, &["web"], false);
    eventually!(10, || match gw.get("web", "/echo", Some(&t), &[]) {
        (200, _) => Ok(()),
        other => Err(anyhow::anyhow!("{other:?}")),
    });

    // An open SSE stream delivers events as they are sent…
    let (first, cut) = gw.rt.block_on(async {
        let mut resp = gw
            .client
            .get(gw.url("web", "/sse"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = resp.chunk().await.unwrap().unwrap();
        // …until the membership that allowed it is removed.
        env.admin
            .run(&["groups", "removeuser", "devs", "alice@example.com"])
            .ok();
        let mut cut = false;
        for _ in 0..100 {
            match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    cut = true;
                    break;
                }
                Err(_) => break,
            }
        }
        (first, cut)
    });
    assert!(String::from_utf8_lossy(&first).starts_with("data: 0"), "{first:?}");
    assert!(cut, "the open stream was not cut after revocation");
    let (s, body) = gw.get("web", "/echo", Some(&t), &[]);
    assert_eq!(s, 403, "{body}");

    // Ending the session that minted a token ends the token.
    env.admin.run(&["groups", "adduser", "devs", "alice@example.com"]).ok();
    let t2 = token(&alice, "web");
    eventually!(10, || match gw.get("web", "/echo", Some(&t2), &[]) {
        (200, _) => Ok(()),
        other => Err(anyhow::anyhow!("{other:?}")),
    });
    alice.run(&["logout"]).ok();
    eventually!(10, || match gw.get("web", "/echo", Some(&t2), &[]) {
        (401, _) => Ok(()),
        other => Err(anyhow::anyhow!("still {other:?}")),
    });
}

/// A browser's round trip, with curl as the browser (cookie jar, following
/// redirects): the connector sends it to the server's login page, the
/// server sends it back with a token for that destination only, and the
/// connector keeps the token in a host-only cookie.
#[test]
fn browser_login_round_trip() {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let _c = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    let _alice = user(&env, "alice@example.com");
    env.admin
        .run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    let port = env.server.port;
    let jar = tempfile::NamedTempFile::new().unwrap();
    let ca = env.server.ca_path();
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-L", "--max-redirs", "10", "--cacert", ca.to_str().unwrap()])
            .args(["-c", jar.path().to_str().unwrap(), "-b", jar.path().to_str().unwrap()])
            .args(["--resolve", &format!("web.localhost:{port}:127.0.0.1")])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code} %{url_effective}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let page = format!("https://web.localhost:{port}/echo/page?x=1");
    // Not logged in: ends on the server's login form, which will return here.
    let out = curl(&["-H", "Accept: text/html", &page]);
    assert!(out.contains("Log in to Infra"), "{out}");
    assert!(out.contains(&format!("https://localhost:{port}/login?rd=")), "{out}");
    // Wrong password: the form again, with the reason.
    let out = curl(&[
        "--data-urlencode",
        "email=alice@example.com",
        "--data-urlencode",
        "password=wrong-password",
        "--data-urlencode",
        &format!("rd={page}"),
        &format!("https://localhost:{port}/login"),
    ]);
    assert!(out.contains("invalid email or password"), "{out}");
    // Right password: back at the page, as alice, with no token upstream.
    let out = curl(&[
        "--data-urlencode",
        "email=alice@example.com",
        "--data-urlencode",
        "password=user-password-1",
        "--data-urlencode",
        &format!("rd={page}"),
        &format!("https://localhost:{port}/login"),
    ]);
    assert!(out.ends_with(&format!("200 {page}")), "{out}");
    let body = out.lines().next().unwrap();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/echo/page?x=1");
    assert_eq!(echo["headers"]["x-forwarded-user"], "alice@example.com");
    assert!(
        echo["headers"].get("cookie").is_none(),
        "the token cookie reached the upstream: {body}"
    );
    // Later visits use the cookie directly.
    let out = curl(&[
        "-H",
        "Accept: text/html",
        &format!("https://web.localhost:{port}/echo/again"),
    ]);
    assert!(out.contains("\"x-forwarded-user\":\"alice@example.com\""), "{out}");
    // Never an open redirect, and a forged callback plants nothing.
    let out = curl(&[&format!(
        "https://localhost:{port}/authorize?rd=https://evil.example.com/"
    )]);
    assert!(
        out.contains("Not a destination")
            && out.ends_with(&format!(
                "400 https://localhost:{port}/authorize?rd=https://evil.example.com/"
            )),
        "{out}"
    );
    let out = curl(&[&format!(
        "https://web.localhost:{port}/.infra/callback?token=forged&rd=//evil.example.com/"
    )]);
    assert!(out.contains("invalid or expired") && out.contains("401"), "{out}");
}
