//! Browser login for HTTP destinations.
//!
//! A browser without a credential is sent by the connector to
//! `/authorize?rd=<url>` here. With the server's session cookie (set by the
//! `/login` form) the server issues a token for that destination only and
//! redirects to `https://<destination>…/.infra/callback`, where the
//! connector sets it as a cookie for that host alone. Tokens stay
//! short-lived: when one expires the browser makes the same round trip,
//! invisibly while the server session lasts.
//!
//! *Architecture Invariant:* `rd` must be a URL of a destination on the
//! gateway (`https://<destination>.<gateway domain>:<gateway port>/path`),
//! or on a forward-auth destination's declared origin, whose path is a
//! [`ReturnPath`]; the browser is sent to an origin rebuilt from the
//! destination's name and the gateway's own port (or the declared
//! origin), never one copied from `rd`. So these pages are never an open redirect, a token is never
//! handed to another port or host, and the session cookie never leaves the
//! server's host.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use infra_api::LoginRequest;
use infra_core::ReturnPath;
use serde::Deserialize;

use crate::api::login;
use crate::authn::{Caller, Source};
use crate::browser::{SESSION_COOKIE, cookie, posted_from_here, session_cookie};
use crate::extract::Body;
use crate::state::AppState;

// `__Host-`: the browser takes these cookies only from this exact host over
// HTTPS with `Path=/`, so a destination on a sub-domain cannot plant one.
/// The state of the browser's own provider login: the callback is taken
/// only from the browser that started it, so nobody can log a victim in
/// to the attacker's account by sending them a callback link.
const STATE_COOKIE: &str = "__Host-infra_oidc_state";

