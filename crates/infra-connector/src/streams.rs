//! Raw streams through the tunnel (`infra-tcp/1`), once admitted: a
//! PostgreSQL session the connector speaks itself, or SSH bytes relayed to
//! sshd.

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use infra_tunnel::proto::Outcome;
use infra_tunnel::{Body, HDR_UPGRADE};

use crate::admit::Admitted;
use crate::answer::json_error;

/// A PostgreSQL session: the client's bytes arrive as the request body and
/// leave as the response body; the session sees one duplex stream.
pub(crate) fn postgres(a: Admitted, req: Request<Incoming>, proto: HeaderValue) -> Response<Body> {
    let Some(session) = crate::pg_session::Session::new(&a) else {
        return json_error(500, "not a database");
    };
    let (client_side, session_side) = tokio::io::duplex(64 * 1024);
    let (rd, wr) = tokio::io::split(client_side);
    let tasks = a.state.tasks.clone();
    tasks.spawn(infra_tunnel::body::body_to_writer(req.into_body(), wr));
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    tasks.spawn(infra_tunnel::body::reader_to_channel(rd, tx));
    tasks.spawn(async move {
        session.serve(session_side).await;
        // The watch and the in-flight count end with the session.
        drop(a);
    });
    let mut r = Response::new(infra_tunnel::boxed(rx));
    r.headers_mut().insert(HDR_UPGRADE, proto);
    r
}

/// An SSH session: bytes relayed to the host's sshd.
pub(crate) async fn ssh(a: Admitted, req: Request<Incoming>, proto: HeaderValue) -> Response<Body> {
    let audit = a.audit.clone();
    let session = if a.route.recording.is_some() {
        crate::ssh_record::proxy::serve(a, req).await
    } else {
        crate::ssh_host::session(a, req).await
    };
    match session {
        Ok(mut r) => {
            r.headers_mut().insert(HDR_UPGRADE, proto);
            r
        }
        Err((status, message)) => {
            audit.record(Outcome::Failure, format!("session refused: {message}"));
            json_error(status, &message)
        }
    }
}
