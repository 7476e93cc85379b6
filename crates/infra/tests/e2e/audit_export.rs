//! Audit export to real receivers: an HTTP webhook that fails some
//! requests (and once takes a batch but loses its answer), a syslog
//! collector over TCP that is down at first, and a rotated file.
//! Every event must reach each exactly once, counted by `seq`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infra_testkit::free_port;
use serde_json::Value;

use super::common::{Backend, start_with};

/// How often each `seq` arrived.
type Seen = Arc<Mutex<BTreeMap<i64, u32>>>;

/// A webhook receiver: request 2 and 5 answer 500 without taking the
/// batch; request 3 takes it and then answers 500 (the sender must send it
/// again, and the receiver drops the repeats by `seq`).
fn webhook(seen: Seen) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(0u32));
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let (seen, requests) = (seen.clone(), requests.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = {
                        let mut g = requests.lock().unwrap();
                        *g += 1;
                        *g
                    };
                    let take = n != 2 && n != 5;
                    if take {
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        let mut s = seen.lock().unwrap();
                        for e in v["events"].as_array().unwrap() {
                            *s.entry(e["seq"].as_i64().unwrap()).or_default() += 1;
                        }
                    }
                    let status = if take && n != 3 {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = write!(w, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    port
}

/// A syslog collector over TCP (octet counting) that is down for its
/// first two seconds (connections refused), then takes everything.
fn syslog(seen: Seen) -> u16 {
    let port = free_port();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        for conn in l.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                loop {
                    let mut n = Vec::new();
                    if r.read_until(b' ', &mut n).unwrap_or(0) == 0 {
                        return;
                    }
                    let len: usize = String::from_utf8_lossy(&n).trim().parse().unwrap();
                    let mut m = vec![0; len];
                    if r.read_exact(&mut m).is_err() {
                        return;
                    }
                    let m = String::from_utf8(m).unwrap();
                    assert!(m.starts_with('<') && m.contains(">1 "), "not RFC 5424: {m}");
                    let seq: i64 = m
                        .split("seq=\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .and_then(|s| s.parse().ok())
                        .unwrap();
                    *seen.lock().unwrap().entry(seq).or_default() += 1;
                }
            });
        }
    });
    port
}

fn wait_all(what: &str, seen: &Seen, head: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = seen.lock().unwrap();
        if (1..=head).all(|q| s.contains_key(&q)) {
            return;
        }
        let missing = (1..=head).filter(|q| !s.contains_key(q)).count();
        drop(s);
        assert!(
            Instant::now() < deadline,
            "{what}: {missing} of {head} events never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_event_reaches_each_export_target_once() {
    let (hook_seen, syslog_seen): (Seen, Seen) = Default::default();
    let hook = webhook(hook_seen.clone());
    let sys = syslog(syslog_seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let env = start_with(
        Backend::Sqlite,
        vec![
            "--audit-export-webhook".into(),
            format!("http://127.0.0.1:{hook}/audit"),
            "--audit-export-syslog".into(),
            format!("tcp://127.0.0.1:{sys}"),
            "--audit-export-file".into(),
            file.display().to_string(),
            "--audit-export-file-max-size".into(),
            "100KB".into(),
            "--audit-export-file-keep".into(),
            "100".into(),
        ],
    );
    // Events enough for several batches: forward-auth decisions.
    env.admin
        .run(&["destinations", "add", "wiki", "--url", "https://wiki.example.com"])
        .ok();
    super::forward_auth::decisions(&env, 1200);
    // The chain's head once the decisions are stored: every event the
    // export must carry.
    let key = super::common::session_key(&env.admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let head = loop {
        let (_, v) = env.server.get_json("/api/audit/verify?full=true", Some(&key)).unwrap();
        let head = v["eventsChecked"].as_i64().unwrap();
        if head > 1200 {
            break head;
        }
        assert!(Instant::now() < deadline, "only {head} events stored");
        std::thread::sleep(Duration::from_millis(100));
    };

    wait_all("webhook", &hook_seen, head);
    wait_all("syslog", &syslog_seen, head);
    let dups = |s: &Seen| s.lock().unwrap().values().filter(|n| **n > 1).count();
    // The batch whose answer was lost came twice: the receiver counts each
    // event once by its seq.
    assert!(dups(&hook_seen) > 0, "the lost answer caused no resend");
    let hook_unique = hook_seen.lock().unwrap().keys().filter(|q| **q <= head).count();
    assert_eq!(i64::try_from(hook_unique).unwrap(), head);
    assert_eq!(dups(&syslog_seen), 0, "syslog frames arrived twice");

    // The file, across its rotations: every event, in order, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seqs = Vec::new();
        let mut parts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        // audit.jsonl.N (oldest) … audit.jsonl.1, then audit.jsonl.
        let rank = |p: &std::path::PathBuf| {
            p.extension()
                .and_then(|e| e.to_str())
                .and_then(|e| e.parse::<i64>().ok())
                .unwrap_or(0)
        };
        parts.sort_by_key(|p| -rank(p));
        for p in &parts {
            for line in std::fs::read_to_string(p).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                seqs.push(v["seq"].as_i64().unwrap());
            }
        }
        if seqs.len() >= usize::try_from(head).unwrap() {
            assert!(parts.len() >= 2, "the file never rotated: {parts:?}");
            let first: Vec<i64> = seqs.iter().copied().take_while(|q| *q <= head).collect();
            assert_eq!(first, (1..=head).collect::<Vec<_>>());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file has {} of {head} events",
            seqs.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
