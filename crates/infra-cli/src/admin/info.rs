//! `infra info` and `infra list`: who you are and what you can reach.

use infra_api::Info;

use crate::client::Api;
use crate::output::{OutputArg, print, when};

pub(super) async fn info() -> anyhow::Result<()> {
    let api = Api::from_login()?;
    let i: Info = api.get("/api/info").await?;
    println!("User:      {}", i.user.email);
    println!(
        "Groups:    {}",
        if i.user.groups.is_empty() {
            "(none)".into()
        } else {
            i.user.groups.join(", ")
        }
    );
    println!("Infra role: {}", i.infra_role.as_deref().unwrap_or("(none)"));
    if let Some(e) = &i.session_expires {
        println!("Session expires: {}", when(e));
    }
    println!("Server version: {}", i.server_version);
    Ok(())
}

pub(super) async fn list(o: OutputArg) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    let i: Info = api.get("/api/info").await?;
    print(
        o.output,
        &i.grants,
        &["resource", "kind", "role", "via", "expires", "connect"],
        |g| {
            let dest = g.resource.split('.').next().unwrap_or(&g.resource);
            let kind = i.kinds.get(dest).cloned().unwrap_or_default();
            // On an SSH host the role is a login: say how to use it.
            let connect = match kind.as_str() {
                "ssh" => format!("infra ssh {dest} -l {}", g.role),
                "postgres" => format!("infra psql {dest}"),
                _ => i.urls.get(dest).cloned().unwrap_or_default(),
            };
            vec![
                g.resource.clone(),
                kind,
                g.role.clone(),
                g.group.as_ref().map_or_else(|| "you".into(), |n| format!("group {n}")),
                g.expires.as_deref().map(when).unwrap_or_default(),
                connect,
            ]
        },
    )
}
