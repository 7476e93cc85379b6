//! The observability listener (`--metrics-listen`): `/metrics` in the
//! Prometheus text format, `/livez` and `/readyz`, over plain HTTP/1.1 on
//! an address of the operator's choosing, apart from the public port.

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Binds `addr` now (so a busy port fails the start) and serves it until
/// `shutdown`.
pub(super) async fn start(state: &AppState, addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen for metrics on {addr} (--metrics-listen)"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics, liveness and readiness listening (plain HTTP)");
    let st = state.clone();
    state.tasks.background.spawn(async move {
        loop {
            let tcp = tokio::select! {
                r = listener.accept() => match r { Ok((tcp, _)) => tcp, Err(_) => continue },
                () = shutdown.cancelled() => return,
            };
            let (state, shutdown) = (st.clone(), shutdown.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&state, req.uri().path()).await) }
                });
                let conn =
                    hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
                // A scraper's keep-alive connection must not hold up the stop.
                tokio::select! {
                    _ = conn => {}
                    () = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(())
}

async fn answer(state: &AppState, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            200,
            infra_metrics::CONTENT_TYPE,
            crate::metrics::render(state.audit_intake.depth()),
        ),
        "/livez" => (200, "application/json", r#"{"status":"ok"}"#.to_owned()),
        "/readyz" => match crate::api::readiness(state).await {
            Ok(()) => (200, "application/json", r#"{"status":"ok"}"#.to_owned()),
            Err(why) => (503, "application/json", format!(r#"{{"status":"{why}"}}"#)),
        },
        _ => (
            404,
            "application/json",
            r#"{"code":404,"message":"not found: /metrics, /livez, /readyz"}"#.to_owned(),
        ),
    };
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
