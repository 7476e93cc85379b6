//! Grants: subject × role × resource, additive, optionally expiring.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{CreateGrantRequest, Grant, GrantQuery};
use infra_core::{DestinationKind, GroupName, InfraRole, Resource, Role, SubjectKind, parse_duration};
use infra_store::{GrantFilter, GrantRow, identity, new_id, now_ms};

use super::users::{ensure_an_admin_remains, find, find_for};
use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{ms, page_of, paging, time};

pub(crate) fn to_api(g: &GrantRow) -> Grant {
    let is_user = g.subject_kind == SubjectKind::User;
    Grant {
        id: g.id.clone(),
        user: is_user.then(|| g.subject_name.clone()),
        group: (!is_user).then(|| g.subject_name.clone()),
        role: g.role.clone(),
        resource: g.resource.clone(),
        created: time(g.created_at),
        created_by: g.created_by.clone(),
        expires: g.expires_at.map(time),
    }
}

fn describe(g: &GrantRow) -> String {
    format!(
        "{} {} → {} (role {})",
        g.subject_kind, g.subject_name, g.resource, g.role
    )
}

/// List grants, filtered by user, group, resource or role. Without `view`
/// on Infra, a user may list only their own (`user` = themselves).
#[utoipa::path(get, path = "/api/grants", tag = "grants", params(GrantQuery),
    responses((status = 200, body = infra_api::Page<Grant>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<GrantQuery>,
) -> ApiResult<Json<infra_api::Page<Grant>>> {
    let (page, limit) = paging(q.page, q.limit)?;
    let mut c = state.store.conn().await?;
    let mut f = GrantFilter {
        resource: q
            .resource
            .as_deref()
            .map(Resource::parse)
            .transpose()?
            .map(String::from),
        role: q.role.as_deref().map(Role::parse).transpose()?.map(String::from),
        ..Default::default()
    };
    let may_view = caller.role.is_some_and(|r| r.satisfies(InfraRole::View));
    let mut own_groups = Vec::new();
    if let Some(email) = &q.user {
        let u = find_for(
            &state,
            &caller,
            &mut c,
            email,
            InfraRole::View,
            "list other users' grants",
        )
        .await?;
        own_groups = identity::groups_of_user(&mut c, &u.id).await?;
        f.via_groups = own_groups.iter().map(|g| g.id.clone()).collect();
        f.user_id = Some(u.id);
    } else {
        caller
            .require(
                &state,
                InfraRole::View,
                "list grants (list your own with --user YOUR_EMAIL)",
                "grants",
            )
            .await?;
    }
    if let Some(name) = &q.group {
        let n = GroupName::parse(name)?;
        // Without `view`, only a group of one's own (a grant one holds
        // through it); asked before the lookup, so a name does not reveal
        // whether a group exists.
        if !may_view && !own_groups.iter().any(|g| g.name == n.as_str()) {
            caller
                .require(
                    &state,
                    InfraRole::View,
                    "list the grants of a group you are not in",
                    n.as_str(),
                )
                .await?;
        }
        let g = identity::group_by_name(&mut c, n.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("group not found: {n}")))?;
        f.group_id = Some(g.id);
    }
    let (rows, total) = identity::list_grants(&mut c, &f, now_ms(), page, limit).await?;
    Ok(page_of(rows.iter().map(to_api).collect(), page, limit, total))
}

