//! What a connector decides with: the snapshot (signing keys, grants for
//! its destinations, memberships, revoked sessions, SSH material), pushed
//! on the control stream at start and whenever it changes.

use std::time::Duration;

use infra_store::{keys, now_ms};
use infra_tunnel::body::LineSender;
use infra_tunnel::proto::{ControlMsg, DestinationInfo, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Re-sends state at least this often, even without changes, so a
/// connector also notices grants that expired by time.
const REFRESH: Duration = Duration::from_secs(30);

/// The state a connector for `destinations` needs.
pub(super) async fn build_snapshot(
    state: &AppState,
    connector: &str,
    infos: &[DestinationInfo],
) -> Result<Snapshot, String> {
    let destinations: Vec<String> = infos.iter().map(|d| d.name.clone()).collect();
    let ssh = crate::ssh::material(state, connector, infos)
        .await
        .map_err(|e| format!("build SSH material: {}", e.message))?;
    let snapshot = crate::grants_snapshot::grants_snapshot(state, &destinations)
        .await
        .map_err(|e| format!("build grants snapshot: {e}"))?;
    let workloads = crate::workloads::material(state, connector, infos)
        .await
        .map_err(|e| format!("build workloads: {e}"))?;
    Ok(Snapshot {
        ssh,
        workloads,
        ..snapshot
    })
}

/// Pushes a new snapshot whenever something changed; closes the tunnel if
/// the connector's own key is revoked.
pub(super) async fn push_changes(
    state: AppState,
    (connector, destinations): (String, Vec<DestinationInfo>),
    key_id: String,
    tx: LineSender,
    mut last: Snapshot,
    closed: CancellationToken,
) {
    let mut changes = state.hub.subscribe();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(REFRESH) => {}
            () = closed.cancelled() => return,
        }
        let woke = std::time::Instant::now();
        let key_ok = match state.store.conn().await {
            Ok(mut c) => {
                matches!(keys::key_by_id(&mut c, &key_id).await, Ok(Some(k)) if k.expires_at.is_none_or(|e| e > now_ms()))
            }
            Err(_) => true,
        };
        if !key_ok {
            tracing::warn!(key = %key_id, "connector key revoked: closing its tunnel");
            closed.cancel();
            return;
        }
        match build_snapshot(&state, &connector, &destinations).await {
            Ok(s) if s != last => {
                if tx.send(&ControlMsg::Snapshot(s.clone())).await.is_err() {
                    closed.cancel();
                    return;
                }
                last = s;
                crate::metrics::METRICS
                    .snapshot_push_lag
                    .observe(woke.elapsed().as_secs_f64());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot build snapshot"),
        }
    }
}
