//! Access policies: who may request what, for how long, approved by whom.
//! Kept as the API wrote them; read into `infra_core::request::Policy`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use infra_api::AccessPolicy;
use infra_core::request::{Approvers, Ask, Policy, ResourcePattern};
use infra_core::{GroupName, InfraRole, Role, parse_duration};
use infra_store::now_ms;
use infra_store::requests::{self, PolicyRow};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;
use crate::wire::{ms, time};

/// The approver word for the admins of Infra.
pub(crate) const INFRA_ADMINS: &str = "infra-admins";

/// How long a request waits for review unless its policy says.
const DEFAULT_REVIEW_MS: i64 = 24 * 3_600_000;

/// A policy as the rules read it, and how long its requests wait.
pub(crate) fn parse(p: &AccessPolicy) -> ApiResult<(Policy, i64)> {
    let groups = |v: &[String]| v.iter().map(|g| GroupName::parse(g)).collect::<Result<Vec<_>, _>>();
    let roles = |v: &[String]| v.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>();
    let policy = Policy {
        name: p.name.clone(),
        requesters: groups(&p.requesters)?,
        roles: roles(&p.roles)?,
        resources: p
            .resources
            .iter()
            .map(|r| ResourcePattern::parse(r))
            .collect::<Result<_, _>>()?,
        groups: groups(&p.groups)?,
        max_ms: ms(parse_duration(&p.max)?),
        approvers: p
            .approvers
            .iter()
            .map(|a| {
                if a == INFRA_ADMINS {
                    Ok(Approvers::InfraAdmins)
                } else {
                    GroupName::parse(a).map(Approvers::Group)
                }
            })
            .collect::<Result<_, _>>()?,
        approvals: p.approvals,
        approvals_for: p
            .approvals_for
            .iter()
            .map(|(r, n)| Ok((Role::parse(r)?, *n)))
            .collect::<Result<_, infra_core::NameError>>()?,
        auto_approve: roles(&p.auto_approve)?,
        auto_approve_members: groups(&p.auto_approve_members)?,
        break_glass_ms: p.break_glass.as_deref().map(parse_duration).transpose()?.map(ms),
    };
    policy.check().map_err(|r| ApiError::bad_request(r.0))?;
    let review = p
        .review_within
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map_or(DEFAULT_REVIEW_MS, ms);
    if review <= 0 {
        return Err(ApiError::bad_request(
            "reviewWithin is a positive duration, such as 24h",
        ));
    }
    Ok((policy, review))
}

/// Every policy, parsed, by name.
pub(crate) async fn policies(c: &mut infra_store::Conn) -> ApiResult<Vec<(AccessPolicy, Policy, i64)>> {
    let mut out = Vec::new();
    for row in requests::policies(c).await? {
        let mut doc: AccessPolicy = serde_json::from_str(&row.doc).map_err(ApiError::internal)?;
        doc.created = Some(time(row.created_at));
        doc.created_by = Some(row.created_by);
        let (p, review) = parse(&doc)?;
        out.push((doc, p, review));
    }
    Ok(out)
}

/// The first policy (by name) under which a member of `groups` may ask
/// for `asks` for `for_ms` (and break-glass, if asked); else why not.
pub(crate) fn find_policy(
    all: &[(AccessPolicy, Policy, i64)],
    groups: &[String],
    asks: &[Ask],
    for_ms: i64,
    break_glass: bool,
) -> Result<(AccessPolicy, Policy, i64), String> {
    let mut why = None;
    for (doc, p, review) in all {
        match p.allows(groups, asks, for_ms) {
            Ok(()) if !break_glass => return Ok((doc.clone(), p.clone(), *review)),
            Ok(()) => match p.break_glass_ms {
                Some(b) if for_ms <= b => return Ok((doc.clone(), p.clone(), *review)),
                Some(_) => why = Some(format!("policy {} allows break-glass for a shorter time", p.name)),
                None => why = Some(format!("policy {} allows no break-glass", p.name)),
            },
            Err(r) => {
                why.get_or_insert(r.0);
            }
        }
    }
    Err(why.unwrap_or_else(|| "no access policy exists yet".into()))
}

/// List access policies.
#[utoipa::path(get, path = "/api/access-policies", tag = "requests",
    responses((status = 200, body = Vec<AccessPolicy>)), security(("accessKey" = [])))]
pub(crate) async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<AccessPolicy>>> {
    // Anyone signed in: what they may request, and from whom, is theirs to
    // know.
    let mut c = state.store.conn().await?;
    Ok(Json(policies(&mut c).await?.into_iter().map(|(d, _, _)| d).collect()))
}

/// Add an access policy.
#[utoipa::path(post, path = "/api/access-policies", tag = "requests", request_body = AccessPolicy,
    responses((status = 201, body = AccessPolicy), (status = 409, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(mut doc): Body<AccessPolicy>,
) -> ApiResult<(StatusCode, Json<AccessPolicy>)> {
    caller
        .require(&state, InfraRole::Admin, "add access policies", &doc.name)
        .await?;
    doc.created = None;
    doc.created_by = None;
    parse(&doc)?;
    let now = now_ms();
    let row = PolicyRow {
        name: doc.name.clone(),
        doc: serde_json::to_string(&doc).map_err(ApiError::internal)?,
        created_at: now,
        created_by: caller.email().to_owned(),
    };
    let mut tx = state.store.write().await?;
    match requests::put_policy(tx.conn(), &row).await {
        Ok(()) => {}
        Err(infra_store::StoreError::Conflict) => {
            return Err(ApiError::conflict(format!("access policy {} exists already", doc.name)));
        }
        Err(e) => return Err(e.into()),
    }
    let ev = caller.event("request-policy.create", &doc.name).detail(row.doc.clone());
    audit::commit(&state, tx, ev).await?;
    doc.created = Some(time(now));
    doc.created_by = Some(caller.email().to_owned());
    Ok((StatusCode::CREATED, Json(doc)))
}

/// Remove an access policy: its pending requests can no longer be
/// approved and expire.
#[utoipa::path(delete, path = "/api/access-policies/{name}", tag = "requests", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove access policies", &name)
        .await?;
    let mut tx = state.store.write().await?;
    if !requests::delete_policy(tx.conn(), &name).await? {
        return Err(ApiError::not_found(format!(
            "no access policy named {}; see 'infra access-policy list'",
            name.chars().take(64).collect::<String>()
        )));
    }
    audit::commit(&state, tx, caller.event("request-policy.delete", &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
