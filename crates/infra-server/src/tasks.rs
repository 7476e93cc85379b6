//! Who owns the server's tasks. Everything the listener starts is spawned
//! on one of these trackers, so that shutdown can wait for it, in order:
//! first the clients' connections (HTTP, PostgreSQL, upgraded streams),
//! which ride the tunnels; then the tunnels, which `close_tunnels` ends;
//! the background loops end at the shutdown signal. Each tunnel also
//! tracks its own tasks (see `tunnel_server`) and waits for them before it
//! counts as ended.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks {
    /// Client connections and what they spawn: drained first.
    pub(crate) clients: TaskTracker,
    /// Connector tunnels: closed once the clients are done.
    pub(crate) tunnels: TaskTracker,
    /// Tells every tunnel to close.
    pub(crate) close_tunnels: CancellationToken,
    /// Loops that run for the server's life (change watch, heartbeat,
    /// certificate names); they stop at the shutdown signal.
    pub(crate) background: TaskTracker,
}

/// hyper's executor (HTTP/2 streams, connection upkeep) on a tracker, so
/// the streams of a connection are part of the drain too.
#[derive(Debug, Clone)]
pub(crate) struct TrackedExecutor(pub(crate) TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}
