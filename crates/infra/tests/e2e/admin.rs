//! Users, groups, grants and keys through the CLI, on both backends; what a
//! `view` user may and may not do; the last admin; data across restarts.

use infra_testkit::Cli;

use super::common::{ADMIN, Backend, bin, json, login, start};

fn scenario(backend: Backend) {
    let mut env = start(backend);
    let a = &env.admin;

    // Users: one with a chosen password, one with a one-time password.
    a.run_stdin(
        &["users", "add", "alice@example.com", "--password-stdin"],
        "alice-password-1",
    )
    .ok();
    let bob_otp = a
        .run(&["users", "add", "Bob@Example.com"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(bob_otp.len(), 16, "one-time password printed alone on stdout");
    let dup = a.run(&["users", "add", "alice@example.com"]);
    dup.failed();
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
    let users = json(a.run(&["users", "list", "-o", "json"]).ok());
    let emails: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, [ADMIN, "alice@example.com", "bob@example.com"]);

    // Groups and membership.
    a.run(&["groups", "add", "devs"]).ok();
    a.run(&["groups", "adduser", "devs", "alice@example.com"]).ok();
    let groups = json(a.run(&["groups", "list", "-o", "json"]).ok());
    assert_eq!(groups[0]["members"], serde_json::json!(["alice@example.com"]));

    // Grants, additive, to users and groups.
    a.run(&["grants", "add", "alice@example.com", "prod", "--role", "view"])
        .ok();
    a.run(&["grants", "add", "--group", "devs", "prod.payments", "--role", "edit"])
        .ok();
    a.run(&["grants", "add", "bob@example.com", "infra", "--role", "view"])
        .ok();
    a.run(&["grants", "add", "alice@example.com", "infra", "--role", "owner"])
        .failed();
    let grants = json(a.run(&["grants", "list", "-o", "json"]).ok());
    assert_eq!(grants.as_array().unwrap().len(), 4);
    let alice = json(
        a.run(&["grants", "list", "--user", "alice@example.com", "-o", "json"])
            .ok(),
    );
    let res: Vec<&str> = alice
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["resource"].as_str().unwrap())
        .collect();
    assert_eq!(res, ["prod", "prod.payments"], "own and group grants");

    // Keys: created, listed, used, revoked.
    let key = a
        .run(&[
            "keys",
            "add",
            "--user",
            "bob@example.com",
            "--name",
            "bob-ci",
            "--quiet",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let keys = json(a.run(&["keys", "list", "-o", "json"]).ok());
    assert!(keys.as_array().unwrap().iter().any(|k| k["name"] == "bob-ci"));
    let other = Cli::new(&bin()).unwrap();
    login(&other, &env.server, ADMIN, super::common::ADMIN_PW).ok();
    let with_key = |args: &[&str]| other.run_env(args, &[("INFRA_ACCESS_KEY", key.as_str())], None);
    assert!(with_key(&["info"]).ok().stdout.contains("bob@example.com"));
    a.run(&["keys", "remove", "bob-ci"]).ok();
    let revoked = with_key(&["info"]);
    revoked.failed();
    assert!(
        revoked.stderr.contains("invalid, expired or revoked"),
        "{}",
        revoked.stderr
    );

    // Bob logs in with the one-time password and must change it.
    let bob = Cli::new(&bin()).unwrap();
    let ca = env.server.ca_path();
    let addr = format!("127.0.0.1:{}", env.server.port);
    let ca = ca.to_str().unwrap();
    bob.run_env(
        &["login", &addr, "--user", "bob@example.com", "--tls-ca", ca],
        &[("INFRA_PASSWORD", &bob_otp)],
        None,
    )
    .failed();
    bob.run_env(
        &["login", &addr, "--user", "bob@example.com", "--tls-ca", ca],
        &[("INFRA_PASSWORD", &bob_otp), ("INFRA_NEW_PASSWORD", "bob-password-2")],
        None,
    )
    .ok();
    login(&bob, &env.server, "bob@example.com", &bob_otp).failed();
    login(&bob, &env.server, "bob@example.com", "bob-password-2").ok();

    // A view user lists but cannot change, with a 403 that says why.
    bob.run(&["users", "list"]).ok();
    bob.run(&["grants", "list"]).ok();
    for args in [
        &["users", "add", "eve@example.com"][..],
        &["grants", "add", "bob@example.com", "infra", "--role", "admin"],
        &["groups", "add", "x"],
        &["keys", "add", "--connector"],
        &["users", "remove", "alice@example.com"],
    ] {
        let out = bob.run(args);
        out.failed();
        assert!(
            out.stderr.contains("you need role admin on infra"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let denials = json(a.run(&["audit", "list", "--action", "authz.deny", "-o", "json"]).ok());
    assert_eq!(denials.as_array().unwrap().len(), 5, "every denial is audited");
    // Alice has no Infra role: she cannot even list, but sees her own grants.
    let alice_cli = Cli::new(&bin()).unwrap();
    login(&alice_cli, &env.server, "alice@example.com", "alice-password-1").ok();
    assert!(
        alice_cli
            .run(&["users", "list"])
            .failed()
            .stderr
            .contains("you need role view")
    );
    assert!(alice_cli.run(&["list"]).ok().stdout.contains("prod.payments"));

    // The last admin stays.
    let out = a.run(&["grants", "remove", ADMIN, "infra", "--role", "admin"]);
    out.failed();
    assert!(out.stderr.contains("without an admin"), "{}", out.stderr);
    a.run(&["users", "remove", ADMIN]).failed();
    // With another admin (through a group) the first may go.
    a.run(&["grants", "add", "--group", "devs", "infra", "--role", "admin"])
        .ok();
    a.run(&["grants", "remove", ADMIN, "infra", "--role", "admin"]).ok();
    assert!(
        a.run(&["users", "add", "x@example.com"])
            .failed()
            .stderr
            .contains("you need role admin")
    );
    // Alice is now the only admin, through devs: removing her from it is refused.
    assert!(
        alice_cli
            .run(&["groups", "removeuser", "devs", "alice@example.com"])
            .failed()
            .stderr
            .contains("without an admin")
    );
    alice_cli
        .run(&["grants", "add", ADMIN, "infra", "--role", "admin"])
        .ok();

    // Removals take exactly what they name.
    a.run(&["grants", "remove", "alice@example.com", "prod", "--role", "view"])
        .ok();
    let left = json(
        a.run(&["grants", "list", "--user", "alice@example.com", "-o", "json"])
            .ok(),
    );
    let res: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["resource"].as_str().unwrap())
        .collect();
    assert_eq!(res, ["infra", "prod.payments"]);

    // Everything survives a restart, sessions included.
    env.server.restart().expect("restart");
    let a = &env.admin;
    let users = json(a.run(&["users", "list", "-o", "json"]).ok());
    assert_eq!(users.as_array().unwrap().len(), 3);
    let grants = json(a.run(&["grants", "list", "-o", "json"]).ok());
    assert_eq!(grants.as_array().unwrap().len(), 4);
    a.run(&["audit", "verify"]).ok();

    // Removing a user removes their grants and sessions.
    a.run(&["groups", "removeuser", "devs", "alice@example.com"]).ok();
    a.run(&["users", "remove", "alice@example.com"]).ok();
    alice_cli.run(&["info"]).failed();
    a.run(&["groups", "remove", "devs"]).ok();
    let grants = json(a.run(&["grants", "list", "-o", "json"]).ok());
    assert_eq!(grants.as_array().unwrap().len(), 2, "{grants}");
}

#[test]
fn admin_crud_sqlite() {
    scenario(Backend::Sqlite);
}

#[test]
fn admin_crud_postgres() {
    scenario(Backend::Postgres);
}
