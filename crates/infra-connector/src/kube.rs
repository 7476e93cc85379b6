//! Kubernetes destinations: the API server, the connector's own credential
//! for it, what a request is about (for the audit log), and the answers
//! kubectl understands.
//!
//! *Architecture Invariant:* the user acts on the cluster only as
//! themselves. The connector authenticates with its own service account and
//! sets `Impersonate-User`/`Impersonate-Group` from the verified token and
//! the current memberships; a client that sends any `Impersonate-*` header
//! is refused, never silently overridden.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use infra_tunnel::Body;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::Value;

use crate::config::{KubeConfig, read_secret};

/// How often the service-account token is read again: projected tokens
/// are rotated by the kubelet.
const TOKEN_RELOAD: Duration = Duration::from_secs(60);

/// One Kubernetes API server and the connector's credential for it.
pub(crate) struct KubeUpstream {
    pub(crate) client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `https://host:port`, no trailing slash.
    pub(crate) base: String,
    token_file: PathBuf,
    token: RwLock<String>,
    pub(crate) rbac_sync: bool,
}

impl KubeUpstream {
    pub(crate) fn new(cfg: &KubeConfig, base: &str) -> anyhow::Result<Self> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&cfg.ca_file).with_context(|| format!("read caFile {}", cfg.ca_file.display()))?;
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.with_context(|| format!("caFile {}", cfg.ca_file.display()))?)?;
        }
        if roots.is_empty() {
            anyhow::bail!("caFile {} holds no certificate", cfg.ca_file.display());
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        // HTTP/1.1 only: upgrades (exec, attach, port-forward) need it.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        let token = read_secret(&cfg.token_file, "Kubernetes token")?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token_file: cfg.token_file.clone(),
            token: RwLock::new(token),
            rbac_sync: cfg.rbac_sync,
        })
    }

    /// `Bearer <the connector's own token>`.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        let t = self.token.read().ok()?;
        HeaderValue::from_str(&format!("Bearer {t}")).ok()
    }

    /// Re-reads the token file now and then, for as long as the process runs.
    pub(crate) async fn reload_token_forever(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(TOKEN_RELOAD).await;
            match read_secret(&self.token_file, "Kubernetes token") {
                Ok(t) => {
                    if let Ok(mut g) = self.token.write() {
                        *g = t;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot re-read the Kubernetes token; keeping the old one")
                }
            }
        }
    }

    /// A call of the connector's own (RBAC sync, inventory): JSON in and out.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        self.call_accepting(method, path, body, "application/json").await
    }

    /// [`KubeUpstream::call`] with another `Accept`: the issuer's key set
    /// is `application/jwk-set+json`, and the API server answers 406 to a
    /// request that accepts only `application/json`.
    pub(crate) async fn call_accepting(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &'static str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, accept);
        if let Some(a) = self.authorization() {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(infra_tunnel::full(serde_json::to_vec(b)?))?,
            None => req.body(infra_tunnel::empty())?,
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .with_context(|| format!("{method} {path}: the API server did not answer in 30 s"))?
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.context("read API answer")?.to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }
}

/// What a Kubernetes API request is about, as the API server's own
/// request-info parsing sees it (simplified), for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub(crate) verb: String,
    pub(crate) group: String,
    pub(crate) resource: String,
    pub(crate) subresource: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl RequestInfo {
    /// Parses `/api/v1/namespaces/dev/pods/web/log?follow=true` and the
    /// like. Paths that are not resources (`/version`, `/openapi/v2`) get
    /// the method as verb and the path as resource.
    pub(crate) fn parse(method: &Method, path: &str, query: &str) -> Self {
        let mut info = Self::default();
        // Decoded, as the API server reads it: `pods/web/%65xec` is exec.
        let owned = infra_tunnel::path::segments(path);
        let segs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let rest = match segs.as_slice() {
            ["api", _version, rest @ ..] => rest,
            ["apis", group, _version, rest @ ..] => {
                info.group = (*group).to_owned();
                rest
            }
            _ => {
                info.verb = method.as_str().to_ascii_lowercase();
                info.resource = path.to_owned();
                return info;
            }
        };
        let mut rest = rest;
        let mut watch = query_flag(query, "watch");
        if rest.first() == Some(&"watch") {
            watch = true;
            rest = &rest[1..];
        }
        if rest.len() > 2 && rest[0] == "namespaces" {
            info.namespace = rest[1].to_owned();
            rest = &rest[2..];
        }
        if let Some(r) = rest.first() {
            info.resource = (*r).to_owned();
        }
        if let Some(n) = rest.get(1) {
            info.name = (*n).to_owned();
        }
        if info.resource == "namespaces" && !info.name.is_empty() {
            info.namespace = info.name.clone();
        }
        if let Some(s) = rest.get(2) {
            info.subresource = (*s).to_owned();
        }
        let named = !info.name.is_empty();
        info.verb = match *method {
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "unknown",
        }
        .to_owned();
        info
    }

    /// `verb=list resource=pods namespace=dev` for the audit detail; an
    /// exec or attach also says what it runs.
    pub(crate) fn describe(&self, query: &str) -> String {
        let mut resource = self.resource.clone();
        if !self.group.is_empty() {
            resource = format!("{resource}.{}", self.group);
        }
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        let mut d = format!("verb={} resource={resource}", self.verb);
        if !self.namespace.is_empty() {
            d.push_str(&format!(" namespace={}", self.namespace));
        }
        if !self.name.is_empty() {
            d.push_str(&format!(" name={}", self.name));
        }
        if matches!(self.subresource.as_str(), "exec" | "attach") {
            let cmd: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.into_owned())
                .collect();
            if !cmd.is_empty() {
                d.push_str(&format!(" command={:?}", cmd.join(" ")));
            }
        }
        d
    }
}

