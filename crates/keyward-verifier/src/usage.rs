//! Each key's use, counted in its record's cache entry: counting a
//! verification is two relaxed atomic operations (no lock, no allocation,
//! no write). A key's first count since its last drain also queues its
//! entry ([`Pending`]), so whoever embeds the verifier drains the keys that
//! were used, not every key it holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use keyward_core::verify::VerifyCode;

use crate::cache::CachedKey;

const CODES: usize = VerifyCode::ALL.len();

pub const HOUR_MS: i64 = 3_600_000;

/// Verifications of one key since the last drain, in two slots by the
/// parity of the hour (so counts on either side of an hour's end stay
/// apart; a drain runs far more often than hourly). Valid ones are counted
/// in the cell itself; refusals, by code, in a block allocated on a key's
/// first refusal, so the cell of a key that is only ever used well stays
/// small (memory per cached key).
#[derive(Debug, Default)]
pub struct UsageCell {
    /// Counted since the last drain, and queued for the next ([`Pending`]).
    dirty: AtomicBool,
    valid: [AtomicU32; 2],
    /// The hour (since the epoch) each slot counts.
    slot_hour: [AtomicI32; 2],
    /// Milliseconds since the epoch of the latest authenticated use.
    last_ms: AtomicI64,
    refused: OnceLock<Box<Refused>>,
}

/// A key's refusals since the last drain, by code and hour slot.
#[derive(Debug)]
struct Refused {
    counts: [[AtomicU32; CODES]; 2],
    /// Milliseconds since the epoch of the latest failed authentication.
    failed_ms: AtomicI64,
}

/// Whether a refused verification is a failed authentication (the key is
/// unknown, or its secret, state or expiry refused it).
pub fn is_auth_failure(code: VerifyCode) -> bool {
    matches!(
        code,
        VerifyCode::NotFound
            | VerifyCode::InvalidSecret
            | VerifyCode::Expired
            | VerifyCode::Revoked
            | VerifyCode::Inactive
            | VerifyCode::Locked
    )
}

impl UsageCell {
    /// Counts one verification with `code` at `at_ms` (milliseconds since
    /// the epoch); `authenticated` ones move "last used". True when this
    /// count is the first since the last drain: the caller queues the key.
    #[inline]
    fn record(&self, code: VerifyCode, authenticated: bool, at_ms: i64, n: u32) -> bool {
        let hour = at_ms.div_euclid(HOUR_MS) as i32;
        let slot = (hour & 1) as usize;
        if self.slot_hour[slot].load(Ordering::Relaxed) != hour {
            self.slot_hour[slot].store(hour, Ordering::Relaxed);
        }
        // Read first: a key verified many times a millisecond on several
        // cores writes its line once per millisecond, not once per request.
        if authenticated && self.last_ms.load(Ordering::Relaxed) < at_ms {
            self.last_ms.fetch_max(at_ms, Ordering::Relaxed);
        }
        if code == VerifyCode::Valid {
            self.valid[slot].fetch_add(n, Ordering::Relaxed);
        } else {
            let refused = self.refused.get_or_init(|| {
                Box::new(Refused {
                    counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
                    failed_ms: AtomicI64::new(0),
                })
            });
            refused.counts[slot][code.index()].fetch_add(n, Ordering::Relaxed);
            if is_auth_failure(code) {
                refused.failed_ms.fetch_max(at_ms, Ordering::Relaxed);
            }
        }
        // After the count: a drain clears the mark before it reads the
        // counts, so a count it misses finds the mark cleared and queues
        // the key again. Read first: once queued, a key's later counts
        // write nothing more.
        !self.dirty.load(Ordering::SeqCst) && self.mark()
    }

    /// Marks the cell queued: true when it was not.
    fn mark(&self) -> bool {
        !self.dirty.swap(true, Ordering::SeqCst)
    }

    /// Clears the queued mark, before a drain reads the counts.
    pub fn clean(&self) {
        self.dirty.store(false, Ordering::SeqCst);
    }

    /// The slot's counts by code, zeroed.
    pub fn drain(&self, slot: usize) -> Vec<(&'static str, u64)> {
        let mut counts = Vec::new();
        let valid = self.valid[slot].swap(0, Ordering::Relaxed);
        if valid > 0 {
            counts.push((VerifyCode::Valid.as_str(), u64::from(valid)));
        }
        if let Some(r) = self.refused.get() {
            for c in VerifyCode::ALL {
                let n = r.counts[slot][c.index()].swap(0, Ordering::Relaxed);
                if n > 0 {
                    counts.push((c.as_str(), u64::from(n)));
                }
            }
        }
        counts
    }

    /// Puts drained counts back (a flush that failed).
    pub fn undrain(&self, slot: usize, code: &str, n: u64) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if code == VerifyCode::Valid.as_str() {
            self.valid[slot].fetch_add(n, Ordering::Relaxed);
        } else if let (Some(r), Some(c)) = (self.refused.get(), VerifyCode::ALL.iter().find(|c| c.as_str() == code)) {
            r.counts[slot][c.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The hour (since the epoch) slot `slot` counts.
    pub fn slot_hour(&self, slot: usize) -> i32 {
        self.slot_hour[slot].load(Ordering::Relaxed)
    }

    pub fn set_slot_hour(&self, slot: usize, hour: i32) {
        self.slot_hour[slot].store(hour, Ordering::Relaxed);
    }

    /// The latest authenticated use (ms since the epoch; 0: none since
    /// the last call), zeroed.
    pub fn take_last_used(&self) -> i64 {
        self.last_ms.swap(0, Ordering::Relaxed)
    }

    /// Puts a taken "last used" back.
    pub fn restore_last_used(&self, at_ms: i64) {
        self.last_ms.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// For a key refused at least once: the latest failed authentication
    /// (ms since the epoch).
    pub fn failed_ms(&self) -> Option<i64> {
        Some(self.refused.get()?.failed_ms.load(Ordering::Relaxed))
    }
}

/// The keys counted since their last drain, in the order they were first
/// counted. A queued entry outlives its place in the cache until drained.
#[derive(Debug, Default)]
pub struct Pending {
    keys: Mutex<VecDeque<Arc<CachedKey>>>,
}

impl Pending {
    /// Counts one verification of `key` (see [`UsageCell`]), queueing the
    /// key on its first count since its last drain.
    #[inline]
    pub fn count(&self, key: &Arc<CachedKey>, code: VerifyCode, authenticated: bool, at_ms: i64) {
        self.count_many(key, code, authenticated, at_ms, 1);
    }

    /// Counts `n` verifications of `key` with `code` (an embedded
    /// verifier's report), the latest at `at_ms`.
    #[inline]
    pub fn count_many(&self, key: &Arc<CachedKey>, code: VerifyCode, authenticated: bool, at_ms: i64, n: u32) {
        if key.usage.record(code, authenticated, at_ms, n) {
            self.push(key.clone());
        }
    }

    /// Queues `key` again, unless it is queued (its drained counts were
    /// put back).
    pub fn requeue(&self, key: &Arc<CachedKey>) {
        if key.usage.mark() {
            self.push(key.clone());
        }
    }

    fn push(&self, key: Arc<CachedKey>) {
        self.lock().push_back(key);
    }

    /// Keys queued now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max` of the longest-queued keys, for a drain.
    pub fn take(&self, max: usize) -> Vec<Arc<CachedKey>> {
        let mut keys = self.lock();
        let n = max.min(keys.len());
        keys.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<CachedKey>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}
