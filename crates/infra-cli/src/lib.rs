//! The `infra` command line: login, kubeconfig and the kubectl exec plugin,
//! the admin commands and output formats.
//!
//! Every command is a thin layer over the REST API; the server decides.
//! Client state lives in `~/.infra/` (files 0600).

mod admin;
mod client;
mod config;
mod kubeconfig;
mod login;
mod oidc_login;
mod output;
mod proxy;
mod ssh;
mod tokens;
mod trust;

pub use admin::Command;

/// Runs one client command.
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    admin::run(cmd).await
}
