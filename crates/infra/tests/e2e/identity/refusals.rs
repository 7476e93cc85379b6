//! What the login API refuses, driven without the CLI: emails outside the
//! allowed domains, a wrong state, replayed codes, bad ID tokens, and emails
//! the provider does not vouch for.

use std::process::Command;

use infra_testkit::Cli;

use super::{Idp, SECRET, add_provider, audit, provider_login, setup};
use crate::e2e::common::{bin, json};

/// Starts a login at the API and drives the provider's form: the code and
/// state the provider redirects with.
fn code_and_state(h: &Idp, user: &str, pw: &str) -> (String, String) {
    let body = serde_json::json!({"redirectUri": "http://127.0.0.1:9/callback"});
    let (s, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/providers/idp/authorize",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let out = h.idp.drive_code(v["url"].as_str().unwrap(), user, pw);
    assert_eq!(out.status, 0, "{out:?}");
    let u = reqwest::Url::parse(out.stdout.trim()).unwrap();
    let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
    (q["code"].clone(), q["state"].clone())
}

fn api_login(h: &Idp, code: &str, state: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"provider": "idp", "code": code, "state": state,
        "redirectUri": "http://127.0.0.1:9/callback"});
    h.env
        .server
        .send_json(
            "POST",
            "/api/login",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap()
}

#[test]
fn allowed_domains_limit_who_is_created() {
    let h = setup();
    h.env.admin.run(&["providers", "remove", "idp"]).ok();
    add_provider(&h.env, &h.idp.issuer, &["--allowed-domains", "example.org"]);
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not in a domain allowed"),
        "{v}"
    );
    let users = json(h.env.admin.run(&["users", "list", "-o", "json"]).ok());
    assert!(!users.to_string().contains("alice@example.com"));
}

#[test]
fn wrong_state_replayed_code_and_bad_id_tokens_are_refused() {
    let h = setup();
    // A redirect with another state: the CLI refuses it.
    let cli = Cli::new(&bin()).unwrap();
    let out = provider_login(&h, &cli, "alice", "alice-pw", "--state-override forged");
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("state is not the one this login started with"),
        "{out:?}"
    );
    // ... and so does the server, for a state it never issued.
    let (code, _) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, "never-issued");
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("state is unknown"), "{v}");

    // A good login works once; the same state again is refused; the same
    // code with a fresh state is refused by the provider.
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 200, "{v}");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    let (_, fresh) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &fresh);
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("invalid_grant"), "{v}");

    // The provider misbehaves: each bad ID token is refused, saying why.
    for (tamper, why) in [
        (serde_json::json!({"nonce": "wrong"}), "nonce does not match"),
        (
            serde_json::json!({"iss": "http://evil.example"}),
            "issued by \"http://evil.example\"",
        ),
        (serde_json::json!({"aud": "someone-else"}), "audience"),
        (serde_json::json!({"expOffset": -120}), "expired"),
        (serde_json::json!({"sign": "other-key"}), "signature does not verify"),
    ] {
        let (code, state) = code_and_state(&h, "alice", "alice-pw");
        h.idp.tamper(serde_json::json!({ "idToken": tamper })).unwrap();
        let (s, v) = api_login(&h, &code, &state);
        assert_eq!(s, 401, "{tamper}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("ID token refused") && m.contains(why), "{tamper}: {m}");
    }
    let failures = audit(&h.env, "login");
    for why in ["nonce", "expired", "unknown or reused state"] {
        assert!(failures.contains(why), "{why}: {failures}");
    }

    // The browser flow takes a callback only from the browser that started
    // it (login CSRF: a victim sent the attacker's callback link).
    let ca = h.env.server.ca_path();
    let start = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{}/oidc/start/idp", h.env.server.url))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&start.stdout).to_string();
    assert!(head.contains("infra_oidc_state="), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let st = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cb = Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{}/oidc/callback?code=stolen&state={st}", h.env.server.url))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&cb.stdout);
    assert!(
        body.contains("not started in this browser") && body.ends_with("401"),
        "{body}"
    );

    // Wrong password at the provider: its form refuses (drive.mjs exit 3).
    let body = serde_json::json!({"redirectUri": "http://127.0.0.1:9/callback"});
    let (_, v) = h
        .env
        .server
        .send_json(
            "POST",
            "/api/providers/idp/authorize",
            None,
            body.to_string().as_bytes(),
            "application/json",
        )
        .unwrap();
    let out = h.idp.drive_code(v["url"].as_str().unwrap(), "alice", "wrong");
    assert_eq!(out.status, 3, "{out:?}");

    // An issuer that differs from what its discovery says: refused when added.
    let wrong = h.idp.issuer.replace("127.0.0.1", "localhost");
    let out = h.env.admin.run_env(
        &["providers", "add", "idp2", "--issuer", &wrong, "--client-id", "infra"],
        &[("INFRA_PROVIDER_CLIENT_SECRET", SECRET)],
        None,
    );
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("must match exactly"), "{out:?}");
}

#[test]
fn an_unverified_email_never_takes_over_an_account() {
    let h = setup();
    // The provider does not vouch for mallory's email (admin@example.com).
    let (code, state) = code_and_state(&h, "mallory", "mallory-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 401, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("does not mark admin@example.com as verified"),
        "{v}"
    );
    // Even where unverified emails are accepted, the existing admin account
    // cannot be had through one.
    h.env.admin.run(&["providers", "remove", "idp"]).ok();
    add_provider(&h.env, &h.idp.issuer, &["--allow-unverified-email"]);
    let (code, state) = code_and_state(&h, "mallory", "mallory-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("cannot be taken over"), "{v}");
    // A verified email links once; afterwards the login follows the
    // provider's subject.
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    assert_eq!(api_login(&h, &code, &state).0, 200);
    h.idp
        .put_user("u-alice", serde_json::json!({"email": "alice.new@example.com"}))
        .unwrap();
    let (code, state) = code_and_state(&h, "alice", "alice-pw");
    let (s, v) = api_login(&h, &code, &state);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["email"], "alice@example.com");
}
