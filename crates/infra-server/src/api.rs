//! The REST API: the routes and the OpenAPI document generated from the
//! handlers. What the handlers share lives below it (`extract`, `wire`,
//! `hashing`), so other front ends (`web`) use it without reaching up here.

pub(crate) mod audit_api;
pub(crate) mod destinations;
pub(crate) mod grants;
pub(crate) mod groups;
pub(crate) mod keys_api;
pub(crate) mod login;
pub(crate) mod provider_login;
pub(crate) mod providers;
pub(crate) mod recordings_api;
pub(crate) mod request_grants;
pub(crate) mod request_policies;
mod request_webhooks;
pub(crate) mod requests;
pub(crate) mod ssh_api;
pub(crate) mod tokens;
pub(crate) mod users;
mod wellknown;

pub(crate) use wellknown::readiness;
pub(crate) mod workload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{any, delete, get, post, put};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::extract::{MAX_BODY_BYTES, refuse_oversized};
use crate::forward_auth::http as fa;
use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/login", post(login::login))
        .route("/logout", post(login::logout))
        .route("/info", get(login::info))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{email}",
            get(users::get_one).put(users::update).delete(users::remove),
        )
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{name}", get(groups::get_one).delete(groups::remove))
        .route(
            "/groups/{name}/members/{email}",
            put(groups::add_member).delete(groups::remove_member),
        )
        .route("/grants", get(grants::list).post(grants::create))
        .route("/grants/{id}", delete(grants::remove))
        .route("/keys", get(keys_api::list).post(keys_api::create))
        .route("/keys/{id}", delete(keys_api::remove))
        .route("/tokens", post(tokens::issue))
        .route("/tokens/exchange", post(workload::exchange))
        .route("/workload-issuers", get(workload::list).post(workload::create))
        .route("/workload-issuers/{name}", delete(workload::remove))
        .route("/workloads/webhook-ca", get(workload::webhook_ca))
        .route("/signing-keys", get(tokens::list_signing_keys))
        .route("/signing-keys/rotate", post(tokens::rotate))
        .route("/providers", get(providers::list).post(providers::create))
        .route("/providers/{name}", delete(providers::remove))
        .route("/providers/{name}/authorize", post(provider_login::authorize))
        .route("/providers/{name}/device", post(provider_login::device))
        .route("/ssh/ca", get(ssh_api::user_ca))
        .route("/ssh/host-ca", get(ssh_api::host_ca))
        .route("/ssh/ca/rotate", post(ssh_api::rotate))
        .route("/ssh/certificates", post(ssh_api::issue))
        .route("/destinations", get(destinations::list).post(destinations::create))
        .route(
            "/destinations/{name}",
            get(destinations::get_one).delete(destinations::remove),
        )
        .route("/destinations/{name}/access", get(destinations::access))
        .route("/connectors", get(destinations::connectors_list))
        .route("/connectors/jwks", get(destinations::assertion_keys))
        .route("/connectors/{name}/jwks", get(destinations::connector_assertion_keys))
        .route("/audit", get(audit_api::list))
        .route("/recordings", get(recordings_api::list))
        .route("/recordings/{id}", get(recordings_api::get_one))
        .route("/recordings/{id}/cast", get(recordings_api::cast))
        .route(
            "/access-policies",
            get(request_policies::list).post(request_policies::create),
        )
        .route("/access-policies/{name}", delete(request_policies::remove))
        .route(
            "/request-webhooks",
            get(request_webhooks::list).post(request_webhooks::create),
        )
        .route("/request-webhooks/{name}", delete(request_webhooks::remove))
        .route("/requests", get(requests::list).post(requests::create))
        .route("/requests/{id}", get(requests::get_one))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/deny", post(requests::deny))
        .route("/requests/{id}/cancel", post(requests::cancel))
        .route("/forward-auth", any(fa::forward_auth))
        .route(fa::EXT_AUTHZ_SUBPATH, any(fa::ext_authz))
        .route(&format!("{}/{{*path}}", fa::EXT_AUTHZ_SUBPATH), any(fa::ext_authz))
        .route("/audit/verify", get(audit_api::verify))
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", "application/json")], openapi_json()) }),
        )
        .fallback(|| async { ApiError::not_found("no such API endpoint; see /api/openapi.json") });
    Router::new()
        .nest("/api", api)
        .route("/healthz", get(wellknown::healthz))
        .route("/livez", get(wellknown::livez))
        .route("/readyz", get(wellknown::readyz))
        .route("/login", get(crate::web::login_page).post(crate::web::login_submit))
        .route("/login/done", get(crate::web::login_done))
        .route("/oidc/start/{name}", get(crate::web::oidc_start))
        .route("/oidc/callback", get(crate::web::oidc_callback))
        .route("/authorize", get(crate::web::authorize))
        .route(infra_tunnel::credential::CALLBACK_PATH, get(fa::callback))
        .route_service(
            crate::forward_auth::grpc::CHECK_PATH,
            crate::forward_auth::grpc::service(state.clone()),
        )
        .merge(crate::console::routes())
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/.well-known/openid-configuration", get(wellknown::discovery))
        .route_layer(axum::middleware::from_fn(crate::metrics::track_api))
        .fallback(|| async { ApiError::not_found("not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed for this endpoint; see /api/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gateway::route,
        ))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Infra API", description = "Identity-aware access to Kubernetes, PostgreSQL, SSH and HTTP services. Authenticate with `Authorization: Bearer <access key>` (from `POST /api/login` or `infra keys add`). Errors are `{\"code\": <status>, \"message\": \"...\"}`."),
    paths(
        login::login, login::logout, login::info,
        users::list, users::create, users::get_one, users::update, users::remove,
        groups::list, groups::get_one, groups::create, groups::remove, groups::add_member, groups::remove_member,
        grants::list, grants::create, grants::remove,
        keys_api::list, keys_api::create, keys_api::remove,
        tokens::issue, tokens::list_signing_keys, tokens::rotate,
        audit_api::list, audit_api::verify,
        recordings_api::list, recordings_api::get_one, recordings_api::cast,
        request_policies::list, request_policies::create, request_policies::remove,
        request_webhooks::list, request_webhooks::create, request_webhooks::remove,
        requests::create, requests::list, requests::get_one, requests::approve, requests::deny, requests::cancel,
        destinations::list, destinations::create, destinations::remove, destinations::access, destinations::connectors_list, destinations::get_one, fa::forward_auth, destinations::assertion_keys, destinations::connector_assertion_keys,
        ssh_api::user_ca, ssh_api::host_ca, ssh_api::rotate, ssh_api::issue,
        providers::create, providers::list, providers::remove, provider_login::authorize, provider_login::device,
        workload::create, workload::list, workload::remove, workload::exchange, workload::webhook_ca,
        wellknown::healthz, wellknown::livez, wellknown::readyz, wellknown::jwks, wellknown::discovery,
    ),
    components(schemas(infra_api::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "accessKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".into())
}
