//! RBAC sync: grants on a cluster (or one of its namespaces) whose role is a
//! ClusterRole become ClusterRoleBindings (or RoleBindings) that the
//! connector creates and deletes as grants are pushed, and the inventory of
//! namespaces and grantable ClusterRoles the server checks grants against.
//!
//! *Architecture Invariant:* the connector only ever changes bindings it
//! made: each carries the `app.kubernetes.io/managed-by: infra` label and
//! the destination's name, and only bindings listed by that selector are
//! deleted. A binding of the same name that is not labelled is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use infra_core::{GrantView, Subject};
use infra_tunnel::proto::{ClusterIssuer, Inventory};
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::kube::KubeUpstream;
use crate::state::{Pushed, State};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
pub(crate) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub(crate) const DESTINATION_LABEL: &str = "infra.dev/destination";
/// A ClusterRole with this label set to `"true"` may be granted.
pub(crate) const GRANTABLE_LABEL: &str = "infra.dev/grantable";
/// Kubernetes' user-facing default ClusterRoles, grantable everywhere.
pub(crate) const DEFAULT_ROLES: [&str; 4] = ["view", "edit", "admin", "cluster-admin"];
/// How often bindings are checked against grants without a change (to
/// repair drift) and the inventory is refreshed.
const RESYNC: Duration = Duration::from_secs(10);

/// One binding the grants call for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Binding {
    /// `None`: a ClusterRoleBinding.
    pub(crate) namespace: Option<String>,
    pub(crate) role: String,
    /// `User` or `Group`.
    pub(crate) subject_kind: &'static str,
    pub(crate) subject: String,
}

impl Binding {
    /// A name that says what the binding is and is the same every time,
    /// so creating it twice is harmless and each grant makes exactly one.
    pub(crate) fn name(&self) -> String {
        let key = format!(
            "{}|{}|{}|{}",
            self.namespace.as_deref().unwrap_or(""),
            self.role,
            self.subject_kind,
            self.subject
        );
        let readable: String = format!("{}-{}", self.subject, self.role)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        let digest = infra_auth::sha256_hex(key.as_bytes());
        format!(
            "infra-{}-{readable}-{}",
            self.subject_kind.to_ascii_lowercase(),
            &digest[..16]
        )
    }

    fn to_json(&self, destination: &str) -> Value {
        let mut meta = json!({
            "name": self.name(),
            "labels": { MANAGED_BY: "infra", DESTINATION_LABEL: destination },
            "annotations": { "infra.dev/grant": format!("{} {} role {}", self.subject_kind, self.subject, self.role) },
        });
        if let Some(ns) = &self.namespace {
            meta["namespace"] = json!(ns);
        }
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": if self.namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" },
            "metadata": meta,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": self.subject_kind, "name": self.subject }],
        })
    }

    fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{RBAC}/namespaces/{ns}/rolebindings"),
            None => format!("{RBAC}/clusterrolebindings"),
        }
    }
}

/// The bindings the grants on `destination` call for at `now`.
pub(crate) fn desired(grants: &GrantView, destination: &str, now: i64) -> BTreeSet<Binding> {
    grants
        .bindings_for(destination, now)
        .into_iter()
        .filter(|b| b.role.as_str() != infra_core::KUBE_CONNECT_ROLE && !b.subject_name.is_empty())
        // A binding to `system:authenticated` would grant the role to every
        // identity the cluster knows; such names are never subjects.
        .filter(|b| !infra_core::reserved_by_kubernetes(b.subject_name))
        .map(|b| Binding {
            namespace: b.namespace.map(str::to_owned),
            role: b.role.to_string(),
            subject_kind: match b.subject {
                Subject::User(_) => "User",
                Subject::Group(_) => "Group",
            },
            subject: b.subject_name.to_owned(),
        })
        .collect()
}

