//! The client commands and their dispatch.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::Subcommand;
use infra_api::{
    AccessKey, AuditEvent, AuditVerifyResponse, CreateGrantRequest, CreateGroupRequest, CreateKeyRequest,
    CreateKeyResponse, CreateUserRequest, CreateUserResponse, Grant, Group, Info, SigningKeyInfo, UpdateUserRequest,
    User,
};

use crate::client::{Api, enc};
use crate::kubeconfig;
use crate::login::{self, LoginArgs};
use crate::output::{OutputArg, print, when};
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
    /// List or remove destinations (registered by connectors).
    #[command(subcommand)]
    Destinations(DestinationsCmd),
    /// Manage the keys that sign tokens.
    #[command(subcommand, name = "signing-keys")]
    SigningKeys(SigningKeysCmd),
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCmd {
    /// Add an OpenID Connect provider (docs/identity-providers.md has Keycloak, Okta, Google, Entra ID and Dex).
    #[command(
        after_help = "Register this redirect URI at the provider: http://127.0.0.1/callback (the CLI, any port) and\nhttps://SERVER/oidc/callback (browsers). Then: infra login SERVER --provider NAME"
    )]
    Add {
        name: String,
        /// The issuer URL, exactly as in the provider's discovery document.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// The client secret (better: INFRA_PROVIDER_CLIENT_SECRET).
        #[arg(long, env = "INFRA_PROVIDER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
        /// The claim with the user's groups [default: groups].
        #[arg(long)]
        groups_claim: Option<String>,
        /// Scopes to ask for [default: openid email profile groups, and offline_access when the provider lists it].
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Only these email domains may log in [default: any].
        #[arg(long, value_delimiter = ',')]
        allowed_domains: Vec<String>,
        /// Accept emails the provider does not mark verified (Entra ID); they never take over an existing account.
        #[arg(long)]
        allow_unverified_email: bool,
    },
    /// List providers.
    List(OutputArg),
    /// Remove a provider; sessions that came from it end.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadIssuersCmd {
    /// Trust an issuer's JWTs (Kubernetes service-account tokens, CI OIDC tokens) for token exchange.
    #[command(
        after_help = "Example (a Kubernetes cluster):\n  infra workload-issuers add k8s --issuer https://kubernetes.default.svc --jwks-file jwks.json \\\n    --audience infra --map system:serviceaccount:ci:deployer=deployer@ci.example.com"
    )]
    Add {
        name: String,
        #[arg(long)]
        issuer: String,
        /// Where the issuer publishes its keys.
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// Its keys, from a file (a JWKS document).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// The audience its tokens must carry for Infra.
        #[arg(long)]
        audience: String,
        /// The claim that names the workload [default: sub].
        #[arg(long)]
        claim: Option<String>,
        /// CLAIM_VALUE=SERVICE_ACCOUNT_EMAIL, repeatable.
        #[arg(long = "map", required = true)]
        mappings: Vec<String>,
    },
    /// List workload issuers.
    List(OutputArg),
    /// Remove a workload issuer.
    Remove { name: String },
}

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

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Add a user; prints a one-time password unless --password-stdin or --service.
    Add {
        email: String,
        /// Read the user's password from standard input.
        #[arg(long, conflicts_with = "service")]
        password_stdin: bool,
        /// A service account (a workload): no password; it holds grants and
        /// access keys, and workloads get its credentials by token exchange.
        #[arg(long)]
        service: bool,
    },
    /// List users.
    List(OutputArg),
    /// Change a user's password (your own, or anyone's as admin).
    Edit {
        email: String,
        /// Read the new password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user with their grants and keys.
    Remove { email: String },
}

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

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    List {
        /// RFC 3339 time or a duration ago, such as 1h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Follow new events as they are written.
    Tail {
        /// Show this many recent events first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
    },
    /// Check the hash chain: fails, naming the event, if any was edited or deleted.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCmd {
    /// List destinations with their connector, kind, health and last seen.
    List(OutputArg),
    /// Forget a destination; grants on it stay.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeysCmd {
    /// List signing keys.
    List(OutputArg),
    /// Start signing with a new key; the old one verifies until its tokens expire.
    Rotate,
}

fn read_stdin_secret() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("read password from stdin")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

