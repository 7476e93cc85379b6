//! The server's chart (`deploy/helm/infra-server`) through the same API
//! server: replicas on PostgreSQL with its secrets kept out of the
//! Deployment, one replica on SQLite, and values that cannot work refused
//! with what to set.

use infra_testkit::{Helm, KubeCluster};
use serde_json::{Value, json};

use super::{by_kind, refuses};

const SERVER_CHART: &str = "infra-server";
/// The password in the database URL and the root key of [`SERVER_VALUES`]:
/// neither may appear in the Deployment, only in the chart's Secret.
const SERVER_DB_PASSWORD: &str = "db-pass-7f3a9c";
const SERVER_ROOT_KEY: &str = "q9XcL3vZqKUtdb0W2s1y2dM5pN8rT6yH0aB4cD7eF9g=";

/// Two replicas on PostgreSQL, the database URL and the root key given as
/// values (the chart keeps both in its Secret), a public URL and a gateway
/// domain, for release `infra-server` in `infra`.
const SERVER_VALUES: &str = "
replicas: 2
publicUrl: https://infra.example.com:4443
gatewayDomain: apps.example.com
database:
  url: postgres://infra:db-pass-7f3a9c@postgres.db.svc:5432/infra
rootKey:
  value: q9XcL3vZqKUtdb0W2s1y2dM5pN8rT6yH0aB4cD7eF9g=
";

/// Over [`SERVER_VALUES`]: both secrets in Secrets of the user's, no
/// metrics listener (the probes go to the HTTPS port).
const SERVER_EXISTING_SECRETS: &str = "
database: {url: '', existingSecret: infra-db, existingSecretKey: uri}
rootKey: {value: '', existingSecret: infra-root-key}
metrics: {enabled: false}
";

/// Over [`SERVER_VALUES`]: one replica on SQLite, in a claim of the chart's.
const SERVER_SQLITE: &str = "
replicas: 1
database: {url: ''}
persistence: {enabled: true, size: 5Gi}
";

