//! Usage counting off the verify path.
//!
//! Each key seen by this node has a [`UsageCell`] of atomics, reached from
//! its cache entry, so counting a use is two relaxed atomic operations: no
//! lock, no allocation, no write. A background task drains the cells into
//! one transaction per interval, and once more at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use keyward_store::{Store, UsageDelta};

/// Uses of one key since the last flush.
#[derive(Debug, Default)]
pub struct UsageCell {
    count: AtomicU64,
    /// Milliseconds since the epoch of the latest use.
    last_ms: AtomicI64,
}

impl UsageCell {
    /// Counts one use at `at_ms` (milliseconds since the epoch).
    pub fn record(&self, at_ms: i64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_ms.fetch_max(at_ms, Ordering::Relaxed);
    }
}

/// Keys per usage-flush transaction.
pub const FLUSH_CHUNK: usize = 500;

#[derive(Default)]
pub struct UsageRecorder {
    cells: Mutex<HashMap<Arc<str>, Arc<UsageCell>>>,
}

impl UsageRecorder {
    /// The cell of a key, created on first sight. Called when a key enters
    /// the cache, not per verification.
    pub fn cell(&self, key_id: &Arc<str>) -> Arc<UsageCell> {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.entry(key_id.clone()).or_default().clone()
    }

    fn take(&self) -> Vec<UsageDelta> {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        let mut deltas = Vec::new();
        // Cells no cache entry holds any more, and with nothing to flush, go.
        cells.retain(|key_id, cell| {
            let count = cell.count.swap(0, Ordering::Relaxed);
            if count > 0 {
                let last =
                    Utc.timestamp_millis_opt(cell.last_ms.load(Ordering::Relaxed)).single().unwrap_or_else(Utc::now);
                deltas.push(UsageDelta { key_id: key_id.clone(), day: last.date_naive(), count, last_used_at: last });
                return true;
            }
            Arc::strong_count(cell) > 1
        });
        deltas
    }

    fn restore(&self, deltas: Vec<UsageDelta>) {
        for d in deltas {
            let cell = self.cell(&d.key_id);
            cell.count.fetch_add(d.count, Ordering::Relaxed);
            cell.last_ms.fetch_max(d.last_used_at.timestamp_millis(), Ordering::Relaxed);
        }
    }

    /// Writes everything pending, one transaction per [`FLUSH_CHUNK`] keys
    /// so that other writes (creates, revokes) are not held up behind a
    /// large flush. On failure the unwritten counts are kept for the next
    /// attempt.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, keyward_store::StoreError> {
        let deltas = self.take();
        let mut written = 0;
        for chunk in deltas.chunks(FLUSH_CHUNK) {
            if let Err(e) = store.record_usage(chunk).await {
                self.restore(deltas[written..].to_vec());
                return Err(e);
            }
            written += chunk.len();
        }
        Ok(written)
    }
}

/// Flushes every `interval` until `shutdown` fires, then once more.
pub async fn run_flusher(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = recorder.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "usage flush failed; will retry");
        }
    }
    match recorder.flush(store.as_ref()).await {
        Ok(n) => tracing::info!(keys = n, "flushed usage counts at shutdown"),
        Err(e) => tracing::error!(error = %e, "final usage flush failed"),
    }
}
