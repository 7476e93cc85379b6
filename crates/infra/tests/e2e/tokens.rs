//! Tokens verify with an independent JWT library (PyJWT) against the
//! published JWKS; forgeries fail; rotation keeps old tokens valid.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use infra_auth::jwt::{Jwks, Verifier, VerifyError};
use infra_testkit::Cli;

use super::common::{Backend, Env, bin, login, start};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/jwt_verify.py");

fn issuer(env: &Env) -> String {
    format!("https://localhost:{}", env.server.port)
}

/// Runs the PyJWT verifier; Ok(claims) or Err(reason). Exit 2 (could not
/// check at all) fails the test rather than counting as a rejection.
fn pyjwt(env: &Env, token: &str, audience: &str) -> Result<serde_json::Value, String> {
    pyjwt_leeway(env, token, audience, 0)
}

fn pyjwt_leeway(env: &Env, token: &str, audience: &str, leeway: u32) -> Result<serde_json::Value, String> {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(["--leeway", &leeway.to_string()])
        .args(["--jwks-url", &format!("{}/.well-known/jwks.json", env.server.url)])
        .args(["--ca", env.server.ca_path().to_str().unwrap()])
        .args(["--issuer", &issuer(env), "--audience", audience, token])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    match out.status.code() {
        Some(0) => Ok(serde_json::from_str(&stdout).expect("claims JSON")),
        Some(1) => Err(stdout),
        _ => panic!(
            "PyJWT check could not run: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn jwks(env: &Env) -> Jwks {
    let (s, v) = env.server.get_json("/.well-known/jwks.json", None).unwrap();
    assert_eq!(s, 200);
    serde_json::from_value(v).unwrap()
}

fn header_kid(token: &str) -> String {
    let h = token.split('.').next().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[test]
fn tokens_verify_independently_and_forgeries_fail() {
    let env = start(Backend::Sqlite);
    let a = &env.admin;
    a.run_stdin(
        &["users", "add", "alice@example.com", "--password-stdin"],
        "alice-password-1",
    )
    .ok();
    a.run(&["groups", "add", "devs"]).ok();
    a.run(&["groups", "adduser", "devs", "alice@example.com"]).ok();
    a.run(&["grants", "add", "alice@example.com", "prod.payments", "--role", "edit"])
        .ok();
    let alice = Cli::new(&bin()).unwrap();
    login(&alice, &env.server, "alice@example.com", "alice-password-1").ok();

    // Discovery points at the JWKS, as standard consumers expect.
    let (_, disc) = env.server.get_json("/.well-known/openid-configuration", None).unwrap();
    assert_eq!(disc["issuer"], issuer(&env));
    assert_eq!(disc["jwks_uri"], format!("{}/.well-known/jwks.json", issuer(&env)));

    let token = alice
        .run(&["tokens", "--destination", "prod", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let claims = pyjwt(&env, &token, "prod").expect("PyJWT accepts the token");
    assert_eq!(claims["name"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["devs"]));
    for c in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"] {
        assert!(claims.get(c).is_some(), "claim {c}");
    }
    // The exec-credential form for kubectl.
    let exec: serde_json::Value =
        serde_json::from_str(&alice.run(&["tokens", "--destination", "prod"]).ok().stdout).unwrap();
    assert_eq!(exec["kind"], "ExecCredential");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");

    // Wrong audience: a token for prod does not open staging.
    assert!(pyjwt(&env, &token, "staging").unwrap_err().contains("REJECTED"));
    let verifier = Verifier::new(&jwks(&env), &issuer(&env));
    assert!(verifier.verify(&token, "prod").is_ok());
    assert_eq!(verifier.verify(&token, "staging"), Err(VerifyError::Audience));

    // Tampered payload.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["name"] = "admin@example.com".into();
    let forged_payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert!(pyjwt(&env, &tampered, "prod").is_err());
    assert_eq!(verifier.verify(&tampered, "prod"), Err(VerifyError::Signature));
    // alg: none with the real kid.
    let none_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        header_kid(&token)
    ));
    let none = format!("{none_header}.{}.", parts[1]);
    assert!(pyjwt(&env, &none, "prod").is_err());
    assert!(verifier.verify(&none, "prod").is_err());
    // Signed by a key that is not the server's.
    let rogue = infra_auth::jwt::SigningKey::generate().unwrap();
    let mut claims_struct: infra_auth::jwt::Claims = serde_json::from_value(claims.clone()).unwrap();
    claims_struct.groups = vec!["admins".into()];
    let rogue_token = rogue.sign(&claims_struct).unwrap();
    assert!(pyjwt(&env, &rogue_token, "prod").is_err());
    assert_eq!(verifier.verify(&rogue_token, "prod"), Err(VerifyError::UnknownKey));

    // No grant, no token.
    let out = alice.run(&["tokens", "--destination", "staging", "--quiet"]);
    assert!(out.failed().stderr.contains("no grant on staging"), "{}", out.stderr);

    // Rotation: new tokens carry the new kid; the old token still verifies.
    a.run(&["signing-keys", "rotate"]).ok();
    let fresh = alice
        .run(&["tokens", "--destination", "prod", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_ne!(header_kid(&fresh), header_kid(&token));
    assert_eq!(jwks(&env).keys.len(), 2);
    pyjwt(&env, &token, "prod").expect("old token still verifies after rotation");
    pyjwt(&env, &fresh, "prod").expect("new token verifies");
    let keys = super::common::json(a.run(&["signing-keys", "list", "-o", "json"]).ok());
    assert_eq!(
        keys.as_array().unwrap().iter().filter(|k| k["active"] == true).count(),
        1
    );

    // Issuance is audited.
    let issued = super::common::json(a.run(&["audit", "list", "--action", "token.issue", "-o", "json"]).ok());
    assert!(issued.as_array().unwrap().len() >= 4);
}

#[test]
fn old_keys_leave_the_jwks_once_their_tokens_expired() {
    // With 1 s tokens, a key retired before the last rotation is kept only
    // for token lifetime + skew; rotating prunes it from the store.
    let env = super::common::start_with(Backend::Sqlite, vec!["--token-ttl".into(), "1s".into()]);
    env.admin.run(&["signing-keys", "rotate"]).ok();
    assert_eq!(jwks(&env).keys.len(), 2);
}

#[test]
fn expired_tokens_and_idle_keys_are_refused() {
    let env = super::common::start_with(Backend::Sqlite, vec!["--token-ttl".into(), "1s".into()]);
    // A token for Infra's own audience (no destination), living 1 s.
    let token = env.admin.run(&["tokens", "--quiet"]).ok().stdout.trim().to_owned();
    // Python may take longer to start than the token lives: check it is
    // well formed and signed with leeway, then that it expires without.
    pyjwt_leeway(&env, &token, &issuer(&env), 60).expect("fresh token verifies");
    infra_testkit::eventually!(15, || match pyjwt(&env, &token, &issuer(&env)) {
        Err(why) if why.contains("xpired") => Ok(()),
        other => Err(anyhow::anyhow!("not rejected as expired yet: {other:?}")),
    });

    // A key with a 2 s inactivity timeout works while used, then ends.
    let key = env
        .admin
        .run(&["keys", "add", "--inactivity-timeout", "2s", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let cli = Cli::new(&bin()).unwrap();
    login(&cli, &env.server, super::common::ADMIN, super::common::ADMIN_PW).ok();
    let info = || cli.run_env(&["info"], &[("INFRA_ACCESS_KEY", key.as_str())], None);
    // In use every half second for 4 s: each use extends it.
    for _ in 0..8 {
        info().ok();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Then left alone past its timeout: refused.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(info().failed().stderr.contains("invalid, expired or revoked"));
}