/// Keeps the bindings of one cluster in line with the pushed grants, and
/// reports the cluster's inventory, until the process ends.
pub(crate) async fn run(state: Arc<State>, destination: String, kube: Arc<KubeUpstream>) {
    let mut snapshots = state.subscribe_snapshots();
    let mut last_inventory: Option<Inventory> = None;
    loop {
        let read = inventory(&kube, &destination).await.map(|mut inv| {
            // Discovery that failed once keeps the issuer last read: a
            // blip must not stop the cluster's workloads from exchanging.
            if inv.cluster_issuer.is_none() {
                inv.cluster_issuer = last_inventory.as_ref().and_then(|l| l.cluster_issuer.clone());
            }
            inv
        });
        match read {
            Ok(inv) if last_inventory.as_ref() != Some(&inv) => {
                state.set_inventory(inv.clone());
                last_inventory = Some(inv);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(destination = %destination, error = %format!("{e:#}"), "cannot read namespaces and ClusterRoles")
            }
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if kube.rbac_sync
            && let Some(s) = snapshot
            && let Err(e) = sync(&kube, &destination, &s).await
        {
            tracing::warn!(destination = %destination, error = %format!("{e:#}"), "RBAC sync failed; retrying");
        }
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Lists the bindings this connector manages for `destination`, creates the
/// missing ones and deletes those no grant calls for any more.
async fn sync(kube: &KubeUpstream, destination: &str, s: &Pushed) -> anyhow::Result<()> {
    let want: BTreeMap<String, Binding> = desired(&s.grants, destination, now_ms())
        .into_iter()
        .map(|b| (b.name(), b))
        .collect();
    let selector = format!("labelSelector={MANAGED_BY}%3Dinfra%2C{DESTINATION_LABEL}%3D{destination}");
    let mut have: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (path, namespaced) in [
        (format!("{RBAC}/rolebindings?{selector}"), true),
        (format!("{RBAC}/clusterrolebindings?{selector}"), false),
    ] {
        let (code, v) = kube.call(Method::GET, &path, None).await?;
        if code != 200 {
            anyhow::bail!("list managed bindings: HTTP {code}: {}", message(&v));
        }
        for item in v["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let ns = namespaced.then(|| item["metadata"]["namespace"].as_str().unwrap_or_default().to_owned());
            have.insert(name, ns);
        }
    }
    for (name, b) in &want {
        if have.get(name) == Some(&b.namespace) {
            continue;
        }
        let (code, v) = kube
            .call(Method::POST, &b.path(), Some(&b.to_json(destination)))
            .await?;
        match code {
            200 | 201 => {
                tracing::info!(destination, binding = %name, namespace = ?b.namespace, role = %b.role, subject = %b.subject, "created binding")
            }
            409 => {
                tracing::warn!(destination, binding = %name, "a binding of this name exists and is not managed by Infra; left alone")
            }
            _ => tracing::warn!(destination, binding = %name, code, error = %message(&v), "cannot create binding"),
        }
    }
    for (name, ns) in &have {
        if want.get(name).is_some_and(|b| &b.namespace == ns) {
            continue;
        }
        let path = match ns {
            Some(ns) => format!("{RBAC}/namespaces/{ns}/rolebindings/{name}"),
            None => format!("{RBAC}/clusterrolebindings/{name}"),
        };
        let (code, v) = kube.call(Method::DELETE, &path, None).await?;
        match code {
            200 | 202 | 404 => tracing::info!(destination, binding = %name, namespace = ?ns, "deleted binding"),
            _ => tracing::warn!(destination, binding = %name, code, error = %message(&v), "cannot delete binding"),
        }
    }
    Ok(())
}

/// Rules of a ClusterRole reported, at most.
const MAX_RULES: usize = 40;

/// One rule of a ClusterRole, as people read it: `get, list: pods,
/// services` (`(apps)` when not the core group; URLs for non-resource
/// rules). Capped, so a huge role cannot make a huge report.
fn rule_line(rule: &Value) -> Option<String> {
    let list = |k: &str| -> Vec<String> {
        rule[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let verbs = list("verbs");
    let what = match (list("resources"), list("nonResourceURLs")) {
        (r, _) if !r.is_empty() => r,
        (_, u) if !u.is_empty() => u,
        _ => return None,
    };
    let groups: Vec<String> = list("apiGroups").into_iter().filter(|g| !g.is_empty()).collect();
    let mut line = format!("{}: {}", verbs.join(", "), what.join(", "));
    if !groups.is_empty() {
        line.push_str(&format!(" ({})", groups.join(", ")));
    }
    Some(line.chars().take(200).collect())
}

/// The namespaces and the grantable ClusterRoles of the cluster.
async fn inventory(kube: &KubeUpstream, destination: &str) -> anyhow::Result<Inventory> {
    let (code, ns) = kube.call(Method::GET, "/api/v1/namespaces", None).await?;
    if code != 200 {
        anyhow::bail!("list namespaces: HTTP {code}: {}", message(&ns));
    }
    let (code, roles) = kube.call(Method::GET, &format!("{RBAC}/clusterroles"), None).await?;
    if code != 200 {
        anyhow::bail!("list ClusterRoles: HTTP {code}: {}", message(&roles));
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let grantable: Vec<&Value> = roles["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            let name = r["metadata"]["name"].as_str().unwrap_or_default();
            DEFAULT_ROLES.contains(&name) || r["metadata"]["labels"][GRANTABLE_LABEL].as_str() == Some("true")
        })
        .collect();
    let role_rules = grantable
        .iter()
        .filter_map(|r| {
            let name = r["metadata"]["name"].as_str()?.to_owned();
            let rules = r["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(rule_line)
                .take(MAX_RULES)
                .collect();
            Some((name, rules))
        })
        .collect();
    let mut roles: Vec<String> = grantable
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    roles.sort();
    let mut namespaces = names(&ns);
    namespaces.sort();
    Ok(Inventory {
        destination: destination.to_owned(),
        namespaces,
        roles,
        role_rules,
        cluster_issuer: cluster_issuer(kube).await,
        ..Default::default()
    })
}

/// The cluster's service-account issuer and keys, from the API server's
/// discovery documents (`system:service-account-issuer-discovery`), so the
/// server can trust the cluster's tokens (`--from-cluster`) and follow its
/// key rotations. `None` where discovery is off or not allowed.
async fn cluster_issuer(kube: &KubeUpstream) -> Option<ClusterIssuer> {
    let get = |path: &'static str| async move {
        match kube
            .call_accepting(Method::GET, path, None, "application/json, application/jwk-set+json")
            .await
        {
            Ok((200, v)) => Some(v),
            Ok((code, v)) => {
                tracing::debug!(path, code, error = %message(&v), "service-account issuer discovery unavailable");
                None
            }
            Err(e) => {
                tracing::debug!(path, error = %format!("{e:#}"), "service-account issuer discovery failed");
                None
            }
        }
    };
    let config = get("/.well-known/openid-configuration").await?;
    let jwks = get("/openid/v1/jwks").await?;
    let issuer = config["issuer"].as_str()?.to_owned();
    jwks["keys"].is_array().then_some(ClusterIssuer { issuer, jwks })
}

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or("no message").to_owned()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rule_reads_as_verbs_on_resources() {
        let r = serde_json::json!({"verbs": ["get", "list"], "resources": ["pods", "services"], "apiGroups": [""]});
        assert_eq!(super::rule_line(&r).as_deref(), Some("get, list: pods, services"));
        let r = serde_json::json!({"verbs": ["*"], "resources": ["deployments"], "apiGroups": ["apps"]});
        assert_eq!(super::rule_line(&r).as_deref(), Some("*: deployments (apps)"));
        let r = serde_json::json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]});
        assert_eq!(super::rule_line(&r).as_deref(), Some("get: /healthz"));
        assert_eq!(super::rule_line(&serde_json::json!({"verbs": ["get"]})), None);
    }
    use super::*;

    fn g(kind: &str, name: &str, role: &str, resource: &str, exp: Option<i64>) -> infra_core::NamedGrant {
        let id = format!("id-{name}");
        infra_core::NamedGrant {
            rule: infra_core::GrantRule {
                subject: if kind == "group" {
                    Subject::Group(id)
                } else {
                    Subject::User(id)
                },
                role: infra_core::Role::parse(role).unwrap(),
                resource: infra_core::Resource::parse(resource).unwrap(),
                expires_at: exp,
            },
            subject_name: name.into(),
        }
    }

    #[test]
    fn grants_become_bindings() {
        let grants = vec![
            g("user", "alice@example.com", "edit", "dev.web", None),
            g("group", "sre", "view", "dev", None),
            g("user", "bob@example.com", "connect", "dev", None),
            g("user", "carol@example.com", "admin", "dev.web", Some(10)),
            g("user", "dan@example.com", "view", "devel", None),
            g("user", "erin@example.com", "view", "prod.web", None),
        ];
        let view = GrantView::new(grants, []);
        let d: Vec<Binding> = desired(&view, "dev", 50).into_iter().collect();
        assert_eq!(
            d,
            [
                Binding {
                    namespace: None,
                    role: "view".into(),
                    subject_kind: "Group",
                    subject: "sre".into()
                },
                Binding {
                    namespace: Some("web".into()),
                    role: "edit".into(),
                    subject_kind: "User",
                    subject: "alice@example.com".into()
                },
            ]
        );
    }

    #[test]
    fn names_are_stable_valid_and_distinct() {
        let a = Binding {
            namespace: Some("web".into()),
            role: "edit".into(),
            subject_kind: "User",
            subject: "Alice@Example.com".into(),
        };
        assert_eq!(a.name(), a.clone().name());
        assert!(
            a.name().starts_with("infra-user-alice-example-com-edit-"),
            "{}",
            a.name()
        );
        assert!(a.name().len() <= 253);
        assert!(
            a.name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let mut b = a.clone();
        b.namespace = Some("other".into());
        assert_ne!(a.name(), b.name());
        let v = a.to_json("dev");
        assert_eq!(v["kind"], "RoleBinding");
        assert_eq!(v["metadata"]["labels"][MANAGED_BY], "infra");
        assert_eq!(v["roleRef"]["name"], "edit");
        assert_eq!(v["subjects"][0]["kind"], "User");
    }
}
