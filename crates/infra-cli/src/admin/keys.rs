//! `infra keys`: access keys (and, listed, login sessions).

use clap::Subcommand;
use infra_api::{AccessKey, CreateKeyRequest, CreateKeyResponse};

use super::query;
use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an access key; it is printed once.
    Add {
        /// For this user (default: you).
        #[arg(long, conflicts_with = "connector")]
        user: Option<String>,
        /// A key for 'infra connector'.
        #[arg(long)]
        connector: bool,
        #[arg(long)]
        name: Option<String>,
        /// Such as 720h; default: never.
        #[arg(long)]
        expires_in: Option<String>,
        /// The key stops working after this long unused.
        #[arg(long)]
        inactivity_timeout: Option<String>,
        /// Print only the key.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List access keys.
    List {
        #[arg(long)]
        user: Option<String>,
        /// Include login sessions.
        #[arg(long)]
        sessions: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Revoke an access key by name or id.
    Remove { name: String },
}

pub(super) async fn run(c: KeysCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        KeysCmd::Add {
            user,
            connector,
            name,
            expires_in,
            inactivity_timeout,
            quiet,
        } => {
            let r: CreateKeyResponse = api
                .post(
                    "/api/keys",
                    &CreateKeyRequest {
                        user,
                        connector,
                        name,
                        expires_in,
                        inactivity_timeout,
                    },
                )
                .await?;
            if quiet {
                println!("{}", r.access_key);
            } else {
                eprintln!("Created {} key {} (shown only now):", r.key.kind, r.key.name);
                println!("{}", r.access_key);
            }
        }
        KeysCmd::List { user, sessions, out } => {
            let mut q = query(&[("user", &user)]);
            if sessions {
                q = if q.is_empty() {
                    "sessions=true".into()
                } else {
                    format!("{q}&sessions=true")
                };
            }
            let items: Vec<AccessKey> = api.list_all("/api/keys", &q).await?;
            print(
                out.output,
                &items,
                &["id", "name", "kind", "user", "created", "last used", "expires"],
                |k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.kind.clone(),
                        k.user.clone().unwrap_or_default(),
                        when(&k.created),
                        when(&k.last_used),
                        k.expires.as_deref().map(when).unwrap_or_else(|| "never".into()),
                    ]
                },
            )?;
        }
        KeysCmd::Remove { name } => {
            api.delete(&format!("/api/keys/{}", enc(&name))).await?;
            eprintln!("Revoked key {name}");
        }
    }
    Ok(())
}
