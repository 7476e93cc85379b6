//! The access decision: does a user, through their own grants or their
//! groups', hold a role on a resource?
//!
//! *Architecture Invariant:* access is additive. There is no deny rule, so
//! the decision is "any matching grant", and removing a grant removes exactly
//! what it gave.

use std::collections::HashMap;

use crate::names::{Resource, Role};

/// Who a grant is for. Ids are the store's opaque ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Group(String),
}

/// A grant as the decision needs it.
#[derive(Debug, Clone)]
pub struct GrantRule {
    pub subject: Subject,
    pub role: Role,
    pub resource: Resource,
    /// Unix milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
}

/// Grants indexed by subject so a decision touches only the grants of the
/// user and their groups, however many grants exist in all.
#[derive(Debug, Default)]
pub struct GrantIndex {
    by_subject: HashMap<Subject, Vec<(Resource, Role, Option<i64>)>>,
}

impl GrantIndex {
    pub fn new(grants: impl IntoIterator<Item = GrantRule>) -> Self {
        let mut by_subject: HashMap<Subject, Vec<_>> = HashMap::new();
        for g in grants {
            by_subject
                .entry(g.subject)
                .or_default()
                .push((g.resource, g.role, g.expires_at));
        }
        Self { by_subject }
    }

    /// The roles `user` holds on `resource` at `now` (unix ms), directly or
    /// through any of `groups`, deduplicated.
    pub fn roles<'a>(&'a self, user: &str, groups: &[String], resource: &Resource, now: i64) -> Vec<&'a Role> {
        let mut out: Vec<&Role> = Vec::new();
        let user_key = Subject::User(user.to_owned());
        let subjects = std::iter::once(user_key).chain(groups.iter().cloned().map(Subject::Group));
        for s in subjects {
            for (res, role, exp) in self.by_subject.get(&s).into_iter().flatten() {
                if exp.is_none_or(|e| e > now) && res.covers(resource) && !out.contains(&role) {
                    out.push(role);
                }
            }
        }
        out
    }

    /// Every (resource, role) `user` holds on `destination` or any part of
    /// it (such as a namespace of a cluster), directly or through `groups`:
    /// a cluster lets in anyone with a grant on one of its namespaces, and
    /// the cluster's own RBAC decides the rest.
    pub fn grants_within<'a>(
        &'a self,
        user: &str,
        groups: &[String],
        destination: &str,
        now: i64,
    ) -> Vec<(&'a Resource, &'a Role)> {
        let mut out: Vec<(&Resource, &Role)> = Vec::new();
        let user_key = Subject::User(user.to_owned());
        let subjects = std::iter::once(user_key).chain(groups.iter().cloned().map(Subject::Group));
        for s in subjects {
            for (res, role, exp) in self.by_subject.get(&s).into_iter().flatten() {
                if exp.is_none_or(|e| e > now) && res.destination() == destination && !out.contains(&(res, role)) {
                    out.push((res, role));
                }
            }
        }
        out
    }

    /// Whether `user` holds `role` on `resource`.
    pub fn allows(&self, user: &str, groups: &[String], resource: &Resource, role: &Role, now: i64) -> bool {
        self.roles(user, groups, resource, now).contains(&role)
    }
}

/// What a caller may do to Infra itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InfraRole {
    /// May read everything.
    View,
    /// May read and change everything.
    Admin,
}

impl InfraRole {
    pub fn as_str(self) -> &'static str {
        match self {
            InfraRole::View => "view",
            InfraRole::Admin => "admin",
        }
    }

    /// The strongest Infra role among `roles` (grants on resource `infra`).
    /// Unknown role names on `infra` give nothing.
    pub fn strongest<'a>(roles: impl IntoIterator<Item = &'a str>) -> Option<InfraRole> {
        roles
            .into_iter()
            .filter_map(|r| match r {
                "admin" => Some(InfraRole::Admin),
                "view" => Some(InfraRole::View),
                _ => None,
            })
            .max()
    }

    /// Whether holding `self` satisfies a requirement of `needed`.
    pub fn satisfies(self, needed: InfraRole) -> bool {
        self >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: Subject, role: &str, res: &str, exp: Option<i64>) -> GrantRule {
        GrantRule {
            subject: s,
            role: Role::parse(role).unwrap(),
            resource: Resource::parse(res).unwrap(),
            expires_at: exp,
        }
    }

    #[test]
    fn additive_through_groups_and_parents() {
        let idx = GrantIndex::new([
            rule(Subject::User("u1".into()), "view", "prod", None),
            rule(Subject::Group("g1".into()), "edit", "prod.payments", None),
            rule(Subject::User("u1".into()), "admin", "dev", Some(100)),
        ]);
        let ns = Resource::parse("prod.payments").unwrap();
        let groups = vec!["g1".to_owned()];
        let roles: Vec<_> = idx
            .roles("u1", &groups, &ns, 50)
            .into_iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(roles, ["view", "edit"]);
        // Without the group the edit role is gone, the view role stays.
        assert!(!idx.allows("u1", &[], &ns, &Role::parse("edit").unwrap(), 50));
        // A namespace grant does not reach the whole cluster.
        let prod = Resource::parse("prod").unwrap();
        assert!(!idx.allows("u1", &groups, &prod, &Role::parse("edit").unwrap(), 50));
        // Expired grants give nothing.
        let dev = Resource::parse("dev").unwrap();
        assert!(idx.allows("u1", &[], &dev, &Role::parse("admin").unwrap(), 99));
        assert!(!idx.allows("u1", &[], &dev, &Role::parse("admin").unwrap(), 100));
        // Another user gets nothing from u1's grants.
        assert!(idx.roles("u2", &[], &prod, 0).is_empty());
    }

    #[test]
    fn grants_within_a_destination() {
        let idx = GrantIndex::new([
            rule(Subject::Group("g1".into()), "edit", "prod.payments", None),
            rule(Subject::User("u1".into()), "view", "prod", None),
            rule(Subject::User("u1".into()), "view", "production", None),
            rule(Subject::User("u1".into()), "admin", "prod.web", Some(10)),
        ]);
        let got: Vec<_> = idx
            .grants_within("u1", &["g1".to_owned()], "prod", 50)
            .into_iter()
            .map(|(r, role)| format!("{r}={role}"))
            .collect();
        // `production` is another destination; the expired grant is gone.
        assert_eq!(got, ["prod=view", "prod.payments=edit"]);
        assert!(idx.grants_within("u1", &[], "prod.payments", 0).is_empty());
        assert!(idx.grants_within("u2", &[], "prod", 0).is_empty());
    }

    #[test]
    fn infra_roles() {
        assert_eq!(InfraRole::strongest(["view", "admin", "x"]), Some(InfraRole::Admin));
        assert_eq!(InfraRole::strongest(["edit"]), None);
        assert!(InfraRole::Admin.satisfies(InfraRole::View));
        assert!(!InfraRole::View.satisfies(InfraRole::Admin));
    }
}
