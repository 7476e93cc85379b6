//! Short-lived tokens for destinations, and signing key rotation.

use axum::Json;
use axum::extract::State;
use infra_api::{SigningKeyInfo, TokenRequest, TokenResponse};
use infra_auth::jwt::Claims;
use infra_core::{InfraRole, Resource};
use infra_store::{identity, keys, now_ms};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::signing;
use crate::state::AppState;
use crate::wire::{ms, time};

/// Issue a token for a destination (`aud` = its name) the caller has a
/// grant on, or for Infra's own audience (the server URL) without one.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 403, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    match (&req.destination, &req.audience) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give destination or audience, not both")),
        (None, Some(aud)) => Ok(Json(for_audience(&state, &caller, aud).await?)),
        _ => Ok(Json(mint(&state, &caller, req.destination.as_deref(), None).await?)),
    }
}

/// Infra as an issuer: a token for another system (`aud` as asked), with
/// the claims the server's issuer settings map, verifiable with the
/// discovery document and JWKS by any standard consumer.
///
/// The audience may not look like a destination name, so such a token can
/// never be taken for a destination token by a connector.
async fn for_audience(state: &AppState, caller: &Caller, aud: &str) -> ApiResult<TokenResponse> {
    if aud.is_empty() || aud.len() > 512 || aud.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request("audience: 1 to 512 characters, no spaces"));
    }
    if aud
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || aud == state.settings.public_url
    {
        return Err(ApiError::bad_request(format!(
            "audience {aud:?} could be taken for an Infra destination or Infra itself: use a URL or a dotted name such as sts.example.com"
        )));
    }
    let key = signing::active(state).await?;
    let now = now_ms() / 1000;
    let exp = now + ms(state.settings.token_ttl) / 1000;
    let jti = infra_auth::random_token(20).map_err(ApiError::internal)?;
    let mut claims = serde_json::json!({
        "iss": state.settings.public_url,
        "sub": caller.user.id,
        "aud": aud,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "jti": jti,
        "name": caller.user.email,
    });
    let ic = &state.settings.issuer_claims;
    if !ic.email.is_empty() {
        claims[&ic.email] = caller.user.email.clone().into();
    }
    if !ic.groups.is_empty() {
        claims[&ic.groups] = caller.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>().into();
    }
    for (k, v) in &ic.extra {
        claims[k] = v.clone().into();
    }
    let (token, kid) = if state.settings.issuer_claims.es256 {
        let es = signing::issuer_es256(state).await?;
        (es.sign_value(&claims).map_err(ApiError::internal)?, es.kid)
    } else {
        (key.sign_value(&claims).map_err(ApiError::internal)?, key.kid)
    };
    let ev = caller
        .event("token.issue", aud)
        .detail(format!("issuer token jti={jti} kid={kid} exp={exp}"));
    audit::record(state, ev).await?;
    Ok(TokenResponse {
        token,
        expires: time(exp * 1000),
    })
}

/// Signs a token for `destination` (or Infra's own audience) if the caller
/// has a grant on it; audits the issuance or the refusal.
/// A token for `destination` (or the server's audience) as `caller`;
/// `actor` is the workload a token exchange was for (the `act` claim).
pub(crate) async fn mint(
    state: &AppState,
    caller: &Caller,
    destination: Option<&str>,
    actor: Option<&str>,
) -> ApiResult<TokenResponse> {
    let now = now_ms();
    let aud = match destination {
        Some(d) => {
            let dest = Resource::parse(d)?;
            let mut c = state.store.conn().await?;
            let granted = identity::has_grant_on_destination(&mut c, &caller.user.id, dest.destination(), now).await?;
            drop(c);
            if !granted {
                let ev = caller
                    .event("token.issue", dest.as_str())
                    .result("denied")
                    .detail("no grant on this destination");
                audit::record(state, ev).await?;
                return Err(ApiError::forbidden(format!(
                    "you have no grant on {dest}; see 'infra list', or ask an admin: infra grants add {} {dest} --role ROLE",
                    caller.email()
                )));
            }
            dest.destination().to_owned()
        }
        None => state.settings.public_url.clone(),
    };
    let key = signing::active(state).await?;
    let secs = now / 1000;
    // Never past the key it was minted with (a workload's exchanged key
    // lives no longer than the platform's token).
    let exp = (secs + ms(state.settings.token_ttl) / 1000).min(caller.key_expires.map_or(i64::MAX, |e| e / 1000));
    let jti = infra_auth::random_token(20).map_err(ApiError::internal)?;
    let claims = Claims {
        iss: state.settings.public_url.clone(),
        sub: caller.user.id.clone(),
        aud: aud.clone(),
        exp,
        iat: secs,
        nbf: secs,
        jti: jti.clone(),
        name: caller.user.email.clone(),
        email: Some(caller.user.email.clone()),
        groups: caller.groups.iter().map(|g| g.name.clone()).collect(),
        sid: Some(caller.key_id.clone()),
        act: actor.map(|a| infra_auth::jwt::Actor { sub: a.to_owned() }),
    };
    let token = key.sign(&claims).map_err(ApiError::internal)?;
    let ev = caller
        .event("token.issue", &aud)
        .detail(format!("jti={jti} kid={} exp={exp}", key.kid));
    audit::record(state, ev).await?;
    Ok(TokenResponse {
        token,
        expires: time(exp * 1000),
    })
}

/// List signing keys (public information only).
#[utoipa::path(get, path = "/api/signing-keys", tag = "tokens",
    responses((status = 200, body = Vec<SigningKeyInfo>)), security(("accessKey" = [])))]
pub(crate) async fn list_signing_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SigningKeyInfo>>> {
    caller
        .require(&state, InfraRole::View, "list signing keys", "signing-keys")
        .await?;
    let mut c = state.store.conn().await?;
    let rows = keys::signing_keys(&mut c).await?;
    Ok(Json(
        rows.iter()
            .map(|r| SigningKeyInfo {
                kid: r.kid.clone(),
                created: time(r.created_at),
                active: r.retired_at.is_none(),
                retired: r.retired_at.map(time),
            })
            .collect(),
    ))
}

/// Rotate: a new key signs from now on; the old one stays published until
/// every token it signed has expired.
#[utoipa::path(post, path = "/api/signing-keys/rotate", tag = "tokens",
    responses((status = 200, body = SigningKeyInfo)), security(("accessKey" = [])))]
pub(crate) async fn rotate(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<SigningKeyInfo>> {
    caller
        .require(&state, InfraRole::Admin, "rotate signing keys", "signing-keys")
        .await?;
    let now = now_ms();
    let mut tx = state.store.write().await?;
    keys::prune_signing_keys(tx.conn(), now - signing::retention_ms(&state)).await?;
    keys::retire_signing_keys(tx.conn(), now).await?;
    let key = signing::create(tx.conn(), &state).await?;
    audit::commit(&state, tx, caller.event("signing-key.rotate", &key.kid)).await?;
    Ok(Json(SigningKeyInfo {
        kid: key.kid,
        created: time(now),
        active: true,
        retired: None,
    }))
}
