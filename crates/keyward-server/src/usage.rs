//! Usage counting off the verify path.
//!
//! A verification adds one to an in-memory counter; a background task
//! flushes the counters in one transaction per interval, and once more at
//! shutdown. The verify path never waits on a write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_store::{Store, UsageDelta};

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<Arc<str>, (u64, DateTime<Utc>)>>,
}

impl UsageRecorder {
    pub fn record(&self, key_id: &Arc<str>, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(key_id) {
            Some((count, last)) => {
                *count += 1;
                if at > *last {
                    *last = at;
                }
            }
            None => {
                pending.insert(key_id.clone(), (1, at));
            }
        }
    }

    fn take(&self) -> Vec<UsageDelta> {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        drained
            .into_iter()
            .map(|(key_id, (count, last_used_at))| UsageDelta {
                key_id,
                day: last_used_at.date_naive(),
                count,
                last_used_at,
            })
            .collect()
    }

    fn restore(&self, deltas: Vec<UsageDelta>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for d in deltas {
            let entry = pending.entry(d.key_id).or_insert((0, d.last_used_at));
            entry.0 += d.count;
            entry.1 = entry.1.max(d.last_used_at);
        }
    }

    /// Writes everything pending. On failure the counts are kept for the
    /// next attempt.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, keyward_store::StoreError> {
        let deltas = self.take();
        if deltas.is_empty() {
            return Ok(0);
        }
        let n = deltas.len();
        match store.record_usage(&deltas).await {
            Ok(()) => Ok(n),
            Err(e) => {
                self.restore(deltas);
                Err(e)
            }
        }
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
