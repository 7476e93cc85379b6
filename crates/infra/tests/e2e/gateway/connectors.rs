//! Connectors coming and going: same-named ones share load and fail over,
//! the only one goes down and comes back, and one pins the server's
//! certificate by fingerprint.

use std::time::Duration;

use infra_testkit::{Connector, Upstream, eventually};

use super::{Gw, connector_key, expect, token, web, web_env};
use crate::e2e::common::{ADMIN, Backend, bin, json, start};

#[test]
fn same_named_connectors_share_load_and_fail_over() {
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let mut a = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    let _b = Connector::start(&bin(), &env.server, &key, "dc1", &web(&up)).unwrap();
    env.admin.run(&["grants", "add", ADMIN, "web", "--role", "user"]).ok();
    let t = token(&env.admin, "web");
    let gw = Gw::new(&env, &["web"], false);
    eventually!(10, || {
        let ds = json(env.admin.run(&["destinations", "list", "-o", "json"]).ok());
        if ds[0]["tunnels"] == 2 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{ds}"))
        }
    });
    for _ in 0..20 {
        assert_eq!(gw.get("web", "/echo", Some(&t), &[]).0, 200);
    }
    // Kill one mid-load: requests made after it died all succeed.
    let (tx, rx) = std::sync::mpsc::channel();
    let load = {
        let client = gw.client.clone();
        let url = gw.url("web", "/echo");
        let t = t.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let mut statuses = vec![];
            while rx.try_recv().is_err() {
                let s = rt.block_on(async {
                    client
                        .get(&url)
                        .bearer_auth(&t)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                });
                statuses.push(s.unwrap_or(0));
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    a.kill();
    std::thread::sleep(Duration::from_millis(700));
    tx.send(()).unwrap();
    let statuses = load.join().unwrap();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    // At most the one request in flight on the killed connector fails.
    assert!(
        failed <= 1,
        "{failed} of {} requests failed: {statuses:?}",
        statuses.len()
    );
    for _ in 0..20 {
        assert_eq!(gw.get("web", "/echo", Some(&t), &[]).0, 200);
    }
}

#[test]
fn the_only_connector_down_then_back() {
    // Bind it whole: a `..` pattern would drop the server and connector.
    let mut w = web_env();
    let (gw, t) = (&w.gw, w.t.clone());
    w.c.kill();
    expect(gw, &t, 503, "no connector is serving destination 'web'");
    w.c.respawn().unwrap();
    expect(gw, &t, 200, "");
    // A revoked connector key closes its tunnel and is refused after.
    w.env.admin.run(&["keys", "remove", "dc1"]).ok();
    expect(gw, &t, 503, "");
    eventually!(10, || if w.c.log().contains("invalid, expired or revoked") {
        Ok(())
    } else {
        Err(anyhow::anyhow!("no refusal logged:\n{}", w.c.log()))
    });
}

#[test]
fn connector_trusts_the_server_by_pinned_fingerprint() {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let env = start(Backend::Sqlite);
    let up = Upstream::start().unwrap();
    let key = connector_key(&env, "dc1");
    let pem = std::fs::read(env.server.ca_path()).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let fp = infra_auth::tls_ca::fingerprint(&der);
    let extra = format!("tls:\n  trustedFingerprint: \"{fp}\"\n");
    Connector::start_with(&bin(), &env.server, &key, "dc1", &web(&up), &extra).unwrap();
    // A different pin is refused before the key is sent.
    let wrong = format!("tls:\n  trustedFingerprint: \"{}\"\n", "AB:".repeat(31) + "AB");
    let mut bad = Connector::start_with(&bin(), &env.server, &key, "dc1", &web(&up), &wrong);
    let err = match bad.as_mut() {
        Ok(_) => panic!("a connector with a wrong pin became ready"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("does not match tls.trustedFingerprint"), "{err}");
}
