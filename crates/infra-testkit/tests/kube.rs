//! A real kube-apiserver from the testkit: the admin can use it, the
//! aggregated ClusterRoles have rules, and the connector's deploy manifest
//! gives its service account what it needs and no more.

use infra_testkit::KubeCluster;

#[tokio::test]
async fn cluster_serves_rbac_and_the_connector_role() {
    let started = std::time::Instant::now();
    let kube = KubeCluster::start().await.unwrap();
    eprintln!("cluster ready in {:?} at {}", started.elapsed(), kube.url());

    let out = kube.kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(out.ok().stdout.contains("namespace/kube-system"), "{}", out.stdout);

    // `kubectl auth can-i` prints yes/no (and exits 1 on no).
    let can = |args: &[&str]| {
        let full: Vec<&str> = ["auth", "can-i"].iter().chain(args).copied().collect();
        let out = kube.kubectl(&full);
        assert!(out.stderr.is_empty() || out.status <= 1, "{out:?}");
        out.stdout.trim().to_string()
    };

    // view/edit/admin were filled as the aggregation controller would.
    let rules = kube.kubectl(&["get", "clusterrole", "view", "-o", "jsonpath={.rules}"]);
    assert!(rules.ok().stdout.contains("pods"), "view: {}", rules.stdout);
    kube.create_namespace("team-a").unwrap();
    kube.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edit, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
",
    )
    .unwrap();
    assert_eq!(can(&["list", "pods", "-n", "team-a", "--as=alice"]), "yes"); // from view
    assert_eq!(
        can(&["create", "deployments.apps", "-n", "team-a", "--as=alice"]),
        "yes"
    );
    assert_eq!(can(&["create", "rolebindings", "-n", "team-a", "--as=alice"]), "no"); // admin only
    assert_eq!(can(&["list", "pods", "-n", "default", "--as=alice"]), "no");

    let (token_file, ca_file) = kube.connector_identity().await.unwrap();
    assert_eq!(ca_file, kube.ca_file());
    let sa = "--as=system:serviceaccount:infra:infra-connector";
    assert_eq!(can(&["list", "pods", sa]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "infra", sa]), "no");
    assert_eq!(can(&["impersonate", "users", sa]), "yes");
    assert_eq!(can(&["impersonate", "groups", sa]), "yes");
    assert_eq!(can(&["impersonate", "serviceaccounts", sa]), "no");
    assert_eq!(can(&["watch", "namespaces", sa]), "yes");
    assert_eq!(can(&["list", "clusterroles", sa]), "yes");
    assert_eq!(can(&["create", "clusterrolebindings", sa]), "yes");
    assert_eq!(can(&["delete", "rolebindings", "-n", "team-a", sa]), "yes");
    assert_eq!(can(&["bind", "clusterroles", sa]), "yes");

    // The token is real: the API server accepts it as the service account.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(kube.ca_pem().unwrap().as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only(certs).build().unwrap();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", kube.url()))
            .bearer_auth(token.trim())
            .send()
    };
    assert_eq!(get("/api/v1/namespaces").await.unwrap().status(), 200);
    assert_eq!(get("/api/v1/namespaces/infra/secrets").await.unwrap().status(), 403);
}
