//! The API and its sign-in: password guessing, cross-site login forms,
//! oversized bodies, what a small user may read, and sessions borrowed
//! from a workload.

use std::time::Duration;

use crate::e2e::common::{self, Env};
use crate::e2e::gateway::{self, web_env};
use crate::e2e::identity;

/// An authenticated workload: a session borrowed through token exchange
/// (or from an identity provider: the same rule, `lender_of`, decides both)
/// cannot log in to a fresh session, and every key made from it, directly
/// or through another such key, is capped at its end and dies with it.
#[test]
fn attack_borrowed_session_cannot_mint_lasting_keys() {
    use identity::workload::{WORKLOAD_ISS, WORKLOAD_SUB, exchange, sa_token, workload_issuer};
    let w = web_env();
    let env = &w.env;
    let enc = workload_issuer(env, "deployer@ci.example.com");
    let (s, v) = exchange(env, &sa_token(&enc, WORKLOAD_ISS, "infra", 600, WORKLOAD_SUB), None);
    assert_eq!(s, 200, "{v}");
    let borrowed = v["access_token"].as_str().unwrap().to_owned();
    let post = |path: &str, bearer: Option<&str>, body: serde_json::Value| {
        env.server
            .send_json("POST", path, bearer, body.to_string().as_bytes(), "application/json")
            .unwrap()
    };

    // A fresh session from the borrowed key would outlive the exchange.
    let (s, v) = post("/api/login", None, serde_json::json!({ "accessKey": borrowed }));
    assert_eq!(s, 403, "a borrowed key logged in to a fresh session: {v}");

    // Key from the borrowed session, then a key from that key: both capped.
    let (s, k1) = post("/api/keys", Some(&borrowed), serde_json::json!({ "name": "k1" }));
    assert_eq!(s, 201, "{k1}");
    assert!(
        !k1["key"]["expires"].is_null(),
        "a key from a borrowed session never expires: {k1}"
    );
    let k1_secret = k1["accessKey"].as_str().unwrap().to_owned();
    let (s, k2) = post("/api/keys", Some(&k1_secret), serde_json::json!({ "name": "k2" }));
    assert_eq!(s, 201, "{k2}");
    assert!(
        !k2["key"]["expires"].is_null(),
        "a key from a derived key never expires: {k2}"
    );
    let k2_secret = k2["accessKey"].as_str().unwrap().to_owned();
    let (s, v) = post("/api/login", None, serde_json::json!({ "accessKey": k2_secret }));
    assert_eq!(s, 403, "a derived key logged in to a fresh session: {v}");

    // Ending the borrowed session ends both.
    let id = borrowed.split('.').next().unwrap();
    env.admin.run(&["keys", "remove", id]).ok();
    for k in [&k1_secret, &k2_secret] {
        let (s, v) = env.server.get_json("/api/info", Some(k)).unwrap();
        assert_eq!(s, 401, "a key outlived the session it was borrowed from: {v}");
    }
}

