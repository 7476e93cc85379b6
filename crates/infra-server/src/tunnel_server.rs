//! The server end of connector tunnels: authenticate the connector,
//! register its destinations, push it the state it decides with, take in
//! its audit events, and hand its tunnel to the gateway.

use std::sync::Arc;
use std::time::Duration;

use infra_store::connectors::{self, DestinationRow};
use infra_store::{keys, now_ms};
use infra_tunnel::body::{LineReader, LineSender, channel};
use infra_tunnel::control::{ControlSecret, HDR_CONTROL};
use infra_tunnel::proto::{
    AccessEvent, ConnectorMsg, ControlMsg, DestinationInfo, GrantEntry, Hello, HelloReply, Outcome, Snapshot,
};
use infra_tunnel::{CONTROL_PATH, handshake, transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Event};
use crate::hub::Tunnel;
use crate::state::AppState;

/// Re-sends state at least this often, even without changes, so a
/// connector also notices grants that expired by time.
const REFRESH: Duration = Duration::from_secs(30);
/// A replica that has not written its heartbeat for this long is not
/// offered to connectors.
pub(crate) const REPLICA_ALIVE_MS: i64 = 30_000;
/// How long audit events from a connector are gathered into one commit.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);

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

/// Serves one connector connection (after TLS with the tunnel ALPN).
pub(crate) async fn serve<S>(state: AppState, io: S, source: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut io, hello) = match handshake::accept(io).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%source, error = %e, "tunnel handshake failed");
            return;
        }
    };
    let key_id = match authenticate(&state, &hello).await {
        Ok(k) => k,
        Err(reason) => {
            tracing::warn!(%source, connector = %hello.name, %reason, "connector refused");
            let _ = handshake::reply(&mut io, &handshake::refusal(&reason)).await;
            return;
        }
    };
    let acked = match register(&state, &hello, &key_id, &source).await {
        Ok(a) => a,
        Err(reason) => {
            let _ = handshake::reply(&mut io, &handshake::refusal(&reason)).await;
            return;
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
        return;
    };
    let reply = HelloReply {
        ok: true,
        error: None,
        issuer: Some(state.settings.public_url.clone()),
        audit_acked: acked,
        replicas,
        control_secret: control_secret.clone(),
    };
    if handshake::reply(&mut io, &reply).await.is_err() {
        return;
    }
    let closed = CancellationToken::new();
    let io = infra_tunnel::cancel::Cancellable::new(io, closed.clone());
    let (send, conn) = match transport::open(io).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(connector = %hello.name, error = %e, "tunnel HTTP/2 handshake failed");
            return;
        }
    };
    let tunnel = Arc::new(Tunnel {
        id: state.hub.next_id(),
        connector: hello.name.clone(),
        send,
        closed: closed.clone(),
    });
    let destinations: Vec<String> = hello.destinations.iter().map(|d| d.name.clone()).collect();
    tracing::info!(connector = %hello.name, %source, destinations = %destinations.join(","), "connector connected");

    // The control stream first, so the connector has its grants before
    // any user request arrives.
    let (tx, body) = channel(16);
    let control_req = http::Request::post(format!("http://connector{CONTROL_PATH}"))
        .header(HDR_CONTROL, control_secret.expose())
        .body(infra_tunnel::boxed(body));
    let mut sender = tunnel.send.clone();
    let conn_task = tokio::spawn(conn);
    let control = async {
        let req = control_req.map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(resp.into_body())
    };
    let snapshot = build_snapshot(&state, &hello.name, &hello.destinations).await;
    let push = match snapshot {
        Ok(s) => tx
            .send(&ControlMsg::Snapshot(s.clone()))
            .await
            .map(|()| s)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let (resp_body, last) = match (control.await, push) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(connector = %hello.name, error = %e, "control stream failed");
            conn_task.abort();
            return;
        }
    };
    state.hub.add(&destinations, tunnel.clone());
    update_tunnel_counts(&state, &destinations).await;

    let pusher = tokio::spawn(push_changes(
        state.clone(),
        (hello.name.clone(), hello.destinations.clone()),
        key_id.clone(),
        tx.clone(),
        last,
        closed.clone(),
    ));
    let ingest = tokio::spawn(ingest(state.clone(), hello.clone(), resp_body, tx, closed.clone()));
    let mut conn_task = conn_task;
    tokio::select! {
        _ = &mut conn_task => {}
        () = closed.cancelled() => {}
    }
    // Dropping the connection closes the socket; the connector notices and
    // reconnects (or is refused, if its key was revoked).
    conn_task.abort();
    closed.cancel();
    pusher.abort();
    ingest.abort();
    state.hub.remove(tunnel.id);
    update_tunnel_counts(&state, &destinations).await;
    tracing::info!(connector = %hello.name, %source, "connector disconnected");
}

