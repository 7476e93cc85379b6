//! The server's one writer of connectors' audit events.
//!
//! Each tunnel's reader (`tunnel_server::ingest`) parses its connector's
//! lines and hands the events here. The writer gathers what every tunnel
//! sent within a few milliseconds, stores it in one transaction (each
//! connector instance's event numbers once), and then acknowledges to each
//! connector what of its own is stored. One writer per server: on SQLite
//! one commit (one fsync) carries every connector's events, and on
//! PostgreSQL replicas take turns on the chain's head once per batch, not
//! once per tunnel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infra_store::{Store, connectors, now_ms};
use infra_tunnel::body::LineSender;
use infra_tunnel::proto::{AccessEvent, ControlMsg, Hello, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long events are gathered into one commit after the first arrives.
const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(5);
/// Events in one commit, at most, by backend. SQLite: one process, and
/// each commit is an fsync, so large batches (measured: 1,000 → 80,000
/// events/s, 4,000 → 107,000). PostgreSQL: every writer, on every
/// replica, waits for the chain's head while a batch is stored, so smaller
/// ones keep API writes from waiting long (measured with two replicas:
/// 4,000 → API writes p99 440 ms, 1,000 → 130 ms, at 55,000 and 47,000
/// events/s).
fn batch_limit(backend: infra_store::Backend) -> usize {
    match backend {
        infra_store::Backend::Sqlite => 4000,
        infra_store::Backend::Postgres => 1000,
    }
}
/// Events read from all tunnels and not yet stored, at most: a full queue
/// stops the tunnels' readers, and so (by flow control) their connectors'
/// shipping; the connectors keep the events in their spools meanwhile.
const QUEUE: usize = 16_384;

/// A tunnel the events came from: who it is, and where its
/// acknowledgements go.
pub(crate) struct Source {
    pub(crate) hello: Hello,
    pub(crate) acks: LineSender,
    pub(crate) closed: CancellationToken,
}

/// What the writer stores: an event and the tunnel it came from, or an
/// event of this server's own (a forward-auth decision), which needs no
/// numbering or acknowledgement.
enum Shipped {
    Tunnel(Arc<Source>, AccessEvent),
    Local(infra_store::NewAuditEvent),
}

/// The server's audit writer's queue.
pub(crate) struct Intake {
    tx: mpsc::Sender<Shipped>,
    rx: Mutex<Option<mpsc::Receiver<Shipped>>>,
}

impl Intake {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Events waiting for the writer.
    pub(crate) fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Hands an event from `from` to the writer; waits while the queue is
    /// full. `false` once the writer has stopped.
    pub(crate) async fn send(&self, from: &Arc<Source>, ev: AccessEvent) -> bool {
        self.tx.send(Shipped::Tunnel(from.clone(), ev)).await.is_ok()
    }

    /// Hands one of this server's own events to the writer without
    /// waiting: `false` if the queue is full (the caller refuses what it
    /// was about to allow, rather than let it go unrecorded) or the writer
    /// has stopped.
    pub(crate) fn record(&self, ev: infra_store::NewAuditEvent) -> bool {
        self.tx.try_send(Shipped::Local(ev)).is_ok()
    }

    /// Starts the writer on `tasks`, until `stop` (given once the server's
    /// clients are done); what is queued then is stored before it ends.
    /// Connectors' events not stored by then are not acknowledged: their
    /// connectors send them again.
    pub(crate) fn start(&self, store: &Store, tasks: &TaskTracker, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let store = store.clone();
        tasks.spawn(async move {
            // Never cancelled in the middle of a batch: a commit that
            // went through but was not followed by its stdout copy and
            // acknowledgements would leave events stored and unprinted.
            write(&store, &mut rx, &stop).await;
            // The last of what was queued (the server's own decisions have
            // no spool to come back from), in batches.
            let limit = batch_limit(store.backend());
            loop {
                let mut batch = Vec::new();
                while batch.len() < limit
                    && let Ok(e) = rx.try_recv()
                {
                    batch.push(e);
                }
                if batch.is_empty() {
                    return;
                }
                if let Err((_, lost, e)) = store_batch(&store, batch).await {
                    tracing::error!(events = lost, error = %e, "cannot store the last audit events at stop");
                    return;
                }
            }
        });
    }
}

/// The writer: gathers, stores, acknowledges, for the server's life.
/// Returns at `stop`, between batches.
async fn write(store: &Store, queue: &mut mpsc::Receiver<Shipped>, stop: &CancellationToken) {
    let limit = batch_limit(store.backend());
    let mut batch = Vec::with_capacity(limit);
    loop {
        let got = tokio::select! {
            n = queue.recv_many(&mut batch, limit) => n,
            () = stop.cancelled() => 0,
        };
        if got == 0 {
            return;
        }
        // Group commit: what arrives within a few milliseconds joins, so
        // a busy server pays one transaction (one fsync) per window.
        let window = tokio::time::sleep(GROUP_COMMIT_WINDOW);
        tokio::pin!(window);
        while batch.len() < limit {
            let room = limit - batch.len();
            tokio::select! {
                n = queue.recv_many(&mut batch, room) => if n == 0 { break },
                () = &mut window => break,
            }
        }
        let sources = store_batch(store, std::mem::take(&mut batch)).await;
        match sources {
            Ok(acked) => {
                for (from, seq) in acked {
                    let ack = ControlMsg::AuditAck { seq };
                    // Never wait on one slow connector: an acknowledgement
                    // that does not fit now goes out on its own.
                    if !from.acks.try_send(&ack) {
                        tokio::spawn(async move {
                            let _ = from.acks.send(&ack).await;
                        });
                    }
                }
            }
            Err((froms, lost, e)) => {
                if lost > 0 {
                    // The server's own decisions have no spool to come
                    // back from; the proxies were answered already.
                    tracing::error!(events = lost, error = %e, "cannot store forward-auth audit events; they are lost");
                }
                // Not acknowledged: the connectors keep the events and send
                // them again on their next tunnels.
                for f in froms {
                    tracing::error!(connector = %f.hello.name, error = %e, "cannot store connector audit events; closing the tunnel");
                    f.closed.cancel();
                }
            }
        }
    }
}

type Acked = Vec<(Arc<Source>, i64)>;

/// Stores a batch from any number of tunnels in one transaction; returns
/// each tunnel's new acknowledged number.
async fn store_batch(store: &Store, batch: Vec<Shipped>) -> Result<Acked, (Vec<Arc<Source>>, usize, String)> {
    // The tunnels in the batch, in the order they first appear; each
    // one's events keep their order.
    let mut order: Vec<Arc<Source>> = Vec::new();
    let mut by_tunnel: HashMap<usize, Vec<AccessEvent>> = HashMap::new();
    let mut local = Vec::new();
    for shipped in batch {
        let (from, ev) = match shipped {
            Shipped::Tunnel(from, ev) => (from, ev),
            Shipped::Local(ev) => {
                local.push(ev);
                continue;
            }
        };
        let k = Arc::as_ptr(&from) as usize;
        by_tunnel
            .entry(k)
            .or_insert_with(|| {
                order.push(from.clone());
                Vec::new()
            })
            .push(ev);
    }
    let lost = local.len();
    let r: Result<Acked, infra_store::StoreError> = async {
        let mut tx = store.write().await?;
        let mut events = Vec::new();
        let mut acked = Vec::with_capacity(order.len());
        for from in &order {
            let evs = by_tunnel.remove(&(Arc::as_ptr(from) as usize)).unwrap_or_default();
            let instance = &from.hello.instance_id;
            let mut last = connectors::audit_acked(tx.conn(), instance).await?;
            let before = last;
            if let Some(oldest) = evs.iter().map(|e| e.time_ms).min() {
                let lag = u64::try_from(now_ms() - oldest).unwrap_or(0);
                crate::metrics::METRICS
                    .audit_ship_lag
                    .observe(std::time::Duration::from_millis(lag).as_secs_f64());
            }
            accept(&from.hello, evs, &mut last, &mut events);
            if last > before {
                connectors::set_audit_acked(tx.conn(), instance, last).await?;
            }
            acked.push((from.clone(), last));
        }
        events.extend(local);
        let rows = infra_store::audit::append_batch(tx.conn(), events, now_ms()).await?;
        tx.commit().await?;
        crate::audit_out::emit_batch(rows);
        Ok(acked)
    }
    .await;
    r.map_err(|e| (order, lost, e.to_string()))
}

/// The events of one tunnel worth storing: each number after `last` once
/// (a resend after a reconnect is not a duplicate), and only about
/// destinations that connector serves.
fn accept(hello: &Hello, evs: Vec<AccessEvent>, last: &mut i64, out: &mut Vec<infra_store::NewAuditEvent>) {
    let mut foreign = 0usize;
    for ev in evs {
        if ev.seq <= *last {
            continue;
        }
        *last = ev.seq;
        // Events about other destinations are not stored (they would
        // forge another connector's record), but their refusal is.
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
        out.push(infra_store::NewAuditEvent {
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
        out.push(infra_store::NewAuditEvent {
            actor: format!("connector:{}", hello.name),
            action: "connector.audit_refused".into(),
            target: hello.name.clone(),
            source: String::new(),
            result: Outcome::Denied.as_str().into(),
            detail: format!("events={foreign} reason=destination not served by this connector"),
        });
    }
}
