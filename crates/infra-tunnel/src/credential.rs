//! Where a request carries its Infra credential (a bearer token, Basic
//! with the token as the password, or the browser's token cookie), and the
//! rule that keeps another origin from using that cookie. Read by every
//! place that admits HTTP: the connector and the server's forward-auth.

use base64::Engine;
use http::header::{self, HeaderMap};

/// The cookie a browser carries its token in, set by `/.infra/callback`.
/// `__Host-`: a browser keeps such a cookie only if it was set by this very
/// host over HTTPS with `Path=/` and no `Domain`, so a sibling destination's
/// upstream (`other.<gateway domain>`) can neither plant one here nor
/// shadow it with a more specific path. Only this exact name is read.
pub const TOKEN_COOKIE: &str = "__Host-infra_token";

/// Whether a cookie name is the token cookie in any spelling a browser or
/// an older connector may have used: removed before requests go upstream,
/// and refused from upstream responses.
pub fn is_token_cookie(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    let bare = n
        .strip_prefix("__host-")
        .or_else(|| n.strip_prefix("__secure-"))
        .unwrap_or(&n);
    bare == "infra_token"
}

/// The user's token from `Authorization: Bearer T`, Basic with the token as
/// the password, or the browser's token cookie.
pub fn token_from(headers: &http::HeaderMap) -> Option<String> {
    let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == TOKEN_COOKIE)
            .map(|(_, v)| v.to_owned());
    };
    let (scheme, rest) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (_, pw) = text.split_once(':')?;
        return Some(pw.to_owned());
    }
    None
}

/// The `Set-Cookie` value that keeps `token` in the browser for this host
/// alone: `__Host-` requires `Secure`, `Path=/` and no `Domain`;
/// `HttpOnly` keeps it from scripts; `SameSite=Lax` off cross-site
/// requests but top-level navigations (see docs/security.md for what a
/// sibling destination, which is same-site, can still do).
pub fn token_set_cookie(token: &str, max_age_secs: i64) -> String {
    format!("{TOKEN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}")
}

/// The client's cookies other than the token cookie (in any spelling), as
/// one `Cookie` value; `None` when none are left. What an upstream gets.
pub fn cookies_without_token(h: &HeaderMap) -> Option<String> {
    let kept: Vec<&str> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !kv.split('=').next().is_some_and(is_token_cookie))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Where the server sends a browser back with a token.
pub const CALLBACK_PATH: &str = "/.infra/callback";

/// Whether a browser was made to use the token cookie by a page of another
/// origin: a state-changing method or an upgrade (a WebSocket, whose
/// messages such a page could read) that a browser marks as not from this
/// very origin. A sibling destination (`other.<gateway domain>`) is the
/// same *site*, so `SameSite=Lax` lets the cookie through; these checks
/// do not. `host` is the host the browser addressed. Requests with `Authorization` are not a browser's ambient
/// credential and are not affected.
pub fn cross_origin_cookie_use(h: &HeaderMap, method: &http::Method, host: Option<&str>) -> Option<String> {
    if h.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    if safe && !h.contains_key(crate::HDR_UPGRADE) && !h.contains_key(header::UPGRADE) {
        return None;
    }
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    // Fetch metadata: `same-origin`, or `none` for what the user did
    // (typed, bookmarked) are fine; `same-site` and `cross-site` are not.
    if let Some(site) = text("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Some(format!("it came from another origin (Sec-Fetch-Site: {site})"));
    }
    let host = host?.trim();
    match text(header::ORIGIN.as_str()) {
        Some(origin) if !origin.eq_ignore_ascii_case(&format!("https://{host}")) => {
            Some(format!("it came from another origin ({origin})"))
        }
        _ => None,
    }
}

/// Whether the request is a browser's page load (worth a redirect to sign
/// in rather than a 401).
pub fn wants_html(h: &HeaderMap, method: &http::Method) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    /// Whether a request with these headers is refused as a cross-origin
    /// use of the token cookie.
    fn check(method: http::Method, pairs: &[(&'static str, &'static str)], refused: bool) {
        let h = headers(pairs);
        assert_eq!(
            cross_origin_cookie_use(&h, &method, host_of(&h)).is_some(),
            refused,
            "{method} {pairs:?}"
        );
    }

    fn host_of(h: &HeaderMap) -> Option<&str> {
        h.get(crate::HDR_HOST)
            .or_else(|| h.get(header::HOST))
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn cross_origin_cookie_uses() {
        use http::Method;
        let host = ("x-infra-host", "web.localhost:4443");
        for (method, pairs, refused) in [
            (
                Method::POST,
                vec![host, ("origin", "https://other.localhost:4443")],
                true,
            ),
            (Method::POST, vec![host, ("origin", "https://web.localhost")], true),
            (Method::POST, vec![host, ("origin", "null")], true),
            (Method::DELETE, vec![host, ("sec-fetch-site", "same-site")], true),
            (Method::PUT, vec![host, ("sec-fetch-site", "cross-site")], true),
            (
                Method::GET,
                vec![
                    host,
                    ("x-infra-upgrade", "websocket"),
                    ("origin", "https://other.localhost:4443"),
                ],
                true,
            ),
            (
                Method::POST,
                vec![host, ("origin", "https://web.localhost:4443")],
                false,
            ),
            (
                Method::POST,
                vec![
                    host,
                    ("origin", "https://WEB.localhost:4443"),
                    ("sec-fetch-site", "same-origin"),
                ],
                false,
            ),
            (Method::POST, vec![host, ("sec-fetch-site", "none")], false),
            (Method::POST, vec![host], false),
            (
                Method::GET,
                vec![
                    host,
                    ("origin", "https://other.localhost:4443"),
                    ("sec-fetch-site", "same-site"),
                ],
                false,
            ),
            (
                Method::POST,
                vec![
                    host,
                    ("authorization", "Bearer t"),
                    ("origin", "https://other.localhost:4443"),
                ],
                false,
            ),
            (
                Method::POST,
                vec![("host", "web.localhost:4443"), ("origin", "https://web.localhost:4443")],
                false,
            ),
        ] {
            check(method, &pairs, refused);
        }
    }

    /// The token a request with this `Cookie` header carries, if any.
    fn check_cookie(cookie: &str, expected: Option<&str>) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, http::HeaderValue::from_str(cookie).unwrap());
        assert_eq!(token_from(&h).as_deref(), expected, "{cookie}");
    }

    #[test]
    fn only_the_host_prefixed_cookie_is_a_credential() {
        check_cookie("__Host-infra_token=T", Some("T"));
        check_cookie("a=1; __Host-infra_token=T; b=2", Some("T"));
        check_cookie("infra_token=PLANTED; __Host-infra_token=T", Some("T"));
        check_cookie("infra_token=PLANTED", None);
        check_cookie("__Secure-infra_token=PLANTED", None);
        check_cookie("__host-infra_token=PLANTED", None);
        check_cookie("__Host-infra_token_x=PLANTED", None);
    }

    #[test]
    fn token_cookie_spellings() {
        for name in [
            "infra_token",
            "__Host-infra_token",
            "__host-infra_token",
            "__Secure-infra_token",
            " INFRA_TOKEN",
        ] {
            assert!(is_token_cookie(name), "{name}");
        }
        for name in ["infra_token2", "x_infra_token", "theme", "__Host-infra_session"] {
            assert!(!is_token_cookie(name), "{name}");
        }
    }
}
