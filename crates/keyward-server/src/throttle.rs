//! Failed authentication per client address: past the limit within a
//! minute, that address is refused (429 with `Retry-After`) whatever it
//! presents, until the minute is over. Counted on each node (bounded in
//! memory: the addresses seen most recently and most often).
//!
//! Counted by who is harmed ([`Seen`]): the API's own table holds only the
//! addresses of its own callers (which keyward sees itself); an address a
//! verify caller names in `"ip"` counts only in that workspace's view, and
//! an address a gateway forwards only in the gateway's, so nobody can get
//! another's address refused.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use crate::clock::Clock;

/// `last_failure_minute` when no minute with a failure is current.
const NO_FAILURE: i64 = i64::MIN;

/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Default)]
struct Counter {
    /// The minute (since the epoch) `failures` counts in.
    minute: AtomicI64,
    failures: AtomicU32,
}

/// Whose view of an address a failure counts in.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A caller of keyward's own API (its address as keyward sees it).
    Api,
    /// An address a caller of this workspace named (verify's `"ip"`, or a
    /// gateway of the workspace forwarding its client's).
    ByWorkspace(&'a str),
    /// A client forwarded by the trusted forward-auth listener's gateways.
    ByGateway,
}

/// A view, as counted: the workspace by a hash (no allocation per lookup;
/// the hasher's keys are this process's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    Api,
    Workspace(u64),
    Gateway,
}

pub struct IpThrottle {
    /// Failures per address per minute; 0 turns the limit off.
    limit: u32,
    counters: quick_cache::sync::Cache<(View, IpAddr), Arc<Counter>>,
    views: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
    /// The last minute any failure was counted in (or [`NO_FAILURE`]): in
    /// any other minute no address is over the limit, and a request asks
    /// no table.
    last_failure_minute: AtomicI64,
}

impl IpThrottle {
    pub fn new(limit: u32, clock: Arc<dyn Clock>) -> Self {
        IpThrottle {
            limit,
            counters: quick_cache::sync::Cache::new(MAX_ADDRESSES),
            views: Default::default(),
            clock,
            last_failure_minute: AtomicI64::new(NO_FAILURE),
        }
    }

    fn view(&self, seen: Seen<'_>) -> View {
        match seen {
            Seen::Api => View::Api,
            Seen::ByWorkspace(ws) => View::Workspace(self.views.hash_one(ws)),
            Seen::ByGateway => View::Gateway,
        }
    }

    /// Seconds until `ip` may try again in the view `seen`, when it is
    /// over the limit there.
    pub fn retry_after(&self, seen: Seen<'_>, ip: IpAddr) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        // No failure since the last minute that had one: not even the
        // clock is read.
        let last = self.last_failure_minute.load(Ordering::Relaxed);
        if last == NO_FAILURE {
            return None;
        }
        let now_ms = self.clock.now_ms();
        if last != now_ms.div_euclid(60_000) {
            // That minute is over; a failure counted meanwhile stays.
            let _ = self.last_failure_minute.compare_exchange(last, NO_FAILURE, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        let counter = self.counters.get(&(self.view(seen), ip))?;
        let current = counter.minute.load(Ordering::Relaxed) == now_ms.div_euclid(60_000);
        (current && counter.failures.load(Ordering::Relaxed) >= self.limit)
            .then(|| (60 - now_ms.rem_euclid(60_000) / 1000).max(1) as u64)
    }

    /// Counts a failed authentication from `ip`, in the view `seen`.
    pub fn failed(&self, seen: Seen<'_>, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let minute = self.clock.now_ms().div_euclid(60_000);
        self.last_failure_minute.store(minute, Ordering::Relaxed);
        let key = (self.view(seen), ip);
        let counter = self.counters.get_or_insert_with(&key, || Ok::<_, ()>(Arc::default())).unwrap_or_default();
        if counter.minute.swap(minute, Ordering::Relaxed) != minute {
            counter.failures.store(0, Ordering::Relaxed);
        }
        counter.failures.fetch_add(1, Ordering::Relaxed);
    }
}
