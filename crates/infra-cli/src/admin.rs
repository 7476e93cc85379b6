//! The client commands and their dispatch. Each admin resource (users,
//! groups, grants, keys, ...) has its subcommands and their handlers in a
//! file of its own under `admin/`; the query-string helper they share is
//! here.

mod audit;
mod destinations;
mod grants;
mod groups;
mod info;
mod keys;
mod providers;
mod requests;
mod sessions;
mod signing_keys;
mod ssh_ca;
mod users;
mod workload_issuers;

use clap::Subcommand;

use self::audit::AuditCmd;
use self::destinations::DestinationsCmd;
use self::grants::GrantsCmd;
use self::groups::GroupsCmd;
use self::keys::KeysCmd;
use self::providers::ProvidersCmd;
use self::requests::{AccessPolicyCmd, RequestCmd, RequestWebhooksCmd};
use self::sessions::SessionsCmd;
use self::signing_keys::SigningKeysCmd;
use self::ssh_ca::SshCaCmd;
use self::users::UsersCmd;
use self::workload_issuers::WorkloadIssuersCmd;
use crate::client::enc;
use crate::kubeconfig;
use crate::login::{self, LoginArgs};
use crate::output::OutputArg;
use crate::tokens::{self, TokensArgs};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to an Infra server; also writes kubeconfig contexts for your clusters.
    ///
    /// Saves the server, how to trust it and your session in ~/.infra/. For
    /// every Kubernetes cluster you have a grant on, writes a context
    /// infra:CLUSTER (and infra:CLUSTER.NAMESPACE for namespace grants) to
    /// your kubeconfig ($KUBECONFIG's first file, or ~/.kube/config), whose
    /// credentials come from 'infra tokens'. Other kubeconfig entries and the
    /// current context are left alone; pick a context with 'infra use'.
    Login(LoginArgs),
    /// Log out: end the session and remove local credentials and kubeconfig entries.
    ///
    /// Removes ~/.infra/'s session and token cache, and every infra: cluster,
    /// user and context from your kubeconfig (unsetting the current context
    /// if it was one of them). Other kubeconfig entries are left alone.
    Logout,
    /// Show who you are logged in as and what you can reach.
    Info,
    /// List what you have access to.
    List(OutputArg),
    /// Switch kubectl to a cluster: infra use CLUSTER[.NAMESPACE].
    ///
    /// Refreshes the infra: kubeconfig entries from what you can reach now,
    /// then sets kubectl's current context to infra:CLUSTER (or
    /// infra:CLUSTER.NAMESPACE, which defaults kubectl to that namespace).
    #[command(
        after_help = "Examples:\n  infra use dev          # kubectl now talks to dev through Infra\n  infra use dev.web      # ... in namespace web\n  kubectl get pods"
    )]
    Use {
        /// The cluster, or CLUSTER.NAMESPACE for a namespace grant ('infra list' shows them).
        target: String,
    },
    /// Print a short-lived token: a kubectl ExecCredential, or the bare token with --quiet.
    Tokens(TokensArgs),
    /// Listen on a local port whose connections reach a database through Infra, as you.
    Proxy(crate::proxy::ProxyArgs),
    /// Run psql on a database through Infra, as you.
    Psql(crate::proxy::PsqlArgs),
    /// Open an SSH session on a host with a short-lived certificate, as one of your logins.
    ///
    /// Makes a key pair in ~/.infra/ssh/ (it never leaves this machine), gets
    /// a certificate for it from Infra valid on this host for the logins you
    /// are granted there (at most an hour, renewed as needed), and runs the
    /// system ssh with it. The host is trusted through Infra's host CA, so
    /// there is no first-use prompt, and a host Infra did not certify is
    /// refused. Hosts without a public address are reached through Infra.
    Ssh(crate::ssh::SshArgs),
    /// Carry ssh's connection through Infra to a host (for ssh's ProxyCommand).
    #[command(name = "ssh-proxy")]
    SshProxy(crate::ssh::SshProxyArgs),
    /// Renew the SSH certificate for a host if it expires soon (run by ssh from ~/.ssh/infra/config).
    #[command(name = "ssh-cert", hide = true)]
    SshCert(crate::ssh::SshCertArgs),
    /// Manage identity providers (OpenID Connect) people log in through.
    #[command(subcommand)]
    Providers(ProvidersCmd),
    /// Manage issuers whose tokens workloads exchange for Infra credentials.
    #[command(subcommand, name = "workload-issuers")]
    WorkloadIssuers(WorkloadIssuersCmd),
    /// Show or rotate the SSH certificate authorities.
    #[command(subcommand, name = "ssh-ca")]
    SshCa(SshCaCmd),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage groups.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Manage grants: who has which role on what.
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// Manage access keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Recorded sessions (kubectl exec and attach, recorded SSH): list, play, export.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// Ask for access for a while, and review others' requests.
    #[command(subcommand)]
    Request(RequestCmd),
    /// Say who may request what, for how long, and who approves.
    #[command(subcommand, name = "access-policy")]
    AccessPolicy(AccessPolicyCmd),
    /// Send request events to a team's receiver (JSON or Slack), signed.
    #[command(subcommand, name = "request-webhooks")]
    RequestWebhooks(RequestWebhooksCmd),
    /// List or remove destinations (registered by connectors).
    #[command(subcommand)]
    Destinations(DestinationsCmd),
    /// Manage the keys that sign tokens.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCmd),
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Login(a) => login::login(a).await,
        Command::Logout => login::logout().await,
        Command::Info => info::info().await,
        Command::List(o) => info::list(o).await,
        Command::Use { target } => kubeconfig::use_context(&target).await,
        Command::Proxy(a) => crate::proxy::proxy(a).await,
        Command::Psql(a) => crate::proxy::psql(a).await,
        Command::Ssh(a) => crate::ssh::ssh(a).await,
        Command::SshProxy(a) => crate::ssh::proxy(a).await,
        Command::SshCert(a) => crate::ssh::cert(a).await,
        Command::SshCa(c) => ssh_ca::run(c).await,
        Command::Providers(c) => providers::run(c).await,
        Command::WorkloadIssuers(c) => workload_issuers::run(c).await,
        Command::Tokens(t) => tokens::tokens(t).await,
        Command::Users(c) => users::run(c).await,
        Command::Groups(c) => groups::run(c).await,
        Command::Grants(c) => grants::run(c).await,
        Command::Keys(c) => keys::run(c).await,
        Command::Audit(c) => audit::run(c).await,
        Command::Sessions(c) => sessions::run(c).await,
        Command::Request(c) => requests::run(c).await,
        Command::AccessPolicy(c) => requests::run_policy(c).await,
        Command::RequestWebhooks(c) => requests::run_webhooks(c).await,
        Command::SigningKeys(c) => signing_keys::run(c).await,
        Command::Destinations(c) => destinations::run(c).await,
    }
}

/// A query string of the pairs that have a value, the values URL-encoded.
fn query(pairs: &[(&str, &Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect::<Vec<_>>()
        .join("&")
}
