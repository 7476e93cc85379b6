//! `infra tokens`: a short-lived token for a destination, printed as a
//! kubectl ExecCredential (the exec plugin the kubeconfig entries name) or
//! bare with `--quiet`.
//!
//! kubectl runs the plugin for every command, so ExecCredentials are cached
//! in `~/.infra/tokens/<destination>.json` and reused until shortly before
//! they expire; login and logout empty the cache.

use anyhow::Context;
use clap::Args;
use infra_api::{TokenRequest, TokenResponse};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{Api, ApiError};
use crate::config;
use crate::kubeconfig::EXEC_API_VERSION;

#[derive(Debug, Args)]
#[command(after_help = "\
kubectl runs 'infra tokens --destination CLUSTER' itself: 'infra login' writes it into the \
kubeconfig as the exec plugin of each 'infra:' user. The ExecCredential is cached in \
~/.infra/tokens/ and reused until a minute before it expires; --quiet always asks the server.

Examples:
  infra tokens --destination dev            # what kubectl sees
  curl -H \"Authorization: Bearer $(infra tokens -q --destination web)\" https://web.localhost:4443/")]
pub struct TokensArgs {
    /// The destination the token is for (its audience); without it, a token
    /// for Infra's own API.
    #[arg(long, env = "INFRA_DESTINATION", conflicts_with = "audience")]
    destination: Option<String>,
    /// A token for another system (Infra as an issuer): it verifies the
    /// token with Infra's OIDC discovery and JWKS. Printed bare.
    #[arg(long)]
    audience: Option<String>,
    /// Print only the token, always a new one (not cached).
    #[arg(long, short)]
    quiet: bool,
}

/// kubectl sets this when it runs an exec plugin.
const EXEC_INFO_ENV: &str = "KUBERNETES_EXEC_INFO";

/// A cached token is handed out until this long before it expires, so that
/// it does not expire on its way to the cluster.
const REUSE_MARGIN: time::Duration = time::Duration::seconds(60);

/// One cached token, keyed by server and destination. No `Debug`: it
/// holds a live token.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    server: String,
    destination: String,
    token: String,
    /// RFC 3339.
    expires: String,
}

pub(crate) async fn tokens(t: TokensArgs) -> anyhow::Result<()> {
    let r = match get(&t).await {
        Ok(r) => r,
        Err(e) if std::env::var_os(EXEC_INFO_ENV).is_some() => return Err(for_kubectl(e, t.destination.as_deref())),
        Err(e) => return Err(e),
    };
    if t.quiet || t.audience.is_some() {
        println!("{}", r.token);
    } else {
        println!("{}", serde_json::to_string(&exec_credential(&r))?);
    }
    Ok(())
}

async fn get(t: &TokensArgs) -> anyhow::Result<TokenResponse> {
    let cfg = config::load_config()?.context("not logged in; run 'infra login SERVER' first")?;
    // The cache holds the saved session's tokens: with INFRA_ACCESS_KEY the
    // caller may be someone else, so it is neither read nor written.
    let own_session = std::env::var("INFRA_ACCESS_KEY").map_or(true, |k| k.is_empty());
    let cache = match &t.destination {
        Some(d) if !t.quiet && own_session && config::load_credentials()?.is_some() => cache_path(d)?,
        _ => None,
    };
    let now = OffsetDateTime::now_utc();
    if let (Some(path), Some(dest)) = (&cache, &t.destination)
        && let Some(hit) = read_cache(path).filter(|c| reusable(c, &cfg.server, dest, now))
    {
        return Ok(TokenResponse {
            token: hit.token,
            expires: hit.expires,
        });
    }
    let r: TokenResponse = Api::from_login()?
        .post(
            "/api/tokens",
            &TokenRequest {
                destination: t.destination.clone(),
                audience: t.audience.clone(),
            },
        )
        .await?;
    if let (Some(path), Some(dest)) = (&cache, &t.destination) {
        let entry = Cached {
            server: cfg.server.clone(),
            destination: dest.clone(),
            token: r.token.clone(),
            expires: r.expires.clone(),
        };
        // A cache that cannot be written costs a request next time, no more.
        if let Err(e) = serde_json::to_vec(&entry)
            .map_err(anyhow::Error::from)
            .and_then(|b| config::write_private(path, &b))
        {
            tracing::debug!("token cache not written: {e:#}");
        }
    }
    Ok(r)
}

