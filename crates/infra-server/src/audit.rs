//! Recording audit events: durably in the store, in the same transaction as
//! the change they describe, then as a JSON line on stdout.
//!
//! Below the API: failures are the store's, and callers decide what a
//! client hears of them.

use infra_store::{AuditRow, NewAuditEvent, StoreError, WriteTx, now_ms};

use crate::state::AppState;

/// Who did what, before it is numbered and chained.
pub(crate) struct Event {
    pub(crate) actor: String,
    pub(crate) action: &'static str,
    pub(crate) target: String,
    pub(crate) source: String,
    pub(crate) result: &'static str,
    pub(crate) detail: String,
}

impl Event {
    pub(crate) fn new(actor: &str, action: &'static str, target: &str, source: &str) -> Self {
        Self {
            actor: actor.into(),
            action,
            target: target.into(),
            source: source.into(),
            result: "success",
            detail: String::new(),
        }
    }

    pub(crate) fn result(mut self, r: &'static str) -> Self {
        self.result = r;
        self
    }

    pub(crate) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }
}

/// Appends `ev` inside `tx`. The caller commits, then calls [`emit`].
pub(crate) async fn append(tx: &mut WriteTx, ev: Event) -> Result<AuditRow, StoreError> {
    let new = NewAuditEvent {
        actor: ev.actor,
        action: ev.action.into(),
        target: ev.target,
        source: ev.source,
        result: ev.result.into(),
        detail: ev.detail,
    };
    // Every write through the API moves the marker other replicas watch
    // (a login may bring the user's groups from a provider): only the
    // audit writer's events (proxied requests, decisions) leave it be.
    infra_store::connectors::bump_change_marker(tx.conn()).await?;
    infra_store::audit::append(tx.conn(), new, now_ms()).await
}

/// Whether a write audited as `action` is worth telling this replica's
/// connectors about at once (others hear of it through the marker within
/// 250 ms).
fn moves_decisions(action: &str) -> bool {
    !matches!(
        action,
        "login" | "token.issue" | "authz.deny" | "http.request" | "http.deny" | "ssh.certificate"
    )
}

/// Appends `ev` as the last step of `tx`, commits, and emits it: the
/// common end of every API call that changes state.
pub(crate) async fn commit(state: &AppState, tx: WriteTx, ev: Event) -> Result<(), StoreError> {
    commit_all(state, tx, vec![ev]).await
}

/// The same for several events of one change, in order.
pub(crate) async fn commit_all(state: &AppState, mut tx: WriteTx, events: Vec<Event>) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(events.len());
    for ev in events {
        rows.push(append(&mut tx, ev).await?);
    }
    tx.commit().await?;
    for r in &rows {
        emit(state, r);
    }
    Ok(())
}

/// After commit: writes the event to stdout as one JSON line and, when
/// it changed something connectors decide with, tells them.
pub(crate) fn emit(state: &AppState, row: &AuditRow) {
    emit_quiet(row);
    if moves_decisions(&row.action) {
        state.hub.changed();
    }
}

/// Writes the event to stdout as one JSON line.
pub(crate) fn emit_quiet(row: &AuditRow) {
    crate::metrics::audited(&row.action, &row.result, &row.detail);
    crate::audit_out::print(std::slice::from_ref(row));
}

/// Records a stand-alone event (a denial, a failed login) in its own
/// transaction.
pub(crate) async fn record(state: &AppState, ev: Event) -> Result<(), StoreError> {
    let mut tx = state.store.write().await?;
    let row = append(&mut tx, ev).await?;
    tx.commit().await?;
    emit(state, &row);
    Ok(())
}
