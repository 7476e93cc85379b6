//! `infra workload-issuers`: issuers whose tokens workloads exchange for
//! Infra credentials.

use anyhow::Context;
use clap::Subcommand;

use crate::client::{Api, enc};
use crate::output::{OutputArg, print};

#[derive(Debug, Subcommand)]
pub enum WorkloadIssuersCmd {
    /// Trust an issuer's JWTs (Kubernetes service-account tokens, CI OIDC tokens) for token exchange.
    #[command(after_help = "\
A Kubernetes cluster Infra serves (its connector reports the issuer and keys, and follows rotations):
  infra workload-issuers add prod --from-cluster prod \\
    --map 'system:serviceaccount:shop:*=*@shop.example'        # every service account of namespace shop
  infra workload-issuers add prod --from-cluster prod \\
    --map system:serviceaccount:shop:api=orders@svc.example    # one service account
Any other issuer, by its keys:
  infra workload-issuers add ci --issuer https://kubernetes.default.svc --jwks-file jwks.json \\
    --audience infra --map system:serviceaccount:ci:deployer=deployer@ci.example.com
A pattern's service accounts must exist when a workload exchanges a token ('infra users add api@shop.example --service').")]
    Add {
        name: String,
        /// The tokens' issuer (`iss`).
        #[arg(long, required_unless_present = "from_cluster", conflicts_with = "from_cluster")]
        issuer: Option<String>,
        /// A Kubernetes destination: trust the service-account issuer and keys its connector reports.
        #[arg(long, value_name = "CLUSTER", conflicts_with_all = ["jwks_url", "jwks_file"])]
        from_cluster: Option<String>,
        /// Where the issuer publishes its keys.
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// Its keys, from a file (a JWKS document).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// The audience its tokens must carry for Infra [default with --from-cluster: this server's URL,
        /// which the admission webhook puts in the pods' projected tokens].
        #[arg(long, required_unless_present = "from_cluster")]
        audience: Option<String>,
        /// The claim that names the workload [default: sub].
        #[arg(long)]
        claim: Option<String>,
        /// CLAIM_VALUE=SERVICE_ACCOUNT_EMAIL, repeatable; PREFIX*=NAME*@DOMAIN maps a pattern.
        #[arg(long = "map", required = true)]
        mappings: Vec<String>,
    },
    /// List workload issuers.
    List(OutputArg),
    /// Print the MutatingWebhookConfiguration that sends a cluster's new pods to its connector's admission webhook.
    #[command(after_help = "\
The caBundle comes from this server (the CA that certifies every connector's webhook). Apply it with:
  infra workload-issuers webhook-config --cluster prod --service infra/infra-connector | kubectl apply -f -
  kubectl label namespace shop infra.dev/inject=enabled
Pods in labelled namespaces that carry the annotation infra.dev/connect: \"db,web\" get an infra proxy
sidecar per destination (docs/workloads.md).")]
    WebhookConfig(WebhookConfigArgs),
    /// Remove a workload issuer.
    Remove { name: String },
}

#[derive(Debug, clap::Args)]
pub struct WebhookConfigArgs {
    /// The Kubernetes destination whose connector serves the webhook (each cluster has its own CA).
    #[arg(long)]
    cluster: String,
    /// The connector's Service, NAMESPACE/NAME (the webhook listens on its --port).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    service: Option<String>,
    /// The Service port that reaches webhook.listen.
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Or a URL the API server reaches the webhook at (https://host:port; /mutate is added).
    #[arg(long)]
    url: Option<String>,
    /// Only pods of namespaces with this label are sent to the webhook.
    #[arg(long, default_value = "infra.dev/inject=enabled", value_name = "KEY=VALUE")]
    namespace_label: String,
    /// What the API server does when the webhook cannot answer: Fail (the pod is not created) or Ignore
    /// (it is created without Infra).
    #[arg(long, default_value = "Fail", value_parser = ["Fail", "Ignore"])]
    failure_policy: String,
}

/// The webhook configuration as YAML.
fn webhook_config(a: &WebhookConfigArgs, ca_bundle: &str) -> anyhow::Result<String> {
    let client_config = match (&a.service, &a.url) {
        (Some(s), _) => {
            let (namespace, name) = s
                .split_once('/')
                .with_context(|| format!("--service {s}: write NAMESPACE/NAME"))?;
            serde_json::json!({"service": {"namespace": namespace, "name": name, "port": a.port, "path": "/mutate"},
                               "caBundle": ca_bundle})
        }
        (None, Some(u)) => {
            anyhow::ensure!(u.starts_with("https://"), "--url must start with https://");
            serde_json::json!({"url": format!("{}/mutate", u.trim_end_matches('/')), "caBundle": ca_bundle})
        }
        (None, None) => anyhow::bail!("give --service NAMESPACE/NAME or --url"),
    };
    let (key, value) = a
        .namespace_label
        .split_once('=')
        .with_context(|| format!("--namespace-label {}: write KEY=VALUE", a.namespace_label))?;
    let doc = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "infra"},
        "webhooks": [{
            "name": "connect.infra.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": a.failure_policy,
            "timeoutSeconds": 5,
            "reinvocationPolicy": "Never",
            "namespaceSelector": {"matchLabels": {key: value}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "clientConfig": client_config,
        }],
    });
    Ok(yaml_serde::to_string(&doc)?)
}

