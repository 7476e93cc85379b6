//! Just-in-time access: requests and their reviews. The rules are
//! `infra_core::request`'s; the policies are `request_policies.rs`; what a
//! decision grants, and its end, are `request_grants.rs`.
//!
//! Every step is one write transaction, so two reviewers approving at once,
//! or a cancel racing an approval, end in exactly one outcome (the writers'
//! lock orders them; the state moves only from `pending`). Every step is an
//! audit event whose detail starts `request=ID`: `infra audit list
//! --request ID` is the whole story.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::{AccessRequest, CreateAccessRequest, RequestQuery, RequestReview, RequestedAccess, ReviewRequest};
use infra_core::request::{Ask, Decision, Policy, Reviewer, State as RequestState, after_review};
use infra_core::{GroupName, InfraRole, Resource, Role, parse_duration};
use infra_store::requests::{self, RequestFilter, RequestRow, ReviewRow};
use infra_store::{identity, new_id, now_ms};

use super::request_grants::{self, means};
use super::request_policies::{find_policy, policies};
use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{ms, page_of, paging, time};

/// What the caller asks for, parsed.
fn asks_of(req: &CreateAccessRequest) -> ApiResult<Vec<Ask>> {
    match (&req.role, &req.group, req.resources.is_empty()) {
        (Some(role), None, false) => {
            let role = Role::parse(role)?;
            req.resources
                .iter()
                .map(|r| {
                    Ok(Ask::Grant {
                        role: role.clone(),
                        resource: Resource::parse(r)?,
                    })
                })
                .collect()
        }
        (None, Some(g), true) => Ok(vec![Ask::Membership {
            group: GroupName::parse(g)?,
        }]),
        _ => Err(ApiError::bad_request(
            "ask for a role on one or more destinations (--role with DESTINATION...), or for a group (--group)",
        )),
    }
}

fn group_names(caller: &Caller) -> Vec<String> {
    caller.groups.iter().map(|g| g.name.clone()).collect()
}

fn reviewer(caller: &Caller) -> (String, Vec<String>, bool) {
    (
        caller.user.id.clone(),
        group_names(caller),
        caller.role == Some(InfraRole::Admin),
    )
}

/// The stored asks of a request.
fn stored_asks(row: &RequestRow) -> ApiResult<Vec<Ask>> {
    serde_json::from_str(&row.asks).map_err(ApiError::internal)
}

