//! Just-in-time access to a cluster: a developer asks for `view`, an SRE
//! approves, kubectl works at once, and when the time is up the grant ends
//! by itself and the connector cuts the developer's open watch.

use std::process::Command;
use std::time::{Duration, Instant};

use infra_testkit::eventually;

use super::{kubectl, path_with_infra, setup};
use crate::e2e::common::{self, json};
use crate::e2e::gateway::user;
use crate::e2e::requests::request;

#[test]
fn a_developer_asks_an_sre_approves_kubectl_works_and_the_watch_is_cut_when_time_is_up() {
    let k = setup();
    let a = &k.env.admin;
    let dev = user(&k.env, "dev@example.com");
    let sre = user(&k.env, "sre@example.com");
    for (g, who) in [("devs", "dev@example.com"), ("sre", "sre@example.com")] {
        a.run(&["groups", "add", g]).ok();
        a.run(&["groups", "adduser", g, who]).ok();
    }
    a.run(&[
        "access-policy",
        "add",
        "k8s-view",
        "--requesters",
        "devs",
        "--resource",
        "k8s",
        "--resource",
        "k8s.*",
        "--role",
        "view",
        "--max",
        "1h",
        "--approvers",
        "sre",
    ])
    .ok();
    let r = request(
        &dev,
        &["k8s.dev", "--role", "view", "--for", "25s", "--reason", "INC-42"],
    );
    let id = r["id"].as_str().unwrap().to_owned();
    let means = r["asks"][0]["means"].as_str().unwrap();
    assert!(
        means.contains("ClusterRole view") && means.contains("namespace dev"),
        "{r:#}"
    );
    // What the role allows, as the cluster says.
    assert!(means.contains("(allows: get, list, watch: configmaps"), "{means}");
    assert!(
        dev.run(&["request", "approve", &id])
            .failed()
            .stderr
            .contains("your own")
    );

    let asked = Instant::now();
    sre.run(&["request", "approve", &id, "--reason", "on call"]).ok();
    common::login(&dev, &k.env.server, "dev@example.com", "user-password-1").ok();
    eventually!(10, || {
        let out = kubectl(&dev, &["get", "pods", "-n", "dev"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    let mut watch = Command::new("kubectl")
        .env("HOME", dev.home())
        .env_remove("KUBECONFIG")
        .env("PATH", path_with_infra())
        .args([
            "--context",
            "infra:k8s",
            "get",
            "configmaps",
            "-n",
            "dev",
            "--watch",
            "-o",
            "name",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        watch.try_wait().unwrap().is_none(),
        "the watch ended while the grant held"
    );
    // The grant ends 25 s after approval; the connector checks every second.
    let deadline = asked + Duration::from_secs(45);
    let ended = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = watch.kill();
    assert!(ended.is_some(), "the open watch outlived the request's time");
    assert!(asked.elapsed() >= Duration::from_secs(20), "cut before the time was up");
    let after = kubectl(&dev, &["get", "pods", "-n", "dev"]);
    assert_ne!(after.status, 0, "kubectl still works after the time is up: {after:?}");

    // The story, from the request to its end and the session it cut.
    eventually!(10, || {
        let story = json(a.run(&["audit", "list", "--request", &id, "-o", "json"]).ok());
        let events: Vec<(String, String)> = story
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["detail"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let has = |action: &str| events.iter().any(|(a, _)| a == action);
        anyhow::ensure!(
            events.first().is_some_and(|(a, _)| a == "request.create")
                && has("request.approve")
                && has("request.grant")
                && has("request.end"),
            "{events:?}"
        );
        anyhow::ensure!(
            events
                .iter()
                .any(|(a, d)| a == "kubernetes.deny" && d.starts_with("session cut:")),
            "the cut watch is not in the story: {events:?}"
        );
        Ok(())
    });
}
