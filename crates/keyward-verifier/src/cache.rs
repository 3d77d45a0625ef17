//! The in-memory key cache in front of the store.
//!
//! Verification of a known key touches no storage: the key's record is here.
//! Every mutation on this node replaces the record here after its write is
//! durable. Unknown ids are remembered briefly (negative entries) so a flood
//! of made-up keys costs one lookup per id, not one per request.
//!
//! **Invariant:** a load that raced with a mutation never overwrites the
//! mutation's fresher record. Loads read an epoch before going to the
//! store and insert only if no mutation bumped it meanwhile; mutations bump
//! it and insert under the same lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::key::ApiKey;
use keyward_core::token::{ID_LEN, token_id_of_key_id};

use crate::record::{Interner, KeyRecord};
use crate::usage::{Pending, UsageCell};

/// A key as held in memory: its record and its usage counters.
#[derive(Debug)]
pub struct CachedKey {
    pub record: KeyRecord,
    /// Counted through [`Pending::count`].
    pub usage: UsageCell,
    /// When the record was read or written (ms since the epoch): a record
    /// older than the cache's maximum age is read again. And, in the
    /// [`REFRESHING`] bit, whether a use past half that age has claimed
    /// reading it again ahead of time.
    loaded: AtomicI64,
}

/// The bit of [`CachedKey::loaded`] that marks a claimed read-ahead.
const REFRESHING: i64 = 1 << 62;

impl std::ops::Deref for CachedKey {
    type Target = KeyRecord;
    fn deref(&self) -> &KeyRecord {
        &self.record
    }
}

impl CachedKey {
    /// A record held from `now_ms` (ms since the epoch), its uses not yet counted.
    pub fn new(record: KeyRecord, now_ms: i64) -> Self {
        CachedKey { record, usage: UsageCell::default(), loaded: AtomicI64::new(now_ms) }
    }

    /// The same key holding only `scopes` (see [`KeyRecord::narrowed`]),
    /// to act with, not to count: its cell is its own.
    pub fn narrowed(&self, scopes: Vec<keyward_core::scope::Scope>) -> Self {
        CachedKey {
            record: self.record.narrowed(scopes),
            usage: UsageCell::default(),
            loaded: AtomicI64::new(self.loaded_ms()),
        }
    }

    /// When the record was read or written (ms since the epoch).
    pub fn loaded_ms(&self) -> i64 {
        self.loaded.load(Ordering::Relaxed) & !REFRESHING
    }

    /// Claims reading the record again ahead of its maximum age: true for
    /// the first caller alone.
    fn claim_refresh(&self) -> bool {
        self.loaded.fetch_or(REFRESHING, Ordering::Relaxed) & REFRESHING == 0
    }
}

/// What a presented token is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// The 16 id characters of a native token.
    Native([u8; ID_LEN]),
    /// HMAC of a whole foreign-format (imported) token.
    Foreign([u8; 32]),
}

impl CacheKey {
    pub fn native(token_id: &str) -> Self {
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&token_id.as_bytes()[..ID_LEN]);
        CacheKey::Native(id)
    }

    /// The cache key of a native key's record; `None` for imported keys,
    /// whose cache key is derived from the presented token only.
    pub fn of_native_key(key: &ApiKey) -> Option<Self> {
        if key.lookup_prefix.is_some() {
            return None;
        }
        token_id_of_key_id(&key.id).map(CacheKey::native)
    }
}

pub enum Lookup {
    Hit(Arc<CachedKey>),
    /// Held and fresh, but past half the maximum age: it answers, and this
    /// caller alone reads it again meanwhile (`finish_load` with the
    /// ticket), so that a key in use never waits on the store for its
    /// periodic read.
    Refresh(Arc<CachedKey>, LoadTicket),
    KnownAbsent,
    /// Not held, or held but due to be read again (older than the maximum
    /// age, or from before a resynchronisation): the stale record, if any,
    /// answers only while the store cannot.
    Miss(LoadTicket, Option<Arc<CachedKey>>),
}

/// Proof of the epoch a load started in.
pub struct LoadTicket(u64);

/// Every map is bounded (`capacity` entries) and evicts by recency and
/// frequency. Absences live apart from records, so a flood of made-up ids
/// can fill only its own map and never pushes real keys out; imported keys
/// (cached under a hash of their token) live apart too, so that dropping
/// one by id scans only them.
pub struct KeyCache {
    native: quick_cache::sync::Cache<[u8; ID_LEN], Arc<CachedKey>>,
    foreign: quick_cache::sync::Cache<[u8; 32], Arc<CachedKey>>,
    absent: quick_cache::sync::Cache<CacheKey, Instant>,
    epoch: AtomicU64,
    lock: Mutex<()>,
    negative_ttl: Duration,
    /// The safety net of a cluster: a record is read again after this long
    /// even if no invalidation arrived (milliseconds).
    max_age_ms: i64,
    /// Records loaded before this (ms since the epoch) are due to be read again.
    stale_before_ms: AtomicI64,
    pending: Arc<Pending>,
    workspaces: Interner,
}

impl KeyCache {
    /// `pending`: where keys counted since their last drain are queued
    /// (drained by the embedder).
    pub fn new(capacity: usize, negative_ttl: Duration, max_age: Duration, pending: Arc<Pending>) -> Self {
        let capacity = capacity.max(16);
        KeyCache {
            pending,
            workspaces: Interner::default(),
            native: quick_cache::sync::Cache::new(capacity),
            foreign: quick_cache::sync::Cache::new((capacity / 8).max(16)),
            absent: quick_cache::sync::Cache::new(capacity),
            epoch: AtomicU64::new(0),
            lock: Mutex::new(()),
            negative_ttl,
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            stale_before_ms: AtomicI64::new(0),
        }
    }

