//! What a connector sends back on the control stream: its audit events,
//! stored in group commits with each event number once and acknowledged,
//! and what its destinations offer to grant.

use std::time::Duration;

use infra_store::connectors;
use infra_store::now_ms;
use infra_tunnel::body::{LineReader, LineSender};
use infra_tunnel::proto::{AccessEvent, ConnectorMsg, ControlMsg, Hello, Outcome};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit;
use crate::state::AppState;

/// How long audit events from a connector are gathered into one commit.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);
/// Audit events read and not yet stored, at most.
const QUEUE: usize = 4096;

/// Starts reading the connector's messages (`body`, the control stream's
/// response) and storing its audit events, both on the tunnel's `tasks`;
/// acknowledgements go out on `tx`. Returns the storing task.
pub(super) fn start(
    tasks: &TaskTracker,
    state: AppState,
    hello: Hello,
    body: hyper::body::Incoming,
    tx: LineSender,
    closed: CancellationToken,
) -> JoinHandle<()> {
    let (events, queue) = mpsc::channel::<AccessEvent>(QUEUE);
    tasks.spawn(read(state.clone(), hello.clone(), body, events, closed.clone()));
    tasks.spawn(store(state, hello, queue, tx, closed))
}

/// Reads the connector's messages until it ends the stream or the tunnel
/// closes; audit events go to `events`, inventories straight to the store.
async fn read(
    state: AppState,
    hello: Hello,
    body: hyper::body::Incoming,
    events: mpsc::Sender<AccessEvent>,
    closed: CancellationToken,
) {
    let mut lines = LineReader::new(body);
    loop {
        let msg = tokio::select! {
            m = lines.next::<ConnectorMsg>() => m,
            () = closed.cancelled() => return,
        };
        match msg {
            Ok(Some(ConnectorMsg::Audit(ev))) => {
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(Some(ConnectorMsg::Health { .. })) => {}
            Ok(Some(ConnectorMsg::Inventory(inv))) => {
                store_inventory(&state, &hello, inv).await;
            }
            Ok(None) | Err(_) => {
                closed.cancel();
                return;
            }
        }
    }
}

/// Stores audit events in batches, each number once, and acknowledges
/// them. A batch that cannot be stored closes the tunnel.
async fn store(
    state: AppState,
    hello: Hello,
    mut queue: mpsc::Receiver<AccessEvent>,
    tx: LineSender,
    closed: CancellationToken,
) {
    while let Some(first) = queue.recv().await {
        // Group commit: gather what arrives within a few milliseconds, so
        // a busy destination costs one transaction (and one fsync) per
        // window rather than per handful of requests.
        let mut batch = vec![first];
        let window = tokio::time::sleep(GROUP_COMMIT_WINDOW);
        tokio::pin!(window);
        while batch.len() < 1000 {
            tokio::select! {
                e = queue.recv() => match e {
                    Some(e) => batch.push(e),
                    None => break,
                },
                () = &mut window => break,
            }
        }
        match store_batch(&state, &hello, batch).await {
            Ok(Some(seq)) => {
                if tx.send(&ControlMsg::AuditAck { seq }).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // Not acknowledged: the connector keeps the events and
                // sends them again on its next tunnel.
                tracing::error!(connector = %hello.name, error = %e, "cannot store connector audit events; closing the tunnel");
                closed.cancel();
                return;
            }
        }
    }
}

async fn store_batch(state: &AppState, hello: &Hello, batch: Vec<AccessEvent>) -> Result<Option<i64>, String> {
    let r: Result<Option<i64>, crate::error::ApiError> = async {
        let mut tx = state.store.write().await?;
        let mut acked = connectors::audit_acked(tx.conn(), &hello.instance_id).await?;
        let mut events = Vec::with_capacity(batch.len());
        let mut foreign = 0usize;
        for ev in batch {
            if ev.seq <= acked {
                continue;
            }
            acked = ev.seq;
            // A connector speaks only for the destinations it serves: events
            // about others are not stored (they would forge another
            // connector's record), but their refusal is.
            let Some(kind) = hello
                .destinations
                .iter()
                .find(|d| d.name == ev.destination)
                .map(|d| d.kind.as_str())
            else {
                foreign += 1;
                continue;
            };
            let action = match ev.result {
                Outcome::Success | Outcome::Failure => "request",
                Outcome::Denied => "deny",
            };
            events.push(infra_store::NewAuditEvent {
                actor: ev.user,
                action: format!("{kind}.{action}"),
                target: ev.destination,
                source: ev.source,
                result: ev.result.as_str().into(),
                detail: ev.detail,
            });
        }
        if foreign > 0 {
            tracing::warn!(connector = %hello.name, events = foreign, "audit events for destinations this connector does not serve; refused");
            events.push(infra_store::NewAuditEvent {
                actor: format!("connector:{}", hello.name),
                action: "connector.audit_refused".into(),
                target: hello.name.clone(),
                source: String::new(),
                result: Outcome::Denied.as_str().into(),
                detail: format!("events={foreign} reason=destination not served by this connector"),
            });
        }
        if events.is_empty() {
            return Ok(Some(acked));
        }
        let rows = infra_store::audit::append_batch(tx.conn(), events, now_ms()).await?;
        connectors::set_audit_acked(tx.conn(), &hello.instance_id, acked).await?;
        tx.commit().await?;
        audit::emit_batch(rows);
        Ok(Some(acked))
    }
    .await;
    r.map_err(|e| e.message)
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
        connectors::set_inventory(&mut c, &inv.destination, &json).await
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(destination = %inv.destination, error = %e, "cannot store destination inventory");
    }
}
