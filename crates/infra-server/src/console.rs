//! The web console, served by the server on its own port: for now the
//! portal's *My access* page and signing out.
//!
//! Pages are HTML rendered here (maud), with the stylesheet and the one
//! small script embedded in the binary: no build step, and the pages work
//! without JavaScript. The caller comes from the `__Host-infra_session`
//! cookie the sign-in form sets, and every page calls the API's own
//! handlers with that caller, so no permission is checked twice or
//! differently.
//!
//! Who could abuse it: another site (a framed page, a forged form post),
//! anyone who can put text into a name the page shows. Every response
//! carries a strict Content-Security-Policy (no inline script or style,
//! `frame-ancestors 'none'`); every form carries a token bound to the
//! session (`csrf.rs`) and must come from this origin; maud escapes every
//! value it renders.

mod account;
mod audit;
mod csrf;
mod form;
mod grants;
mod identity;
mod layout;
mod people;
mod places;
mod recordings;
mod requests;
mod services;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::api::login;
use crate::state::AppState;

const STYLESHEET: &str = include_str!("console/assets/console.css");
const SCRIPT: &str = include_str!("console/assets/console.js");

/// The console's routes, merged into the server's router.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console", get(my_access))
        .route("/console/logout", post(logout))
        .route("/console/kubeconfig", get(kubeconfig))
        .route("/console/account", get(account::page))
        .route("/console/account/keys/{id}/end", post(account::end_key))
        .route("/console/account/password", post(account::change_password))
        .route("/console/users", get(people::users_page).post(people::add_user))
        .route("/console/users/find", get(people::find_user))
        .route("/console/users/{email}", get(people::user_page))
        .route("/console/users/{email}/remove", post(people::remove_user))
        .route("/console/groups", get(people::groups_page).post(people::add_group))
        .route("/console/groups/{name}", get(people::group_page))
        .route("/console/groups/{name}/remove", post(people::remove_group))
        .route("/console/groups/{name}/members", post(people::add_member))
        .route(
            "/console/groups/{name}/members/{email}/remove",
            post(people::remove_member),
        )
        .route("/console/grants", get(grants::page).post(grants::add))
        .route("/console/grants/{id}/remove", post(grants::remove_grant))
        .route("/console/destinations", get(places::list))
        .route("/console/destinations/{name}", get(places::one))
        .route("/console/destinations/{name}/remove", post(places::remove))
        .route("/console/identity", get(identity::page))
        .route("/console/identity/providers", post(identity::add_provider))
        .route(
            "/console/identity/providers/{name}/remove",
            post(identity::remove_provider),
        )
        .route(
            "/console/identity/workload-issuers/{name}/remove",
            post(identity::remove_issuer),
        )
        .route("/console/identity/ssh-ca/rotate", post(identity::rotate))
        .route("/console/service-accounts", get(services::page).post(services::add))
        .route("/console/service-accounts/keys", post(services::add_key))
        .route("/console/service-accounts/keys/{id}/end", post(services::end_key))
        .route("/console/requests", get(requests::page).post(requests::ask))
        .route("/console/requests/{id}", get(requests::one))
        .route("/console/requests/{id}/review", post(requests::review))
        .route("/console/requests/{id}/cancel", post(requests::cancel))
        .route("/console/audit", get(audit::page))
        .route("/console/audit/rows", get(audit::rows))
        .route("/console/audit/verify", post(audit::verify))
        .route("/console/audit/{seq}", get(audit::one))
        .route("/console/recordings", get(recordings::page))
        .route("/console/recordings/{id}", get(recordings::one))
        .route("/console/recordings/{id}/cast", get(recordings::cast))
        .route("/console/assets/console.css", get(|| asset(STYLESHEET, "text/css")))
        .route("/console/assets/console.js", get(|| asset(SCRIPT, "text/javascript")))
        .layer(axum::middleware::from_fn(headers))
}

/// What every console response carries: no framing, no inline code, no
/// caching of pages that show who has access to what.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    with_defences(next.run(req).await)
}

/// A page outside the console's routes (the sign-in flow's) in its frame:
/// the brand, a title, `body`.
pub(crate) fn plain_page(title: &str, body: Markup) -> Markup {
    layout::plain(title, body)
}

