//! *Audit*: the event log, newest first, with its filters; each event in
//! full; the hash chain's state; and (with JavaScript) new events as they
//! happen. Everything through the API's `/api/audit` handlers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use infra_api::{AuditEvent, AuditQuery, AuditVerifyResponse};
use maud::{Markup, html};

use super::form::{Posted, Signed, Viewer, failed, field, filter_query, given, pager, token_input};
use super::people::PER_PAGE;
use super::readable_time;
use crate::api::audit_api;
use crate::authn::Caller;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    result: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    page: Option<u32>,
    after: Option<i64>,
}

impl Filter {
    fn query(&self, limit: u32) -> AuditQuery {
        AuditQuery {
            since: given(&self.since),
            user: given(&self.user),
            destination: given(&self.destination),
            action: given(&self.action),
            result: given(&self.result),
            until: given(&self.until),
            after: self.after,
            request: None,
            newest_first: true,
            page: Some(self.page.unwrap_or(1).max(1)),
            limit: Some(limit),
        }
    }

    /// The filters as a query string (ending in `&`), for links.
    fn base(&self) -> String {
        filter_query(&[
            ("user", self.user.as_str()),
            ("destination", self.destination.as_str()),
            ("action", self.action.as_str()),
            ("result", self.result.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
        ])
    }
}

async fn events(state: &AppState, caller: Caller, q: AuditQuery) -> ApiResult<infra_api::Page<AuditEvent>> {
    Ok(audit_api::list(State(state.clone()), caller, Query(q)).await?.0)
}

fn row(e: &AuditEvent) -> Markup {
    html! {
        tr data-seq=(e.seq) {
            td { a href=(format!("/console/audit/{}", e.seq)) { (e.seq) } }
            td data-label="Time" { time datetime=(e.time) { (readable_time(&e.time)) } }
            td data-label="Actor" { (e.actor) }
            td data-label="Action" { code { (e.action) } }
            td data-label="Target" { (e.target) }
            td data-label="Result" { span class=(format!("result {}", result_class(&e.result))) { (e.result) } }
        }
    }
}

/// A CSS class for a result: one of three, whatever the stored word.
fn result_class(r: &str) -> &'static str {
    match r {
        "success" => "success",
        "denied" => "denied",
        _ => "failure",
    }
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
) -> Response {
    render(&state, caller, &f, None).await
}

async fn render(state: &AppState, caller: Caller, f: &Filter, verified: Option<AuditVerifyResponse>) -> Response {
    let v = Viewer::of(state, &caller);
    let token = v.token.clone();

    let list = match events(
        state,
        caller.clone(),
        Filter {
            after: None,
            ..f.clone()
        }
        .query(PER_PAGE),
    )
    .await
    {
        Ok(l) => l,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return v.page(e.status, "Audit", html! {
                        h1 { "Audit" } p.error role="alert" { (e.message) } p { a href="/console/audit" { "Show all events" } }
                    });
        }
        Err(e) => return failed(&e),
    };
    let chain = match chain_state(state, &caller, verified.as_ref(), &token).await {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    let page = f.page.unwrap_or(1).max(1);
    let base = f.base();
    let newest = list.items.first().map_or(0, |e| e.seq);
    let body = html! {
        h1 { "Audit" }
        (chain)
        form.filters method="get" action="/console/audit" {
            (field("a-user", "User", "user", &f.user, None, ("text", "name@example.com", false)))
            (field("a-destination", "Destination", "destination", &f.destination, None, ("text", "", false)))
            (field("a-action", "Action", "action", &f.action, None, ("text", "grant.create", false)))
            div.field {
                label for="a-result" { "Result" }
                select #a-result name="result" {
                    @for (v, label) in [("", "any"), ("success", "success"), ("denied", "denied"), ("failure", "failure")] {
                        option value=(v) selected[f.result == v] { (label) }
                    }
                }
            }
            (field("a-since", "Since", "since", &f.since, None, ("text", "24h or 2026-01-02T15:04:05Z", false)))
            (field("a-until", "Until", "until", &f.until, None, ("text", "1h", false)))
            button type="submit" { "Filter" }
        }
        @if page == 1 {
            p #follow .muted role="status" data-after=(newest) data-filter=(base) hidden { "Following new events." }
        }
        @if list.items.is_empty() {
            div.empty { p { "No event matches." } }
        }
        table #events hidden[list.items.is_empty()] {
            caption.visually-hidden { "Audit events, newest first" }
            thead { tr { th scope="col" { "#" } th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Result" } } }
            tbody { @for e in &list.items { (row(e)) } }
        }
        (pager(&format!("/console/audit?{base}"), page, PER_PAGE, list.total_count))
    };
    v.page(StatusCode::OK, "Audit", body)
}

