//! Bad input gets a 4xx JSON error naming the problem and changes nothing.

use super::common::{Backend, session_key, start};

#[test]
fn bad_requests_are_refused_cleanly() {
    let env = start(Backend::Sqlite);
    let key = session_key(&env.admin);
    let s = &env.server;
    let users_before = s.get_json("/api/users", Some(&key)).unwrap().1["totalCount"].clone();
    let grants_before = s.get_json("/api/grants", Some(&key)).unwrap().1["totalCount"].clone();

    let big = format!(r#"{{"email":"a@b.co","password":"{}"}}"#, "x".repeat(200_000));
    let cases: Vec<(&str, &str, String, &str, &str)> = vec![
        (
            "POST",
            "/api/users",
            r#"{"email": "a@b.co""#.into(),
            "application/json",
            "malformed JSON",
        ),
        (
            "POST",
            "/api/users",
            "not json at all".into(),
            "application/json",
            "malformed JSON",
        ),
        ("POST", "/api/users", big, "application/json", "too large"),
        (
            "POST",
            "/api/users",
            r#"{"email":"a@b.co","isAdmin":true}"#.into(),
            "application/json",
            "unknown field `isAdmin`",
        ),
        (
            "POST",
            "/api/users",
            r#"{"email":"not-an-email"}"#.into(),
            "application/json",
            "invalid email",
        ),
        (
            "POST",
            "/api/users",
            r#"{"email":"a@b.co","password":"short"}"#.into(),
            "application/json",
            "at least 8",
        ),
        (
            "POST",
            "/api/users",
            r#"{"email":"a@b.co"}"#.into(),
            "text/plain",
            "Content-Type",
        ),
        (
            "POST",
            "/api/users",
            r#"{"email":42}"#.into(),
            "application/json",
            "invalid type",
        ),
        (
            "POST",
            "/api/grants",
            r#"{"user":"admin@example.com","resource":"prod","role":"view","expiresIn":"5 parsecs"}"#.into(),
            "application/json",
            "invalid duration",
        ),
        (
            "POST",
            "/api/grants",
            r#"{"user":"admin@example.com","resource":"Prod!","role":"view"}"#.into(),
            "application/json",
            "invalid resource",
        ),
        (
            "POST",
            "/api/grants",
            r#"{"user":"admin@example.com","resource":"prod","role":"a b"}"#.into(),
            "application/json",
            "invalid role",
        ),
        (
            "POST",
            "/api/keys",
            r#"{"expiresIn":"-1h"}"#.into(),
            "application/json",
            "invalid duration",
        ),
        (
            "POST",
            "/api/keys",
            r#"{"inactivityTimeout":"0s"}"#.into(),
            "application/json",
            "invalid duration",
        ),
        (
            "POST",
            "/api/groups",
            r#"{"name":""}"#.into(),
            "application/json",
            "invalid group name",
        ),
        (
            "GET",
            "/api/grants?bogus=1",
            String::new(),
            "application/json",
            "unknown field `bogus`",
        ),
        (
            "GET",
            "/api/users?limit=0",
            String::new(),
            "application/json",
            "limit must be",
        ),
        (
            "GET",
            "/api/users?page=abc",
            String::new(),
            "application/json",
            "invalid query",
        ),
        (
            "GET",
            "/api/audit?since=yesterday",
            String::new(),
            "application/json",
            "invalid since",
        ),
        (
            "GET",
            "/api/nope",
            String::new(),
            "application/json",
            "no such API endpoint",
        ),
        (
            "DELETE",
            "/api/users",
            String::new(),
            "application/json",
            "method not allowed",
        ),
    ];
    for (method, path, body, ctype, want) in cases {
        let (status, resp) = match s.send_json(method, path, Some(&key), body.as_bytes(), ctype) {
            Ok(r) => r,
            // An oversized body, too, gets its answer (a 413), never a reset.
            Err(e) => panic!("{method} {path}: {e:#}"),
        };
        assert!((400..500).contains(&status), "{method} {path}: status {status} {resp}");
        assert_eq!(resp["code"], status, "{method} {path}: {resp}");
        let msg = resp["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{method} {path}: want {want:?} in {msg:?}");
    }

    // Healthy, and nothing changed.
    assert_eq!(s.get_json("/healthz", None).unwrap().0, 200);
    assert_eq!(
        s.get_json("/api/users", Some(&key)).unwrap().1["totalCount"],
        users_before
    );
    assert_eq!(
        s.get_json("/api/grants", Some(&key)).unwrap().1["totalCount"],
        grants_before
    );
    env.admin.run(&["audit", "verify"]).ok();

    // Garbage credentials are 401s, not 500s.
    for bad in ["", "x", "a.b", "abcdefghijkl.abcdefghijklmnopqrstuvwx", "Basic abc"] {
        let (status, _) = s.get_json("/api/users", Some(bad)).unwrap();
        assert_eq!(status, 401, "{bad:?}");
    }
}
