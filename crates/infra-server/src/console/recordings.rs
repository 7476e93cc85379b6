//! *Recordings*: recorded sessions (kubectl exec and attach, recorded SSH),
//! newest first with filters; each one's facts and a player with seek and
//! speed, which follows a session still running. Everything through the
//! API's `/api/recordings` handlers: the same `view` role, and every
//! playback audited.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use infra_api::{Recording, RecordingQuery};
use maud::{Markup, html};

use super::form::{Signed, Viewer, failed, field, filter_query, given, pager};
use super::people::PER_PAGE;
use super::readable_time;
use crate::api::recordings_api;
use crate::extract::Query;
use crate::state::AppState;

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    destination: String,
    /// `running`, `finished`, or anything else for both.
    #[serde(default)]
    show: String,
    page: Option<u32>,
}

impl Filter {
    fn query(&self) -> RecordingQuery {
        RecordingQuery {
            user: given(&self.user),
            destination: given(&self.destination),
            live: match self.show.as_str() {
                "running" => Some(true),
                "finished" => Some(false),
                _ => None,
            },
            page: Some(self.page.unwrap_or(1).max(1)),
            limit: Some(PER_PAGE),
            ..Default::default()
        }
    }

    fn base(&self) -> String {
        filter_query(&[
            ("user", self.user.as_str()),
            ("destination", self.destination.as_str()),
            ("show", self.show.as_str()),
        ])
    }
}

/// `running`, `stored`, `stored, truncated`: what the state means to a reader.
fn state_word(r: &Recording) -> String {
    let base = if r.state == "live" {
        if r.ended.is_empty() { "running" } else { "arriving" }
    } else {
        "stored"
    };
    if r.truncated {
        format!("{base}, truncated")
    } else {
        base.to_owned()
    }
}

