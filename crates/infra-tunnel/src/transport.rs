//! HTTP/2 over the handshaken connection, roles turned round.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Body;

/// PINGs while idle so a dead peer (or a NAT that dropped the mapping) is
/// noticed within interval + timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-stream and per-connection windows: large enough for bulk transfers
/// at loopback speed, bounded so one stream cannot buffer without limit.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONN_WINDOW: u32 = 16 * 1024 * 1024;

/// Server side: the HTTP/2 client that opens streams to the connector. The
/// returned future drives the connection and ends when it closes.
pub async fn open<S>(
    io: S,
) -> Result<
    (
        SendRequest<Body>,
        impl std::future::Future<Output = Result<(), hyper::Error>>,
    ),
    hyper::Error,
>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake(TokioIo::new(io))
        .await
}

/// Connector side: answers the server's streams with `service` until the
/// connection closes. When `drain` fires, sends GOAWAY (the server stops
/// opening streams here and sends new requests elsewhere), lets streams in
/// flight finish until `idle()` says none is left or `grace` is over (the
/// long-lived control stream does not count), then returns.
pub async fn serve<S, F, Fut>(
    io: S,
    service: F,
    drain: tokio_util::sync::CancellationToken,
    idle: impl Fn() -> bool,
    grace: Duration,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<Incoming>) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_concurrent_streams(4096)
        .serve_connection(TokioIo::new(io), hyper::service::service_fn(service));
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => return r,
        () = drain.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        tokio::select! {
            r = &mut conn => return r,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if idle() || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
    }
}
