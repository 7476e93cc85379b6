//! The connector's own access decision, from the credential the user sent
//! and the state the server pushed. No call to the server is made.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use infra_auth::jwt::{CachingVerifier, Claims, Verifier, VerifyError};
use infra_core::access::GrantRule;
use infra_core::{GrantIndex, Resource, Role};
use infra_tunnel::proto::Snapshot;

/// Everything needed to decide, rebuilt on each pushed snapshot.
pub(crate) struct Decider {
    verifier: CachingVerifier,
    index: GrantIndex,
    groups_of: HashMap<String, Vec<String>>,
    /// Group id → name, for the groups that have grants here.
    group_names: HashMap<String, String>,
    /// The same names, to tell them from groups known only to the token.
    granted_group_names: HashSet<String>,
    revoked: HashSet<String>,
    /// Kubernetes destinations: a grant on any namespace lets a user in,
    /// and the cluster's RBAC decides the rest.
    kube: HashSet<String>,
}

/// Who the caller is, once allowed.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) groups: Vec<String>,
    pub(crate) roles: Vec<String>,
    /// The user's groups now: the token's groups, corrected by the current
    /// memberships of every group that has a grant here (so removing a
    /// member takes effect at once, not when the token expires). Computed
    /// for Kubernetes destinations only (the groups to impersonate).
    pub(crate) current_groups: Vec<String>,
}

/// Why a request was refused; status and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) status: u16,
    pub(crate) message: String,
}

fn deny(status: u16, message: impl Into<String>) -> Denial {
    Denial {
        status,
        message: message.into(),
    }
}

impl Decider {
    pub(crate) fn new(s: &Snapshot, issuer: &str, kube: &[&str]) -> Self {
        let index = GrantIndex::new(s.grants.iter().filter_map(|g| {
            Some(GrantRule {
                subject: g.subject_kind.subject(g.subject_id.clone()),
                role: Role::parse(&g.role).ok()?,
                resource: Resource::parse(&g.resource).ok()?,
                expires_at: g.expires_at,
            })
        }));
        let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
        for (g, u) in &s.memberships {
            groups_of.entry(u.clone()).or_default().push(g.clone());
        }
        let group_names: HashMap<String, String> = s
            .grants
            .iter()
            .filter(|g| g.subject_kind == infra_tunnel::proto::SubjectKind::Group && !g.subject_name.is_empty())
            .map(|g| (g.subject_id.clone(), g.subject_name.clone()))
            .collect();
        let granted_group_names = group_names.values().cloned().collect();
        Self {
            verifier: CachingVerifier::new(Verifier::new(&s.jwks, issuer), 100_000),
            index,
            groups_of,
            group_names,
            granted_group_names,
            kube: kube.iter().map(|k| (*k).to_owned()).collect(),
            revoked: s.revoked_sessions.iter().cloned().collect(),
        }
    }

    /// Verifies `token` for `destination` and checks the current grants.
    pub(crate) fn decide(&self, token: &str, destination: &str, now_ms: i64) -> Result<Identity, Denial> {
        let claims: Claims = self.verifier.verify(token, destination).map_err(|e| match e {
            VerifyError::Audience => deny(
                403,
                format!("this token is not for {destination}; get one with 'infra tokens --destination {destination}'"),
            ),
            other => deny(
                401,
                format!("{other}; log in again or get a new token with 'infra tokens --destination {destination}'"),
            ),
        })?;
        self.authorize(&claims, destination, now_ms)
    }

