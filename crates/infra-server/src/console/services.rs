//! *Service accounts*: the identities workloads act as, and their access
//! keys (made here once and shown once, or ended). Through the API's
//! `/api/users?kind=service` and `/api/keys`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use infra_api::{CreateKeyRequest, CreateUserRequest, UserQuery};
use maud::html;

use super::form::{
    FieldError, Posted, Signed, Viewer, button_form, enc, failed, field, given, pager, then_to, token_input,
};
use super::people::{Outcome, PER_PAGE};
use super::{Done, Shown, account, readable_time};
use crate::api::{keys_api, users};
use crate::authn::Caller;
use crate::extract::{Body, Query};
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Sent {
    #[serde(default)]
    email: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in: String,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let notice = q.done.map(|d| html! { (d.message("service account or key")) });
    render(
        &state,
        caller,
        q.page.unwrap_or(1).max(1),
        Outcome {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn render(state: &AppState, caller: Caller, page: u32, out: Outcome<Sent>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let q = Query(UserQuery {
        kind: Some("service".into()),
        page: Some(page),
        limit: Some(PER_PAGE),
    });
    let list = match users::list(State(state.clone()), caller.clone(), q).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let mut accounts = Vec::with_capacity(list.items.len());
    for a in list.items {
        match account::keys_of(state, &caller, &a.email).await {
            Ok(keys) => accounts.push((a, keys)),
            Err(e) => return failed(&e),
        }
    }
    let err = out.error.as_ref();
    let sent = &out.sent;
    let body = html! {
        h1 { "Service accounts" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        p.lead { "Identities for workloads: they hold grants like users, have no password, and act through access keys or by exchanging a workload token." }
        @if admin {
            details.add open[FieldError::at(err, "account", "email").is_some()] {
                summary { "Add a service account" }
                form.stack method="post" action="/console/service-accounts" {
                    (token_input(&token))
                    (field("s-email", "Name (an email-shaped id)", "email", &sent.email, FieldError::at(err, "account", "email"), ("text", "ci@services.example.com", true)))
                    button.primary type="submit" { "Add service account" }
                }
            }
        }
        @if accounts.is_empty() {
            div.empty { p { "No service account yet." } }
        }
        @for (a, keys) in &accounts {
            section.card aria-labelledby=(format!("sa-{}", a.id)) {
                div.card-head {
                    h2 id=(format!("sa-{}", a.id)) { a href=(format!("/console/users/{}", enc(&a.email))) { (a.email) } }
                    @if admin { (button_form(&format!("/console/users/{}/remove", enc(&a.email)), &token, "Remove", &format!("Remove service account {}", a.email))) }
                }
                @if keys.is_empty() { p.muted { "No access key." } }
                ul.members {
                    @for k in keys {
                        li {
                            code { (k.name) } " · " (k.kind)
                            " · expires " (k.expires.as_deref().map_or("never".into(), readable_time))
                            " · last used " (readable_time(&k.last_used))
                            @if admin { " " (button_form(&format!("/console/service-accounts/keys/{}/end", enc(&k.id)), &token, "End", &format!("End key {}", k.name))) }
                        }
                    }
                }
                @if admin {
                    @let here = sent.account == a.email;
                    @let id = |f: &str| format!("{f}-{}", a.id);
                    form.row method="post" action="/console/service-accounts/keys" {
                        (token_input(&token))
                        input type="hidden" name="account" value=(a.email);
                        (field(&id("k-name"), "New key's name", "name", if here { &sent.name } else { "" }, FieldError::at(err.filter(|_| here), "key", "name"), ("text", "deploy", false)))
                        (field(&id("k-exp"), "Ends after", "expires_in", if here { &sent.expires_in } else { "" }, FieldError::at(err.filter(|_| here), "key", "expires_in"), ("text", "720h", false)))
                        button type="submit" { "Make a key" }
                    }
                }
            }
        }
        (pager("/console/service-accounts?", page, PER_PAGE, list.total_count))
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Service accounts", body)
}

pub(super) async fn add(State(state): State<AppState>, p: Posted<Sent>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let req = CreateUserRequest {
        email: form.email.trim().to_owned(),
        password: None,
        service: true,
    };
    match users::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, u)) => {
            let notice = html! { "Added service account " (u.0.user.email) ". Grant it access, then make it a key or map a workload to it." };
            render(
                &state,
                again,
                1,
                Outcome {
                    notice: Some(notice),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("account", "email", e)),
                sent: form,
            };
            render(&state, again, 1, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn add_key(State(state): State<AppState>, p: Posted<Sent>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let req = CreateKeyRequest {
        user: Some(form.account.clone()),
        connector: false,
        name: given(&form.name),
        expires_in: given(&form.expires_in),
        inactivity_timeout: None,
    };
    match keys_api::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, k)) => {
            let k = k.0;
            let notice = html! {
                "Made key " code { (k.key.name) } " for " (form.account) ". Copy it now; it is not shown again: "
                code.secret { (k.access_key) }
            };
            render(
                &state,
                again,
                1,
                Outcome {
                    notice: Some(notice),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let field = if e.message.contains("duration") {
                "expires_in"
            } else {
                "name"
            };
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("key", field, e)),
                sent: form,
            };
            render(&state, again, 1, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn end_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        keys_api::remove(State(state), p.caller, Path(id)).await,
        &Done::Removed.after("/console/service-accounts"),
    )
}
