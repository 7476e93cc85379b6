//! Reading and verifying the audit log.

use axum::Json;
use axum::extract::State;
use infra_api::{AuditEvent, AuditQuery, AuditVerifyLine, AuditVerifyQuery, AuditVerifyResponse};
use infra_core::{InfraRole, parse_duration};
use infra_store::{AuditFilter, AuditRow, VerifyOutcome, now_ms};

use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::wire::{ms, page_of, paging, time};

fn to_api(r: AuditRow) -> AuditEvent {
    AuditEvent {
        seq: r.seq,
        time: time(r.time_ms),
        actor: r.actor,
        action: r.action,
        target: r.target,
        source: r.source,
        result: r.result,
        detail: r.detail,
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

/// A time (`what` = `since` or `until`): RFC 3339, or a duration ago.
pub(crate) fn point(what: &str, s: &str) -> ApiResult<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    }
    let d = parse_duration(s).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid {what} '{}': use an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (1h)",
            // Said back, but not at any length.
            s.chars().take(40).collect::<String>()
        ))
    })?;
    Ok(now_ms() - ms(d))
}

/// The story of access request `id`: its own events and, once it was
/// granted, the sessions of its requester on its destinations cut while
/// its grants held or at their end.
async fn story(state: &AppState, id: String) -> ApiResult<infra_store::RequestStory> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request("invalid request id"));
    }
    let mut c = state.store.conn().await?;
    let row = infra_store::requests::request(&mut c, &id).await?;
    let granted = row.and_then(|r| {
        let from = r.decided_at?;
        let until = r.grants_until?;
        let asks: Vec<infra_core::request::Ask> = serde_json::from_str(&r.asks).ok()?;
        let dests = asks
            .iter()
            .filter_map(|a| match a {
                infra_core::request::Ask::Grant { resource, .. } => Some(resource.destination().to_owned()),
                infra_core::request::Ask::Membership { .. } => None,
            })
            .collect();
        Some((r.requester, dests, from, until + 60_000))
    });
    Ok(infra_store::RequestStory { id, granted })
}

/// A result to filter on: one of the three an event can have.
fn result_word(r: &str) -> ApiResult<String> {
    match r.trim() {
        w @ ("success" | "denied" | "failure") => Ok(w.to_owned()),
        _ => Err(ApiError::bad_request("invalid result: use success, denied or failure")),
    }
}

/// List audit events, oldest first (or newest first).
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = infra_api::Page<AuditEvent>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<infra_api::Page<AuditEvent>>> {
    caller
        .require(&state, InfraRole::View, "read the audit log", "audit")
        .await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let f = AuditFilter {
        since_ms: q.since.as_deref().map(|s| point("since", s)).transpose()?,
        who: q.user.map(|u| u.trim().to_ascii_lowercase()),
        destination: q.destination,
        action: q.action,
        result: q.result.map(|r| result_word(&r)).transpose()?,
        until_ms: q.until.as_deref().map(|s| point("until", s)).transpose()?,
        after_seq: q.after,
        request: match q.request {
            Some(r) => Some(story(&state, r).await?),
            None => None,
        },
        newest_first: q.newest_first,
    };
    let mut c = state.store.conn().await?;
    let (rows, total) = infra_store::audit::list(&mut c, &f, page, limit).await?;
    Ok(page_of(rows.into_iter().map(to_api).collect(), page, limit, total))
}

/// Check the hash chain: from the last checkpoint (what is new since the
/// last verification), or with `full=true` every archive file and the
/// whole table. With `Accept: application/x-ndjson` the answer streams
/// progress lines, then the result.
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit", params(AuditVerifyQuery),
    responses((status = 200, body = AuditVerifyResponse)), security(("accessKey" = [])))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditVerifyQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    caller
        .require(&state, InfraRole::View, "verify the audit log", "audit")
        .await?;
    let stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    let st = state.clone();
    let work = tokio::spawn(async move {
        let progress_tx = tx.clone();
        let mut last = std::time::Instant::now();
        let mut progress = move |checked: u64| {
            if last.elapsed() >= std::time::Duration::from_millis(500) {
                last = std::time::Instant::now();
                let line = AuditVerifyLine::Progress { checked };
                let _ = progress_tx.try_send((serde_json::to_string(&line).unwrap_or_default() + "\n").into());
            }
        };
        let r = run_verify(&st, q.full, &mut progress).await;
        let resp = match &r {
            Ok(resp) => resp.clone(),
            Err(e) => AuditVerifyResponse {
                ok: false,
                events_checked: 0,
                bad_seq: None,
                message: format!("the verification could not finish: {}", e.message),
                from_seq: 0,
                archives_checked: 0,
                recordings_checked: 0,
            },
        };
        {
            let line = AuditVerifyLine::Result(resp);
            let _ = tx
                .send((serde_json::to_string(&line).unwrap_or_default() + "\n").into())
                .await;
        }
        r
    });
    if stream {
        let mut r = axum::body::Body::new(infra_tunnel::boxed(rx)).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(r);
    }
    drop(rx);
    let resp = work.await.map_err(ApiError::internal)??;
    Ok(Json(resp).into_response())
}