pub(crate) async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Login(a) => login::login(a).await,
        Command::Logout => login::logout().await,
        Command::Info => info().await,
        Command::List(o) => list(o).await,
        Command::Use { target } => kubeconfig::use_context(&target).await,
        Command::Proxy(a) => crate::proxy::proxy(a).await,
        Command::Psql(a) => crate::proxy::psql(a).await,
        Command::Ssh(a) => crate::ssh::ssh(a).await,
        Command::SshProxy(a) => crate::ssh::proxy(a).await,
        Command::SshCert(a) => crate::ssh::cert(a).await,
        Command::SshCa(c) => ssh_ca(c).await,
        Command::Providers(c) => providers(c).await,
        Command::WorkloadIssuers(c) => workload_issuers(c).await,
        Command::Tokens(t) => tokens::tokens(t).await,
        Command::Users(c) => users(c).await,
        Command::Groups(c) => groups(c).await,
        Command::Grants(c) => grants(c).await,
        Command::Keys(c) => keys(c).await,
        Command::Audit(c) => audit(c).await,
        Command::SigningKeys(c) => signing_keys(c).await,
        Command::Destinations(c) => destinations(c).await,
    }
}

async fn info() -> anyhow::Result<()> {
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

async fn list(o: OutputArg) -> anyhow::Result<()> {
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

async fn users(c: UsersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        UsersCmd::Add {
            email,
            password_stdin,
            service,
        } => {
            let password = if password_stdin {
                Some(read_stdin_secret()?)
            } else {
                None
            };
            let r: CreateUserResponse = api
                .post(
                    "/api/users",
                    &CreateUserRequest {
                        email,
                        password,
                        service,
                    },
                )
                .await?;
            eprintln!(
                "Added {} {}",
                if service { "service account" } else { "user" },
                r.user.email
            );
            if let Some(otp) = r.one_time_password {
                eprintln!("One-time password (they must change it at first login):");
                println!("{otp}");
            }
        }
        UsersCmd::List(o) => {
            let items: Vec<User> = api.list_all("/api/users", "").await?;
            print(o.output, &items, &["email", "groups", "last seen", "created"], |u| {
                vec![
                    u.email.clone(),
                    u.groups.join(","),
                    u.last_seen.as_deref().map(when).unwrap_or_else(|| "never".into()),
                    when(&u.created),
                ]
            })?;
        }
        UsersCmd::Edit { email, password_stdin } => {
            let (password, old) = if password_stdin {
                (read_stdin_secret()?, std::env::var("INFRA_OLD_PASSWORD").ok())
            } else {
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!("use --password-stdin to give the new password without a terminal");
                }
                let me: Info = api.get("/api/info").await?;
                let old = if me.user.email == email.to_ascii_lowercase() {
                    Some(rpassword::prompt_password("Current password: ")?)
                } else {
                    None
                };
                (rpassword::prompt_password("New password: ")?, old)
            };
            api.put(
                &format!("/api/users/{}", enc(&email)),
                Some(&UpdateUserRequest {
                    password,
                    old_password: old,
                }),
            )
            .await?;
            eprintln!("Password changed for {email}");
        }
        UsersCmd::Remove { email } => {
            api.delete(&format!("/api/users/{}", enc(&email))).await?;
            eprintln!("Removed user {email}");
        }
    }
    Ok(())
}

async fn groups(c: GroupsCmd) -> anyhow::Result<()> {
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

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect::<Vec<_>>()
        .join("&")
}

async fn grants(c: GrantsCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        GrantsCmd::Add {
            user,
            resource,
            group,
            role,
            expires_in,
        } => {
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
        }
        GrantsCmd::List {
            user,
            group,
            resource,
            role,
            out,
        } => {
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
            )?;
        }
        GrantsCmd::Remove {
            user,
            resource,
            group,
            role,
            id,
        } => {
            let id = match id {
                Some(id) => id,
                None => {
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
                        [g] => g.id.clone(),
                        [] => anyhow::bail!(
                            "grant not found: {who} → {resource} (role {}); see 'infra grants list --resource {resource}'",
                            role.as_deref().unwrap_or("")
                        ),
                        _ => anyhow::bail!(
                            "several grants match; remove one with --id (see 'infra grants list -o json')"
                        ),
                    }
                }
            };
            api.delete(&format!("/api/grants/{}", enc(&id))).await?;
            eprintln!("Removed grant");
        }
    }
    Ok(())
}

async fn keys(c: KeysCmd) -> anyhow::Result<()> {
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

fn event_row(e: &AuditEvent) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.time.get(..19).unwrap_or(&e.time).replace('T', " "),
        e.actor.clone(),
        e.action.clone(),
        e.target.clone(),
        e.result.clone(),
        e.source.clone(),
        e.detail.clone(),
    ]
}

const EVENT_HEADERS: [&str; 8] = ["seq", "time", "actor", "action", "target", "result", "source", "detail"];

