//! What a connector sends back on the control stream: its audit events,
//! handed to the server's audit writer (`audit_intake`), and what its
//! destinations offer to grant.

use std::sync::Arc;

use infra_store::connectors;
use infra_tunnel::body::{LineReader, LineSender};
use infra_tunnel::proto::{ConnectorMsg, Hello, RecordingChunk};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit_intake::Source;
use crate::state::AppState;

/// Starts reading the connector's messages (`body`, the control stream's
/// response) on the tunnel's `tasks`: audit events go to the server's
/// writer, acknowledgements come back on `acks`. Returns the reader.
pub(super) fn start(
    tasks: &TaskTracker,
    state: AppState,
    hello: Hello,
    body: hyper::body::Incoming,
    acks: LineSender,
    closed: CancellationToken,
) -> JoinHandle<()> {
    let from = Arc::new(Source {
        hello,
        acks,
        closed: closed.clone(),
    });
    tasks.spawn(read(state, from, body, closed))
}

/// Reads the connector's messages until it ends the stream or the tunnel
/// closes; audit events go to the writer, inventories straight to the
/// store.
async fn read(state: AppState, from: Arc<Source>, body: hyper::body::Incoming, closed: CancellationToken) {
    let mut lines = LineReader::new(body);
    // Recording pieces are stored in order by a worker of this tunnel's, so
    // a slow recording store does not hold up audit events.
    let (pieces, mut queue) = tokio::sync::mpsc::channel::<RecordingChunk>(64);
    let (st, src) = (state.clone(), from.clone());
    let worker = tokio::spawn(async move {
        while let Some(chunk) = queue.recv().await {
            let ack = crate::recordings::take(&st, &src.hello, chunk).await;
            if src.acks.send(&ack).await.is_err() {
                return;
            }
        }
    });
    let _stop = AbortOnDrop(worker);
    loop {
        let msg = tokio::select! {
            m = lines.next::<ConnectorMsg>() => m,
            () = closed.cancelled() => return,
        };
        match msg {
            Ok(Some(ConnectorMsg::Audit(ev))) => {
                if !state.audit_intake.send(&from, ev).await {
                    return;
                }
            }
            Ok(Some(ConnectorMsg::Recording(chunk))) => {
                // Refused before it waits in the queue: the queue holds
                // pieces of a bounded size only.
                if chunk.data.len() > crate::recordings::MAX_PIECE {
                    let ack = infra_tunnel::proto::ControlMsg::RecordingAck {
                        id: chunk.id,
                        have: 0,
                        stored: false,
                        error: Some("a piece is at most 1 MiB".into()),
                    };
                    if from.acks.send(&ack).await.is_err() {
                        return;
                    }
                    continue;
                }
                if pieces.send(chunk).await.is_err() {
                    return;
                }
            }
            Ok(Some(ConnectorMsg::Health { .. })) => {}
            Ok(Some(ConnectorMsg::Inventory(inv))) => {
                store_inventory(&state, &from.hello, inv).await;
            }
            Ok(None) | Err(_) => {
                closed.cancel();
                return;
            }
        }
    }
}

/// Ends a tunnel's recording worker with its reader.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps what a connector says its destination offers to grant; only for
/// destinations that connector serves.
async fn store_inventory(state: &AppState, hello: &Hello, inv: infra_tunnel::proto::Inventory) {
    if !hello.destinations.iter().any(|d| d.name == inv.destination) {
        tracing::warn!(connector = %hello.name, destination = %inv.destination, "inventory for a destination this connector does not serve; ignored");
        return;
    }
    let Ok(json) = serde_json::to_string(&inv) else { return };
    let r: Result<(), infra_store::StoreError> = async {
        let mut c = state.store.conn().await?;
        connectors::set_inventory(&mut c, &inv.destination, &hello.name, &json).await
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(destination = %inv.destination, error = %e, "cannot store destination inventory");
    }
}
