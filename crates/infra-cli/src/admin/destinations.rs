//! `infra destinations`: what connectors registered.

use clap::Subcommand;

use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum DestinationsCmd {
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
        DestinationsCmd::Remove { name } => {
            api.delete(&format!("/api/destinations/{}", enc(&name))).await?;
            eprintln!("Removed destination {name}");
        }
    }
    Ok(())
}
