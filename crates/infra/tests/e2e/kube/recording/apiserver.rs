//! A recorded `kubectl exec -it` the whole way a real cluster takes it:
//! kubectl → gateway → connector (recording) → the real kube-apiserver,
//! which checks the user's RBAC for pods/exec and opens the stream to the
//! pod's kubelet (the kubelet double, with the kubelet's own streaming
//! code, trusting only the API server's client certificate). The kubectl
//! the machine picks for a 1.20 API server speaks SPDY.

use infra_testkit::{KubeDouble, eventually};

use super::super::{kubectl as kubectl_k8s, setup};
use super::recordings;
use crate::e2e::common;
use crate::e2e::gateway::user;

#[test]
fn an_interactive_exec_through_the_real_api_server_is_recorded() {
    let k = setup();
    let kubelet = KubeDouble::start_kubelet(&k.cluster.kubelet_client_ca()).unwrap();
    k.cluster
        .add_node_with_pod("node-1", kubelet.port(), "dev", "shell")
        .unwrap();
    k.cluster
        .apply(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: pod-exec\n  labels:\n    infra.dev/grantable: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n  verbs: [get, list]\n- apiGroups: [\"\"]\n  resources: [pods/exec, pods/attach]\n  verbs: [create, get]\n",
        )
        .unwrap();
    let alice = user(&k.env, "alice@example.com");
    // The connector offers the new ClusterRole once it has read it.
    eventually!(30, || {
        let out = k
            .env
            .admin
            .run(&["grants", "add", "alice@example.com", "k8s.dev", "--role", "pod-exec"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });
    common::login(&alice, &k.env.server, "alice@example.com", "user-password-1").ok();
    eventually!(30, || {
        let out = kubectl_k8s(&alice, &["get", "pod", "shell", "-n", "dev"]);
        anyhow::ensure!(out.status == 0, "{out:?}");
        Ok(())
    });

    let cmd = "kubectl --context infra:k8s exec -it shell -n dev -- script -qfec sh /dev/null";
    common::shell_session(&alice, cmd, "echo via-$((40+2))", "via-42", "exit 3", || kubelet.log());

    // The API server reached the kubelet's own path, over SPDY.
    let log = kubelet.log();
    assert!(log.contains("/exec/dev/shell/main"), "{log}");
    assert!(log.contains("SPDY/3.1"), "{log}");

    let mut found = None;
    eventually!(30, || {
        let all = recordings(&k.env);
        let r = all
            .iter()
            .find(|r| r["destination"] == "k8s" && r["state"] == "stored")
            .ok_or_else(|| anyhow::anyhow!("no stored recording in {all:#?}"))?;
        found = Some(r.clone());
        Ok(())
    });
    let r = found.unwrap();
    assert_eq!(r["exit"], "exit 3", "{r:#}");
    assert!(r["target"].as_str().unwrap().starts_with("dev/shell"), "{r:#}");
    let id = r["id"].as_str().unwrap();
    common::assert_plays_in_order(&k.env, id, "echo via-$((40+2))", "via-42");
    assert!(common::cast(&k.env, id).contains(r#""r""#));
}
