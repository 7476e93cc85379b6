//! The connector's shared state: settings, the decision state pushed by the
//! server, open streams (so revocation can cut them), and the audit spool.

use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use infra_auth::decide::{Decider, Identity};
use infra_auth::jwt::{Claims, SigningKey};
use infra_core::GrantView;
use infra_tunnel::Body;
use infra_tunnel::proto::{Inventory, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::Settings;
use crate::route::Routes;
use crate::spool::Spool;

/// An open proxied stream, re-checked whenever grants change.
struct Active {
    claims: Claims,
    pub(crate) destination: String,
    pub(crate) cancel: CancellationToken,
    /// Roles the stream may be using (an SSH session: every login the user
    /// had when it started; which one is in use is encrypted); losing any
    /// of them ends it. Empty: any access to the destination will do.
    pub(crate) roles: Vec<String>,
}

pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) spool: Arc<Spool>,
    /// Session recordings waiting for the server.
    pub(crate) recordings: Arc<crate::recording::Recordings>,
    /// The recorder keys of each SSH host in recording mode.
    pub(crate) ssh_recorders: HashMap<String, Arc<crate::ssh_record::RecorderKeys>>,
    pub(crate) client: Client<HttpConnector, Body>,
    /// Every destination served, by name.
    pub(crate) routes: Routes,
    pub(crate) instance_id: String,
    /// Owns every task a stream, a listener or a tunnel starts, so a
    /// shutdown can wait for them (see `lib.rs`).
    pub(crate) tasks: tokio_util::task::TaskTracker,
    pub(crate) assertion_key: SigningKey,
    issuer: RwLock<String>,
    decider: RwLock<Option<Arc<Decider>>>,
    active: Mutex<HashMap<u64, Active>>,
    next_id: AtomicU64,
    /// Tunnels up right now (one per server replica).
    pub(crate) tunnels_up: std::sync::atomic::AtomicUsize,
    /// When the last snapshot was applied.
    applied_at: Mutex<Option<std::time::Instant>>,
    inflight: std::sync::atomic::AtomicUsize,
    /// Recent assertions by (user, destination): a signature per request
    /// would cost more than the rest of the request's checks.
    assertions: Mutex<HashMap<(String, String), CachedAssertion>>,
    /// The last pushed snapshot, for the RBAC sync and the sshd files.
    snapshots: tokio::sync::watch::Sender<Option<Arc<Pushed>>>,
    /// The admission webhook's TLS key, when it is configured.
    pub(crate) webhook_key: Option<Arc<infra_auth::Secret<Vec<u8>>>>,
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

/// A pushed snapshot and its grants, read once.
pub(crate) struct Pushed {
    pub(crate) snapshot: Snapshot,
    pub(crate) grants: Arc<GrantView>,
}

/// An open stream's registration: cancelled when access is revoked,
/// forgotten when dropped.
pub(crate) struct Watch {
    state: Arc<State>,
    id: u64,
    cancel: CancellationToken,
}

impl Watch {
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.cancel
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut g) = self.state.active.lock() {
            g.remove(&self.id);
        }
    }
}

