//! Several server replicas on one PostgreSQL: no state lives only in one
//! replica's memory.

use std::thread;

use infra_testkit::{Cli, Postgres, Server, ServerOpts};

use super::common::{ADMIN, ADMIN_PW, bin, json, login};

const ROOT_KEY: &str = "q4Lk0aWmvC0J9w1m8b5yQm6v1fQ0Yl4F2k3v8p9s7aE=";

fn replica(db: &str) -> Server {
    replica_with(db, vec![], None)
}

fn replica_with(db: &str, extra_args: Vec<String>, port: Option<u16>) -> Server {
    Server::start(
        &bin(),
        ServerOpts {
            db_url: Some(db.to_owned()),
            extra_args,
            port,
            admin_email: Some(ADMIN.into()),
            admin_password: Some(ADMIN_PW.into()),
            env: vec![("INFRA_ROOT_KEY".into(), ROOT_KEY.into())],
            ..Default::default()
        },
    )
    .expect("start replica")
}

#[test]
fn replicas_share_everything_through_the_database() {
    let pg = Postgres::start().unwrap();
    let db = pg.create_database("infra").unwrap();
    // Both start at once: migrations and first-start set-up must not race.
    let (d1, d2) = (db.clone(), db.clone());
    let a = thread::spawn(move || replica(&d1));
    let b = thread::spawn(move || replica(&d2));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());

    // One CA for both, so one pin trusts every replica.
    let ca_a = std::fs::read_to_string(a.ca_path()).unwrap();
    assert_eq!(ca_a, std::fs::read_to_string(b.ca_path()).unwrap());

    let on_a = Cli::new(&bin()).unwrap();
    let on_b = Cli::new(&bin()).unwrap();
    login(&on_a, &a, ADMIN, ADMIN_PW).ok();
    login(&on_b, &b, ADMIN, ADMIN_PW).ok();
    let users = json(on_b.run(&["users", "list", "-o", "json"]).ok());
    assert_eq!(users.as_array().unwrap().len(), 1, "exactly one first admin");

    // A change on A is seen on B.
    on_a.run_stdin(
        &["users", "add", "alice@example.com", "--password-stdin"],
        "alice-password-1",
    )
    .ok();
    on_a.run(&["grants", "add", "alice@example.com", "prod", "--role", "view"])
        .ok();
    let grants = json(on_b.run(&["grants", "list", "--resource", "prod", "-o", "json"]).ok());
    assert_eq!(grants[0]["user"], "alice@example.com");

    // A key made on A works on B, and revoking it on A ends it on B.
    let key = on_a
        .run(&["keys", "add", "--name", "k1", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let with_key = |args: &[&str]| on_b.run_env(args, &[("INFRA_ACCESS_KEY", key.as_str())], None);
    with_key(&["info"]).ok();
    on_a.run(&["keys", "remove", "k1"]).ok();
    with_key(&["info"]).failed();

    // Rotation on A: B publishes the same keys.
    on_a.run(&["signing-keys", "rotate"]).ok();
    assert_eq!(
        a.get_json("/.well-known/jwks.json", None).unwrap().1,
        b.get_json("/.well-known/jwks.json", None).unwrap().1
    );

    // Both write to one audit chain, which verifies from either.
    on_b.run(&["groups", "add", "devs"]).ok();
    on_a.run(&["audit", "verify"]).ok();
    on_b.run(&["audit", "verify"]).ok();
}

#[test]
fn a_replica_with_another_root_key_refuses_to_start() {
    let pg = Postgres::start().unwrap();
    let db = pg.create_database("infra").unwrap();
    let _a = replica(&db);
    let err = Server::start(
        &bin(),
        ServerOpts {
            db_url: Some(db),
            ..Default::default()
        },
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("root key"), "{text}");
}

#[test]
fn a_connector_is_reachable_through_every_replica() {
    use infra_testkit::{Connector, Upstream, eventually};

    let pg = Postgres::start().unwrap();
    let db = pg.create_database("infra").unwrap();
    // One public URL (the token issuer) for both, as behind a load
    // balancer; each advertises its own address to connectors.
    let start = |port: u16| {
        let args = ["--public-url", "https://infra.example.test:4443", "--advertise-url"];
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(format!("https://localhost:{port}"));
        v
    };
    let (pa, pb) = (infra_testkit::free_port(), infra_testkit::free_port());
    let a = replica_with(&db, start(pa), Some(pa));
    let b = replica_with(&db, start(pb), Some(pb));
    let admin = Cli::new(&bin()).unwrap();
    login(&admin, &a, ADMIN, ADMIN_PW).ok();
    let up = Upstream::start().unwrap();
    let key = admin
        .run(&["keys", "add", "--connector", "--name", "dc1", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    // Configured with replica A only; it learns of B from A.
    let dests = [infra_testkit::HttpDest {
        name: "web".into(),
        url: up.url.clone(),
        upstream_token: None,
    }];
    let c = Connector::start(&bin(), &a, &key, "dc1", &dests).unwrap();
    admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let token = admin
        .run(&["tokens", "--destination", "web", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let ca = a.ca_path();
    let get = |port: u16| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
            ])
            .args(["--resolve", &format!("web.localhost:{port}:127.0.0.1")])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("https://web.localhost:{port}/echo"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually!(10, || if get(a.port) == "200" {
        Ok(())
    } else {
        Err(anyhow::anyhow!("not through A yet"))
    });
    eventually!(30, || match get(b.port).as_str() {
        "200" => Ok(()),
        other => Err(anyhow::anyhow!("through B: {other}\n{}", c.log())),
    });
}

/// Two reviewers approving one request at the same moment, on two
/// replicas, make one grant; a cancel racing an approval ends in exactly
/// one of the two, and the grants say the same.
#[test]
fn racing_reviews_and_cancels_across_replicas_decide_once() {
    let pg = Postgres::start().unwrap();
    let db = pg.create_database("infra").unwrap();
    let a = replica(&db);
    let b = replica(&db);
    let admin = Cli::new(&bin()).unwrap();
    login(&admin, &a, ADMIN, ADMIN_PW).ok();
    let on = |server: &Server, email: &str| {
        let c = Cli::new(&bin()).unwrap();
        login(&c, server, email, "user-password-1").ok();
        c
    };
    for (email, group) in [
        ("dev@example.com", "devs"),
        ("sre1@example.com", "sre"),
        ("sre2@example.com", "sre"),
    ] {
        admin
            .run_stdin(&["users", "add", email, "--password-stdin"], "user-password-1")
            .ok();
        admin.run(&["groups", "add", group]);
        admin.run(&["groups", "adduser", group, email]).ok();
    }
    admin
        .run(&[
            "access-policy",
            "add",
            "p",
            "--requesters",
            "devs",
            "--resource",
            "*",
            "--role",
            "view",
            "--max",
            "1h",
            "--approvers",
            "sre",
        ])
        .ok();
    let dev_a = on(&a, "dev@example.com");
    let dev_b = on(&b, "dev@example.com");
    let sre1 = on(&a, "sre1@example.com");
    let sre2 = on(&b, "sre2@example.com");
    let ask = |dest: &str| -> String {
        let v = json(
            dev_a
                .run(&[
                    "request", "add", dest, "--role", "view", "--for", "10m", "--reason", "race", "-o", "json",
                ])
                .ok(),
        );
        v[0]["id"].as_str().unwrap().to_owned()
    };
    let grants_on = |dest: &str| {
        json(admin.run(&["grants", "list", "--resource", dest, "-o", "json"]).ok())
            .as_array()
            .map_or(0, Vec::len)
    };
    let state_of = |id: &str| {
        let v = json(admin.run(&["request", "show", id, "-o", "json"]).ok());
        v[0]["state"].as_str().unwrap().to_owned()
    };
    for round in 0..4 {
        // Two approvals at once.
        let dest = format!("race{round}");
        let id = ask(&dest);
        let (x, y) = thread::scope(|s| {
            let x = s.spawn(|| sre1.run(&["request", "approve", &id]).status);
            let y = s.spawn(|| sre2.run(&["request", "approve", &id]).status);
            (x.join().unwrap(), y.join().unwrap())
        });
        assert_eq!(
            u8::from(x == 0) + u8::from(y == 0),
            1,
            "exactly one approval decides: {x} {y}"
        );
        assert_eq!(grants_on(&dest), 1, "one grant");
        assert_eq!(state_of(&id), "approved");

        // A cancel racing an approval.
        let dest = format!("cancel{round}");
        let id = ask(&dest);
        let (cancel, approve) = thread::scope(|s| {
            let c = s.spawn(|| dev_b.run(&["request", "cancel", &id]).status);
            let p = s.spawn(|| sre1.run(&["request", "approve", &id]).status);
            (c.join().unwrap(), p.join().unwrap())
        });
        assert_eq!(u8::from(cancel == 0) + u8::from(approve == 0), 1, "{cancel} {approve}");
        let state = state_of(&id);
        if cancel == 0 {
            assert_eq!(
                (state.as_str(), grants_on(&dest)),
                ("cancelled", 0),
                "a cancelled request granted"
            );
        } else {
            assert_eq!((state.as_str(), grants_on(&dest)), ("approved", 1));
        }
    }
}
