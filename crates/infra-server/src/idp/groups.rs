//! The group memberships a provider gives a user.

use infra_core::GroupName;
use infra_store::{GroupRow, StoreError, UserRow, identity, new_id, now_ms, providers};

/// Makes the memberships `provider` gives `user` exactly `groups`: adds the
/// missing ones (creating groups as needed), removes the ones it gave
/// before and no longer does. Memberships an admin made are left alone.
/// Returns what changed, for the audit event (None: nothing).
pub(crate) async fn sync_groups(
    c: &mut infra_store::Conn,
    user: &UserRow,
    provider: &str,
    groups: &[String],
) -> Result<Option<String>, StoreError> {
    let current = providers::provider_groups(c, &user.id, provider).await?;
    let mut added = Vec::new();
    let mut dropped = Vec::new();
    for name in groups {
        // A name Infra cannot hold (a character it refuses, or a name
        // Kubernetes reserves such as system:masters) is dropped, and the
        // audit event says so.
        let Ok(valid) = GroupName::parse(name) else {
            dropped.push(name.chars().take(64).collect::<String>());
            continue;
        };
        if current.iter().any(|(_, n)| n == name) {
            continue;
        }
        let group = match identity::group_by_name(c, valid.as_str()).await? {
            Some(g) => g,
            None => {
                let g = GroupRow {
                    id: new_id()?,
                    name: valid.as_str().to_owned(),
                    created_at: now_ms(),
                };
                identity::insert_group(c, &g).await?;
                g
            }
        };
        if providers::add_provider_member(c, &group.id, &user.id, provider).await? {
            added.push(name.clone());
        }
    }
    let mut removed = Vec::new();
    for (id, name) in current {
        if !groups.contains(&name) {
            providers::remove_provider_member(c, &id, &user.id, provider).await?;
            removed.push(name);
        }
    }
    let mut change = (!added.is_empty() || !removed.is_empty())
        .then(|| format!("added={} removed={}", added.join(","), removed.join(",")));
    if !dropped.is_empty() {
        let note = format!(
            "dropped={} (not valid Infra group names, or reserved by Kubernetes)",
            dropped.join(",")
        );
        change = Some(change.map_or(note.clone(), |c| format!("{c} {note}")));
    }
    Ok(change)
}
