//! The SSH certificate authorities in the store: a user CA and a host CA,
//! each an Ed25519 key sealed with the root key. The newest unretired key
//! of a kind signs; after a rotation the old key stays published for
//! [`RETENTION_MS`], so certificates it signed keep working while hosts
//! and clients pick up the new one.

use std::collections::BTreeMap;

use infra_auth::envelope;
use infra_auth::ssh_ca::{CaKind, SshCa};
use infra_store::keys::{self, SshCaRow};
use infra_store::now_ms;
use infra_tunnel::proto::{DestinationInfo, DestinationKind, SshMaterial};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How long a retired CA key stays trusted: longer than any user
/// certificate lives, and a day for connectors to fetch new host
/// certificates (they get them within seconds, on the next push).
pub(crate) const RETENTION_MS: i64 = 24 * 3_600_000;

fn context(id: &str) -> String {
    format!("ssh_ca:{id}")
}

/// Creates a CA key of `kind` inside the caller's transaction.
pub(crate) async fn create(c: &mut infra_store::Conn, state: &AppState, kind: CaKind) -> ApiResult<SshCaRow> {
    let ca = SshCa::generate(kind).map_err(ApiError::internal)?;
    let id = infra_auth::random_token(16).map_err(ApiError::internal)?;
    let pem = ca.to_openssh().map_err(ApiError::internal)?;
    let row = SshCaRow {
        private_sealed: envelope::seal(&state.root_key, &context(&id), pem.expose().as_bytes())
            .map_err(ApiError::internal)?,
        id,
        kind: kind.as_str().into(),
        public_key: ca.public_openssh().map_err(ApiError::internal)?,
        created_at: now_ms(),
        retired_at: None,
    };
    keys::insert_ssh_ca(c, &row).await?;
    Ok(row)
}

/// At start: a user and a host CA exist. Idempotent when replicas start
/// together (writers are serialised and each checks inside its write).
pub(crate) async fn ensure(state: &AppState) -> ApiResult<()> {
    let mut tx = state.store.write().await?;
    for kind in [CaKind::User, CaKind::Host] {
        if !keys::ssh_cas(tx.conn(), kind.as_str())
            .await?
            .iter()
            .any(|r| r.retired_at.is_none())
        {
            create(tx.conn(), state, kind).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The key that signs certificates of `kind` now.
///
/// A new user CA key signs at once: connectors put it in sshd's
/// `TrustedUserCAKeys` within a second of the rotation. A new host CA key
/// waits until every client certificate issued before it was published
/// has expired: clients learn the host CA keys with each certificate, so
/// by then every client trusts it, and until then hosts keep presenting
/// certificates from the old key.
pub(crate) async fn signer(state: &AppState, kind: CaKind) -> ApiResult<SshCa> {
    let mut c = state.store.conn().await?;
    let now = now_ms();
    let rows = keys::ssh_cas(&mut c, kind.as_str()).await?;
    let mature = now - crate::wire::ms(state.settings.ssh_cert_ttl);
    let row = match kind {
        CaKind::User => rows.into_iter().find(|r| r.retired_at.is_none()),
        CaKind::Host => {
            // Newest first; if none is mature yet (a rotation soon after
            // the first start), the one that has signed longest.
            let trusted: Vec<SshCaRow> = rows
                .into_iter()
                .filter(|r| r.retired_at.is_none_or(|t| t > now - RETENTION_MS))
                .collect();
            trusted
                .iter()
                .find(|r| r.created_at <= mature)
                .or(trusted.last())
                .cloned()
        }
    }
    .ok_or_else(|| ApiError::internal(format!("no active SSH {} CA", kind.as_str())))?;
    let pem = envelope::open(&state.root_key, &context(&row.id), &row.private_sealed).map_err(ApiError::internal)?;
    let text = String::from_utf8(pem.expose().clone()).map_err(ApiError::internal)?;
    SshCa::from_openssh(&text).map_err(ApiError::internal)
}

/// The public keys to trust for `kind`: the signing key first, then
/// recently retired ones.
pub(crate) async fn published(state: &AppState, kind: CaKind) -> ApiResult<Vec<String>> {
    let mut c = state.store.conn().await?;
    let cutoff = now_ms() - RETENTION_MS;
    Ok(keys::ssh_cas(&mut c, kind.as_str())
        .await?
        .into_iter()
        .filter(|r| r.retired_at.is_none_or(|t| t > cutoff))
        .map(|r| r.public_key)
        .collect())
}

/// What a connector's SSH hosts need: the user CA keys for sshd, and a
/// host certificate for each host key it reported.
pub(crate) async fn material(
    state: &AppState,
    connector: &str,
    destinations: &[DestinationInfo],
) -> ApiResult<SshMaterial> {
    if destinations.iter().all(|d| d.kind != DestinationKind::Ssh) {
        return Ok(SshMaterial::default());
    }
    let user_ca = published(state, CaKind::User).await?;
    let host_ca = signer(state, CaKind::Host).await?;
    let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
    let mut host_certs = BTreeMap::new();
    for d in destinations.iter().filter(|d| !d.ssh_host_keys.is_empty()) {
        // Only for names this connector still owns: a destination removed
        // and given to another connector is not vouched for to the old one.
        let mut c = state.store.conn().await?;
        let owner = infra_store::connectors::destination(&mut c, &d.name).await?;
        drop(c);
        if owner.is_none_or(|o| o.connector != connector) {
            continue;
        }
        let mut certs = Vec::new();
        for line in &d.ssh_host_keys {
            // A key the connector should never have sent is skipped, not
            // fatal: the others still get certificates.
            let cert = infra_auth::ssh_ca::parse_allowed_key(line)
                .and_then(|k| host_ca.sign_host(&k, std::slice::from_ref(&d.name), now))
                .and_then(|c| infra_auth::ssh_ca::certificate_line(&c));
            match cert {
                Ok(c) => certs.push(c),
                Err(e) => tracing::warn!(destination = %d.name, error = %e, "cannot certify a host key"),
            }
        }
        host_certs.insert(d.name.clone(), certs);
    }
    Ok(SshMaterial { user_ca, host_certs })
}
