//! Messages of the handshake and the control stream.

use std::collections::BTreeMap;

use infra_core::jwks::Jwks;
pub use infra_core::{DestinationKind, SubjectKind};
use infra_core::{GrantRule, GrantView, NamedGrant, Resource, Role, Subject};
use serde::{Deserialize, Serialize};

/// Version of the handshake and control messages.
/// Version 2: the control stream is identified by a per-tunnel secret.
pub const VERSION: u32 = 2;

/// What a connector says first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    pub version: u32,
    pub access_key: String,
    pub name: String,
    /// A random id that lasts as long as the connector's data directory;
    /// audit events are numbered per instance.
    pub instance_id: String,
    pub destinations: Vec<DestinationInfo>,
    /// Public key (JWK `x`) the connector signs `X-Infra-Assertion` with,
    /// and its key id.
    pub assertion_key: String,
    pub assertion_kid: String,
    /// The connector's version (`infra --version`), shown to admins; empty
    /// from connectors older than this field.
    #[serde(default)]
    pub software: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationInfo {
    pub name: String,
    pub kind: DestinationKind,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where clients reach it directly, if the connector listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_url: Option<String>,
    /// SSH hosts: the host's public keys (OpenSSH format), for the server
    /// to certify with the host CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_host_keys: Vec<String>,
    /// Kubernetes clusters: the admission webhook the connector serves, for
    /// the server to certify its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookKey>,
}

/// The webhook's public key (an uncompressed P-256 point, base64url) and
/// the names the API server reaches it by. The private key stays with the
/// connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookKey {
    pub public_key: String,
    pub names: Vec<String>,
}

/// The server's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelloReply {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The token issuer, for verifying tokens offline.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Audit events up to this number (for this instance) are stored; send
    /// only later ones.
    #[serde(default)]
    pub audit_acked: i64,
    /// Every server replica's URL: the connector keeps a tunnel to each, so
    /// a request reaching any replica finds it.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// This tunnel's secret: the server's control stream carries it, and
    /// the connector takes no other stream as the control stream.
    #[serde(default)]
    pub control_secret: crate::control::ControlSecret,
}

/// A grant as the connector needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantEntry {
    pub subject_kind: SubjectKind,
    pub subject_id: String,
    /// The user's email or the group's name: what a destination knows the
    /// subject by (a Kubernetes RBAC subject, say).
    #[serde(default)]
    pub subject_name: String,
    pub role: String,
    pub resource: String,
    pub expires_at: Option<i64>,
}

/// Everything a connector needs to decide alone, for its destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub jwks: Jwks,
    pub grants: Vec<GrantEntry>,
    /// (group id, user id) for the groups that appear in `grants`.
    pub memberships: Vec<(String, String)>,
    /// Sessions and keys revoked recently enough that tokens minted with
    /// them may still be unexpired.
    pub revoked_sessions: Vec<String>,
    /// For SSH hosts: what their sshd must trust and present.
    #[serde(default)]
    pub ssh: SshMaterial,
    /// For a connector serving the admission webhook: what it injects and
    /// warns about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Box<Workloads>>,
}

impl Snapshot {
    /// The snapshot's grants as the core reads them; a grant the core
    /// cannot parse (a newer server's) gives nothing.
    pub fn grant_view(&self) -> GrantView {
        let grants = self
            .grants
            .iter()
            .filter_map(|g| {
                let subject = match g.subject_kind {
                    SubjectKind::User => Subject::User(g.subject_id.clone()),
                    SubjectKind::Group => Subject::Group(g.subject_id.clone()),
                };
                let rule = GrantRule {
                    subject,
                    role: Role::parse(&g.role).ok()?,
                    resource: Resource::parse(&g.resource).ok()?,
                    expires_at: g.expires_at,
                };
                Some(NamedGrant {
                    rule,
                    subject_name: g.subject_name.clone(),
                })
            })
            .collect();
        GrantView::new(grants, self.memberships.iter().cloned())
    }
}

/// The SSH CA keys sshd trusts for user certificates, and each host's
/// certificates (one per host key it reported), in OpenSSH format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshMaterial {
    pub user_ca: Vec<String>,
    pub host_certs: BTreeMap<String, Vec<String>>,
}

/// What the admission webhook of one cluster works from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workloads {
    /// The Kubernetes destination the webhook serves.
    pub cluster: String,
    /// The webhook's serving certificate (leaf, then CA) in PEM; empty
    /// when its key could not be certified.
    pub certificate: String,
    /// The webhook CA: the `caBundle` of the webhook configuration.
    pub ca: String,
    /// The CA of the server's own certificate, which the injected sidecars
    /// trust.
    pub server_ca: String,
    /// The workload issuers made `--from-cluster` this cluster.
    pub issuers: Vec<ClusterTrust>,
    /// The service accounts those issuers' mappings name or match, each
    /// with the destinations a grant lets it reach.
    pub reach: BTreeMap<String, Vec<String>>,
    /// The destinations a pod may name: their kinds.
    pub destinations: BTreeMap<String, DestinationKind>,
}

/// A workload issuer that trusts a cluster's service-account tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTrust {
    pub name: String,
    /// The audience a projected token must carry.
    pub audience: String,
    pub mappings: BTreeMap<String, String>,
}

