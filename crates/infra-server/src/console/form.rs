//! What every console handler starts with: the signed-in caller (`Signed`),
//! or for a form post, the caller, the proof that the post came from the
//! console's own page, and the form's fields (`Posted`). A handler cannot
//! see a posted field before both checks have passed.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::de::DeserializeOwned;

use super::{csrf, html_response, layout};
use crate::authn::{Caller, Source};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller the session cookie names; without one (or with an ended
/// session), a redirect to the sign-in page.
pub(crate) struct Signed(pub(crate) Caller);

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let source = match Source::from_request_parts(parts, state).await {
            Ok(Source(s)) => s,
            Err(e) => return Err(failed(&e)),
        };
        let key = crate::browser::session_cookie(&parts.headers);
        let caller = match key {
            Some(k) => Caller::from_key(state, &k, source, false).await.ok(),
            None => None,
        };
        caller.map(Signed).ok_or_else(|| Redirect::to("/login").into_response())
    }
}

/// A form post from a console page: signed in, sent by this origin, with
/// this session's token; then its fields, as `T`.
pub(crate) struct Posted<T> {
    pub(crate) caller: Caller,
    pub(crate) form: T,
}

#[derive(serde::Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let Signed(caller) = Signed::from_request_parts(&mut parts, state).await?;
        if !crate::browser::posted_from_here(&parts.headers, &parts.uri) {
            return Err(refused());
        }
        let bytes = axum::body::to_bytes(body, crate::extract::MAX_BODY_BYTES)
            .await
            .map_err(|_| failed(&ApiError::bad_request("the form could not be read")))?;
        let token: Token = serde_urlencoded::from_bytes(&bytes).map_err(|_| refused())?;
        if !csrf::check(state, &caller, &token.csrf) {
            return Err(refused());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            failed(&ApiError::bad_request(format!(
                "the form is not one this page sends: {e}"
            )))
        })?;
        Ok(Posted { caller, form })
    }
}

/// The answer to a form post that did not come from the console's own page.
pub(crate) fn refused() -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        layout::error_page(
            "This form was not sent from this page of the console, so it was refused. Reload the page and try again.",
        ),
    )
}

/// After a change: to `to` when the API did it, else the error page.
pub(crate) fn then_to<T>(done: crate::error::ApiResult<T>, to: &str) -> Response {
    match done {
        Ok(_) => Redirect::to(to).into_response(),
        Err(e) => failed(&e),
    }
}

/// An error page for an API error, with its status.
pub(crate) fn failed(e: &ApiError) -> Response {
    html_response(e.status, layout::error_page(&e.message))
}

/// Whether an API error is about what the form said (shown next to its
/// field), rather than about who sent it (a refusal page of its own: the
/// form may not even be on the caller's page).
pub(crate) fn about_the_form(e: &ApiError) -> bool {
    e.status.is_client_error() && !matches!(e.status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED)
}

/// Whether this GET came from a page of this site (`Sec-Fetch-Site:
/// same-origin`): only then may a link fill a form in.
pub(crate) fn from_here(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin")
}

/// A non-empty trimmed field, or none.
pub(crate) fn given(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Who a page is drawn for: the frame's name and navigation, the token its
/// forms carry, and whether it shows the controls that change things.
pub(crate) struct Viewer {
    pub(crate) email: String,
    pub(crate) token: String,
    /// A role on Infra: the administration pages.
    pub(crate) staff: bool,
    /// `admin` on Infra: their forms and buttons.
    pub(crate) admin: bool,
}

impl Viewer {
    pub(crate) fn of(state: &AppState, c: &Caller) -> Self {
        Self {
            email: c.user.email.clone(),
            token: csrf::token(state, c),
            staff: c.role.is_some(),
            admin: c.role.is_some_and(|r| r.satisfies(infra_core::InfraRole::Admin)),
        }
    }

    /// The page `title` with `body` in the console's frame.
    pub(crate) fn page(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        html_response(status, layout::page(title, &self.email, &self.token, self.staff, body))
    }
}

/// What went wrong with a form: which form and field, and the API's message.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) form: &'static str,
    pub(crate) field: &'static str,
    pub(crate) message: String,
    pub(crate) status: StatusCode,
}

impl FieldError {
    pub(crate) fn new(form: &'static str, field: &'static str, e: ApiError) -> Self {
        Self {
            form,
            field,
            message: e.message,
            status: e.status,
        }
    }

    /// The message, if it belongs to `field` of `form`.
    pub(crate) fn at(e: Option<&Self>, form: &str, field: &str) -> Option<String> {
        e.filter(|e| e.form == form && e.field == field)
            .map(|e| e.message.clone())
    }
}

/// A labelled text input, with the error that concerns it right below and
/// tied to it for screen readers.
pub(crate) fn field(
    id: &str,
    label: &str,
    name: &str,
    value: &str,
    error: Option<String>,
    attrs: (&str, &str, bool),
) -> Markup {
    let (kind, placeholder, required) = attrs;
    let err_id = format!("{id}-error");
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) type=(kind) name=(name) value=(value) placeholder=(placeholder) required[required]
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| err_id.as_str())];
            @if let Some(e) = &error { p.error id=(err_id) role="alert" { (e) } }
        }
    }
}

/// The hidden token every console form carries.
pub(crate) fn token_input(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A one-button form that posts to `action` (removals, ends).
pub(crate) fn button_form(action: &str, token: &str, label: &str, aria: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (token_input(token))
            button.danger type="submit" aria-label=(aria) { (label) }
        }
    }
}

/// Previous/next links for a paged list; `base` already carries the
/// page's other query parameters (and ends in `?` or `&`).
pub(crate) fn pager(base: &str, page: u32, limit: u32, total: u64) -> Markup {
    let last = u32::try_from(total.div_ceil(u64::from(limit.max(1))))
        .unwrap_or(u32::MAX)
        .max(1);
    html! {
        @if last > 1 {
            nav.pager aria-label="Pages" {
                @if page > 1 { a href=(format!("{base}page={}", page - 1)) rel="prev" { "Previous" } }
                span { "Page " (page) " of " (last) " (" (total) ")" }
                @if page < last { a href=(format!("{base}page={}", page + 1)) rel="next" { "Next" } }
            }
        }
    }
}

/// A value for a URL's path segment or query: every byte but the
/// unreserved ones (`A-Z a-z 0-9 - . _ ~`) percent-encoded, so a space is
/// `%20` in both places and `/`, `?`, `#`, `&`, `+` never split anything.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filters of a list page as a query string for its links (each
/// `key=value&`, empty ones left out).
pub(crate) fn filter_query(filters: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in filters {
        if !v.trim().is_empty() {
            s.push_str(&format!("{k}={}&", enc(v.trim())));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn a_name_stays_one_segment() {
        assert_eq!(enc("a b/c?d#e&f+g@h.i"), "a%20b%2Fc%3Fd%23e%26f%2Bg%40h.i");
        assert_eq!(enc("o'neil"), "o%27neil");
    }
}
