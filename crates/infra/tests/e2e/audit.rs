//! `infra audit verify` detects an edited or deleted event, on both
//! backends.

use super::common::{Backend, raw_sql, start};

fn tamper(backend: Backend) {
    let env = start(backend);
    let a = &env.admin;
    for i in 0..5 {
        a.run(&["groups", "add", &format!("g{i}")]).ok();
    }
    let ok = a.run(&["audit", "verify"]);
    ok.ok();
    assert!(ok.stdout.contains("intact"), "{}", ok.stdout);

    // A new event edited: the routine verification (from the checkpoint
    // the last one left) sees it.
    a.run(&["groups", "add", "late"]).ok();
    raw_sql(
        &env,
        "UPDATE audit_events SET detail = 'forged' WHERE seq = (SELECT MAX(seq) FROM audit_events)",
    );
    let out = a.run(&["audit", "verify"]);
    out.failed();
    assert!(out.stderr.contains("modified"), "{}", out.stderr);

    // An old event edited: a full verification walks everything, and
    // names the first fault.
    raw_sql(&env, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3");
    let out = a.run(&["audit", "verify", "--full"]);
    out.failed();
    assert!(out.stderr.contains("event 3"), "{}", out.stderr);
    assert!(out.stderr.contains("modified"), "{}", out.stderr);

    // Delete an event from the middle.
    raw_sql(&env, "DELETE FROM audit_events WHERE seq = 3");
    let out = a.run(&["audit", "verify", "--full"]);
    out.failed();
    assert!(out.stderr.contains("event 3 is missing"), "{}", out.stderr);
}

fn truncate(backend: Backend) {
    let env = start(backend);
    let a = &env.admin;
    a.run(&["groups", "add", "g"]).ok();
    a.run(&["audit", "verify"]).ok();
    // Deleting the newest event leaves a chain that links, but ends short.
    raw_sql(
        &env,
        "DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)",
    );
    // The routine verification notices its own checkpoint is gone; a full
    // one names what happened.
    let out = a.run(&["audit", "verify"]);
    out.failed();
    assert!(
        out.stderr.contains("no longer matches the last verification"),
        "{}",
        out.stderr
    );
    let out = a.run(&["audit", "verify", "--full"]);
    out.failed();
    assert!(out.stderr.contains("deleted at the end"), "{}", out.stderr);
}

#[test]
fn audit_tamper_sqlite() {
    tamper(Backend::Sqlite);
    truncate(Backend::Sqlite);
}

#[test]
fn audit_tamper_postgres() {
    tamper(Backend::Postgres);
    truncate(Backend::Postgres);
}
