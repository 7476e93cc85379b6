//! Recording retention: the oldest recordings go first, those past the
//! age limit and then as many as the total size limit needs; each
//! deletion is an audit event, written before the recording is removed
//! from the store (a crash in between leaves a recording no one lists,
//! never a listed one that is gone).

use infra_record::retention::{Stored, Why, to_delete};
use infra_store::recordings as rec;
use infra_store::{NewAuditEvent, now_ms};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the age limit is applied; the size limit is also applied
/// whenever a recording is stored.
const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) async fn run(state: AppState, stop: CancellationToken) {
    loop {
        if let Err(e) = apply(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "recording retention failed; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Deletes what the limits say, now.
pub(crate) async fn apply(state: &AppState) -> anyhow::Result<()> {
    let limits = state.settings.recordings_limits;
    if limits.max_age_ms.is_none() && limits.max_total_bytes.is_none() {
        return Ok(());
    }
    let mut c = state.store.conn().await?;
    let all: Vec<Stored> = rec::retention_view(&mut c)
        .await?
        .into_iter()
        .map(|(id, started_ms, size, open)| Stored {
            id,
            started_ms,
            bytes: u64::try_from(size).unwrap_or(0),
            open,
        })
        .collect();
    drop(c);
    for (id, why) in to_delete(&all, limits, now_ms()) {
        delete(state, &id, why).await?;
    }
    Ok(())
}

async fn delete(state: &AppState, id: &str, why: Why) -> anyhow::Result<()> {
    let mut tx = state.store.write().await?;
    let Some(row) = rec::get(tx.conn(), id).await? else {
        return Ok(());
    };
    if !rec::mark_deleted(tx.conn(), id).await? {
        return Ok(());
    }
    let reason = match why {
        Why::Age => "age",
        Why::Size => "size",
    };
    let ev = NewAuditEvent {
        actor: "system".into(),
        action: "recording.delete".into(),
        target: row.destination.clone(),
        source: "retention".into(),
        result: "success".into(),
        detail: format!(
            "recording={id} of={} started_ms={} bytes={} reason={reason}",
            row.user_email, row.started_ms, row.size
        ),
    };
    let audited = infra_store::audit::append(tx.conn(), ev, now_ms()).await?;
    tx.commit().await?;
    crate::audit::emit_quiet(&audited);
    if let Err(e) = state.recording_store.delete(id).await {
        tracing::warn!(recording = id, error = %format!("{e:#}"), "a deleted recording is still in the store");
    }
    Ok(())
}
