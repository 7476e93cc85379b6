//! Receivers of request events (delivered by `request_events.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{CreateRequestWebhook, RequestWebhook};
use infra_core::InfraRole;
use infra_store::now_ms;
use infra_store::requests::{self, WebhookRow};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;
use crate::wire::time;

/// A receiver as the API shows it: its whole URL only to admins (a
/// Slack webhook's URL is itself a credential).
fn to_api(w: &WebhookRow, secret: Option<String>, admin: bool) -> RequestWebhook {
    RequestWebhook {
        name: w.name.clone(),
        url: if admin {
            w.url.clone()
        } else {
            crate::request_events::url_host(&w.url)
        },
        format: w.format.clone(),
        delivered_up_to: w.last_seq,
        failures: u32::try_from(w.failures).unwrap_or(u32::MAX),
        last_error: w.last_error.clone(),
        created: time(w.created_at),
        secret,
    }
}

/// List the receivers of request events, with how far each has got.
#[utoipa::path(get, path = "/api/request-webhooks", tag = "requests",
    responses((status = 200, body = Vec<RequestWebhook>)), security(("accessKey" = [])))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<RequestWebhook>>> {
    caller
        .require(&state, InfraRole::View, "list request webhooks", "request-webhooks")
        .await?;
    let admin = caller.role == Some(InfraRole::Admin);
    let mut c = state.store.conn().await?;
    Ok(Json(
        requests::webhooks(&mut c)
            .await?
            .iter()
            .map(|w| to_api(w, None, admin))
            .collect(),
    ))
}

/// Add a receiver: it gets every request event from now on, signed with
/// the secret in the answer (shown once).
#[utoipa::path(post, path = "/api/request-webhooks", tag = "requests", request_body = CreateRequestWebhook,
    responses((status = 201, body = RequestWebhook), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateRequestWebhook>,
) -> ApiResult<(StatusCode, Json<RequestWebhook>)> {
    caller
        .require(&state, InfraRole::Admin, "add request webhooks", &req.name)
        .await?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
        return Err(ApiError::bad_request(
            "a webhook's name is 1 to 64 letters, digits, - or _",
        ));
    }
    if !(req.url.starts_with("https://") || req.url.starts_with("http://")) || reqwest::Url::parse(&req.url).is_err() {
        return Err(ApiError::bad_request(
            "the URL must be https://… (or http://… on a trusted network)",
        ));
    }
    let format = match req.format.as_deref().unwrap_or("json") {
        f @ ("json" | "slack") => f.to_owned(),
        _ => return Err(ApiError::bad_request("format is json or slack")),
    };
    let secret = infra_auth::random_token(32).map_err(ApiError::internal)?;
    let sealed = infra_auth::envelope::seal(
        &state.root_key,
        &crate::request_events::secret_context(name),
        secret.as_bytes(),
    )
    .map_err(ApiError::internal)?;
    let mut tx = state.store.write().await?;
    let (head, _) = infra_store::audit::head(tx.conn()).await?;
    let row = WebhookRow {
        name: name.to_owned(),
        url: req.url.clone(),
        secret_sealed: sealed,
        format,
        last_seq: head,
        failures: 0,
        next_at: 0,
        last_error: None,
        created_at: now_ms(),
    };
    match requests::put_webhook(tx.conn(), &row).await {
        Ok(()) => {}
        Err(infra_store::StoreError::Conflict) => {
            return Err(ApiError::conflict(format!(
                "a request webhook named {name} exists already"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let ev = caller.event("request-webhook.create", name).detail(format!(
        "url={} format={}",
        crate::request_events::url_host(&row.url),
        row.format
    ));
    audit::commit(&state, tx, ev).await?;
    Ok((StatusCode::CREATED, Json(to_api(&row, Some(secret), true))))
}

/// Remove a receiver.
#[utoipa::path(delete, path = "/api/request-webhooks/{name}", tag = "requests", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove request webhooks", &name)
        .await?;
    let mut tx = state.store.write().await?;
    if !requests::delete_webhook(tx.conn(), &name).await? {
        return Err(ApiError::not_found(
            "no such request webhook; see 'infra request-webhooks list'",
        ));
    }
    audit::commit(&state, tx, caller.event("request-webhook.delete", &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
