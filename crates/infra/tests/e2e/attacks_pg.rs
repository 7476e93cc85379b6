//! Attacks on the PostgreSQL path, each through the real binary, a real
//! PostgreSQL and `infra proxy` (or the real psql): a user with a grant
//! tries to run statements the audit does not see, to credit a failing
//! statement with another's success, and to log in to the database
//! directly, outside Infra, with a password they chose.
//!
//! The protocol tricks (LATIN1 bytes, FunctionCall, closing right after a
//! query, pipelining) use a small client with hand-built frames, because
//! psql never sends them that way.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use infra_testkit::eventually;

use super::postgres::{Db, free_local_proxy, psql, psql_as, reader, setup};

/// A PostgreSQL client that speaks frames, nothing more.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(b: &[u8]) -> Vec<u8> {
    [b, &[0]].concat()
}

fn query(sql: &[u8]) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

/// Parse (unnamed statement), Bind (unnamed portal, no parameters),
/// Execute: one statement of the extended protocol, without its Sync.
fn extended(sql: &[u8]) -> Vec<u8> {
    let parse = msg(b'P', &[cstr(b""), cstr(sql), vec![0, 0]].concat());
    let bind = msg(b'B', &[cstr(b""), cstr(b""), vec![0, 0, 0, 0, 0, 0]].concat());
    let execute = msg(b'E', &[cstr(b""), vec![0, 0, 0, 0]].concat());
    [parse, bind, execute].concat()
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// FunctionCall of `oid` with text arguments, text result.
fn function_call(oid: u32, args: &[&[u8]]) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 0]); // one format code: text
    body.extend_from_slice(&u16::try_from(args.len()).unwrap().to_be_bytes());
    for a in args {
        body.extend_from_slice(&u32::try_from(a.len()).unwrap().to_be_bytes());
        body.extend_from_slice(a);
    }
    body.extend_from_slice(&[0, 0]); // result format: text
    msg(b'F', &body)
}

impl Raw {
    /// Connects through `infra proxy` on `port` and completes the startup
    /// with `params` (besides user and database).
    fn connect(port: u16, params: &[(&str, &str)]) -> anyhow::Result<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut all = vec![("user", "alice@example.com"), ("database", "app")];
        all.extend_from_slice(params);
        let mut raw = Raw { s, buf: Vec::new() };
        raw.send(&infra_proto_pg::startup_message(&all));
        let greeting = raw.until_ready(1)?;
        if let Some((_, body)) = greeting.iter().find(|(t, _)| *t == b'E') {
            anyhow::bail!("startup refused: {:?}", infra_proto_pg::error_fields(body));
        }
        Ok(raw)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Messages up to and including the `n`th ReadyForQuery.
    fn until_ready(&mut self, mut n: usize) -> anyhow::Result<Vec<(u8, Vec<u8>)>> {
        let mut out = Vec::new();
        while n > 0 {
            match infra_proto_pg::frame(&self.buf, usize::MAX >> 1)? {
                Some((tag, len)) => {
                    let m: Vec<u8> = self.buf.drain(..len).collect();
                    out.push((tag, m[5..].to_vec()));
                    if tag == b'Z' {
                        n -= 1;
                    }
                }
                None => {
                    let mut chunk = [0u8; 8192];
                    let got = self.s.read(&mut chunk)?;
                    anyhow::ensure!(got > 0, "connection closed after {out:?}");
                    self.buf.extend_from_slice(&chunk[..got]);
                }
            }
        }
        Ok(out)
    }