    // Each map keyed by its own kind of key alone: a smaller entry.
    fn record(&self, key: &CacheKey) -> Option<Arc<CachedKey>> {
        match key {
            CacheKey::Native(id) => self.native.get(id),
            CacheKey::Foreign(hmac) => self.foreign.get(hmac),
        }
    }

    fn insert_record(&self, key: CacheKey, record: Arc<CachedKey>) {
        match key {
            CacheKey::Native(id) => self.native.insert(id, record),
            CacheKey::Foreign(hmac) => self.foreign.insert(hmac, record),
        }
    }

    fn remove_record(&self, key: &CacheKey) {
        match key {
            CacheKey::Native(id) => drop(self.native.remove(id)),
            CacheKey::Foreign(hmac) => drop(self.foreign.remove(hmac)),
        }
    }

    /// Looks `key` up at `now_ms` (the caller's clock reading).
    pub fn get(&self, key: &CacheKey, now_ms: i64) -> Lookup {
        let ticket = LoadTicket(self.epoch.load(Ordering::Acquire));
        if let Some(k) = self.record(key) {
            let loaded_ms = k.loaded_ms();
            let age = now_ms.saturating_sub(loaded_ms);
            let fresh = age < self.max_age_ms && loaded_ms >= self.stale_before_ms.load(Ordering::Relaxed);
            return match fresh {
                false => Lookup::Miss(ticket, Some(k)),
                true if age >= self.max_age_ms / 2 && k.claim_refresh() => Lookup::Refresh(k, ticket),
                true => Lookup::Hit(k),
            };
        }
        match self.absent.get(key) {
            Some(at) if at.elapsed() < self.negative_ttl => Lookup::KnownAbsent,
            _ => Lookup::Miss(ticket, None),
        }
    }

    /// The record of a key read from the store at `now_ms`, for caching.
    pub fn entry(&self, key: &ApiKey, now_ms: i64) -> Arc<CachedKey> {
        let record = KeyRecord::new(key, &self.workspaces);
        Arc::new(CachedKey { record, usage: UsageCell::default(), loaded: AtomicI64::new(now_ms) })
    }

    /// Stores what a load found, unless a mutation happened since the load began.
    pub fn finish_load(&self, key: CacheKey, ticket: LoadTicket, found: Option<Arc<CachedKey>>) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        match found {
            Some(k) => self.set_present(key, k),
            None => self.set_absent(key),
        }
    }

    // Orders chosen so a concurrent `get` sees the new state or a miss
    // (which reads the store, already written), never the old state.
    fn set_present(&self, key: CacheKey, record: Arc<CachedKey>) {
        self.insert_record(key, record);
        self.absent.remove(&key);
    }

    fn set_absent(&self, key: CacheKey) {
        self.remove_record(&key);
        self.absent.insert(key, Instant::now());
    }

    /// Forgets what is held for key `id` (changed elsewhere): the next
    /// verification reads the store.
    pub fn invalidate(&self, id: &str) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(token_id) = token_id_of_key_id(id) {
            let ck = CacheKey::native(token_id);
            self.remove_record(&ck);
            self.absent.remove(&ck);
        }
        self.forget_foreign(id);
    }

    /// Distrusts everything held (the invalidation channel lost notices):
    /// each record is read again on its next use, and kept only to answer
    /// while the store cannot; remembered absences are forgotten.
    /// `now_ms`: the time of the resynchronisation.
    pub fn distrust_all(&self, now_ms: i64) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.stale_before_ms.store(now_ms + 1, Ordering::Relaxed);
        self.absent.clear();
    }

    /// Records a key as it stands in the store after a write at `now_ms`.
    pub fn put(&self, key: &ApiKey, now_ms: i64) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match CacheKey::of_native_key(key) {
            Some(ck) => self.set_present(ck, self.entry(key, now_ms)),
            None => self.forget_foreign(&key.id),
        }
    }

    /// Records that a key no longer exists.
    pub fn remove(&self, key: &ApiKey) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match CacheKey::of_native_key(key) {
            Some(ck) => self.set_absent(ck),
            None => self.forget_foreign(&key.id),
        }
    }

    /// Imported keys are cached under a hash of their token, which their
    /// record cannot give back: drop them by id (rare: imports are few).
    fn forget_foreign(&self, id: &str) {
        self.foreign.retain(|_, v| &*v.id != id);
        // A negative entry for the token may exist from before an import.
        self.absent.retain(|k, _| !matches!(k, CacheKey::Foreign(_)));
    }

    /// Counts one verification of `key` (see [`Pending::count`]).
    pub fn count(&self, key: &Arc<CachedKey>, code: keyward_core::verify::VerifyCode, authenticated: bool, at_ms: i64) {
        self.pending.count(key, code, authenticated, at_ms);
    }

    /// Counts `n` verifications of `key` (see [`Pending::count_many`]).
    pub fn count_many(
        &self,
        key: &Arc<CachedKey>,
        code: keyward_core::verify::VerifyCode,
        authenticated: bool,
        at_ms: i64,
        n: u32,
    ) {
        self.pending.count_many(key, code, authenticated, at_ms, n);
    }

    /// Absences remembered (bounded like the records).
    pub fn absent_len(&self) -> usize {
        self.absent.len()
    }

    /// Key records held.
    pub fn len(&self) -> usize {
        self.native.len() + self.foreign.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
