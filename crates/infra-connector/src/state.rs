//! The connector's shared state: settings, the decision state pushed by the
//! server, open streams (so revocation can cut them), and the audit spool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use infra_auth::jwt::{Claims, SigningKey};
use infra_tunnel::Body;
use infra_tunnel::proto::{Inventory, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Kind, Settings};
use crate::decide::{Decider, Identity};
use crate::kube::KubeUpstream;
use crate::spool::Spool;

/// An open proxied stream, re-checked whenever grants change.
pub(crate) struct Active {
    pub(crate) claims: Claims,
    pub(crate) destination: String,
    pub(crate) cancel: CancellationToken,
    /// Roles the stream may be using (an SSH session: every login the user
    /// had when it started; which one is in use is encrypted); losing any
    /// of them ends it. Empty: any access to the destination will do.
    pub(crate) roles: Vec<String>,
}

pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) spool: Spool,
    pub(crate) client: Client<HttpConnector, Body>,
    /// Kubernetes API servers by destination name.
    pub(crate) kube: HashMap<String, Arc<KubeUpstream>>,
    /// PostgreSQL login-role managers by destination name.
    pub(crate) pg: HashMap<String, Arc<crate::pg_roles::Roles>>,
    pub(crate) instance_id: String,
    pub(crate) assertion_key: SigningKey,
    issuer: RwLock<String>,
    decider: RwLock<Option<Arc<Decider>>>,
    active: Mutex<HashMap<u64, Active>>,
    next_id: AtomicU64,
    /// Tunnels up right now (one per server replica).
    pub(crate) tunnels_up: std::sync::atomic::AtomicUsize,
    inflight: std::sync::atomic::AtomicUsize,
    /// Recent assertions by (user, destination): a signature per request
    /// would cost more than the rest of the request's checks.
    assertions: Mutex<HashMap<(String, String), CachedAssertion>>,
    /// The last pushed snapshot, for the RBAC sync.
    snapshots: tokio::sync::watch::Sender<Option<Arc<Snapshot>>>,
    /// What each Kubernetes destination offers to grant, for the server.
    inventories: tokio::sync::watch::Sender<std::collections::BTreeMap<String, Inventory>>,
}

struct CachedAssertion {
    jwt: String,
    exp: i64,
    groups: Vec<String>,
    roles: Vec<String>,
}

/// Assertions live a minute and are reused while at least half is left.
const ASSERTION_SECS: i64 = 60;

