//! *Grants*: the list with its filters, adding one (to a user or a group,
//! with an expiry) and removing one; and the tables of grants the user,
//! group and destination pages show. Through the API's `/api/grants`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use infra_api::{CreateGrantRequest, Grant, GrantQuery};
use maud::{Markup, html};

use super::form::{FieldError, Posted, Signed, Viewer, enc, failed, field, given, pager, then_to, token_input};
use super::people::{Outcome, PER_PAGE};
use super::readable_time;
use crate::api::grants;
use crate::authn::Caller;
use crate::error::ApiResult;
use crate::extract::{Body, Query};
use crate::state::AppState;

/// Every grant `q` selects, page after page.
async fn all(state: &AppState, caller: &Caller, mut q: GrantQuery) -> ApiResult<Vec<Grant>> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        q.page = Some(page);
        q.limit = Some(infra_api::MAX_LIMIT);
        let p = grants::list(State(state.clone()), caller.clone(), Query(q.clone()))
            .await?
            .0;
        let n = p.items.len();
        out.extend(p.items);
        if n == 0 || out.len() as u64 >= p.total_count {
            return Ok(out);
        }
        page += 1;
    }
}

/// A user's grants, their own and their groups'.
pub(super) async fn all_for_user(state: &AppState, caller: &Caller, email: &str) -> ApiResult<Vec<Grant>> {
    let q = GrantQuery {
        user: Some(email.to_owned()),
        ..Default::default()
    };
    all(state, caller, q).await
}

