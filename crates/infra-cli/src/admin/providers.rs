//! `infra providers`: the identity providers people log in through.

use clap::Subcommand;

use crate::client::{Api, enc};
use crate::output::{OutputArg, print};

#[derive(Debug, Subcommand)]
pub enum ProvidersCmd {
    /// Add an OpenID Connect provider (docs/identity-providers.md has Keycloak, Okta, Google, Entra ID and Dex).
    #[command(
        after_help = "Register this redirect URI at the provider: http://127.0.0.1/callback (the CLI, any port) and\nhttps://SERVER/oidc/callback (browsers). Then: infra login SERVER --provider NAME"
    )]
    Add {
        name: String,
        /// The issuer URL, exactly as in the provider's discovery document.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// The client secret (better: INFRA_PROVIDER_CLIENT_SECRET).
        #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
        /// The claim with the user's groups [default: groups].
        #[arg(long)]
        groups_claim: Option<String>,
        /// Scopes to ask for [default: openid email profile groups, and offline_access when the provider lists it].
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Only these email domains may log in [default: any].
        #[arg(long, value_delimiter = ',')]
        allowed_domains: Vec<String>,
        /// Accept emails the provider does not mark verified (Entra ID); they never take over an existing account.
        #[arg(long)]
        allow_unverified_email: bool,
    },
    /// List providers.
    List(OutputArg),
    /// Remove a provider; sessions that came from it end.
    Remove { name: String },
}

pub(super) async fn run(c: ProvidersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        ProvidersCmd::Add {
            name,
            issuer,
            client_id,
            client_secret,
            groups_claim,
            scopes,
            allowed_domains,
            allow_unverified_email,
        } => {
            let p: infra_api::ProviderInfo = api
                .post(
                    "/api/providers",
                    &infra_api::ProviderCreate {
                        name,
                        issuer,
                        client_id,
                        client_secret,
                        groups_claim,
                        scopes,
                        allowed_domains,
                        allow_unverified_email,
                    },
                )
                .await?;
            eprintln!(
                "Added provider {} ({}); log in with: infra login --provider {}",
                p.name, p.issuer, p.name
            );
            if let Some(n) = &p.notice {
                eprintln!("note: {n}");
            }
        }
        ProvidersCmd::List(o) => {
            let items: Vec<infra_api::ProviderInfo> = api.get("/api/providers").await?;
            print(
                o.output,
                &items,
                &["name", "issuer", "client id", "groups claim", "allowed domains"],
                |p| {
                    vec![
                        p.name.clone(),
                        p.issuer.clone(),
                        p.client_id.clone(),
                        p.groups_claim.clone(),
                        p.allowed_domains.join(","),
                    ]
                },
            )?;
        }
        ProvidersCmd::Remove { name } => {
            api.delete(&format!("/api/providers/{}", enc(&name))).await?;
            eprintln!("Removed provider {name}");
        }
    }
    Ok(())
}
