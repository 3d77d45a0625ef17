//! Failed authentication per client address: past the limit within a
//! minute, that address is refused (429 with `Retry-After`) whatever it
//! presents, until the minute is over. Counted on each node (bounded in
//! memory: the addresses seen most recently and most often).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use crate::clock::Clock;

/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Default)]
struct Counter {
    /// The minute (since the epoch) `failures` counts in.
    minute: AtomicI64,
    failures: AtomicU32,
}

pub struct IpThrottle {
    /// Failures per address per minute; 0 turns the limit off.
    limit: u32,
    counters: quick_cache::sync::Cache<IpAddr, Arc<Counter>>,
    clock: Arc<dyn Clock>,
}

impl IpThrottle {
    pub fn new(limit: u32, clock: Arc<dyn Clock>) -> Self {
        IpThrottle { limit, counters: quick_cache::sync::Cache::new(MAX_ADDRESSES), clock }
    }

    /// Seconds until `ip` may try again, when it is over the limit.
    pub fn retry_after(&self, ip: IpAddr) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let now_ms = self.clock.now_ms();
        let counter = self.counters.get(&ip)?;
        let current = counter.minute.load(Ordering::Relaxed) == now_ms.div_euclid(60_000);
        (current && counter.failures.load(Ordering::Relaxed) >= self.limit)
            .then(|| (60 - now_ms.rem_euclid(60_000) / 1000).max(1) as u64)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let minute = self.clock.now_ms().div_euclid(60_000);
        let counter = self.counters.get_or_insert_with(&ip, || Ok::<_, ()>(Arc::default())).unwrap_or_default();
        if counter.minute.swap(minute, Ordering::Relaxed) != minute {
            counter.failures.store(0, Ordering::Relaxed);
        }
        counter.failures.fetch_add(1, Ordering::Relaxed);
    }
}
