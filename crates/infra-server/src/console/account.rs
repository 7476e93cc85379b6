//! *Sessions and keys*: the signed-in user's own sessions and access keys,
//! and ending any of them, through the API's own handlers (`/api/keys`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::form::{Posted, Signed, Viewer, failed, then_to};
use super::readable_time;
use crate::api::keys_api::{self, KeyQuery};
use crate::authn::Caller;
use crate::extract::Query;
use crate::state::AppState;

#[derive(Debug, serde::Deserialize)]
pub(super) struct Shown {
    #[serde(default)]
    changed: bool,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(shown): axum::extract::Query<Shown>,
) -> Response {
    let notice = shown
        .changed
        .then_some("Your password was changed, and your other sessions were ended.");
    render(&state, caller, notice, None).await
}

/// Every key and session of `email` the caller may see, page after page.
pub(super) async fn keys_of(
    state: &AppState,
    caller: &Caller,
    email: &str,
) -> crate::error::ApiResult<Vec<infra_api::AccessKey>> {
    let mut keys = Vec::new();
    let mut page = 1;
    loop {
        let p = keys_api::list(State(state.clone()), caller.clone(), Query(KeyQuery::own(email, page))).await?;
        let n = p.0.items.len();
        keys.extend(p.0.items);
        if n == 0 || keys.len() as u64 >= p.0.total_count {
            return Ok(keys);
        }
        page += 1;
    }
}

/// The page, with a notice at the top or an error at the password form.
async fn render(state: &AppState, caller: Caller, notice: Option<&str>, password_error: Option<&str>) -> Response {
    let v = Viewer::of(state, &caller);
    let (email, current, token) = (v.email.clone(), caller.key_id.clone(), v.token.clone());
    let keys = match keys_of(state, &caller, &email).await {
        Ok(k) => k,
        Err(e) => return failed(&e),
    };
    let body = html! {
        h1 { "Sessions and keys" }
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        p.lead { "Everything that can act as you: your sign-ins (sessions) and the access keys you made. Ending one signs it out everywhere at once." }
        table {
            caption.visually-hidden { "Your sessions and access keys" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Action" } } } }
            tbody {
                @for k in &keys {
                    tr {
                        td {
                            (k.name)
                            @if k.id == current { " " span.badge { "this session" } }
                        }
                        td data-label="Kind" { (k.kind) }
                        td data-label="Last used" { time datetime=(k.last_used) { (readable_time(&k.last_used)) } }
                        td data-label="Expires" {
                            @match &k.expires {
                                Some(e) => time datetime=(e) { (readable_time(e)) },
                                None => "never",
                            }
                        }
                        td {
                            form method="post" action=(format!("/console/account/keys/{}/end", k.id)) {
                                input type="hidden" name="csrf" value=(token);
                                button type="submit" aria-label=(format!("End {}", k.name)) { "End" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Change your password" }
        form.stack method="post" action="/console/account/password" {
            input type="hidden" name="csrf" value=(token);
            label for="old_password" { "Current password" }
            input #old_password type="password" name="old_password" autocomplete="current-password" required;
            label for="password" { "New password" }
            input #password type="password" name="password" autocomplete="new-password" required
                aria-describedby=[password_error.map(|_| "password-error")];
            label for="confirm" { "New password, again" }
            input #confirm type="password" name="confirm" autocomplete="new-password" required;
            @if let Some(e) = password_error { p #password-error .error role="alert" { (e) } }
            button type="submit" { "Change password" }
        }
    };
    let status = if password_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.page(status, "Sessions and keys", body)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    old_password: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// Changes the user's own password through the API's `PUT
/// /api/users/{email}`: the old one is checked and the other sessions end
/// there.
pub(super) async fn change_password(State(state): State<AppState>, p: Posted<PasswordForm>) -> Response {
    let Posted { caller, form: f } = p;
    if f.password != f.confirm {
        return render(&state, caller, None, Some("The two new passwords differ.")).await;
    }
    let again = caller.clone();
    let email = caller.user.email.clone();
    let req = infra_api::UpdateUserRequest {
        password: f.password,
        old_password: Some(f.old_password),
    };
    match crate::api::users::update(State(state.clone()), caller, Path(email), crate::extract::Body(req)).await {
        Ok(_) => Redirect::to("/console/account?changed=true").into_response(),
        Err(e) if super::form::about_the_form(&e) => render(&state, again, None, Some(&e.message)).await,
        Err(e) => failed(&e),
    }
}

/// Ends one of the user's keys or sessions (the API's `DELETE
/// /api/keys/{id}`), from this page's form only.
pub(super) async fn end_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        keys_api::remove(State(state), p.caller, Path(id)).await,
        "/console/account",
    )
}
