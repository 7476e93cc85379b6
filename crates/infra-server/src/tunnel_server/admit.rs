//! Letting a connector in: its hello read, its key and claims checked, its
//! destinations registered (audited), and the handshake answered with the
//! tunnel's control secret.

use infra_store::connectors::{self, DestinationRow};
use infra_store::{keys, now_ms};
use infra_tunnel::control::ControlSecret;
use infra_tunnel::handshake;
use infra_tunnel::proto::{Hello, HelloReply};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use super::REPLICA_ALIVE_MS;
use crate::audit::{self, Event};
use crate::state::AppState;

/// A connector that passed the handshake: who it is, and the secret its
/// control stream will carry.
pub(super) struct Admitted<S> {
    pub(super) io: BufReader<S>,
    pub(super) hello: Hello,
    pub(super) key_id: String,
    pub(super) control_secret: ControlSecret,
}

/// Reads the hello, checks the connector, registers its destinations and
/// answers. `None`: it was refused (and told why) or went away.
pub(super) async fn admit<S>(state: &AppState, io: S, source: &str) -> Option<Admitted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut io, hello) = match handshake::accept(io).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%source, error = %e, "tunnel handshake failed");
            return None;
        }
    };
    let key_id = match authenticate(state, &hello).await {
        Ok(k) => k,
        Err(reason) => {
            tracing::warn!(%source, connector = %hello.name, %reason, "connector refused");
            let _ = handshake::reply(&mut io, &handshake::refusal(&reason)).await;
            return None;
        }
    };
    let acked = match register(state, &hello, &key_id, source).await {
        Ok(a) => a,
        Err(reason) => {
            let _ = handshake::reply(&mut io, &handshake::refusal(&reason)).await;
            return None;
        }
    };
    // The gateway serves certificates for these names from now on.
    state
        .gateway_names
        .add(hello.destinations.iter().map(|d| d.name.clone()));
    let replicas = match state.store.conn().await {
        Ok(mut c) => connectors::live_replicas(&mut c, now_ms() - REPLICA_ALIVE_MS)
            .await
            .unwrap_or_default(),
        Err(_) => vec![],
    };
    let Ok(control_secret) = ControlSecret::generate() else {
        let _ = handshake::reply(&mut io, &handshake::refusal("server cannot make a tunnel secret")).await;
        return None;
    };
    let reply = HelloReply {
        ok: true,
        error: None,
        issuer: Some(state.settings.public_url.clone()),
        audit_acked: acked,
        replicas,
        control_secret: control_secret.clone(),
    };
    handshake::reply(&mut io, &reply).await.ok()?;
    Some(Admitted {
        io,
        hello,
        key_id,
        control_secret,
    })
}

/// Checks the connector's key; returns the key id or a reason.
async fn authenticate(state: &AppState, hello: &Hello) -> Result<String, String> {
    let bad = || {
        "connector access key is invalid, expired or revoked; create one with 'infra keys add --connector --name NAME'"
            .to_owned()
    };
    let (id, secret) = infra_auth::access_key::parse(&hello.access_key).ok_or_else(bad)?;
    let mut c = state
        .store
        .conn()
        .await
        .map_err(|_| "server database unavailable".to_owned())?;
    let k = keys::key_by_id(&mut c, id)
        .await
        .map_err(|_| "server database unavailable".to_owned())?
        .ok_or_else(bad)?;
    if !infra_auth::access_key::secret_matches(secret, &k.secret_hash) || k.expires_at.is_some_and(|e| e <= now_ms()) {
        return Err(bad());
    }
    if k.kind != infra_store::KeyKind::Connector {
        return Err("this is not a connector key; create one with 'infra keys add --connector --name NAME'".into());
    }
    if k.name != hello.name {
        return Err(format!("this key is for connector '{}', not '{}'", k.name, hello.name));
    }
    // The instance id and version are shown to admins (console, CLI
    // tables): plain tokens only, never text that a terminal or a reader
    // would take for something else.
    let token = |s: &str, extra: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if hello.instance_id.is_empty() || hello.instance_id.len() > 64 || !token(&hello.instance_id, "-_") {
        return Err("invalid instance id: use 1 to 64 letters, digits, - or _ (the connector's data directory holds it in instance-id)".into());
    }
    if hello.software.len() > 64 || !token(&hello.software, ".+-") {
        return Err("invalid connector version".into());
    }
    if infra_auth::jwt::ed25519_kid(&hello.assertion_key).as_deref() != Some(hello.assertion_kid.as_str()) {
        return Err("the assertion key id is not derived from the assertion key; upgrade the connector".into());
    }
    for d in &hello.destinations {
        if infra_core::Resource::parse(&d.name)
            .map(|r| r.as_str().contains('.'))
            .unwrap_or(true)
        {
            return Err(format!("invalid destination name '{}'", d.name));
        }
        if d.name == infra_core::INFRA_RESOURCE {
            return Err("destination name 'infra' is reserved for Infra itself; rename it".into());
        }
        if let Some(u) = &d.direct_url
            && !valid_direct_url(u)
        {
            return Err(format!(
                "destination '{}': direct address {u:?} is not a plain URL (letters, digits, '.', '-', ':', '/', '[', ']')",
                d.name
            ));
        }
        if let Ok(Some(existing)) = connectors::destination(&mut c, &d.name).await
            && existing.connector != hello.name
        {
            if existing.public_url.is_some() {
                return Err(format!(
                    "destination '{}' is a forward-auth destination of the server; remove it first ('infra destinations remove {}') or rename it",
                    d.name, d.name
                ));
            }
            return Err(format!(
                "destination '{}' belongs to connector '{}'; remove it first ('infra destinations remove {}') or rename it",
                d.name, existing.connector, d.name
            ));
        }
    }
    Ok(k.id)
}