    /// Sends the query bytes and closes at once, not waiting for anything.
    fn send_and_close(mut self, bytes: &[u8]) {
        self.send(bytes);
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

/// alice's `postgres.*` events as (result, detail).
fn alice_events(db: &Db) -> Vec<(String, String)> {
    let events = super::common::json(
        &db.env
            .admin
            .run(&["audit", "list", "--destination", "db", "-o", "json"]),
    );
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "alice@example.com")
        .map(|e| {
            (
                e["result"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until alice has an event whose detail contains `marker`; returns
/// every such event.
fn events_with(db: &Db, marker: &str) -> Vec<(String, String)> {
    eventually!(20, || {
        let found: Vec<_> = alice_events(db)
            .into_iter()
            .filter(|(_, d)| d.contains(marker))
            .collect();
        anyhow::ensure!(!found.is_empty(), "no event contains {marker}");
        Ok(found)
    })
}

/// alice's first raw session through `infra proxy`, once her grant has
/// reached the connector.
fn raw_session(port: u16, params: &[(&str, &str)]) -> Raw {
    eventually!(15, || Raw::connect(port, params))
}

/// A query whose text is not UTF-8 (the client says LATIN1, the database
/// converts) runs, and is audited anyway, shown lossily.
#[test]
fn attack_pg_latin1_query_is_audited() {
    let db = setup();
    let alice = reader(&db);
    let proxy = free_local_proxy(&alice);
    let mut c = raw_session(proxy.0, &[("client_encoding", "LATIN1")]);
    c.send(&query(b"select 'caf\xe9' as latin1_simple"));
    let got = c.until_ready(1).unwrap();
    assert!(got.iter().all(|(t, _)| *t != b'E'), "{got:?}");
    assert!(
        got.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"caf\xe9")),
        "{got:?}"
    );
    c.send(&[extended(b"select 'na\xefve' as latin1_extended"), sync()].concat());
    let got = c.until_ready(1).unwrap();
    assert!(got.iter().all(|(t, _)| *t != b'E'), "{got:?}");

    let simple = events_with(&db, "as latin1_simple");
    assert_eq!(simple.len(), 1, "{simple:#?}");
    assert_eq!(simple[0].0, "success", "{simple:#?}");
    assert!(
        simple[0].1.contains("select 'caf\u{fffd}' as latin1_simple"),
        "{simple:#?}"
    );
    assert!(simple[0].1.contains("tag=\"SELECT 1\""), "{simple:#?}");
    let ext = events_with(&db, "as latin1_extended");
    assert_eq!(ext.len(), 1, "{ext:#?}");
    assert_eq!(ext[0].0, "success", "{ext:#?}");
}

/// A FunctionCall message ('F') runs a function by OID without any SQL
/// text: it is audited with the OID and its arguments, and its outcome.
#[test]
fn attack_pg_function_call_is_audited() {
    let db = setup();
    let alice = reader(&db);
    let oid: u32 = db
        .pg
        .psql("app", "select 'pg_catalog.int4pl(integer, integer)'::regprocedure::oid")
        .unwrap()
        .parse()
        .unwrap();
    let proxy = free_local_proxy(&alice);
    let mut c = raw_session(proxy.0, &[]);
    c.send(&function_call(oid, &[b"40", b"2"]));
    let got = c.until_ready(1).unwrap();
    assert!(got.iter().any(|(t, b)| *t == b'V' && b.ends_with(b"42")), "{got:?}");
    // A function that does not exist: an error, audited as a failure.
    c.send(&function_call(1, &[]));
    let got = c.until_ready(1).unwrap();
    assert!(got.iter().any(|(t, _)| *t == b'E'), "{got:?}");

    let called = events_with(&db, &format!("function_call oid={oid} "));
    assert_eq!(called.len(), 1, "{called:#?}");
    assert_eq!(called[0].0, "success", "{called:#?}");
    assert!(called[0].1.contains("args=2"), "{called:#?}");
    let missing = events_with(&db, "function_call oid=1 ");
    assert_eq!(missing[0].0, "failure", "{missing:#?}");
    assert!(missing[0].1.contains("error=\"42883"), "{missing:#?}");
}

/// A client that closes right after sending a statement: the statement
/// runs, and is in the audit; one still running when the session ends is
/// recorded with an unknown outcome.
#[test]
fn attack_pg_close_after_query_is_audited() {
    let db = setup();
    let alice = reader(&db);
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "app_write"])
        .ok();
    let proxy = free_local_proxy(&alice);
    // Both grants in force before the write.
    eventually!(15, || {
        let out = psql(&alice, "select 1");
        anyhow::ensure!(out.status == 0, "{out:?}");
        let mut c = Raw::connect(proxy.0, &[])?;
        c.send(&query(b"select pg_has_role('app_write', 'member')"));
        let got = c.until_ready(1)?;
        anyhow::ensure!(got.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"t")), "{got:?}");
        Ok(())
    });
    let c = Raw::connect(proxy.0, &[]).unwrap();
    c.send_and_close(&query(b"insert into items values (77, 'closed-right-after')"));
    eventually!(15, || {
        let n = db.pg.psql("app", "select count(*) from items where id = 77")?;
        anyhow::ensure!(n == "1", "not inserted yet");
        Ok(())
    });
    let ran = events_with(&db, "closed-right-after");
    assert_eq!(ran.len(), 1, "{ran:#?}");