fn row(r: &Recording) -> Markup {
    html! {
        tr {
            td data-label="Started" { a href=(format!("/console/recordings/{}", r.id)) { time datetime=(r.started) { (readable_time(&r.started)) } } }
            td data-label="User" { (r.user) }
            td data-label="Destination" { (r.destination) }
            td data-label="Target" { (r.target) }
            td data-label="Command" { @if r.command.is_empty() { span.muted { "attach" } } @else { code { (r.command) } } }
            td data-label="Ended" { (r.exit) }
            td data-label="State" { (state_word(r)) }
        }
    }
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
) -> Response {
    let v = Viewer::of(&state, &caller);
    let list = match recordings_api::list(State(state.clone()), caller, Query(f.query())).await {
        Ok(l) => l.0,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return v.page(e.status, "Recordings", html! {
                h1 { "Recordings" } p.error role="alert" { (e.message) } p { a href="/console/recordings" { "Show all recordings" } }
            });
        }
        Err(e) => return failed(&e),
    };
    let page = f.page.unwrap_or(1).max(1);
    let base = f.base();
    let body = html! {
        h1 { "Recordings" }
        p.muted { "Interactive sessions: kubectl exec and attach, and SSH hosts in recording mode. Watching one is recorded in the audit log." }
        form.filters method="get" action="/console/recordings" {
            (field("r-user", "User", "user", &f.user, None, ("text", "name@example.com", false)))
            (field("r-destination", "Destination", "destination", &f.destination, None, ("text", "", false)))
            div.field {
                label for="r-show" { "Sessions" }
                select #r-show name="show" {
                    @for (v, label) in [("", "all"), ("running", "running or arriving"), ("finished", "stored")] {
                        option value=(v) selected[f.show == v] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if list.items.is_empty() {
            div.empty { p { "No recorded session matches." } }
        } @else {
            table {
                caption.visually-hidden { "Recorded sessions, newest first" }
                thead { tr { th scope="col" { "Started" } th scope="col" { "User" } th scope="col" { "Destination" } th scope="col" { "Target" } th scope="col" { "Command" } th scope="col" { "Ended" } th scope="col" { "State" } } }
                tbody { @for r in &list.items { (row(r)) } }
            }
        }
        (pager(&format!("/console/recordings?{base}"), page, PER_PAGE, list.total_count))
    };
    v.page(StatusCode::OK, "Recordings", body)
}

/// One recording: what it was, and the player.
pub(super) async fn one(State(state): State<AppState>, Signed(caller): Signed, Path(id): Path<String>) -> Response {
    let v = Viewer::of(&state, &caller);
    let r = match recordings_api::get_one(State(state.clone()), caller, Path(id)).await {
        Ok(r) => r.0,
        Err(e) => return failed(&e),
    };
    let src = format!("/console/recordings/{}/cast", r.id);
    let body = html! {
        p.crumbs { a href="/console/recordings" { "Recordings" } " / " }
        h1 { (r.user) " on " (r.destination) }
        section #player .player aria-label="Player" data-src=(src) data-live=(r.state == "live") {
            pre.screen #screen tabindex="0" role="region" aria-label="The session's terminal" {}
            div.controls {
                button type="button" #play { "Play" }
                label for="seek" .visually-hidden { "Position" }
                input type="range" #seek min="0" max="0" step="any" value="0";
                output #clock for="seek" { "0:00 / 0:00" }
                label for="speed" { "Speed" }
                select #speed {
                    @for s in ["0.5", "1", "2", "4", "8", "16"] { option value=(s) selected[s == "1"] { (s) "×" } }
                }
            }
            p #player-status .muted role="status" {
                noscript { "The player needs JavaScript. Download the recording and play it with asciinema: " code { "asciinema play FILE.cast" } }
            }
        }
        p { a href=(src) download=(format!("{}.cast", r.id)) { "Download the recording (asciicast)" } }
        dl.facts {
            dt { "User" } dd { (r.user) }
            dt { "Destination" } dd { (r.destination) }
            dt { "Target" } dd { (r.target) }
            dt { "Command" } dd { @if r.command.is_empty() { "attach" } @else { code { (r.command) } } }
            dt { "Started" } dd { time datetime=(r.started) { (r.started) } }
            dt { "Ended" } dd { @if r.ended.is_empty() { "still running" } @else { time datetime=(r.ended) { (r.ended) } " (" (r.exit) ")" } }
            dt { "From" } dd { (r.source) " through connector " (r.connector) }
            dt { "Bytes typed / shown" } dd { @if r.ended.is_empty() { "counted when it ends" } @else { (r.bytes_in) " / " (r.bytes_out) } }
            dt { "State" } dd { (state_word(&r)) }
            @if let Some(seq) = r.audit_seq {
                dt { "SHA-256" } dd { code { (r.sha256) } " (in " a href=(format!("/console/audit/{seq}")) { "audit event " (seq) } ")" }
            }
        }
    };
    v.page(StatusCode::OK, "Recordings", body)
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct From {
    #[serde(default)]
    from: u64,
    watch: Option<String>,
}

/// The recording's text from byte `from` (see `recordings_api::read`):
/// `X-Infra-Live` says whether more may come, `X-Infra-Watch` is the token
/// to follow it with.
pub(super) async fn cast(
    State(state): State<AppState>,
    Signed(caller): Signed,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<From>,
    headers: axum::http::HeaderMap,
) -> Response {
    // A page of another site cannot make a signed-in admin's browser read
    // (and so be audited as reading) a recording.
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return failed(&crate::error::ApiError::forbidden(
            "open recordings from the console's own pages",
        ));
    }
    match recordings_api::read(&state, &caller, &id, q.from, q.watch.as_deref()).await {
        Ok((bytes, live, watch)) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/x-asciicast"),
            );
            h.insert(
                axum::http::HeaderName::from_static("x-infra-live"),
                axum::http::HeaderValue::from_static(if live { "true" } else { "false" }),
            );
            if let Ok(w) = axum::http::HeaderValue::from_str(&watch) {
                h.insert(axum::http::HeaderName::from_static("x-infra-watch"), w);
            }
            r
        }
        Err(e) => failed(&e),
    }
}
