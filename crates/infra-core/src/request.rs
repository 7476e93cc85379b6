//! Just-in-time access: who may ask for what, for how long, and who must
//! agree before it is granted.
//!
//! Pure: the server hands in a policy, what is asked, who asks and who has
//! reviewed; this answers whether it may be asked, how many approvals it
//! needs, whether a reviewer may review, and what a review leads to. The
//! same rules decide for the API, the CLI and the console.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{GroupName, NameError, Resource, Role};

/// Which resources a policy covers: `prod` (the destination itself),
/// `prod.payments` (one part), `prod.*` (any part of `prod`, not `prod`
/// itself), or `*` (any destination, never `infra`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourcePattern(String);

impl ResourcePattern {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self(s.to_owned()));
        }
        if let Some(dest) = s.strip_suffix(".*") {
            let d = Resource::parse(dest)?;
            if d.namespace().is_some() {
                return Err(NameError::new(
                    "resource pattern",
                    s,
                    "use DEST, DEST.PART, DEST.* or *",
                ));
            }
            return Ok(Self(s.to_owned()));
        }
        Ok(Self(Resource::parse(s)?.as_str().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, r: &Resource) -> bool {
        if r.as_str() == crate::INFRA_RESOURCE {
            return false;
        }
        match self.0.as_str() {
            "*" => r.namespace().is_none(),
            p => match p.strip_suffix(".*") {
                Some(dest) => r.destination() == dest && r.namespace().is_some(),
                None => p == r.as_str(),
            },
        }
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<ResourcePattern> for String {
    fn from(p: ResourcePattern) -> String {
        p.0
    }
}

/// Who approves: the members of a group, or (only when said) the admins
/// of Infra.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Approvers {
    Group(GroupName),
    InfraAdmins,
}

/// One thing a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Ask {
    /// A role on a destination or a part of it.
    Grant { role: Role, resource: Resource },
    /// Membership of a group (and so its grants).
    Membership { group: GroupName },
}

impl Ask {
    pub fn describe(&self) -> String {
        match self {
            Ask::Grant { role, resource } => format!("{} on {}", role.as_str(), resource.as_str()),
            Ask::Membership { group } => format!("membership of {}", group.as_str()),
        }
    }
}

/// A policy: who may request what, for how long, and who approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub name: String,
    /// Members of any of these groups may request.
    pub requesters: Vec<GroupName>,
    /// Roles that may be requested on `resources`.
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub resources: Vec<ResourcePattern>,
    /// Groups whose membership may be requested.
    #[serde(default)]
    pub groups: Vec<GroupName>,
    /// The longest access a request may ask for, in milliseconds.
    pub max_ms: i64,
    pub approvers: Vec<Approvers>,
    /// Approvals needed, at least 1 ...
    pub approvals: u32,
    /// ... or more for some roles.
    #[serde(default)]
    pub approvals_for: BTreeMap<Role, u32>,
    /// Roles granted without review (low risk), still audited.
    #[serde(default)]
    pub auto_approve: Vec<Role>,
    /// If set, auto-approval applies only to members of these groups (an
    /// on-call group kept current by the rota): "view during on-call".
    #[serde(default)]
    pub auto_approve_members: Vec<GroupName>,
    /// Break-glass: the requester approves their own request for at most
    /// this long (milliseconds), loudly audited and notified.
    #[serde(default)]
    pub break_glass_ms: Option<i64>,
}

/// Why something is refused; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(m.into()))
}

