//! *Destinations*: every destination with its connector and health, and
//! for each one, everyone who can reach it and through which grant or
//! group (the API's `/api/destinations/{name}/access`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use infra_api::PageQuery;
use maud::html;

use super::form::{Posted, Signed, Viewer, button_form, enc, failed, pager, then_to};
use super::people::PER_PAGE;
use super::{Done, Shown, readable_time};
use crate::api::destinations;
use crate::extract::Query;
use crate::state::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let v = Viewer::of(&state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let page = q.page.unwrap_or(1).max(1);
    let query = Query(PageQuery {
        page: Some(page),
        limit: Some(PER_PAGE),
    });
    let instances = match destinations::connectors_list(State(state.clone()), caller.clone()).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let list = match destinations::list(State(state.clone()), caller, query).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let body = html! {
        h1 { "Destinations" }
        @if let Some(d) = q.done { p.notice role="status" { (d.message("destination")) } }
        p.lead { "What connectors serve, and the applications the server guards itself (forward auth). Open one to see who can reach it." }
        @if list.items.is_empty() {
            div.empty {
                p { "No destination yet. Run a connector next to your cluster, database, SSH host or web service:" }
                p { code { "infra keys add --connector" } " then " code { "infra connector --config connector.yaml" } " (see docs/connectors.md)." }
            }
        } @else {
            table {
                caption.visually-hidden { "Destinations" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Connector" } th scope="col" { "Health" }
                    th scope="col" { "Tunnels" } th scope="col" { "Last seen" } @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for d in &list.items {
                        tr {
                            td { a href=(format!("/console/destinations/{}", enc(&d.name))) { (d.name) } }
                            td data-label="Kind" { span.badge { (d.kind) } }
                            td data-label="Connector" { @if d.connector.is_empty() { span.muted { "the server" } } @else { (d.connector) } }
                            td data-label="Health" { span class=(format!("health {}", d.health)) { (d.health) } }
                            td data-label="Tunnels" { (d.tunnels) }
                            td data-label="Last seen" { (readable_time(&d.last_seen)) }
                            @if admin { td { (button_form(&format!("/console/destinations/{}/remove", enc(&d.name)), &token, "Remove", &format!("Remove destination {}", d.name))) } }
                        }
                    }
                }
            }
            @if admin { p.muted { "A destination a connector still serves comes back when the connector next connects: stop serving it in the connector's configuration first." } }
        }
        (pager("/console/destinations?", page, PER_PAGE, list.total_count))
        h2 #connectors { "Connectors" }
        p.lead { "Each running connector (one data directory) seen in the last week, and the tunnels it holds open to the server." }
        @if instances.is_empty() {
            div.empty { p { "No connector has connected in the last week." } }
        } @else {
            table {
                caption.visually-hidden { "Connectors" }
                thead { tr { th scope="col" { "Connector" } th scope="col" { "Instance" } th scope="col" { "Version" } th scope="col" { "From" }
                    th scope="col" { "Tunnels" } th scope="col" { "Connected" } th scope="col" { "Last seen" } } }
                tbody {
                    @for i in &instances {
                        tr {
                            td { (i.connector) }
                            td data-label="Instance" { code { (i.instance.chars().take(8).collect::<String>()) } }
                            td data-label="Version" { @if i.version.is_empty() { span.muted { "unknown" } } @else { (i.version) } }
                            td data-label="From" { (i.source) }
                            td data-label="Tunnels" { span class=(if i.tunnels > 0 { "health connected" } else { "health disconnected" }) { (i.tunnels) } }
                            td data-label="Connected" { (readable_time(&i.connected)) }
                            td data-label="Last seen" { @if i.tunnels > 0 { "now" } @else { (readable_time(&i.last_seen)) } }
                        }
                    }
                }
            }
        }
    };
    v.page(StatusCode::OK, "Destinations", body)
}

/// One destination: who can reach it, and through what.
pub(super) async fn one(
    State(state): State<AppState>,
    Signed(caller): Signed,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let v = Viewer::of(&state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let page = q.page.unwrap_or(1).max(1);
    let query = Query(PageQuery {
        page: Some(page),
        limit: Some(PER_PAGE),
    });
    // A destination nobody registered yet can still be granted: its page
    // says so and lists who could reach it.
    let dest = match destinations::get_one(State(state.clone()), caller.clone(), Path(name.clone())).await {
        Ok(d) => Some(d.0),
        Err(e) if e.status == StatusCode::NOT_FOUND => None,
        Err(e) => return failed(&e),
    };
    let paths = match destinations::access(State(state.clone()), caller, Path(name.clone()), query).await {
        Ok(p) => p.0,
        Err(e) => return failed(&e),
    };
    let back = format!("/console/destinations/{}", enc(&name));
    let body = html! {
        p.crumbs { a href="/console/destinations" { "Destinations" } " / " }
        h1 { (name) }
        @match &dest {
            Some(d) => dl.facts {
                dt { "Kind" } dd { span.badge { (d.kind) } }
                dt { "Served by" } dd { @if d.connector.is_empty() { "the server (forward auth)" } @else { "connector " (d.connector) } }
                dt { "Health" } dd { span class=(format!("health {}", d.health)) { (d.health) } " · " (d.tunnels) " tunnels · last seen " (readable_time(&d.last_seen)) }
                dt { "Reached at" } dd { @if d.kind == "http" { a href=(d.url) { (d.url) } } @else { code { (d.url) } } }
            },
            None => p.notice { "No connector has registered " (name) " yet; grants on it take effect when one does." },
        }
        h2 { "Who can reach " (name) }
        p.lead { "Every user with a grant on it or a part of it, one line per grant: a user holding two grants appears twice." }
        @if paths.items.is_empty() {
            div.empty { p { "Nobody can reach " (name) " now." } }
        } @else {
            table {
                caption.visually-hidden { "Who can reach " (name) }
                thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "On" } th scope="col" { "Through" } th scope="col" { "Until" }
                    @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for p in &paths.items {
                        tr {
                            td { a href=(format!("/console/users/{}", enc(&p.user))) { (p.user) } }
                            td data-label="Role" { span.role { (p.role) } }
                            td data-label="On" { @if p.resource == name { "all of it" } @else { "namespace " code { (&p.resource[name.len() + 1..]) } } }
                            td data-label="Through" {
                                @match &p.group {
                                    Some(g) => { "group " a href=(format!("/console/groups/{}", enc(g))) { (g) } },
                                    None => "a grant to them",
                                }
                            }
                            td data-label="Until" { @match &p.expires { Some(e) => time datetime=(e) { (readable_time(e)) }, None => span.muted { "no end" } } }
                            @if admin {
                                td {
                                    form.inline method="post" action=(format!("/console/grants/{}/remove", enc(&p.grant))) {
                                        (super::form::token_input(&token))
                                        input type="hidden" name="back" value=(back);
                                        button.danger type="submit" aria-label=(format!("Remove grant: {} to {}", p.role, p.group.as_deref().unwrap_or(&p.user))) { "Remove grant" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (pager(&format!("{back}?"), page, PER_PAGE, paths.total_count))
        @if admin { p { a.button href=(format!("/console/grants?resource={}#add", enc(&name))) { "Grant access to " (name) } } }
    };
    v.page(StatusCode::OK, "Destinations", body)
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        destinations::remove(State(state), p.caller, Path(name)).await,
        &Done::Removed.after("/console/destinations"),
    )
}
