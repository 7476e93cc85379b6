//! `infra login` and `infra logout`: the session in `~/.infra/`, and the
//! kubeconfig entries that go with it.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use infra_api::{LoginRequest, LoginResponse, UpdateUserRequest};

use crate::client::{Api, enc};
use crate::config::{self, ClientConfig, Credentials};
use crate::{kubeconfig, trust};

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Server address: HOST[:PORT] or https://HOST[:PORT] (port 443 if omitted).
    #[arg(env = "INFRA_SERVER")]
    pub server: Option<String>,
    /// Your email, for password login.
    #[arg(long, env = "INFRA_USER")]
    pub user: Option<String>,
    /// Log in with an access key instead of a password.
    #[arg(long, env = "INFRA_ACCESS_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Log in through this identity provider ('infra providers list'): opens a browser.
    #[arg(long, env = "INFRA_PROVIDER", conflicts_with_all = ["key", "user", "password_stdin"])]
    pub provider: Option<String>,
    /// With --provider: no browser here; enter a code on any device instead.
    #[arg(long, requires = "provider")]
    pub device: bool,
    /// With --provider: the loopback port for the browser's redirect, for
    /// providers that need the exact redirect URI (http://127.0.0.1:PORT/callback) [default: any free port].
    #[arg(long, requires = "provider", default_value_t = 0)]
    pub callback_port: u16,
    /// Read the password from standard input (or set INFRA_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
    /// Trust the server's certificate authority from this PEM file.
    #[arg(long, env = "INFRA_TLS_CA", conflicts_with_all = ["tls_trusted_fingerprint", "skip_tls_verify"])]
    pub tls_ca: Option<PathBuf>,
    /// Trust the server whose CA has this SHA-256 fingerprint (printed by 'infra server' at start).
    #[arg(long, env = "INFRA_TLS_TRUSTED_FINGERPRINT", conflicts_with = "skip_tls_verify")]
    pub tls_trusted_fingerprint: Option<String>,
    /// Do not verify the server's certificate. Unsafe: anyone on the path can read your credentials.
    #[arg(long, env = "INFRA_SKIP_TLS_VERIFY")]
    pub skip_tls_verify: bool,
    /// Add 'Include ~/.ssh/infra/config' to ~/.ssh/config without asking (true), or never (false).
    #[arg(long, env = "INFRA_SSH_INCLUDE", num_args = 0..=1, default_missing_value = "true")]
    pub ssh_include: Option<bool>,
}

/// Splits `https://host:port/…`, `host:port` or `host` into a base URL,
/// host and port.
pub(crate) fn parse_server(s: &str) -> anyhow::Result<(String, String, u16)> {
    let s = s.trim().trim_end_matches('/');
    let rest = s.strip_prefix("https://").unwrap_or(s);
    if rest.starts_with("http://") {
        anyhow::bail!("Infra servers are served over HTTPS; use https://");
    }
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').context("unclosed [ in IPv6 address")?;
        (
            h.to_owned(),
            after.strip_prefix(':').map(str::parse).transpose()?.unwrap_or(443),
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().with_context(|| format!("invalid port in {s}"))?),
            None => (hostport.to_owned(), 443),
        }
    };
    if host.is_empty() {
        anyhow::bail!("give the server address, such as 'infra login localhost:4443'");
    }
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok((format!("https://{url_host}:{port}"), host, port))
}

fn read_password(args: &LoginArgs, prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("INFRA_PASSWORD") {
        return Ok(p);
    }
    if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read password from stdin")?;
        return Ok(s.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to ask for a password: use --password-stdin, INFRA_PASSWORD, or --key");
    }
    rpassword::prompt_password(prompt).context("read password")
}

fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to ask for your email: use --user EMAIL (or INFRA_USER)");
    }
    eprint!("{prompt}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim().to_owned())
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let saved = config::load_config()?;
    let server = match (&args.server, &saved) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.server.clone(),
        (None, None) => {
            anyhow::bail!("which server? run 'infra login HOST:PORT' (for a local server: infra login localhost:4443)")
        }
    };
    let (base, host, port) = parse_server(&server)?;
    let mut cfg = ClientConfig {
        server: base.clone(),
        ..Default::default()
    };
    if let Some(path) = &args.tls_ca {
        let pem = std::fs::read_to_string(path).with_context(|| format!("read CA file {}", path.display()))?;
        trust::check_ca_pem(&pem).with_context(|| format!("CA file {}", path.display()))?;
        cfg.ca_pem = Some(pem);
    } else if let Some(fp) = &args.tls_trusted_fingerprint {
        cfg.ca_pem = Some(trust::ca_from_fingerprint(&host, port, fp).await?);
    } else if args.skip_tls_verify {
        eprintln!("warning: not verifying the server's TLS certificate (--skip-tls-verify)");
        cfg.skip_tls_verify = true;
    } else if let Some(old) = saved.filter(|c| c.server == base) {
        // Logging in again to the same server keeps the trust chosen before.
        cfg.ca_pem = old.ca_pem;
        cfg.skip_tls_verify = old.skip_tls_verify;
    }
    let api = Api::new(&cfg, None)?;
    // Check reachability and trust before asking for a password.
    let _: serde_json::Value = api.get("/healthz").await?;
    let (resp, password) = match &args.provider {
        Some(p) if args.device => (crate::oidc_login::device(&api, p).await?, None),
        Some(p) => (crate::oidc_login::code(&api, p, args.callback_port).await?, None),
        None => password_or_key(&api, &args).await?,
    };
    // Tokens cached for an earlier session (or server) are not this one's.
    config::clear_tokens()?;
    cfg.user = Some(resp.user.email.clone());
    config::save_config(&cfg)?;
    config::save_credentials(&Credentials {
        access_key: resp.access_key.clone(),
        expires: Some(resp.expires.clone()),
    })?;
    if resp.password_update_required
        && let Err(e) = change_password(&cfg, &resp, password.unwrap_or_default()).await
    {
        // A session that cannot be used until the password changes is
        // no use to keep.
        let _ = Api::new(&cfg, Some(resp.access_key.clone()))?
            .post_empty("/api/logout")
            .await;
        config::clear()?;
        return Err(e);
    }
    eprintln!("Logged in as {} at {base}", resp.user.email);
    if let Some(n) = &resp.notice {
        eprintln!("note: {n}");
    }
    // The login stands even if the kubeconfig cannot be written.
    let api = Api::new(&cfg, Some(resp.access_key.clone()))?;
    if let Err(e) = kubeconfig::write_after_login(&api, &cfg).await {
        eprintln!("warning: kubeconfig not updated: {e:#}\n  fix that, then run 'infra use CLUSTER' to write it");
    }
    let ssh = async {
        let info: infra_api::Info = api.get("/api/info").await?;
        crate::ssh::write_after_login(&info, args.ssh_include).await
    };
    if let Err(e) = ssh.await {
        eprintln!("warning: SSH config not updated: {e:#}\n  'infra ssh HOST' works without it");
    }
    Ok(())
}

/// A password (prompted, stdin or INFRA_PASSWORD) or an access key login.
async fn password_or_key(api: &Api, args: &LoginArgs) -> anyhow::Result<(LoginResponse, Option<String>)> {
    let (req, password) = match &args.key {
        Some(k) => (
            LoginRequest {
                access_key: Some(k.clone()),
                ..Default::default()
            },
            None,
        ),
        None => {
            let email = match &args.user {
                Some(u) => u.clone(),
                None => prompt_line("Email: ")?,
            };
            let pw = read_password(args, "Password: ")?;
            (
                LoginRequest {
                    email: Some(email),
                    password: Some(pw.clone()),
                    ..Default::default()
                },
                Some(pw),
            )
        }
    };
    let resp: LoginResponse = api.post("/api/login", &req).await?;
    Ok((resp, password))
}

/// A password set by an admin must be replaced before anything else.
async fn change_password(cfg: &ClientConfig, resp: &LoginResponse, old: String) -> anyhow::Result<()> {
    eprintln!("Your password was set by an admin and must be changed now.");
    let new = match std::env::var("INFRA_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!("a new password is required: run 'infra login' in a terminal, or set INFRA_NEW_PASSWORD");
            }
            let a = rpassword::prompt_password("New password: ")?;
            let b = rpassword::prompt_password("Repeat new password: ")?;
            if a != b {
                anyhow::bail!("the passwords do not match; run 'infra login' again");
            }
            a
        }
    };
    let api = Api::new(cfg, Some(resp.access_key.clone()))?;
    let body = UpdateUserRequest {
        password: new,
        old_password: Some(old),
    };
    api.put(&format!("/api/users/{}", enc(&resp.user.email)), Some(&body))
        .await?;
    eprintln!("Password changed.");
    Ok(())
}

pub(crate) async fn logout() -> anyhow::Result<()> {
    if let Ok(api) = Api::from_login() {
        // Best effort: the local state goes either way.
        if let Err(e) = api.post_empty("/api/logout").await {
            eprintln!("note: the server did not confirm the logout ({e}); local credentials removed anyway");
        }
    }
    // Local state goes even if the kubeconfig cannot be edited; say so.
    let kube = kubeconfig::remove_all();
    let ssh = crate::ssh::remove_config();
    config::clear()?;
    eprintln!("Logged out.");
    if let Err(e) = kube {
        eprintln!("warning: infra: entries not removed from the kubeconfig: {e:#}");
    }
    if let Err(e) = ssh {
        eprintln!("warning: ~/.ssh/infra/config not removed: {e:#}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_server;

    #[test]
    fn servers() {
        let p = |s| parse_server(s).ok();
        assert_eq!(
            p("localhost:4443"),
            Some(("https://localhost:4443".into(), "localhost".into(), 4443))
        );
        assert_eq!(p("https://a.b/"), Some(("https://a.b:443".into(), "a.b".into(), 443)));
        assert_eq!(p("[::1]:9"), Some(("https://[::1]:9".into(), "::1".into(), 9)));
        assert_eq!(p("http://x"), None);
        assert_eq!(p(":4443"), None);
    }
}