    // Still running when the client goes: the outcome is unknown, and the
    // event says so.
    let c = Raw::connect(proxy.0, &[]).unwrap();
    c.send_and_close(&query(b"select pg_sleep(60), 'in-flight-marker'"));
    let inflight = events_with(&db, "in-flight-marker");
    assert_eq!(inflight.len(), 1, "{inflight:#?}");
    assert_eq!(inflight[0].0, "failure", "{inflight:#?}");
    assert!(
        inflight[0]
            .1
            .contains("outcome=\"unknown: the session ended (client closed) before the result"),
        "{inflight:#?}"
    );
}

/// Statements sent together (pipelined) each get their own outcome: a
/// failing one is not credited with its neighbour's success, and in the
/// extended protocol the statements an error skipped are marked as not run.
#[test]
fn attack_pg_pipelined_results_each_their_own() {
    let db = setup();
    let alice = reader(&db);
    let proxy = free_local_proxy(&alice);
    let mut c = raw_session(proxy.0, &[]);
    c.send(
        &[
            query(b"select 1 as pipe_one"),
            query(b"select * from no_such_table_pipe_two"),
            query(b"select 3 as pipe_three"),
        ]
        .concat(),
    );
    c.until_ready(3).unwrap();
    c.send(
        &[
            extended(b"select 4 as pipe_four"),
            extended(b"select 1/0 as pipe_five"),
            extended(b"select 6 as pipe_six"),
            sync(),
            extended(b"select 7 as pipe_seven"),
            sync(),
        ]
        .concat(),
    );
    c.until_ready(2).unwrap();

    let one = |marker: &str| {
        let e = events_with(&db, marker);
        assert_eq!(e.len(), 1, "{marker}: {e:#?}");
        e.into_iter().next().unwrap()
    };
    let (r, d) = one("as pipe_one");
    assert_eq!(r, "success", "{d}");
    assert!(d.contains("tag=\"SELECT 1\""), "{d}");
    let (r, d) = one("no_such_table_pipe_two");
    assert_eq!(r, "failure", "{d}");
    assert!(d.contains("error=\"42P01"), "{d}");
    let (r, d) = one("as pipe_three");
    assert_eq!(r, "success", "{d}");
    let (r, d) = one("as pipe_four");
    assert_eq!(r, "success", "{d}");
    assert!(d.contains("tag=\"SELECT 1\""), "{d}");
    let (r, d) = one("as pipe_five");
    assert_eq!(r, "failure", "{d}");
    assert!(d.contains("error=\"22012"), "{d}");
    let (r, d) = one("as pipe_six");
    assert_eq!(r, "failure", "{d}");
    assert!(d.contains("not_run="), "{d}");
    let (r, d) = one("as pipe_seven");
    assert_eq!(r, "success", "{d}");
}

const DIRECT_SQL: &str = "select rolcanlogin::text || '|' || \
    (select count(*) from pg_auth_members m where m.member = r.oid) \
    from pg_roles r where rolname = 'alice@example.com'";

/// psql straight to the database (not through Infra) as alice with
/// `password`: the exit code and output.
fn direct_login(db: &Db, password: &str) -> (i32, String, String) {
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=app user=alice@example.com sslmode=disable",
        db.pg.port()
    );
    psql_as(db, &conninfo, password)
}

