//! The access decision, from the credential a user sent and the grants
//! in memory: the connector's (from the state the server pushed) and the
//! server's forward-auth (from its store). No I/O.

use std::collections::HashSet;
use std::sync::Arc;

use crate::jwt::{CachingVerifier, Claims, Jwks, Verifier, VerifyError};
use infra_core::{GrantView, Resource};

/// Everything needed to decide, rebuilt on each pushed snapshot.
pub struct Decider {
    verifier: CachingVerifier,
    grants: Arc<GrantView>,
    revoked: HashSet<String>,
    /// Kubernetes destinations: a grant on any namespace lets a user in,
    /// and the cluster's RBAC decides the rest.
    kube: HashSet<String>,
}

/// Who the caller is, once allowed.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The verified token: open streams are judged again from it when
    /// grants change.
    pub claims: Claims,
    pub user_id: String,
    pub email: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// The user's groups now: the token's groups, corrected by the current
    /// memberships of every group that has a grant here (so removing a
    /// member takes effect at once, not when the token expires). Computed
    /// for Kubernetes destinations only (the groups to impersonate).
    pub current_groups: Vec<String>,
}

/// Why a request was refused; status and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub message: String,
}

pub fn deny(status: u16, message: impl Into<String>) -> Denial {
    Denial {
        status,
        message: message.into(),
    }
}

impl Decider {
    pub fn new(jwks: &Jwks, grants: Arc<GrantView>, revoked: &[String], issuer: &str, kube: &[&str]) -> Self {
        Self {
            verifier: CachingVerifier::new(Verifier::new(jwks, issuer), 100_000),
            grants,
            kube: kube.iter().map(|k| (*k).to_owned()).collect(),
            revoked: revoked.iter().cloned().collect(),
        }
    }

    /// Checks `token`'s signature, issuer, expiry and audience.
    pub fn verify(&self, token: &str, destination: &str) -> Result<Claims, Denial> {
        self.verifier.verify(token, destination).map_err(|e| match e {
            VerifyError::Audience => deny(
                403,
                format!("this token is not for {destination}; get one with 'infra tokens --destination {destination}'"),
            ),
            other => deny(
                401,
                format!("{other}; log in again or get a new token with 'infra tokens --destination {destination}'"),
            ),
        })
    }

    /// Whether the holder of `claims` may still use `destination`: used at
    /// the start of a stream and again for open streams when grants change.
    pub fn authorize(&self, claims: &Claims, destination: &str, now_ms: i64) -> Result<Identity, Denial> {
        if claims.sid.as_ref().is_some_and(|s| self.revoked.contains(s)) {
            return Err(deny(401, "the session this token came from has ended; log in again"));
        }
        let resource = Resource::parse(destination).map_err(|_| deny(404, "no such destination"))?;
        let cluster = self.kube.contains(destination);
        let roles: Vec<String> = if cluster {
            self.grants
                .grants_within(&claims.sub, destination, now_ms)
                .into_iter()
                .map(|(res, role)| format!("{role} on {res}"))
                .collect()
        } else {
            self.grants
                .roles_for(&claims.sub, &resource, now_ms)
                .into_iter()
                .map(|r| r.to_string())
                .collect()
        };
        if roles.is_empty() {
            let what = if cluster {
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
        Ok(Identity {
            claims: claims.clone(),
            user_id: claims.sub.clone(),
            email: claims.email.clone().unwrap_or_else(|| claims.name.clone()),
            groups: claims.groups.clone(),
            roles,
            current_groups: if cluster {
                self.current_groups(claims)
            } else {
                Vec::new()
            },
        })
    }

    /// The groups a cluster impersonates. Names Kubernetes reserves
    /// (`system:masters`) are never sent, from whatever source: Infra
    /// refuses to hold such groups, and this is the last place one could
    /// slip through.
    fn current_groups(&self, claims: &Claims) -> Vec<String> {
        let mut out: Vec<String> = claims
            .groups
            .iter()
            .filter(|g| !self.grants.is_granted_group(g))
            .cloned()
            .collect();
        out.extend(
            self.grants
                .groups_of(&claims.sub)
                .iter()
                .filter_map(|id| self.grants.group_name(id).map(str::to_owned)),
        );
        out.retain(|g| !infra_core::reserved_by_kubernetes(g));
        out.sort();
        out.dedup();
        out
    }

    /// Whether user `user_id` holds any grant on `destination` now,
    /// directly or through a group: for access that outlives a request
    /// (a database login role).
    pub fn has_any_grant(&self, user_id: &str, destination: &str, now_ms: i64) -> bool {
        Resource::parse(destination).is_ok_and(|r| !self.grants.roles_for(user_id, &r, now_ms).is_empty())
    }
}

#[cfg(test)]
mod tests;
