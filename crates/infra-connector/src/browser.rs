//! What browsers need of an HTTP destination: the token kept in a cookie
//! for one host (set by `/.infra/callback`), a login redirect instead of a
//! 401, and the rules that keep another origin from using that cookie.

use base64::Engine;
use http::header::{self, HeaderMap};
use http::{HeaderValue, Response, StatusCode};
use infra_core::ReturnPath;
use infra_tunnel::Body;

use crate::answer::json_error;
use crate::clock::now_ms;
use crate::state::State;

fn hv(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The cookie a browser carries its token in, set by `/.infra/callback`.
/// `__Host-`: a browser keeps such a cookie only if it was set by this very
/// host over HTTPS with `Path=/` and no `Domain`, so a sibling destination's
/// upstream (`other.<gateway domain>`) can neither plant one here nor
/// shadow it with a more specific path. Only this exact name is read.
pub(crate) const TOKEN_COOKIE: &str = "__Host-infra_token";

/// Whether a cookie name is the token cookie in any spelling a browser or
/// an older connector may have used: removed before requests go upstream,
/// and refused from upstream responses.
pub(crate) fn is_token_cookie(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    let bare = n
        .strip_prefix("__host-")
        .or_else(|| n.strip_prefix("__secure-"))
        .unwrap_or(&n);
    bare == "infra_token"
}

/// The user's token from `Authorization: Bearer T`, Basic with the token as
/// the password, or the browser's token cookie.
pub(crate) fn token_from(headers: &http::HeaderMap) -> Option<String> {
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

/// Where the server sends a browser back with a token.
pub(crate) const CALLBACK_PATH: &str = "/.infra/callback";

/// Whether a browser was made to use the token cookie by a page of another
/// origin: a state-changing method or an upgrade (a WebSocket, whose
/// messages such a page could read) that a browser marks as not from this
/// very origin. A sibling destination (`other.<gateway domain>`) is the
/// same *site*, so `SameSite=Lax` lets the cookie through; these checks
/// do not. Requests with `Authorization` are not a browser's ambient
/// credential and are not affected.
pub(crate) fn cross_origin_cookie_use(h: &HeaderMap, method: &http::Method) -> Option<String> {
    if h.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    if safe && !h.contains_key(infra_tunnel::HDR_UPGRADE) && !h.contains_key(header::UPGRADE) {
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
    let host = text(infra_tunnel::HDR_HOST).or_else(|| text(header::HOST.as_str()))?;
    match text(header::ORIGIN.as_str()) {
        Some(origin) if !origin.eq_ignore_ascii_case(&format!("https://{host}")) => {
            Some(format!("it came from another origin ({origin})"))
        }
        _ => None,
    }
}

pub(crate) fn wants_html(h: &HeaderMap, method: &http::Method) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// 302 to the server's `/authorize`, which comes back to this URL.
pub(crate) fn login_redirect(state: &State, h: &HeaderMap, path: &str) -> Option<Response<Body>> {
    let host = h
        .get(infra_tunnel::HDR_HOST)
        .or_else(|| h.get(header::HOST))?
        .to_str()
        .ok()?;
    let issuer = state.issuer();
    if issuer.is_empty() {
        return None;
    }
    let back = format!("https://{host}{}", ReturnPath::or_root(path));
    let mut r = Response::new(infra_tunnel::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, hv(&format!("{issuer}/authorize?rd={}", enc(&back)))?);
    Some(r)
}

/// `/.infra/callback?token=…&rd=/path`: keep the token as a cookie for this
/// host only, and go back to the page. The token is checked first, so a
/// forged link cannot plant a cookie that would let anyone in.
pub(crate) fn callback(state: &State, dest: &str, query: &str) -> Response<Body> {
    let mut token = None;
    let mut rd = ReturnPath::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            // Only a path on this host, never an open redirect: anything
            // else returns to the destination's root.
            "rd" => rd = ReturnPath::or_root(&v),
            _ => {}
        }
    }
    let Some(token) = token else {
        return json_error(400, "missing token");
    };
    let Some(decider) = state.decider() else {
        return json_error(
            503,
            "this connector has not received its grants from the server yet; try again shortly",
        );
    };
    let Ok(claims) = decider.verify(&token, dest) else {
        return json_error(
            401,
            "the token in this link is invalid or expired; open the destination again",
        );
    };
    if let Err(d) = decider.authorize(&claims, dest, now_ms()) {
        return json_error(d.status, &d.message);
    }
    let max_age = (claims.exp - now_ms() / 1000).max(0);
    // `__Host-` requires `Secure`, `Path=/` and no `Domain`: the cookie is
    // this host's alone. `SameSite=Lax` keeps it off cross-site requests
    // other than top-level navigations (see docs/security.md for what a
    // sibling destination, which is same-site, can still do).
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    let mut r = Response::new(infra_tunnel::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let (Some(loc), Some(c)) = (hv(rd.as_str()), hv(&cookie)) {
        r.headers_mut().insert(header::LOCATION, loc);
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Removes the connector's token cookie in every spelling (other cookies
/// are the upstream's).
pub(crate) fn strip_token_cookie(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !kv.split('=').next().is_some_and(is_token_cookie))
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Some(v) = hv(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

/// Drops an upstream's `Set-Cookie` for the token cookie: an upstream must
/// not fix a user's Infra credential (to its own account, say) in their
/// browser.
pub(crate) fn strip_token_set_cookie(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v.to_str().ok().and_then(|s| s.split(['=', ';']).next());
            !name.is_some_and(is_token_cookie)
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

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
            cross_origin_cookie_use(&h, &method).is_some(),
            refused,
            "{method} {pairs:?}"
        );
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

    #[test]
    fn upstream_cannot_set_the_token_cookie() {
        let mut h = headers(&[
            ("set-cookie", "__Host-infra_token=fixed; Path=/; Secure"),
            ("set-cookie", "infra_token=fixed; Domain=localhost"),
            ("set-cookie", "session=app; Path=/"),
            ("set-cookie", "theme=dark"),
        ]);
        strip_token_set_cookie(&mut h);
        let left: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(left, ["session=app; Path=/", "theme=dark"]);
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
