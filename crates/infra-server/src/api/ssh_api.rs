//! SSH: the CA public keys, user certificates, CA rotation.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use infra_api::{SshCaInfo, SshCaRotate, SshCertRequest, SshCertResponse};
use infra_auth::ssh_ca::{self, CaKind, UserCertRequest};
use infra_core::{InfraRole, Resource};
use infra_store::connectors::DestinationRow;
use infra_store::{identity, keys, now_ms};

use crate::audit;
use crate::authn::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

/// Shortest certificate a client may ask for, so a clock a few seconds
/// off does not make one that is dead on arrival.
const MIN_TTL_SECS: u64 = 5;
/// Certificates are valid from a minute ago: a host whose clock is a
/// little behind still accepts them.
const BACKDATE_SECS: u64 = 60;

fn text(lines: Vec<String>) -> impl IntoResponse {
    let mut body = lines.join("\n");
    body.push('\n');
    ([("content-type", "text/plain; charset=utf-8")], body)
}

/// The user CA public keys, one OpenSSH line each: the file sshd's
/// `TrustedUserCAKeys` names.
#[utoipa::path(get, path = "/api/ssh/ca", tag = "ssh",
    responses((status = 200, description = "OpenSSH public key lines", content_type = "text/plain")))]
pub(crate) async fn user_ca(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(text(crate::ssh::published(&state, CaKind::User).await?))
}

/// The host CA public keys, one OpenSSH line each, for `@cert-authority`
/// lines in known_hosts.
#[utoipa::path(get, path = "/api/ssh/host-ca", tag = "ssh",
    responses((status = 200, description = "OpenSSH public key lines", content_type = "text/plain")))]
pub(crate) async fn host_ca(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok(text(crate::ssh::published(&state, CaKind::Host).await?))
}

/// Rotate a CA: a new key signs from now on; the old one stays trusted for
/// a day. Connectors receive the new keys at once.
#[utoipa::path(post, path = "/api/ssh/ca/rotate", tag = "ssh", request_body = SshCaRotate,
    responses((status = 200, body = SshCaInfo)), security(("accessKey" = [])))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<SshCaRotate>,
) -> ApiResult<Json<SshCaInfo>> {
    let kind = match req.kind.as_str() {
        "user" => CaKind::User,
        "host" => CaKind::Host,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind is 'user' or 'host', not '{other}'"
            )));
        }
    };
    caller
        .require(&state, InfraRole::Admin, "rotate SSH certificate authorities", "ssh-ca")
        .await?;
    let now = now_ms();
    let mut tx = state.store.write().await?;
    keys::retire_ssh_cas(tx.conn(), kind.as_str(), now, now - crate::ssh::RETENTION_MS).await?;
    let row = crate::ssh::create(tx.conn(), &state, kind).await?;
    let ev = caller
        .event("ssh-ca.rotate", kind.as_str())
        .detail(format!("public_key={}", row.public_key));
    audit::commit(&state, tx, ev).await?;
    if kind == CaKind::Host {
        // The new host key starts signing once it is mature (see
        // `ssh::signer`): push the hosts their new certificates then.
        // Fire and forget: a nudge that must outlive nothing (connectors
        // get fresh certificates from any replica when they reconnect), so
        // shutdown does not wait the hour for it.
        let st = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(st.settings.ssh_cert_ttl + std::time::Duration::from_secs(1)).await;
            st.hub.changed();
        });
    }
    Ok(Json(SshCaInfo {
        kind: kind.as_str().into(),
        public_keys: crate::ssh::published(&state, kind).await?,
    }))
}

/// Issue an OpenSSH user certificate for the caller's key, valid on one
/// host for the logins they are granted there.
#[utoipa::path(post, path = "/api/ssh/certificates", tag = "ssh", request_body = SshCertRequest,
    responses((status = 200, body = SshCertResponse), (status = 400, body = infra_api::ErrorBody),
        (status = 403, body = infra_api::ErrorBody)), security(("accessKey" = [])))]
