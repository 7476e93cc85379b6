//! What a connector decides with: the snapshot (signing keys, grants for
//! its destinations, memberships, revoked sessions, SSH material), pushed
//! on the control stream at start and whenever it changes.

use std::time::Duration;

use infra_store::connectors;
use infra_store::{keys, now_ms};
use infra_tunnel::body::LineSender;
use infra_tunnel::proto::{ControlMsg, DestinationInfo, GrantEntry, Snapshot};
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
    let snapshot = grants_snapshot(state, &destinations)
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

/// What any decision about `destinations` reads: the signing keys, their
/// grants, the memberships of the groups in them, and the sessions ended
/// recently. A connector's snapshot, and the server's own forward-auth
/// decisions.
pub(crate) async fn grants_snapshot(
    state: &AppState,
    destinations: &[String],
) -> Result<Snapshot, infra_store::StoreError> {
    let jwks = crate::signing::jwks(state)
        .await
        .map_err(|_| infra_store::StoreError::Random)?;
    let mut c = state.store.conn().await?;
    let now = now_ms();
    let grants = connectors::grants_for(&mut c, destinations, now).await?;
    let mut groups: Vec<String> = grants
        .iter()
        .filter(|g| g.subject_kind == infra_core::SubjectKind::Group)
        .map(|g| g.subject_id.clone())
        .collect();
    groups.sort();
    groups.dedup();
    let memberships = connectors::memberships(&mut c, &groups).await?;
    let since = now - crate::signing::retention_ms(state);
    let revoked_sessions = connectors::revoked_sessions(&mut c, since).await?;
    Ok(Snapshot {
        jwks,
        grants: grants
            .into_iter()
            .map(|g| GrantEntry {
                subject_kind: g.subject_kind,
                subject_id: g.subject_id,
                subject_name: g.subject_name,
                role: g.role,
                resource: g.resource,
                expires_at: g.expires_at,
            })
            .collect(),
        memberships,
        revoked_sessions,
        ssh: Default::default(),
        workloads: None,
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
