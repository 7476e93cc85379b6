//! Audit retention: events older than the configured age, or beyond the
//! configured number kept, are written to a compressed archive file, a
//! signed checkpoint records where the archived chain ends, and only then
//! are they deleted from the table (the checkpoint and the deletion in one
//! transaction). The chain stays verifiable across the cut: a full
//! verification walks the archives, then the table from the checkpoint.
//!
//! Never pruned: events an export target has not taken yet. One replica at
//! a time does this, under the same kind of lease as an export target.

use infra_store::checkpoints::ARCHIVE;
use infra_store::now_ms;
use tokio_util::sync::CancellationToken;

use crate::config::Retention;
use crate::state::AppState;

/// Events archived per round at most (one file each).
const ROUND: i64 = 100_000;
/// An export target whose lease nobody renewed for this long no longer
/// holds retention back.
const ABANDONED_MS: i64 = 24 * 3600 * 1000;
/// Bytes a stored event costs besides its text fields (estimated: two
/// 8-byte numbers, the row's header, an entry in each of two indexes).
const ROW_OVERHEAD: i64 = 64;
/// The lease's name in `audit_exports`.
const JOB: &str = "job:retention";

/// Runs rounds every `interval` until `stop`.
pub(crate) async fn run(state: AppState, r: Retention, stop: CancellationToken) {
    let owner = infra_auth::random_token(16).unwrap_or_default();
    tracing::info!(dir = %r.dir.display(), ?r.max_age, ?r.max_events, ?r.max_bytes, "audit retention started");
    loop {
        loop {
            match round(&state, &r, &owner).await {
                // More may be due: go on at once.
                Ok(Some((first, last))) => {
                    tracing::info!(first, last, dir = %r.dir.display(), "audit events archived and pruned");
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "audit retention failed; nothing was deleted");
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(r.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One round: archives and prunes up to [`ROUND`] events if any are due;
/// the range it did.
async fn round(state: &AppState, r: &Retention, owner: &str) -> Result<Option<(i64, i64)>, String> {
    let e = |e: infra_store::StoreError| e.to_string();
    let now = now_ms();
    {
        let mut tx = state.store.write().await.map_err(e)?;
        let held = infra_store::export::claim(tx.conn(), JOB, owner, now, now + 60_000)
            .await
            .map_err(e)?;
        tx.commit().await.map_err(e)?;
        if held.is_none() {
            return Ok(None);
        }
    }
    let mut c = state.store.conn().await.map_err(e)?;
    let (head, _) = infra_store::audit::head(&mut c).await.map_err(e)?;
    let last_cp = infra_store::checkpoints::latest(&mut c, ARCHIVE).await.map_err(e)?;
    let (archived_to, prev) = last_cp
        .as_ref()
        .map_or((0, "0".repeat(64)), |cp| (cp.seq, cp.hash.clone()));
    // What is due: by age, by number kept.
    let mut due = archived_to;
    if let Some(age) = r.max_age {
        let before = now - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        if let (Some(old), _) = infra_store::audit::bounds(&mut c, before).await.map_err(e)? {
            due = due.max(old);
        }
    }
    if let Some(n) = r.max_events {
        due = due.max(head - i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Some(bytes) = r.max_bytes {
        // An estimate: the newest events' text, plus what each row costs
        // besides (numbers, row header, its two index entries).
        let per_event = infra_store::audit::average_size(&mut c, 1000).await.map_err(e)? + ROW_OVERHEAD;
        let keep = i64::try_from(bytes).unwrap_or(i64::MAX) / per_event.max(1);
        due = due.max(head - keep.max(1));
    }
    // Never what an export target still has to send (a target no
    // replica has shipped for a day is taken as given up).
    let cursors = infra_store::export::cursors(&mut c).await.map_err(e)?;
    let slowest = cursors
        .iter()
        .filter(|(t, _, lease)| !t.starts_with("job:") && *lease > now - ABANDONED_MS)
        .map(|(_, s, _)| *s)
        .min();
    if let Some(s) = slowest {
        due = due.min(s);
    }
    let cut = due.min(archived_to + ROUND);
    if cut <= archived_to {
        return Ok(None);
    }
    let rows = infra_store::audit::range(&mut c, archived_to + 1, cut)
        .await
        .map_err(e)?;
    drop(c);
    // Only an intact stretch of the chain is archived.
    let mut link = prev;
    for (i, row) in rows.iter().enumerate() {
        let expected = archived_to + 1 + i64::try_from(i).unwrap_or(0);
        infra_store::audit::check_link(row, expected, &link)
            .map_err(|reason| format!("not archiving a broken chain: {reason}"))?;
        link = row.hash.clone();
    }
    let (Some(first), Some(last)) = (
        rows.first().map(|r| r.seq),
        rows.last().map(|r| (r.seq, r.hash.clone())),
    ) else {
        return Ok(None);
    };
    let dir = r.dir.clone();
    let (name, sha) = tokio::task::spawn_blocking(move || crate::audit_checkpoint::write_archive(&dir, &rows))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|err| format!("write the archive in {}: {err}", r.dir.display()))?;
    let cp = crate::audit_checkpoint::make(&state.root_key, ARCHIVE, (first, last.0, &last.1), Some((&name, &sha)))?;
    let mut tx = state.store.write().await.map_err(e)?;
    infra_store::checkpoints::insert(tx.conn(), &cp).await.map_err(e)?;
    infra_store::checkpoints::prune_events(tx.conn(), last.0)
        .await
        .map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(Some((first, last.0)))
}
