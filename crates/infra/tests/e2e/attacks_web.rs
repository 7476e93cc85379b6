//! Attacks on HTTP destinations through the real server, tunnel, connector
//! and upstream: identity headers in other spellings, upgrades that would
//! bypass the proxy, cookies a sibling destination could plant, redirects
//! that leave the site, and requests a sibling page makes with the cookie.

use std::time::Duration;

use infra_testkit::eventually;

use super::common::{ADMIN, Backend, bin, json, session_key, start};
use super::gateway::{WebEnv, connector_key, token, user, web, web_env};

/// A client that follows no redirects, resolves the server's names to it,
/// and lets the test set any header (cookies included) itself.
struct Raw {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    port: u16,
}

/// What came back: status, `Location`, every `Set-Cookie`, the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: String,
    set_cookies: Vec<String>,
    body: String,
}

impl Raw {
    fn new(w: &WebEnv, http1: bool) -> Raw {
        let ca = std::fs::read(w.env.server.ca_path()).unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], w.env.server.port));
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60));
        for host in ["web.localhost", "other.localhost", "localhost"] {
            b = b.resolve(host, addr);
        }
        if http1 {
            b = b.http1_only();
        }
        Raw {
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: b.build().unwrap(),
            port: w.env.server.port,
        }
    }

    /// A URL on destination `dest` through the gateway.
    fn url(&self, dest: &str, path_and_query: &str) -> String {
        format!("https://{dest}.localhost:{}{path_and_query}", self.port)
    }

    /// A URL on the server itself.
    fn server_url(&self, path_and_query: &str) -> String {
        format!("https://localhost:{}{path_and_query}", self.port)
    }

    fn send(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut r = self.client.request(method, url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e:?}"));
            let h = resp.headers();
            let location = h
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let set_cookies = h
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            Answer {
                status: resp.status().as_u16(),
                location,
                set_cookies,
                body: resp.text().await.unwrap_or_default(),
            }
        })
    }
}

/// The headers the echo upstream received.
fn echoed(a: &Answer) -> serde_json::Value {
    assert_eq!(a.status, 200, "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["headers"].clone()
}

#[test]
fn attack_identity_header_spellings_never_reach_upstream() {
    let w = web_env();
    // Each claim is a distinct value, so the echo shows any that got through.
    let spellings = [
        "X-Forwarded_User",
        "x_forwarded_user",
        "X-Forwarded.Email",
        "X_Forwarded_Groups",
        "X-Forwarded-Role",
        "Remote-User",
        "Remote_User",
        "Remote-Groups",
        "X-Remote-User",
        "X-Remote-Group",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Preferred-Username",
        "X-WEBAUTH-USER",
        "X_WEBAUTH_USER",
        "x-infra_assertion",
        "X-Infra_Foo",
        "Impersonate_User",
        "X-Real_IP",
        "X-Client-IP",
        "True-Client-IP",
        "X-Goog-Authenticated-User-Email",
        "Cf-Access-Authenticated-User-Email",
    ];
    let values: Vec<String> = (0..spellings.len())
        .map(|i| format!("evil-{i}@attacker.example"))
        .collect();
    let headers: Vec<(&str, &str)> = spellings
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect();
    for http1 in [true, false] {
        let raw = Raw::new(&w, http1);
        let auth = format!("Bearer {}", w.t);
        let mut all = headers.clone();
        all.push(("Authorization", &auth));
        let a = raw.send("GET", &raw.url("web", "/echo"), &all);
        let h = echoed(&a);
        assert!(
            !a.body.contains("attacker.example"),
            "a client identity claim reached the upstream (http1={http1}): {h:#}"
        );
        // Infra's own identity headers are there, in their one spelling.
        assert_eq!(h["x-forwarded-user"], ADMIN, "{h:#}");
        assert_eq!(h["x-forwarded-email"], ADMIN, "{h:#}");
        assert!(h["x-infra-assertion"].as_str().is_some_and(|a| a.len() > 20), "{h:#}");
    }
}

#[test]
fn attack_identity_header_spellings_never_reach_upstream_in_direct_mode() {
    let env = start(Backend::Sqlite);
    let up = infra_testkit::Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let dport = infra_testkit::free_port();
    let extra = format!("direct:\n  listen: 127.0.0.1:{dport}\n");
    let c = infra_testkit::Connector::start_with(&bin(), &env.server, &key, "dc1", &web(&up), &extra).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let t = token(&env.admin, "web");
    let ca = std::fs::read(c.data_dir.join("data/direct-ca.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve("web.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], dport)))
        .http1_only()
        .build()
        .unwrap();
    let get = |headers: &[(&str, &str)]| {
        rt.block_on(async {
            let mut r = client
                .get(format!("https://web.localhost:{dport}/echo"))
                .bearer_auth(&t);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match r.send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, format!("{e:?}")),
            }
        })
    };
    eventually!(10, || match get(&[]) {
        (200, _) => Ok(()),
        other => Err(anyhow::anyhow!("{other:?}")),
    });
    let (s, body) = get(&[
        ("X-Forwarded_User", "evil-1@attacker.example"),
        ("Remote-User", "evil-2@attacker.example"),
        ("X-Auth-Request-Email", "evil-3@attacker.example"),
        ("X-WEBAUTH-USER", "evil-4@attacker.example"),
        // The reserved namespace: a direct client cannot pick another
        // destination or an upgrade by spelling the connector's own headers.
        ("X-Infra_Destination", "other"),
        ("x_infra_upgrade", "h2c"),
        ("X-Infra-Upgrade", "h2c"),
    ]);
    assert_eq!(s, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = &echo["headers"];
    assert!(!body.contains("attacker.example"), "{h:#}");
    assert!(!body.contains("h2c"), "{h:#}");
    assert_eq!(h["x-forwarded-user"], ADMIN, "{h:#}");
}

