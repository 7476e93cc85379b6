//! `infra groups`: groups and their members.

use clap::Subcommand;
use infra_api::{CreateGroupRequest, Group};

use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// Add a group.
    Add { name: String },
    /// List groups and their members.
    List(OutputArg),
    /// Remove a group and its grants.
    Remove { name: String },
    /// Add a user to a group.
    Adduser { group: String, email: String },
    /// Remove a user from a group.
    Removeuser { group: String, email: String },
}

pub(super) async fn run(c: GroupsCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        GroupsCmd::Add { name } => {
            let g: Group = api.post("/api/groups", &CreateGroupRequest { name }).await?;
            eprintln!("Added group {}", g.name);
        }
        GroupsCmd::List(o) => {
            let items: Vec<Group> = api.list_all("/api/groups", "").await?;
            print(o.output, &items, &["name", "members", "created"], |g| {
                vec![g.name.clone(), g.members.join(","), when(&g.created)]
            })?;
        }
        GroupsCmd::Remove { name } => {
            api.delete(&format!("/api/groups/{}", enc(&name))).await?;
            eprintln!("Removed group {name}");
        }
        GroupsCmd::Adduser { group, email } => {
            api.put::<()>(&format!("/api/groups/{}/members/{}", enc(&group), enc(&email)), None)
                .await?;
            eprintln!("Added {email} to {group}");
        }
        GroupsCmd::Removeuser { group, email } => {
            api.delete(&format!("/api/groups/{}/members/{}", enc(&group), enc(&email)))
                .await?;
            eprintln!("Removed {email} from {group}");
        }
    }
    Ok(())
}