/// Counts a proxied request from its start until its response body ends.
pub(crate) struct Inflight(Arc<State>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl State {
    pub(crate) fn new(settings: Settings, spool: Spool, instance_id: String) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(http);
        let mut kube = HashMap::new();
        let mut pg = HashMap::new();
        for d in &settings.destinations {
            if let Kind::Postgres(p) = &d.kind {
                pg.insert(d.name.clone(), Arc::new(crate::pg_roles::Roles::new(p.clone())));
            }
            if let Kind::Kubernetes(k) = &d.kind {
                let up = KubeUpstream::new(k, &d.url).map_err(|e| anyhow::anyhow!("destination {}: {e:#}", d.name))?;
                kube.insert(d.name.clone(), Arc::new(up));
            }
        }
        Ok(Self {
            settings,
            spool,
            client,
            kube,
            pg,
            instance_id,
            assertion_key: SigningKey::generate()?,
            issuer: RwLock::new(String::new()),
            decider: RwLock::new(None),
            active: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            tunnels_up: std::sync::atomic::AtomicUsize::new(0),
            inflight: std::sync::atomic::AtomicUsize::new(0),
            assertions: Mutex::new(HashMap::new()),
            snapshots: tokio::sync::watch::Sender::new(None),
            inventories: tokio::sync::watch::Sender::new(Default::default()),
        })
    }

    pub(crate) fn begin(self: &Arc<Self>) -> Inflight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Inflight(self.clone())
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_issuer(&self, iss: String) {
        if let Ok(mut g) = self.issuer.write() {
            *g = iss;
        }
    }

    pub(crate) fn issuer(&self) -> String {
        self.issuer.read().map(|g| g.clone()).unwrap_or_default()
    }

    pub(crate) fn decider(&self) -> Option<Arc<Decider>> {
        self.decider.read().ok().and_then(|g| g.clone())
    }

    pub(crate) fn ready(&self) -> bool {
        self.tunnels_up.load(Ordering::Relaxed) > 0 && self.decider().is_some()
    }

    /// Installs a pushed snapshot and cuts open streams it no longer allows.
    pub(crate) fn apply(&self, s: &Snapshot) {
        let issuer = self.issuer.read().map(|g| g.clone()).unwrap_or_default();
        let kube: Vec<&str> = self.kube.keys().map(String::as_str).collect();
        let d = Arc::new(Decider::new(s, &issuer, &kube));
        if let Ok(mut g) = self.decider.write() {
            *g = Some(d.clone());
        }
        self.recheck();
        self.revoke_login_roles(&d);
        self.snapshots.send_replace(Some(Arc::new(s.clone())));
    }

    /// Disables the database login roles of users whose access is gone,
    /// whether or not a session of theirs is open.
    fn revoke_login_roles(&self, d: &Arc<Decider>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (destination, roles) in &self.pg {
            let (roles, d, destination) = (roles.clone(), d.clone(), destination.clone());
            rt.spawn(async move {
                roles
                    .revoke_lost(|user_id| d.has_any_grant(user_id, &destination, now_ms()))
                    .await;
            });
        }
    }

    /// Cuts open streams the current grants no longer allow: on each
    /// snapshot, and every second (grants that expire by time).
    pub(crate) fn recheck(&self) {
        let Some(d) = self.decider() else { return };
        let now = now_ms();
        if let Ok(active) = self.active.lock() {
            for a in active.values().filter(|a| !a.cancel.is_cancelled()) {
                let reason = match d.authorize(&a.claims, &a.destination, now) {
                    Err(denial) => Some(denial.message),
                    Ok(i) => a
                        .roles
                        .iter()
                        .find(|r| !i.roles.contains(r))
                        .map(|r| format!("role {r} was removed")),
                };
                if let Some(reason) = reason {
                    tracing::info!(user = %a.claims.name, destination = %a.destination, %reason, "closing stream: access revoked");
                    a.cancel.cancel();
                }
            }
        }
    }

    pub(crate) fn subscribe_snapshots(&self) -> tokio::sync::watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshots.subscribe()
    }

    pub(crate) fn set_inventory(&self, inv: Inventory) {
        self.inventories.send_modify(|m| {
            m.insert(inv.destination.clone(), inv);
        });
    }

    pub(crate) fn subscribe_inventories(
        &self,
    ) -> tokio::sync::watch::Receiver<std::collections::BTreeMap<String, Inventory>> {
        self.inventories.subscribe()
    }

    /// Watches an open stream of `claims` on `destination`: the token is
    /// cancelled when access is revoked; untrack the id when it ends.
    pub(crate) fn watch(&self, claims: Option<Claims>, destination: &str) -> (CancellationToken, Option<u64>) {
        self.watch_roles(claims, destination, Vec::new())
    }

    /// Like [`State::watch`], also ending the stream when any of `roles` goes.
    pub(crate) fn watch_roles(
        &self,
        claims: Option<Claims>,
        destination: &str,
        roles: Vec<String>,
    ) -> (CancellationToken, Option<u64>) {
        let cancel = CancellationToken::new();
        let id = claims.map(|c| {
            self.track(Active {
                claims: c,
                destination: destination.to_owned(),
                cancel: cancel.clone(),
                roles,
            })
        });
        (cancel, id)
    }

    pub(crate) fn track(&self, a: Active) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.active.lock() {
            g.insert(id, a);
        }
        id
    }

    pub(crate) fn untrack(&self, id: u64) {
        if let Ok(mut g) = self.active.lock() {
            g.remove(&id);
        }
    }

    /// A short-lived JWT saying who the user is, signed with this
    /// connector's key (published by the server), for the upstream.
    pub(crate) fn assertion(&self, ident: &Identity, destination: &str) -> Option<String> {
        let now = now_ms() / 1000;
        let key = (ident.user_id.clone(), destination.to_owned());
        if let Ok(cache) = self.assertions.lock()
            && let Some(c) = cache.get(&key)
            && c.exp - now >= ASSERTION_SECS / 2
            && c.groups == ident.groups
            && c.roles == ident.roles
        {
            return Some(c.jwt.clone());
        }
        let iss = self.issuer.read().ok()?.clone();
        let claims = Claims {
            iss: format!("{iss}/connectors/{}", self.settings.name),
            sub: ident.user_id.clone(),
            aud: destination.to_owned(),
            exp: now + ASSERTION_SECS,
            iat: now,
            nbf: now,
            jti: infra_auth::random_token(16).ok()?,
            name: ident.email.clone(),
            email: Some(ident.email.clone()),
            groups: ident.groups.clone(),
            sid: None,
        };
        let jwt = self.assertion_key.sign(&claims).ok()?;
        if let Ok(mut cache) = self.assertions.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            let c = CachedAssertion {
                jwt: jwt.clone(),
                exp: claims.exp,
                groups: ident.groups.clone(),
                roles: ident.roles.clone(),
            };
            cache.insert(key, c);
        }
        Some(jwt)
    }
}
