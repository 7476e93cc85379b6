//! The connector's Prometheus metrics (names and meanings in
//! docs/metrics.md), served on its admin listener (`adminListen`) with
//! `/livez` and `/readyz`.
//!
//! Counted where things happen: every audited event (the one record of
//! each request, statement and session, allowed or refused) counts a
//! request; admission times the decision. Gauges that mirror state are
//! set at scrape time.

use std::sync::LazyLock;

use infra_metrics::latency_histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) destination: String,
    pub(crate) kind: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_duration: Histograms<KindLabel>,
    pub(crate) decision_duration: Histograms<KindLabel>,
    pub(crate) streams_open: Gauge,
    pub(crate) tunnels_connected: Gauge,
    pub(crate) snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) audit_queue: Gauge,
    pub(crate) recordings_waiting: Gauge,
    pub(crate) recordings_waiting_bytes: Gauge,
    pub(crate) audit_ship_lag: Histogram,
    pub(crate) admission_duration: Histograms<ResultLabel>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: &'static str,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::default(),
        requests: Family::default(),
        request_duration: Family::new_with_constructor(latency_histogram),
        decision_duration: Family::new_with_constructor(latency_histogram),
        streams_open: Gauge::default(),
        tunnels_connected: Gauge::default(),
        snapshot_age: Gauge::default(),
        audit_queue: Gauge::default(),
        recordings_waiting: Gauge::default(),
        recordings_waiting_bytes: Gauge::default(),
        audit_ship_lag: latency_histogram(),
        admission_duration: Family::new_with_constructor(latency_histogram),
    };
    let mut r = infra_metrics::registry();
    let p = r.sub_registry_with_prefix("infra_connector");
    p.register(
        "requests",
        "Requests, statements and sessions, allowed or refused (each audited event), by destination, kind and result",
        m.requests.clone(),
    );
    p.register(
        "request_duration_seconds",
        "Time from admission to a stream's first audited event: an HTTP or Kubernetes request's whole duration, a PostgreSQL or SSH session's set-up",
        m.request_duration.clone(),
    );
    p.register(
        "access_decision_duration_seconds",
        "Time to verify the token and decide from the pushed grants, by kind",
        m.decision_duration.clone(),
    );
    p.register(
        "streams_open",
        "User streams open now (requests, database and SSH sessions)",
        m.streams_open.clone(),
    );
    p.register(
        "tunnels_connected",
        "Tunnels to server replicas that are up",
        m.tunnels_connected.clone(),
    );
    p.register(
        "snapshot_age_seconds",
        "Time since the last grants snapshot from the server was applied (-1 before the first)",
        m.snapshot_age.clone(),
    );
    p.register(
        "audit_queue_depth",
        "Audit events not yet stored by the server (queued or in the spool)",
        m.audit_queue.clone(),
    );
    p.register(
        "recordings_waiting",
        "Session recordings on this connector's disk that the server has not stored yet (running sessions included)",
        m.recordings_waiting.clone(),
    );
    p.register(
        "recordings_waiting_bytes",
        "Bytes of those recordings; new recorded sessions follow the destination's onFull once this reaches the budget",
        m.recordings_waiting_bytes.clone(),
    );
    p.register(
        "audit_ship_lag_seconds",
        "Time from an audit event written to the spool to the server's acknowledgement",
        m.audit_ship_lag.clone(),
    );
    p.register(
        "admission_duration_seconds",
        "Time the admission webhook takes to answer the API server, by result (injected, untouched, refused)",
        m.admission_duration.clone(),
    );
    Metrics { registry: r, ..m }
});

impl Metrics {
    /// One admission review answered.
    pub(crate) fn admission(&self, result: &'static str, took: std::time::Duration) {
        self.admission_duration
            .get_or_create(&ResultLabel { result })
            .observe(took.as_secs_f64());
    }
}

/// Observes the time to a decision when dropped.
pub(crate) struct DecisionTimer {
    kind: &'static str,
    started: std::time::Instant,
}

pub(crate) fn decision_timer(kind: &'static str) -> DecisionTimer {
    DecisionTimer {
        kind,
        started: std::time::Instant::now(),
    }
}

impl Drop for DecisionTimer {
    fn drop(&mut self) {
        METRICS
            .decision_duration
            .get_or_create(&KindLabel { kind: self.kind })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// What a scrape reads from the connector's state.
pub(crate) struct Now {
    pub(crate) streams: usize,
    pub(crate) tunnels: usize,
    pub(crate) snapshot_age: Option<std::time::Duration>,
    pub(crate) audit_pending: usize,
    pub(crate) recordings: crate::recording::Waiting,
}

/// The scrape, with the gauges that mirror state set first.
pub(crate) fn render(now: &Now) -> String {
    let m = &*METRICS;
    let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.streams_open.set(int(now.streams));
    m.tunnels_connected.set(int(now.tunnels));
    m.snapshot_age.set(now.snapshot_age.map_or(-1.0, |d| d.as_secs_f64()));
    m.audit_queue.set(int(now.audit_pending));
    m.recordings_waiting.set(int(now.recordings.recordings));
    m.recordings_waiting_bytes
        .set(i64::try_from(now.recordings.bytes).unwrap_or(i64::MAX));
    infra_metrics::render(&m.registry)
}
