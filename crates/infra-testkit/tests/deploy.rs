//! The connector's deploy artifacts against a real kube-apiserver 1.20: the
//! plain manifests (`deploy/kubernetes/connector.yaml`) and the Helm chart
//! (`deploy/helm/infra-connector`, rendered by Helm's own engine with several
//! value sets) pass `kubectl apply --dry-run=server --validate=strict`, the
//! chart makes the same objects as the plain manifests, and bad values fail
//! the render with a message that says what to set. Helm itself installs and
//! upgrades the chart on that API server. The server's chart
//! (`deploy/helm/infra-server`) goes through the same API server: replicas on
//! PostgreSQL with its secrets kept out of the Deployment, one replica on
//! SQLite, and values that cannot work refused with what to set.

use std::collections::BTreeMap;

use infra_testkit::{Helm, KubeCluster};
use serde_json::{Value, json};

const CHART: &str = "infra-connector";

/// The values that make the chart render what the plain manifests hold
/// (their placeholders included), for release `infra-connector` in `infra`.
const LIKE_PLAIN: &str = "
server: https://infra.example.com
name: kubernetes
accessKey: REPLACE-ME
tls: {trustedFingerprint: REPLACE}
cluster: {name: cluster}
";

/// A Secret of the user's, a CA certificate instead of a fingerprint, a
/// second destination with a credential from an extra volume, JSON logs.
const EXISTING_SECRET_TWO_DESTINATIONS: &str = "
server: https://infra.example.com:4443
name: dc1
existingSecret: dc1-key
existingSecretKey: key
tls:
  caCert: |
    -----BEGIN CERTIFICATE-----
    MIIBAAAA
    -----END CERTIFICATE-----
cluster: {name: prod, rbacSync: false, labels: {env: prod}}
destinations:
  - name: grafana
    kind: http
    url: http://grafana.monitoring.svc:3000
    upstreamAuth: {bearerTokenFile: /etc/grafana/token}
