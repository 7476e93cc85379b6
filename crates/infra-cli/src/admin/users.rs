//! `infra users`: people and service accounts.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::Subcommand;
use infra_api::{CreateUserRequest, CreateUserResponse, Info, UpdateUserRequest, User};

use crate::client::{Api, enc};
use crate::output::{OutputArg, print, when};

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

fn read_stdin_secret() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("read password from stdin")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

pub(super) async fn run(c: UsersCmd) -> anyhow::Result<()> {
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
