//! The audit handle a stream carries: who, where and from where are fixed
//! once, at admission; each event then adds only its outcome and detail.

use std::sync::Arc;

use infra_tunnel::proto::{AccessEvent, Outcome};

use crate::clock::now_ms;
use crate::spool::Spool;

/// Ends once an event is written to the spool.
pub(crate) type Written = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Records events for one stream.
#[derive(Clone)]
pub(crate) struct Audit {
    spool: Arc<Spool>,
    user: String,
    destination: String,
    source: String,
}

impl Audit {
    pub(crate) fn new(spool: Arc<Spool>, user: &str, destination: &str, source: &str) -> Self {
        Self {
            spool,
            user: user.to_owned(),
            destination: destination.to_owned(),
            source: source.to_owned(),
        }
    }

    /// The same stream, now known to be `user`'s.
    pub(crate) fn as_user(&self, user: &str) -> Self {
        Self {
            user: user.to_owned(),
            ..self.clone()
        }
    }

    pub(crate) fn record(&self, result: Outcome, detail: impl Into<String>) {
        self.spool.record(self.event(result, detail.into()));
    }

    /// Records an event and, unless it is written already, returns a
    /// future that ends once it is: a response that waits for it before
    /// its last byte is never seen by a client whose request a crash then
    /// forgets.
    pub(crate) fn record_written(&self, result: Outcome, detail: impl Into<String>) -> Option<Written> {
        let seq = self.spool.record_now(self.event(result, detail.into()))?;
        Some(Box::pin(self.spool.clone().written(seq)))
    }

    fn event(&self, result: Outcome, detail: String) -> AccessEvent {
        AccessEvent {
            seq: 0,
            time_ms: now_ms(),
            user: self.user.clone(),
            destination: self.destination.clone(),
            source: self.source.clone(),
            result,
            detail,
        }
    }
}
