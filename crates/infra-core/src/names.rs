//! Validated names: emails, group names, resources and roles.
//!
//! Each type can only be built through `parse`, so code that holds one knows
//! it is well formed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}': {reason}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl NameError {
    pub(crate) fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        err(what, value, reason)
    }
}

fn err(what: &'static str, value: &str, reason: &'static str) -> NameError {
    // Cap what we echo back so a huge input does not become a huge error.
    let value: String = value.chars().take(64).collect();
    NameError { what, value, reason }
}

/// A user's email address, stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const W: &str = "email";
        let s = s.trim();
        if s.is_empty() {
            return Err(err(W, s, "must not be empty"));
        }
        if s.len() > 254 {
            return Err(err(W, s, "must be at most 254 characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(err(W, s, "must look like name@example.com"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(err(W, s, "the part before '@' must be 1 to 64 characters"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(err(W, s, "the part before '@' has a character that is not allowed"));
        }
        if domain.is_empty() || !domain.split('.').all(valid_dns_label) {
            return Err(err(W, s, "the domain after '@' is not a valid host name"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Whether Kubernetes reserves `name` for itself: every name starting with
/// `system:` (`system:masters` holds cluster-admin whatever RBAC says,
/// `system:authenticated` is everyone). Infra holds no such group and
/// never passes such a name on as identity. Compared without case and
/// leading spaces, so no spelling slips past.
pub fn reserved_by_kubernetes(name: &str) -> bool {
    name.trim_start()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("system:"))
}

/// A group name: letters, digits and `-_.@/:`, 1 to 256 characters
/// (path-style names from identity providers such as `/team/admins` fit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GroupName(String);

impl GroupName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const W: &str = "group name";
        if s.is_empty() || s.len() > 256 {
            return Err(err(W, s, "must be 1 to 256 characters"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@/: ".contains(c)) {
            return Err(err(W, s, "use letters, digits, spaces and - _ . @ / :"));
        }
        // A name is a path segment of the API and the console: `.` and
        // `..` would be read as "here" and "up" there.
        if s == "." || s == ".." {
            return Err(err(W, s, "must not be . or .."));
        }
        // Headers lose surrounding spaces on the way, so " a" would arrive
        // as "a": a name is what it will be read as.
        if s.trim() != s {
            return Err(err(W, s, "must not start or end with a space"));
        }
        if reserved_by_kubernetes(s) {
            return Err(err(
                W,
                s,
                "names starting with 'system:' are reserved by Kubernetes (system:masters is cluster-admin everywhere)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a grant gives access to: `infra`, a destination (`prod`), or a part
/// of one (`prod.payments`, a namespace of cluster `prod`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Resource(String);

impl Resource {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const W: &str = "resource";
        if s.is_empty() || s.len() > 253 {
            return Err(err(W, s, "must be 1 to 253 characters"));
        }
        let mut parts = s.splitn(2, '.');
        let dest = parts.next().unwrap_or_default();
        let sub = parts.next();
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
                && !p.starts_with('-')
        };
        if !ok_part(dest) || !sub.is_none_or(ok_part) {
            return Err(err(
                W,
                s,
                "use DESTINATION or DESTINATION.NAMESPACE with lower-case letters, digits, - and _",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The destination part: `prod` for `prod.payments`.
    pub fn destination(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// The part within the destination: `payments` for `prod.payments`.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once('.').map(|(_, ns)| ns)
    }

    /// Whether a grant on `self` reaches `other`: the same resource, or
    /// `self` is the destination and `other` a part of it.
    ///
    /// *Architecture Invariant:* this is the one statement of the rule.
    /// SQL that selects grants by resource says the same with an exact
    /// match plus a range (see infra-store), and is tested against this.
    pub fn covers(&self, other: &Resource) -> bool {
        self == other || (!self.0.contains('.') && other.destination() == self.0)
    }
}

/// A role name: an Infra role (`admin`, `view`), a Kubernetes ClusterRole, a
/// database role or a login name, depending on the resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        const W: &str = "role";
        if s.is_empty() || s.len() > 128 {
            return Err(err(W, s, "must be 1 to 128 characters"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            return Err(err(W, s, "use letters, digits and - _ . :"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_conversions!(Email, GroupName, Resource, Role);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "Alice.Smith+x@Example.COM", "admin@localhost"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(Email::parse("A@B.CO").map(|e| e.0), Ok("a@b.co".to_owned()));
        for bad in [
            "", "a", "@b.co", "a@", "a@b..co", "a b@c.co", "a@-b.co", ".a@b.co", "a@b_c.co",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn provider_emails_are_normalised() {
        for spelling in [" alice@corp.com", "Alice@Corp.COM\t", "alice@CORP.com\n"] {
            assert_eq!(
                Email::parse(spelling).map(|e| e.0),
                Ok("alice@corp.com".to_owned()),
                "{spelling:?}"
            );
        }
        for bad in [
            "alice@corp.com\u{0}",
            "alice@corp.com x",
            "alice\u{200b}@corp.com",
            "ali ce@corp.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_reserved_group_names() {
        for reserved in [
            "system:masters",
            "SYSTEM:masters",
            " system:masters",
            "system:authenticated",
            "system:",
        ] {
            assert!(reserved_by_kubernetes(reserved), "{reserved:?}");
            assert!(GroupName::parse(reserved).is_err(), "{reserved:?}");
        }
        for ok in ["devs", "team:system", "systemx:a", "/org/system:masters"] {
            assert!(!reserved_by_kubernetes(ok), "{ok:?}");
            assert!(GroupName::parse(ok).is_ok(), "{ok:?}");
        }
        assert!(GroupName::parse("devs ").is_err());
        assert!(GroupName::parse(".").is_err() && GroupName::parse("..").is_err());
        assert!(GroupName::parse("a.b").is_ok());
    }

    #[test]
    fn resources() {
        let r = |s| Resource::parse(s).map_err(|e| e.to_string());
        assert!(r("infra").is_ok());
        assert!(r("prod.payments").is_ok());
        for bad in ["", "Prod", "a.b.c", "a.", ".a", "a b", "-a"] {
            assert!(r(bad).is_err(), "{bad}");
        }
        let prod = Resource::parse("prod").unwrap();
        let ns = Resource::parse("prod.payments").unwrap();
        assert!(prod.covers(&ns));
        assert!(!ns.covers(&prod));
        assert!(!Resource::parse("pro").unwrap().covers(&ns));
    }

    #[test]
    fn error_message_names_the_problem() {
        let e = Role::parse("a b").unwrap_err().to_string();
        assert_eq!(e, "invalid role 'a b': use letters, digits and - _ . :");
    }
}