pub(crate) async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<SshCertRequest>,
) -> ApiResult<Json<SshCertResponse>> {
    let dest = Resource::parse(&req.destination)?;
    let host = dest.destination().to_owned();
    let deny = |d: Denial| {
        let state = state.clone();
        let ev = caller.event("ssh.certificate", &host).result("denied").detail(d.why);
        async move {
            audit::record(&state, ev).await?;
            Err::<Json<SshCertResponse>, _>(d.status)
        }
    };
    if dest.as_str() != host {
        let m = format!("an SSH host has no namespaces: ask for '{host}'");
        return deny(Denial::same(ApiError::bad_request, m)).await;
    }
    let now = now_ms();
    let facts = HostFacts::read(&state, &caller, &host, now).await?;
    let logins = match facts.admit(&caller, &host, &req.logins) {
        Ok(l) => l,
        Err(d) => return deny(d).await,
    };
    let key = match ssh_ca::parse_allowed_key(&req.public_key) {
        Ok(k) => k,
        Err(e) => return deny(Denial::same(ApiError::bad_request, e.to_string())).await,
    };
    let now_s = u64::try_from(now / 1000).unwrap_or(0);
    let ttl = facts.ttl(&state, &caller, req.ttl_seconds, &logins, now_s)?;
    let serial = u64::from_be_bytes(infra_auth::random_bytes::<8>().map_err(ApiError::internal)?);
    let extensions = facts.extensions();
    let cert = UserCertRequest {
        key: &key,
        host: &host,
        user_id: &caller.user.id,
        logins: &logins,
        key_id: format!("{} serial={serial}", caller.email()),
        serial,
        valid: (now_s.saturating_sub(BACKDATE_SECS), now_s + ttl),
        extensions: &extensions,
    };
    let direct_address = facts
        .row
        .and_then(|r| r.direct_url)
        .and_then(|u| u.strip_prefix("ssh://").map(str::to_owned));
    sign(&state, &caller, cert, direct_address).await
}

/// A refusal to issue: audited with `why`, answered with `status`.
struct Denial {
    status: ApiError,
    why: String,
}

impl Denial {
    /// A refusal that tells the client what the audit records.
    fn same(status: fn(String) -> ApiError, why: String) -> Self {
        Self {
            status: status(why.clone()),
            why,
        }
    }
}

/// What the store says about a host for one caller.
struct HostFacts {
    row: Option<DestinationRow>,
    /// The destination's kind and its connector's inventory (JSON).
    inventory: Option<(infra_core::DestinationKind, Option<String>)>,
    /// Each login the caller is granted there, and when that access ends:
    /// the latest expiry among the grants that give it (None: no end).
    login_ends: BTreeMap<String, Option<i64>>,
}

