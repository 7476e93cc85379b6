//! The server as an OpenID Connect relying party: discovery, key sets,
//! the authorization code (with PKCE) and device grants, refresh, userinfo.
//!
//! Discovery documents and key sets are cached per issuer for a few
//! minutes; a token signed with a key the cache does not know makes one
//! refetch, which is how a provider's key rotation is followed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

const CACHE_FOR: Duration = Duration::from_secs(300);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    #[serde(default)]
    pub(crate) userinfo_endpoint: Option<String>,
    pub(crate) jwks_uri: String,
    #[serde(default)]
    pub(crate) device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) scopes_supported: Vec<String>,
}

/// The scope that asks a provider for a refresh token.
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

/// A token endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Tokens {
    #[serde(default)]
    pub(crate) id_token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DeviceAuth {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) verification_uri: String,
    #[serde(default)]
    pub(crate) verification_uri_complete: Option<String>,
    #[serde(default)]
    pub(crate) interval: Option<u64>,
    pub(crate) expires_in: u64,
}

/// A failed call to a provider, as the client should hear it.
#[derive(Debug)]
pub(crate) enum OidcError {
    /// The provider said no: its OAuth error code and description.
    Refused { code: String, description: String },
    /// Could not talk to it, or it answered nonsense.
    Unreachable(String),
}

impl OidcError {
    pub(crate) fn describe(&self, provider: &str) -> String {
        match self {
            OidcError::Refused { code, description } if description.is_empty() => {
                format!("identity provider {provider} refused: {code}")
            }
            OidcError::Refused { code, description } => {
                format!("identity provider {provider} refused: {code} ({description})")
            }
            OidcError::Unreachable(e) => format!("cannot use identity provider {provider}: {e}"),
        }
    }

    pub(crate) fn into_api(self, provider: &str) -> ApiError {
        match &self {
            OidcError::Refused { .. } => ApiError::unauthorized(self.describe(provider)),
            OidcError::Unreachable(_) => ApiError::new(axum::http::StatusCode::BAD_GATEWAY, self.describe(provider)),
        }
    }
}

struct Cached {
    at: Instant,
    discovery: Discovery,
    keys: Option<(Instant, JwkSet)>,
}

