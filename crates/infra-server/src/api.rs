//! The REST API: routes, request extractors that turn every malformed input
//! into a JSON 4xx, and the OpenAPI document generated from the handlers.

mod audit_api;
mod destinations;
mod grants;
mod groups;
mod keys_api;
pub(crate) mod login;
pub(crate) mod providers;
mod ssh_api;
pub(crate) mod tokens;
mod users;
mod wellknown;
mod workload;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use infra_api::{DEFAULT_LIMIT, MAX_LIMIT};
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::state::AppState;

/// Requests larger than this are refused with 413: nothing in the API
/// needs more, and it bounds memory per request.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

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
        .route("/groups/{name}", delete(groups::remove))
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
        .route("/signing-keys", get(tokens::list_signing_keys))
        .route("/signing-keys/rotate", post(tokens::rotate))
        .route("/providers", get(providers::list).post(providers::create))
        .route("/providers/{name}", delete(providers::remove))
        .route("/providers/{name}/authorize", post(providers::authorize))
        .route("/providers/{name}/device", post(providers::device))
        .route("/ssh/ca", get(ssh_api::user_ca))
        .route("/ssh/host-ca", get(ssh_api::host_ca))
        .route("/ssh/ca/rotate", post(ssh_api::rotate))
        .route("/ssh/certificates", post(ssh_api::issue))
        .route("/destinations", get(destinations::list))
        .route("/destinations/{name}", delete(destinations::remove))
        .route("/connectors/jwks", get(destinations::assertion_keys))
        .route("/connectors/{name}/jwks", get(destinations::connector_assertion_keys))
        .route("/audit", get(audit_api::list))
        .route("/audit/verify", get(audit_api::verify))
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", "application/json")], openapi_json()) }),
        )
        .fallback(|| async { ApiError::not_found("no such API endpoint; see /api/openapi.json") });
    Router::new()
        .nest("/api", api)
        .route("/healthz", get(wellknown::healthz))
        .route("/login", get(crate::web::login_page).post(crate::web::login_submit))
        .route("/login/done", get(crate::web::login_done))
        .route("/oidc/start/{name}", get(crate::web::oidc_start))
        .route("/oidc/callback", get(crate::web::oidc_callback))
        .route("/authorize", get(crate::web::authorize))
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/.well-known/openid-configuration", get(wellknown::discovery))
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

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large: at most {MAX_BODY_BYTES} bytes"),
    )
}

/// Most of an oversized body read and dropped before the 413, and for how
/// long at most.
const DRAIN_MAX: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A body announced larger than the limit gets a readable 413: the rest of
/// it is read and dropped first (within bounds), then the connection
/// closes. Closing at once while the client is still sending would make the
/// kernel reset the connection, and the client would see that instead of
/// the answer.
async fn refuse_oversized(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= MAX_BODY_BYTES as u64) {
        return next.run(req).await;
    }
    let mut body = req.into_body();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
    let mut r = too_large().into_response();
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// A JSON body whose every rejection is a JSON error naming the problem.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let status = e.status();
    let msg = match &e {
        JsonRejection::MissingJsonContentType(_) => "send the body as JSON with Content-Type: application/json".into(),
        JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", e.body_text()),
        JsonRejection::JsonDataError(_) => format!("invalid request body: {}", e.body_text()),
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => too_large().message,
        _ => e.body_text(),
    };
    // Data errors are client errors too; keep the status axum chose (400,
    // 413, 415 or 422).
    ApiError::new(status, msg)
}

/// Query parameters; unknown or malformed ones are a 400 naming them.
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
}

/// Runs a password hash or check (argon2, ~19 MiB and tens of ms each) on
/// the blocking pool, at most one per core at a time: a flood of logins
/// queues instead of taking all memory.
pub(crate) async fn argon<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

/// Page and limit with defaults and bounds.
pub(crate) fn paging(page: Option<u32>, limit: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    Ok((page, limit))
}

pub(crate) fn page_of<T>(items: Vec<T>, page: u32, limit: u32, total: u64) -> Json<infra_api::Page<T>> {
    Json(infra_api::Page {
        items,
        page,
        limit,
        total_count: total,
    })
}

/// RFC 3339 time from unix milliseconds.
pub(crate) fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Infra API", description = "Identity-aware access to Kubernetes, PostgreSQL, SSH and HTTP services. Authenticate with `Authorization: Bearer <access key>` (from `POST /api/login` or `infra keys add`). Errors are `{\"code\": <status>, \"message\": \"...\"}`."),
    paths(
        login::login, login::logout, login::info,
        users::list, users::create, users::get_one, users::update, users::remove,
        groups::list, groups::create, groups::remove, groups::add_member, groups::remove_member,
        grants::list, grants::create, grants::remove,
        keys_api::list, keys_api::create, keys_api::remove,
        tokens::issue, tokens::list_signing_keys, tokens::rotate,
        audit_api::list, audit_api::verify,
        destinations::list, destinations::remove, destinations::assertion_keys, destinations::connector_assertion_keys,
        ssh_api::user_ca, ssh_api::host_ca, ssh_api::rotate, ssh_api::issue,
        providers::create, providers::list, providers::remove, providers::authorize, providers::device,
        workload::create, workload::list, workload::remove, workload::exchange,
        wellknown::healthz, wellknown::jwks, wellknown::discovery,
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
