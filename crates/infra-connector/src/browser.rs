//! What browsers need of an HTTP destination: the token kept in a cookie
//! for one host (set by `/.infra/callback`), a login redirect instead of a
//! 401, and the rules that keep another origin from using that cookie.

use http::header::{self, HeaderMap};
use http::{HeaderValue, Response, StatusCode};
use infra_core::ReturnPath;
use infra_tunnel::Body;

use infra_tunnel::credential::is_token_cookie;

use crate::answer::json_error;
use crate::clock::now_ms;
use crate::state::State;

fn hv(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
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
    let cookie = infra_tunnel::credential::token_set_cookie(&token, max_age);
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
    let kept = infra_tunnel::credential::cookies_without_token(h);
    h.remove(header::COOKIE);
    if let Some(v) = kept.as_deref().and_then(hv) {
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
}