pub(crate) struct Oidc {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
    /// Key sets by URL, for workload issuers.
    key_sets: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl Oidc {
    pub(crate) fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            cache: Mutex::new(HashMap::new()),
            key_sets: Mutex::new(HashMap::new()),
        }
    }

    /// The discovery document; its issuer must be `issuer` byte for byte.
    pub(crate) async fn discover(&self, issuer: &str) -> Result<Discovery, OidcError> {
        if let Ok(c) = self.cache.lock()
            && let Some(hit) = c.get(issuer)
            && hit.at.elapsed() < CACHE_FOR
        {
            return Ok(hit.discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != issuer {
            return Err(OidcError::Unreachable(format!(
                "its discovery document names issuer {:?}, not {issuer:?} (the issuer must match exactly, scheme, host and port included)",
                d.issuer
            )));
        }
        if let Ok(mut c) = self.cache.lock() {
            c.insert(
                issuer.to_owned(),
                Cached {
                    at: Instant::now(),
                    discovery: d.clone(),
                    keys: None,
                },
            );
        }
        Ok(d)
    }

    /// The issuer's key set; `refresh` fetches it again whatever the cache holds.
    pub(crate) async fn keys(&self, d: &Discovery, refresh: bool) -> Result<JwkSet, OidcError> {
        if !refresh
            && let Ok(c) = self.cache.lock()
            && let Some(Cached {
                keys: Some((at, k)), ..
            }) = c.get(&d.issuer)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(k.clone());
        }
        let keys = self.fetch_keys(&d.jwks_uri).await?;
        if let Ok(mut c) = self.cache.lock()
            && let Some(e) = c.get_mut(&d.issuer)
        {
            e.keys = Some((Instant::now(), keys.clone()));
        }
        Ok(keys)
    }

    /// The key set at `url`, cached; fetched again when it lacks `kid`
    /// (the issuer rotated), at most once a few seconds.
    pub(crate) async fn keys_at(&self, url: &str, kid: Option<&str>) -> Result<JwkSet, OidcError> {
        if let Ok(c) = self.key_sets.lock()
            && let Some((at, set)) = c.get(url)
        {
            let fresh = at.elapsed() < CACHE_FOR;
            let has_kid = kid.is_none_or(|k| set.find(k).is_some());
            if fresh && (has_kid || at.elapsed() < Duration::from_secs(10)) {
                return Ok(set.clone());
            }
        }
        let set = self.fetch_keys(url).await?;
        if let Ok(mut c) = self.key_sets.lock() {
            c.insert(url.to_owned(), (Instant::now(), set.clone()));
        }
        Ok(set)
    }

    pub(crate) async fn fetch_keys(&self, url: &str) -> Result<JwkSet, OidcError> {
        let v: Value = self.get_json(url).await?;
        // Keys this library cannot use (an encryption key, a new curve)
        // are skipped rather than failing the whole set.
        let keys = v["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(JwkSet { keys })
    }

    /// Verifies an ID token; refetches the key set once if its key is new.
    pub(crate) async fn verify_id_token(
        &self,
        d: &Discovery,
        token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<Value, String> {
        let keys = self.keys(d, false).await.map_err(|e| e.describe("the provider"))?;
        let kid = infra_auth::oidc::kid(token).map_err(|e| e.to_string())?;
        let keys = if kid.as_ref().is_some_and(|k| keys.find(k).is_none()) {
            self.keys(d, true).await.map_err(|e| e.describe("the provider"))?
        } else {
            keys
        };
        infra_auth::oidc::verify(token, &keys, &d.issuer, client_id, nonce)
            .map_err(|e| format!("ID token refused: {e}"))
    }

    pub(crate) fn authorization_url(
        d: &Discovery,
        client_id: &str,
        redirect_uri: &str,
        scopes: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let challenge = pkce_challenge(verifier);
        let mut u = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| OidcError::Unreachable(format!("its authorization_endpoint is not a URL: {e}")))?;
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scopes)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        // OpenID Connect Core §11: a request for offline access must ask
        // for consent, or the provider may drop the scope (and issue no
        // refresh token).
        if scopes.split_whitespace().any(|s| s == OFFLINE_ACCESS) {
            u.query_pairs_mut().append_pair("prompt", "consent");
        }
        Ok(u.to_string())
    }

    pub(crate) async fn exchange_code(
        &self,
        d: &Discovery,
        client: (&str, &str),
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, OidcError> {
        self.token(
            &d.token_endpoint,
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    pub(crate) async fn refresh(
        &self,
        d: &Discovery,
        client: (&str, &str),
        refresh_token: &str,
    ) -> Result<Tokens, OidcError> {
        self.token(
            &d.token_endpoint,
            client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        )
        .await
    }

    pub(crate) async fn device_authorize(
        &self,
        d: &Discovery,
        client: (&str, &str),
        scopes: &str,
    ) -> Result<DeviceAuth, OidcError> {
        let endpoint = d.device_authorization_endpoint.as_deref().ok_or_else(|| {
            OidcError::Unreachable(
                "it does not offer the device authorization grant (no device_authorization_endpoint)".into(),
            )
        })?;
        let resp = self
            .http
            .post(endpoint)
            .basic_auth(form(client.0), Some(form(client.1)))
            .form(&[("scope", scopes)])
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        parse(resp).await
    }

    pub(crate) async fn device_token(
        &self,
        d: &Discovery,
        client: (&str, &str),
        device_code: &str,
    ) -> Result<Tokens, OidcError> {
        self.token(
            &d.token_endpoint,
            client,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ],
        )
        .await
    }

    pub(crate) async fn userinfo(&self, d: &Discovery, access_token: &str) -> Result<Value, OidcError> {
        let Some(url) = &d.userinfo_endpoint else {
            return Ok(Value::Null);
        };
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        parse(resp).await
    }

    async fn token(&self, endpoint: &str, client: (&str, &str), params: &[(&str, &str)]) -> Result<Tokens, OidcError> {
        let resp = self
            .http
            .post(endpoint)
            .basic_auth(form(client.0), Some(form(client.1)))
            .form(params)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        parse(resp).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::Unreachable(format!("GET {url}: HTTP {}", resp.status())));
        }
        resp.json()
            .await
            .map_err(|e| OidcError::Unreachable(format!("GET {url}: {e}")))
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic.
fn form(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn parse<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, OidcError> {
    let status = resp.status();
    if status.is_server_error() {
        return Err(OidcError::Unreachable(format!("it answered HTTP {status}")));
    }
    let body: Value = resp.json().await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(OidcError::Refused {
            code: body["error"].as_str().unwrap_or("error").to_owned(),
            description: body["error_description"].as_str().unwrap_or_default().to_owned(),
        });
    }
    serde_json::from_value(body).map_err(|e| OidcError::Unreachable(format!("unexpected answer: {e}")))
}

/// S256: base64url(SHA-256(verifier)).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pkce_s256() {
        // Computed independently: base64url(sha256(v)) in Python.
        assert_eq!(
            super::pkce_challenge("dBjftJeZ4CN5-bsCW6Pu-GCGPKjwMaFMWXoFqYyCSWFB2wJt-jiB"),
            "M2H4aV5li3gOWn_czKGrx3sylTZO2D82dJpIeLS7KAU"
        );
    }
}
