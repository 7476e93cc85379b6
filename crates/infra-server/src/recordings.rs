//! Session recordings on the server: the pieces connectors send as their
//! sessions run, the recording store a finished one is written to, and
//! its digest in the audit log.
//!
//! A piece is taken only at the byte the server has reached (a resend
//! after a reconnect adds nothing twice, a gap makes the connector go
//! back), and only from the connector that serves the recording's
//! destination and began it. A recording is answered `stored` only once
//! it is in the recording store *and* an audit event holds its SHA-256:
//! until then the connector keeps its copy. `infra audit verify` hashes
//! every stored recording again and compares it with that event.

pub(crate) mod retention;
pub(crate) mod storage;

use infra_store::recordings::{self as rec, Ending, RecordingRow};
use infra_store::{NewAuditEvent, now_ms};
use infra_tunnel::proto::{ControlMsg, Hello, RecordingChunk, RecordingKind};

use crate::state::AppState;

/// The audit action whose event holds a recording's digest.
pub(crate) const RECORDED: &str = "session.recorded";
/// The most one piece may carry.
pub(crate) const MAX_PIECE: usize = 1 << 20;

/// A connector-made id: letters and digits, as `random_token` makes them.
pub(crate) fn valid_id(id: &str) -> bool {
    (16..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Takes one piece from the connector `hello` and answers it.
pub(crate) async fn take(state: &AppState, hello: &Hello, chunk: RecordingChunk) -> ControlMsg {
    let id = chunk.id.clone();
    match take_inner(state, hello, chunk).await {
        Ok((have, stored)) => ControlMsg::RecordingAck {
            id,
            have,
            stored,
            error: None,
        },
        Err(Refusal { have, why }) => {
            tracing::warn!(connector = %hello.name, recording = %id, reason = %why, "recording piece not taken");
            ControlMsg::RecordingAck {
                id,
                have,
                stored: false,
                error: Some(why),
            }
        }
    }
}

struct Refusal {
    have: u64,
    why: String,
}

fn refuse(have: u64, why: impl Into<String>) -> Refusal {
    Refusal { have, why: why.into() }
}

impl From<infra_store::StoreError> for Refusal {
    fn from(e: infra_store::StoreError) -> Self {
        refuse(0, format!("the server's database: {e}"))
    }
}

async fn take_inner(state: &AppState, hello: &Hello, chunk: RecordingChunk) -> Result<(u64, bool), Refusal> {
    let RecordingChunk { id, offset, data, meta } = chunk;
    if !valid_id(&id) {
        return Err(refuse(0, "not a recording id"));
    }
    if !hello.destinations.iter().any(|d| d.name == meta.destination) {
        return Err(refuse(
            0,
            format!("{} is not a destination of this connector", meta.destination),
        ));
    }
    if data.len() > MAX_PIECE || !(data.is_empty() || data.ends_with('\n')) {
        return Err(refuse(0, "a piece is whole lines of at most 1 MiB"));
    }
    let mut c = state.store.conn().await?;
    let row = match rec::get(&mut c, &id).await? {
        Some(r) => r,
        None => {
            let new = RecordingRow {
                id: id.clone(),
                connector: hello.name.clone(),
                kind: meta.kind.as_str().to_owned(),
                user_email: meta.user.clone(),
                destination: meta.destination.clone(),
                target: meta.target.clone(),
                command: meta.command.clone(),
                source: meta.source.clone(),
                started_ms: meta.started_ms,
                ended_ms: None,
                bytes_in: 0,
                bytes_out: 0,
                exit: String::new(),
                truncated: 0,
                size: 0,
                state: rec::LIVE.to_owned(),
                sha256: String::new(),
                audit_seq: None,
            };
            rec::insert(&mut c, &new).await?;
            rec::get(&mut c, &id)
                .await?
                .ok_or_else(|| refuse(0, "recording vanished"))?
        }
    };
    let have = u64::try_from(row.size).unwrap_or(0);
    if row.connector != hello.name || row.destination != meta.destination {
        return Err(refuse(0, "this recording belongs to another connector or destination"));
    }
    if row.state != rec::LIVE {
        return Ok((have, true));
    }
    if offset > have {
        // A gap: the connector goes back to what is here.
        return Ok((have, false));
    }
    let end = offset + data.len() as u64;
    let skip = usize::try_from(have - offset).unwrap_or(usize::MAX);
    let new = if end > have {
        data.get(skip..)
            .ok_or_else(|| refuse(have, "a resent piece does not line up with what was received"))?
    } else {
        ""
    };
    let complete = meta.ended_ms.is_some() && end >= have;
    let ending = Ending {
        ended_ms: meta.ended_ms.filter(|_| complete),
        bytes_in: i64::try_from(meta.bytes_in).unwrap_or(i64::MAX),
        bytes_out: i64::try_from(meta.bytes_out).unwrap_or(i64::MAX),
        exit: meta.exit.clone(),
        truncated: meta.truncated,
        target: meta.target.clone(),
        command: meta.command.clone(),
    };
    if !new.is_empty() || complete {
        let took = rec::append(&mut c, &id, row.size, new, &ending).await?;
        if !took {
            // Another replica took a piece first: say where things are.
            let now = rec::get(&mut c, &id).await?.map_or(0, |r| r.size);
            return Ok((u64::try_from(now).unwrap_or(0), false));
        }
    }
    let have = have + new.len() as u64;
    if !complete {
        return Ok((have, false));
    }
    drop(c);
    finish(state, &id).await.map_err(|why| refuse(have, why))?;
    Ok((have, true))
}

/// Writes a complete recording to the recording store and its digest to
/// the audit log, once.
async fn finish(state: &AppState, id: &str) -> Result<(), String> {
    let mut c = state.store.conn().await.map_err(|e| e.to_string())?;
    let Some(row) = rec::get(&mut c, id).await.map_err(|e| e.to_string())? else {
        return Err("recording vanished".into());
    };
    if row.state != rec::LIVE {
        return Ok(());
    }
    let text = rec::pieces(&mut c, id).await.map_err(|e| e.to_string())?;
    drop(c);
    let sha = infra_auth::sha256_hex(text.as_bytes());
    let len = text.len();
    state
        .recording_store
        .put(id, text.into_bytes())
        .await
        .map_err(|e| format!("the recording store: {e:#}"))?;
    let kind = RecordingKind::parse(&row.kind).map_or("unknown", |k| k.as_str());
    let mut detail = format!(
        "recording={id} sha256={sha} bytes={len} kind={kind} target={:?} exit={:?}",
        row.target, row.exit
    );
    if !row.command.is_empty() {
        detail.push_str(&format!(" command={:?}", row.command));
    }
    if row.truncated != 0 {
        detail.push_str(" truncated=true");
    }
    let ev = NewAuditEvent {
        actor: row.user_email.clone(),
        action: RECORDED.into(),
        target: row.destination.clone(),
        source: row.source.clone(),
        result: "success".into(),
        detail,
    };
    let written: Result<Option<infra_store::AuditRow>, infra_store::StoreError> = async {
        let mut tx = state.store.write().await?;
        // Under the writers' lock: a replica that finished it first wins.
        match rec::get(tx.conn(), id).await? {
            Some(r) if r.state == rec::LIVE => {}
            _ => return Ok(None),
        }
        let audited = infra_store::audit::append(tx.conn(), ev, now_ms()).await?;
        rec::mark_stored(tx.conn(), id, &sha, audited.seq).await?;
        tx.commit().await?;
        Ok(Some(audited))
    }
    .await;
    match written.map_err(|e| format!("the audit log: {e}"))? {
        Some(row) => crate::audit::emit_quiet(&row),
        None => tracing::debug!(recording = id, "already stored by another replica"),
    }
    // A new recording may take the store past its size limit.
    if let Err(e) = retention::apply(state).await {
        tracing::warn!(error = %format!("{e:#}"), "recording retention failed; trying again later");
    }
    Ok(())
}

/// The text of a recording from byte `from` on (0: all of it): from the
/// store once stored, from the pieces received while it runs. Following a
/// running session reads only what is new.
pub(crate) async fn text(state: &AppState, row: &RecordingRow, from: u64) -> anyhow::Result<Vec<u8>> {
    let size = u64::try_from(row.size).unwrap_or(0);
    if from > 0 && from >= size {
        return Ok(Vec::new());
    }
    if row.state == rec::STORED {
        return state.recording_store.get(&row.id, from).await;
    }
    let mut c = state.store.conn().await?;
    let at = i64::try_from(from).unwrap_or(i64::MAX);
    let (start, text) = rec::pieces_from(&mut c, &row.id, at).await?;
    let mut bytes = text.into_bytes();
    let skip = usize::try_from(at.saturating_sub(start).max(0)).unwrap_or(usize::MAX);
    bytes.drain(..skip.min(bytes.len()));
    Ok(bytes)
}

/// What `infra audit verify` found wrong with a stored recording.
pub(crate) struct Tampered {
    pub(crate) seq: i64,
    pub(crate) message: String,
}

/// Hashes every stored recording again and compares it with the digest
/// its audit event holds (the event, not the recordings table: the chain
/// covers the event). Returns how many were checked, or the first that
/// does not match.
pub(crate) async fn check_all(state: &AppState) -> anyhow::Result<Result<u64, Tampered>> {
    let mut checked = 0u64;
    let mut after = 0i64;
    loop {
        let mut c = state.store.conn().await?;
        let events = infra_store::audit::actions_after(&mut c, after, RECORDED, 500).await?;
        drop(c);
        let Some(last) = events.last() else { break };
        after = last.seq;
        for ev in events {
            let (Some(id), Some(sha)) = (field(&ev.detail, "recording"), field(&ev.detail, "sha256")) else {
                continue;
            };
            let mut c = state.store.conn().await?;
            let row = rec::get(&mut c, id).await?;
            drop(c);
            if row.as_ref().is_some_and(|r| r.state == rec::DELETED) {
                continue;
            }
            let what = format!(
                "recording {id} (of {} on {}, audit event {})",
                ev.actor, ev.target, ev.seq
            );
            match state.recording_store.get(id, 0).await {
                Ok(bytes) if infra_auth::sha256_hex(&bytes) == sha => checked += 1,
                Ok(_) => {
                    return Ok(Err(Tampered {
                        seq: ev.seq,
                        message: format!(
                            "{what} was changed in the recording store: its SHA-256 is not the one the audit log holds"
                        ),
                    }));
                }
                Err(e) => {
                    return Ok(Err(Tampered {
                        seq: ev.seq,
                        message: format!("{what} is missing from the recording store: {e:#}"),
                    }));
                }
            }
        }
    }
    Ok(Ok(checked))
}

/// `value` of `key=value` in an audit detail.
fn field<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail
        .split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}