/// Counts a proxied request from its start until its response body ends.
pub(crate) struct Inflight(Arc<State>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl State {
    pub(crate) fn new(
        settings: Settings,
        spool: Arc<Spool>,
        instance_id: String,
        webhook_key: Option<infra_auth::Secret<Vec<u8>>>,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(http);
        let recordings = crate::recording::Recordings::open(
            &settings.data_dir.join("recordings"),
            settings.recording_budget,
            settings.recording_max,
        )?;
        let mut ssh_recorders = HashMap::new();
        for d in &settings.destinations {
            if let crate::config::Kind::Ssh(ssh) = &d.kind
                && d.recording.is_some()
            {
                let keys = crate::ssh_record::RecorderKeys::load_or_make(
                    &settings.data_dir,
                    &d.name,
                    ssh.host_key_file.as_deref(),
                )
                .with_context(|| format!("destination {}: recording mode's keys", d.name))?;
                ssh_recorders.insert(d.name.clone(), Arc::new(keys));
            }
        }
        Ok(Self {
            routes: Routes::new(&settings.destinations)?,
            recordings,
            ssh_recorders,
            settings,
            spool,
            client,
            instance_id,
            tasks: tokio_util::task::TaskTracker::new(),
            assertion_key: SigningKey::generate()?,
            issuer: RwLock::new(String::new()),
            decider: RwLock::new(None),
            active: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            tunnels_up: std::sync::atomic::AtomicUsize::new(0),
            applied_at: Mutex::new(None),
            inflight: std::sync::atomic::AtomicUsize::new(0),
            assertions: Mutex::new(HashMap::new()),
            snapshots: tokio::sync::watch::Sender::new(None),
            inventories: tokio::sync::watch::Sender::new(Default::default()),
            webhook_key: webhook_key.map(Arc::new),
        })
    }

    pub(crate) fn begin(self: &Arc<Self>) -> Inflight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Inflight(self.clone())
    }

    /// How long ago the last snapshot was applied, if ever.
    pub(crate) fn snapshot_age(&self) -> Option<std::time::Duration> {
        self.applied_at.lock().ok().and_then(|g| g.map(|t| t.elapsed()))
    }

    /// What a metrics scrape reads.
    pub(crate) fn metrics_now(&self) -> crate::metrics::Now {
        crate::metrics::Now {
            streams: self.inflight(),
            tunnels: self.tunnels_up.load(Ordering::Relaxed),
            snapshot_age: self.snapshot_age(),
            audit_pending: self.spool.pending_len(),
            recordings: self.recordings.waiting(),
        }
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
    ///
    /// The grants are parsed here, once; every reader (the decision, the
    /// RBAC sync, the sshd files) reads the same [`GrantView`].
    pub(crate) fn apply(&self, s: Snapshot) {
        if let Ok(mut g) = self.applied_at.lock() {
            *g = Some(std::time::Instant::now());
        }
        let issuer = self.issuer.read().map(|g| g.clone()).unwrap_or_default();
        let kube: Vec<&str> = self.routes.kube().map(|(name, _)| name).collect();
        let grants = Arc::new(s.grant_view());
        let d = Arc::new(Decider::new(
            &s.jwks,
            grants.clone(),
            &s.revoked_sessions,
            &issuer,
            &kube,
        ));
        if let Ok(mut g) = self.decider.write() {
            *g = Some(d.clone());
        }
        self.recheck();
        self.revoke_login_roles(&d);
        self.snapshots
            .send_replace(Some(Arc::new(Pushed { snapshot: s, grants })));
    }

    /// Disables the database login roles of users whose access is gone,
    /// whether or not a session of theirs is open.
    fn revoke_login_roles(&self, d: &Arc<Decider>) {
        for (destination, roles) in self.routes.pg() {
            let (roles, d, destination) = (roles.clone(), d.clone(), destination.to_owned());
            self.tasks.spawn(async move {
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
                    // The cut is part of the record: an access request's
                    // story ends with the sessions its end closed.
                    self.spool.record(infra_tunnel::proto::AccessEvent {
                        seq: 0,
                        time_ms: now,
                        user: a.claims.name.clone(),
                        destination: a.destination.clone(),
                        source: String::new(),
                        result: infra_tunnel::proto::Outcome::Denied,
                        detail: format!("session cut: {reason}"),
                    });
                }
            }
        }
    }

    pub(crate) fn subscribe_snapshots(&self) -> tokio::sync::watch::Receiver<Option<Arc<Pushed>>> {
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

    /// Watches an open stream of `claims` on `destination` until the
    /// returned guard is dropped: cancelled when access is revoked, or
    /// when any of `roles` goes (empty: any access will do).
    pub(crate) fn watch(self: &Arc<Self>, claims: &Claims, destination: &str, roles: Vec<String>) -> Watch {
        let cancel = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.active.lock() {
            g.insert(
                id,
                Active {
                    claims: claims.clone(),
                    destination: destination.to_owned(),
                    cancel: cancel.clone(),
                    roles,
                },
            );
        }
        Watch {
            state: self.clone(),
            id,
            cancel,
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
            act: None,
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