replicas: 2
logFormat: json
dataDir: {sizeLimit: 1Gi}
extraVolumes: [{name: grafana, secret: {secretName: grafana-token}}]
extraVolumeMounts: [{name: grafana, mountPath: /etc/grafana, readOnly: true}]
";

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
async fn plain_manifests_and_helm_chart_pass_the_api_server() {
    let started = std::time::Instant::now();
    let helm = Helm::new().unwrap();
    let chart = helm.chart(CHART);
    let kube = KubeCluster::start().await.unwrap();
    // Namespaced objects need their namespace (the plain manifests make
    // `infra`, but a dry run stores nothing; Helm has --create-namespace).
    kube.create_namespace("infra").unwrap();
    kube.create_namespace("tools").unwrap();

    // The check can fail: a misspelt field is refused, not dropped.
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: infra}\ndatta: {a: b}\n";
    let err = kube.dry_run(typo).unwrap_err().to_string();
    assert!(err.contains("datta"), "{err}");

    // The plain manifests.
    let plain_yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/connector.yaml"
    ))
    .unwrap();
    let plain = by_kind(kube.dry_run(&plain_yaml).unwrap());
    let kinds: Vec<&str> = plain.keys().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Namespace",
            "Secret",
            "ServiceAccount"
        ]
    );

    // The chart with the plain manifests' values makes the same objects,
    // apart from labels, annotations, the selector and the image tag (and
    // the Namespace, which `helm install --create-namespace` makes).
    helm.lint(&chart, &[LIKE_PLAIN]).ok();
    let rendered = helm
        .template(&chart, "infra-connector", "infra", &[LIKE_PLAIN])
        .unwrap();
    let from_chart = by_kind(kube.dry_run(&rendered.manifest).unwrap());
    let mut expected = plain.clone();
    expected.remove(&("Namespace".to_string(), "infra".to_string()));
    assert_eq!(
        from_chart.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, object) in &expected {
        assert_eq!(
            comparable(&from_chart[key]).unwrap(),
            comparable(object).unwrap(),
            "{key:?} differs between the chart and deploy/kubernetes/connector.yaml"
        );
    }
    let deployment = &from_chart[&("Deployment".into(), "infra-connector".into())];
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], *pod_labels);
    assert_eq!(pod_labels["app.kubernetes.io/instance"], "infra-connector");
    let checksums = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert!(checksums["checksum/config"].is_string() && checksums["checksum/secret"].is_string());
    assert!(
        rendered.notes.contains("infra grants add EMAIL cluster --role view"),
        "{}",
        rendered.notes
    );

    // A Secret of the user's and a second destination.
    let values = EXISTING_SECRET_TWO_DESTINATIONS;
    helm.lint(&chart, &[values]).ok();
    let rendered = helm.template(&chart, "dc1", "tools", &[values]).unwrap();
    let objects = by_kind(kube.dry_run(&rendered.manifest).unwrap());
    let names: Vec<String> = objects.keys().map(|(kind, name)| format!("{kind}/{name}")).collect();
    assert_eq!(
        names,
        [
            "ClusterRole/dc1-infra-connector",
            "ClusterRoleBinding/dc1-infra-connector",
            "ConfigMap/dc1-infra-connector",
            "Deployment/dc1-infra-connector",
            "ServiceAccount/dc1-infra-connector",
        ],
        "no Secret when existingSecret is set"
    );
    let binding = &objects[&("ClusterRoleBinding".into(), "dc1-infra-connector".into())];
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "dc1-infra-connector", "namespace": "tools"}])
    );
    let config_map = &objects[&("ConfigMap".into(), "dc1-infra-connector".into())];
    assert_eq!(
        connector_config(config_map).unwrap(),
        json!({
            "server": "https://infra.example.com:4443",
            "name": "dc1",
            "accessKeyFile": "/etc/infra/secret/key",
            "dataDir": "/var/lib/infra",
            "adminListen": "0.0.0.0:4480",
            "tls": {"caFile": "/etc/infra/server-ca.pem"},
            "destinations": [
                {"name": "prod", "kind": "kubernetes", "inCluster": true, "rbacSync": false, "labels": {"env": "prod"}},
                {"name": "grafana", "kind": "http", "url": "http://grafana.monitoring.svc:3000",
                 "upstreamAuth": {"bearerTokenFile": "/etc/grafana/token"}},
            ],
        })
    );
    assert!(
        config_map["data"]["server-ca.pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let deployment = &objects[&("Deployment".into(), "dc1-infra-connector".into())];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "dc1-key");
    assert_eq!(pod["volumes"][2]["emptyDir"]["sizeLimit"], "1Gi");
    assert_eq!(pod["volumes"][3]["secret"]["secretName"], "grafana-token");
    let container = &pod["containers"][0];
    assert_eq!(container["env"], json!([{"name": "INFRA_LOG_FORMAT", "value": "json"}]));
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/infra/config.yaml",
            "/etc/infra/server-ca.pem",
            "/etc/infra/secret",
            "/var/lib/infra",
            "/etc/grafana"
        ]
    );
    assert!(
        rendered.notes.contains("infra grants add EMAIL prod --role view"),
        "{}",
        rendered.notes
    );

    // Helm installs it for real (its kubeVersion constraint is checked
    // against the server), upgrades it, and the service account it made has
    // exactly the connector's permissions.
    let release = helm.upgrade_install(&kube, &chart, "dc1", "tools", &[values]).unwrap();
    assert_eq!(
        (&release["status"], &release["revision"]),
        (&json!("deployed"), &json!(1))
    );
    let release = helm
        .upgrade_install(&kube, &chart, "dc1", "tools", &[values, "replicas: 3\n"])
        .unwrap();
    assert_eq!(
        (&release["status"], &release["revision"]),
        (&json!("deployed"), &json!(2))
    );
    let replicas = kube.kubectl(&[
        "get",
        "deployment",
        "dc1-infra-connector",
        "-n",
        "tools",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas.ok().stdout, "3");
    let can = |args: &[&str]| {
        let sa = "--as=system:serviceaccount:tools:dc1-infra-connector";
        let full: Vec<&str> = ["auth", "can-i"].iter().chain(args).chain([&sa]).copied().collect();
        kube.kubectl(&full).stdout.trim().to_string()
    };
    assert_eq!(can(&["impersonate", "users"]), "yes");
    assert_eq!(can(&["impersonate", "groups"]), "yes");
    assert_eq!(can(&["impersonate", "serviceaccounts"]), "no");
    assert_eq!(can(&["watch", "namespaces"]), "yes");
    assert_eq!(can(&["create", "rolebindings", "-n", "default"]), "yes");
    assert_eq!(can(&["bind", "clusterroles"]), "yes");
    assert_eq!(can(&["list", "pods"]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "tools"]), "no");

    eprintln!(
        "rendered, dry-run applied, compared and installed in {:?}",
        started.elapsed()
    );
}

