//! *Requests*: asking for access for a while, your requests, the ones you
//! may review, and one request in full with what it would give next to
//! what the requester holds now. Through the API's `/api/requests` and
//! `/api/access-policies` handlers; the policy decides, not the page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use infra_api::{AccessPolicy, AccessRequest, CreateAccessRequest, RequestQuery, ReviewRequest};
use maud::{Markup, html};

use super::form::{FieldError, Posted, Signed, Viewer, about_the_form, enc, failed, field, given, token_input};
use super::people::Outcome;
use super::readable_time;
use crate::api::{request_policies, requests};
use crate::authn::Caller;
use crate::extract::{Body, Query};
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Ask {
    #[serde(default)]
    resources: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    group: String,
    #[serde(default, rename = "for")]
    duration: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    break_glass: Option<String>,
}

/// The policies `caller` may request under.
pub(super) async fn offers(state: &AppState, caller: &Caller) -> Result<Vec<AccessPolicy>, Response> {
    let mine: Vec<String> = caller.groups.iter().map(|g| g.name.clone()).collect();
    match request_policies::list(State(state.clone()), caller.clone()).await {
        Ok(all) => Ok(all
            .0
            .into_iter()
            .filter(|p| p.requesters.iter().any(|r| mine.contains(r)))
            .collect()),
        Err(e) => Err(failed(&e)),
    }
}

async fn listed(state: &AppState, caller: &Caller, mine: bool) -> Result<Vec<AccessRequest>, Response> {
    let q = RequestQuery {
        mine,
        to_review: !mine,
        limit: Some(50),
        ..Default::default()
    };
    requests::list(State(state.clone()), caller.clone(), Query(q))
        .await
        .map(|p| p.0.items)
        .map_err(|e| failed(&e))
}

