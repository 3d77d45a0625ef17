//! The heap a cached key costs: its record (usage cell, id and name inline)
//! and its share of the cache's map. Measured with a counting allocator
//! over many keys shaped like bench/'s (a name, two scopes, no metadata);
//! bench/run.py reports the same cost as RSS over HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_verifier::cache::{CacheKey, KeyCache, Lookup};
use keyward_verifier::usage::Pending;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes of heap per cached key, at most (293 measured).
const BUDGET: usize = 300;
const KEYS: usize = 100_000;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn keys(n: usize) -> Vec<ApiKey> {
    let hasher = SecretHasher::new(&[5u8; 32]).unwrap();
    let ws = Workspace::new("w", now()).unwrap();
    (0..n)
        .map(|i| {
            let draft = KeyDraft {
                name: Some(format!("bench {i}")),
                scopes: vec!["read".into(), "campaigns:write".into()],
                ..Default::default()
            };
            let secret = token::generate("kw", Environment::Live);
            let parsed = token::parse(secret.expose()).unwrap();
            draft.validate(&ws, now()).unwrap().into_key(
                parsed.key_id(),
                &ws.id,
                token::mask(secret.expose()),
                hasher.native(&parsed),
                now(),
            )
        })
        .collect()
}

#[test]
fn a_cached_key_stays_within_its_memory_budget() {
    let keys = keys(KEYS);
    let pending = Arc::new(Pending::default());
    let region = Region::new(GLOBAL);
    let cache = KeyCache::new(2 * KEYS, Duration::from_secs(60), Duration::from_secs(3600), pending.clone());
    for key in &keys {
        cache.put(key, 0);
    }
    let stats = region.change();
    let per_key = (stats.bytes_allocated - stats.bytes_deallocated) / KEYS;
    println!("a cached key: {per_key} bytes of heap (budget {BUDGET})");
    assert_eq!(cache.len(), KEYS);
    let id = token::token_id_of_key_id(&keys[7].id).unwrap();
    assert!(matches!(cache.get(&CacheKey::native(id), 0), Lookup::Hit(k) if k.id == keys[7].id));
    assert!(per_key <= BUDGET, "a cached key costs {per_key} bytes of heap, over the budget of {BUDGET}");
}
