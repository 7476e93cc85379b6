//! Access keys for users and connectors.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{AccessKey, CreateKeyRequest, CreateKeyResponse};
use infra_core::{InfraRole, format_duration, parse_duration};
use infra_store::{AccessKeyRow, KeyKind, keys, now_ms};

use super::users::find_for;
use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{ms, page_of, paging, time};

pub(crate) fn to_api(k: &AccessKeyRow) -> AccessKey {
    AccessKey {
        id: k.id.clone(),
        name: k.name.clone(),
        kind: k.kind.as_str().to_owned(),
        user: k.user_email.clone(),
        created: time(k.created_at),
        expires: k.expires_at.map(time),
        last_used: time(k.last_used_at),
        inactivity_timeout: k
            .inactivity_timeout_ms
            .map(|t| format_duration(std::time::Duration::from_millis(u64::try_from(t).unwrap_or(0)))),
    }
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KeyQuery {
    /// Only this user's keys (email).
    user: Option<String>,
    /// Include login sessions.
    #[serde(default)]
    sessions: bool,
    page: Option<u32>,
    limit: Option<u32>,
}

impl KeyQuery {
    /// A user's own keys and sessions, `page` by page.
    pub(crate) fn own(email: &str, page: u32) -> Self {
        Self {
            user: Some(email.to_owned()),
            sessions: true,
            page: Some(page),
            limit: Some(infra_api::MAX_LIMIT),
        }
    }
}

/// List access keys: everyone's with `view`, else your own.
#[utoipa::path(get, path = "/api/keys", tag = "keys", params(KeyQuery),
    responses((status = 200, body = infra_api::Page<AccessKey>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Json<infra_api::Page<AccessKey>>> {
    let (page, limit) = paging(q.page, q.limit)?;
    let mut c = state.store.conn().await?;
    let user_id = match &q.user {
        Some(email) => Some(
            find_for(
                &state,
                &caller,
                &mut c,
                email,
                InfraRole::View,
                "list other users' keys",
            )
            .await?
            .id,
        ),
        None if caller.role.is_some() => None,
        None => Some(caller.user.id.clone()),
    };
    if user_id.as_deref() != Some(caller.user.id.as_str()) {
        caller
            .require(&state, InfraRole::View, "list other users' keys", "keys")
            .await?;
    }
    let (rows, total) = keys::list_keys(&mut c, user_id.as_deref(), q.sessions, page, limit).await?;
    Ok(page_of(rows.iter().map(to_api).collect(), page, limit, total))
}

fn valid_key_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Create an access key; the key is in the response only.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreateKeyResponse)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreateKeyResponse>)> {
    let expires_in = req.expires_in.as_deref().map(parse_duration).transpose()?;
    let inactivity = req.inactivity_timeout.as_deref().map(parse_duration).transpose()?;
    if let Some(n) = &req.name
        && !valid_key_name(n)
    {
        return Err(ApiError::bad_request(format!(
            "invalid key name '{}': use 1 to 64 letters, digits, - _ .",
            n.chars().take(64).collect::<String>()
        )));
    }
    let mut c = state.store.conn().await?;
    let (kind, user) = match (req.connector, &req.user) {
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "a connector key belongs to no user: give connector or user, not both",
            ));
        }
        (true, None) => {
            caller
                .require(&state, InfraRole::Admin, "create connector keys", "connector")
                .await?;
            (KeyKind::Connector, None)
        }
        (false, Some(email)) => {
            let u = find_for(
                &state,
                &caller,
                &mut c,
                email,
                InfraRole::Admin,
                "create keys for other users",
            )
            .await?;
            (KeyKind::User, Some(u))
        }
        (false, None) => (KeyKind::User, Some(caller.user.clone())),
    };
    // A key a session makes for itself lives no longer than that session
    // when the session is borrowed: exchanged by a workload, or from an
    // identity provider (which may end it). Otherwise a one-hour workload
    // credential or a disabled provider user would keep access for good.
    // Transitively: a key made by such a key is borrowed from the same
    // session (see `lender_of`).
    let own_key = kind == KeyKind::User && user.as_ref().is_some_and(|u| u.id == caller.user.id);
    let lender = caller.lender.clone().filter(|_| own_key);
    let cap = caller.key_expires.filter(|_| lender.is_some());
    drop(c);
    let k = infra_auth::access_key::generate().map_err(ApiError::internal)?;
    let now = now_ms();
    let name = req.name.unwrap_or_else(|| format!("{kind}-{}", &k.id[..6]));
    let row = AccessKeyRow {
        id: k.id.clone(),
        name,
        kind,
        user_id: user.as_ref().map(|u| u.id.clone()),
        user_email: user.as_ref().map(|u| u.email.clone()),
        secret_hash: k.secret_hash.clone(),
        created_at: now,
        expires_at: match (expires_in.map(|d| now + ms(d)), cap) {
            (Some(e), Some(c)) => Some(e.min(c)),
            (e, c) => e.or(c),
        },
        inactivity_timeout_ms: inactivity.map(ms),
        last_used_at: now,
        lender_id: lender,
    };
    let mut tx = state.store.write().await?;
    keys::insert_key(tx.conn(), &row).await?;
    let target = row
        .user_email
        .clone()
        .unwrap_or_else(|| format!("connector:{}", row.name));
    let ev = caller
        .event("key.create", &target)
        .detail(format!("key={} name={} kind={kind}", row.id, row.name));
    audit::commit(&state, tx, ev).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateKeyResponse {
            access_key: k.full.expose().clone(),
            key: to_api(&row),
        }),
    ))
}

/// Revoke an access key (by id or name): yours, or anyone's as admin.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", params(("id" = String, Path, description = "key id or name")),
    responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    let mut found = keys::keys_by_name_or_id(tx.conn(), &id).await?;
    let admin = caller.role.is_some_and(|r| r.satisfies(InfraRole::Admin));
    // Non-admins only see their own keys, so a name cannot reveal others'.
    if !admin {
        found.retain(|k| k.user_id.as_deref() == Some(caller.user.id.as_str()));
    }
    let k = match found.len() {
        0 => {
            drop(tx);
            let mut c = state.store.conn().await?;
            let all = keys::keys_by_name_or_id(&mut c, &id).await?;
            if !all.is_empty() {
                caller
                    .deny(&state, InfraRole::Admin, "revoke other users' keys", &id)
                    .await?;
            }
            return Err(ApiError::not_found(format!(
                "access key not found: {id}; see 'infra keys list'"
            )));
        }
        1 => found.remove(0),
        _ => {
            return Err(ApiError::conflict(format!(
                "several keys are named {id}; remove by id (see 'infra keys list')"
            )));
        }
    };
    keys::delete_key(tx.conn(), &k.id).await?;
    let target = k.user_email.clone().unwrap_or_else(|| format!("connector:{}", k.name));
    audit::commit(
        &state,
        tx,
        caller
            .event("key.delete", &target)
            .detail(format!("key={} name={}", k.id, k.name)),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
