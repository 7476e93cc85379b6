//! Reading and verifying the audit log.

use axum::Json;
use axum::extract::State;
use infra_api::{AuditEvent, AuditQuery, AuditVerifyResponse};
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

fn since(s: &str) -> ApiResult<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    }
    let d = parse_duration(s).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid since '{s}': use an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (1h)"
        ))
    })?;
    Ok(now_ms() - ms(d))
}

/// List audit events, oldest first.
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
        since_ms: q.since.as_deref().map(since).transpose()?,
        who: q.user.map(|u| u.trim().to_ascii_lowercase()),
        destination: q.destination,
        action: q.action,
        after_seq: q.after,
    };
    let mut c = state.store.conn().await?;
    let (rows, total) = infra_store::audit::list(&mut c, &f, page, limit).await?;
    Ok(page_of(rows.into_iter().map(to_api).collect(), page, limit, total))
}

/// Check the hash chain over the whole log.
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerifyResponse)), security(("accessKey" = [])))]
pub(crate) async fn verify(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<AuditVerifyResponse>> {
    caller
        .require(&state, InfraRole::View, "verify the audit log", "audit")
        .await?;
    let mut c = state.store.conn().await?;
    Ok(Json(match infra_store::audit::verify(&mut c).await? {
        VerifyOutcome::Ok { events } => AuditVerifyResponse {
            ok: true,
            events_checked: events,
            bad_seq: None,
            message: format!("audit log intact: {events} events, hash chain verified"),
        },
        VerifyOutcome::Broken { events, seq, reason } => AuditVerifyResponse {
            ok: false,
            events_checked: events,
            bad_seq: Some(seq),
            message: reason,
        },
    }))
}
