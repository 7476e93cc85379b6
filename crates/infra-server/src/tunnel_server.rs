//! The server end of connector tunnels: authenticate the connector,
//! register its destinations, push it the state it decides with, take in
//! its audit events, and hand its tunnel to the gateway.
//!
//! Each tunnel owns its tasks (the HTTP/2 connection, the snapshot pusher,
//! the readers of the control stream) on a tracker of its own, and has
//! ended only when they have. A tunnel ends when its connection does, when
//! it is closed (a revoked connector key, a control stream that broke, the
//! gateway giving up on it), or when the server closes its tunnels at
//! shutdown, after the clients it carried are done.

mod admit;
mod ingest;
pub(crate) mod snapshot;

use std::sync::Arc;

use hyper::client::conn::http2::SendRequest;
use infra_store::{connectors, now_ms};
use infra_tunnel::body::{LineSender, channel};
use infra_tunnel::control::{ControlSecret, HDR_CONTROL};
use infra_tunnel::proto::{ControlMsg, Hello, Snapshot};
use infra_tunnel::{Body, CONTROL_PATH, transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::admit::Admitted;
pub(crate) use self::admit::valid_direct_url;
use crate::hub::Tunnel;
use crate::state::AppState;

/// A replica that has not written its heartbeat for this long is not
/// offered to connectors.
pub(crate) const REPLICA_ALIVE_MS: i64 = 30_000;

/// Serves one connector connection (after TLS with the tunnel ALPN).
pub(crate) async fn serve<S>(state: AppState, io: S, source: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(admitted) = admit::admit(&state, io, &source).await else {
        return;
    };
    let name = admitted.hello.name.clone();
    let instance = admitted.hello.instance_id.clone();
    let tasks = TaskTracker::new();
    let destinations = run(&state, admitted, &source, &tasks).await;
    // Nothing the tunnel started outlives it.
    tasks.close();
    tasks.wait().await;
    if let Ok(mut c) = state.store.conn().await {
        let _ = connectors::instance_disconnected(&mut c, &instance, now_ms()).await;
    }
    if let Some(destinations) = destinations {
        update_tunnel_counts(&state, &destinations).await;
        tracing::info!(connector = %name, %source, "connector disconnected");
    }
}

/// Opens the tunnel, serves it until it ends, and takes it out of the hub;
/// returns the destinations it served (`None`: it never opened).
async fn run<S>(state: &AppState, a: Admitted<S>, source: &str, tasks: &TaskTracker) -> Option<Vec<String>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Admitted {
        io,
        hello,
        key_id,
        control_secret,
    } = a;
    let closed = CancellationToken::new();
    let io = infra_tunnel::cancel::Cancellable::new(io, closed.clone());
    let (send, conn) = match transport::open(io).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(connector = %hello.name, error = %e, "tunnel HTTP/2 handshake failed");
            return None;
        }
    };
    let tunnel = Arc::new(Tunnel {
        id: state.hub.next_id(),
        connector: hello.name.clone(),
        send,
        closed: closed.clone(),
    });
    let destinations: Vec<String> = hello.destinations.iter().map(|d| d.name.clone()).collect();
    tracing::info!(connector = %hello.name, %source, destinations = %destinations.join(","), "connector connected");

    let mut conn_task = tasks.spawn(conn);
    let control = match open_control(state, &tunnel.send, &hello, &control_secret).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(connector = %hello.name, error = %e, "control stream failed");
            conn_task.abort();
            return None;
        }
    };
    state.hub.add(&destinations, tunnel.clone());
    update_tunnel_counts(state, &destinations).await;

    let pusher = tasks.spawn(snapshot::push_changes(
        state.clone(),
        (hello.name.clone(), hello.destinations.clone()),
        key_id,
        control.tx.clone(),
        control.last,
        closed.clone(),
    ));
    let ingest = ingest::start(tasks, state.clone(), hello, control.body, control.tx, closed.clone());
    tokio::select! {
        _ = &mut conn_task => {}
        () = closed.cancelled() => {}
        () = state.tasks.close_tunnels.cancelled() => {}
    }
    // Dropping the connection closes the socket; the connector notices and
    // reconnects (or is refused, if its key was revoked).
    conn_task.abort();
    closed.cancel();
    pusher.abort();
    ingest.abort();
    state.hub.remove(tunnel.id);
    Some(destinations)
}

/// The open control stream: where snapshots go, what the connector sends
/// back, and the snapshot it has.
struct Control {
    tx: LineSender,
    body: hyper::body::Incoming,
    last: Snapshot,
}

/// Opens the control stream and pushes the first snapshot on it, so the
/// connector has its grants before any user request arrives. The stream
/// carries the tunnel's secret: the connector takes the first stream with
/// it as the control stream, and every other as a user's.
async fn open_control(
    state: &AppState,
    send: &SendRequest<Body>,
    hello: &Hello,
    secret: &ControlSecret,
) -> Result<Control, String> {
    let (tx, body) = channel(16);
    let control_req = http::Request::post(format!("http://connector{CONTROL_PATH}"))
        .header(HDR_CONTROL, secret.expose())
        .body(infra_tunnel::boxed(body));
    let mut sender = send.clone();
    let control = async {
        let req = control_req.map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(resp.into_body())
    };
    let snapshot = snapshot::build_snapshot(state, &hello.name, &hello.destinations).await;
    let push = match snapshot {
        Ok(s) => tx
            .send(&ControlMsg::Snapshot(s.clone()))
            .await
            .map(|()| s)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match (control.await, push) {
        (Ok(body), Ok(last)) => Ok(Control { tx, body, last }),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

async fn update_tunnel_counts(state: &AppState, destinations: &[String]) {
    if let Ok(mut c) = state.store.conn().await {
        for d in destinations {
            let n = i64::try_from(state.hub.count(d)).unwrap_or(0);
            let _ = connectors::set_tunnels(&mut c, d, n, now_ms()).await;
        }
    }
}

#[cfg(test)]
mod tests;