impl Policy {
    /// Whether the policy is complete and consistent.
    pub fn check(&self) -> Result<(), Refusal> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return refuse("a policy's name is 1 to 64 letters, digits, - or _");
        }
        if self.requesters.is_empty() {
            return refuse("say who may request: at least one requester group");
        }
        if self.roles.is_empty() != self.resources.is_empty() {
            return refuse("give roles and resources together");
        }
        if self.roles.is_empty() && self.groups.is_empty() {
            return refuse("say what may be requested: roles on resources, or groups");
        }
        if self.approvers.is_empty() && self.auto_approve.is_empty() && self.break_glass_ms.is_none() {
            return refuse("say who approves: an approver group, or infra-admins");
        }
        if self.approvals == 0 || self.approvals_for.values().any(|n| *n == 0) {
            return refuse("approvals are at least 1");
        }
        if self.max_ms <= 0 || self.break_glass_ms.is_some_and(|b| b <= 0 || b > self.max_ms) {
            return refuse("the longest access is positive, and break-glass no longer than it");
        }
        Ok(())
    }

    /// Whether `asks` for `for_ms` may be requested by a member of
    /// `requester_groups` under this policy.
    pub fn allows(&self, requester_groups: &[String], asks: &[Ask], for_ms: i64) -> Result<(), Refusal> {
        if !self
            .requesters
            .iter()
            .any(|g| requester_groups.iter().any(|m| m == g.as_str()))
        {
            return refuse(format!(
                "policy {} is for members of {}",
                self.name,
                names(&self.requesters)
            ));
        }
        if for_ms <= 0 || for_ms > self.max_ms {
            return refuse(format!(
                "policy {} allows at most {}",
                self.name,
                crate::format_duration(std::time::Duration::from_millis(
                    u64::try_from(self.max_ms).unwrap_or(0)
                ))
            ));
        }
        for ask in asks {
            let ok = match ask {
                Ask::Grant { role, resource } => {
                    self.roles.contains(role) && self.resources.iter().any(|p| p.matches(resource))
                }
                Ask::Membership { group } => self.groups.contains(group),
            };
            if !ok {
                return refuse(format!("policy {} does not cover {}", self.name, ask.describe()));
            }
        }
        Ok(())
    }

    /// Approvals `asks` need: the most any of them needs.
    pub fn approvals_needed(&self, asks: &[Ask]) -> u32 {
        asks.iter()
            .map(|a| match a {
                Ask::Grant { role, .. } => self.approvals_for.get(role).copied().unwrap_or(self.approvals),
                Ask::Membership { .. } => self.approvals,
            })
            .max()
            .unwrap_or(self.approvals)
    }

    /// Whether `asks` by a member of `requester_groups` are granted at
    /// once, without review.
    pub fn auto_approves(&self, requester_groups: &[String], asks: &[Ask]) -> bool {
        let member = self.auto_approve_members.is_empty()
            || self
                .auto_approve_members
                .iter()
                .any(|g| requester_groups.iter().any(|m| m == g.as_str()));
        member
            && !asks.is_empty()
            && asks
                .iter()
                .all(|a| matches!(a, Ask::Grant { role, .. } if self.auto_approve.contains(role)))
    }

    /// Whether `reviewer` may approve or deny a request of `requester`
    /// under this policy. Never the requester, whatever their groups or
    /// roles; admins of Infra only if the policy names them.
    pub fn may_review(&self, reviewer: &Reviewer<'_>, requester_id: &str) -> Result<(), Refusal> {
        if reviewer.id == requester_id {
            return refuse("you cannot review your own request");
        }
        let ok = self.approvers.iter().any(|a| match a {
            Approvers::Group(g) => reviewer.groups.iter().any(|m| m == g.as_str()),
            Approvers::InfraAdmins => reviewer.infra_admin,
        });
        if ok {
            Ok(())
        } else {
            refuse(format!(
                "requests under policy {} are reviewed by {}",
                self.name,
                self.approvers
                    .iter()
                    .map(Approvers::describe)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        }
    }
}

impl Approvers {
    pub fn describe(&self) -> String {
        match self {
            Approvers::Group(g) => format!("members of {}", g.as_str()),
            Approvers::InfraAdmins => "admins of Infra".into(),
        }
    }
}

fn names(groups: &[GroupName]) -> String {
    groups.iter().map(GroupName::as_str).collect::<Vec<_>>().join(", ")
}

/// Who is reviewing.
pub struct Reviewer<'a> {
    pub id: &'a str,
    pub groups: &'a [String],
    pub infra_admin: bool,
}

/// Where a request is. Pending until decided; every other state is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    /// Granted; the grants end by themselves.
    Approved,
    Denied,
    /// Not reviewed in time.
    Expired,
    Cancelled,
    /// Approved, and its time is up.
    Ended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => State::Pending,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            "cancelled" => State::Cancelled,
            "ended" => State::Ended,
            _ => return None,
        })
    }
}

