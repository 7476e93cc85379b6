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
//! *Architecture Invariant:* `rd` must be a URL on the gateway domain
//! (`https://<destination>.<gateway domain>…`), so these pages are never an
//! open redirect, and the session cookie never leaves the server's host.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use infra_api::LoginRequest;
use serde::Deserialize;

use crate::api::{Body, login};
use crate::authn::{Caller, Source};
use crate::state::AppState;

const SESSION_COOKIE: &str = "infra_session";

#[derive(Debug, Deserialize)]
pub(crate) struct Rd {
    rd: Option<String>,
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

/// The destination host and path of a valid `rd`.
fn check_rd(state: &AppState, rd: &str) -> Option<(String, String, String)> {
    let u = url::Url::parse(rd).ok()?;
    if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    let dest = crate::gateway::destination_of(&host, &state.settings.gateway_domain, &state.settings.public_host)?;
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    Some((dest, authority, path))
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:26em;margin:4em auto}}input{{display:block;width:100%;margin:.4em 0 1em;padding:.4em}}\
         .err{{color:#b00}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    (status, Html(html)).into_response()
}

fn login_form(rd: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"err\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{err}<form method=\"post\" action=\"/login\">\
         <label>Email<input name=\"email\" type=\"email\" autocomplete=\"username\" required autofocus></label>\
         <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <input type=\"hidden\" name=\"rd\" value=\"{}\"><button type=\"submit\">Log in</button></form>",
        esc(rd)
    );
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(status, "Log in to Infra", &body)
}

pub(crate) async fn login_page(Query(q): Query<Rd>) -> Response {
    login_form(q.rd.as_deref().unwrap_or_default(), None)
}

pub(crate) async fn login_submit(State(state): State<AppState>, source: Source, Form(f): Form<LoginForm>) -> Response {
    let req = LoginRequest {
        email: Some(f.email),
        password: Some(f.password),
        ..Default::default()
    };
    match login::login(State(state.clone()), source, Body(req)).await {
        Ok(resp) if resp.password_update_required => login_form(
            &f.rd,
            Some("Your password was set by an admin: change it first with 'infra login', then log in here."),
        ),
        Ok(resp) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax",
                resp.access_key
            );
            let next = if f.rd.is_empty() {
                "/login/done".to_owned()
            } else {
                format!("/authorize?rd={}", enc(&f.rd))
            };
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => login_form(&f.rd, Some(&e.message)),
    }
}

pub(crate) async fn login_done() -> Response {
    page(
        StatusCode::OK,
        "Logged in",
        "<p>You are logged in to Infra. Open the destination you wanted again.</p>",
    )
}

fn session_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Query(q): Query<Rd>,
) -> Response {
    let rd = q.rd.unwrap_or_default();
    let Some((dest, authority, path)) = check_rd(&state, &rd) else {
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
    match crate::api::tokens::mint(&state, &caller, Some(&dest)).await {
        Ok(t) => Redirect::to(&format!(
            "https://{authority}/.infra/callback?token={}&rd={}",
            enc(&t.token),
            enc(&path)
        ))
        .into_response(),
        Err(e) => page(e.status, "No access", &format!("<p>{}</p>", esc(&e.message))),
    }
}