/// A token for `destination`, from the cache while it has a minute left.
pub(crate) async fn token_for(destination: &str) -> anyhow::Result<TokenResponse> {
    get(&TokensArgs {
        destination: Some(destination.to_owned()),
        audience: None,
        quiet: false,
    })
    .await
}

/// The ExecCredential kubectl reads from the plugin's stdout.
fn exec_credential(r: &TokenResponse) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": { "token": r.token, "expirationTimestamp": r.expires },
    })
}

/// `~/.infra/tokens/<destination>.json`, or `None` for a destination name
/// that is not safe as a file name (it is then not cached).
fn cache_path(destination: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    if !safe_file_name(destination) {
        return Ok(None);
    }
    Ok(Some(config::tokens_dir()?.join(format!("{destination}.json"))))
}

fn safe_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A damaged or unreadable cache entry is a miss.
fn read_cache(path: &std::path::Path) -> Option<Cached> {
    let s = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&s).ok()
}

/// Whether `c` may be handed out at `now` for `destination` on `server`.
fn reusable(c: &Cached, server: &str, destination: &str, now: OffsetDateTime) -> bool {
    c.server == server
        && c.destination == destination
        && OffsetDateTime::parse(&c.expires, &Rfc3339).is_ok_and(|exp| now + REUSE_MARGIN < exp)
}

/// Under kubectl the message is all the user sees next to kubectl's own
/// "getting credentials" error, so it names the cluster and, when the
/// session is the problem, the way out.
fn for_kubectl(e: anyhow::Error, destination: Option<&str>) -> anyhow::Error {
    let what = destination.map_or_else(|| "Infra".to_owned(), |d| format!("cluster {d}"));
    if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 401) {
        anyhow::anyhow!("no token for {what}: your Infra session has ended; run 'infra login', then retry")
    } else {
        e.context(format!("no token for {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(expires: &str) -> Cached {
        Cached {
            server: "https://infra:4443".into(),
            destination: "dev".into(),
            token: "t".into(),
            expires: expires.into(),
        }
    }

    #[test]
    fn cache_reuse() {
        let now = OffsetDateTime::parse("2030-01-01T12:00:00Z", &Rfc3339).unwrap();
        let check = |c: &Cached, server: &str, dest: &str| reusable(c, server, dest, now);
        let s = "https://infra:4443";
        assert!(check(&cached("2030-01-01T12:05:00Z"), s, "dev"));
        assert!(check(&cached("2030-01-01T13:05:00+01:00"), s, "dev"));
        assert!(!check(&cached("2030-01-01T13:01:00+01:00"), s, "dev"));
        // Within the last minute, expired, or unreadable: ask again.
        assert!(!check(&cached("2030-01-01T12:01:00Z"), s, "dev"));
        assert!(!check(&cached("2030-01-01T12:00:30Z"), s, "dev"));
        assert!(!check(&cached("2030-01-01T11:00:00Z"), s, "dev"));
        assert!(!check(&cached("tomorrow"), s, "dev"));
        // Another server or destination.
        assert!(!check(&cached("2030-01-01T12:05:00Z"), "https://other:4443", "dev"));
        assert!(!check(&cached("2030-01-01T12:05:00Z"), s, "prod"));
    }

    #[test]
    fn cache_file_names() {
        for ok in ["dev", "prod-eu_1", "a.b"] {
            assert!(safe_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\\b", "ü"] {
            assert!(!safe_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn exec_credential_shape() {
        let r = TokenResponse {
            token: "abc".into(),
            expires: "2030-01-01T12:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&exec_credential(&r)).unwrap(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"expirationTimestamp":"2030-01-01T12:00:00Z","token":"abc"}}"#
        );
    }

    #[test]
    fn kubectl_errors_say_what_to_do() {
        let ended = anyhow::Error::from(ApiError {
            status: 401,
            message: "session expired (session ended or key revoked)".into(),
        });
        let msg = format!("{:#}", for_kubectl(ended, Some("dev")));
        assert!(
            msg.contains("cluster dev") && msg.contains("run 'infra login'"),
            "{msg}"
        );
        let out = anyhow::anyhow!("not logged in; run 'infra login SERVER' first");
        let msg = format!("{:#}", for_kubectl(out, Some("dev")));
        assert_eq!(
            msg,
            "no token for cluster dev: not logged in; run 'infra login SERVER' first"
        );
        let down = anyhow::anyhow!("cannot reach https://infra:4443");
        let msg = format!("{:#}", for_kubectl(down, Some("dev")));
        assert_eq!(msg, "no token for cluster dev: cannot reach https://infra:4443");
    }
}
