//! What a connector serving the admission webhook of a cluster is told
//! (`Snapshot::workloads`): the webhook's certificate, the workload issuers
//! that trust the cluster, the service accounts they map and what each may
//! reach, and the kinds of the destinations a pod may name.
//!
//! The connector answers admission requests from this alone, with no call
//! to the server per pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use infra_auth::webhook_ca::{LEAF_DAYS, WebhookCa};
use infra_core::workload::Mappings;
use infra_core::{DestinationKind, Resource};
use infra_store::{connectors, identity, now_ms, providers};
use infra_tunnel::proto::{ClusterTrust, DestinationInfo, Workloads};

use crate::state::AppState;

/// What the root key derives the webhook CA's key from.
const CA_PURPOSE: &str = "infra webhook ca v1";
const DAY_MS: i64 = 86_400_000;

/// Certificates issued, by (public key, names), with when: a snapshot is
/// pushed on every change, and a new certificate each time would make the
/// connector reload for nothing. A cache only; any replica re-issues.
static ISSUED: LazyLock<Mutex<HashMap<Request, Issued>>> = LazyLock::new(Mutex::default);
/// (public key, names)
type Request = (String, Vec<String>);
/// (chain PEM, when in unix ms)
type Issued = (String, i64);

/// The CAs made so far, by (root key id, cluster): each snapshot of a
/// webhook's connector needs its cluster's, and making one signs.
static CAS: LazyLock<Mutex<HashMap<CaKey, Arc<WebhookCa>>>> = LazyLock::new(Mutex::default);
/// (root key id, cluster)
type CaKey = (String, String);

/// The webhook CA of one cluster (the same on every replica). One per
/// cluster: a certificate a connector gets for its own webhook is no use
/// against another cluster's API server.
pub(crate) fn webhook_ca(state: &AppState, cluster: &str) -> Result<Arc<WebhookCa>, String> {
    let key = (state.root_key.id().to_owned(), cluster.to_owned());
    if let Some(ca) = CAS.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(ca);
    }
    let ca = Arc::new(
        WebhookCa::from_seed(state.root_key.derive(&format!("{CA_PURPOSE}:{cluster}")).expose())
            .map_err(|e| e.to_string())?,
    );
    if let Ok(mut m) = CAS.lock() {
        m.insert(key, ca.clone());
    }
    Ok(ca)
}

/// The workloads part of a snapshot for a connector with `infos`; `None`
/// unless one of its Kubernetes destinations serves the webhook.
pub(crate) async fn material(
    state: &AppState,
    connector: &str,
    infos: &[DestinationInfo],
) -> Result<Option<Box<Workloads>>, String> {
    let Some((cluster, key)) = infos.iter().find_map(|d| Some((d.name.clone(), d.webhook.clone()?))) else {
        return Ok(None);
    };
    let store = |e: infra_store::StoreError| e.to_string();
    let mut c = state.store.conn().await.map_err(store)?;
    // Only for a cluster this connector still owns, as for SSH hosts.
    let owner = connectors::destination(&mut c, &cluster).await.map_err(store)?;
    if owner.is_none_or(|o| o.connector != connector || o.kind != DestinationKind::Kubernetes) {
        return Ok(None);
    }
    let ca = webhook_ca(state, &cluster)?;
    let certificate = certificate(&ca, &key.public_key, &key.names).unwrap_or_else(|e| {
        tracing::warn!(connector, cluster = %cluster, error = %e, "cannot certify the webhook's key");
        String::new()
    });
    let issuers: Vec<ClusterTrust> = providers::workload_issuers(&mut c)
        .await
        .map_err(store)?
        .into_iter()
        .filter(|w| w.cluster.as_deref() == Some(cluster.as_str()) && w.cluster_connector.as_deref() == Some(connector))
        .map(|w| ClusterTrust {
            name: w.name,
            audience: w.audience,
            mappings: serde_json::from_str(&w.mappings).unwrap_or_default(),
        })
        .collect();
    let destinations: BTreeMap<String, DestinationKind> = connectors::destination_kinds(&mut c)
        .await
        .map_err(store)?
        .into_iter()
        .filter(|(_, k)| matches!(k, DestinationKind::Postgres | DestinationKind::Http))
        .collect();
    let accounts = identity::service_accounts(&mut c).await.map_err(store)?;
    drop(c);
    let mappings: Vec<Mappings> = issuers.iter().map(|i| Mappings::stored(i.mappings.clone())).collect();
    // Only the service accounts this cluster's workloads can become.
    let mapped: Vec<(String, String)> = accounts
        .into_iter()
        .filter(|(_, email)| {
            mappings
                .iter()
                .any(|m| m.as_map().values().any(|v| v == email) || m.is_pattern_target(email))
        })
        .collect();
    let names: Vec<String> = destinations.keys().cloned().collect();
    let view = crate::grants_snapshot::grants_snapshot(state, &names)
        .await
        .map_err(store)?
        .grant_view();
    let now = now_ms();
    let reach = mapped
        .into_iter()
        .map(|(id, email)| {
            let can: Vec<String> = names
                .iter()
                .filter(|d| Resource::parse(d).is_ok_and(|r| !view.roles_for(&id, &r, now).is_empty()))
                .cloned()
                .collect();
            (email, can)
        })
        .collect();
    let server_ca = {
        let mut c = state.store.conn().await.map_err(store)?;
        infra_store::keys::sealed_secret(&mut c, crate::bootstrap::CA_SECRET)
            .await
            .map_err(store)?
            .map(|(cert_pem, _)| cert_pem)
            .unwrap_or_default()
    };
    Ok(Some(Box::new(Workloads {
        cluster,
        certificate,
        ca: ca.cert_pem().to_owned(),
        server_ca,
        issuers,
        reach,
        destinations,
    })))
}

/// The webhook's certificate, re-issued once a third of its life is left.
fn certificate(ca: &WebhookCa, public_key: &str, names: &[String]) -> Result<String, String> {
    use base64::Engine as _;
    let cache_key = (public_key.to_owned(), names.to_vec());
    let now = now_ms();
    if let Ok(issued) = ISSUED.lock()
        && let Some((pem, at)) = issued.get(&cache_key)
        && now - at < LEAF_DAYS * DAY_MS * 2 / 3
    {
        return Ok(pem.clone());
    }
    let point = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(public_key)
        .map_err(|e| format!("public key: {e}"))?;
    let pem = ca
        .certify(&point, names, time::OffsetDateTime::now_utc())
        .map_err(|e| e.to_string())?;
    if let Ok(mut issued) = ISSUED.lock() {
        // Bounded: one entry per connector instance in practice.
        if issued.len() >= 4096 {
            issued.clear();
        }
        issued.insert(cache_key, (pem.clone(), now));
    }
    Ok(pem)
}
