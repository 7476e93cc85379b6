//! Load and durability: COPY both ways with flat memory, 200 sessions at
//! once, and the query audit across a killed connector.

use infra_testkit::eventually;

use super::{free_local_proxy, psql, reader, setup};
use crate::e2e::common;
use crate::e2e::gateway::user;

fn hwm_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// COPY in and out stream through with flat memory; 200 sessions at once
/// (pgbench) work; the audit has every one of them.
#[test]
fn copy_streams_and_200_sessions() {
    let db = setup();
    db.pg
        .psql(
            "app",
            "CREATE TABLE big (line text); GRANT SELECT, INSERT ON big TO app_write; \
             GRANT SELECT ON items TO app_write;",
        )
        .unwrap();
    let alice = user(&db.env, "alice@example.com");
    db.env
        .admin
        .run(&["grants", "add", "alice@example.com", "db", "--role", "app_write"])
        .ok();
    // 64 MiB by default (INFRA_PG_COPY_MIB=1024 for the 1 GiB run).
    let mib: u64 = std::env::var("INFRA_PG_COPY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let lines = mib * 1024 * 1024 / 64;
    let pid = db.connector.pid().unwrap();
    let before = hwm_mib(pid);
    // 63 characters and a newline: 64 bytes a line.
    let line = "012345678901234567890123456789012345678901234567890123456789012";
    let load = format!("\\copy big from program 'yes {line} | head -n {lines}'");
    let out = eventually!(10, || {
        let out = psql(&alice, &load);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(out)
    });
    assert_eq!(out.status, 0);
    assert_eq!(
        db.pg.psql("app", "select count(*) from big").unwrap(),
        lines.to_string()
    );
    let out = psql(&alice, "\\copy big to program 'wc -c'");
    assert_eq!(out.stdout.trim(), (lines * 64).to_string(), "{out:?}");
    let grew = hwm_mib(pid) - before;
    eprintln!("COPY {mib} MiB in and out: connector peak RSS grew {grew} MiB");
    assert!(
        grew < mib / 2 + 16,
        "the connector held the copy in memory: +{grew} MiB"
    );

    // 200 sessions at once, each authorised and logged in as alice.
    db.pg
        .psql(
            "app",
            "CREATE TABLE counter (n int); GRANT SELECT ON counter TO app_write;",
        )
        .unwrap();
    let proxy = free_local_proxy(&alice);
    let pgbench = db.pg.bin_dir().join("pgbench");
    std::fs::write(alice.home().join("select.sql"), "SELECT count(*) FROM items;\n").unwrap();
    let out = std::process::Command::new(&pgbench)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.0.to_string(),
            "-U",
            "alice@example.com",
            "-n",
        ])
        .args(["-c", "200", "-j", "4", "-t", "5", "-f"])
        .arg(alice.home().join("select.sql"))
        .arg("app")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of transactions actually processed: 1000/1000"),
        "{stdout}"
    );
    let sessions = common::json(
        &db.env
            .admin
            .run(&["audit", "list", "--destination", "db", "-o", "json"]),
    )
    .as_array()
    .unwrap()
    .iter()
    .filter(|e| e["detail"].as_str().unwrap_or_default().starts_with("session start"))
    .count();
    assert!(sessions >= 200, "{sessions} session starts audited");
}

/// The query audit survives the connector being killed: each query a user
/// ran is in the server's log once, after a restart.
#[test]
fn query_audit_survives_a_killed_connector() {
    let mut db = setup();
    let alice = reader(&db);
    eventually!(10, || {
        let out = psql(&alice, "select 'warm-up'");
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    for i in 0..10 {
        if i == 5 {
            db.connector.kill();
            db.connector.respawn().unwrap();
            db.connector.wait_ready().unwrap();
        }
        let out = psql(&alice, &format!("select 'audited-{i}'"));
        assert_eq!(out.stdout.trim(), format!("audited-{i}"), "{out:?}");
    }
    eventually!(15, || {
        let events = common::json(
            &db.env
                .admin
                .run(&["audit", "list", "--destination", "db", "-o", "json"]),
        );
        let details: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == "alice@example.com")
            .map(|e| e["detail"].as_str().unwrap_or_default())
            .collect();
        for i in 0..10 {
            let want = format!("query=\"select 'audited-{i}'\"");
            let n = details.iter().filter(|d| d.contains(&want)).count();
            anyhow::ensure!(n == 1, "{want} appears {n} times");
        }
        Ok(())
    });
}
