//! What an approved request grants, what each ask means at its
//! destination, and the end of it all: requests not reviewed in time
//! expire, and approved ones end when their time is up.

use infra_core::request::Ask;
use infra_core::{DestinationKind, KUBE_CONNECT_ROLE, SubjectKind};
use infra_store::requests::{self, RequestRow};
use infra_store::{GrantRow, identity, new_id, now_ms};

use crate::audit::Event;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::wire::time;

/// Makes what `row` asks for, for the requester, until `now` plus its
/// duration: a grant per role asked (or, when the requester already holds
/// that grant with an end, that end moved later), a membership per group.
/// Returns the end and what was made (JSON: `grant:ID`, `member:GROUP`).
pub(crate) async fn grant(
    c: &mut infra_store::Conn,
    row: &RequestRow,
    asks: &[Ask],
    now: i64,
) -> ApiResult<(i64, String)> {
    let until = now + row.duration_ms;
    let mut made = Vec::new();
    for a in asks {
        match a {
            Ask::Grant { role, resource } => {
                let g = GrantRow {
                    id: new_id()?,
                    subject_kind: SubjectKind::User,
                    subject_id: row.requester_id.clone(),
                    subject_name: row.requester.clone(),
                    role: role.as_str().to_owned(),
                    resource: resource.as_str().to_owned(),
                    created_at: now,
                    created_by: format!("request:{}", row.id),
                    expires_at: Some(until),
                };
                // Held already (a standing grant, or an earlier request's):
                // its end moves later, if it has one. Looked up first: on
                // PostgreSQL a failed insert would end the transaction.
                let held =
                    identity::extend_user_grant(c, &row.requester_id, role.as_str(), resource.as_str(), until).await?;
                match held {
                    Some(id) => made.push(format!("grant:{id}")),
                    None => {
                        identity::insert_grant(c, &g).await?;
                        made.push(format!("grant:{}", g.id));
                    }
                }
            }
            Ask::Membership { group } => {
                let g = identity::group_by_name(c, group.as_str())
                    .await?
                    .ok_or_else(|| ApiError::conflict(format!("group {} no longer exists", group.as_str())))?;
                // A member already: nothing to take back at the end. Looked
                // up first, as for grants.
                let member = identity::groups_of_user(c, &row.requester_id)
                    .await?
                    .iter()
                    .any(|m| m.id == g.id);
                if !member {
                    identity::add_member(c, &g.id, &row.requester_id).await?;
                    made.push(format!("member:{}", g.id));
                }
            }
        }
    }
    Ok((until, serde_json::to_string(&made).map_err(ApiError::internal)?))
}

/// Pending requests one user may have at once: a flood cannot bury the
/// reviewers' queue.
const MAX_PENDING: u64 = 20;

/// Why `asks` may not be requested now by `user_id` although a policy
/// allows them, if so: a group whose membership would make the requester
/// an admin of Infra or a reviewer (escalation by membership), too many
/// pending requests, or break-glass again while the last still holds.
pub(crate) async fn admissible(
    c: &mut infra_store::Conn,
    user_id: &str,
    asks: &[Ask],
    break_glass: bool,
    now: i64,
) -> ApiResult<Option<String>> {
    for a in asks {
        let Ask::Membership { group } = a else { continue };
        let Some(g) = identity::group_by_name(c, group.as_str()).await? else {
            return Ok(Some(format!("there is no group {}", group.as_str())));
        };
        let f = infra_store::GrantFilter {
            group_id: Some(g.id.clone()),
            resource: Some(infra_core::INFRA_RESOURCE.to_owned()),
            ..Default::default()
        };
        let (_, on_infra) = identity::list_grants(c, &f, now, 1, 1).await?;
        let reviews = super::request_policies::policies(c).await?.iter().any(|(_, p, _)| {
            p.approvers
                .iter()
                .any(|a| matches!(a, infra_core::request::Approvers::Group(r) if r == group))
        });
        if on_infra > 0 || reviews {
            return Ok(Some(format!(
                "membership of {} is not requestable: it holds a role on Infra or reviews requests",
                group.as_str()
            )));
        }
    }
    let mine = requests::RequestFilter {
        requester_id: Some(user_id.to_owned()),
        state: Some("pending".into()),
    };
    let (_, pending) = requests::requests(c, &mine, 1, 1).await?;
    if pending >= MAX_PENDING {
        return Ok(Some(format!(
            "you have {pending} requests waiting for review already; cancel some first"
        )));
    }
    if break_glass {
        let active = requests::RequestFilter {
            requester_id: Some(user_id.to_owned()),
            state: Some("approved".into()),
        };
        let (rows, _) = requests::requests(c, &active, 1, 100).await?;
        if let Some(r) = rows
            .iter()
            .find(|r| r.break_glass != 0 && r.grants_until.is_some_and(|u| u > now))
        {
            return Ok(Some(format!(
                "your break-glass access (request {}) holds until {}: ask for a review to go on",
                r.id,
                r.grants_until.map(time).unwrap_or_default()
            )));
        }
    }
    Ok(None)
}

