//! `infra ssh-ca`: show or rotate the SSH certificate authorities.

use clap::Subcommand;

use crate::client::Api;

#[derive(Debug, Subcommand)]
pub enum SshCaCmd {
    /// Print the CA public keys: the user CA for sshd's TrustedUserCAKeys, the host CA for known_hosts.
    Show {
        /// user or host.
        #[arg(value_parser = ["user", "host"], default_value = "user")]
        kind: String,
    },
    /// Start signing with a new CA key; the old one stays trusted for a day.
    Rotate {
        /// user or host.
        #[arg(value_parser = ["user", "host"])]
        kind: String,
    },
}

pub(super) async fn run(c: SshCaCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        SshCaCmd::Show { kind } => {
            let path = if kind == "user" {
                "/api/ssh/ca"
            } else {
                "/api/ssh/host-ca"
            };
            print!("{}", api.get_text(path).await?);
        }
        SshCaCmd::Rotate { kind } => {
            let r: infra_api::SshCaInfo = api
                .post("/api/ssh/ca/rotate", &infra_api::SshCaRotate { kind: kind.clone() })
                .await?;
            eprintln!(
                "New SSH {kind} CA; the previous key stays trusted for a day. Connectors update their hosts at once; trusted keys now:"
            );
            for k in r.public_keys {
                println!("{k}");
            }
        }
    }
    Ok(())
}
