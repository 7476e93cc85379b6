//! Wire types of the REST API, shared by the server and the CLI.
//!
//! These are separate from the domain types in `infra-core`: they carry
//! strings as clients send them, and the server validates them at the edge.
//! Requests reject unknown fields so a typo is an error, not a silent no-op.

mod audit;
pub mod kubeconfig;
mod recordings;
mod requests;

pub use audit::*;
pub use recordings::*;
pub use requests::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub code: u16,
    /// What went wrong and, where it helps, what to do.
    pub message: String,
}

/// A page of a list. Every list endpoint takes `page` (from 1) and `limit`
/// (default 100, at most 1000).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub limit: u32,
    pub total_count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

/// Which users to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserQuery {
    /// `user` (people) or `service` (service accounts); default both.
    pub kind: Option<String>,
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Option<String>,
    pub password: Option<String>,
    /// Log in with an existing access key instead of a password.
    pub access_key: Option<String>,
    /// Log in through this identity provider, with `code` + `state` +
    /// `redirectUri` (authorization code) or `deviceCode` (device grant).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub device_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// A session key: send it as `Authorization: Bearer <key>`.
    pub access_key: String,
    pub expires: String,
    pub user: User,
    /// The password was set by an admin and must be changed now.
    pub password_update_required: bool,
    /// Something the user should know about this session (it is shorter
    /// than usual, say, and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub created: String,
    pub last_seen: Option<String>,
    pub groups: Vec<String>,
    /// `user` (a person) or `service` (a service account).
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    /// Without it the server makes a one-time password that must be
    /// changed at first login.
    pub password: Option<String>,
    /// A service account: a workload's identity, with no password; it
    /// holds grants and access keys, and workloads get its credentials by
    /// token exchange.
    #[serde(default)]
    pub service: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserResponse {
    pub user: User,
    pub one_time_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub password: String,
    /// Required when changing your own password.
    pub old_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    pub name: String,
    pub created: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroupRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub id: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub role: String,
    pub resource: String,
    pub created: String,
    pub created_by: String,
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGrantRequest {
    /// A user's email; give this or `group`.
    pub user: Option<String>,
    pub group: Option<String>,
    pub role: String,
    pub resource: String,
    /// Such as `8h` or `7d`.
    pub expires_in: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantQuery {
    pub user: Option<String>,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub role: Option<String>,
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub id: String,
    pub name: String,
    /// `user`, `connector` or `session`.
    pub kind: String,
    pub user: Option<String>,
    pub created: String,
    pub expires: Option<String>,
    pub last_used: String,
    pub inactivity_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The user the key acts as; default the caller. Not with `connector`.
    pub user: Option<String>,
    /// A key for `infra connector`.
    #[serde(default)]
    pub connector: bool,
    pub name: Option<String>,
    pub expires_in: Option<String>,
    /// The key stops working after this long unused, such as `720h`.
    pub inactivity_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyResponse {
    /// Shown once; only a hash is stored.
    pub access_key: String,
    pub key: AccessKey,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// The destination the token is for; without it, a token for Infra's
    /// own API audience.
    pub destination: Option<String>,
    /// An external audience (Infra as an issuer): a token for another
    /// system that trusts Infra's discovery document and JWKS.
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub token: String,
    pub expires: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyInfo {
    pub kid: String,
    pub created: String,
    /// The key that signs new tokens.
    pub active: bool,
    pub retired: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub server_version: String,
    pub user: User,
    /// The caller's strongest role on Infra itself, if any.
    pub infra_role: Option<String>,
    pub grants: Vec<Grant>,
    pub session_expires: Option<String>,
    /// Where to reach each destination the caller has a grant on.
    #[serde(default)]
    pub urls: std::collections::BTreeMap<String, String>,
    /// The kind (`http`, `kubernetes`, ...) of each destination in `urls`
    /// that a connector has registered.
    #[serde(default)]
    pub kinds: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub name: String,
    /// `http`, `kubernetes`, `postgres` or `ssh`.
    pub kind: String,
    pub connector: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `connected` or `disconnected` for a connector's destination;
    /// `forward-auth` for one the server decides for a proxy.
    pub health: String,
    /// Tunnels serving it now.
    pub tunnels: u32,
    pub last_seen: String,
    /// Where users reach it: through the gateway, or a forward-auth
    /// destination's own public origin.
    pub url: String,
    pub direct_url: Option<String>,
}

/// A running connector (one data directory) and its tunnels.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorInstance {
    pub connector: String,
    pub instance: String,
    /// Its `infra --version`; empty for connectors too old to say.
    pub version: String,
    /// The address it connects from.
    pub source: String,
    /// When its current tunnels opened (or its last ones, if none is open).
    pub connected: String,
    pub last_seen: String,
    /// Tunnels open now, across the server's replicas.
    pub tunnels: u32,
}

/// One way a user reaches a destination: the grant, and the group it is
/// held through (none for a grant to the user).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPath {
    pub user: String,
    pub role: String,
    /// The destination or the part of it (`cluster.namespace`) granted.
    pub resource: String,
    pub group: Option<String>,
    pub expires: Option<String>,
    /// The grant's id (`infra grants remove ID` ends this path).
    pub grant: String,
}

/// A destination the server decides for itself, for a proxy in front of
/// the application (nginx `auth_request`, Caddy `forward_auth`, Traefik
/// ForwardAuth, Envoy `ext_authz`). No connector serves it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewForwardAuthDestination {
    pub name: String,
    /// The application's public origin, `https://host[:port]`: the proxy
    /// names it in `X-Forwarded-Host`, and browsers come back to it after
    /// signing in.
    pub url: String,
}

/// A request for an SSH user certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshCertRequest {
    /// The SSH host (destination) the certificate is for.
    pub destination: String,
    /// The client's public key, one OpenSSH line (`ssh-ed25519 AAAA...`).
    pub public_key: String,
    /// The logins to include; each must be granted. Empty: every login
    /// the caller is granted on the host.
    #[serde(default)]
    pub logins: Vec<String>,
    /// A shorter lifetime than the server's, in seconds.
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshCertResponse {
    /// The OpenSSH certificate line (save as `<key>-cert.pub`).
    pub certificate: String,
    pub logins: Vec<String>,
    pub principals: Vec<String>,
    pub serial: u64,
    /// Unix seconds.
    pub valid_after: u64,
    pub valid_before: u64,
    /// Host CA keys, for `@cert-authority` lines in known_hosts.
    pub host_ca: Vec<String>,
    /// `host:port` where clients reach sshd without the tunnel, if the
    /// connector says they can.
    pub direct_address: Option<String>,
}

/// Which SSH CA to rotate: `user` or `host`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshCaRotate {
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshCaInfo {
    pub kind: String,
    /// The public keys trusted now, signing key first.
    pub public_keys: Vec<String>,
}

/// An OpenID Connect identity provider, as an admin adds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderCreate {
    pub name: String,
    /// The issuer URL, exactly as the provider's discovery document names it.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The claim with the user's groups (default `groups`; a path such as
    /// `realm_access.roles` works too).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Scopes to ask for (default `openid email profile groups`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Only emails in these domains may log in (default: any).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Accept emails the provider does not mark `email_verified` (Entra ID
    /// sends no such claim). Such an email never takes over an existing
    /// Infra account.
    #[serde(default)]
    pub allow_unverified_email: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderInfo {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub groups_claim: String,
    pub scopes: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub created: String,
    /// On creation: something the admin should know about this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Where the provider sends the browser back: the CLI's loopback
    /// listener, `http://127.0.0.1:PORT/callback`.
    pub redirect_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizeResponse {
    /// Open this in a browser.
    pub url: String,
    /// Comes back on the redirect; send it with the code.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// Seconds between polls.
    pub interval: u64,
    pub expires_in: u64,
}

/// An issuer whose JWTs workloads may exchange for Infra credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIssuerCreate {
    pub name: String,
    /// The tokens' `iss`; with `fromCluster`, the cluster's own.
    #[serde(default)]
    pub issuer: String,
    /// A Kubernetes destination: trust the service-account issuer and keys
    /// its connector reports (kept current as the cluster rotates keys).
    #[serde(default)]
    pub from_cluster: Option<String>,
    /// Where its keys are (a JWKS URL) ...
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// ... or the JWKS document itself.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// The audience its tokens must carry for Infra.
    pub audience: String,
    /// The claim that names the workload (default `sub`).
    #[serde(default)]
    pub claim: Option<String>,
    /// Claim value → service account email. A key ending in `*` is a
    /// pattern whose value has one `*`, replaced by the rest of the claim
    /// (`system:serviceaccount:shop:*` → `*@shop.example`).
    pub mappings: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIssuerInfo {
    pub name: String,
    pub issuer: String,
    pub jwks_url: Option<String>,
    pub audience: String,
    pub claim: String,
    pub mappings: std::collections::BTreeMap<String, String>,
    /// The Kubernetes destination whose reported issuer and keys it uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub created: String,
}

/// The CA that signs connectors' admission webhook certificates: the
/// `caBundle` of a `MutatingWebhookConfiguration`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCaInfo {
    /// The certificate in PEM.
    pub pem: String,
    /// The same, base64-encoded, as `caBundle` takes it.
    pub ca_bundle: String,
}

/// RFC 8693 token exchange response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenExchangeResponse {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: i64,
}