/// What an ask gives, in its destination's terms.
pub(crate) async fn means(c: &mut infra_store::Conn, a: &Ask) -> ApiResult<String> {
    match a {
        Ask::Grant { role, resource } => {
            let dest = resource.destination();
            let kind = infra_store::connectors::destination(c, dest).await?.map(|d| d.kind);
            let role = role.as_str();
            let scope = match resource.namespace() {
                Some(ns) => format!("in namespace {ns}"),
                None => "in every namespace".to_owned(),
            };
            Ok(match kind {
                Some(DestinationKind::Kubernetes) if role == KUBE_CONNECT_ROLE => {
                    format!("sign in to cluster {dest} as yourself; the cluster's own RBAC decides the rest")
                }
                Some(DestinationKind::Kubernetes) => {
                    let rules = cluster_role_rules(c, dest, role).await?;
                    format!("Kubernetes ClusterRole {role}, bound to you {scope} of cluster {dest}{rules}")
                }
                Some(DestinationKind::Postgres) => {
                    format!("PostgreSQL: connect to {dest} as yourself with the database role {role}")
                }
                Some(DestinationKind::Ssh) => format!("SSH: log in to {dest} as {role}"),
                Some(DestinationKind::Http) => format!("HTTP: reach {dest} with the role {role} (X-Infra-Roles)"),
                None => format!(
                    "role {role} on {}: no connector has registered {dest} yet",
                    resource.as_str()
                ),
            })
        }
        Ask::Membership { group } => {
            let Some(g) = identity::group_by_name(c, group.as_str()).await? else {
                return Ok(format!("membership of {} (no such group yet)", group.as_str()));
            };
            let f = infra_store::GrantFilter {
                group_id: Some(g.id),
                ..Default::default()
            };
            let (held, total) = identity::list_grants(c, &f, now_ms(), 1, 20).await?;
            let list = held
                .iter()
                .map(|h| format!("{} on {}", h.role, h.resource))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(match total {
                0 => format!("membership of {} (it holds no grant now)", group.as_str()),
                n if n > 20 => format!("membership of {}: {list} and {} more", group.as_str(), n - 20),
                _ => format!("membership of {}: {list}", group.as_str()),
            })
        }
    }
}

/// What ClusterRole `role` allows on cluster `dest`, as its connector
/// last reported: ` (allows: RULE; RULE ...)`, or nothing when unknown.
async fn cluster_role_rules(c: &mut infra_store::Conn, dest: &str, role: &str) -> ApiResult<String> {
    let Some((_, Some(json))) = infra_store::connectors::inventory(c, dest).await? else {
        return Ok(String::new());
    };
    let inv: infra_tunnel::proto::Inventory = serde_json::from_str(&json).unwrap_or_default();
    Ok(match inv.role_rules.get(role) {
        None => String::new(),
        Some(r) if r.is_empty() => " (its rules are empty here: an aggregated role the cluster fills in)".to_owned(),
        Some(r) if r.len() > 8 => format!(" (allows: {}; and {} more rules)", r[..8].join("; "), r.len() - 8),
        Some(r) => format!(" (allows: {})", r.join("; ")),
    })
}

/// Ends what is due: pending requests not reviewed in time expire;
/// approved ones whose time is up end (their grants have ended by
/// themselves; memberships they added are taken back). Each in its own
/// transaction, moved only from the state it was read in, so replicas
/// sweeping together do each once.
pub(crate) async fn sweep(state: &AppState) -> ApiResult<()> {
    let now = now_ms();
    let due = {
        let mut c = state.store.conn().await?;
        requests::due(&mut c, now).await?
    };
    for (id, was) in due {
        // One request's trouble does not hold up the others'.
        if let Err(e) = end_one(state, &id, &was, now).await {
            tracing::error!(request = %id, error = %e.message, "access requests: cannot expire or end this request; trying again");
        }
    }
    Ok(())
}

/// Expires or ends request `id`, read as `was`.
async fn end_one(state: &AppState, id: &str, was: &str, now: i64) -> ApiResult<()> {
    let mut tx = state.store.write().await?;
    let Some(row) = requests::request(tx.conn(), id).await? else {
        return Ok(());
    };
    let (to, action) = if was == "pending" {
        ("expired", "request.expire")
    } else {
        ("ended", "request.end")
    };
    if !requests::set_state(tx.conn(), id, was, to, now, None).await? {
        return Ok(());
    }
    let mut taken = Vec::new();
    if to == "ended" {
        let made: Vec<String> = serde_json::from_str(&row.grant_ids).unwrap_or_default();
        for m in made {
            if let Some(group_id) = m.strip_prefix("member:")
                && identity::remove_member(tx.conn(), group_id, &row.requester_id).await?
            {
                taken.push(m.clone());
            }
        }
    }
    let detail = match to {
        "expired" => format!("request={id} not reviewed by {}", time(row.review_by)),
        _ => format!(
            "request={id} time up at {}; memberships taken back: {}",
            row.grants_until.map(time).unwrap_or_default(),
            if taken.is_empty() {
                "none".into()
            } else {
                taken.join(",")
            }
        ),
    };
    let ev = Event::new("system", action, &row.requester, "server").detail(detail);
    Ok(crate::audit::commit(state, tx, ev).await?)
}