/// Ask for access.
#[utoipa::path(post, path = "/api/requests", tag = "requests", request_body = CreateAccessRequest,
    responses((status = 201, body = AccessRequest), (status = 403, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateAccessRequest>,
) -> ApiResult<(StatusCode, Json<AccessRequest>)> {
    let asks = asks_of(&req)?;
    let duration = ms(parse_duration(&req.duration)?);
    // One line of plain text: it goes into audit details, tables and team
    // channels.
    let reason: String = req
        .reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::bad_request(
            "give a reason (a ticket, an incident), at most 500 characters",
        ));
    }
    let what = asks.iter().map(Ask::describe).collect::<Vec<_>>().join(", ");
    let target = asks.first().map(target_of).unwrap_or_default();
    let now = now_ms();
    let mut tx = state.store.write().await?;
    let all = policies(tx.conn()).await?;
    let chosen = match find_policy(&all, &group_names(&caller), &asks, duration, req.break_glass) {
        Ok(p) => request_grants::admissible(tx.conn(), &caller.user.id, &asks, req.break_glass, now)
            .await?
            .map_or(Ok(p), Err),
        Err(why) => Err(why),
    };
    let (doc, policy, review_ms) = match chosen {
        Ok(p) => p,
        Err(why) => {
            drop(tx);
            let ev = caller
                .event("request.create", &target)
                .result("denied")
                .detail(format!("asked {what} for {}: {why}", req.duration));
            audit::record(&state, ev).await?;
            return Err(ApiError::forbidden(format!(
                "you may not request {what}: {why}; see 'infra access-policy list' or ask an admin"
            )));
        }
    };
    // Only now, for a request a policy allows: what the cluster offers.
    for a in &asks {
        if let Ask::Grant { role, resource } = a {
            super::grants::check_inventory(tx.conn(), resource, role).await?;
        }
    }
    let id = new_id()?;
    let at_once = req.break_glass || policy.auto_approves(&group_names(&caller), &asks);
    let mut row = RequestRow {
        id: id.clone(),
        requester_id: caller.user.id.clone(),
        requester: caller.user.email.clone(),
        policy: doc.name.clone(),
        asks: serde_json::to_string(&asks).map_err(ApiError::internal)?,
        duration_ms: duration,
        reason: reason.clone(),
        state: RequestState::Pending.as_str().into(),
        approvals_needed: i64::from(policy.approvals_needed(&asks)),
        break_glass: i64::from(req.break_glass),
        created_at: now,
        review_by: now + review_ms,
        decided_at: None,
        grants_until: None,
        grant_ids: "[]".into(),
    };
    requests::insert_request(tx.conn(), &row).await?;
    let mut events = vec![caller.event("request.create", &target).detail(format!(
        "request={id} policy={} asks={what} for={} reason={reason}",
        doc.name, req.duration
    ))];
    if at_once {
        let (until, grants) = request_grants::grant(tx.conn(), &row, &asks, now).await?;
        requests::set_state(tx.conn(), &id, "pending", "approved", now, Some((until, &grants))).await?;
        let (action, how) = if req.break_glass {
            tracing::warn!(requester = %caller.user.email, request = %id, asks = %what, "BREAK-GLASS access granted without review");
            (
                "request.break-glass",
                "BREAK-GLASS: approved by the requester, without review",
            )
        } else {
            ("request.grant", "approved by policy (auto-approve)")
        };
        events.push(
            caller
                .event(action, &target)
                .detail(format!("request={id} {how}; until={} grants={grants}", time(until))),
        );
        row.state = "approved".into();
    }
    audit::commit_all(&state, tx, events).await?;
    let out = to_api(&state, &caller, &id).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

fn target_of(a: &Ask) -> String {
    match a {
        Ask::Grant { resource, .. } => resource.as_str().to_owned(),
        Ask::Membership { group } => group.as_str().to_owned(),
    }
}

/// List requests: your own (`mine`), those you may review (`toReview`),
/// or with `view` on Infra, everyone's.
#[utoipa::path(get, path = "/api/requests", tag = "requests", params(RequestQuery),
    responses((status = 200, body = infra_api::Page<AccessRequest>)), security(("accessKey" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RequestQuery>,
) -> ApiResult<Json<infra_api::Page<AccessRequest>>> {
    let (page, limit) = paging(q.page, q.limit)?;
    if let Some(s) = &q.state
        && RequestState::parse(s).is_none()
    {
        return Err(ApiError::bad_request(
            "invalid state: use pending, approved, denied, expired, cancelled or ended",
        ));
    }
    let mut c = state.store.conn().await?;
    let mut f = RequestFilter {
        requester_id: None,
        state: q.state.clone(),
    };
    // The policies once for the whole page, not once per request.
    let all = policies(&mut c).await?;
    let chosen: Vec<RequestRow>;
    let total;
    if q.to_review {
        // Pending ones this caller may review, decided by each one's policy.
        f.state = Some("pending".into());
        let (rows, _) = requests::requests(&mut c, &f, 1, infra_api::MAX_LIMIT).await?;
        let (id, groups, admin) = reviewer(&caller);
        let me = Reviewer {
            id: &id,
            groups: &groups,
            infra_admin: admin,
        };
        let mine: Vec<RequestRow> = rows
            .into_iter()
            .filter(|r| {
                all.iter()
                    .find(|(d, _, _)| d.name == r.policy)
                    .is_some_and(|(_, p, _)| p.may_review(&me, &r.requester_id).is_ok())
            })
            .collect();
        total = mine.len() as u64;
        let start = usize::try_from((page - 1) * limit).unwrap_or(usize::MAX);
        chosen = mine.into_iter().skip(start).take(limit as usize).collect();
    } else {
        let everyone = !q.mine && caller.role.is_some_and(|r| r.satisfies(InfraRole::View));
        if !everyone {
            f.requester_id = Some(caller.user.id.clone());
        }
        let (rows, n) = requests::requests(&mut c, &f, page, limit).await?;
        total = n;
        chosen = rows;
    }
    let mut out = Vec::with_capacity(chosen.len());
    for row in chosen {
        out.push(shown(&mut c, &caller, row, &all).await?);
    }
    Ok(page_of(out, page, limit, total))
}

/// One request with its reviews; for a reviewer, also what the requester
/// holds now.
#[utoipa::path(get, path = "/api/requests/{id}", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = AccessRequest), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessRequest>> {
    Ok(Json(to_api(&state, &caller, &id).await?))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "request not found: {}; see 'infra request list'",
        id.chars().take(32).collect::<String>()
    ))
}

