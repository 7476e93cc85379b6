//! The grants one connector holds, read once: every question a data path
//! asks of them (which roles a user holds on a resource, which bindings a
//! cluster needs, which logins an SSH host grants) is answered here, from
//! the same parsed rules, so no protocol reads a grant its own way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::access::{GrantIndex, GrantRule, Subject};
use crate::names::{Resource, Role};

/// A grant with the name its subject is known by outside Infra: the
/// user's email or the group's name (a Kubernetes RBAC subject, say).
#[derive(Debug, Clone)]
pub struct NamedGrant {
    pub rule: GrantRule,
    pub subject_name: String,
}

/// One binding a grant asks of a cluster: `role` for `subject` in
/// `namespace` (the whole cluster when `None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding<'a> {
    pub namespace: Option<&'a str>,
    pub role: &'a Role,
    pub subject: &'a Subject,
    pub subject_name: &'a str,
}

/// The parsed grants and group memberships of one snapshot.
#[derive(Debug, Default)]
pub struct GrantView {
    index: GrantIndex,
    grants: Vec<NamedGrant>,
    /// User id → the ids of their groups that appear in a grant.
    groups_of: HashMap<String, Vec<String>>,
    /// Group id → member user ids.
    members: HashMap<String, Vec<String>>,
    /// Group id → name, for groups that have a grant.
    group_names: HashMap<String, String>,
    /// The same names, to tell them from groups known only to a token.
    granted_group_names: HashSet<String>,
}

impl GrantView {
    /// `memberships` are (group id, user id) pairs.
    pub fn new(grants: Vec<NamedGrant>, memberships: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for (g, u) in memberships {
            groups_of.entry(u.clone()).or_default().push(g.clone());
            members.entry(g).or_default().push(u);
        }
        let group_names = grants
            .iter()
            .filter_map(|g| match &g.rule.subject {
                Subject::Group(id) if !g.subject_name.is_empty() => Some((id.clone(), g.subject_name.clone())),
                _ => None,
            })
            .collect::<HashMap<_, _>>();
        let granted_group_names = group_names.values().cloned().collect();
        Self {
            index: GrantIndex::new(grants.iter().map(|g| g.rule.clone())),
            grants,
            groups_of,
            members,
            group_names,
            granted_group_names,
        }
    }

    /// The ids of `user`'s groups (those that hold a grant here).
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.groups_of.get(user).map(Vec::as_slice).unwrap_or_default()
    }

    /// The name of group `id`, if it holds a grant here.
    pub fn group_name(&self, id: &str) -> Option<&str> {
        self.group_names.get(id).map(String::as_str)
    }

    /// Whether `name` is the name of a group that holds a grant here (so
    /// its memberships are known, not taken from a token).
    pub fn is_granted_group(&self, name: &str) -> bool {
        self.granted_group_names.contains(name)
    }

    /// The roles `user` holds on `resource` at `now` (unix ms), directly or
    /// through their groups.
    pub fn roles_for(&self, user: &str, resource: &Resource, now: i64) -> Vec<&Role> {
        self.index.roles(user, self.groups_of(user), resource, now)
    }

    /// Every (resource, role) `user` holds on `destination` or a part of
    /// it: a cluster lets in anyone with a grant on one of its namespaces.
    pub fn grants_within(&self, user: &str, destination: &str, now: i64) -> Vec<(&Resource, &Role)> {
        self.index.grants_within(user, self.groups_of(user), destination, now)
    }

    fn live(&self, now: i64) -> impl Iterator<Item = &NamedGrant> {
        self.grants
            .iter()
            .filter(move |g| g.rule.expires_at.is_none_or(|e| e > now))
    }

    /// The bindings the live grants on `destination` and its parts ask for.
    pub fn bindings_for(&self, destination: &str, now: i64) -> BTreeSet<Binding<'_>> {
        self.live(now)
            .filter(|g| g.rule.resource.destination() == destination)
            .map(|g| Binding {
                namespace: g.rule.resource.namespace(),
                role: &g.rule.role,
                subject: &g.rule.subject,
                subject_name: &g.subject_name,
            })
            .collect()
    }

    /// For each role (an SSH login) granted on `destination` itself, the
    /// user ids holding it now, groups expanded; roles nobody holds are
    /// left out.
    pub fn logins_for(&self, destination: &Resource, now: i64) -> BTreeMap<&Role, BTreeSet<&str>> {
        let mut out: BTreeMap<&Role, BTreeSet<&str>> = BTreeMap::new();
        for g in self.live(now).filter(|g| g.rule.resource.covers(destination)) {
            let users = out.entry(&g.rule.role).or_default();
            match &g.rule.subject {
                Subject::User(id) => {
                    users.insert(id);
                }
                Subject::Group(id) => users.extend(self.members.get(id).into_iter().flatten().map(String::as_str)),
            }
        }
        out.retain(|_, users| !users.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: Subject, name: &str, role: &str, res: &str, exp: Option<i64>) -> NamedGrant {
        NamedGrant {
            rule: GrantRule {
                subject,
                role: Role::parse(role).unwrap(),
                resource: Resource::parse(res).unwrap(),
                expires_at: exp,
            },
            subject_name: name.into(),
        }
    }

    fn view() -> GrantView {
        GrantView::new(
            vec![
                grant(Subject::User("u1".into()), "a@x", "view", "prod", None),
                grant(Subject::Group("g1".into()), "devs", "edit", "prod.payments", None),
                grant(Subject::Group("g1".into()), "devs", "root", "host", None),
                grant(Subject::User("u2".into()), "b@x", "admin", "host", Some(10)),
                grant(Subject::User("u3".into()), "c@x", "deploy", "host.x", None),
                grant(Subject::Group("g2".into()), "empty", "ubuntu", "host", None),
                grant(Subject::User("u1".into()), "a@x", "view", "production", None),
            ],
            [("g1".to_owned(), "u1".to_owned()), ("g1".to_owned(), "u2".to_owned())],
        )
    }

    #[test]
    fn roles_through_groups() {
        let v = view();
        let ns = Resource::parse("prod.payments").unwrap();
        let roles: Vec<_> = v.roles_for("u1", &ns, 0).into_iter().map(Role::as_str).collect();
        assert_eq!(roles, ["view", "edit"]);
        assert!(v.roles_for("u3", &ns, 0).is_empty());
        assert_eq!(v.groups_of("u2"), ["g1"]);
        assert_eq!(v.group_name("g1"), Some("devs"));
        assert!(v.is_granted_group("devs") && !v.is_granted_group("a@x"));
    }

    #[test]
    fn bindings_of_a_cluster_and_its_namespaces() {
        let v = view();
        let got: Vec<_> = v
            .bindings_for("prod", 0)
            .into_iter()
            .map(|b| format!("{:?} {} {}", b.namespace, b.role, b.subject_name))
            .collect();
        // `production` is another destination.
        assert_eq!(got, ["None view a@x", "Some(\"payments\") edit devs"]);
    }

    #[test]
    fn logins_of_a_host_expand_groups_and_drop_the_expired() {
        let v = view();
        let host = Resource::parse("host").unwrap();
        let fmt = |now| -> Vec<String> {
            v.logins_for(&host, now)
                .into_iter()
                .map(|(r, users)| format!("{r}={}", users.into_iter().collect::<Vec<_>>().join(",")))
                .collect()
        };
        // A grant on `host.x` is not a login on `host`; a group with no
        // members grants nobody.
        assert_eq!(fmt(5), ["admin=u2", "root=u1,u2"]);
        assert_eq!(fmt(10), ["root=u1,u2"]);
    }
}
