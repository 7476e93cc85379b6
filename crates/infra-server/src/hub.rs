//! The connector hub: which tunnels serve which destination, and the signal
//! that state connectors depend on has changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use hyper::client::conn::http2::SendRequest;
use infra_tunnel::Body;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One connected tunnel.
pub(crate) struct Tunnel {
    pub(crate) id: u64,
    pub(crate) connector: String,
    pub(crate) send: SendRequest<Body>,
    pub(crate) closed: CancellationToken,
}

pub(crate) struct Hub {
    by_destination: RwLock<HashMap<String, Vec<Arc<Tunnel>>>>,
    next: AtomicUsize,
    ids: AtomicU64,
    changes: watch::Sender<u64>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            by_destination: RwLock::new(HashMap::new()),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
            changes: watch::channel(0).0,
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add(&self, destinations: &[String], t: Arc<Tunnel>) {
        crate::metrics::METRICS.tunnels_open.inc();
        if let Ok(mut m) = self.by_destination.write() {
            for d in destinations {
                m.entry(d.clone()).or_default().push(t.clone());
            }
        }
    }

    /// Forgets tunnel `id` (added once with [`Hub::add`]).
    pub(crate) fn remove(&self, id: u64) {
        crate::metrics::METRICS.tunnels_open.dec();
        if let Ok(mut m) = self.by_destination.write() {
            for v in m.values_mut() {
                v.retain(|t| t.id != id);
            }
            m.retain(|_, v| !v.is_empty());
        }
    }

    /// The live tunnels for `destination`, starting at a rotating offset so
    /// same-named connectors share the load.
    pub(crate) fn tunnels(&self, destination: &str) -> Vec<Arc<Tunnel>> {
        let Ok(m) = self.by_destination.read() else {
            return vec![];
        };
        let Some(v) = m.get(destination) else { return vec![] };
        let live: Vec<Arc<Tunnel>> = v
            .iter()
            .filter(|t| !t.closed.is_cancelled() && t.send.is_ready())
            .cloned()
            .collect();
        if live.is_empty() {
            return live;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % live.len();
        live[start..].iter().chain(&live[..start]).cloned().collect()
    }

    pub(crate) fn count(&self, destination: &str) -> usize {
        self.by_destination
            .read()
            .map(|m| m.get(destination).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// Something connectors depend on may have changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
