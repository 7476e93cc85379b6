//! Sets up what `scripts/bench-kube` measures: a real kube-apiserver, an
//! Infra server, a connector serving the cluster through the tunnel and in
//! direct mode, a user with `view` on namespace `dev`, and a service account
//! with the same binding for the baseline. Prints one JSON line with the
//! addresses and tokens, then waits until its standard input closes.
//!
//! `INFRA_BIN` is the `infra` binary to run (the release build, for
//! benchmarks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use infra_testkit::{Cli, Connector, KubeCluster, free_port, server_with_admin};

fn main() -> anyhow::Result<()> {
    let bin =
        PathBuf::from(std::env::var("INFRA_BIN").map_err(|_| anyhow::anyhow!("set INFRA_BIN to the infra binary"))?);
    let rt = tokio::runtime::Runtime::new()?;
    let cluster = rt.block_on(KubeCluster::start())?;
    cluster.create_namespace("dev")?;
    // A few pods-like objects to list: ConfigMaps are stored without a
    // scheduler, pods too (ServiceAccount admission is off).
    let mut pods = String::new();
    for i in 0..20 {
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-{i}\n  namespace: dev\n  labels: {{app: web}}\nspec:\n  containers:\n  - name: main\n    image: nginx:1.25\n"
        ));
    }
    cluster.apply(&pods)?;
    cluster.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: bench\n  namespace: dev\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: bench-view\n  namespace: dev\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: bench\n  namespace: dev\n",
    )?;
    let direct_token = rt.block_on(cluster.service_account_token("dev", "bench"))?;
    let (token_file, ca_file) = rt.block_on(cluster.connector_identity())?;

    let (server, admin) = server_with_admin(&bin)?;
    let key = admin.connector_key("kc");
    let direct_port = free_port();
    let extra = format!(
        "  - name: k8s\n    kind: kubernetes\n    url: {}\n    tokenFile: {}\n    caFile: {}\ndirect:\n  listen: 127.0.0.1:{direct_port}\n",
        cluster.url(),
        token_file.display(),
        ca_file.display()
    );
    let connector = Connector::start_with(&bin, &server, &key, "kc", &[], &extra)?;
    admin.add_user("alice@example.com", "user-password-1");
    admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "view"])
        .ok();
    let alice = Cli::new(&bin)?;
    alice
        .login_password(&server, "alice@example.com", "user-password-1", &[])
        .ok();
    let token = alice
        .run(&["tokens", "--destination", "k8s", "--quiet"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    // Wait for the RoleBinding the grant makes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = cluster.kubectl(&[
            "get",
            "rolebindings",
            "-n",
            "dev",
            "-l",
            "app.kubernetes.io/managed-by=infra",
            "-o",
            "name",
        ]);
        if out.stdout.contains("rolebinding") {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the RoleBinding never appeared");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let info = serde_json::json!({
        "apiserver": cluster.url(),
        "apiserverCa": cluster.ca_file(),
        "adminToken": cluster.admin_token(),
        "directToken": direct_token,
        "gatewayPort": server.port,
        "serverCa": server.ca_path(),
        "connectorDirectPort": direct_port,
        "connectorDirectCa": connector.data_dir.join("data/direct-ca.pem"),
        "token": token,
        "connectorToken": std::fs::read_to_string(&token_file)?.trim(),
        "serverPid": server.pid(),
        "connectorPid": connector.pid(),
    });
    infra_testkit::hold_until_stdin_closes(&info);
    drop(connector);
    drop(server);
    drop(cluster);
    Ok(())
}