pub(super) async fn run(c: WorkloadIssuersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        WorkloadIssuersCmd::Add {
            name,
            issuer,
            from_cluster,
            jwks_url,
            jwks_file,
            audience,
            claim,
            mappings,
        } => {
            let audience = match audience {
                Some(a) => a,
                None => crate::config::load_config()?
                    .context("not logged in")?
                    .server
                    .trim_end_matches('/')
                    .to_owned(),
            };
            let jwks = match &jwks_file {
                Some(p) => Some(
                    serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
                        .with_context(|| format!("{} is not a JWKS document", p.display()))?,
                ),
                None => None,
            };
            let mut map = std::collections::BTreeMap::new();
            for m in &mappings {
                let (k, v) = m
                    .rsplit_once('=')
                    .with_context(|| format!("--map {m}: write CLAIM_VALUE=SERVICE_ACCOUNT_EMAIL"))?;
                map.insert(k.to_owned(), v.to_owned());
            }
            let w: infra_api::WorkloadIssuerInfo = api
                .post(
                    "/api/workload-issuers",
                    &infra_api::WorkloadIssuerCreate {
                        name,
                        issuer: issuer.unwrap_or_default(),
                        from_cluster,
                        jwks_url,
                        jwks,
                        audience,
                        claim,
                        mappings: map,
                    },
                )
                .await?;
            eprintln!(
                "Added workload issuer {} ({}, audience {}); workloads exchange its tokens at POST /api/tokens/exchange",
                w.name, w.issuer, w.audience
            );
        }
        WorkloadIssuersCmd::List(o) => {
            let items: Vec<infra_api::WorkloadIssuerInfo> = api.get("/api/workload-issuers").await?;
            print(
                o.output,
                &items,
                &["name", "issuer", "audience", "claim", "mappings"],
                |w| {
                    vec![
                        w.name.clone(),
                        w.issuer.clone(),
                        w.audience.clone(),
                        w.claim.clone(),
                        w.mappings
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                },
            )?;
        }
        WorkloadIssuersCmd::WebhookConfig(a) => {
            let ca: infra_api::WebhookCaInfo = api
                .get(&format!("/api/workloads/webhook-ca?cluster={}", enc(&a.cluster)))
                .await?;
            print!("{}", webhook_config(&a, &ca.ca_bundle)?);
        }
        WorkloadIssuersCmd::Remove { name } => {
            api.delete(&format!("/api/workload-issuers/{}", enc(&name))).await?;
            eprintln!("Removed workload issuer {name}");
        }
    }
    Ok(())
}