#[derive(Debug, Deserialize)]
pub(crate) struct Rd {
    rd: Option<String>,
    /// Show the password form even with a default provider.
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    rd: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where a browser goes back to after logging in: a destination (on this
/// gateway, or a forward-auth application's own origin), and a path on it.
struct ReturnTo {
    dest: String,
    /// `https://host[:port]`, rebuilt from what the server knows.
    origin: String,
    path: ReturnPath,
}

/// The port browsers reach the gateway on: that of the public URL.
fn gateway_port(state: &AppState) -> u16 {
    url::Url::parse(&state.settings.public_url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(443)
}

/// Parses `rd`: `https://<destination>.<gateway domain>[:<gateway port>]`,
/// or the exact origin of a forward-auth destination, and a same-origin
/// path. Anything else, including another port (where anyone on the
/// machine may listen) and characters a URL parser would silently drop
/// (tab, newline), is refused.
fn check_rd(state: &AppState, rd: &str) -> Option<ReturnTo> {
    if rd.bytes().any(|c| c.is_ascii_control() || c == b' ' || c == b'\\') {
        return None;
    }
    let u = url::Url::parse(rd).ok()?;
    if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let port = u.port_or_known_default()?;
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    let path = ReturnPath::parse(&path).ok()?;
    if let Some((dest, origin)) = crate::forward_auth::http::destination_at(&state.forward_auth, &host, port) {
        return Some(ReturnTo { dest, origin, path });
    }
    if port != gateway_port(state) {
        return None;
    }
    let dest = crate::gateway::destination_of(&host, &state.settings.gateway_domain, &state.settings.public_host)?;
    let origin = match port {
        443 => format!("https://{dest}.{}", state.settings.gateway_domain),
        p => format!("https://{dest}.{}:{p}", state.settings.gateway_domain),
    };
    Some(ReturnTo { dest, origin, path })
}

/// `rd` if it is a valid return address, otherwise empty (the browser then
/// ends on the "logged in" page instead of anywhere a link chose).
fn valid_rd(state: &AppState, rd: &str) -> String {
    match check_rd(state, rd) {
        Some(_) => rd.to_owned(),
        None => String::new(),
    }
}

/// A page of the sign-in flow, in the console's style, with the console's
/// defences (no inline code, no framing). `body` is HTML already escaped.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = crate::console::plain_page(title, maud::PreEscaped(body.to_owned()));
    crate::console::with_defences((status, Html(html.into_string())).into_response())
}

fn login_form(rd: &str, error: Option<&str>, providers: &[String]) -> Response {
    let body = maud::html! {
        @if let Some(e) = error { p #login-error .error role="alert" { (e) } }
        @if !providers.is_empty() {
            div.providers {
                @for p in providers {
                    a.button href=(format!("/oidc/start/{}?rd={}", enc(p), enc(rd))) { "Sign in with " (p) }
                }
            }
            p.or { "or with your email and password" }
        }
        form.stack method="post" action="/login" {
            label for="email" { "Email" }
            input #email name="email" type="email" autocomplete="username" required autofocus
                aria-describedby=[error.map(|_| "login-error")];
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password" required;
            input type="hidden" name="rd" value=(rd);
            button.primary type="submit" { "Log in" }
        }
    }
    .into_string();
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(status, "Log in to Infra", &body)
}

async fn provider_names(state: &AppState) -> Vec<String> {
    match state.store.conn().await {
        Ok(mut c) => infra_store::providers::providers(&mut c)
            .await
            .map(|v| v.into_iter().map(|p| p.name).collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

pub(crate) async fn login_page(State(state): State<AppState>, Query(q): Query<Rd>) -> Response {
    let rd = valid_rd(&state, q.rd.as_deref().unwrap_or_default());
    let rd = rd.as_str();
    // With a default provider, browsers go straight to it (single sign-on);
    // `?password=1` still shows the password form.
    if let Some(p) = &state.settings.default_provider
        && q.password.is_none()
    {
        return Redirect::to(&format!("/oidc/start/{}?rd={}", enc(p), enc(rd))).into_response();
    }
    login_form(rd, None, &provider_names(&state).await)
}

/// "Sign in with NAME": to the provider, by the server-side code flow.
pub(crate) async fn oidc_start(
    State(state): State<AppState>,
    crate::authn::Source(source): crate::authn::Source,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Query<Rd>,
) -> Response {
    let rd = q.rd.unwrap_or_default();
    if !rd.is_empty() && check_rd(&state, &rd).is_none() {
        return page(
            StatusCode::BAD_REQUEST,
            "Not a destination",
            "<p>The address to return to is not a destination on this Infra server.</p>",
        );
    }
    let started = async {
        let p = crate::api::provider_login::load(&state, &name).await?;
        let redirect_uri = format!("{}/oidc/callback", state.settings.public_url);
        crate::api::provider_login::begin(&state, &p, &redirect_uri, Some(rd.clone()), &source).await
    }
    .await;
    match started {
        Ok(a) => {
            let mut r = Redirect::to(&a.url).into_response();
            let cookie = format!(
                "{STATE_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600",
                a.state
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => page(e.status, "Cannot log in", &format!("<p>{}</p>", esc(&e.message))),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here; a session cookie, then on to
/// the destination it wanted.
pub(crate) async fn oidc_callback(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    if q.state.is_none() || cookie(&headers, STATE_COOKIE) != q.state {
        let ev = crate::audit::Event::new("browser", "login", "oidc-callback", &source)
            .result("failure")
            .detail("callback without this browser's login state (not started here, or expired)");
        let _ = crate::audit::record(&state, ev).await;
        return page(
            StatusCode::UNAUTHORIZED,
            "Cannot log in",
            "<p>This login was not started in this browser (or it expired). Open the page you wanted again.</p>",
        );
    }
    let (code, st) = match (q.code, q.state, q.error) {
        (Some(c), Some(s), None) => (c, s),
        (_, _, Some(e)) => {
            let why = format!(
                "The identity provider refused: {e} {}",
                q.error_description.unwrap_or_default()
            );
            return page(
                StatusCode::UNAUTHORIZED,
                "Cannot log in",
                &format!("<p>{}</p>", esc(&why)),
            );
        }
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Cannot log in",
                "<p>The provider's answer has no code.</p>",
            );
        }
    };
    let mut c = match state.store.conn().await {
        Ok(c) => c,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, "Cannot log in", &esc(&e.to_string())),
    };
    // Which provider: the pending login says (read without taking it).
    let provider = infra_store::providers::pending_provider(&mut c, &st)
        .await
        .ok()
        .flatten();
    drop(c);
    let Some(name) = provider else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Cannot log in",
            "<p>This login's state is unknown, already used or expired. Start again.</p>",
        );
    };
    let grant = crate::api::provider_login::Grant::Code {
        code,
        state: st,
        redirect_uri: None,
    };
    match crate::api::provider_login::login(&state, &source, &name, grant).await {
        Ok((resp, rd)) => {
            let next = match rd.filter(|r| !r.is_empty()) {
                Some(r) => format!("/authorize?rd={}", enc(&r)),
                None => "/login/done".to_owned(),
            };
            with_session(Redirect::to(&next).into_response(), &resp.access_key)
        }
        Err(e) => page(e.status, "Cannot log in", &format!("<p>{}</p>", esc(&e.message))),
    }
}

fn with_session(mut r: Response, key: &str) -> Response {
    let cookie = format!("{SESSION_COOKIE}={key}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn login_submit(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(f): Form<LoginForm>,
) -> Response {
    if !posted_from_here(&headers, &uri) {
        return page(
            StatusCode::FORBIDDEN,
            "Not from this page",
            "<p>This sign-in was sent from another site, so it was refused. Open the Infra sign-in page and sign in there.</p>",
        );
    }
    let rd = valid_rd(&state, &f.rd);
    let req = LoginRequest {
        email: Some(f.email),
        password: Some(f.password),
        ..Default::default()
    };
    match login::login(State(state.clone()), source, Body(req)).await {
        Ok(resp) if resp.password_update_required => login_form(
            &rd,
            Some("Your password was set by an admin: change it first with 'infra login', then log in here."),
            &provider_names(&state).await,
        ),
        Ok(resp) => {
            let next = if rd.is_empty() {
                "/login/done".to_owned()
            } else {
                format!("/authorize?rd={}", enc(&rd))
            };
            with_session(Redirect::to(&next).into_response(), &resp.access_key)
        }
        Err(e) => login_form(&rd, Some(&e.message), &provider_names(&state).await),
    }
}

/// Signed in with no destination to go back to: the portal.
pub(crate) async fn login_done() -> Response {
    Redirect::to("/console").into_response()
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Query(q): Query<Rd>,
) -> Response {
    let rd = q.rd.unwrap_or_default();
    let Some(to) = check_rd(&state, &rd) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not a destination",
            "<p>The address to return to is not a destination on this Infra server.</p>",
        );
    };
    let caller = match session_cookie(&headers) {
        Some(key) => Caller::from_key(&state, &key, source, false).await.ok(),
        None => None,
    };
    let Some(caller) = caller else {
        return Redirect::to(&format!("/login?rd={}", enc(&rd))).into_response();
    };
    match crate::api::tokens::mint(&state, &caller, Some(&to.dest), None).await {
        Ok(t) => Redirect::to(&format!(
            "{}/.infra/callback?token={}&rd={}",
            to.origin,
            enc(&t.token),
            enc(to.path.as_str())
        ))
        .into_response(),
        Err(e) => page(e.status, "No access", &format!("<p>{}</p>", esc(&e.message))),
    }
}