/// Grant a role on a resource to a user or a group.
#[utoipa::path(post, path = "/api/grants", tag = "grants", request_body = CreateGrantRequest,
    responses((status = 201, body = Grant), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateGrantRequest>,
) -> ApiResult<(StatusCode, Json<Grant>)> {
    let resource = Resource::parse(&req.resource)?;
    let role = Role::parse(&req.role)?;
    let expires_in = req.expires_in.as_deref().map(parse_duration).transpose()?;
    if resource.as_str() == infra_core::INFRA_RESOURCE && !matches!(role.as_str(), "admin" | "view") {
        return Err(ApiError::bad_request(format!(
            "role {role} does not exist on infra; use admin or view"
        )));
    }
    caller
        .require(&state, InfraRole::Admin, "grant access", resource.as_str())
        .await?;
    let now = now_ms();
    let mut tx = state.store.write().await?;
    check_inventory(tx.conn(), &resource, &role).await?;
    let (kind, subject_id, subject_name) = match (&req.user, &req.group) {
        (Some(email), None) => {
            let u = find(tx.conn(), email).await?;
            (SubjectKind::User, u.id, u.email)
        }
        (None, Some(name)) => {
            let n = GroupName::parse(name)?;
            let g = identity::group_by_name(tx.conn(), n.as_str()).await?.ok_or_else(|| {
                ApiError::not_found(format!("group not found: {n}; create it with 'infra groups add {n}'"))
            })?;
            (SubjectKind::Group, g.id, g.name)
        }
        _ => return Err(ApiError::bad_request("give exactly one of user or group")),
    };
    let g = GrantRow {
        id: new_id()?,
        subject_kind: kind,
        subject_id,
        subject_name,
        role: role.to_string(),
        resource: resource.to_string(),
        created_at: now,
        created_by: caller.email().to_owned(),
        expires_at: expires_in.map(|d| now + ms(d)),
    };
    match identity::insert_grant(tx.conn(), &g).await {
        Ok(()) => {}
        Err(infra_store::StoreError::Conflict) => {
            return Err(ApiError::conflict(format!("grant already exists: {}", describe(&g))));
        }
        Err(e) => return Err(e.into()),
    }
    let ev = caller.event("grant.create", &g.resource).detail(describe(&g));
    audit::commit(&state, tx, ev).await?;
    Ok((StatusCode::CREATED, Json(to_api(&g))))
}

/// Remove a grant. Removing the last admin's admin grant is refused.
#[utoipa::path(delete, path = "/api/grants/{id}", tag = "grants", params(("id" = String, Path)),
    responses((status = 204), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(&state, InfraRole::Admin, "remove grants", &id).await?;
    let mut tx = state.store.write().await?;
    let g = identity::grant_by_id(tx.conn(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("grant not found: {id}; see 'infra grants list'")))?;
    identity::delete_grant(tx.conn(), &id).await?;
    ensure_an_admin_remains(&mut tx, "remove this grant").await?;
    audit::commit(
        &state,
        tx,
        caller.event("grant.delete", &g.resource).detail(describe(&g)),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a grant its destination could never honour: on a Kubernetes
/// cluster whose connector has reported what it offers, an unknown
/// namespace or a role that is not a grantable ClusterRole. A destination
/// no connector has reported yet is taken on trust.
pub(crate) async fn check_inventory(c: &mut infra_store::Conn, resource: &Resource, role: &Role) -> ApiResult<()> {
    let dest = resource.destination();
    let Some((kind, Some(json))) = infra_store::connectors::inventory(c, dest).await? else {
        return Ok(());
    };
    if kind == DestinationKind::Ssh && resource.as_str() != dest {
        return Err(ApiError::bad_request(format!(
            "{dest} is an SSH host: grant the host itself ({dest}) with the login as the role"
        )));
    }
    if kind != DestinationKind::Kubernetes {
        return Ok(());
    }
    let Ok(inv) = serde_json::from_str::<infra_tunnel::proto::Inventory>(&json) else {
        return Ok(());
    };
    if role.as_str() != infra_core::KUBE_CONNECT_ROLE && !inv.roles.iter().any(|r| r == role.as_str()) {
        return Err(ApiError::bad_request(format!(
            "role {role} is not a grantable ClusterRole on cluster {dest}; use one of: {}, {} (or label a ClusterRole infra.dev/grantable=true)",
            inv.roles.join(", "),
            infra_core::KUBE_CONNECT_ROLE
        )));
    }
    if let Some((_, ns)) = resource.as_str().split_once('.')
        && !inv.namespaces.iter().any(|n| n == ns)
    {
        return Err(ApiError::bad_request(format!(
            "namespace {ns} does not exist in cluster {dest}; create it first (kubectl create namespace {ns}) or check the name"
        )));
    }
    Ok(())
}
