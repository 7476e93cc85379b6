//! Health, the JWKS and OIDC discovery, so standard JWT consumers can
//! verify Infra tokens.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use infra_api::Health;

use crate::error::ApiResult;
use crate::signing;
use crate::state::AppState;

/// 200 when the server can reach its database and is not stopping (the
/// same as `/readyz`).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health), (status = 503, body = infra_api::ErrorBody)))]
pub(crate) async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    readyz(State(state)).await
}

/// Readiness: 200 when the server can reach its database and is not
/// stopping; 503 otherwise (take it out of the load balancer).
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = infra_api::ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    match readiness(&state).await {
        Ok(()) => Json(Health { status: "ok".into() }).into_response(),
        Err(why) => crate::error::ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Liveness: 200 while the process answers at all (a connector
/// reconnecting, or the database down, is not a reason to restart it).
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn livez() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Why the server is not ready, if it is not.
pub(crate) async fn readiness(state: &AppState) -> Result<(), &'static str> {
    if state.tasks.clients.is_closed() {
        return Err("stopping");
    }
    let ok = async {
        let mut c = state.store.conn().await.ok()?;
        sqlx_ping(&mut c).await
    }
    .await;
    ok.ok_or("database unreachable")
}

async fn sqlx_ping(c: &mut infra_store::Conn) -> Option<()> {
    infra_store::keys::setting(c, "bootstrapped").await.ok().map(|_| ())
}

/// The public keys that verify Infra tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens", responses((status = 200)))]
pub(crate) async fn jwks(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let mut set = signing::jwks(&state).await?;
    // The ES256 key of issuer tokens, for consumers without EdDSA.
    if state.settings.issuer_claims.es256 {
        set.keys.push(signing::issuer_es256(&state).await?.jwk());
    }
    Ok(([("cache-control", "public, max-age=60")], Json(set)))
}

/// OpenID Connect discovery metadata for the token issuer.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "tokens", responses((status = 200)))]
pub(crate) async fn discovery(State(state): State<AppState>) -> Json<serde_json::Value> {
    let iss = &state.settings.public_url;
    Json(serde_json::json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": if state.settings.issuer_claims.es256 { vec!["EdDSA", "ES256"] } else { vec!["EdDSA"] },
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "name", "email", "groups"],
    }))
}