/// Whether `caller` may see request `row`: its requester, whoever may
/// review it, and anyone with `view` on Infra. Others get the same 404 as
/// for a request that does not exist.
fn may_see(caller: &Caller, row: &RequestRow, policy: Option<&Policy>) -> bool {
    let (id, groups, admin) = reviewer(caller);
    let me = Reviewer {
        id: &id,
        groups: &groups,
        infra_admin: admin,
    };
    row.requester_id == caller.user.id
        || caller.role.is_some_and(|r| r.satisfies(InfraRole::View))
        || policy.is_some_and(|p| p.may_review(&me, &row.requester_id).is_ok())
}

pub(crate) async fn to_api(state: &AppState, caller: &Caller, id: &str) -> ApiResult<AccessRequest> {
    let mut c = state.store.conn().await?;
    let row = requests::request(&mut c, id).await?.ok_or_else(|| not_found(id))?;
    let all = policies(&mut c).await?;
    shown(&mut c, caller, row, &all).await
}

/// Request `row` as `caller` may see it (or the 404 of one that does not
/// exist), given every policy.
async fn shown(
    c: &mut infra_store::Conn,
    caller: &Caller,
    row: RequestRow,
    all: &[(infra_api::AccessPolicy, Policy, i64)],
) -> ApiResult<AccessRequest> {
    let id = row.id.as_str();
    let policy = all.iter().find(|(d, _, _)| d.name == row.policy).map(|(_, p, _)| p);
    if !may_see(caller, &row, policy) {
        return Err(not_found(id));
    }
    let asks = stored_asks(&row)?;
    let mut shown = Vec::with_capacity(asks.len());
    for a in &asks {
        let (kind, role, resource, group) = match a {
            Ask::Grant { role, resource } => (
                "grant",
                Some(role.as_str().to_owned()),
                Some(resource.as_str().to_owned()),
                None,
            ),
            Ask::Membership { group } => ("membership", None, None, Some(group.as_str().to_owned())),
        };
        shown.push(RequestedAccess {
            kind: kind.into(),
            role,
            resource,
            group,
            means: means(c, a).await?,
        });
    }
    let reviews = requests::reviews(c, id).await?;
    let current = if row.requester_id == caller.user.id {
        None
    } else {
        let groups = identity::groups_of_user(c, &row.requester_id).await?;
        let f = infra_store::GrantFilter {
            user_id: Some(row.requester_id.clone()),
            via_groups: groups.into_iter().map(|g| g.id).collect(),
            ..Default::default()
        };
        let (held, _) = identity::list_grants(c, &f, now_ms(), 1, infra_api::MAX_LIMIT).await?;
        // Only what bears on this request: the destinations it asks for
        // (everything, for a membership, which may reach anywhere).
        let dests: Vec<&str> = asks
            .iter()
            .filter_map(|a| match a {
                Ask::Grant { resource, .. } => Some(resource.destination()),
                Ask::Membership { .. } => None,
            })
            .collect();
        let all = asks.iter().any(|a| matches!(a, Ask::Membership { .. }));
        Some(
            held.iter()
                .filter(|g| {
                    all || dests
                        .iter()
                        .any(|d| g.resource == *d || g.resource.starts_with(&format!("{d}.")))
                })
                .map(super::grants::to_api)
                .collect(),
        )
    };
    let may_review = row.state == "pending"
        && policy.is_some_and(|p| {
            let (id, groups, admin) = reviewer(caller);
            p.may_review(
                &Reviewer {
                    id: &id,
                    groups: &groups,
                    infra_admin: admin,
                },
                &row.requester_id,
            )
            .is_ok()
        });
    let approvals = reviews.iter().filter(|r| r.decision == "approve").count();
    Ok(AccessRequest {
        id: row.id.clone(),
        requester: row.requester.clone(),
        policy: row.policy.clone(),
        asks: shown,
        duration: infra_core::format_duration(std::time::Duration::from_millis(
            u64::try_from(row.duration_ms).unwrap_or(0),
        )),
        reason: row.reason.clone(),
        state: row.state.clone(),
        approvals_needed: u32::try_from(row.approvals_needed).unwrap_or(1),
        approvals: u32::try_from(approvals).unwrap_or(0),
        break_glass: row.break_glass != 0,
        created: time(row.created_at),
        review_by: time(row.review_by),
        decided: row.decided_at.map(time),
        grants_until: row.grants_until.map(time),
        reviews: reviews
            .into_iter()
            .map(|r| RequestReview {
                reviewer: r.reviewer,
                decision: r.decision,
                reason: r.reason,
                at: time(r.at),
            })
            .collect(),
        current,
        may_review,
    })
}

