//! Identity providers: adding, listing and removing them. Logging in
//! through one is `provider_login`; what a provider's session keeps in step
//! afterwards is `idp::refresh`.

use axum::Json;
use axum::extract::{Path, State};
use infra_api::{ProviderCreate, ProviderInfo};
use infra_auth::envelope;
use infra_core::InfraRole;
use infra_store::now_ms;
use infra_store::providers::{self, ProviderRow};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::idp::{NO_REFRESH_SESSION, secret_context};
use crate::oidc::{Discovery, OFFLINE_ACCESS};
use crate::state::AppState;
use crate::wire::time;

const DEFAULT_SCOPES: &str = "openid email profile groups";

fn to_api(p: &ProviderRow) -> ProviderInfo {
    ProviderInfo {
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        client_id: p.client_id.clone(),
        groups_claim: p.groups_claim.clone(),
        scopes: p.scopes.split_whitespace().map(str::to_owned).collect(),
        allowed_domains: p
            .allowed_domains
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        created: time(p.created_at),
        notice: None,
    }
}

/// Add a provider. Its discovery document is fetched first, so a wrong
/// issuer is refused now rather than at the first login.
#[utoipa::path(post, path = "/api/providers", tag = "providers", request_body = ProviderCreate,
    responses((status = 201, body = ProviderInfo), (status = 400, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<ProviderCreate>,
) -> ApiResult<(axum::http::StatusCode, Json<ProviderInfo>)> {
    caller
        .require(&state, InfraRole::Admin, "add identity providers", "providers")
        .await?;
    let issuer = check(&req)?;
    let discovery = state
        .oidc
        .discover(&issuer)
        .await
        .map_err(|e| ApiError::bad_request(e.describe(&req.name)))?;
    let row = ProviderRow {
        name: req.name.clone(),
        issuer,
        client_id: req.client_id.clone(),
        client_secret_sealed: envelope::seal(
            &state.root_key,
            &secret_context(&req.name),
            req.client_secret.as_bytes(),
        )
        .map_err(ApiError::internal)?,
        groups_claim: req.groups_claim.clone().unwrap_or_else(|| "groups".into()),
        scopes: scopes(&req, &discovery),
        allowed_domains: req
            .allowed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(","),
        allow_unverified_email: i64::from(req.allow_unverified_email),
        created_at: now_ms(),
    };
    let mut tx = state.store.write().await?;
    if providers::provider(tx.conn(), &row.name).await?.is_some() {
        return Err(ApiError::conflict(format!("provider {} exists already", row.name)));
    }
    providers::insert_provider(tx.conn(), &row).await?;
    let ev = caller
        .event("provider.create", &row.name)
        .detail(format!("issuer={} client_id={}", row.issuer, row.client_id));
    audit::commit(&state, tx, ev).await?;
    let mut info = to_api(&row);
    if !info.scopes.iter().any(|s| s == OFFLINE_ACCESS) {
        info.notice = Some(format!(
            "{} does not ask for {OFFLINE_ACCESS} here, so it may give no refresh token: a user removed or disabled at the provider then keeps access until their Infra session ends, which for such sessions is at most {}. Add {OFFLINE_ACCESS} to --scopes if the provider supports it.",
            row.name,
            infra_core::format_duration(NO_REFRESH_SESSION),
        ));
    }
    Ok((axum::http::StatusCode::CREATED, Json(info)))
}

/// Checks a new provider's name, client and issuer; returns the issuer.
fn check(req: &ProviderCreate) -> ApiResult<String> {
    if req.name.is_empty()
        || req.name.len() > 64
        || !req
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ApiError::bad_request(
            "provider name: 1 to 64 lower-case letters, digits and -",
        ));
    }
    if req.client_id.is_empty() || req.client_secret.is_empty() {
        return Err(ApiError::bad_request("clientId and clientSecret are required"));
    }
    let issuer = req.issuer.trim().to_owned();
    // Keys and discovery over plain HTTP could be swapped on the way; only
    // a provider on this machine may use it.
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| issuer.starts_with(p) && issuer[p.len()..].starts_with([':', '/']) || issuer == *p);
    if !issuer.starts_with("https://") && !loopback {
        return Err(ApiError::bad_request(
            "issuer must be an https:// URL (plain http only for a provider on this machine)",
        ));
    }
    Ok(issuer)
}

/// The scopes to ask for: those given (with `openid`), or the defaults.
/// Without a refresh token Infra cannot see a user removed or disabled at
/// the provider: the defaults ask for one whenever the provider offers it.
fn scopes(req: &ProviderCreate, discovery: &Discovery) -> String {
    if req.scopes.is_empty() {
        if discovery.scopes_supported.iter().any(|s| s == OFFLINE_ACCESS) {
            format!("{DEFAULT_SCOPES} {OFFLINE_ACCESS}")
        } else {
            DEFAULT_SCOPES.to_owned()
        }
    } else {
        let mut s = req.scopes.clone();
        if !s.iter().any(|x| x == "openid") {
            s.insert(0, "openid".into());
        }
        s.join(" ")
    }
}

/// List providers (anyone may: a login page shows them).
#[utoipa::path(get, path = "/api/providers", tag = "providers", responses((status = 200, body = Vec<ProviderInfo>)))]
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<ProviderInfo>>> {
    let mut c = state.store.conn().await?;
    Ok(Json(providers::providers(&mut c).await?.iter().map(to_api).collect()))
}

/// Remove a provider; sessions that came from it end.
#[utoipa::path(delete, path = "/api/providers/{name}", tag = "providers",
    responses((status = 204), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove identity providers", "providers")
        .await?;
    let mut tx = state.store.write().await?;
    if !providers::delete_provider(tx.conn(), &name).await? {
        return Err(ApiError::not_found(format!("no provider named {name}")));
    }
    audit::commit(&state, tx, caller.event("provider.delete", &name)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
