//! Users.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{CreateUserRequest, CreateUserResponse, UpdateUserRequest, User, UserQuery};
use infra_auth::{Secret, password};
use infra_core::{Email, InfraRole};
use infra_store::{UserRow, identity, keys, new_id, now_ms};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{page_of, paging, time};

pub(crate) fn to_api(u: &UserRow, groups: Vec<String>) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        created: time(u.created_at),
        last_seen: u.last_seen_at.map(time),
        groups,
        kind: u.kind.clone(),
    }
}

pub(crate) async fn find(c: &mut infra_store::Conn, email: &str) -> ApiResult<UserRow> {
    let e = Email::parse(email)?;
    identity::user_by_email(c, e.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user not found: {e}; see 'infra users list'")))
}

/// The user `email` names, as `caller` may see them: themselves, or anyone
/// with `needed` on Infra. The permission is checked before the lookup, so
/// a caller without it gets the same 403 whether or not the account
/// exists: the answer never tells who has an account.
pub(crate) async fn find_for(
    state: &AppState,
    caller: &Caller,
    c: &mut infra_store::Conn,
    email: &str,
    needed: InfraRole,
    what: &str,
) -> ApiResult<UserRow> {
    let e = Email::parse(email)?;
    if e.as_str() == caller.user.email {
        return Ok(caller.user.clone());
    }
    caller.require(state, needed, what, e.as_str()).await?;
    find(c, e.as_str()).await
}

async fn hash(state: &AppState, pw: String) -> ApiResult<String> {
    password::check_policy(&pw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let pw = Secret::new(pw);
    crate::hashing::argon(state, move || password::hash(&pw))
        .await?
        .map_err(ApiError::internal)
}

/// List users.
#[utoipa::path(get, path = "/api/users", tag = "users", params(UserQuery),
    responses((status = 200, body = infra_api::Page<User>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<infra_api::Page<User>>> {
    caller.require(&state, InfraRole::View, "list users", "users").await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k @ ("user" | "service")) => Some(k),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid kind '{other}': use user or service"
            )));
        }
    };
    let mut c = state.store.conn().await?;
    let (rows, total) = identity::list_users(&mut c, kind, page, limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for u in &rows {
        let groups = identity::groups_of_user(&mut c, &u.id).await?;
        out.push(to_api(u, groups.into_iter().map(|g| g.name).collect()));
    }
    Ok(page_of(out, page, limit, total))
}

/// Add a user. Without a password, a one-time password is returned that
/// must be changed at first login.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUserRequest,
    responses((status = 201, body = CreateUserResponse), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<CreateUserResponse>)> {
    let email = Email::parse(&req.email)?;
    caller
        .require(&state, InfraRole::Admin, "add users", email.as_str())
        .await?;
    let (hash, otp) = match (req.password, req.service) {
        (Some(_), true) => return Err(ApiError::bad_request("a service account has no password")),
        (None, true) => (None, None),
        (Some(pw), false) => (Some(hash(&state, pw).await?), None),
        (None, false) => {
            let otp = infra_auth::random_token(16).map_err(ApiError::internal)?;
            (Some(hash(&state, otp.clone()).await?), Some(otp))
        }
    };
    let user = UserRow {
        id: new_id()?,
        email: email.to_string(),
        password_hash: hash,
        password_update_required: i64::from(otp.is_some()),
        created_at: now_ms(),
        last_seen_at: None,
        kind: if req.service { "service" } else { "user" }.into(),
    };
    let mut tx = state.store.write().await?;
    if identity::user_by_email(tx.conn(), email.as_str()).await?.is_some() {
        return Err(ApiError::conflict(format!("user already exists: {email}")));
    }
    identity::insert_user(tx.conn(), &user).await?;
    audit::commit(&state, tx, caller.event("user.create", email.as_str())).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateUserResponse {
            user: to_api(&user, vec![]),
            one_time_password: otp,
        }),
    ))
}

