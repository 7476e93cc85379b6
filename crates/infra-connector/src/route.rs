//! Where a stream goes: each destination this connector serves, resolved
//! once at start into a typed target that carries what its protocol needs.

use std::collections::HashMap;
use std::sync::Arc;

use infra_tunnel::hygiene::Upgrade;

use crate::config::{Destination, Kind, PgConfig, SshConfig};
use crate::kube::KubeUpstream;
use crate::pg_roles::Roles;

/// What a destination is, with the parts its protocol works with.
pub(crate) enum Target {
    Http,
    Kube(Arc<KubeUpstream>),
    Pg { cfg: PgConfig, roles: Arc<Roles> },
    Ssh(SshConfig),
}

impl Target {
    /// The destination kind's word, as the audit log and metrics say it.
    pub(crate) fn kind(&self) -> &'static str {
        let k = match self {
            Target::Http => infra_core::DestinationKind::Http,
            Target::Kube(_) => infra_core::DestinationKind::Kubernetes,
            Target::Pg { .. } => infra_core::DestinationKind::Postgres,
            Target::Ssh(_) => infra_core::DestinationKind::Ssh,
        };
        k.as_str()
    }

    /// Whether a destination of this kind speaks `u`: browsers' WebSockets
    /// for HTTP services, kubectl's SPDY and WebSocket streams for
    /// clusters, and raw streams only for databases and SSH hosts.
    pub(crate) fn speaks(&self, u: Upgrade) -> bool {
        matches!(
            (self, u),
            (Target::Http, Upgrade::WebSocket)
                | (Target::Kube(_), Upgrade::WebSocket | Upgrade::Spdy31)
                | (Target::Pg { .. } | Target::Ssh(_), Upgrade::InfraTcp)
        )
    }

    /// Whether a stream to it stays open only while every role it started
    /// with is still held: an SSH session (which login is in use is
    /// encrypted, so losing any of them ends it). Other streams end only
    /// when no grant on the destination is left.
    pub(crate) fn watches_roles(&self) -> bool {
        matches!(self, Target::Ssh(_))
    }
}

/// One destination, ready to serve.
pub(crate) struct Route {
    pub(crate) name: String,
    /// `http(s)://host:port` with an optional path prefix, no trailing slash.
    pub(crate) url: String,
    pub(crate) authority: String,
    /// The value of the `Authorization` header to send upstream, if any.
    pub(crate) upstream_authorization: Option<String>,
    pub(crate) target: Target,
    /// Its interactive sessions are recorded; what a new one does when
    /// the recording spool is full.
    pub(crate) recording: Option<crate::config::OnFull>,
}

/// Every destination by name: the one lookup a stream makes.
#[derive(Default)]
pub(crate) struct Routes(HashMap<String, Arc<Route>>);

impl Routes {
    pub(crate) fn new(destinations: &[Destination]) -> anyhow::Result<Self> {
        let mut routes = HashMap::new();
        for d in destinations {
            let target = match &d.kind {
                Kind::Http => Target::Http,
                Kind::Kubernetes(k) => Target::Kube(Arc::new(
                    KubeUpstream::new(k, &d.url).map_err(|e| anyhow::anyhow!("destination {}: {e:#}", d.name))?,
                )),
                Kind::Postgres(p) => Target::Pg {
                    cfg: p.clone(),
                    roles: Arc::new(Roles::new(p.clone())),
                },
                Kind::Ssh(s) => Target::Ssh(s.clone()),
            };
            let route = Route {
                name: d.name.clone(),
                url: d.url.clone(),
                authority: d.authority.clone(),
                upstream_authorization: d.upstream_authorization.clone(),
                target,
                recording: d.recording,
            };
            routes.insert(d.name.clone(), Arc::new(route));
        }
        Ok(Self(routes))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.0.get(name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.0.values()
    }

    /// The clusters, for the RBAC sync and the grant decision.
    pub(crate) fn kube(&self) -> impl Iterator<Item = (&str, &Arc<KubeUpstream>)> {
        self.iter().filter_map(|r| match &r.target {
            Target::Kube(k) => Some((r.name.as_str(), k)),
            _ => None,
        })
    }

    /// The databases, for their login roles.
    pub(crate) fn pg(&self) -> impl Iterator<Item = (&str, &Arc<Roles>)> {
        self.iter().filter_map(|r| match &r.target {
            Target::Pg { roles, .. } => Some((r.name.as_str(), roles)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_per_kind() {
        assert!(Target::Http.speaks(Upgrade::WebSocket));
        assert!(!Target::Http.speaks(Upgrade::Spdy31));
        assert!(!Target::Http.speaks(Upgrade::InfraTcp));
        let ssh = Target::Ssh(SshConfig {
            address: "127.0.0.1:22".into(),
            ..SshConfig::default()
        });
        assert!(ssh.speaks(Upgrade::InfraTcp) && !ssh.speaks(Upgrade::WebSocket));
        assert!(ssh.watches_roles() && !Target::Http.watches_roles());
    }
}