/// alice sets her own login role's password through Infra; once her
/// session ends she cannot use it to log in directly, and after her grant
/// is revoked her role is disabled and holds no granted role.
#[test]
fn attack_pg_own_password_then_direct_login_refused() {
    let db = setup();
    let alice = reader(&db);
    eventually!(15, || {
        let out = psql(&alice, "ALTER ROLE CURRENT_USER PASSWORD 'alice-chose-this'");
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    // The session has ended: the role no longer logs in, whatever its password.
    eventually!(15, || {
        let r = direct_login(&db, "alice-chose-this");
        anyhow::ensure!(r.0 != 0, "direct login as alice worked: {r:?}");
        Ok(())
    });
    assert!(db.pg.psql("app", DIRECT_SQL).unwrap().starts_with("false|"));
    // Infra sessions still work, and end the same way.
    let out = psql(&alice, "select current_user");
    assert_eq!(out.stdout.trim(), "alice@example.com", "{out:?}");

    // Revoked while no session is open: disabled and stripped of app_read.
    let grants =
        super::common::json(
            &db.env
                .admin
                .run(&["grants", "list", "--user", "alice@example.com", "-o", "json"]),
        );
    let id = grants[0]["id"].as_str().unwrap().to_owned();
    db.env.admin.run(&["grants", "remove", "--id", &id]).ok();
    eventually!(15, || {
        let state = db.pg.psql("app", DIRECT_SQL)?;
        anyhow::ensure!(state == "false|0", "alice's role after revocation: {state}");
        Ok(())
    });
    let r = direct_login(&db, "alice-chose-this");
    assert_ne!(r.0, 0, "{r:?}");
}

/// A role a connector left able to log in (it was killed with a session
/// open, after the user chose a password) is disabled when it starts again.
#[test]
fn attack_pg_role_left_enabled_is_disabled_at_connector_start() {
    let mut db = setup();
    let alice = reader(&db);
    let proxy = free_local_proxy(&alice);
    let mut c = raw_session(proxy.0, &[]);
    c.send(&query(b"ALTER ROLE CURRENT_USER PASSWORD 'alice-chose-that'"));
    let got = c.until_ready(1).unwrap();
    assert!(got.iter().all(|(t, _)| *t != b'E'), "{got:?}");
    db.connector.kill();
    drop(c);
    db.connector.respawn().unwrap();
    db.connector.wait_ready().unwrap();
    eventually!(15, || {
        let r = direct_login(&db, "alice-chose-that");
        anyhow::ensure!(r.0 != 0, "direct login as alice worked: {r:?}");
        Ok(())
    });
    let out = psql(&alice, "select current_user");
    assert_eq!(out.stdout.trim(), "alice@example.com", "{out:?}");
}

/// alice changes her login role's password from one Infra session: her
/// next Infra session still works (the connector re-establishes the role
/// and logs in again), and the password she chose stops working.
#[test]
fn attack_pg_changed_password_does_not_break_infra_sessions() {
    let db = setup();
    let alice = reader(&db);
    let proxy = free_local_proxy(&alice);
    let mut first = raw_session(proxy.0, &[]);
    first.send(&query(b"ALTER ROLE CURRENT_USER PASSWORD 'alice-picked-one'"));
    let got = first.until_ready(1).unwrap();
    assert!(got.iter().all(|(t, _)| *t != b'E'), "{got:?}");
    // While that session is open, a second one.
    let out = psql(&alice, "select 'second session'");
    assert_eq!(out.stdout.trim(), "second session", "{out:?}\n{}", db.connector.log());
    let r = direct_login(&db, "alice-picked-one");
    assert_ne!(r.0, 0, "the password alice chose still works: {r:?}");
    // The first session is unharmed.
    first.send(&query(b"select 'first still here'"));
    let got = first.until_ready(1).unwrap();
    assert!(
        got.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"first still here")),
        "{got:?}"
    );
    drop(first);
    let out = psql(&alice, "select 'third session'");
    assert_eq!(out.stdout.trim(), "third session", "{out:?}");
}
