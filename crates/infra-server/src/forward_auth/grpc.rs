//! Envoy's gRPC authorization service, `envoy.service.auth.v3.Authorization/
//! Check` (protos from `envoy-types`), on the server's port like the rest
//! of the API (HTTP/2 over TLS). An allowed request gets Infra's identity
//! headers to set upstream and the client's identity headers to remove; a
//! denied one gets the status, the JSON error body and, for a browser
//! that must sign in, a redirect.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder};
use infra_store::now_ms;
use infra_tunnel::credential;
use tonic::{Request, Response, Status};

use super::{Ask, Verdict};
use crate::state::AppState;

/// The gRPC path Envoy calls.
pub(crate) const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The service, ready to be routed at [`CHECK_PATH`].
pub(crate) fn service(state: AppState) -> AuthorizationServer<Check> {
    AuthorizationServer::new(Check(state))
}

pub(crate) struct Check(AppState);

#[tonic::async_trait]
impl Authorization for Check {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        let req = request.into_inner();
        let http = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .ok_or_else(|| Status::invalid_argument("the CheckRequest has no attributes.request.http"))?;
        Ok(Response::new(decide(
            &self.0,
            &peer,
            &http.host,
            &http.method,
            &http.path,
            &http.headers,
        )))
    }
}

fn decide(
    state: &AppState,
    peer: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
) -> CheckResponse {
    let Some(ready) = state.forward_auth.current() else {
        return unavailable("the server is still loading its forward-auth destinations; try again shortly");
    };
    let headers = header_map(headers);
    let ask = Ask {
        host,
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        uri: if path.is_empty() { "/" } else { path },
        headers: &headers,
    };
    let started = std::time::Instant::now();
    let verdict = ready.decide(&ask, now_ms());
    if !super::http::record(state, &ask, &verdict, "ext-authz-grpc", peer, started) {
        return unavailable("the audit log is behind; try again shortly");
    }
    match verdict {
        Verdict::Allow {
            ident, upstream_cookie, ..
        } => {
            let mut ok = OkHttpResponseBuilder::new();
            for (name, value) in super::upstream_headers(&ident) {
                ok.add_header(
                    name.as_str(),
                    value,
                    Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                    true,
                );
            }
            for name in super::headers_to_remove(&headers) {
                ok.remove_header(name);
            }
            match upstream_cookie {
                Some(c) => {
                    ok.add_header("cookie", c, Some(HeaderAppendAction::OverwriteIfExistsOrAdd), false);
                }
                None if headers.contains_key(axum::http::header::COOKIE) => {
                    ok.remove_header("cookie");
                }
                None => {}
            }
            let mut r = CheckResponse::with_status(Status::ok("allowed"));
            r.set_http_response(ok);
            r
        }
        Verdict::Deny {
            status,
            message,
            sign_in,
            ..
        } => {
            let mut denied = DeniedHttpResponseBuilder::new();
            let browser = sign_in
                .as_ref()
                .filter(|_| credential::wants_html(&headers, &ask.method));
            let (code, grpc) = match (status, browser) {
                (401, Some(to)) => {
                    denied.add_header("location", to, None, false);
                    (HttpStatusCode::Found, Status::unauthenticated(message.clone()))
                }
                (401, None) => (HttpStatusCode::Unauthorized, Status::unauthenticated(message.clone())),
                (503, _) => (HttpStatusCode::ServiceUnavailable, Status::unavailable(message.clone())),
                _ => (HttpStatusCode::Forbidden, Status::permission_denied(message.clone())),
            };
            if let (Some(to), None) = (&sign_in, browser) {
                denied.add_header("location", to, None, false);
            }
            denied.set_http_status(code);
            denied.add_header("content-type", "application/json", None, false);
            denied.add_header("cache-control", "no-store", None, false);
            denied.set_body(error_body(status, &message));
            let mut r = CheckResponse::with_status(grpc);
            r.set_http_response(denied);
            r
        }
    }
}

fn unavailable(message: &str) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(HttpStatusCode::ServiceUnavailable);
    denied.add_header("content-type", "application/json", None, false);
    denied.set_body(error_body(503, message));
    let mut r = CheckResponse::with_status(Status::unavailable(message));
    r.set_http_response(denied);
    r
}

fn error_body(code: u16, message: &str) -> String {
    serde_json::to_string(&infra_api::ErrorBody {
        code,
        message: message.to_owned(),
    })
    .unwrap_or_default()
}

/// Envoy's header map (lower-case names, repeated headers joined with
/// `,`; `cookie` with `; `) as an HTTP header map. Pseudo-headers and names
/// or values that are not valid HTTP are left out.
fn header_map(h: &HashMap<String, String>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        if k.starts_with(':') {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            out.append(n, v);
        }
    }
    out
}