pub(super) async fn all_for_group(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Vec<Grant>> {
    let q = GrantQuery {
        group: Some(name.to_owned()),
        ..Default::default()
    };
    all(state, caller, q).await
}

fn through(g: &Grant) -> Markup {
    match &g.group {
        Some(group) => html! { "group " a href=(format!("/console/groups/{}", enc(group))) { (group) } },
        None => html! { "a grant to them" },
    }
}

fn until(g: &Grant) -> Markup {
    match &g.expires {
        Some(e) => html! { time datetime=(e) { (readable_time(e)) } },
        None => html! { span.muted { "no end" } },
    }
}

fn remove(g: &Grant, controls: Option<(&str, &str)>) -> Markup {
    html! {
        @if let Some((token, back)) = controls {
            form.inline method="post" action=(format!("/console/grants/{}/remove", enc(&g.id))) {
                (token_input(token))
                input type="hidden" name="back" value=(back);
                button.danger type="submit" aria-label=(format!("Remove the grant of {} on {}", g.role, g.resource)) { "Remove" }
            }
        }
    }
}

/// Grants by what they reach: destination (or part), role, until; with
/// `through`, also whether each is a grant to the user or which group's.
pub(super) fn table(list: &[Grant], through_too: bool, controls: Option<(&str, &str)>, empty: &str) -> Markup {
    html! {
        @if list.is_empty() {
            div.empty { p { (empty) } }
        } @else {
            table {
                caption.visually-hidden { "Grants" @if through_too { " and where they come from" } }
                thead { tr { th scope="col" { "Reaches" } th scope="col" { "Role" }
                    @if through_too { th scope="col" { "Through" } }
                    th scope="col" { "Until" }
                    @if controls.is_some() { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for g in list {
                        tr {
                            td { (resource_link(&g.resource)) }
                            td data-label="Role" { span.role { (g.role) } }
                            @if through_too { td data-label="Through" { (through(g)) } }
                            td data-label="Until" { (until(g)) }
                            @if controls.is_some() { td { (remove(g, controls)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A resource, linked to its destination's page (`infra` is Infra itself).
fn resource_link(resource: &str) -> Markup {
    if resource == infra_core::INFRA_RESOURCE {
        return html! { "Infra itself" };
    }
    let dest = resource.split_once('.').map_or(resource, |(d, _)| d);
    html! {
        a href=(format!("/console/destinations/{}", enc(dest))) { (dest) }
        @if dest != resource { " namespace " code { (&resource[dest.len() + 1..]) } }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    role: String,
    page: Option<u32>,
}

impl Filter {
    fn query(&self) -> GrantQuery {
        GrantQuery {
            user: given(&self.user),
            group: given(&self.group),
            resource: given(&self.resource),
            role: given(&self.role),
            page: Some(self.page.unwrap_or(1).max(1)),
            limit: Some(PER_PAGE),
        }
    }

    /// The filter as the start of a query string, for the pager.
    fn base(&self) -> String {
        let mut s = String::from("/console/grants?");
        for (k, v) in [
            ("user", &self.user),
            ("group", &self.group),
            ("resource", &self.resource),
            ("role", &self.role),
        ] {
            if !v.trim().is_empty() {
                s.push_str(&format!("{k}={}&", enc(v.trim())));
            }
        }
        s
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AddGrant {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    expires_in: String,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
    headers: axum::http::HeaderMap,
) -> Response {
    // The filter fills the form in ("grant this group access" opens it
    // with the group), but only for a link on a console page: a link on
    // another site must not hand an admin a grant ready to submit.
    let from_here = super::form::from_here(&headers);
    let for_group = f.user.is_empty() && !f.group.is_empty();
    let sent = if from_here {
        AddGrant {
            subject: if for_group { "group" } else { "user" }.into(),
            to: if for_group { f.group.clone() } else { f.user.clone() },
            resource: f.resource.clone(),
            ..Default::default()
        }
    } else {
        AddGrant::default()
    };
    render(
        &state,
        caller,
        &f,
        Outcome {
            sent,
            ..Default::default()
        },
    )
    .await
}

async fn render(state: &AppState, caller: Caller, f: &Filter, out: Outcome<AddGrant>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let list = match grants::list(State(state.clone()), caller, Query(f.query())).await {
        Ok(l) => l.0,
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            return render_error(&v, &e.message);
        }
        Err(e) => return failed(&e),
    };
    let err = out.error.as_ref();
    let at = |field| FieldError::at(err, "add", field);
    let sent = &out.sent;
    let body = html! {
        h1 { "Grants" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        p.lead { "Who may do what where: a role on a destination (or a namespace of a cluster), to a user or a group. Grants add up; the one that ends last counts." }
        form.filters method="get" action="/console/grants" {
            (field("f-user", "User", "user", &f.user, None, ("email", "", false)))
            (field("f-group", "Group", "group", &f.group, None, ("text", "", false)))
            (field("f-resource", "On", "resource", &f.resource, None, ("text", "destination", false)))
            (field("f-role", "Role", "role", &f.role, None, ("text", "", false)))
            button type="submit" { "Filter" }
        }
        @if admin {
            details.add #add open[err.is_some() || !sent.to.is_empty() || !sent.resource.is_empty()] {
                summary { "Add a grant" }
                form.stack method="post" action="/console/grants" {
                    (token_input(&token))
                    fieldset {
                        legend { "To" }
                        label.choice { input type="radio" name="subject" value="user" checked[sent.subject != "group"]; " a user" }
                        label.choice { input type="radio" name="subject" value="group" checked[sent.subject == "group"]; " a group" }
                    }
                    (field("g-to", "Email or group name", "to", &sent.to, at("to"), ("text", "name@example.com", true)))
                    (field("g-role", "Role", "role", &sent.role, at("role"), ("text", "view", true)))
                    (field("g-resource", "On (destination, cluster.namespace, or infra)", "resource", &sent.resource, at("resource"), ("text", "prod", true)))
                    (field("g-expires", "Ends after (empty: no end)", "expires_in", &sent.expires_in, at("expires_in"), ("text", "8h", false)))
                    button.primary type="submit" { "Grant" }
                }
            }
        }
        @if list.items.is_empty() {
            div.empty { p { "No grant matches." @if admin { " Add one above." } } }
        } @else {
            table {
                caption.visually-hidden { "Grants" }
                thead { tr { th scope="col" { "To" } th scope="col" { "Role" } th scope="col" { "On" } th scope="col" { "Until" } th scope="col" { "By" }
                    @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for g in &list.items {
                        tr {
                            td {
                                @if let Some(u) = &g.user { a href=(format!("/console/users/{}", enc(u))) { (u) } }
                                @if let Some(gr) = &g.group { "group " a href=(format!("/console/groups/{}", enc(gr))) { (gr) } }
                            }
                            td data-label="Role" { span.role { (g.role) } }
                            td data-label="On" { (resource_link(&g.resource)) }
                            td data-label="Until" { (until(g)) }
                            td data-label="By" { (g.created_by) }
                            @if admin { td { (remove(g, Some((&token, "/console/grants")))) } }
                        }
                    }
                }
            }
        }
        (pager(&f.base(), f.page.unwrap_or(1).max(1), PER_PAGE, list.total_count))
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Grants", body)
}

fn render_error(v: &Viewer, message: &str) -> Response {
    let body = html! {
        h1 { "Grants" }
        p.error role="alert" { (message) }
        p { a href="/console/grants" { "Show all grants" } }
    };
    v.page(StatusCode::BAD_REQUEST, "Grants", body)
}

pub(super) async fn add(State(state): State<AppState>, p: Posted<AddGrant>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let to = form.to.trim().to_owned();
    let req = CreateGrantRequest {
        user: (form.subject != "group").then(|| to.clone()),
        group: (form.subject == "group").then(|| to.clone()),
        role: form.role.trim().to_owned(),
        resource: form.resource.trim().to_owned(),
        expires_in: given(&form.expires_in),
    };
    match grants::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, g)) => {
            let g = g.0;
            let notice = html! { "Granted " (g.role) " on " (g.resource) " to " (g.user.as_deref().or(g.group.as_deref()).unwrap_or("")) "." };
            let f = Filter {
                resource: g.resource.clone(),
                ..Default::default()
            };
            render(
                &state,
                again,
                &f,
                Outcome {
                    notice: Some(notice),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let field = field_of(&e.message);
            let f = Filter::default();
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("add", field, e)),
                sent: form,
            };
            render(&state, again, &f, out).await
        }
        Err(e) => failed(&e),
    }
}

/// Which field of the grant form an API message is about. The API's
/// messages name what they reject; anything else goes with the subject.
fn field_of(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("duration") || m.contains("expires") {
        "expires_in"
    } else if m.contains("role") && !m.contains("you need role") {
        "role"
    } else if m.contains("resource") || m.contains("destination") || m.contains("namespace") {
        "resource"
    } else {
        "to"
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct RemoveGrant {
    #[serde(default)]
    back: String,
}

pub(super) async fn remove_grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted<RemoveGrant>,
) -> Response {
    then_to(
        grants::remove(State(state), p.caller, Path(id)).await,
        local(&p.form.back),
    )
}

/// `back` if it is a console page of this server, else the grants page:
/// a form field never sends the browser elsewhere.
fn local(back: &str) -> &str {
    let ok = back.starts_with("/console/")
        && !back.contains("//")
        && back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !back.to_ascii_lowercase().contains("%2e")
        && !back.split('/').any(|seg| seg == "." || seg == "..");
    if ok { back } else { "/console/grants" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_never_redirects_off_the_console() {
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/console//evil",
            "/\\evil",
            "/console/x y",
            "/login",
            "/console/../login",
            "/console/%2e%2e/login",
            "/console/./users",
        ] {
            assert_eq!(local(bad), "/console/grants", "{bad}");
        }
        assert_eq!(local("/console/users/a%40b.c"), "/console/users/a%40b.c");
    }

    #[test]
    fn an_api_message_lands_next_to_its_field() {
        assert_eq!(field_of("invalid duration '3x'"), "expires_in");
        assert_eq!(field_of("role root does not exist on infra; use admin or view"), "role");
        assert_eq!(field_of("user not found: a@b.c; see 'infra users list'"), "to");
        assert_eq!(
            field_of("you need role admin on infra to grant access (you have view)"),
            "to"
        );
    }
}
