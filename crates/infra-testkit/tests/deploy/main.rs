//! The connector's deploy artifacts against a real kube-apiserver 1.20: the
//! plain manifests (`deploy/kubernetes/connector.yaml`) and the Helm chart
//! (`deploy/helm/infra-connector`, rendered by Helm's own engine with several
//! value sets) pass `kubectl apply --dry-run=server --validate=strict`, the
//! chart makes the same objects as the plain manifests, and bad values fail
//! the render with a message that says what to set. Helm itself installs and
//! upgrades the chart on that API server. The server's chart: `server.rs`.

use std::collections::BTreeMap;

use infra_testkit::{Helm, KubeCluster};
use serde_json::{Value, json};

mod server;

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

    // The webhook's Service beside them (its configuration is what
    // `infra workload-issuers webhook-config` prints, tested end to end).
    let webhook_yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/webhook.yaml"
    ))
    .unwrap();
    let with_webhook = by_kind(kube.dry_run(&format!("{plain_yaml}\n---\n{webhook_yaml}")).unwrap());
    let service = &with_webhook[&("Service".into(), "infra-connector".into())];
    assert_eq!(service["spec"]["ports"][0]["port"], 8443);
    assert_eq!(
        service["spec"]["selector"],
        plain[&("Deployment".into(), "infra-connector".into())]["spec"]["selector"]["matchLabels"]
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
    assert_eq!(can(&["get", "/openid/v1/jwks"]), "yes");

    // With the admission webhook: its Service, its port, its configuration
    // (the caBundle given), and the webhook section of the connector's.
    let values = [
        LIKE_PLAIN,
        "webhook: {enabled: true, caBundle: Q0E=, namespaceLabels: {team: shop}}\n",
    ];
    helm.lint(&chart, &values).ok();
    let rendered = helm.template(&chart, "infra-connector", "infra", &values).unwrap();
    let objects = by_kind(kube.dry_run(&rendered.manifest).unwrap());
    let hook = &objects[&("MutatingWebhookConfiguration".into(), "infra-connector".into())]["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["name"], "infra-connector");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(hook["namespaceSelector"]["matchLabels"], json!({"team": "shop"}));
    assert_eq!(hook["sideEffects"], "None");
    let service = &objects[&("Service".into(), "infra-connector".into())];
    assert_eq!(service["spec"]["ports"][0]["port"], 8443);
    let config = connector_config(&objects[&("ConfigMap".into(), "infra-connector".into())]).unwrap();
    assert_eq!(config["webhook"]["names"], json!(["infra-connector.infra.svc"]));
    assert_eq!(config["webhook"]["listen"], "0.0.0.0:8443");

    eprintln!(
        "rendered, dry-run applied, compared and installed in {:?}",
        started.elapsed()
    );
}

/// Rendering `chart` as `release` in `infra` with `values` fails, saying
/// `expected`.
pub(crate) fn refuses(helm: &Helm, chart: &std::path::Path, release: &str, values: &[&str], expected: &str) {
    let out = helm.try_template(chart, release, "infra", values);
    out.failed();
    assert!(
        out.stderr.contains(expected),
        "values {values:?}: expected {expected:?} in\n{}",
        out.stderr
    );
}

#[test]
fn helm_chart_refuses_bad_values_with_what_to_set() {
    let helm = Helm::new().unwrap();
    let chart = helm.chart(CHART);
    let check = |extra: &str, expected: &str| refuses(&helm, &chart, "infra-connector", &[LIKE_PLAIN, extra], expected);
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

/// Objects by (kind, name), sorted.
pub(crate) fn by_kind(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
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
