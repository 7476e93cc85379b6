//! `infra workload-issuers`: issuers whose tokens workloads exchange for
//! Infra credentials.

use anyhow::Context;
use clap::Subcommand;

use crate::client::{Api, enc};
use crate::output::{OutputArg, print};

#[derive(Debug, Subcommand)]
pub enum WorkloadIssuersCmd {
    /// Trust an issuer's JWTs (Kubernetes service-account tokens, CI OIDC tokens) for token exchange.
    #[command(
        after_help = "Example (a Kubernetes cluster):\n  infra workload-issuers add k8s --issuer https://kubernetes.default.svc --jwks-file jwks.json \\\n    --audience infra --map system:serviceaccount:ci:deployer=deployer@ci.example.com"
    )]
    Add {
        name: String,
        #[arg(long)]
        issuer: String,
        /// Where the issuer publishes its keys.
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// Its keys, from a file (a JWKS document).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// The audience its tokens must carry for Infra.
        #[arg(long)]
        audience: String,
        /// The claim that names the workload [default: sub].
        #[arg(long)]
        claim: Option<String>,
        /// CLAIM_VALUE=SERVICE_ACCOUNT_EMAIL, repeatable.
        #[arg(long = "map", required = true)]
        mappings: Vec<String>,
    },
    /// List workload issuers.
    List(OutputArg),
    /// Remove a workload issuer.
    Remove { name: String },
}

pub(super) async fn run(c: WorkloadIssuersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        WorkloadIssuersCmd::Add {
            name,
            issuer,
            jwks_url,
            jwks_file,
            audience,
            claim,
            mappings,
        } => {
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
                        issuer,
                        jwks_url,
                        jwks,
                        audience,
                        claim,
                        mappings: map,
                    },
                )
                .await?;
            eprintln!(
                "Added workload issuer {} ({}); workloads exchange its tokens at POST /api/tokens/exchange",
                w.name, w.issuer
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
        WorkloadIssuersCmd::Remove { name } => {
            api.delete(&format!("/api/workload-issuers/{}", enc(&name))).await?;
            eprintln!("Removed workload issuer {name}");
        }
    }
    Ok(())
}