    /// Whether the holder of `claims` may still use `destination`: used at
    /// the start of a request and again for open streams when grants change.
    pub(crate) fn authorize(&self, claims: &Claims, destination: &str, now_ms: i64) -> Result<Identity, Denial> {
        if claims.sid.as_ref().is_some_and(|s| self.revoked.contains(s)) {
            return Err(deny(401, "the session this token came from has ended; log in again"));
        }
        let resource = Resource::parse(destination).map_err(|_| deny(404, "no such destination"))?;
        let groups = self.groups_of.get(&claims.sub).cloned().unwrap_or_default();
        let roles: Vec<String> = if self.kube.contains(destination) {
            self.index
                .grants_within(&claims.sub, &groups, destination, now_ms)
                .into_iter()
                .map(|(res, role)| format!("{role} on {res}"))
                .collect()
        } else {
            self.index
                .roles(&claims.sub, &groups, &resource, now_ms)
                .into_iter()
                .map(|r| r.to_string())
                .collect()
        };
        if roles.is_empty() {
            let what = if self.kube.contains(destination) {
                format!("cluster {destination} or any of its namespaces")
            } else {
                destination.to_owned()
            };
            return Err(deny(
                403,
                format!(
                    "{} has no grant on {what}; ask an admin: infra grants add {} {destination} --role ROLE",
                    claims.name, claims.name
                ),
            ));
        }
        // Only a cluster impersonates groups: other kinds skip the work.
        // Names Kubernetes reserves (`system:masters`) are never sent, from
        // whatever source: Infra refuses to hold such groups, and this is
        // the last place one could slip through.
        let mut current_groups = Vec::new();
        if self.kube.contains(destination) {
            current_groups.extend(
                claims
                    .groups
                    .iter()
                    .filter(|g| !self.granted_group_names.contains(*g))
                    .cloned(),
            );
            current_groups.extend(groups.iter().filter_map(|id| self.group_names.get(id).cloned()));
            current_groups.retain(|g| !infra_core::reserved_by_kubernetes(g));
            current_groups.sort();
            current_groups.dedup();
        }
        Ok(Identity {
            user_id: claims.sub.clone(),
            email: claims.email.clone().unwrap_or_else(|| claims.name.clone()),
            groups: claims.groups.clone(),
            roles,
            current_groups,
        })
    }

    /// Whether user `user_id` holds any grant on `destination` now,
    /// directly or through a group: for access that outlives a request
    /// (a database login role).
    pub(crate) fn has_any_grant(&self, user_id: &str, destination: &str, now_ms: i64) -> bool {
        let Ok(resource) = Resource::parse(destination) else {
            return false;
        };
        let groups = self.groups_of.get(user_id).cloned().unwrap_or_default();
        !self.index.roles(user_id, &groups, &resource, now_ms).is_empty()
    }

    pub(crate) fn claims(&self, token: &str, destination: &str) -> Option<Claims> {
        self.verifier.verify(token, destination).ok()
    }
}

/// The cookie a browser carries its token in, set by `/.infra/callback`.
/// `__Host-`: a browser keeps such a cookie only if it was set by this very
/// host over HTTPS with `Path=/` and no `Domain`, so a sibling destination's
/// upstream (`other.<gateway domain>`) can neither plant one here nor
/// shadow it with a more specific path. Only this exact name is read.
pub(crate) const TOKEN_COOKIE: &str = "__Host-infra_token";

/// Whether a cookie name is the token cookie in any spelling a browser or
/// an older connector may have used: removed before requests go upstream,
/// and refused from upstream responses.
pub(crate) fn is_token_cookie(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    let bare = n
        .strip_prefix("__host-")
        .or_else(|| n.strip_prefix("__secure-"))
        .unwrap_or(&n);
    bare == "infra_token"
}

/// The user's token from `Authorization: Bearer T`, Basic with the token as
/// the password, or the browser's token cookie.
pub(crate) fn token_from(headers: &http::HeaderMap) -> Option<String> {
    let Some(v) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == TOKEN_COOKIE)
            .map(|(_, v)| v.to_owned());
    };
    let (scheme, rest) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (_, pw) = text.split_once(':')?;
        return Some(pw.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{is_token_cookie, token_from};

    /// The token a request with this `Cookie` header carries, if any.
    fn check(cookie: &str, expected: Option<&str>) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, http::HeaderValue::from_str(cookie).unwrap());
        assert_eq!(token_from(&h).as_deref(), expected, "{cookie}");
    }

    #[test]
    fn only_the_host_prefixed_cookie_is_a_credential() {
        check("__Host-infra_token=T", Some("T"));
        check("a=1; __Host-infra_token=T; b=2", Some("T"));
        check("infra_token=PLANTED; __Host-infra_token=T", Some("T"));
        check("infra_token=PLANTED", None);
        check("__Secure-infra_token=PLANTED", None);
        check("__host-infra_token=PLANTED", None);
        check("__Host-infra_token_x=PLANTED", None);
    }

    #[test]
    fn token_cookie_spellings() {
        for name in [
            "infra_token",
            "__Host-infra_token",
            "__host-infra_token",
            "__Secure-infra_token",
            " INFRA_TOKEN",
        ] {
            assert!(is_token_cookie(name), "{name}");
        }
        for name in ["infra_token2", "x_infra_token", "theme", "__Host-infra_session"] {
            assert!(!is_token_cookie(name), "{name}");
        }
    }
}
