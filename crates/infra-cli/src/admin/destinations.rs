//! `infra destinations`: what connectors registered, and the forward-auth
//! destinations the server decides for itself.

use clap::Subcommand;

use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum DestinationsCmd {
    /// Declare a web application behind your own proxy (nginx, Caddy,
    /// Traefik, Envoy): the proxy asks Infra about each request
    /// (forward-auth), and grants on NAME decide. No connector.
    #[command(
        after_help = "Example:\n  infra destinations add wiki --url https://wiki.example.com\n  infra grants add alice@example.com wiki --role viewer\n\nThen point the proxy's forward-auth at https://<infra server>/api/forward-auth\nand route /.infra/ on the application's host to the server: docs/forward-auth.md\nhas configurations for nginx, Caddy, Traefik, Envoy and Istio."
    )]
    Add {
        name: String,
        /// The application's public origin, https://host[:port], as browsers reach it.
        #[arg(long)]
        url: String,
    },
    /// List destinations with their connector, kind, health and last seen.
    List(OutputArg),
    /// Forget a destination; grants on it stay.
    Remove { name: String },
}

pub(super) async fn run(c: DestinationsCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        DestinationsCmd::List(o) => {
            let items: Vec<infra_api::Destination> = api.list_all("/api/destinations", "").await?;
            print(
                o.output,
                &items,
                &["name", "kind", "connector", "health", "tunnels", "last seen", "url"],
                |d| {
                    vec![
                        d.name.clone(),
                        d.kind.clone(),
                        d.connector.clone(),
                        d.health.clone(),
                        d.tunnels.to_string(),
                        when(&d.last_seen),
                        d.url.clone(),
                    ]
                },
            )?;
        }
        DestinationsCmd::Add { name, url } => {
            let d: infra_api::Destination = api
                .post("/api/destinations", &infra_api::NewForwardAuthDestination { name, url })
                .await?;
            eprintln!(
                "Added forward-auth destination {} at {}\nGrant access with: infra grants add USER {} --role ROLE",
                d.name, d.url, d.name
            );
        }
        DestinationsCmd::Remove { name } => {
            api.delete(&format!("/api/destinations/{}", enc(&name))).await?;
            eprintln!("Removed destination {name}");
        }
    }
    Ok(())
}
