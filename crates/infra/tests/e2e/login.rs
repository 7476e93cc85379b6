//! Attacks on login: brute force, user enumeration.

use super::common::{Backend, json, start};

fn attempt(env: &super::common::Env, email: &str, password: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    env.server
        .send_json("POST", "/api/login", None, body.as_bytes(), "application/json")
        .unwrap()
}

#[test]
fn brute_force_is_throttled_and_audited() {
    let env = start(Backend::Sqlite);
    env.admin
        .run_stdin(
            &["users", "add", "carol@example.com", "--password-stdin"],
            "carol-password-1",
        )
        .ok();

    let statuses: Vec<u16> = (0..20)
        .map(|i| attempt(&env, "carol@example.com", &format!("guess-{i}")).0)
        .collect();
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "20 wrong passwords must be throttled: {statuses:?}"
    );
    // While locked, even the right password is refused: guessing cannot
    // continue at speed.
    let (s, body) = attempt(&env, "carol@example.com", "carol-password-1");
    assert_eq!(s, 429, "{body}");
    assert!(body["message"].as_str().unwrap().contains("try again in"));

    // The audit log shows every attempt, refused ones included.
    let events = json(
        env.admin
            .run(&[
                "audit",
                "list",
                "--user",
                "carol@example.com",
                "--action",
                "login",
                "-o",
                "json",
            ])
            .ok(),
    );
    let failures = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "failure")
        .count();
    assert!(failures >= 21, "{failures} failures audited");
}

#[test]
fn unknown_user_and_wrong_password_look_the_same() {
    let env = start(Backend::Sqlite);
    env.admin
        .run_stdin(
            &["users", "add", "dave@example.com", "--password-stdin"],
            "dave-password-1",
        )
        .ok();
    let known = attempt(&env, "dave@example.com", "wrong-password");
    let unknown = attempt(&env, "nobody@example.com", "wrong-password");
    assert_eq!(known, unknown);
    assert_eq!(known.0, 401);
    // Locking is per account name whether or not the account exists, so
    // the lock does not reveal existence either.
    let a: Vec<u16> = (0..8)
        .map(|_| attempt(&env, "dave@example.com", "x-wrong-1").0)
        .collect();
    let b: Vec<u16> = (0..8)
        .map(|_| attempt(&env, "nobody@example.com", "x-wrong-1").0)
        .collect();
    assert_eq!(a, b);
}

#[test]
fn must_change_one_time_password_before_anything_else() {
    let env = start(Backend::Sqlite);
    let otp = env
        .admin
        .run(&["users", "add", "erin@example.com"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let body = serde_json::json!({ "email": "erin@example.com", "password": otp }).to_string();
    let (s, login) = env
        .server
        .send_json("POST", "/api/login", None, body.as_bytes(), "application/json")
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(login["passwordUpdateRequired"], true);
    let key = login["accessKey"].as_str().unwrap();
    let (s, body) = env
        .server
        .send_json("POST", "/api/tokens", Some(key), b"{}", "application/json")
        .unwrap();
    assert_eq!(s, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("change your password"));
}
