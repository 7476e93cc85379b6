//! The server's Prometheus metrics (names and meanings in
//! docs/metrics.md), served by `--metrics-listen` on a listener of their
//! own with `/livez` and `/readyz`, never on the public port.
//!
//! The families live in one static: every part of the server counts into
//! them where the thing happens, and a scrape reads them. Gauges that
//! mirror state (the audit queue) are set at scrape time.

use std::sync::LazyLock;
use std::time::Duration;

use infra_metrics::latency_histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub(crate) route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GatewayLabels {
    pub(crate) destination: String,
    pub(crate) kind: &'static str,
    pub(crate) result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) destination: String,
    pub(crate) via: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ViaLabel {
    pub(crate) via: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AuditLabels {
    pub(crate) action: String,
    pub(crate) result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IssuedLabel {
    pub(crate) kind: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) api_requests: Family<ApiLabels, Counter>,
    pub(crate) api_duration: Histograms<RouteLabel>,
    pub(crate) gateway_requests: Family<GatewayLabels, Counter>,
    pub(crate) gateway_duration: Histograms<KindLabel>,
    pub(crate) gateway_in_flight: Gauge,
    pub(crate) decisions: Family<DecisionLabels, Counter>,
    pub(crate) decision_duration: Histograms<ViaLabel>,
    pub(crate) tunnels_open: Gauge,
    pub(crate) snapshot_push_lag: Histogram,
    pub(crate) audit_events: Family<AuditLabels, Counter>,
    pub(crate) audit_queue: Gauge,
    pub(crate) audit_ship_lag: Histogram,
    pub(crate) login_failures: Family<ReasonLabel, Counter>,
    pub(crate) issued: Family<IssuedLabel, Counter>,
    pub(crate) exported: Family<ExportLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExportLabels {
    pub(crate) target: String,
    pub(crate) result: &'static str,
}

fn histograms<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync>() -> Histograms<L> {
    Family::new_with_constructor(latency_histogram)
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::default(),
        api_requests: Family::default(),
        api_duration: histograms(),
        gateway_requests: Family::default(),
        gateway_duration: histograms(),
        gateway_in_flight: Gauge::default(),
        decisions: Family::default(),
        decision_duration: histograms(),
        tunnels_open: Gauge::default(),
        snapshot_push_lag: latency_histogram(),
        audit_events: Family::default(),
        audit_queue: Gauge::default(),
        audit_ship_lag: latency_histogram(),
        login_failures: Family::default(),
        issued: Family::default(),
        exported: Family::default(),
    };
    let mut r = infra_metrics::registry();
    let p = r.sub_registry_with_prefix("infra");
    p.register(
        "api_requests",
        "API and browser requests answered, by method, route and status code",
        m.api_requests.clone(),
    );
    p.register(
        "api_request_duration_seconds",
        "Time to answer an API or browser request, by route",
        m.api_duration.clone(),
    );
    p.register(
        "gateway_requests",
        "Requests and sessions the gateway carried into a tunnel, by destination, kind and result (HTTP status class, or ok/refused for PostgreSQL sessions)",
        m.gateway_requests.clone(),
    );
    p.register(
        "gateway_request_duration_seconds",
        "Gateway time to the response's head (HTTP) or to a session's start (PostgreSQL), by kind",
        m.gateway_duration.clone(),
    );
    p.register(
        "gateway_requests_in_flight",
        "HTTP requests in the gateway waiting for their response head",
        m.gateway_in_flight.clone(),
    );
    p.register(
        "access_decisions",
        "Forward-auth and ext_authz decisions, by destination, protocol (via) and result (allow or deny)",
        m.decisions.clone(),
    );
    p.register(
        "access_decision_duration_seconds",
        "Time to decide and record a forward-auth or ext_authz request, by protocol",
        m.decision_duration.clone(),
    );
    p.register(
        "tunnels_open",
        "Connector tunnels connected to this replica",
        m.tunnels_open.clone(),
    );
    p.register(
        "snapshot_push_lag_seconds",
        "Time from a change to its snapshot being sent to a connector",
        m.snapshot_push_lag.clone(),
    );
    p.register(
        "audit_events",
        "Audit events stored, by action and result",
        m.audit_events.clone(),
    );
    p.register(
        "audit_queue_depth",
        "Events waiting for the audit writer (connectors' and forward-auth decisions)",
        m.audit_queue.clone(),
    );
    p.register(
        "audit_ship_lag_seconds",
        "Time from a connector's event to its storage on the server",
        m.audit_ship_lag.clone(),
    );
    p.register(
        "login_failures",
        "Refused logins, by reason (credentials, or locked after repeated failures)",
        m.login_failures.clone(),
    );
    p.register(
        "credentials_issued",
        "Credentials issued, by kind (destination token, exchanged token, SSH certificate)",
        m.issued.clone(),
    );
    p.register(
        "audit_exported_events",
        "Audit events sent to an export target, by target and result (delivered, or failed and to be sent again)",
        m.exported.clone(),
    );
    Metrics { registry: r, ..m }
});

