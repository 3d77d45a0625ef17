//! Metrics recorder (Prometheus) and log set-up.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
            let buckets = [
                0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("keyward_verify_duration_seconds".into()), &buckets)
                .ok()?;
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
    metrics::describe_histogram!(
        "keyward_verify_duration_seconds",
        metrics::Unit::Seconds,
        "Time to verify a key, from parse to decision"
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
