//! Forward-auth: the server as the authorisation point of a proxy that
//! keeps its own data path (nginx `auth_request`, Caddy `forward_auth`,
//! Traefik ForwardAuth, Envoy `ext_authz` over HTTP and gRPC).
//!
//! The proxy asks about each request (its host, method, URI and the
//! user's credential); the server answers from memory with the same
//! decision a connector makes ([`infra_auth::decide`]), over the same
//! grants, and records every answer in the audit log. This module is the
//! decision and the answer's content; `http` and `grpc` speak each
//! proxy's protocol.
//!
//! *Architecture Invariant:* the decision reads only [`Apps`], rebuilt
//! from the store on every change signal (so a revoked session or grant
//! takes effect as it does for connectors), never the request's own
//! claims about who the user is: every identity header of the client
//! request is listed for removal, and the identity headers in an answer
//! are Infra's.

pub(crate) mod grpc;
pub(crate) mod http;

use std::sync::{Arc, RwLock};

use ::http::{HeaderMap, HeaderName, Method};
use infra_auth::decide::{Decider, Identity};
use infra_core::{AppOrigin, ReturnPath};
use infra_tunnel::credential;

/// The forward-auth destinations and the decider over their grants; empty
/// until first built.
#[derive(Default)]
pub(crate) struct Apps(RwLock<Option<Arc<Ready>>>);

/// One build of the decision's inputs.
pub(crate) struct Ready {
    decider: Decider,
    apps: Vec<(String, AppOrigin)>,
    /// The server's public URL: tokens' issuer and where browsers sign in.
    issuer: String,
}

impl Apps {
    pub(crate) fn current(&self) -> Option<Arc<Ready>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    pub(crate) fn set(&self, r: Ready) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(Arc::new(r));
        }
    }
}

impl Ready {
    pub(crate) fn new(decider: Decider, apps: Vec<(String, AppOrigin)>, issuer: String) -> Self {
        Self { decider, apps, issuer }
    }

    /// The forward-auth destination at `origin`'s host and port, if any.
    pub(crate) fn destination_at(&self, host: &str, port: u16) -> Option<(&str, &AppOrigin)> {
        self.apps
            .iter()
            .find(|(_, o)| o.host().eq_ignore_ascii_case(host) && o.port() == port)
            .map(|(n, o)| (n.as_str(), o))
    }

    /// The forward-auth destination a `Host` value names, if any.
    fn destination_for(&self, host: &str) -> Option<(&str, &AppOrigin)> {
        self.apps
            .iter()
            .find(|(_, o)| o.matches_host(host))
            .map(|(n, o)| (n.as_str(), o))
    }
}

/// What a proxy asked about: the client's request as the proxy saw it.
pub(crate) struct Ask<'a> {
    /// The host the client addressed (`X-Forwarded-Host`, `:authority`).
    pub(crate) host: &'a str,
    pub(crate) method: Method,
    /// Path and query.
    pub(crate) uri: &'a str,
    /// The client request's headers (the credential, `Origin`,
    /// `Sec-Fetch-Site`, `Accept`).
    pub(crate) headers: &'a HeaderMap,
}

/// The answer.
pub(crate) enum Verdict {
    Allow {
        destination: String,
        ident: Box<Identity>,
        /// The client's `Cookie` without Infra's token cookie (`None` when
        /// nothing is left): what the upstream should get instead.
        upstream_cookie: Option<String>,
    },
    Deny {
        destination: Option<String>,
        /// 401 (no or bad credential), 403 (no grant, another origin's
        /// page, an unknown host) or 503 (not ready yet).
        status: u16,
        message: String,
        /// Where to send a browser to sign in (401 only).
        sign_in: Option<String>,
        /// Who asked, as far as the token said (for the audit log).
        user: String,
    },
}

fn deny(destination: Option<&str>, status: u16, message: impl Into<String>, user: &str) -> Verdict {
    Verdict::Deny {
        destination: destination.map(str::to_owned),
        status,
        message: message.into(),
        sign_in: None,
        user: user.to_owned(),
    }
}

impl Ready {
    /// The decision about one request.
    pub(crate) fn decide(&self, ask: &Ask<'_>, now_ms: i64) -> Verdict {
        let Some((dest, origin)) = self.destination_for(ask.host) else {
            return deny(
                None,
                403,
                format!(
                    "no forward-auth destination has the host '{}'; an admin adds one with 'infra destinations add NAME --url https://HOST'",
                    ask.host.chars().take(100).collect::<String>()
                ),
                "anonymous",
            );
        };
        let sign_in = || {
            let back = format!("{origin}{}", ReturnPath::or_root(ask.uri));
            format!("{}/authorize?rd={}", self.issuer, enc(&back))
        };
        // The application's own origin, as a browser writes it in `Origin`
        // (the port only when it is not 443): proxies often name the host
        // alone.
        let authority = origin.to_string();
        let authority = authority.trim_start_matches("https://");
        if let Some(why) = credential::cross_origin_cookie_use(ask.headers, &ask.method, Some(authority)) {
            return deny(
                Some(dest),
                403,
                format!("refused a request carrying the browser's Infra cookie: {why}"),
                "anonymous",
            );
        }
        let Some(token) = credential::token_from(ask.headers) else {
            return Verdict::Deny {
                destination: Some(dest.to_owned()),
                status: 401,
                message: format!("sign in to reach {dest}: open {}", sign_in()),
                sign_in: Some(sign_in()),
                user: "anonymous".into(),
            };
        };
        let claims = match self.decider.verify(&token, dest) {
            Ok(c) => c,
            Err(d) => {
                return Verdict::Deny {
                    destination: Some(dest.to_owned()),
                    sign_in: (d.status == 401).then(sign_in),
                    status: d.status,
                    message: d.message,
                    user: "unknown".into(),
                };
            }
        };
        match self.decider.authorize(&claims, dest, now_ms) {
            Ok(ident) => Verdict::Allow {
                destination: dest.to_owned(),
                ident: Box::new(ident),
                upstream_cookie: credential::cookies_without_token(ask.headers),
            },
            Err(d) => Verdict::Deny {
                destination: Some(dest.to_owned()),
                sign_in: (d.status == 401).then(sign_in),
                status: d.status,
                message: d.message,
                user: claims.name,
            },
        }
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The headers the upstream gets from Infra on an allowed request, to set
/// (replacing any the client sent).
pub(crate) fn upstream_headers(ident: &Identity) -> [(HeaderName, String); 7] {
    infra_tunnel::hygiene::identity_headers(&ident.email, &ident.groups, &ident.roles)
}

/// The client request headers a proxy must drop before the request goes
/// upstream: every identity claim in any spelling (the hygiene rule the
/// connector applies) and the credential. `Cookie` is replaced rather
/// than dropped (see [`Verdict::Allow`]).
///
/// The proxy's own `X-Forwarded-For`, `-Proto` and `-Host` (in exactly
/// that spelling) are kept: the proxy sets them, and Envoy by the request
/// it received, not by what the client wrote.
pub(crate) fn headers_to_remove(client: &HeaderMap) -> Vec<String> {
    const PROXYS_OWN: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
    let mut out: Vec<String> = client
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| infra_tunnel::hygiene::is_identity(n) && !PROXYS_OWN.contains(n))
        .map(str::to_owned)
        .collect();
    if client.contains_key(::http::header::AUTHORIZATION) {
        out.push("authorization".into());
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
