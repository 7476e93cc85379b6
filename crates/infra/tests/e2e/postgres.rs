//! PostgreSQL through Infra: the real psql, through `infra psql` / `infra
//! proxy`, the gateway, the tunnel and a connector, to a real PostgreSQL
//! that requires passwords. The database is the judge of privileges: each
//! user logs in as a login role of their own holding only the granted roles.

mod load;
mod token_password;

use std::time::{Duration, Instant};

use infra_testkit::{Cli, Connector, Postgres, eventually};

use super::common::{Backend, Env, bin};
use super::gateway::{connector_key, user};

const ADMIN_PW: &str = "pg-admin-password";
const CONNECTOR_PW: &str = "connector-admin-password";

pub struct Db {
    pub pg: Postgres,
    pub env: Env,
    pub connector: Connector,
    _dir: tempfile::TempDir,
}

pub fn setup() -> Db {
    setup_with("")
}

/// `extra` is added to the destination's YAML (indented 4).
fn setup_with(extra_dest: &str) -> Db {
    setup_full(extra_dest, vec![])
}

fn setup_full(extra_dest: &str, server_args: Vec<String>) -> Db {
    let pg = Postgres::start_with_password(ADMIN_PW).expect("start PostgreSQL");
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one'); \
         CREATE ROLE app_read NOLOGIN; GRANT SELECT ON items TO app_read; \
         CREATE ROLE app_write NOLOGIN; GRANT SELECT, INSERT ON items TO app_write;",
    )
    .unwrap();
    // The connector's admin is no superuser: what docs/postgres.md says it needs.
    pg.psql(
        "app",
        &format!(
            "CREATE ROLE infra_admin LOGIN CREATEROLE PASSWORD '{CONNECTOR_PW}'; \
             GRANT pg_signal_backend TO infra_admin; \
             GRANT app_read, app_write TO infra_admin WITH ADMIN OPTION;"
        ),
    )
    .unwrap();
    let env = super::common::start_with(Backend::Sqlite, server_args);
    let key = connector_key(&env, "dbc");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg-admin");
    std::fs::write(&pw, CONNECTOR_PW).unwrap();
    let extra = format!(
        "  - name: db\n    kind: postgres\n    url: postgres://127.0.0.1:{}/app\n    adminUser: infra_admin\n    adminPasswordFile: {}\n",
        pg.port(),
        pw.display()
    ) + extra_dest;
    let connector = Connector::start_with(&bin(), &env.server, &key, "dbc", &[], &extra).unwrap();
    Db {
        pg,
        env,
        connector,
        _dir: dir,
    }
}

/// alice, granted `app_read` on the database.
pub fn reader(db: &Db) -> Cli {
    let alice = user(&db.env, "alice@example.com");
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "app_read"])
        .ok();
    alice
}

/// `infra psql db -- -c SQL` as the user of `cli`, verbose errors (with SQLSTATE).
pub fn psql(cli: &Cli, sql: &str) -> infra_testkit::Output {
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
    let alice = reader(&db);

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

    // LISTEN/NOTIFY pass through.
    let out = psql(&alice, "LISTEN jobs; NOTIFY jobs, 'hi'");
    assert!(
        (out.stdout.clone() + &out.stderr).contains("Asynchronous notification \"jobs\" with payload \"hi\""),
        "{out:?}"
    );

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
    let alice = reader(&db);
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

/// psql with `conninfo` and `password`, asking `select current_user`: exit
/// code, output (trimmed) and errors.
pub fn psql_as(db: &Db, conninfo: &str, password: &str) -> (i32, String, String) {
    let out = std::process::Command::new(db.pg.bin_dir().join("psql"))
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-c", "select current_user"])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ctrl-C in psql sends a CancelRequest on a new connection; it travels the
/// same way (as the same user) and stops the query.
#[test]
fn ctrl_c_cancels_the_running_query() {
    let db = setup();
    let alice = reader(&db);
    let infra = std::process::Command::new(bin())
        .env("HOME", alice.home())
        .env_remove("KUBECONFIG")
        .args([
            "psql",
            "db",
            "--",
            "-X",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "select pg_sleep(30)",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually!(15, || {
        let n = db.pg.psql(
            "app",
            "select count(*) from pg_stat_activity where usename = 'alice@example.com' and query like '%pg_sleep%'",
        )?;
        anyhow::ensure!(n == "1", "not running yet");
        Ok(())
    });
    // SIGINT to psql alone, as a terminal's Ctrl-C would (infra ignores it).
    let psql_pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", infra.id(), infra.id()))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &psql_pid])
            .status()
            .unwrap()
            .success()
    );
    let out = infra.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("57014"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let events = super::common::json(
        &db.env
            .admin
            .run(&["audit", "list", "--destination", "db", "-o", "json"]),
    );
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or_default().contains("cancel request pid=")),
        "{events:#}"
    );
}

/// Tokens are checked on the stream that would carry the session: one for
/// another destination, a tampered one or none is refused before any
/// PostgreSQL byte flows; garbage on an accepted stream closes that session
/// only.
#[test]
fn bad_tokens_and_bad_bytes_are_refused() {
    let db = setup();
    let alice = reader(&db);
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "other", "--role", "x"])
        .ok();
    let gw = super::gateway::Gw::new(&db.env, &["db"], true);
    let upgrade = [("Connection", "upgrade"), ("Upgrade", "infra-tcp/1")];
    let other = super::gateway::token(&alice, "other");
    let (status, body) = gw.get("db", "/", Some(&other), &upgrade);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("this token is not for db"), "{body}");
    let good = super::gateway::token(&alice, "db");
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let (status, body) = gw.get("db", "/", Some(&tampered), &upgrade);
    assert_eq!(status, 401, "{body}");
    let (status, body) = gw.get("db", "/", None, &upgrade);
    assert_eq!(status, 401, "{body}");
    // Without the upgrade: told how to connect.
    let (status, body) = gw.get("db", "/", Some(&good), &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("infra psql db"), "{body}");

    // Absurd and malformed packets through a real session stream close that
    // session with an error; the connector keeps serving.
    let port = free_local_proxy(&alice);
    for garbage in [
        vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],      // 2 GB startup packet
        vec![0, 0, 0, 8, 0, 2, 0, 0],                  // protocol 2.0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), // not PostgreSQL at all
        infra_proto_pg::startup_message(&[("user", "x"), ("database", "app")])
            .into_iter()
            .chain([b'Q', 0x7f, 0xff, 0xff, 0xff]) // oversized message after startup
            .collect(),
    ] {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&garbage).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.windows(5).any(|w| w == b"SFATA"), "{garbage:?}: {got:?}");
    }
    let out = psql(&alice, "select 42");
    assert_eq!(out.stdout.trim(), "42", "{out:?}");
    assert!(db.connector.healthy(), "{}", db.connector.log());
}

/// Starts `infra proxy db` for `cli` on a free port; killed on drop.
pub struct ProxyProc(pub u16, std::process::Child);

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

pub fn free_local_proxy(cli: &Cli) -> ProxyProc {
    let port = infra_testkit::free_port();
    let child = std::process::Command::new(bin())
        .env("HOME", cli.home())
        .env_remove("KUBECONFIG")
        .args(["proxy", "db", "--port", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually!(10, || {
        std::net::TcpStream::connect(("127.0.0.1", port))?;
        Ok(())
    });
    ProxyProc(port, child)
}