/// Where the chain stands for `caller` (who needs `view`): the last event
/// written, and the last verification's checkpoint (event and time).
pub(crate) async fn chain_state(state: &AppState, caller: &Caller) -> ApiResult<(i64, Option<(i64, i64)>)> {
    caller
        .require(state, InfraRole::View, "read the audit log", "audit")
        .await?;
    let mut c = state.store.conn().await?;
    let (head, _) = infra_store::audit::head(&mut c).await?;
    let last = infra_store::checkpoints::latest(&mut c, infra_store::checkpoints::VERIFIED).await?;
    Ok((head, last.map(|cp| (cp.seq, cp.created_at))))
}

/// A routine verification (from the last checkpoint) for `caller`, who
/// needs `view` on Infra, as the endpoint does.
pub(crate) async fn check(state: &AppState, caller: &Caller) -> ApiResult<AuditVerifyResponse> {
    caller
        .require(state, InfraRole::View, "verify the audit log", "audit")
        .await?;
    run_verify(state, false, &mut |_| {}).await
}

/// Verifies, and on success records where it got to (the next routine
/// verification starts there).
async fn run_verify(
    state: &AppState,
    full: bool,
    progress: &mut (dyn FnMut(u64) + Send),
) -> ApiResult<AuditVerifyResponse> {
    let mut c = state.store.conn().await?;
    let v = crate::audit_checkpoint::verify(
        &mut c,
        &state.root_key,
        &state.settings.audit_archive_dir,
        full,
        progress,
    )
    .await?;
    drop(c);
    let archives = u64::try_from(v.archives).unwrap_or(0);
    Ok(match v.outcome {
        VerifyOutcome::Ok {
            events,
            last,
            last_hash,
        } => {
            if last > v.from {
                let cp = crate::audit_checkpoint::make(
                    &state.root_key,
                    infra_store::checkpoints::VERIFIED,
                    (1, last, &last_hash),
                    None,
                )
                .map_err(ApiError::internal)?;
                let mut tx = state.store.write().await?;
                infra_store::checkpoints::forget_verified(tx.conn(), last).await?;
                infra_store::checkpoints::insert(tx.conn(), &cp).await?;
                tx.commit().await?;
            }
            let scope = if full {
                format!("{archives} archive files and the database")
            } else if v.from > 0 {
                format!("events after the checkpoint at {}", v.from)
            } else {
                "the whole chain".to_owned()
            };
            // Recordings can be changed at any time: every stored one is
            // hashed again, each verification.
            match crate::recordings::check_all(state).await.map_err(ApiError::internal)? {
                Ok(recordings) => AuditVerifyResponse {
                    ok: true,
                    events_checked: events,
                    bad_seq: None,
                    message: format!(
                        "audit log intact: {events} events checked ({scope}), hash chain verified; {recordings} session recordings match their digests"
                    ),
                    from_seq: v.from,
                    archives_checked: archives,
                    recordings_checked: recordings,
                },
                Err(t) => AuditVerifyResponse {
                    ok: false,
                    events_checked: events,
                    bad_seq: Some(t.seq),
                    message: t.message,
                    from_seq: v.from,
                    archives_checked: archives,
                    recordings_checked: 0,
                },
            }
        }
        VerifyOutcome::Broken { events, seq, reason } => AuditVerifyResponse {
            ok: false,
            events_checked: events,
            bad_seq: Some(seq),
            message: reason,
            from_seq: v.from,
            archives_checked: archives,
            recordings_checked: 0,
        },
    })
}