/// Approve a request: once it has the approvals its policy needs, its
/// grants are made, ending by themselves.
#[utoipa::path(post, path = "/api/requests/{id}/approve", tag = "requests", params(("id" = String, Path)), request_body = ReviewRequest,
    responses((status = 200, body = AccessRequest), (status = 403, body = infra_api::ErrorBody), (status = 409, body = infra_api::ErrorBody)),
    security(("accessKey" = [])))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ReviewRequest>,
) -> ApiResult<Json<AccessRequest>> {
    review(&state, &caller, &id, Decision::Approve, req.reason).await?;
    Ok(Json(to_api(&state, &caller, &id).await?))
}

/// Deny a request: final.
#[utoipa::path(post, path = "/api/requests/{id}/deny", tag = "requests", params(("id" = String, Path)), request_body = ReviewRequest,
    responses((status = 200, body = AccessRequest), (status = 403, body = infra_api::ErrorBody), (status = 409, body = infra_api::ErrorBody)),
    security(("accessKey" = [])))]
pub(crate) async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ReviewRequest>,
) -> ApiResult<Json<AccessRequest>> {
    review(&state, &caller, &id, Decision::Deny, req.reason).await?;
    Ok(Json(to_api(&state, &caller, &id).await?))
}

async fn review(state: &AppState, caller: &Caller, id: &str, d: Decision, reason: String) -> ApiResult<()> {
    let reason = reason.trim().chars().take(500).collect::<String>();
    let word = match d {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    let now = now_ms();
    let mut tx = state.store.write().await?;
    let row = requests::request(tx.conn(), id).await?.ok_or_else(|| not_found(id))?;
    let all = policies(tx.conn()).await?;
    let Some((_, policy, _)) = all.iter().find(|(d, _, _)| d.name == row.policy) else {
        return Err(ApiError::conflict(format!(
            "policy {} was removed: nobody may review this request now; it expires unreviewed",
            row.policy
        )));
    };
    let (me, groups, admin) = reviewer(caller);
    let who = Reviewer {
        id: &me,
        groups: &groups,
        infra_admin: admin,
    };
    if let Err(why) = policy.may_review(&who, &row.requester_id) {
        drop(tx);
        if !may_see(caller, &row, Some(policy)) {
            return Err(not_found(id));
        }
        let ev = caller
            .event(
                if d == Decision::Approve {
                    "request.approve"
                } else {
                    "request.deny"
                },
                &row.requester,
            )
            .result("denied")
            .detail(format!("request={id} refused: {why}"));
        audit::record(state, ev).await?;
        return Err(ApiError::forbidden(why.0));
    }
    let reviews = requests::reviews(tx.conn(), id).await?;
    let approvals = u32::try_from(reviews.iter().filter(|r| r.decision == "approve").count()).unwrap_or(0);
    let current = RequestState::parse(&row.state).unwrap_or(RequestState::Expired);
    let asks = stored_asks(&row)?;
    // The policy as it is now: at least as many approvals as when asked,
    // and an approval only for what it still allows this requester.
    let needed = u32::try_from(row.approvals_needed)
        .unwrap_or(1)
        .max(policy.approvals_needed(&asks));
    if current == RequestState::Pending && d == Decision::Approve {
        still_fits(tx.conn(), &row, policy, &asks, now).await?;
    }
    let next = after_review(current, approvals, needed, d).map_err(|r| ApiError::conflict(r.0))?;
    match requests::add_review(
        tx.conn(),
        &ReviewRow {
            request_id: id.to_owned(),
            reviewer_id: me.clone(),
            reviewer: caller.user.email.clone(),
            decision: word.into(),
            reason: reason.clone(),
            at: now,
        },
    )
    .await
    {
        Ok(()) => {}
        Err(infra_store::StoreError::Conflict) => {
            return Err(ApiError::conflict(
                "you reviewed this request already; another reviewer must approve it",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let action = if d == Decision::Approve {
        "request.approve"
    } else {
        "request.deny"
    };
    let mut events = vec![caller.event(action, &row.requester).detail(format!(
        "request={id} approvals={}/{needed} reason={reason}",
        approvals + u32::from(d == Decision::Approve)
    ))];
    match next {
        RequestState::Approved => {
            let (until, grants) = request_grants::grant(tx.conn(), &row, &asks, now).await?;
            if !requests::set_state(tx.conn(), id, "pending", "approved", now, Some((until, &grants))).await? {
                return Err(ApiError::conflict("the request was decided meanwhile"));
            }
            events.push(caller.event("request.grant", &row.requester).detail(format!(
                "request={id} approved by {}; until={} grants={grants}",
                caller.user.email,
                time(until)
            )));
        }
        RequestState::Denied => {
            let moved = requests::set_state(tx.conn(), id, "pending", "denied", now, None).await?;
            if !moved {
                return Err(ApiError::conflict("the request was decided meanwhile"));
            }
        }
        _ => {}
    }
    Ok(audit::commit_all(state, tx, events).await?)
}

/// Refuses to approve `row` unless it still fits `policy` as it is now:
/// not past its review time, the requester still one the policy names,
/// what it asks still covered (and no group that has become powerful).
async fn still_fits(
    c: &mut infra_store::Conn,
    row: &RequestRow,
    policy: &Policy,
    asks: &[Ask],
    now: i64,
) -> ApiResult<()> {
    if now >= row.review_by {
        return Err(ApiError::conflict("the request was not reviewed in time: it expires"));
    }
    let groups: Vec<String> = identity::groups_of_user(c, &row.requester_id)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    let why = match policy.allows(&groups, asks, row.duration_ms) {
        Err(why) => Some(why.0),
        Ok(()) => request_grants::admissible(c, "", asks, false, now).await?,
    };
    match why {
        Some(why) => Err(ApiError::conflict(format!(
            "the request no longer fits policy {}: {why}; deny it, and ask again if it should be",
            row.policy
        ))),
        None => Ok(()),
    }
}

/// Withdraw your own pending request.
#[utoipa::path(post, path = "/api/requests/{id}/cancel", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = AccessRequest), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessRequest>> {
    let mut tx = state.store.write().await?;
    let row = requests::request(tx.conn(), &id).await?.ok_or_else(|| not_found(&id))?;
    if row.requester_id != caller.user.id && caller.role != Some(InfraRole::Admin) {
        return Err(not_found(&id));
    }
    if !requests::set_state(tx.conn(), &id, "pending", "cancelled", now_ms(), None).await? {
        return Err(ApiError::conflict(format!(
            "the request is {} already: only a pending request can be cancelled",
            row.state
        )));
    }
    let ev = caller
        .event("request.cancel", &row.requester)
        .detail(format!("request={id}"));
    audit::commit(&state, tx, ev).await?;
    Ok(Json(to_api(&state, &caller, &id).await?))
}