/// What a request asks for, in a line.
fn asked(r: &AccessRequest) -> String {
    r.asks
        .iter()
        .map(|a| match (&a.role, &a.resource, &a.group) {
            (Some(role), Some(res), _) => format!("{role} on {res}"),
            (_, _, Some(g)) => format!("group {g}"),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn state_badge(r: &AccessRequest) -> Markup {
    html! {
        span class=(format!("badge state-{}", match r.state.as_str() {
            "approved" => "approved", "pending" => "pending", _ => "closed",
        })) { (r.state) @if r.break_glass { " · break-glass" } }
    }
}

fn list_table(items: &[AccessRequest], who: bool) -> Markup {
    html! {
        table {
            caption.visually-hidden { "Requests" }
            thead { tr {
                @if who { th scope="col" { "Requester" } }
                th scope="col" { "Asks for" } th scope="col" { "For" } th scope="col" { "State" } th scope="col" { "Approvals" } th scope="col" { "Asked" }
            } }
            tbody {
                @for r in items {
                    tr {
                        @if who { td { (r.requester) } }
                        td data-label="Asks for" { a href=(format!("/console/requests/{}", enc(&r.id))) { (asked(r)) } }
                        td data-label="For" { (r.duration) }
                        td data-label="State" { (state_badge(r)) }
                        td data-label="Approvals" { (r.approvals) "/" (r.approvals_needed) }
                        td data-label="Asked" { (readable_time(&r.created)) }
                    }
                }
            }
        }
    }
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(prefill): axum::extract::Query<Ask>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Filled in from a link only when the link is on this site.
    let from_here = super::form::from_here(&headers);
    // Never break-glass from a link: that box is ticked by hand.
    let sent = if from_here {
        Ask {
            break_glass: None,
            ..prefill
        }
    } else {
        Ask::default()
    };
    render(
        &state,
        caller,
        Outcome {
            sent,
            ..Default::default()
        },
    )
    .await
}

async fn render(state: &AppState, caller: Caller, out: Outcome<Ask>) -> Response {
    let v = Viewer::of(state, &caller);
    let token = v.token.clone();

    let offers = match offers(state, &caller).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (mine, to_review) = match (listed(state, &caller, true).await, listed(state, &caller, false).await) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let err = out.error.as_ref();
    let at = |f| FieldError::at(err, "ask", f);
    let sent = &out.sent;
    let body = html! {
        h1 { "Requests" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        @if !to_review.is_empty() {
            h2 { "Waiting for your review" }
            (list_table(&to_review, true))
        }
        h2 { "Ask for access" }
        @if offers.is_empty() {
            div.empty { p { "No access policy lets you request anything. An admin adds one with " code { "infra access-policy add" } "." } }
        } @else {
            p.lead { "For a while, with a reason. What you may ask for:" }
            ul.members {
                @for p in &offers {
                    li {
                        strong { (p.name) } ": "
                        @if !p.roles.is_empty() { (p.roles.join(" or ")) " on " code { (p.resources.join(", ")) } }
                        @if !p.groups.is_empty() { @if !p.roles.is_empty() { "; " } "membership of " (p.groups.join(", ")) }
                        ", up to " (p.max)
                        @if p.approvers.is_empty() { "" } @else { ", approved by " (p.approvers.join(" or ")) }
                        @if !p.auto_approve.is_empty() { " (" (p.auto_approve.join(", ")) " at once)" }
                        @if let Some(b) = &p.break_glass { " · break-glass up to " (b) }
                    }
                }
            }
            form.stack method="post" action="/console/requests" {
                (token_input(&token))
                (field("r-resources", "Destinations (space-separated; DEST or DEST.NAMESPACE)", "resources", &sent.resources, at("resources"), ("text", "prod.payments", false)))
                (field("r-role", "Role", "role", &sent.role, at("role"), ("text", "view", false)))
                (field("r-group", "Or a group's membership", "group", &sent.group, at("group"), ("text", "", false)))
                (field("r-for", "For how long", "for", &sent.duration, at("for"), ("text", "2h", true)))
                (field("r-reason", "Why (a ticket, an incident)", "reason", &sent.reason, at("reason"), ("text", "INC-1234", true)))
                @if offers.iter().any(|p| p.break_glass.is_some()) {
                    label.choice { input type="checkbox" name="break_glass" value="yes" checked[sent.break_glass.is_some()]; " Break-glass: approve it myself (flagged and notified)" }
                }
                button.primary type="submit" { "Ask" }
            }
        }
        h2 { "Your requests" }
        @if mine.is_empty() { div.empty { p { "You have asked for nothing yet." } } } @else { (list_table(&mine, false)) }
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Requests", body)
}

pub(super) async fn ask(State(state): State<AppState>, p: Posted<Ask>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let req = CreateAccessRequest {
        resources: form.resources.split_whitespace().map(str::to_owned).collect(),
        role: given(&form.role),
        group: given(&form.group),
        duration: form.duration.trim().to_owned(),
        reason: form.reason.clone(),
        break_glass: form.break_glass.is_some(),
    };
    match requests::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, r)) => Redirect::to(&format!("/console/requests/{}", enc(&r.0.id))).into_response(),
        Err(e) if about_the_form(&e) || e.status == StatusCode::FORBIDDEN => {
            let m = e.message.to_ascii_lowercase();
            let field = if m.contains("duration") || m.contains("at most") {
                "for"
            } else if m.contains("reason") {
                "reason"
            } else if m.contains("group") && !form.group.is_empty() {
                "group"
            } else if m.contains("role") && !m.contains("policy") {
                "role"
            } else {
                "resources"
            };
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("ask", field, e)),
                sent: form,
            };
            render(&state, again, out).await
        }
        Err(e) => failed(&e),
    }
}

/// One request: what it gives, next to what the requester holds; its
/// reviews; the decisions the caller may take.
pub(super) async fn one(State(state): State<AppState>, Signed(caller): Signed, Path(id): Path<String>) -> Response {
    render_one(&state, caller, &id, None).await
}

