//! Streams through the gateway: large bodies both ways, WebSocket, and
//! requests in flight when the server is told to stop.

use std::time::Duration;

use infra_testkit::{Connector, HttpDest};

use super::{connector_key, expect, token, web_env};
use crate::e2e::common::{ADMIN, Backend, bin, start};

#[test]
fn streams_large_bodies_both_ways() {
    let w = web_env();
    let (gw, t) = (&w.gw, &w.t);
    const N: u64 = 64 * 1024 * 1024;
    let (down, up_n) = gw.rt.block_on(async {
        let mut resp = gw
            .client
            .get(gw.url("web", &format!("/bytes?n={N}")))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        let mut n = 0u64;
        while let Some(c) = resp.chunk().await.unwrap() {
            n += c.len() as u64;
        }
        let body = reqwest::Body::from(vec![b'y'; usize::try_from(N).unwrap()]);
        let r = gw
            .client
            .post(gw.url("web", "/upload"))
            .bearer_auth(t)
            .body(body)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        (n, v["bytes"].as_u64().unwrap())
    });
    assert_eq!(down, N);
    assert_eq!(up_n, N);
}

#[test]
fn websocket_echo_through_the_gateway() {
    let env = start(Backend::Sqlite);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/ws_echo.py");
    let ws_port = infra_testkit::free_port();
    let mut server = std::process::Command::new("python3")
        .args([script, "serve", &ws_port.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let key = connector_key(&env, "dc1");
    let dests = [HttpDest {
        name: "ws".into(),
        url: format!("http://127.0.0.1:{ws_port}"),
        upstream_token: None,
    }];
    let _c = Connector::start(&bin(), &env.server, &key, "dc1", &dests).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "ws", "--role", "user"]).ok();
    let t = token(&env.admin, "ws");
    let url = format!("wss://ws.localhost:{}/", env.server.port);
    let ca = env.server.ca_path();
    let connect = format!("127.0.0.1:{}", env.server.port);
    let run = |auth: &str| {
        std::process::Command::new("python3")
            .args([
                script,
                "client",
                &url,
                "--ca",
                ca.to_str().unwrap(),
                "--connect",
                &connect,
                "--header",
                auth,
            ])
            .args(["hello", "wörld"])
            .output()
            .unwrap()
    };
    let out = run(&format!("Authorization: Bearer {t}"));
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["hello", "wörld"]);
    let out = run("Authorization: Bearer nope");
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED: 401"));
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let mut w = web_env();
    let t = w.t.clone();
    let slow = {
        let client = w.gw.client.clone();
        let url = w.gw.url("web", "/slow?ms=1500");
        let t = t.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let r = client.get(&url).bearer_auth(&t).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    w.c.stop();
    let (s, body) = slow.join().unwrap();
    assert_eq!(
        (s, body.as_str()),
        (200, "slow done"),
        "the request in flight was not allowed to finish"
    );
    assert!(w.c.log().contains("stopped"), "{}", w.c.log());
    expect(&w.gw, &t, 503, "");
}