/// A direct URL clients are given (and the SSH client writes into its
/// config): scheme, host and port only, nothing that a shell or an ssh
/// config line would read as more.
pub(crate) fn valid_direct_url(u: &str) -> bool {
    u.len() <= 300 && u.contains("://") && u.chars().all(|c| c.is_ascii_alphanumeric() || ".-:/[]_".contains(c))
}

fn refused(message: String) -> crate::error::ApiError {
    crate::error::ApiError::new(http::StatusCode::FORBIDDEN, message)
}

async fn register(state: &AppState, hello: &Hello, key_id: &str, source: &str) -> Result<i64, String> {
    let now = now_ms();
    let r: Result<i64, crate::error::ApiError> = async {
        let mut tx = state.store.write().await?;
        for d in &hello.destinations {
            let row = DestinationRow {
                name: d.name.clone(),
                kind: d.kind,
                connector: hello.name.clone(),
                labels: serde_json::to_string(&d.labels).unwrap_or_default(),
                direct_url: d.direct_url.clone(),
                created_at: now,
                last_seen_at: now,
                tunnels: i64::try_from(state.hub.count(&d.name)).unwrap_or(0) + 1,
                public_url: None,
            };
            connectors::upsert_destination(tx.conn(), &row).await?;
        }
        // The assertion key is bound to the connector that first showed it:
        // another connector key cannot evict it or sign in its name.
        if let Some(owner) = connectors::connector_key_owner(tx.conn(), &hello.assertion_kid).await?
            && owner != hello.name
        {
            return Err(refused(format!(
                "assertion key {} belongs to connector '{owner}'; a connector cannot present another's key",
                hello.assertion_kid
            )));
        }
        connectors::put_connector_key(tx.conn(), &hello.assertion_kid, &hello.name, &hello.assertion_key, now).await?;
        let acked = match connectors::claim_audit_instance(tx.conn(), &hello.instance_id, &hello.name).await? {
            Ok(acked) => acked,
            Err(owner) => {
                return Err(refused(format!(
                    "audit instance {} belongs to connector '{owner}'; give this connector its own data directory",
                    hello.instance_id
                )));
            }
        };
        let seen = connectors::InstanceRow {
            instance_id: hello.instance_id.clone(),
            connector: hello.name.clone(),
            version: hello.software.clone(),
            source: source.to_owned(),
            connected_at: now,
            last_seen_at: now,
            tunnels: 1,
        };
        connectors::instance_connected(tx.conn(), &seen).await?;
        let names: Vec<&str> = hello.destinations.iter().map(|d| d.name.as_str()).collect();
        let ev = Event::new(
            &format!("connector:{}", hello.name),
            "connector.connect",
            &hello.name,
            source,
        )
        .detail(format!(
            "key={key_id} instance={} destinations={}",
            hello.instance_id,
            names.join(",")
        ));
        let row = audit::append(&mut tx, ev).await?;
        tx.commit().await?;
        audit::emit(state, &row);
        Ok(acked)
    }
    .await;
    r.map_err(|e| e.message)
}
