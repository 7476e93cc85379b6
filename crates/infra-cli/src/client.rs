//! The API client: trusts the server as `infra login` recorded, sends the
//! session key, and turns JSON errors into messages that say what to do.

use anyhow::Context;
use infra_api::{ErrorBody, MAX_LIMIT, Page};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{self, ClientConfig};

pub(crate) struct Api {
    base: String,
    http: reqwest::Client,
    key: Option<String>,
}

/// An API error with the server's message.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// The HTTP status, such as 401 when the session ended.
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

pub(crate) fn http_client(cfg: &ClientConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("infra-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        // No fixed limit on a whole request (a full audit verification
        // streams for as long as it takes), but a server silent for a
        // minute is given up on.
        .read_timeout(std::time::Duration::from_secs(60));
    if let Some(pem) = &cfg.ca_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).context("the saved server CA is not valid PEM")?;
        b = b.tls_certs_only([cert]);
    }
    if cfg.skip_tls_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().context("build HTTP client")
}

impl Api {
    pub(crate) fn new(cfg: &ClientConfig, key: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            base: cfg.server.trim_end_matches('/').to_owned(),
            http: http_client(cfg)?,
            key,
        })
    }

    /// The client for a logged-in user: saved config and session key, with
    /// `INFRA_ACCESS_KEY` taking the key's place when set.
    pub(crate) fn from_login() -> anyhow::Result<Self> {
        let cfg = config::load_config()?.context("not logged in; run 'infra login SERVER' first")?;
        let key = match std::env::var("INFRA_ACCESS_KEY").ok().filter(|k| !k.is_empty()) {
            Some(k) => k,
            None => {
                config::load_credentials()?
                    .context("not logged in; run 'infra login' first")?
                    .access_key
            }
        };
        Self::new(&cfg, Some(key))
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.check(req).await
    }

    /// Sends `req`; a refusal becomes an [`ApiError`] with the server's
    /// message.
    async fn check(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| connect_error(&self.base, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let mut message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.message)
            .unwrap_or_else(|_| {
                format!(
                    "server answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            });
        if status == 401 && self.key.is_some() {
            message = format!("{message} (session ended or key revoked)");
        }
        Err(ApiError { status, message }.into())
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send::<()>(Method::GET, path, None)
            .await?
            .json()
            .await
            .context("read server response")
    }

    /// GET with `Accept: application/x-ndjson`: each line, as it arrives,
    /// to `line`.
    pub(crate) async fn get_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).header("accept", "application/x-ndjson");
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let mut resp = req.send().await.map_err(|e| connect_error(&self.base, e))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.message)
                .unwrap_or_else(|_| format!("server answered {status}"));
            return Err(ApiError { status, message }.into());
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("read server response")? {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = buf.drain(..=i).collect();
                line(String::from_utf8_lossy(&l).trim())?;
            }
        }
        Ok(())
    }

    pub(crate) async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        self.send::<()>(Method::GET, path, None)
            .await?
            .text()
            .await
            .context("read server response")
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(Method::POST, path, Some(body))
            .await?
            .json()
            .await
            .context("read server response")
    }

    /// POST of a form (`application/x-www-form-urlencoded`), such as an
    /// RFC 8693 token exchange.
    pub(crate) async fn post_form<T: DeserializeOwned>(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<T> {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.check(req).await?.json().await.context("read server response")
    }

    pub(crate) async fn put<B: Serialize>(&self, path: &str, body: Option<&B>) -> anyhow::Result<()> {
        self.send(Method::PUT, path, body).await?;
        Ok(())
    }

    pub(crate) async fn post_empty(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send::<()>(Method::POST, path, None).await
    }

    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send::<()>(Method::DELETE, path, None).await?;
        Ok(())
    }

    /// Fetches every page of a list. `query` is appended (without `?`).
    pub(crate) async fn list_all<T: DeserializeOwned>(&self, path: &str, query: &str) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let p: Page<T> = self
                .get(&format!("{path}?{query}{sep}page={page}&limit={MAX_LIMIT}"))
                .await?;
            let n = p.items.len();
            out.extend(p.items);
            if n < MAX_LIMIT as usize || out.len() as u64 >= p.total_count {
                return Ok(out);
            }
            page += 1;
        }
    }
}

fn connect_error(base: &str, e: reqwest::Error) -> anyhow::Error {
    let mut chain = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        anyhow::anyhow!(
            "cannot verify the TLS certificate of {base}{chain}\n  trust it with --tls-ca FILE or --tls-trusted-fingerprint SHA256 (printed by 'infra server' at start)"
        )
    } else {
        anyhow::anyhow!("cannot reach {base}{chain}\n  is the server running, and is the address right?")
    }
}

/// Percent-encodes one path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