async fn audit(c: AuditCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        AuditCmd::List {
            since,
            user,
            destination,
            action,
            out,
        } => {
            let q = query(&[
                ("since", &since),
                ("user", &user),
                ("destination", &destination),
                ("action", &action),
            ]);
            let items: Vec<AuditEvent> = api.list_all("/api/audit", &q).await?;
            print(out.output, &items, &EVENT_HEADERS, event_row)?;
        }
        AuditCmd::Tail { lines } => {
            let first: infra_api::Page<AuditEvent> = api.get("/api/audit?limit=1").await?;
            let total = first.total_count;
            let start_page = total.saturating_sub(u64::from(lines)) + 1;
            let mut after = i64::try_from(start_page).unwrap_or(1) - 1;
            loop {
                let p: infra_api::Page<AuditEvent> = api.get(&format!("/api/audit?after={after}&limit=1000")).await?;
                for e in &p.items {
                    println!("{}", event_row(e).join("  "));
                    after = e.seq;
                }
                if p.items.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        AuditCmd::Verify => {
            let r: AuditVerifyResponse = api.get("/api/audit/verify").await?;
            if r.ok {
                println!("{}", r.message);
            } else {
                anyhow::bail!(
                    "audit log verification FAILED at event {}: {}",
                    r.bad_seq.unwrap_or(0),
                    r.message
                );
            }
        }
    }
    Ok(())
}

async fn providers(c: ProvidersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        ProvidersCmd::Add {
            name,
            issuer,
            client_id,
            client_secret,
            groups_claim,
            scopes,
            allowed_domains,
            allow_unverified_email,
        } => {
            let p: infra_api::ProviderInfo = api
                .post(
                    "/api/providers",
                    &infra_api::ProviderCreate {
                        name,
                        issuer,
                        client_id,
                        client_secret,
                        groups_claim,
                        scopes,
                        allowed_domains,
                        allow_unverified_email,
                    },
                )
                .await?;
            eprintln!(
                "Added provider {} ({}); log in with: infra login --provider {}",
                p.name, p.issuer, p.name
            );
            if let Some(n) = &p.notice {
                eprintln!("note: {n}");
            }
        }
        ProvidersCmd::List(o) => {
            let items: Vec<infra_api::ProviderInfo> = api.get("/api/providers").await?;
            print(
                o.output,
                &items,
                &["name", "issuer", "client id", "groups claim", "allowed domains"],
                |p| {
                    vec![
                        p.name.clone(),
                        p.issuer.clone(),
                        p.client_id.clone(),
                        p.groups_claim.clone(),
                        p.allowed_domains.join(","),
                    ]
                },
            )?;
        }
        ProvidersCmd::Remove { name } => {
            api.delete(&format!("/api/providers/{}", enc(&name))).await?;
            eprintln!("Removed provider {name}");
        }
    }
    Ok(())
}

async fn workload_issuers(c: WorkloadIssuersCmd) -> anyhow::Result<()> {
    let api = Api::from_login()?;
    match c {
        WorkloadIssuersCmd::Add {
            name,
            issuer,
            jwks_url,
            jwks_file,
            audience,
            claim,
            mappings,
        } => {
            let jwks = match &jwks_file {
                Some(p) => Some(
                    serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
                        .with_context(|| format!("{} is not a JWKS document", p.display()))?,
                ),
                None => None,
            };
            let mut map = std::collections::BTreeMap::new();
            for m in &mappings {
                let (k, v) = m
                    .rsplit_once('=')
                    .with_context(|| format!("--map {m}: write CLAIM_VALUE=SERVICE_ACCOUNT_EMAIL"))?;
                map.insert(k.to_owned(), v.to_owned());
            }
            let w: infra_api::WorkloadIssuerInfo = api
                .post(
                    "/api/workload-issuers",
                    &infra_api::WorkloadIssuerCreate {
                        name,
                        issuer,
                        jwks_url,
                        jwks,
                        audience,
                        claim,
                        mappings: map,
                    },
                )
                .await?;
            eprintln!(
                "Added workload issuer {} ({}); workloads exchange its tokens at POST /api/tokens/exchange",
                w.name, w.issuer
            );
        }
        WorkloadIssuersCmd::List(o) => {
            let items: Vec<infra_api::WorkloadIssuerInfo> = api.get("/api/workload-issuers").await?;
            print(
                o.output,
                &items,
                &["name", "issuer", "audience", "claim", "mappings"],
                |w| {
                    vec![
                        w.name.clone(),
                        w.issuer.clone(),
                        w.audience.clone(),
                        w.claim.clone(),
                        w.mappings
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                },
            )?;
        }
        WorkloadIssuersCmd::Remove { name } => {
            api.delete(&format!("/api/workload-issuers/{}", enc(&name))).await?;
            eprintln!("Removed workload issuer {name}");
        }
    }
    Ok(())
}

async fn ssh_ca(c: SshCaCmd) -> anyhow::Result<()> {
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

async fn signing_keys(c: SigningKeysCmd) -> anyhow::Result<()> {
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

async fn destinations(c: DestinationsCmd) -> anyhow::Result<()> {
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
