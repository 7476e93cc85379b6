//! Session recordings on the wire (docs/recording.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One recorded session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: String,
    /// `kube-exec` (kubectl exec, attach, debug) or `ssh`.
    pub kind: String,
    pub user: String,
    pub destination: String,
    /// `namespace/pod[/container]`, or the SSH login.
    pub target: String,
    /// What was run, when not an interactive shell.
    pub command: String,
    pub source: String,
    pub connector: String,
    pub started: String,
    /// Empty while the session runs.
    pub ended: String,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// `exit 0`, `exit 2`, or how it ended.
    pub exit: String,
    /// The recorder stopped before the session did (its connector was
    /// killed): the recording holds everything up to then.
    pub truncated: bool,
    /// Bytes of asciicast received.
    pub size: i64,
    /// `live` (still arriving) or `stored`.
    pub state: String,
    /// SHA-256 of the stored recording, as its audit event holds it.
    pub sha256: String,
    /// The audit event that holds the digest.
    pub audit_seq: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingQuery {
    /// Sessions of this user (email).
    pub user: Option<String>,
    pub destination: Option<String>,
    /// `kube-exec` or `ssh`.
    pub kind: Option<String>,
    /// Started at or after: RFC 3339 or a duration ago such as `1h`.
    pub since: Option<String>,
    /// Started before: RFC 3339 or a duration ago.
    pub until: Option<String>,
    /// Only sessions still running (`true`) or only finished ones (`false`).
    pub live: Option<bool>,
    pub page: Option<u32>,
    pub limit: Option<u32>,
}