/// The console's response headers on `r` (also the sign-in pages').
pub(crate) fn with_defences(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // Not `no-referrer`: with it, a browser sends `Origin: null` on a form
    // post, and the same-origin check refuses the console's own forms.
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    r
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

fn html_response(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// An API time (`2026-12-14T12:46:32.347Z`) as people read it:
/// `2026-12-14 12:46 UTC`.
fn readable_time(t: &str) -> String {
    match t.get(..16) {
        Some(minutes) if t.ends_with('Z') => format!("{} UTC", minutes.replacen('T', " ", 1)),
        _ => t.to_owned(),
    }
}

/// How a user gets into a destination of `kind`, as commands to copy (and,
/// for HTTP, a link).
fn way_in(name: &str, kind: &str, url: &str) -> Markup {
    let command = |c: String| {
        html! {
            div.command {
                code { (c) }
                button.copy type="button" data-copy=(c) hidden { "Copy" }
            }
        }
    };
    match kind {
        "http" => html! { a href=(url) { (url) } },
        "kubernetes" => html! {
            (command(format!("infra use {name}")))
            (command(format!("kubectl --context infra:{name} get pods")))
        },
        "postgres" => html! {
            (command(format!("infra psql {name}")))
            (command(format!("infra proxy {name} --port 5432")))
        },
        "ssh" => command(format!("infra ssh {name}")),
        _ => html! { span.muted { "Not connected yet: its connector has not registered it." } },
    }
}

async fn my_access(State(state): State<AppState>, form::Signed(caller): form::Signed) -> Response {
    let v = form::Viewer::of(&state, &caller);
    let offers = requests::offers(&state, &caller).await.unwrap_or_default();
    let info = match login::info(State(state.clone()), caller).await {
        Ok(i) => i.0,
        Err(e) => return html_response(e.status, layout::error_page(&e.message)),
    };
    let rows: Vec<(String, Vec<&infra_api::Grant>)> = info
        .urls
        .keys()
        .map(|dest| {
            let grants = info
                .grants
                .iter()
                .filter(|g| g.resource == *dest || g.resource.starts_with(&format!("{dest}.")))
                .collect();
            (dest.clone(), grants)
        })
        .collect();
    let body = html! {
        h1 { "My access" }
        @if rows.is_empty() {
            div.empty {
                p { "You cannot reach any destination yet." }
                p { "Ask an admin for a grant, for example: " code { "infra grants add " (info.user.email) " DESTINATION --role ROLE" } }
            }
        } @else {
            p.lead { "What you can reach, and how to get in. Commands need the CLI, logged in with " code { "infra login" } "." }
            @if info.kinds.values().any(|k| k == "kubernetes") {
                p { a.button href="/console/kubeconfig" download { "Download kubeconfig" } " for kubectl (its credentials come from the CLI, logged in)." }
            }
            ul.cards {
                @for (dest, grants) in &rows {
                    @let kind = info.kinds.get(dest).map_or("", String::as_str);
                    li.card {
                        div.card-head {
                            h2 { (dest) }
                            @if !kind.is_empty() { span.badge { (kind) } }
                        }
                        dl {
                            dt { "Access" }
                            dd {
                                @for g in grants {
                                    span.role {
                                        (g.role)
                                        @if g.resource != *dest { " on " (g.resource) }
                                        @if let Some(group) = &g.group { " (group " (group) ")" }
                                        @if let Some(exp) = &g.expires { " until " time datetime=(exp) { (readable_time(exp)) } }
                                    }
                                }
                            }
                        }
                        div.way-in { (way_in(dest, kind, info.urls.get(dest).map_or("", String::as_str))) }
                    }
                }
            }
        }
        @if !offers.is_empty() {
            h2 { "Need more, for a while?" }
            p {
                "You may ask for "
                @for (i, p) in offers.iter().enumerate() {
                    @if i > 0 { "; " }
                    @if !p.roles.is_empty() { (p.roles.join(" or ")) " on " code { (p.resources.join(", ")) } }
                    @if !p.groups.is_empty() { " membership of " (p.groups.join(", ")) }
                }
                ". " a href="/console/requests" { "Request access" }
            }
        }
    };
    v.page(StatusCode::OK, "My access", body)
}

/// A kubeconfig with an `infra:` context for each cluster (and granted
/// namespace) the user can reach: the same entries `infra login` writes,
/// whose credentials come from `infra tokens` (the CLI on the `PATH`,
/// logged in). The server's CA comes with it.
async fn kubeconfig(State(state): State<AppState>, form::Signed(caller): form::Signed) -> Response {
    use infra_api::kubeconfig::{Access, Trust, document};
    let info = match login::info(State(state.clone()), caller).await {
        Ok(i) => i.0,
        Err(e) => return html_response(e.status, layout::error_page(&e.message)),
    };
    let ca = match server_ca(&state).await {
        Ok(ca) => ca,
        Err(e) => return html_response(e.status, layout::error_page(&e.message)),
    };
    let access = Access::from_info(&info, Trust::Ca(ca), "infra".into());
    if access.clusters.is_empty() {
        return html_response(
            StatusCode::NOT_FOUND,
            layout::error_page("You cannot reach any Kubernetes cluster, so there is no kubeconfig to download."),
        );
    }
    let yaml = document(&access).and_then(|d| Ok(yaml_serde::to_string(&d)?));
    match yaml {
        Ok(y) => (
            [
                (header::CONTENT_TYPE, "application/yaml"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"infra-kubeconfig.yaml\"",
                ),
            ],
            y,
        )
            .into_response(),
        Err(e) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            layout::error_page(&format!("cannot write the kubeconfig: {e}")),
        ),
    }
}

/// The CA that signs the server's (and the gateway's) certificates.
async fn server_ca(state: &AppState) -> crate::error::ApiResult<String> {
    let mut c = state.store.conn().await?;
    infra_store::keys::sealed_secret(&mut c, crate::bootstrap::CA_SECRET)
        .await?
        .map(|(pem, _)| pem)
        .ok_or_else(|| crate::error::ApiError::internal("the server has no CA yet"))
}

/// A form with nothing but the console's token (checked by `Posted`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Nothing {}

/// What a list page is asked for: a page, and the change just made.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Shown {
    page: Option<u32>,
    done: Option<Done>,
}

/// The changes a page confirms after a redirect: a closed set, so a link
/// cannot make a console page say anything else.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Done {
    Removed,
}

impl Done {
    /// Where to go after it: `page`, told to confirm it.
    pub(crate) fn after(self, page: &str) -> String {
        let word = match self {
            Done::Removed => "removed",
        };
        format!("{page}?done={word}")
    }

    /// The confirmation, about a `thing` (`user`, `group`).
    pub(crate) fn message(self, thing: &str) -> String {
        match self {
            Done::Removed => format!("The {thing} was removed."),
        }
    }
}

/// Ends the session the cookie carries (the API's own logout) and clears
/// the cookie.
async fn logout(State(state): State<AppState>, p: form::Posted<Nothing>) -> Response {
    if let Err(e) = login::logout(State(state.clone()), p.caller).await {
        return form::failed(&e);
    }
    let mut r = Redirect::to("/login").into_response();
    let clear = format!(
        "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
        crate::browser::SESSION_COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