/// Where the chain stands: the last verification (this one, if the user
/// just asked), and how many events came after it.
async fn chain_state(
    state: &AppState,
    caller: &Caller,
    just: Option<&AuditVerifyResponse>,
    token: &str,
) -> ApiResult<Markup> {
    let (head, last) = audit_api::chain_state(state, caller).await?;
    Ok(html! {
        div.chain {
            @match just {
                Some(v) if !v.ok => {
                    p.error { strong { "The chain is broken" }
                        @if let Some(seq) = v.bad_seq { " at " a href=(format!("/console/audit/{seq}")) { "event " (seq) } } ": " (v.message) }
                },
                Some(v) => p { strong { "Verified." } " " (v.message) },
                None => {},
            }
            @match last {
                Some((seq, at)) => p { "Hash chain verified up to event " a href=(format!("/console/audit/{seq}")) { (seq) }
                    " (" (readable_time(&crate::wire::time(at))) ")"
                    @if head > seq { "; " (head - seq) " newer events not verified yet." } @else { "; nothing newer." } },
                None => p { "The hash chain has not been verified yet (" (head) " events)." },
            }
            form.inline method="post" action="/console/audit/verify" {
                (token_input(token))
                button type="submit" { "Verify the chain now" }
            }
        }
    })
}

pub(super) async fn verify(State(state): State<AppState>, p: Posted<super::Nothing>) -> Response {
    let again = p.caller.clone();
    match audit_api::check(&state, &p.caller).await {
        Ok(v) => render(&state, again, &Filter::default(), Some(v)).await,
        Err(e) => failed(&e),
    }
}

/// Rows a follow request returns at most.
const FOLLOW_BATCH: u32 = 200;

/// The rows after `after`, for the page's script to put on top: the same
/// filters, the same rendering, newest first; `X-Infra-More: true` when
/// more follow them (the script asks again at once).
pub(super) async fn rows(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
) -> Response {
    // Oldest first from `after`, a batch at a time: a burst of events is
    // shown in full, over as many requests as it takes, never skipped.
    let mut q = Filter { page: None, ..f }.query(FOLLOW_BATCH);
    q.newest_first = false;
    match events(&state, caller, q).await {
        Ok(l) => {
            let more = l.total_count > l.items.len() as u64;
            let html = html! { @for e in l.items.iter().rev() { (row(e)) } }.into_string();
            let more = if more { "true" } else { "false" };
            (
                [
                    (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (axum::http::HeaderName::from_static("x-infra-more"), more),
                ],
                html,
            )
                .into_response()
        }
        Err(e) => failed(&e),
    }
}

/// One event in full, with its place in the chain.
pub(super) async fn one(State(state): State<AppState>, Signed(caller): Signed, Path(seq): Path<i64>) -> Response {
    let v = Viewer::of(&state, &caller);

    let q = AuditQuery {
        after: Some(seq.saturating_sub(1)),
        limit: Some(1),
        ..Default::default()
    };
    let found = match events(&state, caller, q).await {
        Ok(l) => l.items.into_iter().find(|e| e.seq == seq),
        Err(e) => return failed(&e),
    };
    let Some(e) = found else {
        return failed(&crate::error::ApiError::not_found(format!(
            "there is no event {seq} (it may have been archived and pruned)"
        )));
    };
    let body = html! {
        p.crumbs { a href="/console/audit" { "Audit" } " / " }
        h1 { "Event " (e.seq) }
        dl.facts {
            dt { "Time" } dd { time datetime=(e.time) { (e.time) } }
            dt { "Actor" } dd { (e.actor) }
            dt { "Action" } dd { code { (e.action) } }
            dt { "Target" } dd { (e.target) }
            dt { "Result" } dd { span class=(format!("result {}", result_class(&e.result))) { (e.result) } }
            dt { "From" } dd { (e.source) }
            dt { "Detail" } dd { pre.detail { (e.detail) } }
            dt { "Hash" } dd { code { (e.hash) } }
            dt { "Previous hash" } dd { code { (e.prev_hash) } }
        }
        nav.pager aria-label="Events" {
            @if e.seq > 1 { a href=(format!("/console/audit/{}", e.seq - 1)) rel="prev" { "Previous event" } }
            a href=(format!("/console/audit/{}", e.seq + 1)) rel="next" { "Next event" }
        }
    };
    v.page(StatusCode::OK, "Audit", body)
}
