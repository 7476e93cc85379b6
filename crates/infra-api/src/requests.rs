//! Just-in-time access on the wire: policies, requests, reviews and the
//! receivers of request events (docs/access-requests.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn one() -> u32 {
    1
}

/// Who may request what, for how long, and who approves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicy {
    pub name: String,
    /// Members of these groups may request.
    pub requesters: Vec<String>,
    /// Roles that may be requested on `resources` ...
    #[serde(default)]
    pub roles: Vec<String>,
    /// ... which are `DEST`, `DEST.PART`, `DEST.*` (any part) or `*` (any
    /// destination).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Groups whose membership may be requested.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The longest access a request may ask for, such as `4h`.
    pub max: String,
    /// Groups whose members approve; `infra-admins` for the admins of
    /// Infra (never implied).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Approvals needed (default 1) ...
    #[serde(default = "one")]
    pub approvals: u32,
    /// ... or more for some roles: `{"edit": 2}`.
    #[serde(default)]
    pub approvals_for: BTreeMap<String, u32>,
    /// Roles granted at once, without review.
    #[serde(default)]
    pub auto_approve: Vec<String>,
    /// If set, auto-approval is only for members of these groups (an
    /// on-call group kept current by the rota).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_approve_members: Vec<String>,
    /// Break-glass: requesters may approve their own request for at most
    /// this long (`1h`); flagged, audited and notified.
    #[serde(default)]
    pub break_glass: Option<String>,
    /// How long a request waits for review before it expires (default
    /// `24h`).
    #[serde(default)]
    pub review_within: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// Ask for access: a role on one or more destinations (or parts), or a
/// group's membership; for how long and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccessRequest {
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// How long, such as `2h`.
    #[serde(rename = "for")]
    pub duration: String,
    pub reason: String,
    /// Approve it yourself, under a policy that allows break-glass.
    #[serde(default)]
    pub break_glass: bool,
}

/// One thing a request asks for, and what it means at the destination.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestedAccess {
    /// `grant` or `membership`.
    pub kind: String,
    pub role: Option<String>,
    pub resource: Option<String>,
    pub group: Option<String>,
    /// What it gives, in the destination's terms.
    pub means: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestReview {
    pub reviewer: String,
    /// `approve` or `deny`.
    pub decision: String,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    pub id: String,
    pub requester: String,
    pub policy: String,
    pub asks: Vec<RequestedAccess>,
    /// Such as `2h`.
    pub duration: String,
    pub reason: String,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled` or `ended`.
    pub state: String,
    pub approvals_needed: u32,
    pub approvals: u32,
    pub break_glass: bool,
    pub created: String,
    /// A pending request expires unreviewed then.
    pub review_by: String,
    pub decided: Option<String>,
    /// An approved request's grants end then.
    pub grants_until: Option<String>,
    pub reviews: Vec<RequestReview>,
    /// For reviewers: what the requester holds now on the destinations
    /// asked for (all of it, for a group's membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Vec<crate::Grant>>,
    /// Whether the caller may approve or deny it.
    #[serde(default)]
    pub may_review: bool,
}

/// A review's reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewRequest {
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestQuery {
    /// Only this state.
    pub state: Option<String>,
    /// Only the caller's own requests.
    #[serde(default)]
    pub mine: bool,
    /// Only the requests the caller may review.
    #[serde(default)]
    pub to_review: bool,
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

/// A receiver of request events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequestWebhook {
    pub name: String,
    /// `https://…` (or `http://…` on a trusted network).
    pub url: String,
    /// `json` (default) or `slack` (a Slack incoming webhook's `{"text"}`).
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestWebhook {
    pub name: String,
    pub url: String,
    pub format: String,
    /// The last audit event delivered.
    pub delivered_up_to: i64,
    pub failures: u32,
    pub last_error: Option<String>,
    pub created: String,
    /// Only when made: the HMAC key of `X-Infra-Signature`, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}
