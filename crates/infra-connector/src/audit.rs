//! The audit handle a stream carries: who, where and from where are fixed
//! once, at admission; each event then adds only its outcome and detail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    /// The workload the user is acting for (a token's `act`), named in
    /// every event's detail.
    actor: Option<Arc<str>>,
    destination: String,
    source: String,
    /// The destination's kind, for metrics.
    kind: &'static str,
    /// When the stream was admitted, and whether its first event was
    /// timed yet (shared by the copies `as_user` makes).
    started: Instant,
    timed: Arc<AtomicBool>,
}

impl Audit {
    /// Every event is a request (or statement, or session) in the metrics;
    /// the first of a stream also times it from admission.
    fn count(&self, result: Outcome) {
        let m = &crate::metrics::METRICS;
        m.requests
            .get_or_create(&crate::metrics::RequestLabels {
                destination: self.destination.clone(),
                kind: self.kind,
                result: result.as_str(),
            })
            .inc();
        if !self.timed.swap(true, Ordering::Relaxed) {
            m.request_duration
                .get_or_create(&crate::metrics::KindLabel { kind: self.kind })
                .observe(self.started.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn new(spool: Arc<Spool>, kind: &'static str, user: &str, destination: &str, source: &str) -> Self {
        Self {
            spool,
            user: user.to_owned(),
            actor: None,
            destination: destination.to_owned(),
            source: source.to_owned(),
            kind,
            started: Instant::now(),
            timed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same stream, now known to be `user`'s.
    pub(crate) fn as_user(&self, user: &str) -> Self {
        Self {
            user: user.to_owned(),
            ..self.clone()
        }
    }

    /// The same stream, of `user` acting for the workload `actor`.
    pub(crate) fn as_user_for(&self, user: &str, actor: Option<&str>) -> Self {
        Self {
            user: user.to_owned(),
            actor: actor.map(Arc::from),
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
        self.count(result);
        AccessEvent {
            seq: 0,
            time_ms: now_ms(),
            user: self.user.clone(),
            destination: self.destination.clone(),
            source: self.source.clone(),
            result,
            detail: match &self.actor {
                Some(a) => format!("{detail} workload={a}"),
                None => detail,
            },
        }
    }
}
