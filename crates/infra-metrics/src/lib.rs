//! What the server's and the connector's metrics share: the Prometheus
//! text exposition, the process metrics every Prometheus client library
//! exports (`process_*`, read from `/proc/self`), and the latency buckets.
//! Each binary keeps its own metric families; this crate does no I/O but
//! reading `/proc`.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets from 100 µs to 10 s: a decision from memory takes tens
/// of microseconds, a request through the tunnel milliseconds, a session's
/// set-up up to seconds.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// A registry with the process metrics in it.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Process));
    r
}

/// The registry in the Prometheus text format (0.0.4).
pub fn render(r: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, r).is_err() {
        let _ = writeln!(out, "# the metrics could not be encoded");
    }
    out
}

/// The standard `process_*` metrics, read on each scrape.
#[derive(Debug)]
struct Process;

/// Clock ticks per second for `/proc/self/stat` (`getconf CLK_TCK`; 100 on
/// every Linux architecture Infra builds for).
const TICKS: f64 = 100.0;

static STARTED: LazyLock<f64> = LazyLock::new(|| {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
});

/// (utime + stime ticks, threads, virtual bytes, resident pages) from
/// `/proc/self/stat`.
fn stat() -> Option<(u64, i64, u64, i64)> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14, 15, 20, 23, 24 (1-based, counting pid and comm).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let threads: i64 = f.get(17)?.parse().ok()?;
    let vsize: u64 = f.get(20)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((utime + stime, threads, vsize, rss))
}

fn open_fds() -> Option<i64> {
    Some(i64::try_from(std::fs::read_dir("/proc/self/fd").ok()?.count()).unwrap_or(i64::MAX))
}

impl Collector for Process {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Started when first scraped at the latest; `Lazy` is forced at
        // start-up by `mark_start`.
        let started = *STARTED;
        let g = ConstGauge::new(started);
        g.encode(enc.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            None,
            g.metric_type(),
        )?)?;
        if let Some((ticks, threads, vsize, rss)) = stat() {
            // `ConstCounter` appends `_total`.
            #[allow(clippy::cast_precision_loss)]
            let c = ConstCounter::new(ticks as f64 / TICKS);
            c.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?)?;
            let g = ConstGauge::new(rss.saturating_mul(4096));
            g.encode(enc.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(i64::try_from(vsize).unwrap_or(i64::MAX));
            g.encode(enc.encode_descriptor(
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(threads);
            g.encode(enc.encode_descriptor("process_threads", "Number of OS threads", None, g.metric_type())?)?;
        }
        if let Some(n) = open_fds() {
            let g = ConstGauge::new(n);
            g.encode(enc.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Notes the process's start time (call once at start-up).
pub fn mark_start() {
    LazyLock::force(&STARTED);
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_metrics_are_read_from_proc() {
        super::mark_start();
        let out = super::render(&super::registry());
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "process_threads ",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
        let rss: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(rss > 1_000_000.0, "{out}");
    }
}
