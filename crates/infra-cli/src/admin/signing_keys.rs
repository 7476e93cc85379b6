//! `infra signing-keys`: the keys that sign tokens.

use clap::Subcommand;
use infra_api::SigningKeyInfo;

use crate::client::Api;
use crate::output::{OutputArg, print, when};

#[derive(Debug, Subcommand)]
pub enum SigningKeysCmd {
    /// List signing keys.
    List(OutputArg),
    /// Start signing with a new key; the old one verifies until its tokens expire.
    Rotate,
}

pub(super) async fn run(c: SigningKeysCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        SigningKeysCmd::List(o) => {
            let items: Vec<SigningKeyInfo> = api.get("/api/signing-keys").await?;
            print(o.output, &items, &["kid", "active", "created", "retired"], |k| {
                vec![
                    k.kid.clone(),
                    k.active.to_string(),
                    when(&k.created),
                    k.retired.as_deref().map(when).unwrap_or_default(),
                ]
            })?;
        }
        SigningKeysCmd::Rotate => {
            let resp = api.post_empty("/api/signing-keys/rotate").await?;
            let k: SigningKeyInfo = resp.json().await?;
            eprintln!(
                "New signing key {}; earlier keys still verify until their tokens expire",
                k.kid
            );
        }
    }
    Ok(())
}
