//! Audit retention under load: events beyond the number kept are archived
//! (gzip JSON lines), a signed checkpoint marks the cut, and they leave the
//! database; verification still covers archive and database, and catches
//! an edited archived event however the editor covers their tracks.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::common::{Backend, Env, raw_sql, start_with};
use super::forward_auth::decisions;

fn archives(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A server that looks for due events every second with `bound` (a
/// retention flag and its value), archiving into the returned directory,
/// and destination `wiki` for forward-auth decisions.
fn server_with_retention(bound: &str, value: &str) -> (Env, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let env = start_with(
        Backend::Sqlite,
        vec![
            bound.into(),
            value.into(),
            "--audit-retention-interval".into(),
            "1s".into(),
            "--audit-archive-dir".into(),
            archive.display().to_string(),
        ],
    );
    env.admin
        .run(&["destinations", "add", "wiki", "--url", "https://wiki.example.com"])
        .ok();
    (env, dir, archive)
}

#[test]
fn retention_archives_under_load_and_verification_spans_the_cut() {
    let (env, _dir, archive) = server_with_retention("--audit-retention-events", "100");
    let a = &env.admin;
    // Load while retention runs: two waves of forward-auth decisions.
    decisions(&env, 600);
    decisions(&env, 600);
    // Pruned down to about the number kept, the rest in archive files.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = a.run(&["audit", "list", "-o", "json"]);
        let kept = super::common::json(out.ok()).as_array().unwrap().len();
        if kept <= 150 && !archives(&archive).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{kept} events still in the database");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Routine and full verification pass across the cut.
    let out = a.run(&["audit", "verify"]);
    out.ok();
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
    let out = a.run(&["audit", "verify", "--full"]);
    out.ok();
    assert!(out.stdout.contains("archive files and the database"), "{}", out.stdout);
    let n: u64 = out
        .stdout
        .split("intact: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(n > 1200, "{}", out.stdout);

    // Edit one archived event (as an attacker with the files would).
    let first = archives(&archive).remove(0);
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&first).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let edited = text.replacen("\"actor\":\"anonymous\"", "\"actor\":\"someone-else\"", 1);
    assert_ne!(edited, text);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(edited.as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&first, &bytes).unwrap();
    let out = a.run(&["audit", "verify", "--full"]);
    out.failed();
    assert!(out.stderr.contains("SHA-256 differs"), "{}", out.stderr);

    // ... and also rewrites the checkpoint's digest in the database: the
    // signature gives it away.
    let sha = infra_auth::sha256_hex(&bytes);
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    raw_sql(
        &env,
        &format!("UPDATE audit_checkpoints SET archive_sha256 = '{sha}' WHERE archive = '{name}'"),
    );
    let out = a.run(&["audit", "verify", "--full"]);
    out.failed();
    assert!(out.stderr.contains("do not match what was signed"), "{}", out.stderr);
}

#[test]
fn retention_by_size_keeps_the_table_under_its_bound() {
    let (env, _dir, archive) = server_with_retention("--audit-retention-size", "40KB");
    let a = &env.admin;
    decisions(&env, 600);
    // A decision's event is about 400 bytes as stored: 40 KB keeps about a
    // hundred of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = a.run(&["audit", "list", "-o", "json"]);
        let events = super::common::json(out.ok()).as_array().unwrap().clone();
        let bytes: usize = events
            .iter()
            .map(|e| {
                [
                    "actor", "action", "target", "source", "result", "detail", "prevHash", "hash",
                ]
                .iter()
                .map(|k| e[*k].as_str().map_or(0, str::len))
                .sum::<usize>()
                    + 64
            })
            .sum();
        if bytes <= 45_000 && !archives(&archive).is_empty() {
            assert!(events.len() > 20, "pruned far below the bound: {} events", events.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} events, about {bytes} bytes, still in the database",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = a.run(&["audit", "verify", "--full"]);
    out.ok();
    assert!(out.stdout.contains("intact"), "{}", out.stdout);
}