async fn update_tunnel_counts(state: &AppState, destinations: &[String]) {
    if let Ok(mut c) = state.store.conn().await {
        for d in destinations {
            let n = i64::try_from(state.hub.count(d)).unwrap_or(0);
            let _ = connectors::set_tunnels(&mut c, d, n, now_ms()).await;
        }
    }
}

/// The state a connector for `destinations` needs.
pub(crate) async fn build_snapshot(
    state: &AppState,
    connector: &str,
    infos: &[DestinationInfo],
) -> Result<Snapshot, String> {
    let destinations: Vec<String> = infos.iter().map(|d| d.name.clone()).collect();
    let destinations = destinations.as_slice();
    let ssh = crate::ssh::material(state, connector, infos)
        .await
        .map_err(|e| format!("build SSH material: {}", e.message))?;
    let r: Result<Snapshot, infra_store::StoreError> = async {
        let jwks = crate::signing::jwks(state)
            .await
            .map_err(|_| infra_store::StoreError::Random)?;
        let mut c = state.store.conn().await?;
        let now = now_ms();
        let grants = connectors::grants_for(&mut c, destinations, now).await?;
        let mut groups: Vec<String> = grants
            .iter()
            .filter(|g| g.subject_kind == infra_core::SubjectKind::Group)
            .map(|g| g.subject_id.clone())
            .collect();
        groups.sort();
        groups.dedup();
        let memberships = connectors::memberships(&mut c, &groups).await?;
        let since = now - crate::signing::retention_ms(state);
        let revoked_sessions = connectors::revoked_sessions(&mut c, since).await?;
        Ok(Snapshot {
            jwks,
            grants: grants
                .into_iter()
                .map(|g| GrantEntry {
                    subject_kind: g.subject_kind,
                    subject_id: g.subject_id,
                    subject_name: g.subject_name,
                    role: g.role,
                    resource: g.resource,
                    expires_at: g.expires_at,
                })
                .collect(),
            memberships,
            revoked_sessions,
            ssh,
        })
    }
    .await;
    r.map_err(|e| format!("build grants snapshot: {e}"))
}

/// Pushes a new snapshot whenever something changed; closes the tunnel if
/// the connector's own key is revoked.
async fn push_changes(
    state: AppState,
    (connector, destinations): (String, Vec<DestinationInfo>),
    key_id: String,
    tx: LineSender,
    mut last: Snapshot,
    closed: CancellationToken,
) {
    let mut changes = state.hub.subscribe();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(REFRESH) => {}
            () = closed.cancelled() => return,
        }
        let key_ok = match state.store.conn().await {
            Ok(mut c) => {
                matches!(keys::key_by_id(&mut c, &key_id).await, Ok(Some(k)) if k.expires_at.is_none_or(|e| e > now_ms()))
            }
            Err(_) => true,
        };
        if !key_ok {
            tracing::warn!(key = %key_id, "connector key revoked: closing its tunnel");
            closed.cancel();
            return;
        }
        match build_snapshot(&state, &connector, &destinations).await {
            Ok(s) if s != last => {
                if tx.send(&ControlMsg::Snapshot(s.clone())).await.is_err() {
                    closed.cancel();
                    return;
                }
                last = s;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot build snapshot"),
        }
    }
}

