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
    /// Who can reach a destination now, and why: one line per grant on it
    /// or a part of it, to the user or through a group.
    #[command(after_help = "Example:\n  infra destinations access prod\n  infra destinations access prod -o json")]
    Access {
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Running connectors of the last week: instance, version, address and
    /// open tunnels.
    Connectors(OutputArg),
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
        DestinationsCmd::Access { name, out } => {
            let path = format!("/api/destinations/{}/access", enc(&name));
            let items: Vec<infra_api::AccessPath> = api.list_all(&path, "").await?;
            if items.is_empty() && matches!(out.output, crate::output::Format::Table) {
                eprintln!("Nobody can reach {name} now.");
                return Ok(());
            }
            print(out.output, &items, &["user", "role", "on", "through", "expires"], |p| {
                vec![
                    p.user.clone(),
                    p.role.clone(),
                    p.resource.clone(),
                    p.group
                        .as_ref()
                        .map_or_else(|| "a grant to them".into(), |g| format!("group {g}")),
                    p.expires.as_deref().map_or_else(|| "never".into(), when),
                ]
            })?;
        }
        DestinationsCmd::Connectors(o) => {
            let items: Vec<infra_api::ConnectorInstance> = api.get("/api/connectors").await?;
            print(
                o.output,
                &items,
                &[
                    "connector",
                    "instance",
                    "version",
                    "from",
                    "tunnels",
                    "connected",
                    "last seen",
                ],
                |i| {
                    vec![
                        i.connector.clone(),
                        i.instance.clone(),
                        i.version.clone(),
                        i.source.clone(),
                        i.tunnels.to_string(),
                        when(&i.connected),
                        when(&i.last_seen),
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
