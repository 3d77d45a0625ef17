//! Metrics recorder (Prometheus) and log set-up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Shards of [`PerThread`]: more than the cores of a usual node, so worker
/// threads rarely share one.
const SHARDS: usize = 8;

/// `N` sums that every request adds to, kept per thread: an add is one
/// add to a cache line its thread alone writes. Shared counters moved
/// their lines between the cores, several times per verification.
struct PerThread<const N: usize>(Box<[Shard<N>; SHARDS]>);

/// One thread's sums, on cache lines of their own.
#[repr(align(128))]
struct Shard<const N: usize>([AtomicU64; N]);

impl<const N: usize> PerThread<N> {
    fn new() -> Self {
        PerThread(Box::new(std::array::from_fn(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0))))))
    }

    #[inline]
    fn add(&self, i: usize, n: u64) {
        self.0[shard()].0[i].fetch_add(n, Ordering::Relaxed);
    }

    /// Sum `i` over every thread.
    fn total(&self, i: usize) -> u64 {
        self.0.iter().map(|s| s.0[i].load(Ordering::Relaxed)).sum()
    }

    /// Sum `i` over every thread, set back to zero.
    fn take(&self, i: usize) -> u64 {
        self.0.iter().map(|s| s.0[i].swap(0, Ordering::Relaxed)).sum()
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

/// Counters counted on every request, kept per thread and handed to the
/// recorder's counters by [`ShardedCounters::flush`] (before `/metrics`
/// renders, so a scrape sees every count).
pub struct ShardedCounters<const N: usize> {
    counts: PerThread<N>,
    counters: [Counter; N],
}

impl<const N: usize> ShardedCounters<N> {
    pub fn new(counters: [Counter; N]) -> Self {
        ShardedCounters { counts: PerThread::new(), counters }
    }

    /// Adds one to counter `i`.
    #[inline]
    pub fn increment(&self, i: usize) {
        self.counts.add(i, 1);
    }

    /// Adds what each thread counted to the recorder's counters.
    pub fn flush(&self) {
        for (i, counter) in self.counters.iter().enumerate() {
            let n = self.counts.take(i);
            if n > 0 {
                counter.increment(n);
            }
        }
    }
}

/// Bucket bounds of `keyward_verify_duration_seconds`, in nanoseconds.
const LATENCY_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];
/// The latency's sums: a count per bucket (the last one past every
/// bound), then the samples' sum in nanoseconds.
const LATENCY_SUMS: usize = LATENCY_BOUNDS_NS.len() + 2;
const LATENCY_SUM_NS: usize = LATENCY_SUMS - 1;

/// `keyward_verify_duration_seconds`, process-wide like the recorder, its
/// counts kept per thread; `/metrics` renders the totals. The recorder's
/// histogram queued every sample in a buffer that every core pushed to.
pub static VERIFY_LATENCY: LazyLock<LatencyHistogram> = LazyLock::new(LatencyHistogram::default);

pub struct LatencyHistogram(PerThread<LATENCY_SUMS>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(PerThread::new())
    }
}

impl LatencyHistogram {
    /// Counts one sample.
    #[inline]
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NS.iter().position(|&bound| ns <= bound).unwrap_or(LATENCY_BOUNDS_NS.len());
        self.0.add(bucket, 1);
        self.0.add(LATENCY_SUM_NS, ns);
    }

    /// Appends the histogram in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        const NAME: &str = "keyward_verify_duration_seconds";
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "# HELP {NAME} Time to verify a key, from parse to decision");
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
            cumulative += self.0.total(i);
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e9);
        }
        cumulative += self.0.total(LATENCY_BOUNDS_NS.len());
        let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{NAME}_sum {}", self.0.total(LATENCY_SUM_NS) as f64 / 1e9);
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
        let histogram = LatencyHistogram::default();
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