/// Reads the connector's messages; stores audit events in batches, each
/// number once, and acknowledges them.
async fn ingest(state: AppState, hello: Hello, body: hyper::body::Incoming, tx: LineSender, closed: CancellationToken) {
    let (etx, mut erx) = tokio::sync::mpsc::channel::<AccessEvent>(4096);
    let reader_closed = closed.clone();
    let (inv_state, inv_hello) = (state.clone(), hello.clone());
    tokio::spawn(async move {
        let mut lines = LineReader::new(body);
        loop {
            let msg = tokio::select! {
                m = lines.next::<ConnectorMsg>() => m,
                () = reader_closed.cancelled() => return,
            };
            match msg {
                Ok(Some(ConnectorMsg::Audit(ev))) => {
                    if etx.send(ev).await.is_err() {
                        return;
                    }
                }
                Ok(Some(ConnectorMsg::Health { .. })) => {}
                Ok(Some(ConnectorMsg::Inventory(inv))) => {
                    store_inventory(&inv_state, &inv_hello, inv).await;
                }
                Ok(None) | Err(_) => {
                    reader_closed.cancel();
                    return;
                }
            }
        }
    });
    while let Some(first) = erx.recv().await {
        // Group commit: gather what arrives within a few milliseconds, so
        // a busy destination costs one transaction (and one fsync) per
        // window rather than per handful of requests.
        let mut batch = vec![first];
        let window = tokio::time::sleep(GROUP_COMMIT_WINDOW);
        tokio::pin!(window);
        while batch.len() < 1000 {
            tokio::select! {
                e = erx.recv() => match e {
                    Some(e) => batch.push(e),
                    None => break,
                },
                () = &mut window => break,
            }
        }
        match store_batch(&state, &hello, batch).await {
            Ok(Some(seq)) => {
                if tx.send(&ControlMsg::AuditAck { seq }).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // Not acknowledged: the connector keeps the events and
                // sends them again on its next tunnel.
                tracing::error!(connector = %hello.name, error = %e, "cannot store connector audit events; closing the tunnel");
                closed.cancel();
                return;
            }
        }
    }
}

async fn store_batch(state: &AppState, hello: &Hello, batch: Vec<AccessEvent>) -> Result<Option<i64>, String> {
    let r: Result<Option<i64>, crate::error::ApiError> = async {
        let mut tx = state.store.write().await?;
        let mut acked = connectors::audit_acked(tx.conn(), &hello.instance_id).await?;
        let mut events = Vec::with_capacity(batch.len());
        let mut foreign = 0usize;
        for ev in batch {
            if ev.seq <= acked {
                continue;
            }
            acked = ev.seq;
            // A connector speaks only for the destinations it serves: events
            // about others are not stored (they would forge another
            // connector's record), but their refusal is.
            let Some(kind) = hello
                .destinations
                .iter()
                .find(|d| d.name == ev.destination)
                .map(|d| d.kind.as_str())
            else {
                foreign += 1;
                continue;
            };
            let action = match ev.result {
                Outcome::Success | Outcome::Failure => "request",
                Outcome::Denied => "deny",
            };
            events.push(infra_store::NewAuditEvent {
                actor: ev.user,
                action: format!("{kind}.{action}"),
                target: ev.destination,
                source: ev.source,
                result: ev.result.as_str().into(),
                detail: ev.detail,
            });
        }
        if foreign > 0 {
            tracing::warn!(connector = %hello.name, events = foreign, "audit events for destinations this connector does not serve; refused");
            events.push(infra_store::NewAuditEvent {
                actor: format!("connector:{}", hello.name),
                action: "connector.audit_refused".into(),
                target: hello.name.clone(),
                source: String::new(),
                result: Outcome::Denied.as_str().into(),
                detail: format!("events={foreign} reason=destination not served by this connector"),
            });
        }
        if events.is_empty() {
            return Ok(Some(acked));
        }
        let rows = infra_store::audit::append_batch(tx.conn(), events, now_ms()).await?;
        connectors::set_audit_acked(tx.conn(), &hello.instance_id, acked).await?;
        tx.commit().await?;
        audit::emit_batch(&rows);
        Ok(Some(acked))
    }
    .await;
    r.map_err(|e| e.message)
}

/// Keeps what a connector says its destination offers to grant; only for
/// destinations that connector serves.
async fn store_inventory(state: &AppState, hello: &Hello, inv: infra_tunnel::proto::Inventory) {
    if !hello.destinations.iter().any(|d| d.name == inv.destination) {
        tracing::warn!(connector = %hello.name, destination = %inv.destination, "inventory for a destination this connector does not serve; ignored");
        return;
    }
    let Ok(json) = serde_json::to_string(&inv) else { return };
    let r: Result<(), infra_store::StoreError> = async {
        let mut c = state.store.conn().await?;
        connectors::set_inventory(&mut c, &inv.destination, &json).await
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(destination = %inv.destination, error = %e, "cannot store destination inventory");
    }
}
