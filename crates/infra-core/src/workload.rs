//! Which Infra service account a workload is: a workload issuer's mappings
//! from a claim's value (a Kubernetes service account is
//! `system:serviceaccount:NAMESPACE:NAME`) to a service account's email.
//!
//! A mapping is exact (`system:serviceaccount:shop:api=api@shop.example`)
//! or a pattern whose key ends in `*` and whose value has one `*`, replaced
//! with the rest of the claim (`system:serviceaccount:shop:*=*@shop.example`
//! maps every service account of namespace `shop`). The server's token
//! exchange and the connector's admission webhook read mappings with this
//! one rule.

use std::collections::BTreeMap;

/// A mapping that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping {key}={value}: {reason}")]
pub struct MappingError {
    pub key: String,
    pub value: String,
    pub reason: &'static str,
}

/// A workload issuer's mappings, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mappings(BTreeMap<String, String>);

/// What a pattern's `*` may stand for: a Kubernetes object name's letters.
fn fits_star(rest: &str) -> bool {
    !rest.is_empty()
        && rest.len() <= 253
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Mappings {
    /// Checks every mapping: a pattern's key ends in `*` and has no other;
    /// its value has exactly one `*`; an exact value has none.
    pub fn new(m: BTreeMap<String, String>) -> Result<Self, MappingError> {
        for (key, value) in &m {
            let fail = |reason| {
                Err(MappingError {
                    key: key.clone(),
                    value: value.clone(),
                    reason,
                })
            };
            let stars = value.matches('*').count();
            match key.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => return fail("only a final * is a pattern"),
                Some("") => return fail("a pattern needs a prefix before *"),
                Some(_) if stars != 1 => return fail("a pattern's service account has one * for the matched name"),
                None if key.contains('*') => return fail("only a final * is a pattern"),
                None if stars != 0 => return fail("an exact mapping's service account has no *"),
                _ => {}
            }
            if value.is_empty() || key.is_empty() {
                return fail("empty");
            }
        }
        Ok(Self(m))
    }

    /// Reads stored mappings; ones that no longer pass [`Mappings::new`]
    /// (none should) map nothing.
    pub fn stored(m: BTreeMap<String, String>) -> Self {
        Self(
            m.into_iter()
                .filter(|(k, v)| Self::new(BTreeMap::from([(k.clone(), v.clone())])).is_ok())
                .collect(),
        )
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The service account `value` maps to: an exact mapping first, else
    /// the pattern with the longest prefix. A pattern never yields a
    /// service account an exact mapping names: whoever may create a
    /// Kubernetes service account in a namespace must not become one that
    /// was given to a particular workload by name.
    pub fn resolve(&self, value: &str) -> Option<String> {
        if let Some(sa) = self.0.get(value).filter(|v| !v.contains('*')) {
            return Some(sa.clone());
        }
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let prefix = k.strip_suffix('*')?;
                let rest = value.strip_prefix(prefix)?;
                fits_star(rest).then(|| (prefix.len(), v.replacen('*', rest, 1)))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, sa)| sa)
            .filter(|sa| !self.0.iter().any(|(k, v)| !k.ends_with('*') && v == sa))
    }

    /// Whether some pattern could map a claim to `email`.
    pub fn is_pattern_target(&self, email: &str) -> bool {
        self.0.iter().any(|(k, v)| {
            k.ends_with('*')
                && v.split_once('*').is_some_and(|(pre, post)| {
                    email.len() > pre.len() + post.len() && email.starts_with(pre) && email.ends_with(post)
                })
        })
    }
}

/// The claim a Kubernetes service account's token carries as `sub`.
pub fn kubernetes_subject(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> Result<Mappings, MappingError> {
        Mappings::new(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn exact_then_longest_pattern() {
        let maps = m(&[
            ("system:serviceaccount:shop:api", "orders@svc.example"),
            ("system:serviceaccount:shop:*", "*@shop.example"),
            ("system:serviceaccount:*", "*@any.example"),
        ])
        .unwrap();
        assert_eq!(
            maps.resolve("system:serviceaccount:shop:api").as_deref(),
            Some("orders@svc.example")
        );
        assert_eq!(
            maps.resolve("system:serviceaccount:shop:web").as_deref(),
            Some("web@shop.example")
        );
        // The shorter pattern takes what the longer one does not match; its
        // `*` may not carry a `:` (another namespace's name into the email).
        assert_eq!(maps.resolve("system:serviceaccount:dev:web"), None);
        assert_eq!(maps.resolve("system:serviceaccount:shop:"), None);
        assert_eq!(maps.resolve("system:serviceaccount:shop:a@b"), None);
        assert_eq!(maps.resolve("other"), None);
        // `orders` is given to shop:api by name; a service account called
        // `orders` in shop does not get it through the pattern.
        let maps = m(&[
            ("system:serviceaccount:shop:api", "orders@shop.example"),
            ("system:serviceaccount:shop:*", "*@shop.example"),
        ])
        .unwrap();
        assert_eq!(maps.resolve("system:serviceaccount:shop:orders"), None);
        assert_eq!(
            maps.resolve("system:serviceaccount:shop:web").as_deref(),
            Some("web@shop.example")
        );
        assert!(maps.is_pattern_target("web@shop.example"));
        assert!(!maps.is_pattern_target("@shop.example"));
        assert!(!maps.is_pattern_target("web@evil.example"));
    }

    #[test]
    fn malformed_mappings_are_refused() {
        assert!(m(&[("a*b", "x@y")]).is_err());
        assert!(m(&[("a:*", "x@y")]).is_err());
        assert!(m(&[("a:*", "*@*")]).is_err());
        assert!(m(&[("*", "*@y")]).is_err());
        assert!(m(&[("a", "*@y")]).is_err());
        assert!(m(&[("a*:*", "*@y")]).is_err());
        // Stored mappings that fail are dropped, not fatal.
        let stored = |pairs: &[(&str, &str)]| {
            Mappings::stored(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
        };
        assert_eq!(
            stored(&[("a", "*@y"), ("b", "b@y")]).resolve("b").as_deref(),
            Some("b@y")
        );
        assert_eq!(stored(&[("a", "*@y")]).resolve("a"), None);
    }
}