/// Counts an audit event after it is stored, and the figures derived from
/// its action: login failures, credentials issued.
pub(crate) fn audited(action: &str, result: &str, detail: &str) {
    let m = &*METRICS;
    m.audit_events
        .get_or_create(&AuditLabels {
            action: action.to_owned(),
            result: result.to_owned(),
        })
        .inc();
    let ok = result == "success";
    match action {
        "login" if !ok => {
            let reason = if detail.starts_with("refused: locked") {
                "locked"
            } else {
                "credentials"
            };
            m.login_failures.get_or_create(&ReasonLabel { reason }).inc();
        }
        "token.issue" if ok => {
            m.issued.get_or_create(&IssuedLabel { kind: "token" }).inc();
        }
        "token.exchange" if ok => {
            m.issued
                .get_or_create(&IssuedLabel {
                    kind: "exchanged_token",
                })
                .inc();
        }
        "ssh.certificate" if ok => {
            m.issued
                .get_or_create(&IssuedLabel {
                    kind: "ssh_certificate",
                })
                .inc();
        }
        _ => {}
    }
}

/// Counts a batch of stored events (the audit writer's: one count per
/// action and result, not per event).
pub(crate) fn audited_batch(rows: &[infra_store::AuditRow]) {
    let mut counts: std::collections::HashMap<(&str, &str), u64> = std::collections::HashMap::new();
    for r in rows {
        *counts.entry((r.action.as_str(), r.result.as_str())).or_default() += 1;
    }
    for ((action, result), n) in counts {
        METRICS
            .audit_events
            .get_or_create(&AuditLabels {
                action: action.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(n);
    }
}

/// A batch sent to an export target.
pub(crate) fn exported(target: &str, events: usize, delivered: bool) {
    METRICS
        .exported
        .get_or_create(&ExportLabels {
            target: target.to_owned(),
            result: if delivered { "delivered" } else { "failed" },
        })
        .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
}

/// One forward-auth or ext_authz answer.
pub(crate) fn decided(destination: &str, via: &'static str, allowed: bool, took: Duration) {
    let m = &*METRICS;
    m.decisions
        .get_or_create(&DecisionLabels {
            destination: destination.to_owned(),
            via,
            result: if allowed { "allow" } else { "deny" },
        })
        .inc();
    m.decision_duration
        .get_or_create(&ViaLabel { via })
        .observe(took.as_secs_f64());
}

/// One request or session through the gateway.
pub(crate) fn gateway(destination: &str, kind: &'static str, result: String, took: Duration) {
    let m = &*METRICS;
    m.gateway_requests
        .get_or_create(&GatewayLabels {
            destination: destination.to_owned(),
            kind,
            result,
        })
        .inc();
    m.gateway_duration
        .get_or_create(&KindLabel { kind })
        .observe(took.as_secs_f64());
}

/// Counts and times every routed API and browser request (the gateway's
/// are counted by the gateway: they never reach the router).
pub(crate) async fn track_api(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    // Custom methods reach `any()` routes; a client must not mint labels.
    let method = match *req.method() {
        axum::http::Method::GET
        | axum::http::Method::POST
        | axum::http::Method::PUT
        | axum::http::Method::PATCH
        | axum::http::Method::DELETE
        | axum::http::Method::HEAD
        | axum::http::Method::OPTIONS => req.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let started = std::time::Instant::now();
    let r = next.run(req).await;
    let m = &*METRICS;
    m.api_duration
        .get_or_create(&RouteLabel { route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    m.api_requests
        .get_or_create(&ApiLabels {
            method,
            route,
            code: r.status().as_str().to_owned(),
        })
        .inc();
    r
}

/// The scrape: gauges that mirror state set first.
pub(crate) fn render(audit_queue: usize) -> String {
    let m = &*METRICS;
    m.audit_queue.set(i64::try_from(audit_queue).unwrap_or(i64::MAX));
    infra_metrics::render(&m.registry)
}
