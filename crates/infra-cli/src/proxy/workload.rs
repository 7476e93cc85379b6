//! `infra proxy --workload-token FILE`: the proxy as a workload (the
//! sidecar the admission webhook injects) rather than a logged-in person.
//! Its credential is the platform's token in FILE (a projected Kubernetes
//! service-account token, rotated by the kubelet), exchanged (RFC 8693) for
//! a token of the destination each time the last one nears its end. Nothing
//! is written to disk; the server and its CA come from `INFRA_SERVER` and
//! `INFRA_SERVER_CA`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use infra_api::TokenExchangeResponse;

use crate::client::Api;
use crate::config::ClientConfig;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// A destination token is exchanged again this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

pub(crate) struct Workload {
    token_file: PathBuf,
    cfg: ClientConfig,
    tokens: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl Workload {
    pub(crate) fn from_env(token_file: PathBuf) -> anyhow::Result<Self> {
        let server = std::env::var("INFRA_SERVER")
            .ok()
            .filter(|s| !s.is_empty())
            .context("--workload-token needs INFRA_SERVER: the Infra server's URL, https://host:port")?;
        let ca_pem = std::env::var("INFRA_SERVER_CA").ok().filter(|s| !s.trim().is_empty());
        Ok(Self {
            token_file,
            cfg: ClientConfig {
                server: server.trim_end_matches('/').to_owned(),
                ca_pem,
                skip_tls_verify: false,
                user: None,
            },
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn client_config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Read at each exchange: the kubelet replaces the file as it rotates.
    fn platform_token(&self) -> anyhow::Result<String> {
        let t = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("read the workload token {}", self.token_file.display()))?;
        Ok(t.trim().to_owned())
    }

    async fn exchange(&self, resource: Option<&str>) -> anyhow::Result<TokenExchangeResponse> {
        let jwt = self.platform_token()?;
        let mut form = vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token_type", JWT_TYPE),
            ("subject_token", jwt.as_str()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        Api::new(&self.cfg, None)?
            .post_form("/api/tokens/exchange", &form)
            .await
            .context("exchange the workload token")
    }

    /// The API as this workload's service account (a fresh, short-lived
    /// key: used once, at start, to find the destination).
    pub(crate) async fn api(&self) -> anyhow::Result<Api> {
        let r = self.exchange(None).await?;
        Api::new(&self.cfg, Some(r.access_token))
    }

    /// A token for `destination`, reused until a minute before it expires.
    pub(crate) async fn token(&self, destination: &str) -> anyhow::Result<String> {
        let mut cache = self.tokens.lock().await;
        if let Some((t, until)) = cache.get(destination)
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let r = self.exchange(Some(destination)).await?;
        let life = Duration::from_secs(u64::try_from(r.expires_in).unwrap_or(0));
        let until = Instant::now() + life.saturating_sub(RENEW_BEFORE);
        cache.insert(destination.to_owned(), (r.access_token.clone(), until));
        Ok(r.access_token)
    }
}
