//! A crash (`kill -9`) of the server or of the connector in the middle of
//! a load loses no audit event of a request whose response the client
//! saw, and stores none twice.
//!
//! The connector writes a request's event to its spool before the
//! response's last frame leaves it, ships it, and forgets it only once the
//! server has committed it and said so; the server stores each of a
//! connector instance's event numbers once. These tests count.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use infra_testkit::eventually;

use super::common::session_key;
use super::gateway::{WebEnv, web_env};

/// Clients sending `GET /echo?id=…` through the gateway until stopped;
/// each returns the ids that were answered 200.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(w: &WebEnv, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (client, stop, t) = (w.gw.client.clone(), stop.clone(), w.t.clone());
                let base = w.gw.url("web", "/echo?id=");
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    let mut answered = vec![];
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let id = format!("{c}-{k}");
                        let ok = rt.block_on(async {
                            let r = client.get(format!("{base}{id}")).bearer_auth(&t).send().await.ok()?;
                            let status = r.status().as_u16();
                            // The whole body: a response counts once it is read to its end.
                            r.bytes().await.ok()?;
                            Some(status == 200)
                        });
                        match ok {
                            Some(true) => answered.push(id),
                            // The server or connector is down: try again shortly.
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                    answered
                })
            })
            .collect();
        Load { stop, clients }
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    }
}

/// How many times the audit log holds each request id's event.
fn stored(w: &WebEnv) -> HashMap<String, usize> {
    let key = session_key(&w.env.admin);
    let mut seen = HashMap::new();
    for page in 1.. {
        let (status, v) = w
            .env
            .server
            .get_json(
                &format!("/api/audit?destination=web&action=http.request&limit=1000&page={page}"),
                Some(&key),
            )
            .unwrap();
        assert_eq!(status, 200, "{v}");
        let items = v["items"].as_array().unwrap();
        for e in items {
            let detail = e["detail"].as_str().unwrap_or_default();
            if let Some(rest) = detail.split("/echo?id=").nth(1) {
                let id = rest.split_whitespace().next().unwrap_or_default().to_owned();
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        if items.len() < 1000 {
            break;
        }
    }
    seen
}

/// Every answered request's event is stored exactly once, eventually.
fn assert_all_stored_once(w: &WebEnv, answered: &[String]) {
    assert!(
        answered.len() > 50,
        "too little load to mean anything: {}",
        answered.len()
    );
    eventually!(60, || {
        let seen = stored(w);
        let missing: Vec<_> = answered.iter().filter(|id| !seen.contains_key(*id)).collect();
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "events stored twice: {twice:?}");
        if missing.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{} of {} answered requests have no event yet, e.g. {:?}",
                missing.len(),
                answered.len(),
                &missing[..missing.len().min(5)]
            ))
        }
    });
}

/// Four clients load the gateway for 1.5 s, `crash` happens, the load
/// goes on for `after`; returns the ids answered 200.
fn crash_under_load(w: &mut WebEnv, crash: impl FnOnce(&mut WebEnv), after: Duration) -> Vec<String> {
    let load = Load::start(w, 4);
    std::thread::sleep(Duration::from_millis(1500));
    crash(w);
    std::thread::sleep(after);
    load.stop()
}

#[test]
fn kill_9_of_the_server_under_load_loses_no_acknowledged_event() {
    let mut w = web_env();
    let crash = |w: &mut WebEnv| {
        w.env.server.kill();
        std::thread::sleep(Duration::from_millis(300));
        w.env.server.start_again().unwrap();
    };
    // Requests flow again once the connector is back.
    let answered = crash_under_load(&mut w, crash, Duration::from_millis(2500));
    assert_all_stored_once(&w, &answered);
    w.env.admin.run(&["audit", "verify"]).ok();
}

#[test]
fn kill_9_of_the_connector_under_load_loses_no_acknowledged_event() {
    let mut w = web_env();
    // Killed, and started again on the same data directory (its spool).
    let crash = |w: &mut WebEnv| {
        w.c.respawn().unwrap();
        w.c.wait_ready().unwrap();
    };
    let answered = crash_under_load(&mut w, crash, Duration::from_millis(1500));
    assert_all_stored_once(&w, &answered);
    w.env.admin.run(&["audit", "verify"]).ok();
}

#[test]
fn a_graceful_stop_leaves_every_stored_event_on_stdout_too() {
    let mut w = web_env();
    // SIGTERM under load: what the server stored before it stopped is
    // also on its stdout (an independent copy), none left unprinted.
    let stop = |w: &mut WebEnv| {
        w.env.server.stop();
        w.env.server.start_again().unwrap();
    };
    let answered = crash_under_load(&mut w, stop, Duration::from_millis(500));
    assert_all_stored_once(&w, &answered);
    let log = w.env.server.log();
    let printed: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains(r#""action":"http.request""#))
        .filter_map(|l| l.split("/echo?id=").nth(1)?.split([' ', '"']).next())
        .collect();
    let stored = stored(&w);
    let missing: Vec<_> = stored.keys().filter(|id| !printed.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} stored events are not on stdout, e.g. {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(5)]
    );
}
