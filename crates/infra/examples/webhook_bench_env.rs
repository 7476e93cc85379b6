//! Sets up what `scripts/bench-webhook` measures: a real kube-apiserver
//! whose `MutatingWebhookConfiguration` (from `infra workload-issuers
//! webhook-config`) sends the pods of namespace `bench-on` to the
//! connector's admission webhook, and namespace `bench-off` where it is
//! not called; a service account mapped and granted an HTTP destination.
//! Prints one JSON line with the API server's address, CA and admin token
//! and the connector's admin port, then waits until its standard input
//! closes.
//!
//! `INFRA_BIN` is the `infra` binary to run (the release build, for
//! benchmarks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use infra_testkit::{Connector, HttpDest, KubeCluster, free_port, server_with_admin};

fn main() -> anyhow::Result<()> {
    let bin =
        PathBuf::from(std::env::var("INFRA_BIN").map_err(|_| anyhow::anyhow!("set INFRA_BIN to the infra binary"))?);
    let rt = tokio::runtime::Runtime::new()?;
    let cluster = rt.block_on(KubeCluster::start())?;
    for ns in ["bench-on", "bench-off"] {
        cluster.create_namespace(ns)?;
    }
    cluster.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: bench-on\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: bench-off\n",
    )?;
    let out = cluster.kubectl(&["label", "namespace", "bench-on", "infra.dev/inject=enabled"]);
    anyhow::ensure!(out.status == 0, "label: {}", out.stderr);
    let (token_file, ca_file) = rt.block_on(cluster.connector_identity())?;

    let (server, admin) = server_with_admin(&bin)?;
    let key = admin.connector_key("kc");
    let webhook_port = free_port();
    let extra = format!(
        "  - name: k8s\n    kind: kubernetes\n    url: {}\n    tokenFile: {}\n    caFile: {}\nwebhook:\n  listen: 127.0.0.1:{webhook_port}\n  names: [\"127.0.0.1\"]\n  image: registry.example/infra:bench\n",
        cluster.url(),
        token_file.display(),
        ca_file.display()
    );
    let web = HttpDest {
        name: "web".into(),
        url: "http://127.0.0.1:9".into(),
        upstream_token: None,
    };
    let connector = Connector::start_with(&bin, &server, &key, "kc", &[web], &extra)?;
    admin.run(&["users", "add", "app@bench-on.example", "--service"]).ok();
    admin
        .run(&["grants", "add", "app@bench-on.example", "web", "--role", "user"])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = admin.run(&[
            "workload-issuers",
            "add",
            "k8s",
            "--from-cluster",
            "k8s",
            "--map",
            "system:serviceaccount:bench-on:*=*@bench-on.example",
        ]);
        if out.status == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "workload issuer: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = admin.run(&[
        "workload-issuers",
        "webhook-config",
        "--cluster",
        "k8s",
        "--url",
        &format!("https://127.0.0.1:{webhook_port}"),
    ]);
    anyhow::ensure!(out.status == 0, "webhook-config: {}", out.stderr);
    cluster.apply(&out.stdout)?;
    // Until the connector has its certificate, pods are refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.kubectl_with_input(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: warm\n  namespace: bench-on\n  annotations: {infra.dev/connect: web}\nspec:\n  serviceAccountName: app\n  containers: [{name: app, image: app}]\n",
        );
        if out.status == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhook never admitted a pod: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = serde_json::json!({
        "apiserver": cluster.url(),
        "apiserverCa": cluster.ca_file(),
        "adminToken": cluster.admin_token(),
        "connectorAdminPort": connector.admin_port,
        "connectorPid": connector.pid(),
    });
    infra_testkit::hold_until_stdin_closes(&info);
    drop(connector);
    drop(server);
    drop(cluster);
    Ok(())
}
