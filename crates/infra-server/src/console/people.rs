//! *Users* and *Groups*: lists, adding and removing, memberships, and for
//! each user everything they can reach and why. Every read and change is
//! the API's own handler called with the signed-in caller; the controls
//! are drawn only for an `admin`, and the API refuses (and audits) a
//! change from anyone else whatever the browser sends.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use infra_api::{CreateGroupRequest, CreateUserRequest, PageQuery, UserQuery};
use maud::{Markup, html};

use super::form::{
    FieldError, Posted, Signed, Viewer, button_form, enc, failed, field, given, pager, then_to, token_input,
};
use super::{Done, Shown, grants, readable_time};
use crate::api::{groups, users};
use crate::authn::Caller;
use crate::extract::{Body, Query};
use crate::state::AppState;

/// Rows on a page of a list.
pub(super) const PER_PAGE: u32 = 50;

fn page_query(page: u32) -> Query<PageQuery> {
    Query(PageQuery {
        page: Some(page.max(1)),
        limit: Some(PER_PAGE),
    })
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AddUser {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// What a page shows besides its list: a notice at the top, or the form
/// the user sent back with the error next to its field.
#[derive(Default)]
pub(super) struct Outcome<F> {
    pub(super) notice: Option<Markup>,
    pub(super) error: Option<FieldError>,
    pub(super) sent: F,
}

pub(super) async fn users_page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let notice = q.done.map(|d| html! { (d.message("user")) });
    render_users(
        &state,
        caller,
        q.page.unwrap_or(1),
        Outcome {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn render_users(state: &AppState, caller: Caller, page: u32, out: Outcome<AddUser>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);
    let q = Query(UserQuery {
        kind: None,
        page: Some(page.max(1)),
        limit: Some(PER_PAGE),
    });
    let list = match users::list(State(state.clone()), caller, q).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let err = out.error.as_ref();
    let body = html! {
        h1 { "Users" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        p.lead { "Everyone who can sign in, and the service accounts workloads act as. Open a user to see everything they can reach and why." }
        form.row method="get" action="/console/users/find" {
            label for="find-email" { "Find a user" }
            input #find-email type="email" name="email" placeholder="name@example.com" required;
            button type="submit" { "Open" }
        }
        @if admin {
            details.add open[err.is_some()] {
                summary { "Add a user" }
                form.stack method="post" action="/console/users" {
                    (token_input(&token))
                    (field("new-email", "Email", "email", &out.sent.email, FieldError::at(err, "add", "email"), ("email", "name@example.com", true)))
                    (field("new-password", "Password (leave empty for a one-time password)", "password", "", FieldError::at(err, "add", "password"), ("password", "", false)))
                    button.primary type="submit" { "Add user" }
                }
            }
        }
        table {
            caption.visually-hidden { "Users" }
            thead { tr { th scope="col" { "Email" } th scope="col" { "Kind" } th scope="col" { "Groups" } th scope="col" { "Last seen" }
                @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
            tbody {
                @for u in &list.items {
                    tr {
                        td { a href=(format!("/console/users/{}", enc(&u.email))) { (u.email) } }
                        td data-label="Kind" { (if u.kind == "service" { "service account" } else { "person" }) }
                        td data-label="Groups" { @for g in &u.groups { a.role href=(format!("/console/groups/{}", enc(g))) { (g) } " " } }
                        td data-label="Last seen" { (u.last_seen.as_deref().map_or("never".into(), readable_time)) }
                        @if admin { td { (button_form(&format!("/console/users/{}/remove", enc(&u.email)), &token, "Remove", &format!("Remove {}", u.email))) } }
                    }
                }
            }
        }
        (pager("/console/users?", page, PER_PAGE, list.total_count))
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Users", body)
}

pub(super) async fn add_user(State(state): State<AppState>, p: Posted<AddUser>) -> Response {
    let Posted { caller, form } = p;
    let req = CreateUserRequest {
        email: form.email.trim().to_owned(),
        password: given(&form.password),
        service: false,
    };
    let again = caller.clone();
    match users::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, created)) => {
            let notice = match &created.0.one_time_password {
                Some(otp) => html! {
                    "Added " (created.0.user.email) ". Their one-time password, shown only now: " code.secret { (otp) }
                    " They choose their own at first sign-in."
                },
                None => html! { "Added " (created.0.user.email) "." },
            };
            let out = Outcome {
                notice: Some(notice),
                ..Default::default()
            };
            render_users(&state, again, 1, out).await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let field = if e.message.contains("password") {
                "password"
            } else {
                "email"
            };
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("add", field, e)),
                sent: form,
            };
            render_users(&state, again, 1, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn remove_user(
    State(state): State<AppState>,
    Path(email): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        users::remove(State(state), p.caller, Path(email)).await,
        &Done::Removed.after("/console/users"),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Find {
    #[serde(default)]
    email: String,
}

pub(super) async fn find_user(Signed(_): Signed, axum::extract::Query(f): axum::extract::Query<Find>) -> Response {
    Redirect::to(&format!("/console/users/{}", enc(f.email.trim()))).into_response()
}

/// One user: their groups and everything they can reach, grant by grant.
pub(super) async fn user_page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    Path(email): Path<String>,
) -> Response {
    let v = Viewer::of(&state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let user = match users::get_one(State(state.clone()), caller.clone(), Path(email.clone())).await {
        Ok(u) => u.0,
        Err(e) => return failed(&e),
    };
    let reach = match grants::all_for_user(&state, &caller, &user.email).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let back = format!("/console/users/{}", enc(&user.email));
    let body = html! {
        p.crumbs { a href="/console/users" { "Users" } " / " }
        h1 { (user.email) }
        dl.facts {
            dt { "Groups" }
            dd {
                @if user.groups.is_empty() { span.muted { "none" } }
                @for g in &user.groups { a.role href=(format!("/console/groups/{}", enc(g))) { (g) } }
            }
            dt { "Last seen" } dd { (user.last_seen.as_deref().map_or("never".into(), readable_time)) }
            dt { "Added" } dd { (readable_time(&user.created)) }
        }
        h2 { "What " (user.email) " can reach, and why" }
        (grants::table(&reach, true, admin.then_some((token.as_str(), back.as_str())), "This user holds no grant, directly or through a group."))
    };
    v.page(StatusCode::OK, "Users", body)
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AddGroup {
    #[serde(default)]
    name: String,
}

pub(super) async fn groups_page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let notice = q.done.map(|d| html! { (d.message("group")) });
    render_groups(
        &state,
        caller,
        q.page.unwrap_or(1),
        Outcome {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn render_groups(state: &AppState, caller: Caller, page: u32, out: Outcome<AddGroup>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);
    let list = match groups::list(State(state.clone()), caller, page_query(page)).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let err = out.error.as_ref();
    let body = html! {
        h1 { "Groups" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        p.lead { "Grants to a group reach every member. Groups also come from identity providers, kept current at each sign-in." }
        @if admin {
            details.add open[err.is_some()] {
                summary { "Add a group" }
                form.stack method="post" action="/console/groups" {
                    (token_input(&token))
                    (field("new-group", "Name", "name", &out.sent.name, FieldError::at(err, "add", "name"), ("text", "developers", true)))
                    button.primary type="submit" { "Add group" }
                }
            }
        }
        @if list.items.is_empty() {
            div.empty { p { "No groups yet." @if admin { " Add one above, then add members and grant it access." } } }
        } @else {
            table {
                caption.visually-hidden { "Groups" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Members" } th scope="col" { "Added" }
                    @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for g in &list.items {
                        tr {
                            td { a href=(format!("/console/groups/{}", enc(&g.name))) { (g.name) } }
                            td data-label="Members" { (g.members.len()) }
                            td data-label="Added" { (readable_time(&g.created)) }
                            @if admin { td { (button_form(&format!("/console/groups/{}/remove", enc(&g.name)), &token, "Remove", &format!("Remove group {}", g.name))) } }
                        }
                    }
                }
            }
        }
        (pager("/console/groups?", page, PER_PAGE, list.total_count))
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Groups", body)
}

pub(super) async fn add_group(State(state): State<AppState>, p: Posted<AddGroup>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let req = CreateGroupRequest {
        name: form.name.trim().to_owned(),
    };
    match groups::create(State(state.clone()), caller, Body(req)).await {
        Ok(_) => Redirect::to(&format!("/console/groups/{}", enc(form.name.trim()))).into_response(),
        Err(e) if super::form::about_the_form(&e) => {
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("add", "name", e)),
                sent: form,
            };
            render_groups(&state, again, 1, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn remove_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        groups::remove(State(state), p.caller, Path(name)).await,
        &Done::Removed.after("/console/groups"),
    )
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AddMember {
    #[serde(default)]
    email: String,
}

pub(super) async fn group_page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    Path(name): Path<String>,
) -> Response {
    render_group(&state, caller, name, Outcome::default()).await
}

/// One group: its members and its grants.
async fn render_group(state: &AppState, caller: Caller, name: String, out: Outcome<AddMember>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let group = match groups::get_one(State(state.clone()), caller.clone(), Path(name)).await {
        Ok(g) => g.0,
        Err(e) => return failed(&e),
    };
    let held = match grants::all_for_group(state, &caller, &group.name).await {
        Ok(g) => g,
        Err(e) => return failed(&e),
    };
    let err = out.error.as_ref();
    let base = format!("/console/groups/{}", enc(&group.name));
    let body = html! {
        p.crumbs { a href="/console/groups" { "Groups" } " / " }
        h1 { "Group " (group.name) }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        h2 { "Members" }
        @if admin {
            form.row method="post" action=(format!("{base}/members")) {
                (token_input(&token))
                (field("member-email", "Add a member", "email", &out.sent.email, FieldError::at(err, "member", "email"), ("email", "name@example.com", true)))
                button.primary type="submit" { "Add" }
            }
        }
        @if group.members.is_empty() {
            div.empty { p { "No members yet." } }
        } @else {
            ul.members {
                @for m in &group.members {
                    li {
                        a href=(format!("/console/users/{}", enc(m))) { (m) }
                        @if admin { " " (button_form(&format!("{base}/members/{}/remove", enc(m)), &token, "Remove", &format!("Remove {m} from {}", group.name))) }
                    }
                }
            }
        }
        h2 { "Grants" }
        (grants::table(&held, false, admin.then_some((token.as_str(), base.as_str())), "This group holds no grant yet."))
        @if admin { p { a.button href=(format!("/console/grants?group={}#add", enc(&group.name))) { "Grant this group access" } } }
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Groups", body)
}

pub(super) async fn add_member(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<AddMember>,
) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let email = form.email.trim().to_owned();
    match groups::add_member(State(state.clone()), caller, Path((name.clone(), email.clone()))).await {
        Ok(_) => {
            let out = Outcome {
                notice: Some(html! { "Added " (email) " to the group." }),
                ..Default::default()
            };
            render_group(&state, again, name, out).await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("member", "email", e)),
                sent: form,
            };
            render_group(&state, again, name, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn remove_member(
    State(state): State<AppState>,
    Path((name, email)): Path<(String, String)>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        groups::remove_member(State(state), p.caller, Path((name.clone(), email))).await,
        &format!("/console/groups/{}", enc(&name)),
    )
}
