//! What the server's browser pages share: the session cookie and the check
//! that a form was posted from one of the server's own pages. The sign-in
//! flow (`web.rs`) and the console read them from here.

use axum::http::{HeaderMap, header};

/// The browser's session: an access key of kind `session`, sent only over
/// HTTPS to this exact host, unreadable by scripts.
pub(crate) const SESSION_COOKIE: &str = "__Host-infra_session";

/// Whether a form post comes from a page of this server. Without this check
/// any site could post its author's credentials and log the visitor's
/// browser in as that author (login CSRF): what the visitor then does
/// through Infra would happen in the attacker's name. Browsers say where a
/// post comes from (`Sec-Fetch-Site`, `Origin`); a client that sends
/// neither is no browser a page could drive.
pub(crate) fn posted_from_here(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let text = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text(header::ORIGIN) else {
        return true;
    };
    let host = text(header::HOST)
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("https://{h}")))
}

/// The session key the browser sent, if any.
pub(crate) fn session_cookie(h: &HeaderMap) -> Option<String> {
    cookie(h, SESSION_COOKIE)
}

/// The value of cookie `name`.
pub(crate) fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
