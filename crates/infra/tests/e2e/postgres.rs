//! PostgreSQL through Infra: the real psql, through `infra psql` / `infra
//! proxy`, the gateway, the tunnel and a connector, to a real PostgreSQL
//! that requires passwords. The database is the judge of privileges: each
//! user logs in as a login role of their own holding only the granted roles.

use std::time::{Duration, Instant};

use infra_testkit::{Cli, Connector, Postgres, eventually};

use super::common::{Backend, Env, bin, start};
use super::gateway::{connector_key, user};

const ADMIN_PW: &str = "pg-admin-password";

struct Db {
    pg: Postgres,
    env: Env,
    connector: Connector,
    _dir: tempfile::TempDir,
}

fn setup() -> Db {
    let pg = Postgres::start_with_password(ADMIN_PW).expect("start PostgreSQL");
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one'); \
         CREATE ROLE app_read NOLOGIN; GRANT SELECT ON items TO app_read; \
         CREATE ROLE app_write NOLOGIN; GRANT SELECT, INSERT ON items TO app_write;",
    )
    .unwrap();
    let env = start(Backend::Sqlite);
    let key = connector_key(&env, "dbc");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg-admin");
    std::fs::write(&pw, ADMIN_PW).unwrap();
    let extra = format!(
        "  - name: db\n    kind: postgres\n    url: postgres://127.0.0.1:{}/app\n    adminUser: postgres\n    adminPasswordFile: {}\n",
        pg.port(),
        pw.display()
    );
    let connector = Connector::start_with(&bin(), &env.server, &key, "dbc", &[], &extra).unwrap();
    Db {
        pg,
        env,
        connector,
        _dir: dir,
    }
}

/// `infra psql db -- -c SQL` as the user of `cli`, verbose errors (with SQLSTATE).
fn psql(cli: &Cli, sql: &str) -> infra_testkit::Output {
    cli.run(&[
        "psql",
        "db",
        "--",
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
        "-c",
        sql,
    ])
}

#[test]
fn psql_as_yourself_with_exactly_the_granted_role() {
    let db = setup();
    let alice = user(&db.env, "alice@example.com");
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "app_read"])
        .ok();

    // Who the database sees: alice, not the connector's admin.
    let out = eventually!(10, || {
        let out = psql(&alice, "select current_user || '|' || session_user");
        anyhow::ensure!(out.status == 0, "{out:?}\n{}", db.connector.log());
        Ok(out)
    });
    assert_eq!(out.stdout.trim(), "alice@example.com|alice@example.com");
    let out = psql(&alice, "select name from items where id = 1");
    assert_eq!(out.stdout.trim(), "one", "{out:?}");

    // The granted role's privileges, no more: SQLSTATE 42501.
    let out = psql(&alice, "insert into items values (2, 'two')");
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("42501"), "{out:?}");
    // No way back to a more powerful identity.
    for escape in [
        "RESET SESSION AUTHORIZATION; insert into items values (3, 'x')",
        "SET SESSION AUTHORIZATION DEFAULT; insert into items values (3, 'x')",
        "SET SESSION AUTHORIZATION postgres",
        "SET ROLE postgres",
        "SET ROLE NONE; insert into items values (3, 'x')",
        "DO $$ BEGIN EXECUTE 'SET ROLE postgres'; END $$",
        "SET ROLE app_write",
        "ALTER ROLE \"alice@example.com\" SUPERUSER",
        "CREATE ROLE sneaky SUPERUSER",
    ] {
        let out = psql(&alice, escape);
        assert_ne!(out.status, 0, "{escape} succeeded: {out:?}");
        assert!(
            out.stderr.contains("42501") || out.stderr.contains("permission denied"),
            "{escape}: {out:?}"
        );
    }
    assert_eq!(db.pg.psql("app", "select count(*) from items").unwrap(), "1");

    // Extended protocol and transactions (pgbench -M prepared style).
    let out = psql(
        &alice,
        "BEGIN; PREPARE q(int) AS SELECT name FROM items WHERE id = $1; EXECUTE q(1); COMMIT;",
    );
    assert_eq!(out.stdout.trim(), "one", "{out:?}");

    // No grant: a clear refusal from Infra.
    let bob = user(&db.env, "bob@example.com");
    let out = psql(&bob, "select 1");
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("no grant on db"), "{out:?}");

    // Every query is in the audit log, attributed to alice.
    let events = super::common::json(
        &db.env
            .admin
            .run(&["audit", "list", "--destination", "db", "-o", "json"]),
    );
    let alice_events: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "alice@example.com")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    for want in [
        "query=\"select name from items where id = 1\"",
        "query=\"insert into items values (2, 'two')\"",
        "session start database=app login_role=alice@example.com granted=app_read",
    ] {
        assert!(
            alice_events.iter().any(|d| d.contains(want)),
            "{want} not in {alice_events:#?}"
        );
    }
    assert!(
        alice_events
            .iter()
            .any(|d| d.contains("insert into items values (2") && d.contains("error=\"42501")),
        "{alice_events:#?}"
    );
}

#[test]
fn revoking_ends_the_open_session() {
    let db = setup();
    let alice = user(&db.env, "alice@example.com");
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "app_read"])
        .ok();
    eventually!(10, || {
        let out = psql(&alice, "select 1");
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    // A session busy for 30 s.
    let home = alice.home().to_owned();
    let long = std::thread::spawn(move || {
        let started = Instant::now();
        let out = std::process::Command::new(bin())
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .args(["psql", "db", "--", "-X", "-c", "select pg_sleep(30)"])
            .output()
            .unwrap();
        (started.elapsed(), out)
    });
    eventually!(10, || {
        let n = db.pg.psql(
            "app",
            "select count(*) from pg_stat_activity where usename = 'alice@example.com' and query like '%pg_sleep%'",
        )?;
        anyhow::ensure!(n == "1", "not running yet");
        Ok(())
    });
    let grants =
        super::common::json(
            &db.env
                .admin
                .run(&["grants", "list", "--user", "alice@example.com", "-o", "json"]),
        );
    let id = grants[0]["id"].as_str().unwrap().to_owned();
    let revoked = Instant::now();
    db.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    let (_, out) = long.join().unwrap();
    let took = revoked.elapsed();
    eprintln!("session ended {took:?} after the grant was removed");
    assert!(took < Duration::from_secs(10), "the session outlived its grant");
    assert_ne!(out.status.code(), Some(0));
    // The login role may no longer log in, and new sessions are refused.
    let login = db
        .pg
        .psql(
            "app",
            "select rolcanlogin from pg_roles where rolname = 'alice@example.com'",
        )
        .unwrap();
    assert_eq!(login, "f");
    let out = psql(&alice, "select 1");
    assert!(out.stderr.contains("no grant on db"), "{out:?}");
}
