//! Audit export: every stored event, in chain order, to the targets the
//! operator configured: JSON lines in a rotated file, syslog (RFC 5424),
//! an HTTP webhook.
//!
//! Each target reads the chain from the store after its own cursor (table
//! `audit_exports`) and moves the cursor only once the target has taken a
//! batch, so delivery is at least once, across restarts and replica
//! failover; every event carries its chain `seq`, which a receiver uses to
//! drop the repeats a retry can cause (exactly once, counted at the
//! receiver). One replica ships a target at a time, by lease.

mod file;
mod syslog;
mod webhook;

use std::time::Duration;

use infra_store::{AuditRow, Store, now_ms};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use file::FileSink;
pub(crate) use syslog::SyslogSink;
pub(crate) use webhook::WebhookSink;

/// Events per delivery.
const BATCH: i64 = 500;
/// How long a replica's claim on a target lasts without renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often an idle or unleased exporter looks again.
const IDLE: Duration = Duration::from_millis(500);
/// Retry back-off after a failed delivery: doubling from the first, at
/// most the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

/// A configured target.
pub(crate) enum Sink {
    File(FileSink),
    Syslog(SyslogSink),
    Webhook(WebhookSink),
}

impl Sink {
    /// The cursor's name: a new path or URL starts from the beginning.
    fn name(&self) -> String {
        match self {
            Sink::File(f) => format!("file:{}", f.path().display()),
            Sink::Syslog(s) => format!("syslog:{}", s.url()),
            Sink::Webhook(w) => format!("webhook:{}", w.url()),
        }
    }

    /// Delivers `rows` (in order); `Ok` only once the target has them.
    async fn deliver(&mut self, rows: &[AuditRow]) -> Result<(), String> {
        match self {
            Sink::File(f) => f.write(rows).await,
            Sink::Syslog(s) => s.send(rows).await,
            Sink::Webhook(w) => w.post(rows).await,
        }
    }
}

/// Starts one exporter per sink, until `stop`.
pub(crate) fn start(store: &Store, sinks: Vec<Sink>, tasks: &TaskTracker, stop: &CancellationToken) {
    let owner = infra_auth::random_token(16).unwrap_or_else(|_| format!("replica-{}", now_ms()));
    for sink in sinks {
        let (store, owner, stop) = (store.clone(), owner.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = run(store, sink, owner) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// One target's exporter, for the server's life.
async fn run(store: Store, mut sink: Sink, owner: String) {
    let target = sink.name();
    tracing::info!(%target, "audit export started");
    let mut failures = 0u32;
    // The cursor while this replica holds the lease, and when to renew it
    // (half-way through: a write per renewal, not per batch).
    let mut held: Option<(i64, i64)> = None;
    loop {
        let cursor = match held {
            Some((cursor, renew_at)) if now_ms() < renew_at => cursor,
            _ => match claim(&store, &target, &owner).await {
                Ok(Some(seq)) => {
                    held = Some((seq, now_ms() + lease_ms() / 2));
                    seq
                }
                Ok(None) => {
                    // Another replica ships it.
                    held = None;
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
                Err(e) => {
                    held = None;
                    tracing::warn!(%target, error = %e, "audit export: cannot read its cursor");
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            },
        };
        let rows = match store.conn().await {
            Ok(mut c) => infra_store::audit::after(&mut c, cursor, BATCH).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%target, error = %e, "audit export: cannot read events");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        let Some(last) = rows.last().map(|r| r.seq) else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        match sink.deliver(&rows).await {
            Ok(()) => {
                failures = 0;
                crate::metrics::exported(&target, rows.len(), true);
                match advance(&store, &target, &owner, last).await {
                    Ok(true) => held = held.map(|(_, renew_at)| (last, renew_at)),
                    // Another replica took the lease over: its cursor stands.
                    Ok(false) => held = None,
                    Err(e) => {
                        // Delivered but not recorded: sent again next time.
                        held = None;
                        tracing::warn!(%target, error = %e, "audit export: cannot record progress");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                crate::metrics::exported(&target, rows.len(), false);
                let wait = backoff(failures);
                tracing::warn!(%target, error = %e, retry_in = ?wait, first = rows[0].seq, "audit export: delivery failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The wait after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let (first, most) = BACKOFF;
    first
        .checked_mul(1u32 << failures.saturating_sub(1).min(16))
        .map_or(most, |d| d.min(most))
}

fn lease_ms() -> i64 {
    i64::try_from(LEASE.as_millis()).unwrap_or(15_000)
}

async fn claim(store: &Store, target: &str, owner: &str) -> Result<Option<i64>, infra_store::StoreError> {
    let now = now_ms();
    let until = now + lease_ms();
    let mut tx = store.write().await?;
    let r = infra_store::export::claim(tx.conn(), target, owner, now, until).await?;
    tx.commit().await?;
    Ok(r)
}

async fn advance(store: &Store, target: &str, owner: &str, seq: i64) -> Result<bool, infra_store::StoreError> {
    let mut tx = store.write().await?;
    let moved = infra_store::export::advance(tx.conn(), target, owner, seq).await?;
    tx.commit().await?;
    Ok(moved)
}

/// One event as every target receives it: the stored row, `seq` and
/// hashes included, as one JSON object.
fn json_line(r: &AuditRow) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn back_off_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(5), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
