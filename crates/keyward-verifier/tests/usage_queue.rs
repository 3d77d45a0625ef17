//! A key's uses are counted in its cache entry, and the entry is queued
//! for the drain once per drain: the drain visits the keys that were used,
//! and a count made while a drain runs is never lost.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::token::{self, Environment};
use keyward_core::verify::VerifyCode;
use keyward_core::workspace::Workspace;
use keyward_verifier::cache::{CacheKey, CachedKey, KeyCache, Lookup};
use keyward_verifier::usage::Pending;

const AT_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn key(name: &str) -> ApiKey {
    let now = DateTime::<Utc>::from_timestamp_millis(AT_MS).unwrap();
    let hasher = SecretHasher::new(&[5u8; 32]).unwrap();
    let ws = Workspace::new("w", now).unwrap();
    let draft = KeyDraft { name: Some(name.into()), ..Default::default() };
    let secret = token::generate("kw", Environment::Live);
    let parsed = token::parse(secret.expose()).unwrap();
    draft.validate(&ws, now).unwrap().into_key(
        parsed.key_id(),
        &ws.id,
        token::mask(secret.expose()),
        hasher.native(&parsed),
        now,
    )
}

fn held(cache: &KeyCache, key: &ApiKey) -> Arc<CachedKey> {
    let id = token::token_id_of_key_id(&key.id).unwrap();
    match cache.get(&CacheKey::native(id), AT_MS) {
        Lookup::Hit(k) => k,
        _ => panic!("the key is held"),
    }
}

#[test]
fn a_used_key_is_queued_once_per_drain_and_keeps_every_count() {
    let pending = Arc::new(Pending::default());
    let cache = KeyCache::new(100, Duration::from_secs(60), Duration::from_secs(3600), pending.clone());
    let (used, idle) = (key("used"), key("idle"));
    cache.put(&used, AT_MS);
    cache.put(&idle, AT_MS);
    let k = held(&cache, &used);

    assert!(pending.is_empty(), "nothing is queued before a use");
    for _ in 0..3 {
        cache.count(&k, VerifyCode::Valid, true, AT_MS);
    }
    cache.count(&k, VerifyCode::InsufficientPermissions, true, AT_MS + 5);
    assert_eq!(pending.len(), 1, "a key is queued once, however often it is used");

    let drained = pending.take(10);
    assert_eq!(drained.len(), 1);
    assert_eq!(drained[0].id, used.id, "the idle key is not visited");
    let cell = &drained[0].usage;
    cell.clean();
    let slot = ((AT_MS / 3_600_000) & 1) as usize;
    let counts = cell.drain(slot);
    assert!(counts.contains(&("VALID", 3)), "{counts:?}");
    assert!(counts.contains(&("INSUFFICIENT_PERMISSIONS", 1)), "{counts:?}");
    assert_eq!(cell.take_last_used(), AT_MS + 5);

    // A use after the drain began queues the key again.
    cache.count(&k, VerifyCode::Valid, true, AT_MS + 10);
    assert_eq!(pending.len(), 1);
    let again = pending.take(10);
    again[0].usage.clean();
    assert_eq!(again[0].usage.drain(slot), vec![("VALID", 1)]);

    // Counts put back after a failed write: queued again, once.
    pending.requeue(&k);
    pending.requeue(&k);
    assert_eq!(pending.len(), 1);
}
