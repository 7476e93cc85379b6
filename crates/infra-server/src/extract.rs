//! What the API reads from a request: the body size limit, and the JSON
//! body and query extractors that turn every malformed input into a JSON
//! 4xx naming the problem.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Requests larger than this are refused with 413: nothing in the API
/// needs more, and it bounds memory per request.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

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
pub(crate) async fn refuse_oversized(req: Request, next: axum::middleware::Next) -> axum::response::Response {
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
