//! Request events at a team's receiver: every event, signed, in order,
//! and again after the receiver failed once; break-glass among them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::{grants_of, request, team};
use crate::e2e::common::{Backend, json, start};

/// What a receiver got: each POST's head and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A local receiver: answers 500 to the first POST, then 200; keeps every
/// request (headers and body).
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let first = seen.lock().unwrap().is_empty();
            seen.lock()
                .unwrap()
                .push((head, String::from_utf8_lossy(&body).into_owned()));
            let status = if first { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks `X-Infra-Signature: t=UNIX,v1=HEX` against HMAC-SHA256(secret, "UNIX.BODY").
fn signed(secret: &str, head: &str, body: &str) -> bool {
    let Some(sig) = header(head, "x-infra-signature") else {
        return false;
    };
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let want: String = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

#[test]
fn break_glass_is_granted_at_once_flagged_and_every_event_reaches_the_webhook_signed() {
    let env = start(Backend::Sqlite);
    let (dev, _, _) = team(&env);
    let (url, got) = receiver();
    let out = env
        .admin
        .run(&["request-webhooks", "add", "team", "--url", &url])
        .ok()
        .clone();
    let secret = out.stdout.trim().to_owned();
    assert_eq!(secret.len(), 32, "{out:?}");

    // Longer than break-glass allows: refused; within it: granted at once.
    let long = dev.run(&[
        "request",
        "add",
        "web",
        "--role",
        "edit",
        "--for",
        "30m",
        "--reason",
        "x",
        "--break-glass",
    ]);
    assert!(long.failed().stderr.contains("break-glass"), "{long:?}");
    let r = request(
        &dev,
        &[
            "web",
            "--role",
            "edit",
            "--for",
            "5m",
            "--reason",
            "OUTAGE-1",
            "--break-glass",
        ],
    );
    assert_eq!(
        (r["state"].as_str(), r["breakGlass"].as_bool()),
        (Some("approved"), Some(true)),
        "{r:#}"
    );
    let held = grants_of(&env, "dev@example.com");
    assert_eq!(held.len(), 1, "{held:#?}");
    let id = r["id"].as_str().unwrap().to_owned();
    let flagged = json(
        env.admin
            .run(&["audit", "list", "--action", "request.break-glass", "-o", "json"])
            .ok(),
    );
    assert!(flagged.to_string().contains(&id), "{flagged:#}");

    // Every request event reaches the receiver, signed, in order; the
    // first was refused once and sent again.
    infra_testkit::eventually!(20, || {
        let seen = got.lock().unwrap().clone();
        let events: Vec<String> = seen
            .iter()
            .map(|(h, _)| header(h, "x-infra-event").unwrap_or_default().to_owned())
            .collect();
        anyhow::ensure!(
            events.ends_with(&["request.create".into(), "request.break-glass".into()]) && events.len() >= 3,
            "{events:?}"
        );
        Ok(())
    });
    let seen = got.lock().unwrap().clone();
    for (head, body) in &seen {
        assert!(signed(&secret, head, body), "a bad signature: {head}{body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        // Every event names its request; refusals (anyone can cause
        // them) are not sent.
        assert!(
            v["detail"].as_str().unwrap_or_default().starts_with("request="),
            "{v:#}"
        );
        assert_ne!(v["result"], "denied", "{v:#}");
    }
    let deliveries: Vec<&str> = seen
        .iter()
        .map(|(h, _)| header(h, "x-infra-delivery").unwrap())
        .collect();
    assert_eq!(
        deliveries[0], deliveries[1],
        "the refused event was sent again: {deliveries:?}"
    );
    let events: Vec<&str> = seen.iter().map(|(h, _)| header(h, "x-infra-event").unwrap()).collect();
    assert!(
        events.iter().all(|e| e.starts_with("request.")),
        "only request events: {events:?}"
    );
    // A forged signature does not pass the check the receiver makes.
    assert!(!signed("another-secret", &seen[1].0, &seen[1].1));
}
