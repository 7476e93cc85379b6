//! Destinations as connectors registered them, and the keys upstreams use
//! to verify `X-Infra-Assertion`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{AccessPath, ConnectorInstance, Destination, NewForwardAuthDestination, PageQuery};
use infra_core::{AppOrigin, InfraRole, Resource};
use infra_store::{connectors, identity, now_ms};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::wire::{page_of, paging, time};

/// How recently a connector must have been seen to count as healthy.
const HEALTHY_WITHIN_MS: i64 = 60_000;

pub(crate) fn url_of(state: &AppState, name: &str) -> String {
    let port = state
        .settings
        .public_url
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("443");
    format!("https://{name}.{}:{port}/", state.settings.gateway_domain)
}

fn to_api(state: &AppState, d: connectors::DestinationRow) -> Destination {
    if let Some(public) = d.public_url {
        return Destination {
            url: format!("{public}/"),
            name: d.name,
            kind: d.kind.as_str().to_owned(),
            connector: String::new(),
            labels: Default::default(),
            health: "forward-auth".into(),
            tunnels: 0,
            last_seen: time(d.last_seen_at),
            direct_url: None,
        };
    }
    let live = state.hub.count(&d.name);
    let connected = live > 0 || (d.tunnels > 0 && infra_store::now_ms() - d.last_seen_at < HEALTHY_WITHIN_MS);
    Destination {
        url: url_of(state, &d.name),
        name: d.name,
        kind: d.kind.as_str().to_owned(),
        connector: d.connector,
        labels: serde_json::from_str(&d.labels).unwrap_or_default(),
        health: if connected {
            "connected".into()
        } else {
            "disconnected".into()
        },
        tunnels: u32::try_from(live.max(usize::try_from(d.tunnels).unwrap_or(0))).unwrap_or(0),
        last_seen: time(d.last_seen_at),
        direct_url: d.direct_url,
    }
}

/// List destinations with their connector and health.
#[utoipa::path(get, path = "/api/destinations", tag = "destinations", params(PageQuery),
    responses((status = 200, body = infra_api::Page<Destination>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<infra_api::Page<Destination>>> {
    caller
        .require(&state, InfraRole::View, "list destinations", "destinations")
        .await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let mut c = state.store.conn().await?;
    let (rows, total) = connectors::list_destinations(&mut c, page, limit).await?;
    Ok(page_of(
        rows.into_iter().map(|d| to_api(&state, d)).collect(),
        page,
        limit,
        total,
    ))
}

/// One destination with its connector and health.
#[utoipa::path(get, path = "/api/destinations/{name}", tag = "destinations",
    responses((status = 200, body = Destination), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Destination>> {
    caller
        .require(&state, InfraRole::View, "see destinations", &name)
        .await?;
    let mut c = state.store.conn().await?;
    let d = connectors::destination(&mut c, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("destination not found: {name}; see 'infra destinations list'")))?;
    Ok(Json(to_api(&state, d)))
}

/// Who can reach a destination right now: every user with a grant on it
/// or a part of it, directly or through a group, one line per grant.
#[utoipa::path(get, path = "/api/destinations/{name}/access", tag = "destinations", params(PageQuery),
    responses((status = 200, body = infra_api::Page<AccessPath>)), security(("accessKey" = [])))]
pub(crate) async fn access(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<infra_api::Page<AccessPath>>> {
    let dest = Resource::parse(&name)?;
    caller
        .require(
            &state,
            InfraRole::View,
            "see who can reach a destination",
            dest.as_str(),
        )
        .await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let mut c = state.store.conn().await?;
    let (rows, total) = identity::reach_of_destination(&mut c, &dest, now_ms(), page, limit).await?;
    let paths = rows
        .into_iter()
        .map(|r| AccessPath {
            user: r.email,
            role: r.role,
            resource: r.resource,
            group: r.via_group,
            expires: r.expires_at.map(time),
            grant: r.grant_id,
        })
        .collect();
    Ok(page_of(paths, page, limit, total))
}

/// Connectors seen in the last week: each instance, its version, where it
/// connects from and its open tunnels.
#[utoipa::path(get, path = "/api/connectors", tag = "destinations",
    responses((status = 200, body = Vec<ConnectorInstance>)), security(("accessKey" = [])))]
