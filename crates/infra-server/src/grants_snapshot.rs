//! The grants part of a snapshot, shared by connectors' snapshots, the
//! server's forward-auth decisions and the admission webhook's view of what
//! workloads may reach.

use infra_store::connectors;
use infra_store::now_ms;
use infra_tunnel::proto::{GrantEntry, Snapshot};

use crate::state::AppState;

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