#[tokio::test]
async fn server_helm_chart_passes_the_api_server() {
    let started = std::time::Instant::now();
    let helm = Helm::new().unwrap();
    let chart = helm.chart(SERVER_CHART);
    let kube = KubeCluster::start().await.unwrap();
    kube.create_namespace("infra").unwrap();

    // Two replicas on PostgreSQL.
    helm.lint(&chart, &[SERVER_VALUES]).ok();
    let rendered = helm
        .template(&chart, "infra-server", "infra", &[SERVER_VALUES])
        .unwrap();
    for secret in [SERVER_DB_PASSWORD, SERVER_ROOT_KEY] {
        assert!(
            !rendered.manifest.contains(secret),
            "{secret} in plain text:\n{}",
            rendered.manifest
        );
        assert!(
            !rendered.notes.contains(secret),
            "{secret} in the notes:\n{}",
            rendered.notes
        );
    }
    let objects = by_kind(kube.dry_run(&for_kube_1_20(&rendered.manifest)).unwrap());
    let names: Vec<String> = objects.keys().map(|(kind, name)| format!("{kind}/{name}")).collect();
    assert_eq!(
        names,
        [
            "Deployment/infra-server",
            "PodDisruptionBudget/infra-server",
            "Secret/infra-server",
            "Service/infra-server",
            "Service/infra-server-metrics",
        ]
    );
    let secret = &objects[&("Secret".into(), "infra-server".into())];
    let secret_data = secret["data"].as_object().unwrap();
    assert_eq!(secret_data.keys().collect::<Vec<_>>(), ["databaseUrl", "rootKey"]);
    let deployment = &objects[&("Deployment".into(), "infra-server".into())];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // The database URL reaches the server as INFRA_DB, from the Secret; the
    // root key as the file --root-key-file names, from the same Secret.
    assert_eq!(
        *named(&container["env"], "INFRA_DB").unwrap(),
        json!({"name": "INFRA_DB", "valueFrom": {"secretKeyRef": {"name": "infra-server", "key": "databaseUrl"}}})
    );
    #[rustfmt::skip]
    let args = json!([
        "server", "--listen", "0.0.0.0:4443", "--data-dir", "/var/lib/infra",
        "--public-url", "https://infra.example.com:4443",
        "--advertise-url", "https://$(POD_IP):4443",
        "--tls-san", "$(POD_IP)",
        "--tls-san", "infra-server,infra-server.infra,infra-server.infra.svc,infra-server.infra.svc.cluster.local",
        "--root-key-file", "/etc/infra/root-key/root.key",
        "--gateway-domain", "apps.example.com",
        "--metrics-listen", "0.0.0.0:9090",
    ]);
    assert_eq!(container["args"], args, "no --db: the URL is not in the arguments");
    let root_key = &named(&pod["volumes"], "root-key").unwrap()["secret"];
    assert_eq!(root_key["secretName"], "infra-server");
    assert_eq!(root_key["items"], json!([{"key": "rootKey", "path": "root.key"}]));
    // Neither secret, in plain text or as the Secret holds it.
    let deployment_text = deployment.to_string();
    let encoded = secret_data.values().filter_map(Value::as_str);
    for secret in [SERVER_DB_PASSWORD, SERVER_ROOT_KEY].into_iter().chain(encoded) {
        assert!(
            !deployment_text.contains(secret),
            "{secret} in the Deployment: {deployment_text}"
        );
    }
    // Probes on the metrics listener; the restricted security context.
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics", "scheme": "HTTP"})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/livez", "port": "metrics", "scheme": "HTTP"})
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["automountServiceAccountToken"], false);
    let checksums = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert!(checksums["checksum/secret"].is_string());
    let service = &objects[&("Service".into(), "infra-server".into())];
    assert_eq!(
        (
            &service["spec"]["ports"][0]["port"],
            &service["spec"]["ports"][0]["targetPort"]
        ),
        (&json!(4443), &json!("https"))
    );
    let budget = &objects[&("PodDisruptionBudget".into(), "infra-server".into())];
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(
        rendered.notes.contains("2 replicas on PostgreSQL"),
        "{}",
        rendered.notes
    );
    assert!(
        rendered.notes.contains("server: https://infra.example.com:4443"),
        "{}",
        rendered.notes
    );
    assert!(
        rendered.notes.contains("workload-issuers add CLUSTER --from-cluster"),
        "{}",
        rendered.notes
    );

    // Secrets of the user's: the chart makes none and names theirs; without
    // a metrics listener the probes ask the HTTPS port.
    let values = [SERVER_VALUES, SERVER_EXISTING_SECRETS];
    helm.lint(&chart, &values).ok();
    let rendered = helm.template(&chart, "infra-server", "infra", &values).unwrap();
    let objects = by_kind(kube.dry_run(&for_kube_1_20(&rendered.manifest)).unwrap());
    let names: Vec<String> = objects.keys().map(|(kind, name)| format!("{kind}/{name}")).collect();
    assert_eq!(
        names,
        [
            "Deployment/infra-server",
            "PodDisruptionBudget/infra-server",
            "Service/infra-server",
        ],
        "no Secret when both are the user's, no metrics Service without metrics"
    );
    let deployment = &objects[&("Deployment".into(), "infra-server".into())];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        named(&container["env"], "INFRA_DB").unwrap()["valueFrom"],
        json!({"secretKeyRef": {"name": "infra-db", "key": "uri"}})
    );
    let root_key = &named(&pod["volumes"], "root-key").unwrap()["secret"];
    assert_eq!(root_key["secretName"], "infra-root-key");
    assert_eq!(root_key["items"], json!([{"key": "rootKey", "path": "root.key"}]));
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "https", "scheme": "HTTPS"})
    );
    assert!(
        !container["args"].to_string().contains("--metrics-listen"),
        "{}",
        container["args"]
    );
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"].is_null(),
        "no checksum of a Secret the chart does not make"
    );

    // One replica on SQLite: a claim, and the old pod stops before the new.
    let values = [SERVER_VALUES, SERVER_SQLITE];
    helm.lint(&chart, &values).ok();
    let rendered = helm.template(&chart, "infra-server", "infra", &values).unwrap();
    let objects = by_kind(kube.dry_run(&rendered.manifest).unwrap());
    let names: Vec<String> = objects.keys().map(|(kind, name)| format!("{kind}/{name}")).collect();
    assert_eq!(
        names,
        [
            "Deployment/infra-server",
            "PersistentVolumeClaim/infra-server",
            "Secret/infra-server",
            "Service/infra-server",
            "Service/infra-server-metrics",
        ],
        "no PodDisruptionBudget for one replica"
    );
    let claim = &objects[&("PersistentVolumeClaim".into(), "infra-server".into())];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(claim["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    let deployment = &objects[&("Deployment".into(), "infra-server".into())];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(named(&pod["containers"][0]["env"], "INFRA_DB").is_none());
    assert_eq!(
        named(&pod["volumes"], "data").unwrap()["persistentVolumeClaim"]["claimName"],
        "infra-server"
    );

    // Helm installs the two replicas for real, and picks the
    // PodDisruptionBudget version this API server has.
    let release = helm
        .upgrade_install(&kube, &chart, "infra-server", "infra", &[SERVER_VALUES])
        .unwrap();
    assert_eq!(
        (&release["status"], &release["revision"]),
        (&json!("deployed"), &json!(1))
    );
    let budget = kube.kubectl(&[
        "get",
        "poddisruptionbudget",
        "infra-server",
        "-n",
        "infra",
        "-o",
        "jsonpath={.apiVersion} {.spec.maxUnavailable}",
    ]);
    assert_eq!(budget.ok().stdout, "policy/v1beta1 1");

    eprintln!(
        "server chart rendered, dry-run applied and installed in {:?}",
        started.elapsed()
    );
}

#[test]
fn server_helm_chart_refuses_bad_values_with_what_to_set() {
    let helm = Helm::new().unwrap();
    let chart = helm.chart(SERVER_CHART);
    let check = |extra: &str, expected: &str| refuses(&helm, &chart, "infra-server", &[SERVER_VALUES, extra], expected);
    check(
        "database: {url: ''}\n",
        "replicas is 2, but no PostgreSQL is configured: set database.url (postgres://USER:PASSWORD@HOST:5432/DATABASE) or database.existingSecret",
    );
    check(
        "replicas: 1\ndatabase: {url: ''}\n",
        "no database: set database.url (postgres://USER:PASSWORD@HOST:5432/DATABASE) or database.existingSecret; or, for one replica on SQLite, persistence.enabled=true",
    );
    check(
        "persistence: {enabled: true}\n",
        "persistence.enabled is for one replica on SQLite (the claim is ReadWriteOnce), but replicas is 2",
    );
    check("rootKey: {value: ''}\n", "rootKey.value is required");
    check(
        "rootKey: {value: c2hvcnQ=}\n",
        "rootKey.value must be 32 random bytes in base64",
    );
    check(
        "database: {existingSecret: infra-db, existingSecretKey: ''}\n",
        "database.existingSecretKey is required with database.existingSecret",
    );
    check(
        "database: {url: 'mysql://db.example.com/infra'}\n",
        "'mysql://db.example.com/infra' does not match pattern",
    );
    check(
        "publicUrl: http://infra.example.com\n",
        "'http://infra.example.com' does not match pattern",
    );
    check("replica: 3\n", "additional properties 'replica' not allowed");
    check(
        "database: {uri: 'postgres://db.example.com/infra'}\n",
        "additional properties 'uri' not allowed",
    );
    check(
        "service: {type: Ingress}\n",
        "value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'",
    );
}

/// The rendered manifest as Helm renders it for the test's API server 1.20.
/// `helm template` assumes a current cluster, where PodDisruptionBudget is
/// `policy/v1` (Kubernetes 1.21 on); 1.20 serves the same object only as
/// `policy/v1beta1`. Installed, the chart picks the version the cluster has
/// (checked with `upgrade --install`).
fn for_kube_1_20(manifest: &str) -> String {
    assert!(manifest.contains("\napiVersion: policy/v1\n"), "{manifest}");
    manifest.replace("\napiVersion: policy/v1\n", "\napiVersion: policy/v1beta1\n")
}

/// The entry called `name` of a list of named objects (env, volumes).
fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v["name"] == name)
}
