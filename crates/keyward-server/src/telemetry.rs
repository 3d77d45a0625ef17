//! Metrics recorder (Prometheus) and log set-up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Shards of [`ShardedCounters`]: more than the cores of a usual node, so
/// worker threads rarely share one.
const SHARDS: usize = 8;

/// Counters counted on every request, kept per thread and handed to the
/// recorder's counters by [`ShardedCounters::flush`] (before `/metrics`
/// renders, so a scrape sees every count). The recorder's own counters are
/// shared by every core: each increment moved their cache line between
/// cores, several times per verification. Here an increment is one add to
/// a line its thread alone writes.
pub struct ShardedCounters<const N: usize> {
    shards: Box<[Shard<N>; SHARDS]>,
    counters: [Counter; N],
}

/// One thread's counts, on cache lines of their own.
#[repr(align(128))]
struct Shard<const N: usize>([AtomicU64; N]);

impl<const N: usize> ShardedCounters<N> {
    pub fn new(counters: [Counter; N]) -> Self {
        let shards = Box::new(std::array::from_fn(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0)))));
        ShardedCounters { shards, counters }
    }

    /// Adds one to counter `i`.
    #[inline]
    pub fn increment(&self, i: usize) {
        self.shards[shard()].0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what each thread counted to the recorder's counters.
    pub fn flush(&self) {
        for (i, counter) in self.counters.iter().enumerate() {
            let n: u64 = self.shards.iter().map(|s| s.0[i].swap(0, Ordering::Relaxed)).sum();
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Bucket bounds of `keyward_verify_duration_seconds`, in seconds.
const LATENCY_BOUNDS: [f64; 16] = [
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// `keyward_verify_duration_seconds`, process-wide like the recorder: each
/// thread counts a sample into its own shard (the bucket's count and the
/// sum in nanoseconds, two adds to lines it alone writes), and `/metrics`
/// renders the totals. The recorder's histogram queued every sample in a
/// buffer that every core pushed to.
pub static VERIFY_LATENCY: LazyLock<LatencyHistogram> = LazyLock::new(LatencyHistogram::new);

pub struct LatencyHistogram {
    shards: Box<[LatencyShard; SHARDS]>,
    bounds_ns: [u64; LATENCY_BOUNDS.len()],
}

/// One thread's samples: a count per bucket (the last one past every
/// bound) and their sum.
#[repr(align(128))]
struct LatencyShard {
    counts: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    fn new() -> Self {
        let shard = || LatencyShard { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_ns: AtomicU64::new(0) };
        LatencyHistogram {
            shards: Box::new(std::array::from_fn(|_| shard())),
            bounds_ns: LATENCY_BOUNDS.map(|s| (s * 1e9).round() as u64),
        }
    }

    /// Counts one sample.
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_ns.iter().position(|&bound| ns <= bound).unwrap_or(LATENCY_BOUNDS.len());
        let shard = &self.shards[shard()];
        shard.counts[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        const NAME: &str = "keyward_verify_duration_seconds";
        let total = |i: usize| -> u64 { self.shards.iter().map(|s| s.counts[i].load(Ordering::Relaxed)).sum() };
        let sum_ns: u64 = self.shards.iter().map(|s| s.sum_ns.load(Ordering::Relaxed)).sum();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "# HELP {NAME} Time to verify a key, from parse to decision");
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += total(i);
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += total(LATENCY_BOUNDS.len());
        let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{NAME}_sum {}", sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{NAME}_count {cumulative}");
    }
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder folds recorded samples into its summaries.
///
/// Histogram samples are buffered until this upkeep (or a scrape) drains
/// them: without it a node nobody scrapes grows by every sample it records.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder once; later calls (tests
/// that start several servers in one process) share it. A background thread
/// runs the recorder's upkeep every [`METRICS_UPKEEP_INTERVAL`], so memory
/// stays bounded whether or not `/metrics` is scraped.
pub fn prometheus() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// A plain thread, not a task: the recorder outlives any one runtime (tests
/// start several servers, each on its own runtime, in one process).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("keyward-metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(METRICS_UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; memory grows until /metrics is scraped");
    }
}

fn describe() {
    metrics::describe_counter!(
        "keyward_verifications_total",
        "Answers to verify and authorize requests, by verification code"
    );
    metrics::describe_counter!(
        "keyward_caller_authentications_total",
        "API callers' own keys checked, accepted or refused (not counted in keyward_verifications_total)"
    );
    metrics::describe_counter!("keyward_cache_hits_total", "Key lookups answered from memory");
    metrics::describe_counter!("keyward_cache_misses_total", "Key lookups that went to storage");
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Initialises logging to stderr; `filter` is an `EnvFilter` directive
/// such as `info` or `keyward=debug`.
pub fn init_logging(format: LogFormat, filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples land in the first bucket whose bound they do not exceed;
    /// buckets are cumulative, and count and sum cover every sample.
    #[test]
    fn latency_renders_cumulative_buckets() {
        let histogram = LatencyHistogram::new();
        for ns in [500, 1_000, 1_500, 3_000_000, 2_000_000_000] {
            histogram.record(Duration::from_nanos(ns));
        }
        let mut text = String::from("other_metric 1");
        histogram.render(&mut text);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} missing: {text}"))
                .to_owned()
        };
        assert!(text.starts_with("other_metric 1\n# HELP keyward_verify_duration_seconds "), "{text}");
        assert!(text.contains("# TYPE keyward_verify_duration_seconds histogram\n"), "{text}");
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"0.000001\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="0.000001"} 2"#
        );
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"0.000002\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="0.000002"} 3"#
        );
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"0.002\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="0.002"} 3"#
        );
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"0.005\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="0.005"} 4"#
        );
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"0.1\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="0.1"} 4"#
        );
        assert_eq!(
            line("keyward_verify_duration_seconds_bucket{le=\"+Inf\"}"),
            r#"keyward_verify_duration_seconds_bucket{le="+Inf"} 5"#
        );
        assert_eq!(line("keyward_verify_duration_seconds_count"), "keyward_verify_duration_seconds_count 5");
        assert_eq!(line("keyward_verify_duration_seconds_sum"), "keyward_verify_duration_seconds_sum 2.003003");
    }
}