/// A review's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// What a review does to a pending request that already has `approvals`
/// approvals and needs `needed`: a denial is final, an approval grants
/// once there are enough.
pub fn after_review(state: State, approvals: u32, needed: u32, d: Decision) -> Result<State, Refusal> {
    if state != State::Pending {
        return refuse(format!(
            "the request is {} already: a decision is final",
            state.as_str()
        ));
    }
    Ok(match d {
        Decision::Deny => State::Denied,
        Decision::Approve if approvals + 1 >= needed => State::Approved,
        Decision::Approve => State::Pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            name: "prod".into(),
            requesters: vec![GroupName::parse("devs").unwrap()],
            roles: vec![Role::parse("view").unwrap(), Role::parse("edit").unwrap()],
            resources: vec![
                ResourcePattern::parse("prod.*").unwrap(),
                ResourcePattern::parse("prod").unwrap(),
            ],
            groups: vec![],
            max_ms: 4 * 3_600_000,
            approvers: vec![Approvers::Group(GroupName::parse("sre").unwrap())],
            approvals: 1,
            approvals_for: [(Role::parse("edit").unwrap(), 2)].into(),
            auto_approve: vec![],
            auto_approve_members: vec![],
            break_glass_ms: Some(3_600_000),
        }
    }

    fn grant(role: &str, r: &str) -> Ask {
        Ask::Grant {
            role: Role::parse(role).unwrap(),
            resource: Resource::parse(r).unwrap(),
        }
    }

    #[test]
    fn patterns_say_exactly_what_they_cover() {
        let r = |s| Resource::parse(s).unwrap();
        let p = |s| ResourcePattern::parse(s).unwrap();
        assert!(p("prod.*").matches(&r("prod.payments")) && !p("prod.*").matches(&r("prod")));
        assert!(p("prod").matches(&r("prod")) && !p("prod").matches(&r("prod.payments")));
        assert!(!p("prod.*").matches(&r("prod2.x")));
        assert!(p("*").matches(&r("staging")) && !p("*").matches(&r("infra")) && !p("*").matches(&r("a.b")));
        assert!(ResourcePattern::parse("prod.x.*").is_err() && ResourcePattern::parse("PROD").is_err());
    }

    #[test]
    fn only_members_may_ask_only_for_what_is_covered_and_not_for_long() {
        let p = policy();
        let devs = vec!["devs".to_owned()];
        assert!(p.allows(&devs, &[grant("view", "prod.payments")], 3_600_000).is_ok());
        assert!(p.allows(&["ops".into()], &[grant("view", "prod")], 3_600_000).is_err());
        assert!(p.allows(&devs, &[grant("admin", "prod")], 3_600_000).is_err());
        assert!(p.allows(&devs, &[grant("view", "staging")], 3_600_000).is_err());
        assert!(p.allows(&devs, &[grant("view", "prod")], 5 * 3_600_000).is_err());
        assert!(
            p.allows(&devs, &[grant("view", "prod"), grant("view", "infra")], 60_000)
                .is_err()
        );
    }

    #[test]
    fn approvals_are_the_most_any_ask_needs_and_never_the_requesters() {
        let p = policy();
        assert_eq!(p.approvals_needed(&[grant("view", "prod")]), 1);
        assert_eq!(p.approvals_needed(&[grant("view", "prod"), grant("edit", "prod.x")]), 2);
        let sre = vec!["sre".to_owned(), "devs".to_owned()];
        let me = Reviewer {
            id: "u1",
            groups: &sre,
            infra_admin: true,
        };
        assert!(p.may_review(&me, "u1").is_err(), "own request");
        assert!(p.may_review(&me, "u2").is_ok());
        let admin = Reviewer {
            id: "u3",
            groups: &[],
            infra_admin: true,
        };
        assert!(p.may_review(&admin, "u2").is_err(), "admins only when named");
    }

    #[test]
    fn a_decision_is_final_and_two_approvals_mean_two() {
        use Decision::*;
        assert_eq!(after_review(State::Pending, 0, 2, Approve), Ok(State::Pending));
        assert_eq!(after_review(State::Pending, 1, 2, Approve), Ok(State::Approved));
        assert_eq!(after_review(State::Pending, 1, 2, Deny), Ok(State::Denied));
        for s in [
            State::Approved,
            State::Denied,
            State::Expired,
            State::Cancelled,
            State::Ended,
        ] {
            assert!(after_review(s, 5, 1, Approve).is_err());
        }
    }

    #[test]
    fn auto_approval_can_be_for_the_on_call_only() {
        let mut p = policy();
        p.auto_approve = vec![Role::parse("view").unwrap()];
        let view = [grant("view", "prod")];
        assert!(p.auto_approves(&["devs".into()], &view));
        assert!(!p.auto_approves(&["devs".into()], &[grant("edit", "prod")]));
        p.auto_approve_members = vec![GroupName::parse("oncall").unwrap()];
        assert!(!p.auto_approves(&["devs".into()], &view));
        assert!(p.auto_approves(&["devs".into(), "oncall".into()], &view));
    }

    #[test]
    fn a_policy_says_who_approves() {
        let mut p = policy();
        assert!(p.check().is_ok());
        p.approvers.clear();
        p.break_glass_ms = None;
        assert!(p.check().is_err());
    }
}
