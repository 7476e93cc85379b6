//! Header hygiene: which request headers a client may never set, and which
//! upgrades exist. The one rule, used by the server's gateway, the
//! connector's proxy and its direct mode.
//!
//! Names are compared after [`normalise`]: CGI, WSGI, PHP, Rack and many
//! frameworks turn `X-Forwarded_User`, `X-Forwarded.User` and
//! `X-Forwarded-User` into the same variable (`HTTP_X_FORWARDED_USER`), so
//! a filter on one spelling lets the others through.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// The reserved namespace: headers the server and connector set for each
/// other (destination, client address, upgrade, assertion).
const RESERVED_PREFIX: &str = "x-infra-";

/// Identity claims by prefix (normalised): Infra's own, and those other
/// proxies and platforms set, which upstream applications trust.
const IDENTITY_PREFIXES: [&str; 15] = [
    "x-forwarded-",          // X-Forwarded-User/-Email/-Groups/-For/-Host/-Proto…
    RESERVED_PREFIX,         // X-Infra-Assertion and the tunnel's own
    "impersonate-",          // Kubernetes
    "x-remote-",             // Kubernetes front proxy: X-Remote-User/-Group/-Extra-*
    "remote-",               // Remote-User (Authelia, Apache), Remote-Groups, Remote-Email
    "x-auth-request-",       // oauth2-proxy: -User, -Email, -Groups, -Preferred-Username
    "x-webauth-",            // Grafana's auth proxy: X-WEBAUTH-USER…
    "x-authenticated-",      // Kong, Istio: X-Authenticated-Userid…
    "x-consumer-",           // Kong: X-Consumer-Username…
    "x-credential-",         // Kong: X-Credential-Identifier
    "x-goog-authenticated-", // Google IAP
    "x-amzn-oidc-",          // AWS ALB
    "cf-access-",            // Cloudflare Access
    "x-ms-client-principal", // Azure App Service
    "x-pomerium-",           // Pomerium
];

/// Identity claims by exact (normalised) name. (`X-User-*` is not a prefix
/// here: grpc-web's `X-User-Agent` is no identity.)
const IDENTITY_NAMES: [&str; 17] = [
    "forwarded",
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-user",
    "x-user-id",
    "x-user-email",
    "x-user-groups",
    "x-email",
    "x-username",
    "x-groups",
    "x-userinfo",
    "x-auth-user",
];

/// The name as upstream software may read it: lower case, and every
/// character that is not a letter or digit as `-` (so `_` and `.` too).
pub fn normalise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The identity headers an upstream is given, by every path that lets a
/// request through (the connector's proxy, the server's forward-auth and
/// `ext_authz`): the `X-Forwarded-*` names and oauth2-proxy's
/// `X-Auth-Request-*`, so an application set up for either keeps working.
/// Groups and roles are comma-separated (Infra's names contain no comma).
pub fn identity_headers(user: &str, groups: &[String], roles: &[String]) -> [(HeaderName, String); 7] {
    let groups = groups.join(",");
    [
        (HeaderName::from_static("x-forwarded-user"), user.to_owned()),
        (HeaderName::from_static("x-forwarded-email"), user.to_owned()),
        (HeaderName::from_static("x-forwarded-groups"), groups.clone()),
        (HeaderName::from_static("x-forwarded-role"), roles.join(",")),
        (HeaderName::from_static("x-auth-request-user"), user.to_owned()),
        (HeaderName::from_static("x-auth-request-email"), user.to_owned()),
        (HeaderName::from_static("x-auth-request-groups"), groups),
    ]
}

/// Whether `name` is in the reserved `X-Infra-*` namespace, however spelt.
pub fn is_reserved(name: &str) -> bool {
    normalise(name).starts_with(RESERVED_PREFIX)
}

/// Whether `name` claims an identity (or a client address), however spelt.
pub fn is_identity(name: &str) -> bool {
    let n = normalise(name);
    IDENTITY_NAMES.contains(&n.as_str()) || IDENTITY_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Whether `name` is a Kubernetes impersonation header, however spelt.
pub fn is_impersonation(name: &str) -> bool {
    normalise(name).starts_with("impersonate-")
}

fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|k| doomed(k.as_str())).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// Removes the reserved namespace: what the gateway (or direct mode) does
/// before it sets its own `X-Infra-*` headers.
pub fn strip_reserved(h: &mut HeaderMap) {
    remove_where(h, is_reserved);
}

/// Removes every header the client must not control before a request goes
/// upstream: hop-by-hop headers and those named in `Connection`, the
/// client's credential, and every identity claim in any spelling.
pub fn strip_client_headers(h: &mut HeaderMap) {
    crate::strip_hop_by_hop(h);
    h.remove(header::AUTHORIZATION);
    remove_where(h, is_identity);
}