/// Get a user.
#[utoipa::path(get, path = "/api/users/{email}", tag = "users", params(("email" = String, Path)),
    responses((status = 200, body = User)), security(("accessKey" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<Json<User>> {
    let mut c = state.store.conn().await?;
    let u = find_for(&state, &caller, &mut c, &email, InfraRole::View, "see other users").await?;
    let groups = identity::groups_of_user(&mut c, &u.id).await?;
    Ok(Json(to_api(&u, groups.into_iter().map(|g| g.name).collect())))
}

/// Change a password: your own (with `oldPassword`), or anyone's as admin
/// (they must change it at next login). Ends the user's other sessions.
#[utoipa::path(put, path = "/api/users/{email}", tag = "users", params(("email" = String, Path)), request_body = UpdateUserRequest,
    responses((status = 200, body = User)), security(("accessKey" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
    Body(req): Body<UpdateUserRequest>,
) -> ApiResult<Json<User>> {
    let mut c = state.store.conn().await?;
    let u = find_for(
        &state,
        &caller,
        &mut c,
        &email,
        InfraRole::Admin,
        "change other users' passwords",
    )
    .await?;
    drop(c);
    if u.kind == "service" {
        return Err(ApiError::bad_request(format!(
            "{} is a service account: it has no password (it authenticates with access keys or token exchange)",
            u.email
        )));
    }
    let own = u.id == caller.user.id;
    if !own && caller.user.password_update_required != 0 {
        return Err(ApiError::forbidden(
            "change your own password first: run 'infra login' again",
        ));
    }
    if own {
        let old = Secret::new(req.old_password.clone().unwrap_or_default());
        let stored = u.password_hash.clone();
        let ok = crate::hashing::argon(&state, move || password::verify(&old, stored.as_deref())).await?;
        if !ok {
            return Err(ApiError::bad_request(
                "old password is wrong (send oldPassword to change your own password)",
            ));
        }
    } else {
        caller
            .require(&state, InfraRole::Admin, "change other users' passwords", &u.email)
            .await?;
    }
    let h = hash(&state, req.password).await?;
    let mut tx = state.store.write().await?;
    identity::set_password(tx.conn(), &u.id, &h, !own).await?;
    // Other sessions of this user end; the caller's own stays.
    let sessions = keys::list_keys(tx.conn(), Some(&u.id), true, 1, infra_api::MAX_LIMIT)
        .await?
        .0;
    for k in sessions
        .iter()
        .filter(|k| k.kind == infra_store::KeyKind::Session && k.id != caller.key_id)
    {
        keys::delete_key(tx.conn(), &k.id).await?;
    }
    let groups = identity::groups_of_user(tx.conn(), &u.id).await?;
    audit::commit(&state, tx, caller.event("user.password", &u.email)).await?;
    Ok(Json(to_api(&u, groups.into_iter().map(|g| g.name).collect())))
}

/// Remove a user with their grants, keys and sessions. The last admin
/// cannot be removed.
#[utoipa::path(delete, path = "/api/users/{email}", tag = "users", params(("email" = String, Path)),
    responses((status = 204), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<StatusCode> {
    let target = Email::parse(&email)?;
    caller
        .require(&state, InfraRole::Admin, "remove users", target.as_str())
        .await?;
    let mut tx = state.store.write().await?;
    let u = find(tx.conn(), target.as_str()).await?;
    identity::delete_user(tx.conn(), &u.id).await?;
    ensure_an_admin_remains(&mut tx, "remove this user").await?;
    audit::commit(&state, tx, caller.event("user.delete", &u.email)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Called inside a write transaction after a change that may remove admin
/// rights; the transaction is dropped (rolled back) on error.
pub(crate) async fn ensure_an_admin_remains(tx: &mut infra_store::WriteTx, what: &str) -> ApiResult<()> {
    if identity::count_admins(tx.conn(), now_ms()).await? == 0 {
        return Err(ApiError::conflict(format!(
            "cannot {what}: it would leave Infra without an admin; grant admin to someone else first (infra grants add EMAIL infra --role admin)"
        )));
    }
    Ok(())
}