/// An HTTPS client to the server's API whose connections come from
/// `source` (any 127.0.0.0/8 address: each is another client to the server).
fn api_client(env: &Env, source: [u8; 4]) -> reqwest::Client {
    let ca = std::fs::read(env.server.ca_path()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], env.server.port)),
        )
        .local_address(std::net::IpAddr::from(source))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn try_login(client: &reqwest::Client, port: u16, email: &str, password: &str) -> u16 {
    let body = serde_json::json!({ "email": email, "password": password });
    match client
        .post(format!("https://localhost:{port}/api/login"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Anonymous client guessing passwords: concurrent guesses cannot all slip
/// past the lock check; a success on one's own account does not refill the
/// address's budget for spraying others; and one address's guesses do not
/// lock the owner out from elsewhere.
#[test]
fn attack_login_throttling_holds_under_races_sprays_and_lockout() {
    use infra_auth::lockout::{FREE_FAILURES, FREE_FAILURES_PER_ADDRESS};
    let env = common::start(common::Backend::Sqlite);
    for (email, pw) in [
        ("alice@example.com", "alice-password-1"),
        ("mallory@example.com", "mallory-pw-1"),
    ] {
        env.admin
            .run_stdin(&["users", "add", email, "--password-stdin"], pw)
            .ok();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = env.server.port;

    // 1. A race: 300 wrong passwords at once from one address.
    let attacker = api_client(&env, [127, 0, 0, 2]);
    let statuses: Vec<u16> = rt.block_on(async {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let c = attacker.clone();
                tokio::spawn(async move { try_login(&c, port, "alice@example.com", &format!("guess-{i}")).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let failures = statuses.iter().filter(|s| **s == 401).count() as i64;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // The policy allows FREE_FAILURES, then one more each time a lock
    // (1 s, 2 s, 4 s, 8 s, 16 s) runs out: five more only if the race
    // lasted half a minute.
    let allowed = FREE_FAILURES + 5;
    assert!(
        failures <= allowed,
        "{failures} of 300 concurrent wrong passwords were checked (at most {allowed} allowed); 429s: {refused}"
    );
    assert!(refused > 0, "{statuses:?}");

    // 2. The owner, from another address, is not locked out.
    let owner = api_client(&env, [127, 0, 0, 3]);
    assert_eq!(
        rt.block_on(try_login(&owner, port, "alice@example.com", "alice-password-1")),
        200
    );

    // 3. Spraying: wrong passwords at many accounts from one address, with a
    // success on the sprayer's own account now and then.
    let sprayer = api_client(&env, [127, 0, 0, 4]);
    let mut refused_at = None;
    for i in 0..(FREE_FAILURES_PER_ADDRESS + 10) {
        if i % 10 == 9 {
            let s = rt.block_on(try_login(&sprayer, port, "mallory@example.com", "mallory-pw-1"));
            if s == 429 {
                refused_at = Some(i);
                break;
            }
        }
        let s = rt.block_on(try_login(
            &sprayer,
            port,
            &format!("user{i}@example.com"),
            "Winter2026!",
        ));
        if s == 429 {
            refused_at = Some(i);
            break;
        }
    }
    assert!(
        refused_at.is_some(),
        "an address sprayed {} accounts without being throttled",
        FREE_FAILURES_PER_ADDRESS + 10
    );
}

/// A client sending a 20 MiB body to the API gets a readable 413, not a
/// reset connection.
#[test]
fn attack_oversized_body_gets_a_readable_413() {
    let env = common::start(common::Backend::Sqlite);
    let key = common::session_key(&env.admin);
    let client = api_client(&env, [127, 0, 0, 1]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = env.server.port;
    let (status, body) = rt.block_on(async move {
        let r = client
            .post(format!("https://localhost:{port}/api/users"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(vec![b'x'; 20 * 1024 * 1024])
            .send()
            .await
            .expect("an answer, not a reset connection");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too large"), "{body}");
}

/// A page on another site posting the attacker's credentials to the
/// server's sign-in form (login CSRF): refused, and no session cookie is
/// set; the same form posted from the server's own page works.
#[test]
fn attack_login_form_posted_from_another_site_is_refused() {
    let env = common::start(common::Backend::Sqlite);
    let client = api_client(&env, [127, 0, 0, 1]);
    let port = env.server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let post = |origin: &'static str, site: &'static str| {
        let client = client.clone();
        rt.block_on(async move {
            let r = client
                .post(format!("https://localhost:{port}/login"))
                .header("origin", origin.replace("PORT", &port.to_string()))
                .header("sec-fetch-site", site)
                .form(&[("email", common::ADMIN), ("password", common::ADMIN_PW), ("rd", "")])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("set-cookie").is_some())
        })
    };
    let (status, cookie) = post("https://evil.example", "cross-site");
    assert_eq!(
        (status, cookie),
        (403, false),
        "a cross-site post logged the browser in"
    );
    let (status, cookie) = post("https://localhost:PORT", "same-origin");
    assert!(
        status < 400 && cookie,
        "the server's own form no longer works: {status}"
    );
}

/// A user with a small grant: cannot read the grants of a group they are
/// not in by naming themselves too (`?user=ME&group=X`), and cannot tell
/// which accounts exist from the answer (403 whether or not they do).
#[test]
fn attack_small_user_cannot_read_other_groups_or_enumerate_users() {
    use common::{ADMIN, session_key};
    let w = web_env();
    let env = &w.env;
    env.admin.run(&["groups", "add", "secret-team"]).ok();
    env.admin
        .run(&["grants", "add", "--group", "secret-team", "web", "--role", "admin"])
        .ok();
    let bob = gateway::user(env, "bob@example.com");
    let key = session_key(&bob);
    let (s, v) = env
        .server
        .get_json("/api/grants?user=bob@example.com&group=secret-team", Some(&key))
        .unwrap();
    assert_eq!(s, 403, "bob read a group's grants he is not in: {v}");
    assert!(!v.to_string().contains("\"role\":\"admin\""), "{v}");
    // His own grants, through his own groups, are his to see.
    let (s, _) = env
        .server
        .get_json("/api/grants?user=bob@example.com", Some(&key))
        .unwrap();
    assert_eq!(s, 200);

    let exists = env.server.get_json(&format!("/api/users/{ADMIN}"), Some(&key)).unwrap();
    let missing = env
        .server
        .get_json("/api/users/nobody@example.com", Some(&key))
        .unwrap();
    assert_eq!(exists.0, 403, "{exists:?}");
    assert_eq!(
        missing.0, exists.0,
        "the answer tells whether an account exists: {missing:?} vs {exists:?}"
    );
    for path in ["/api/grants?user=", "/api/keys?user="] {
        let a = env.server.get_json(&format!("{path}{ADMIN}"), Some(&key)).unwrap().0;
        let b = env
            .server
            .get_json(&format!("{path}nobody@example.com"), Some(&key))
            .unwrap()
            .0;
        assert_eq!((a, b), (403, 403), "{path}");
    }
}