fn query_flag(query: &str, key: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == key && (v == "true" || v == "1"))
}

/// A Kubernetes `Status` answer: kubectl shows its message as
/// `Error from server (Forbidden): ...`.
pub(crate) fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
    .to_string();
    let mut r = Response::new(infra_tunnel::full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The `Impersonate-*` header a client sent, in any spelling, if any: such
/// a request is refused (`kubectl --as` must not look like it worked).
pub(crate) fn impersonation_attempt(h: &http::HeaderMap) -> Option<String> {
    h.keys()
        .map(|k| k.as_str())
        .find(|k| infra_tunnel::hygiene::is_impersonation(k))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: Method, path: &str, q: &str) -> String {
        let i = RequestInfo::parse(&m, path, q);
        i.describe(q)
    }

    #[test]
    fn request_info() {
        assert_eq!(
            p(Method::GET, "/api/v1/namespaces/dev/pods", ""),
            "verb=list resource=pods namespace=dev"
        );
        assert_eq!(
            p(
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                "watch=true&resourceVersion=5"
            ),
            "verb=watch resource=pods namespace=dev"
        );
        assert_eq!(
            p(Method::GET, "/api/v1/watch/namespaces/dev/pods", ""),
            "verb=watch resource=pods namespace=dev"
        );
        assert_eq!(
            p(Method::DELETE, "/apis/apps/v1/namespaces/dev/deployments/web", ""),
            "verb=delete resource=deployments.apps namespace=dev name=web"
        );
        assert_eq!(
            p(Method::GET, "/api/v1/namespaces/dev/pods/web/log", "follow=true"),
            "verb=get resource=pods/log namespace=dev name=web"
        );
        assert_eq!(
            p(
                Method::POST,
                "/api/v1/namespaces/dev/pods/web/exec",
                "command=sh&command=-c&command=echo+hi&stdout=true"
            ),
            "verb=create resource=pods/exec namespace=dev name=web command=\"sh -c echo hi\""
        );
        assert_eq!(
            p(Method::GET, "/api/v1/namespaces", ""),
            "verb=list resource=namespaces"
        );
        assert_eq!(
            p(Method::GET, "/api/v1/namespaces/dev", ""),
            "verb=get resource=namespaces namespace=dev name=dev"
        );
        assert_eq!(
            p(Method::GET, "/apis/rbac.authorization.k8s.io/v1/clusterroles", ""),
            "verb=list resource=clusterroles.rbac.authorization.k8s.io"
        );
        assert_eq!(p(Method::GET, "/version", ""), "verb=get resource=/version");
        assert_eq!(p(Method::GET, "/api", ""), "verb=get resource=/api");
        assert_eq!(
            p(Method::DELETE, "/api/v1/namespaces/dev/pods", ""),
            "verb=deletecollection resource=pods namespace=dev"
        );
    }

    #[test]
    fn impersonation_is_spotted() {
        let mut h = http::HeaderMap::new();
        assert_eq!(impersonation_attempt(&h), None);
        h.insert("impersonate-group", HeaderValue::from_static("system:masters"));
        assert_eq!(impersonation_attempt(&h).as_deref(), Some("impersonate-group"));
        let mut h = http::HeaderMap::new();
        h.insert("Impersonate-Extra-Scopes", HeaderValue::from_static("x"));
        assert!(impersonation_attempt(&h).is_some());
        let mut h = http::HeaderMap::new();
        h.insert("Impersonate_User", HeaderValue::from_static("root"));
        assert_eq!(impersonation_attempt(&h).as_deref(), Some("impersonate_user"));
    }
}
