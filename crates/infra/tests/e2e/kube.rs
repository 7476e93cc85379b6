//! Kubernetes through Infra: the real kubectl, through the gateway and a
//! connector, against a real kube-apiserver with RBAC. The API server is the
//! judge: what users may do comes from the RoleBindings the connector makes
//! from grants, and Forbidden messages are Kubernetes' own.

mod console;
mod recording;
mod requests;
mod streams;
mod workloads;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use infra_testkit::{Cli, Connector, KubeCluster, eventually};

use super::common::{Backend, Env, bin, path_with_infra, start};
use super::gateway::{connector_key, user};

const CLUSTER: &str = "k8s";

/// A cluster, a server and a connector serving the cluster.
pub struct Kube {
    pub cluster: KubeCluster,
    pub env: Env,
    _connector: Connector,
}

pub fn setup() -> Kube {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(KubeCluster::start()).expect("start kube-apiserver");
    for ns in ["dev", "prod"] {
        cluster.create_namespace(ns).unwrap();
    }
    let (token_file, ca_file) = rt.block_on(cluster.connector_identity()).expect("connector identity");
    let env = start(Backend::Sqlite);
    let key = connector_key(&env, "kc");
    let extra = format!(
        "  - name: {CLUSTER}\n    kind: kubernetes\n    url: {}\n    tokenFile: {}\n    caFile: {}\n",
        cluster.url(),
        token_file.display(),
        ca_file.display()
    );
    let connector = Connector::start_with(&bin(), &env.server, &key, "kc", &[], &extra).unwrap();
    Kube {
        cluster,
        env,
        _connector: connector,
    }
}

