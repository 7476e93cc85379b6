//! `infra grants`: who has which role on what.

use clap::Subcommand;
use infra_api::{CreateGrantRequest, Grant};

use super::query;
use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum GrantsCmd {
    /// Grant a role on a resource: `infra grants add alice@example.com prod --role view`.
    Add {
        /// The user's email (or use --group).
        #[arg(required_unless_present = "group")]
        user: Option<String>,
        /// What to grant: infra, a destination, or DESTINATION.NAMESPACE.
        resource: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        role: String,
        /// The grant ends after this long, such as 8h or 7d.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List grants.
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Remove a grant: the same words as 'add', or --id.
    Remove {
        #[arg(required_unless_present_any = ["group", "id"])]
        user: Option<String>,
        resource: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long, required_unless_present = "id")]
        role: Option<String>,
        /// Remove by grant id (see 'infra grants list -o json').
        #[arg(long)]
        id: Option<String>,
    },
}

/// `grants add alice prod` or, with --group, `grants add prod --group devs`:
/// the single positional is then the resource.
fn subject_and_resource(
    user: Option<String>,
    resource: Option<String>,
    group: &Option<String>,
) -> anyhow::Result<(Option<String>, String)> {
    match (user, resource, group) {
        (Some(u), Some(r), None) => Ok((Some(u), r)),
        (Some(r), None, Some(_)) => Ok((None, r)),
        (None, Some(r), Some(_)) => Ok((None, r)),
        (Some(_), None, None) => {
            anyhow::bail!("give the resource too: infra grants add USER RESOURCE --role ROLE")
        }
        (Some(_), Some(_), Some(_)) => anyhow::bail!("give a user or --group, not both"),
        _ => {
            anyhow::bail!("give a user and a resource: infra grants add USER RESOURCE --role ROLE")
        }
    }
}

pub(super) async fn run(c: GrantsCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        GrantsCmd::Add {
            user,
            resource,
            group,
            role,
            expires_in,
        } => add(&api, user, resource, group, role, expires_in).await,
        GrantsCmd::List {
            user,
            group,
            resource,
            role,
            out,
        } => list(&api, user, group, resource, role, out).await,
        GrantsCmd::Remove {
            user,
            resource,
            group,
            role,
            id,
        } => {
            let id = match id {
                Some(id) => id,
                None => find_one(&api, user, resource, group, role).await?,
            };
            api.delete(&format!("/api/grants/{}", enc(&id))).await?;
            eprintln!("Removed grant");
            Ok(())
        }
    }
}

async fn add(
    api: &Api,
    user: Option<String>,
    resource: Option<String>,
    group: Option<String>,
    role: String,
    expires_in: Option<String>,
) -> anyhow::Result<()> {
    let (user, resource) = subject_and_resource(user, resource, &group)?;
    let g: Grant = api
        .post(
            "/api/grants",
            &CreateGrantRequest {
                user,
                group,
                role,
                resource,
                expires_in,
            },
        )
        .await?;
    let who = g
        .user
        .as_deref()
        .map_or_else(|| format!("group {}", g.group.as_deref().unwrap_or("")), str::to_owned);
    eprintln!("Granted {who} role {} on {}", g.role, g.resource);
    Ok(())
}

async fn list(
    api: &Api,
    user: Option<String>,
    group: Option<String>,
    resource: Option<String>,
    role: Option<String>,
    out: OutputArg,
) -> anyhow::Result<()> {
    let q = query(&[
        ("user", &user),
        ("group", &group),
        ("resource", &resource),
        ("role", &role),
    ]);
    let items: Vec<Grant> = api.list_all("/api/grants", &q).await?;
    print(
        out.output,
        &items,
        &["user", "group", "resource", "role", "expires"],
        |g| {
            vec![
                g.user.clone().unwrap_or_default(),
                g.group.clone().unwrap_or_default(),
                g.resource.clone(),
                g.role.clone(),
                g.expires.as_deref().map(when).unwrap_or_default(),
            ]
        },
    )
}

/// The id of the one direct grant that `remove`'s words name.
async fn find_one(
    api: &Api,
    user: Option<String>,
    resource: Option<String>,
    group: Option<String>,
    role: Option<String>,
) -> anyhow::Result<String> {
    let (user, resource) = subject_and_resource(user, resource, &group)?;
    let q = query(&[
        ("user", &user),
        ("group", &group),
        ("resource", &Some(resource.clone())),
        ("role", &role),
    ]);
    let found: Vec<Grant> = api.list_all("/api/grants", &q).await?;
    // A user filter also returns the user's group grants; keep direct ones.
    let found: Vec<&Grant> = found
        .iter()
        .filter(|g| {
            if user.is_some() {
                g.user.is_some()
            } else {
                g.group == group
            }
        })
        .collect();
    let who = user.clone().or(group.clone()).unwrap_or_default();
    match found.as_slice() {
        [g] => Ok(g.id.clone()),
        [] => anyhow::bail!(
            "grant not found: {who} → {resource} (role {}); see 'infra grants list --resource {resource}'",
            role.as_deref().unwrap_or("")
        ),
        _ => anyhow::bail!("several grants match; remove one with --id (see 'infra grants list -o json')"),
    }
}