#[test]
fn attack_h2c_and_unknown_upgrades_refused() {
    let w = web_env();
    let raw = Raw::new(&w, true);
    let auth = format!("Bearer {}", w.t);
    for proto in ["h2c", "foo/1", "infra-tcp/1", "websocket, h2c", "TLS/1.2"] {
        let a = raw.send(
            "GET",
            &raw.url("web", "/echo"),
            &[
                ("Authorization", &auth),
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", proto),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        );
        assert_eq!(a.status, 400, "upgrade to {proto:?} was not refused: {a:?}");
        assert!(
            a.body.contains("does not accept an upgrade") && a.body.contains("only WebSocket"),
            "{a:?}"
        );
    }
    // The refusals are audited as denials.
    eventually!(10, || {
        let ev = json(
            w.env
                .admin
                .run(&["audit", "list", "--destination", "web", "-o", "json"])
                .ok(),
        );
        let n = ev
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "http.deny" && e["detail"].as_str().unwrap_or("").contains("h2c"))
            .count();
        if n >= 2 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("audit has {n} h2c denials: {ev:#}"))
        }
    });
    // A plain request still works, and WebSocket stays allowed (the echo
    // upstream answers it with 200, not 101, which the client gets).
    let a = raw.send(
        "GET",
        &raw.url("web", "/echo"),
        &[
            ("Authorization", &auth),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ],
    );
    assert_eq!(echoed(&a)["upgrade"], "websocket", "{a:?}");
}

#[test]
fn attack_session_cookie_is_host_prefixed() {
    let w = web_env();
    let raw = Raw::new(&w, false);
    let a = raw.send(
        "GET",
        &raw.url("web", &format!("/.infra/callback?token={}&rd=/echo/page", w.t)),
        &[],
    );
    assert_eq!(a.status, 302, "{a:?}");
    assert_eq!(a.location, "/echo/page", "{a:?}");
    let [cookie] = a.set_cookies.as_slice() else {
        panic!("want one Set-Cookie: {a:?}")
    };
    assert!(cookie.starts_with("__Host-infra_token="), "{cookie}");
    let attrs: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for want in ["secure", "path=/", "httponly", "samesite=lax"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {cookie}");
    }
    assert!(!attrs.iter().any(|a| a.starts_with("domain")), "{cookie}");
    // The browser sends it back under that name; it works, and never
    // reaches the upstream.
    let c = format!("__Host-infra_token={}; theme=dark", w.t);
    let h = echoed(&raw.send("GET", &raw.url("web", "/echo"), &[("Cookie", &c)]));
    assert_eq!(h["x-forwarded-user"], ADMIN, "{h:#}");
    assert_eq!(h["cookie"], "theme=dark", "{h:#}");
}

#[test]
fn attack_planted_plain_cookie_is_ignored() {
    let w = web_env();
    let raw = Raw::new(&w, false);
    // other.localhost's upstream can set `infra_token` for the whole
    // gateway domain (`Domain=`), or shadow one with a longer `Path`; a
    // `__Host-` cookie it cannot. The attacker's own valid token, planted
    // as a plain cookie, must not be taken as the visitor's credential.
    let attacker = w.t.clone();
    let a = raw.send(
        "GET",
        &raw.url("web", "/echo"),
        &[("Cookie", &format!("infra_token={attacker}"))],
    );
    assert_eq!(a.status, 401, "a plain infra_token cookie was accepted: {a:?}");
    // Shadowing: the planted cookie comes first, the victim's second.
    let alice = user(&w.env, "alice@example.com");
    w.env
        .admin
        .run(&["grants", "add", "alice@example.com", "web", "--role", "user"])
        .ok();
    let victim = token(&alice, "web");
    let c = format!("infra_token={attacker}; __Secure-infra_token={attacker}; __Host-infra_token={victim}");
    let a = raw.send("GET", &raw.url("web", "/echo"), &[("Cookie", &c)]);
    let h = echoed(&a);
    assert_eq!(h["x-forwarded-user"], "alice@example.com", "{h:#}");
    // No spelling of the token cookie reaches the upstream.
    assert!(h.get("cookie").is_none(), "{h:#}");
}

