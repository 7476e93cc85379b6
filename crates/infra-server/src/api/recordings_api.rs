//! Session recordings: listing them, what each was, and the recording
//! itself (asciicast v2). Reading them takes `view` on Infra, as the audit
//! log does, and every playback or export is itself audited: a recording
//! holds whatever was typed.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse as _;
use infra_api::{Recording, RecordingQuery};
use infra_core::InfraRole;
use infra_store::recordings::{self as rec, RecordingFilter, RecordingRow};

use super::audit_api::point;
use crate::audit::Event;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::wire::{page_of, paging, time};

fn to_api(r: RecordingRow) -> Recording {
    Recording {
        id: r.id,
        kind: r.kind,
        user: r.user_email,
        destination: r.destination,
        target: r.target,
        command: r.command,
        source: r.source,
        connector: r.connector,
        started: time(r.started_ms),
        ended: r.ended_ms.map(time).unwrap_or_default(),
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        exit: r.exit,
        truncated: r.truncated != 0,
        size: r.size,
        state: r.state,
        sha256: r.sha256,
        audit_seq: r.audit_seq,
    }
}

async fn allowed(state: &AppState, caller: &Caller) -> ApiResult<()> {
    caller
        .require(state, InfraRole::View, "read session recordings", "recordings")
        .await
}

/// List recorded sessions, newest first.
#[utoipa::path(get, path = "/api/recordings", tag = "recordings", params(RecordingQuery),
    responses((status = 200, body = infra_api::Page<Recording>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RecordingQuery>,
) -> ApiResult<Json<infra_api::Page<Recording>>> {
    allowed(&state, &caller).await?;
    let (page, limit) = paging(q.page, q.limit)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            infra_tunnel::proto::RecordingKind::parse(k.trim())
                .ok_or_else(|| ApiError::bad_request("invalid kind: use kube-exec or ssh"))?
                .as_str()
                .to_owned(),
        ),
    };
    let f = RecordingFilter {
        user: q.user.map(|u| u.trim().to_ascii_lowercase()),
        destination: q.destination,
        kind,
        since_ms: q.since.as_deref().map(|s| point("since", s)).transpose()?,
        until_ms: q.until.as_deref().map(|s| point("until", s)).transpose()?,
        live: q.live,
    };
    let mut c = state.store.conn().await?;
    let (rows, total) = rec::list(&mut c, &f, page, limit).await?;
    Ok(page_of(rows.into_iter().map(to_api).collect(), page, limit, total))
}

async fn find(state: &AppState, id: &str) -> ApiResult<RecordingRow> {
    let missing = || {
        ApiError::not_found(format!(
            "recording not found: {}; see 'infra sessions list'",
            id.chars().take(64).collect::<String>()
        ))
    };
    if !crate::recordings::valid_id(id) {
        return Err(missing());
    }
    let mut c = state.store.conn().await?;
    match rec::get(&mut c, id).await? {
        Some(r) if r.state != rec::DELETED => Ok(r),
        _ => Err(missing()),
    }
}

/// What one recorded session was.
#[utoipa::path(get, path = "/api/recordings/{id}", tag = "recordings", params(("id" = String, Path)),
    responses((status = 200, body = Recording), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Recording>> {
    allowed(&state, &caller).await?;
    Ok(Json(to_api(find(&state, &id).await?)))
}

/// The recording as asciicast v2 (`application/x-asciicast`): the whole of
/// a finished session, or what has arrived of a running one. Audited.
#[utoipa::path(get, path = "/api/recordings/{id}/cast", tag = "recordings", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/x-asciicast", body = String), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn cast(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let (bytes, ..) = read(&state, &caller, &id, 0, None).await?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-asciicast"),
    );
    Ok(r)
}

/// What a reader of a recording holds once its reading is audited: bound
/// to their session and the recording, it lets them follow what arrives
/// next without an audit event per second.
/// Bound to the hour it was given in: it is taken in that hour and the
/// next, so reading a recording again later is audited again.
fn watch_token(state: &AppState, caller: &Caller, id: &str, hour: i64) -> String {
    let mac = state
        .root_key
        .derive(&format!("infra recording watch v2:{}:{id}:{hour}", caller.key_id));
    mac.expose().iter().map(|b| format!("{b:02x}")).collect()
}

fn this_hour() -> i64 {
    infra_store::now_ms() / 3_600_000
}

/// Recording `id` from byte `from`, whether it is still live, and the
/// watch token. From 0 (all of it) the reading is audited; from further
/// on (what arrived since, to follow a running session) only with the
/// watch token that reading gave, so no byte is read unaudited. For
/// `caller`, who needs `view`.
pub(crate) async fn read(
    state: &AppState,
    caller: &Caller,
    id: &str,
    from: u64,
    watch: Option<&str>,
) -> ApiResult<(Vec<u8>, bool, String)> {
    allowed(state, caller).await?;
    let row = find(state, id).await?;
    let hour = this_hour();
    let token = watch_token(state, caller, &row.id, hour);
    if from > 0 {
        let ok = [hour, hour - 1].into_iter().any(|h| {
            let want = watch_token(state, caller, &row.id, h);
            watch.is_some_and(|w| {
                w.len() == want.len()
                    && aws_lc_rs::constant_time::verify_slices_are_equal(w.as_bytes(), want.as_bytes()).is_ok()
            })
        });
        if !ok {
            return Err(ApiError::forbidden(
                "read a recording from its start first: that reading is what the audit log records",
            ));
        }
    }
    let bytes = crate::recordings::text(state, &row, from).await.map_err(|e| {
        tracing::error!(recording = %row.id, error = %format!("{e:#}"), "cannot read a recording");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the recording store cannot give recording {} back now; try again, and see the server's log",
                row.id
            ),
        )
    })?;
    if from == 0 {
        let ev = Event::new(&caller.user.email, "recording.view", &row.destination, &caller.source).detail(format!(
            "recording={} of={} state={}",
            row.id, row.user_email, row.state
        ));
        crate::audit::record(state, ev).await?;
    }
    Ok((bytes, row.state == rec::LIVE, token))
}
