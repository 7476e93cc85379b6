//! The audit log on the wire: events, listing, verification.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    /// `success`, `denied` or `failure`.
    pub result: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339 time or a duration ago such as `1h`.
    pub since: Option<String>,
    /// Events by or about this user (email).
    pub user: Option<String>,
    pub destination: Option<String>,
    pub action: Option<String>,
    /// `success`, `denied` or `failure`.
    pub result: Option<String>,
    /// Events before this time: RFC 3339 or a duration ago.
    pub until: Option<String>,
    /// Only events after this sequence number (for `tail`).
    pub after: Option<i64>,
    /// Only the events of this access request: its story.
    pub request: Option<String>,
    /// Newest first instead of oldest first.
    #[serde(default)]
    pub newest_first: bool,
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerifyResponse {
    pub ok: bool,
    pub events_checked: u64,
    /// The first event that does not match the chain, when not ok.
    pub bad_seq: Option<i64>,
    pub message: String,
    /// The event verification started after: 0 for the start of the chain,
    /// or the checkpoint a routine verification resumed from.
    #[serde(default)]
    pub from_seq: i64,
    /// Archive files checked (a full verification).
    #[serde(default)]
    pub archives_checked: u64,
    /// Stored session recordings hashed again and matched with the digest
    /// their audit event holds.
    #[serde(default)]
    pub recordings_checked: u64,
}

/// One line of a streamed verification (`Accept: application/x-ndjson`):
/// progress while it runs, then the result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuditVerifyLine {
    /// Events checked so far.
    Progress {
        checked: u64,
    },
    Result(AuditVerifyResponse),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerifyQuery {
    /// Walk every archive file and the whole table, not only what is new
    /// since the last verification.
    #[serde(default)]
    pub full: bool,
}
