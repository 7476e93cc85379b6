//! A stream the gateway or a connector would not open (any answer but the
//! upgrade), as the client at the far end is told. The one reading of a
//! refusal, for `infra proxy` and the server's PostgreSQL gateway alike.

use http::StatusCode;
use http_body_util::BodyExt;
use infra_proto_pg::{Fatal, SqlState};
use serde::Deserialize;

/// The most of a refusal's body that is read: its JSON error is small,
/// and whatever sent it is not trusted to keep it so.
const MAX_BODY: usize = 64 * 1024;

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The reason, for the user.
    pub message: String,
}

/// The part of an error body that is read: the server's
/// `infra_api::ErrorBody` and the connector's JSON errors both carry it.
#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

impl Refusal {
    /// From a status and its body: the body's JSON `message`, else a
    /// message naming the status.
    pub fn new(status: StatusCode, body: &[u8]) -> Self {
        let message = serde_json::from_slice::<ErrorMessage>(body)
            .ok()
            .map(|e| e.message)
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| format!("Infra refused the connection ({status})"));
        Self { status, message }
    }

    /// Reads a refusal from a response (at most [`MAX_BODY`] of its body).
    pub async fn read<B>(resp: http::Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: Into<crate::BoxError>,
    {
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Self::new(status, &body)
    }

    /// What a PostgreSQL client is told: a refused credential or grant
    /// (401, 403) is an invalid authorization (28000); anything else
    /// (no connector, an unreachable database) a connection failure
    /// (08006).
    pub fn to_pg(&self) -> Fatal {
        let code = match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SqlState::InvalidAuthorization,
            _ => SqlState::ConnectionFailure,
        };
        Fatal::new(code, self.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, body: &str, code: SqlState, message: &str) {
        let status = StatusCode::from_u16(status).unwrap();
        let f = Refusal::new(status, body.as_bytes()).to_pg();
        assert_eq!((f.code, f.message.as_str()), (code, message), "{status} {body}");
    }

    #[test]
    fn refusals_as_a_postgresql_client_sees_them() {
        use SqlState::{ConnectionFailure, InvalidAuthorization};
        check(
            403,
            r#"{"code":403,"message":"no grant on db"}"#,
            InvalidAuthorization,
            "no grant on db",
        );
        check(
            401,
            r#"{"code":401,"message":"token expired"}"#,
            InvalidAuthorization,
            "token expired",
        );
        check(
            503,
            r#"{"code":503,"message":"no connector is serving destination 'db' right now"}"#,
            ConnectionFailure,
            "no connector is serving destination 'db' right now",
        );
        // Not our JSON: the status speaks.
        check(
            502,
            "<html>bad gateway</html>",
            ConnectionFailure,
            "Infra refused the connection (502 Bad Gateway)",
        );
        check(
            403,
            r#"{"message":" "}"#,
            InvalidAuthorization,
            "Infra refused the connection (403 Forbidden)",
        );
    }

    #[tokio::test]
    async fn reads_a_bounded_body() {
        let json = r#"{"code":403,"message":"no grant on db"}"#;
        let resp = http::Response::builder()
            .status(403)
            .body(http_body_util::Full::new(bytes::Bytes::from(json)))
            .unwrap();
        assert_eq!(Refusal::read(resp).await.message, "no grant on db");
        let huge = format!(r#"{{"message":"{}"}}"#, "x".repeat(MAX_BODY));
        let resp = http::Response::builder()
            .status(403)
            .body(http_body_util::Full::new(bytes::Bytes::from(huge)))
            .unwrap();
        assert_eq!(
            Refusal::read(resp).await.message,
            "Infra refused the connection (403 Forbidden)"
        );
    }
}