/// Server → connector, on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ControlMsg {
    Snapshot(Snapshot),
    /// Audit events up to `seq` are stored durably.
    AuditAck {
        seq: i64,
    },
    /// The server holds recording `id` up to byte `have`; `stored` once the
    /// whole recording is in the recording store and its digest in the
    /// audit log (the connector may then forget it). `error` says why a
    /// finished recording is not stored yet (the store is unreachable):
    /// the connector keeps it and tries again.
    RecordingAck {
        id: String,
        have: u64,
        #[serde(default)]
        stored: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// A piece of a session recording: asciicast v2 text, whole lines, from
/// byte `offset` of the recording. Every piece carries what the session is
/// (small, and it spares the server a state machine); once `meta.ended_ms`
/// is set, the recording ends with this piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingChunk {
    pub id: String,
    pub offset: u64,
    pub data: String,
    pub meta: RecordingMeta,
}

/// What a recorded session was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingMeta {
    pub kind: RecordingKind,
    pub user: String,
    pub destination: String,
    pub source: String,
    /// `namespace/pod/container` for Kubernetes, the login for SSH.
    pub target: String,
    /// What was run, when not a login shell.
    #[serde(default)]
    pub command: String,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// `exit 0`, `exit 2`, or how it ended.
    #[serde(default)]
    pub exit: String,
    /// The recorder stopped before the session did (the connector was
    /// killed): what is there is all there is.
    #[serde(default)]
    pub truncated: bool,
}

/// Which kind of session a recording is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingKind {
    /// `kubectl exec`, `attach` or `debug`.
    KubeExec,
    /// An SSH session in recording mode.
    Ssh,
}

impl RecordingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingKind::KubeExec => "kube-exec",
            RecordingKind::Ssh => "ssh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [RecordingKind::KubeExec, RecordingKind::Ssh]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One proxied request, as the connector reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEvent {
    pub seq: i64,
    pub time_ms: i64,
    pub user: String,
    pub destination: String,
    pub source: String,
    pub result: Outcome,
    pub detail: String,
}

/// How a proxied request or session ended, as the audit log's `result`
/// says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Let through, and the destination answered (whatever it answered).
    Success,
    /// Let through, but the destination could not be reached or reported
    /// an error (a failed SQL statement, say).
    Failure,
    /// Refused by the connector: no token, no grant, access revoked, or a
    /// request that breaks the protocol. A word this build does not know
    /// reads as `denied`, as it always has: refusing the whole message
    /// would close the tunnel, and the connector would send it again.
    // Last: serde takes only the last variant as the catch-all.
    #[serde(other)]
    Denied,
}

impl Outcome {
    /// The word in the audit log; the same as the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Connector → server, on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ConnectorMsg {
    Audit(AccessEvent),
    Health {
        ok: bool,
    },
    /// What a destination offers to grant, so the server can refuse a
    /// grant that could never work (an unknown namespace or role).
    Inventory(Inventory),
    /// A piece of a session recording.
    Recording(RecordingChunk),
}

/// The grantable parts of a destination, as its connector sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub destination: String,
    /// Kubernetes namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Roles a grant may name (Kubernetes ClusterRoles).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Kubernetes clusters: what each grantable ClusterRole allows, one
    /// line per rule (`get, list, watch: pods, services`), as the cluster
    /// says; shown to whoever reviews an access request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_rules: BTreeMap<String, Vec<String>>,
    /// SSH hosts: the certificate extensions the host allows beyond
    /// `permit-pty` (`permit-port-forwarding`, `permit-agent-forwarding`,
    /// `permit-X11-forwarding`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_extensions: Vec<String>,
    /// Kubernetes clusters: the service-account token issuer and its keys,
    /// from the API server's discovery documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_issuer: Option<ClusterIssuer>,
}

/// A cluster's service-account issuer (`iss` of its tokens) and its JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIssuer {
    pub issuer: String,
    pub jwks: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_spelled_as_before() {
        for (o, word) in [
            (Outcome::Success, "success"),
            (Outcome::Denied, "denied"),
            (Outcome::Failure, "failure"),
        ] {
            assert_eq!(o.as_str(), word);
            let json = format!("\"{word}\"");
            assert_eq!(serde_json::to_string(&o).unwrap(), json);
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
        // Anything else is a denial, never a success.
        for other in ["\"ok\"", "\"Success\"", "\"\""] {
            assert_eq!(
                serde_json::from_str::<Outcome>(other).unwrap(),
                Outcome::Denied,
                "{other}"
            );
        }
    }

    #[test]
    fn wire_kinds_are_spelled_as_before() {
        let g: GrantEntry = serde_json::from_str(
            r#"{"subjectKind":"group","subjectId":"g1","role":"view","resource":"prod","expiresAt":null}"#,
        )
        .unwrap();
        assert_eq!(g.subject_kind, SubjectKind::Group);
        assert!(serde_json::to_string(&g).unwrap().contains(r#""subjectKind":"group""#));
        let d: DestinationInfo = serde_json::from_str(r#"{"name":"db","kind":"postgres"}"#).unwrap();
        assert_eq!(d.kind, DestinationKind::Postgres);
        assert!(serde_json::to_string(&d).unwrap().contains(r#""kind":"postgres""#));
    }
}
