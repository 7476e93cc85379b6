//! Groups and membership.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{CreateGroupRequest, Group, PageQuery};
use infra_core::{GroupName, InfraRole};
use infra_store::{GroupRow, identity, new_id, now_ms};

use super::users::{ensure_an_admin_remains, find};
use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{page_of, paging, time};

async fn find_group(c: &mut infra_store::Conn, name: &str) -> ApiResult<GroupRow> {
    let n = GroupName::parse(name)?;
    identity::group_by_name(c, n.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("group not found: {n}; see 'infra groups list'")))
}

/// List groups with their members.
#[utoipa::path(get, path = "/api/groups", tag = "groups", params(PageQuery),
    responses((status = 200, body = infra_api::Page<Group>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<infra_api::Page<Group>>> {
    caller.require(&state, InfraRole::View, "list groups", "groups").await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let mut c = state.store.conn().await?;
    let (rows, total) = identity::list_groups(&mut c, page, limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for g in rows {
        let members = identity::members_of_group(&mut c, &g.id).await?;
        out.push(Group {
            id: g.id,
            name: g.name,
            created: time(g.created_at),
            members,
        });
    }
    Ok(page_of(out, page, limit, total))
}

/// One group with its members.
#[utoipa::path(get, path = "/api/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 200, body = Group)), security(("accessKey" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Group>> {
    let n = GroupName::parse(&name)?;
    caller
        .require(&state, InfraRole::View, "see groups", n.as_str())
        .await?;
    let mut c = state.store.conn().await?;
    let g = find_group(&mut c, n.as_str()).await?;
    let members = identity::members_of_group(&mut c, &g.id).await?;
    Ok(Json(Group {
        id: g.id,
        name: g.name,
        created: time(g.created_at),
        members,
    }))
}

/// Add a group.
#[utoipa::path(post, path = "/api/groups", tag = "groups", request_body = CreateGroupRequest,
    responses((status = 201, body = Group)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let name = GroupName::parse(&req.name)?;
    caller
        .require(&state, InfraRole::Admin, "add groups", name.as_str())
        .await?;
    let g = GroupRow {
        id: new_id()?,
        name: name.to_string(),
        created_at: now_ms(),
    };
    let mut tx = state.store.write().await?;
    if identity::group_by_name(tx.conn(), name.as_str()).await?.is_some() {
        return Err(ApiError::conflict(format!("group already exists: {name}")));
    }
    identity::insert_group(tx.conn(), &g).await?;
    audit::commit(&state, tx, caller.event("group.create", &g.name)).await?;
    Ok((
        StatusCode::CREATED,
        Json(Group {
            id: g.id,
            name: g.name,
            created: time(g.created_at),
            members: vec![],
        }),
    ))
}

/// Remove a group and its grants.
#[utoipa::path(delete, path = "/api/groups/{name}", tag = "groups", params(("name" = String, Path)),
    responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&state, InfraRole::Admin, "remove groups", &name).await?;
    let mut tx = state.store.write().await?;
    let g = find_group(tx.conn(), &name).await?;
    identity::delete_group(tx.conn(), &g.id).await?;
    ensure_an_admin_remains(&mut tx, "remove this group").await?;
    audit::commit(&state, tx, caller.event("group.delete", &g.name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add a user to a group.
#[utoipa::path(put, path = "/api/groups/{name}/members/{email}", tag = "groups",
    params(("name" = String, Path), ("email" = String, Path)), responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, email)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "change group membership", &name)
        .await?;
    let mut tx = state.store.write().await?;
    let g = find_group(tx.conn(), &name).await?;
    let u = find(tx.conn(), &email).await?;
    match identity::add_member(tx.conn(), &g.id, &u.id).await {
        Ok(()) => {}
        Err(infra_store::StoreError::Conflict) => {
            return Err(ApiError::conflict(format!(
                "{} is already in group {}",
                u.email, g.name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    audit::commit(
        &state,
        tx,
        caller
            .event("group.adduser", &u.email)
            .detail(format!("group={}", g.name)),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user from a group.
#[utoipa::path(delete, path = "/api/groups/{name}/members/{email}", tag = "groups",
    params(("name" = String, Path), ("email" = String, Path)), responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, email)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "change group membership", &name)
        .await?;
    let mut tx = state.store.write().await?;
    let g = find_group(tx.conn(), &name).await?;
    let u = find(tx.conn(), &email).await?;
    if !identity::remove_member(tx.conn(), &g.id, &u.id).await? {
        return Err(ApiError::not_found(format!("{} is not in group {}", u.email, g.name)));
    }
    ensure_an_admin_remains(&mut tx, "remove this member").await?;
    audit::commit(
        &state,
        tx,
        caller
            .event("group.removeuser", &u.email)
            .detail(format!("group={}", g.name)),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