#[test]
fn attack_open_redirect_rd_refused_at_connector_callback() {
    let w = web_env();
    let raw = Raw::new(&w, true);
    let port = raw.port;
    // The connector's callback, with a valid token: a bad `rd` returns to
    // the destination's root, never elsewhere. Each value is as it appears
    // in the query string.
    for rd in [
        "/%09/evil.example",
        "/%0A/evil.example",
        "/%5Cevil.example",
        "/\\evil.example",
        "//evil.example",
        "https://evil.example/",
        "http://web.localhost:1/",
        "/%252F%252Fevil.example",
        "/%255Cevil.example",
        "%2F%2Fevil.example",
    ] {
        let a = raw.send(
            "GET",
            &raw.url("web", &format!("/.infra/callback?token={}&rd={rd}", w.t)),
            &[],
        );
        assert_eq!((a.status, a.location.as_str()), (302, "/"), "rd={rd}: {a:?}");
    }
    // A good one is kept.
    let a = raw.send(
        "GET",
        &raw.url("web", &format!("/.infra/callback?token={}&rd=/echo%3Fa%3D1", w.t)),
        &[],
    );
    assert_eq!((a.status, a.location.as_str()), (302, "/echo?a=1"), "{a:?}");

    // A browser sent to log in from `//evil.example` returns to `/`.
    let a = raw.send("GET", &raw.url("web", "//evil.example"), &[("Accept", "text/html")]);
    assert_eq!(a.status, 302, "{a:?}");
    let back = format!("https%3A%2F%2Fweb.localhost%3A{port}%2F");
    assert!(a.location.ends_with(&format!("/authorize?rd={back}")), "{a:?}");
}

#[test]
fn attack_open_redirect_rd_refused_at_server_authorize() {
    let w = web_env();
    let raw = Raw::new(&w, true);
    let port = raw.port;
    // The server's /authorize, with a logged-in browser: a token is only
    // ever sent to a destination on the gateway's own port, and a path
    // that stays there.
    let session = format!("__Host-infra_session={}", session_key(&w.env.admin));
    let authorize = |rd: &str| {
        let q: String = rd.bytes().map(|b| format!("%{b:02X}")).collect();
        raw.send(
            "GET",
            &raw.server_url(&format!("/authorize?rd={q}")),
            &[("Cookie", &session)],
        )
    };
    for rd in [
        // Anyone on the machine may listen on another port: the token must
        // not go there.
        "https://web.localhost:1/".to_owned(),
        format!("https://web.localhost:{port}/%09/evil.example"),
        format!("https://web.localhost:{port}/\t/evil.example"),
        format!("https://web.localhost:{port}/\\evil.example"),
        format!("https://web.localhost:{port}//evil.example"),
        format!("https://web.localhost:{port}/%2F%2Fevil.example"),
        format!("https://web.localhost:{port}/%5Cevil.example"),
        "https://web.localhost/".to_owned(),
        format!("https://evil.example:{port}/"),
        "https://evil.example/".to_owned(),
        format!("http://web.localhost:{port}/"),
        format!("https://x@web.localhost:{port}/"),
    ] {
        let a = authorize(&rd);
        assert_eq!(a.status, 400, "rd={rd:?}: {a:?}");
        assert!(!a.location.contains("token="), "rd={rd:?}: {a:?}");
    }
    let a = authorize(&format!("https://WEB.localhost:{port}/echo/page?x=1"));
    assert_eq!(a.status, 303, "{a:?}");
    assert!(
        a.location
            .starts_with(&format!("https://web.localhost:{port}/.infra/callback?token=")),
        "{a:?}"
    );
    assert!(a.location.ends_with("&rd=%2Fecho%2Fpage%3Fx%3D1"), "{a:?}");
}

#[test]
fn attack_cross_destination_csrf_refused() {
    let w = web_env();
    let raw = Raw::new(&w, false);
    let port = raw.port;
    let cookie = format!("__Host-infra_token={}", w.t);
    let sibling = format!("https://other.localhost:{port}");
    let own = format!("https://web.localhost:{port}");
    let bearer = format!("Bearer {}", w.t);
    let post = |headers: &[(&str, &str)]| raw.send("POST", &raw.url("web", "/echo"), headers);
    // A page on a sibling destination posts to web with the visitor's
    // cookie (same site, so SameSite=Lax sends it): refused.
    for headers in [
        vec![("Cookie", cookie.as_str()), ("Origin", sibling.as_str())],
        vec![("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-site")],
        vec![("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "cross-site")],
        vec![("Cookie", cookie.as_str()), ("Origin", "null")],
    ] {
        let a = post(&headers);
        assert_eq!(a.status, 403, "{headers:?}: {a:?}");
        assert!(a.body.contains("another origin"), "{a:?}");
    }
    // The destination's own pages, and clients with the token in a header,
    // are not affected.
    for headers in [
        vec![
            ("Cookie", cookie.as_str()),
            ("Origin", own.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![("Cookie", cookie.as_str())],
        vec![("Authorization", bearer.as_str()), ("Origin", sibling.as_str())],
    ] {
        let a = post(&headers);
        assert_eq!(a.status, 200, "{headers:?}: {a:?}");
    }
}
