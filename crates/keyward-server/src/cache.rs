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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::key::ApiKey;
use keyward_core::token::{ID_LEN, token_id_of_key_id};

use crate::usage::{UsageCell, UsageRecorder};

/// A key as held in memory: its record and its usage counters.
#[derive(Debug)]
pub struct CachedKey {
    pub key: ApiKey,
    pub usage: Arc<UsageCell>,
}

impl std::ops::Deref for CachedKey {
    type Target = ApiKey;
    fn deref(&self) -> &ApiKey {
        &self.key
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
    KnownAbsent,
    Miss(LoadTicket),
}

/// Proof of the epoch a load started in.
pub struct LoadTicket(u64);

/// Both maps are bounded (`capacity` entries each) and evict by recency and
/// frequency. Absences live apart from records, so a flood of made-up ids
/// can fill only its own map and never pushes real keys out.
pub struct KeyCache {
    present: quick_cache::sync::Cache<CacheKey, Arc<CachedKey>>,
    absent: quick_cache::sync::Cache<CacheKey, Instant>,
    epoch: AtomicU64,
    lock: Mutex<()>,
    negative_ttl: Duration,
    usage: Arc<UsageRecorder>,
}

impl KeyCache {
    pub fn new(capacity: usize, negative_ttl: Duration, usage: Arc<UsageRecorder>) -> Self {
        KeyCache {
            usage,
            present: quick_cache::sync::Cache::new(capacity.max(16)),
            absent: quick_cache::sync::Cache::new(capacity.max(16)),
            epoch: AtomicU64::new(0),
            lock: Mutex::new(()),
            negative_ttl,
        }
    }

    pub fn get(&self, key: &CacheKey) -> Lookup {
        if let Some(k) = self.present.get(key) {
            return Lookup::Hit(k);
        }
        match self.absent.get(key) {
            Some(at) if at.elapsed() < self.negative_ttl => Lookup::KnownAbsent,
            _ => Lookup::Miss(LoadTicket(self.epoch.load(Ordering::Acquire))),
        }
    }

    /// Wraps a record read from the store for caching.
    pub fn entry(&self, key: ApiKey) -> Arc<CachedKey> {
        let usage = self.usage.cell(&key.id);
        Arc::new(CachedKey { key, usage })
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
        self.present.insert(key, record);
        self.absent.remove(&key);
    }

    fn set_absent(&self, key: CacheKey) {
        self.present.remove(&key);
        self.absent.insert(key, Instant::now());
    }

    /// Records a key as it now stands in the store (after a write).
    pub fn put(&self, key: &ApiKey) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match CacheKey::of_native_key(key) {
            Some(ck) => self.set_present(ck, self.entry(key.clone())),
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
        self.present.retain(|k, v| !(matches!(k, CacheKey::Foreign(_)) && &*v.id == id));
        // A negative entry for the token may exist from before an import.
        self.absent.retain(|k, _| !matches!(k, CacheKey::Foreign(_)));
    }

    /// Absences remembered (bounded like the records).
    pub fn absent_len(&self) -> usize {
        self.absent.len()
    }

    /// Key records held.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}
