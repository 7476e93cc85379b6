//! The destination names that exist, for the gateway's certificates: the
//! SNI resolver issues a certificate only for one of these, so a client
//! choosing names cannot make the CA sign whatever it likes.
//!
//! Filled from the store (every replica's destinations), and at once from
//! a connector that registers here.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use infra_store::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the names are read again from the store, besides on change.
const NAMES_REFRESH: Duration = Duration::from_secs(2);

/// The destination names that exist, shared by the resolver and the code
/// that learns of new ones (a connector registering, the store).
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownNames(Arc<RwLock<HashSet<String>>>);

impl KnownNames {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.read().is_ok_and(|s| s.contains(name))
    }

    pub(crate) fn add(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut s) = self.0.write() {
            s.extend(names);
        }
    }

    fn replace(&self, names: HashSet<String>) {
        if let Ok(mut s) = self.0.write() {
            *s = names;
        }
    }
}

/// Keeps `names` in step with the destinations in `store`: now, on every
/// change signal (`changes`, the hub's), and every few seconds, until
/// `shutdown`.
pub(crate) async fn keep_names(
    names: KnownNames,
    store: Store,
    mut changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        if let Ok(mut c) = store.conn().await
            && let Ok(found) = infra_store::connectors::destination_names(&mut c).await
        {
            names.replace(found.into_iter().collect());
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            () = tokio::time::sleep(NAMES_REFRESH) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