impl HostFacts {
    async fn read(state: &AppState, caller: &Caller, host: &str, now: i64) -> ApiResult<Self> {
        let mut c = state.store.conn().await?;
        let row = infra_store::connectors::destination(&mut c, host).await?;
        let inventory = infra_store::connectors::inventory(&mut c, host).await?;
        let filter = infra_store::GrantFilter {
            user_id: Some(caller.user.id.clone()),
            via_groups: caller.groups.iter().map(|g| g.id.clone()).collect(),
            resource: Some(host.to_owned()),
            ..Default::default()
        };
        let (grants, _) = identity::list_grants(&mut c, &filter, now, 1, infra_api::MAX_LIMIT).await?;
        let mut login_ends: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for g in grants {
            let e = login_ends.entry(g.role).or_insert(g.expires_at);
            *e = match (*e, g.expires_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        Ok(Self {
            row,
            inventory,
            login_ends,
        })
    }

    /// The logins to certify: those asked for (all granted ones if none),
    /// on a registered SSH host where the caller holds a grant.
    fn admit(&self, caller: &Caller, host: &str, asked: &[String]) -> Result<Vec<String>, Denial> {
        let granted: Vec<String> = self.login_ends.keys().cloned().collect();
        if granted.is_empty() {
            let m = format!(
                "you have no grant on {host}; see 'infra list', or ask an admin: infra grants add {} {host} --role LOGIN",
                caller.email()
            );
            return Err(Denial {
                status: ApiError::forbidden(m),
                why: "no grant on this host".into(),
            });
        }
        match &self.row {
            Some(r) if r.kind == infra_core::DestinationKind::Ssh => {}
            Some(r) => {
                let m = format!("{host} is a {} destination, not an SSH host", r.kind);
                return Err(Denial::same(ApiError::bad_request, m));
            }
            None => {
                let m = format!("no connector has registered SSH host {host} yet; ask an admin to start its connector");
                return Err(Denial::same(ApiError::not_found, m));
            }
        }
        if asked.is_empty() {
            return Ok(granted);
        }
        if let Some(l) = asked.iter().find(|l| !granted.contains(l)) {
            let m = format!(
                "you are not granted login '{l}' on {host}; you may use: {}",
                granted.join(", ")
            );
            return Err(Denial {
                status: ApiError::forbidden(m),
                why: format!("login {l} not granted"),
            });
        }
        let mut l = asked.to_vec();
        l.sort();
        l.dedup();
        Ok(l)
    }

    /// Seconds the certificate lives: never longer than the server allows,
    /// nor than the session that asks, nor past a grant that expires.
    fn ttl(
        &self,
        state: &AppState,
        caller: &Caller,
        asked: Option<u64>,
        logins: &[String],
        now_s: u64,
    ) -> ApiResult<u64> {
        let mut ttl = state.settings.ssh_cert_ttl.as_secs();
        if let Some(t) = asked {
            ttl = ttl.min(t.max(MIN_TTL_SECS));
        }
        let grant_end = logins
            .iter()
            .filter_map(|l| self.login_ends.get(l).copied().flatten())
            .min();
        for exp in [caller.key_expires, grant_end].into_iter().flatten() {
            ttl = ttl.min(u64::try_from(exp / 1000).unwrap_or(0).saturating_sub(now_s));
        }
        if ttl == 0 {
            return Err(ApiError::unauthorized(
                "your session has ended; run 'infra login' again",
            ));
        }
        Ok(ttl)
    }

    /// `permit-pty`, and the extensions the host's connector turns on.
    fn extensions(&self) -> Vec<String> {
        let mut extensions = vec!["permit-pty".to_owned()];
        if let Some((_, Some(json))) = &self.inventory
            && let Ok(inv) = serde_json::from_str::<infra_tunnel::proto::Inventory>(json)
        {
            extensions.extend(
                inv.ssh_extensions
                    .into_iter()
                    .filter(|e| ALLOWED_EXTENSIONS.contains(&e.as_str())),
            );
        }
        extensions
    }
}

/// Signs with the active user CA, audits the certificate, and answers.
async fn sign(
    state: &AppState,
    caller: &Caller,
    cert: UserCertRequest<'_>,
    direct_address: Option<String>,
) -> ApiResult<Json<SshCertResponse>> {
    let ca = crate::ssh::signer(state, CaKind::User).await?;
    let signed = ca.sign_user(&cert).map_err(ApiError::internal)?;
    let line = ssh_ca::certificate_line(&signed).map_err(ApiError::internal)?;
    let ev = caller.event("ssh.certificate", cert.host).detail(format!(
        "logins={} serial={} valid_before={} key={} extensions={}",
        cert.logins.join(","),
        cert.serial,
        crate::wire::time(i64::try_from(cert.valid.1).unwrap_or(0) * 1000),
        ssh_ca::fingerprint(cert.key),
        cert.extensions.join(",")
    ));
    audit::record(state, ev).await?;
    Ok(Json(SshCertResponse {
        certificate: line,
        principals: signed.valid_principals().to_vec(),
        logins: cert.logins.to_vec(),
        serial: cert.serial,
        valid_after: cert.valid.0,
        valid_before: cert.valid.1,
        host_ca: crate::ssh::published(state, CaKind::Host).await?,
        direct_address,
    }))
}

/// Extensions a host may turn on (beyond `permit-pty`, always present).
const ALLOWED_EXTENSIONS: [&str; 3] = [
    "permit-port-forwarding",
    "permit-agent-forwarding",
    "permit-X11-forwarding",
];