/// The protocols a client may upgrade to. Anything else (`h2c`, which would
/// let the client talk HTTP/2 straight to the upstream and set any header
/// on every later request, or a protocol we do not know) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// RFC 6455; also Kubernetes' newer exec/attach/port-forward.
    WebSocket,
    /// Kubernetes exec, attach and port-forward (kubectl's older protocol).
    Spdy31,
    /// Infra's raw byte stream for database and SSH sessions.
    InfraTcp,
}

impl Upgrade {
    /// One protocol token (RFC 9110 §7.8), case-insensitive; a list, a
    /// version we do not know or anything else is `None`.
    pub fn parse(v: &HeaderValue) -> Option<Self> {
        let s = v.to_str().ok()?.trim();
        [Self::WebSocket, Self::Spdy31, Self::InfraTcp]
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Spdy31 => "SPDY/3.1",
            Self::InfraTcp => crate::TCP_UPGRADE,
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a header name is treated as an identity claim.
    fn check(name: &str, expected: bool) {
        assert_eq!(is_identity(name), expected, "{name}");
    }

    #[test]
    fn normalised_names() {
        for (input, want) in [
            ("X-Forwarded-User", "x-forwarded-user"),
            ("X-Forwarded_User", "x-forwarded-user"),
            ("x_forwarded_user", "x-forwarded-user"),
            ("X.Forwarded.User", "x-forwarded-user"),
            ("X-WEBAUTH-USER", "x-webauth-user"),
            ("Impersonate_User", "impersonate-user"),
        ] {
            assert_eq!(normalise(input), want, "{input}");
        }
    }

    #[test]
    fn identity_headers_in_any_spelling() {
        for name in [
            "X-Forwarded-User",
            "X-Forwarded_User",
            "x_forwarded_user",
            "X-Forwarded.Email",
            "x-forwarded-groups",
            "X-Forwarded-For",
            "X_Forwarded_Host",
            "Forwarded",
            "X-Real-IP",
            "X_Real_IP",
            "X-Client-IP",
            "X-Infra-Assertion",
            "X-Infra_Foo",
            "x_infra_destination",
            "Impersonate-User",
            "Impersonate_User",
            "impersonate-extra-scopes",
            "Remote-User",
            "Remote_User",
            "Remote-Groups",
            "X-Remote-User",
            "X-Remote-Group",
            "X-Remote-Extra-Scopes",
            "X-Auth-Request-User",
            "X-Auth-Request-Email",
            "X-Auth-Request-Groups",
            "X-Auth-Request-Preferred-Username",
            "x_auth_request_access_token",
            "X-WEBAUTH-USER",
            "X_WEBAUTH_USER",
            "X-Goog-Authenticated-User-Email",
            "X-Amzn-Oidc-Identity",
            "Cf-Access-Authenticated-User-Email",
            "X-MS-CLIENT-PRINCIPAL-NAME",
            "X-Pomerium-Claim-Email",
            "X-Authenticated-Userid",
            "X-Consumer-Username",
            "X-User",
            "X-User-Id",
            "X-Email",
        ] {
            check(name, true);
        }
        for name in [
            "accept",
            "cookie",
            "content-type",
            "x-request-id",
            "x-forwardedfor-note",
            "user-agent",
            "x-csrf-token",
            "sec-websocket-protocol",
            "x-infrastructure",
            "x-user-agent",
        ] {
            check(name, false);
        }
    }

    #[test]
    fn strip_keeps_what_is_not_identity() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded_user", "evil"),
            ("remote-user", "evil"),
            ("authorization", "Bearer t"),
            ("connection", "x-keep-me"),
            ("x-keep-me", "gone: named in Connection"),
            ("accept", "text/html"),
            ("cookie", "a=1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_client_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "cookie"]);
    }

    #[test]
    fn reserved_names_only() {
        let mut h = HeaderMap::new();
        for k in [
            "x-infra-destination",
            "x_infra_destination",
            "x-infra_upgrade",
            "x-forwarded-user",
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static("v"));
        }
        strip_reserved(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-forwarded-user"]);
    }

    #[test]
    fn upgrades() {
        let p = |s: &'static str| Upgrade::parse(&HeaderValue::from_static(s));
        for (input, want) in [
            ("websocket", Some(Upgrade::WebSocket)),
            ("WebSocket", Some(Upgrade::WebSocket)),
            (" websocket ", Some(Upgrade::WebSocket)),
            ("SPDY/3.1", Some(Upgrade::Spdy31)),
            ("spdy/3.1", Some(Upgrade::Spdy31)),
            ("infra-tcp/1", Some(Upgrade::InfraTcp)),
            ("h2c", None),
            ("h2", None),
            ("HTTP/2.0", None),
            ("TLS/1.2", None),
            ("websocket, h2c", None),
            ("h2c, websocket", None),
            ("SPDY/3", None),
            ("", None),
        ] {
            assert_eq!(p(input), want, "{input:?}");
        }
    }
}
