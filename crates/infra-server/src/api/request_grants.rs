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
                match identity::insert_grant(c, &g).await {
                    Ok(()) => made.push(format!("grant:{}", g.id)),
                    Err(infra_store::StoreError::Conflict) => {
                        let held =
                            identity::extend_user_grant(c, &row.requester_id, role.as_str(), resource.as_str(), until)
                                .await?;
                        if let Some(id) = held {
                            made.push(format!("grant:{id}"));
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ask::Membership { group } => {
                let g = identity::group_by_name(c, group.as_str())
                    .await?
                    .ok_or_else(|| ApiError::conflict(format!("group {} no longer exists", group.as_str())))?;
                match identity::add_member(c, &g.id, &row.requester_id).await {
                    Ok(()) => made.push(format!("member:{}", g.id)),
                    // Already a member: nothing to take back at the end.
                    Err(infra_store::StoreError::Conflict) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok((until, serde_json::to_string(&made).map_err(ApiError::internal)?))
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
        let mut tx = state.store.write().await?;
        let Some(row) = requests::request(tx.conn(), &id).await? else {
            continue;
        };
        let (to, action) = if was == "pending" {
            ("expired", "request.expire")
        } else {
            ("ended", "request.end")
        };
        if !requests::set_state(tx.conn(), &id, &was, to, now, None).await? {
            continue;
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
        super::requests::commit_all(state, tx, vec![ev]).await?;
    }
    Ok(())
}