/// kubectl as the user of `cli`: their HOME, so the kubeconfig `infra login`
/// wrote (the gateway by address, the cluster's name as TLS server name) and
/// the `infra tokens` exec plugin with their session.
pub fn kubectl(cli: &Cli, args: &[&str]) -> infra_testkit::Output {
    let out = Command::new("kubectl")
        .env("HOME", cli.home())
        .env_remove("KUBECONFIG")
        .env("PATH", path_with_infra())
        .args(["--context", &format!("infra:{CLUSTER}"), "--request-timeout", "30s"])
        .args(args)
        .output()
        .expect("run kubectl");
    infra_testkit::Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The RoleBindings (all namespaces) and ClusterRoleBindings Infra manages.
fn managed_bindings(k: &Kube) -> Vec<String> {
    let mut names = Vec::new();
    for kind in ["rolebindings", "clusterrolebindings"] {
        let out = k.cluster.kubectl(&[
            "get",
            kind,
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=infra",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.roleRef.name} {.subjects[0].kind}:{.subjects[0].name}{\"\\n\"}{end}",
        ]);
        out.ok();
        names.extend(out.stdout.lines().map(str::to_owned));
    }
    names.sort();
    names
}

/// The kubeconfig of `cli` as kubectl reads it (normalised JSON).
fn config_view(cli: &Cli) -> serde_json::Value {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig(cli))
        .args(["config", "view", "--raw", "-o", "json"])
        .output()
        .expect("kubectl config view");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kubeconfig(cli: &Cli) -> PathBuf {
    cli.home().join(".kube/config")
}

#[test]
fn kubectl_through_infra_with_impersonation_and_rbac_sync() {
    let k = setup();
    let admin = &k.env.admin;

    // The connector reported namespaces and roles: impossible grants are
    // refused with a clear message.
    let bad_ns = eventually!(20, || {
        let out = admin.run(&["grants", "add", "nobody@example.com", "k8s.nope", "--role", "view"]);
        anyhow::ensure!(out.stderr.contains("namespace nope does not exist"), "{}", out.stderr);
        Ok(out)
    });
    bad_ns.failed();
    let alice = user(&k.env, "alice@example.com");
    let out = admin.run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "root"]);
    out.failed();
    assert!(
        out.stderr.contains("role root is not a grantable ClusterRole"),
        "{}",
        out.stderr
    );

    // Bindings Infra did not make are never touched.
    k.cluster
        .kubectl(&[
            "create",
            "rolebinding",
            "hand-made",
            "-n",
            "dev",
            "--clusterrole",
            "view",
            "--user",
            "carol@example.com",
        ])
        .ok();

    // view on dev: exactly one RoleBinding appears.
    admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "view"])
        .ok();
    let b = eventually!(10, || {
        let b = managed_bindings(&k);
        anyhow::ensure!(!b.is_empty(), "no binding yet");
        Ok(b)
    });
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].starts_with("dev/infra-user-alice-example-com-view-"), "{b:?}");
    assert!(b[0].ends_with(" view User:alice@example.com"), "{b:?}");

    // Log in again so kubeconfig has the cluster; kubectl goes through the
    // exec plugin, the gateway and the connector.
    super::common::login(&alice, &k.env.server, "alice@example.com", "user-password-1").ok();
    let cfg = std::fs::read_to_string(kubeconfig(&alice)).expect("kubeconfig written by infra login");
    assert!(cfg.contains("infra:k8s.dev"), "{cfg}");
    let out = kubectl(&alice, &["get", "pods", "-n", "dev"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("No resources found in dev namespace"), "{out:?}");
    // Kubernetes' own Forbidden, naming the user Infra impersonated.
    let out = kubectl(&alice, &["get", "pods", "-n", "prod"]);
    assert_ne!(out.status, 0);
    assert!(
        out.stderr
            .contains(r#"pods is forbidden: User "alice@example.com" cannot list resource "pods" in API group "" in the namespace "prod""#),
        "{out:?}"
    );
    let out = kubectl(&alice, &["delete", "pod", "web", "-n", "dev"]);
    assert!(
        out.stderr
            .contains(r#"User "alice@example.com" cannot delete resource "pods""#),
        "{out:?}"
    );
    // A large list, whole and in chunks (continue tokens pass through).
    let mut many = String::new();
    for i in 0..400 {
        many.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many-{i}\n  namespace: dev\ndata:\n  v: \"{}\"\n",
            "x".repeat(1000)
        ));
    }
    k.cluster.apply(&many).unwrap();
    for chunk in ["--chunk-size=0", "--chunk-size=50"] {
        let out = kubectl(&alice, &["get", "configmaps", "-n", "dev", "-o", "name", chunk]);
        assert_eq!(out.status, 0, "{out:?}");
        assert_eq!(
            out.stdout.lines().filter(|l| l.starts_with("configmap/many-")).count(),
            400,
            "{chunk}"
        );
    }
    let out = kubectl(&alice, &["auth", "can-i", "list", "pods", "-n", "dev"]);
    assert_eq!(out.stdout.trim(), "yes", "{out:?}");
    let out = kubectl(&alice, &["auth", "can-i", "list", "pods", "-n", "prod"]);
    assert_eq!(out.stdout.trim(), "no", "{out:?}");

    // kubectl --as is refused out loud.
    let out = kubectl(&alice, &["get", "pods", "-n", "dev", "--as", "kube-admin"]);
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains("impersonation is not allowed through Infra"),
        "{out:?}"
    );
    let out = kubectl(
        &alice,
        &[
            "get",
            "pods",
            "-n",
            "prod",
            "--as-group",
            "system:masters",
            "--as",
            "alice@example.com",
        ],
    );
    assert!(
        out.stderr.contains("impersonation is not allowed through Infra"),
        "{out:?}"
    );

    // Smuggled headers, by hand: never reach the API server.
    let token = super::gateway::token(&alice, CLUSTER);
    let gw = super::gateway::Gw::new(&k.env, &[CLUSTER], true);
    let (status, body) = gw.get(
        CLUSTER,
        "/api/v1/namespaces/prod/pods",
        Some(&token),
        &[("Impersonate-Group", "system:masters")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("impersonation is not allowed"), "{body}");
    // Named in `Connection`, the header is hop-by-hop: the first hop drops
    // it, and the API server judges plain alice.
    for headers in [
        vec![
            ("Impersonate-Group", "system:masters"),
            ("Connection", "Impersonate-Group"),
        ],
        vec![
            ("Impersonate-User", "kube-admin"),
            ("Connection", "keep-alive, Impersonate-User"),
        ],
    ] {
        let (status, body) = gw.get(CLUSTER, "/api/v1/namespaces/prod/pods", Some(&token), &headers);
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert!(
            body.contains("impersonation is not allowed") || body.contains(r#"User \"alice@example.com\" cannot list"#),
            "{headers:?}: {body:?}"
        );
    }
    // Only `Connection` naming the header (no header): stripped, and the
    // request is still just alice's.
    let (status, body) = gw.get(
        CLUSTER,
        "/api/v1/namespaces/prod/pods",
        Some(&token),
        &[("Connection", "Impersonate-Group")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#"User \"alice@example.com\" cannot list"#), "{body}");

    // edit on dev: one more RoleBinding; alice can create; revoking deletes
    // the binding (and the right) at once.
    admin
        .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "edit"])
        .ok();
    eventually!(10, || {
        let b = managed_bindings(&k);
        anyhow::ensure!(b.len() == 2, "{b:?}");
        Ok(())
    });
    let out = kubectl(
        &alice,
        &["create", "configmap", "settings", "-n", "dev", "--from-literal=a=1"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: dev\ndata:\n  b: \"2\"\n";
    let manifest = alice.home().join("cm.yaml");
    std::fs::write(&manifest, cm).unwrap();
    let out = kubectl(&alice, &["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out:?}");
    let out = kubectl(&alice, &["apply", "--server-side", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out:?}");
    let out = kubectl(&alice, &["delete", "configmap", "settings", "-n", "dev"]);
    assert_eq!(out.status, 0, "{out:?}");
    let grants = super::common::json(&admin.run(&["grants", "list", "--user", "alice@example.com", "-o", "json"]));
    let edit_id = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["role"] == "edit")
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .unwrap();
    let revoked = Instant::now();
    admin.run(&["grants", "remove", "--id", &edit_id]).ok();
    eventually!(10, || {
        let b = managed_bindings(&k);
        anyhow::ensure!(b.len() == 1, "{b:?}");
        Ok(())
    });
    eprintln!(
        "edit RoleBinding deleted {:?} after the grant was removed",
        revoked.elapsed()
    );
    let out = kubectl(&alice, &["create", "configmap", "again", "-n", "dev"]);
    assert!(out.stderr.contains("forbidden"), "{out:?}");

    // A group grant applies to members, and stops when one is removed.
    let bob = user(&k.env, "bob@example.com");
    admin.run(&["groups", "add", "sre"]).ok();
    admin.run(&["groups", "adduser", "sre", "bob@example.com"]).ok();
    admin
        .run(&["grants", "add", "--group", "sre", "k8s", "--role", "view"])
        .ok();
    // connect: Bob may authenticate even without the group.
    admin
        .run(&["grants", "add", "bob@example.com", "k8s", "--role", "connect"])
        .ok();
    // Bob has a kubeconfig of his own: login adds to it, logout takes only
    // what it added away.
    let foreign = "apiVersion: v1\nkind: Config\nclusters:\n- name: work\n  cluster:\n    server: https://work.example.com:6443\ncontexts:\n- name: work\n  context:\n    cluster: work\n    user: me\n    namespace: team\nusers:\n- name: me\n  user:\n    token: abc\ncurrent-context: work\npreferences: {}\n";
    std::fs::create_dir_all(bob.home().join(".kube")).unwrap();
    std::fs::write(kubeconfig(&bob), foreign).unwrap();
    let before = config_view(&bob);
    super::common::login(&bob, &k.env.server, "bob@example.com", "user-password-1").ok();
    assert_ne!(config_view(&bob), before);
    eventually!(10, || {
        let out = kubectl(&bob, &["get", "pods", "-n", "prod"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    admin.run(&["groups", "removeuser", "sre", "bob@example.com"]).ok();
    eventually!(5, || {
        let out = kubectl(&bob, &["get", "pods", "-n", "prod"]);
        anyhow::ensure!(
            out.stderr
                .contains(r#"User "bob@example.com" cannot list resource "pods""#),
            "{out:?}"
        );
        Ok(())
    });

    bob.run(&["logout"]).ok();
    k.cluster
        .kubectl(&["get", "rolebinding", "hand-made", "-n", "dev"])
        .ok();
    assert_eq!(config_view(&bob), before, "kubeconfig after login and logout");

    // Every request is in the audit log: who, what, where.
    let events = super::common::json(&admin.run(&["audit", "list", "--action", "kubernetes.request", "-o", "json"]));
    let details: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "alice@example.com")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("verb=list resource=pods namespace=dev") && d.contains("status=200")),
        "{details:#?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("verb=list resource=pods namespace=prod") && d.contains("status=403")),
        "{details:#?}"
    );
    let denied = super::common::json(&admin.run(&["audit", "list", "--action", "kubernetes.deny", "-o", "json"]));
    assert!(
        denied.as_array().unwrap().iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("impersonation is not allowed")),
        "{denied:#}"
    );
}