async fn render_one(state: &AppState, caller: Caller, id: &str, problem: Option<String>) -> Response {
    let v = Viewer::of(state, &caller);
    let token = v.token.clone();

    let r = match requests::get_one(State(state.clone()), caller.clone(), Path(id.to_owned())).await {
        Ok(r) => r.0,
        Err(e) => return failed(&e),
    };
    let mine = r.requester == v.email;
    let pending = r.state == "pending";
    let base = format!("/console/requests/{}", enc(&r.id));
    let held = |res: &str, role: &str| {
        r.current.as_ref().is_some_and(|c| {
            c.iter()
                .any(|g| g.role == role && (g.resource == res || res.starts_with(&format!("{}.", g.resource))))
        })
    };
    let body = html! {
        p.crumbs { a href="/console/requests" { "Requests" } " / " }
        h1 { "Request by " (r.requester) " " (state_badge(&r)) }
        @if let Some(p) = &problem { p.error role="alert" { (p) } }
        @if r.break_glass { p.notice role="status" { strong { "Break-glass:" } " approved by the requester, without review." } }
        dl.facts {
            dt { "Reason" } dd { (r.reason) }
            dt { "For" } dd { (r.duration) @if let Some(u) = &r.grants_until { " · until " (readable_time(u)) } }
            dt { "Policy" } dd { (r.policy) }
            dt { "Approvals" } dd { (r.approvals) " of " (r.approvals_needed) }
            @if pending { dt { "Expires unreviewed" } dd { (readable_time(&r.review_by)) } }
        }
        h2 { "What it gives" }
        ul.members {
            @for a in &r.asks {
                li {
                    (a.means)
                    @if let (Some(role), Some(res)) = (&a.role, &a.resource) {
                        @if r.current.is_some() {
                            " " @if held(res, role) { span.badge { "held already" } } @else { span.badge.new-access { "new" } }
                        }
                    }
                }
            }
        }
        @if let Some(now) = &r.current {
            h2 { (r.requester) " holds now" }
            @if now.is_empty() { div.empty { p { "Nothing." } } } @else {
                ul.members {
                    @for g in now {
                        li { (g.role) " on " (g.resource) @if let Some(gr) = &g.group { " (group " (gr) ")" } @if let Some(e) = &g.expires { " until " (readable_time(e)) } }
                    }
                }
            }
        }
        @if !r.reviews.is_empty() {
            h2 { "Reviews" }
            ul.members {
                @for v in &r.reviews {
                    li { strong { (v.decision) } " by " (v.reviewer) ", " (readable_time(&v.at)) @if !v.reason.is_empty() { ": " (v.reason) } }
                }
            }
        }
        @if r.may_review {
            form.stack method="post" action=(format!("{base}/review")) {
                (token_input(&token))
                (field("v-reason", "Reason (shown to the requester and in the audit log)", "reason", "", None, ("text", "", false)))
                div.row {
                    button.primary type="submit" name="decision" value="approve" { "Approve" }
                    " "
                    button.danger type="submit" name="decision" value="deny" { "Deny" }
                }
            }
        }
        @if pending && mine {
            form.inline method="post" action=(format!("{base}/cancel")) {
                (token_input(&token))
                button.danger type="submit" { "Cancel this request" }
            }
        }
    };
    let status = if problem.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    v.page(status, "Requests", body)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Review {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn review(State(state): State<AppState>, Path(id): Path<String>, p: Posted<Review>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let body = Body(ReviewRequest { reason: form.reason });
    let done = match form.decision.as_str() {
        "approve" => requests::approve(State(state.clone()), caller, Path(id.clone()), body).await,
        "deny" => requests::deny(State(state.clone()), caller, Path(id.clone()), body).await,
        _ => return failed(&crate::error::ApiError::bad_request("approve or deny")),
    };
    match done {
        Ok(_) => Redirect::to(&format!("/console/requests/{}", enc(&id))).into_response(),
        Err(e) if e.status == StatusCode::CONFLICT => render_one(&state, again, &id, Some(e.message)).await,
        Err(e) => failed(&e),
    }
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    super::form::then_to(
        requests::cancel(State(state), p.caller, Path(id.clone())).await,
        &format!("/console/requests/{}", enc(&id)),
    )
}