pub(crate) async fn connectors_list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ConnectorInstance>>> {
    caller
        .require(&state, InfraRole::View, "list connectors", "connectors")
        .await?;
    let mut c = state.store.conn().await?;
    let week = 7 * 24 * 3_600_000;
    let rows = connectors::instances(&mut c, now_ms() - week).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ConnectorInstance {
                connector: r.connector,
                instance: r.instance_id,
                version: r.version,
                source: r.source,
                connected: time(r.connected_at),
                last_seen: time(r.last_seen_at),
                tunnels: u32::try_from(r.tunnels).unwrap_or(0),
            })
            .collect(),
    ))
}

/// Declare a forward-auth destination: the server decides for a proxy in
/// front of the application at `url` (see docs/forward-auth.md).
#[utoipa::path(post, path = "/api/destinations", tag = "destinations", request_body = NewForwardAuthDestination,
    responses((status = 201, body = Destination), (status = 409)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<NewForwardAuthDestination>,
) -> ApiResult<(StatusCode, Json<Destination>)> {
    caller
        .require(&state, InfraRole::Admin, "add destinations", &req.name)
        .await?;
    let name = Resource::parse(&req.name)
        .ok()
        .filter(|r| !r.as_str().contains('.'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid destination name '{}': use lower-case letters, digits and '-'",
                req.name
            ))
        })?;
    let origin = AppOrigin::parse(&req.url).map_err(|e| ApiError::bad_request(format!("url '{}': {e}", req.url)))?;
    let mut tx = state.store.write().await?;
    let taken = connectors::forward_auth_destinations(tx.conn())
        .await?
        .into_iter()
        .find(|(_, u)| AppOrigin::parse(u).is_ok_and(|o| o.host() == origin.host()));
    if let Some((other, _)) = taken {
        return Err(ApiError::conflict(format!(
            "destination '{other}' already has host {}; one application per host",
            origin.host()
        )));
    }
    let now = infra_store::now_ms();
    if !connectors::add_forward_auth(tx.conn(), name.as_str(), &origin.to_string(), now).await? {
        return Err(ApiError::conflict(format!(
            "destination '{}' exists; see 'infra destinations list'",
            name.as_str()
        )));
    }
    let row = connectors::destination(tx.conn(), name.as_str()).await?;
    audit::commit(
        &state,
        tx,
        caller
            .event("destination.create", name.as_str())
            .detail(format!("url={origin}")),
    )
    .await?;
    let row = row.ok_or_else(|| ApiError::internal("destination vanished"))?;
    Ok((StatusCode::CREATED, Json(to_api(&state, row))))
}

/// Forget a destination (its connector registers it again if it still
/// serves it). Grants on it are kept.
#[utoipa::path(delete, path = "/api/destinations/{name}", tag = "destinations", params(("name" = String, Path)),
    responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove destinations", &name)
        .await?;
    let mut tx = state.store.write().await?;
    if !connectors::delete_destination(tx.conn(), &name).await? {
        return Err(ApiError::not_found(format!(
            "destination not found: {name}; see 'infra destinations list'"
        )));
    }
    audit::commit(&state, tx, caller.event("destination.delete", &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Public keys connectors sign `X-Infra-Assertion` with (a JWKS). The
/// assertion's `iss` is `<server URL>/connectors/<name>` and its `aud` the
/// destination.
#[utoipa::path(get, path = "/api/connectors/jwks", tag = "destinations", responses((status = 200)))]
pub(crate) async fn assertion_keys(State(state): State<AppState>) -> ApiResult<Json<infra_auth::jwt::Jwks>> {
    assertion_jwks(&state, None).await
}

/// The assertion keys of one connector: an upstream that verifies `iss`
/// `<server URL>/connectors/<name>` against this set accepts only what that
/// connector signed, not what another connector's key could sign in its
/// name.
#[utoipa::path(get, path = "/api/connectors/{name}/jwks", tag = "destinations", responses((status = 200)))]
pub(crate) async fn connector_assertion_keys(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<infra_auth::jwt::Jwks>> {
    assertion_jwks(&state, Some(&name)).await
}

async fn assertion_jwks(state: &AppState, connector: Option<&str>) -> ApiResult<Json<infra_auth::jwt::Jwks>> {
    let mut c = state.store.conn().await?;
    let since = infra_store::now_ms() - 7 * 24 * 3600 * 1000;
    let keys = connectors::connector_keys(&mut c, since).await?;
    Ok(Json(infra_auth::jwt::Jwks {
        keys: keys
            .iter()
            .filter(|(_, owner, _)| connector.is_none_or(|n| n == owner))
            .map(|(kid, _, x)| infra_auth::jwt::Jwk::ed25519(kid, x))
            .collect(),
    }))
}