#[test]
fn helm_chart_refuses_bad_values_with_what_to_set() {
    let helm = Helm::new().unwrap();
    let chart = helm.chart(CHART);
    let check = |extra: &str, expected: &str| {
        let out = helm.try_template(&chart, "infra-connector", "infra", &[LIKE_PLAIN, extra]);
        out.failed();
        assert!(
            out.stderr.contains(expected),
            "values {extra:?}: expected {expected:?} in\n{}",
            out.stderr
        );
    };
    check(
        "accessKey: ''\n",
        "accessKey is required (from 'infra keys add --connector",
    );
    check("tls: {caFile: /ca.pem}\n", "set exactly one of tls.trustedFingerprint"); // and the fingerprint
    check(
        "tls: {trustedFingerprint: ''}\n",
        "set exactly one of tls.trustedFingerprint",
    );
    check("cluster: {name: ''}\n", "cluster.name is required");
    check("cluster: {name: Prod}\n", "'Prod' does not match pattern");
    check("name: ''\n", "name is required");
    check(
        "server: http://infra.example.com\n",
        "'http://infra.example.com' does not match pattern",
    );
    check(
        "sever: https://infra.example.com\n",
        "additional properties 'sever' not allowed",
    );
    check(
        "image: {tag: latest, pulPolicy: Always}\n",
        "additional properties 'pulPolicy' not allowed",
    );
    check(
        "cluster: {enabled: false}\n",
        "no destinations: set cluster.name, or cluster.enabled=false with entries in destinations",
    );
    check(
        "serviceAccount: {create: false}\n",
        "serviceAccount.name is required when serviceAccount.create is false",
    );

    // Without the cluster, only the extra destinations are served.
    let values = "cluster: {enabled: false}\ndestinations: [{name: web, kind: http, url: 'http://web:80'}]\n";
    let rendered = helm
        .template(&chart, "infra-connector", "infra", &[LIKE_PLAIN, values])
        .unwrap();
    assert!(
        rendered.manifest.contains("- kind: http\n        name: web"),
        "{}",
        rendered.manifest
    );
    assert!(!rendered.manifest.contains("inCluster"), "{}", rendered.manifest);
    assert!(!rendered.notes.contains("infra grants add"), "{}", rendered.notes);
}

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
    assert!(!rendered.notes.contains("workload-issuers"), "{}", rendered.notes);

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
    assert!(
        rendered.notes.contains("infra workload-issuers add"),
        "{}",
        rendered.notes
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
    let check = |extra: &str, expected: &str| {
        let out = helm.try_template(&chart, "infra-server", "infra", &[SERVER_VALUES, extra]);
        out.failed();
        assert!(
            out.stderr.contains(expected),
            "values {extra:?}: expected {expected:?} in\n{}",
            out.stderr
        );
    };
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

/// Objects by (kind, name), sorted.
fn by_kind(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|o| {
            let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
            ((field(&o["kind"]), field(&o["metadata"]["name"])), o)
        })
        .collect()
}

/// An object as the server would store it, less what deliberately differs
/// between the chart and the plain manifests: server-set and Helm metadata
/// (labels, annotations), the Deployment's selector and pod labels (the
/// chart's include the release), the image and its pull policy. The
/// ConfigMap's connector configuration is compared as data, not text.
fn comparable(object: &Value) -> anyhow::Result<Value> {
    let mut o = object.clone();
    let meta = &object["metadata"];
    o["metadata"] = json!({"name": meta["name"], "namespace": meta["namespace"]});
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    match object["kind"].as_str() {
        Some("Deployment") => {
            if let Some(spec) = o["spec"].as_object_mut() {
                spec.remove("selector");
            }
            if let Some(template) = o["spec"]["template"].as_object_mut() {
                template.remove("metadata");
            }
            let containers = o["spec"]["template"]["spec"]["containers"].as_array_mut();
            for c in containers.into_iter().flatten().filter_map(Value::as_object_mut) {
                c.remove("image");
                c.remove("imagePullPolicy");
            }
        }
        Some("ConfigMap") => o["data"]["config.yaml"] = connector_config(object)?,
        _ => {}
    }
    Ok(o)
}

/// The connector configuration in a ConfigMap, parsed.
fn connector_config(config_map: &Value) -> anyhow::Result<Value> {
    let text = config_map["data"]["config.yaml"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no data.config.yaml in {config_map}"))?;
    Ok(yaml_serde::from_str(text)?)
}
