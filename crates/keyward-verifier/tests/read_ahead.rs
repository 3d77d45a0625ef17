//! A record in use is read again before its maximum age runs out: the
//! first use past half that age claims the read (and answers from the
//! record meanwhile), so a key verified steadily never waits for its
//! periodic read; one nobody read ahead is due at its maximum age.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_verifier::cache::{CacheKey, KeyCache, Lookup};

const MAX_AGE_MS: i64 = 60_000;

fn key() -> ApiKey {
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let ws = Workspace::new("w", now).unwrap();
    let secret = token::generate("kw", Environment::Live);
    let parsed = token::parse(secret.expose()).unwrap();
    let draft = KeyDraft { name: Some("steady".into()), scopes: vec!["read".into()], ..Default::default() };
    draft.validate(&ws, now).unwrap().into_key(
        parsed.key_id(),
        &ws.id,
        token::mask(secret.expose()),
        SecretHasher::new(&[5u8; 32]).unwrap().native(&parsed),
        now,
    )
}

/// What `get` answers, in short: the kind and the record's version.
fn look(cache: &KeyCache, ck: &CacheKey, now_ms: i64) -> (&'static str, Option<i64>) {
    match cache.get(ck, now_ms) {
        Lookup::Hit(k) => ("hit", Some(k.version)),
        Lookup::Refresh(k, _) => ("refresh", Some(k.version)),
        Lookup::KnownAbsent => ("absent", None),
        Lookup::Miss(_, stale) => ("miss", stale.map(|k| k.version)),
    }
}

#[test]
fn a_record_in_use_is_read_again_ahead_of_its_maximum_age() {
    let key = key();
    let cache = KeyCache::new(16, Duration::from_secs(60), Duration::from_millis(MAX_AGE_MS as u64), Arc::default());
    let ck = CacheKey::native(token::token_id_of_key_id(&key.id).unwrap());
    cache.put(&key, 0);
    let v1 = key.version;
    assert_eq!(look(&cache, &ck, MAX_AGE_MS / 2 - 1), ("hit", Some(v1)));

    // The first use past half the age claims the read; later ones do not.
    let Lookup::Refresh(record, ticket) = cache.get(&ck, MAX_AGE_MS / 2) else { panic!("no read ahead") };
    assert_eq!(record.id, key.id);
    assert_eq!(look(&cache, &ck, MAX_AGE_MS / 2 + 1), ("hit", Some(v1)));
    assert_eq!(look(&cache, &ck, MAX_AGE_MS - 1), ("hit", Some(v1)));
    // Until the read lands the bound holds: at the maximum age the record
    // is due (it answers only while the store cannot).
    assert_eq!(look(&cache, &ck, MAX_AGE_MS), ("miss", Some(v1)));

    // The read lands, as read when it began: fresh for a maximum age from then.
    let mut changed = key.clone();
    changed.version += 1;
    cache.finish_load(ck, ticket, Some(cache.entry(&changed, MAX_AGE_MS / 2)));
    assert_eq!(look(&cache, &ck, MAX_AGE_MS - 1), ("hit", Some(v1 + 1)));
    let Lookup::Refresh(_, late) = cache.get(&ck, MAX_AGE_MS) else { panic!("no second read ahead") };
    assert_eq!(look(&cache, &ck, MAX_AGE_MS / 2 * 3), ("miss", Some(v1 + 1)));

    // A read ahead that raced with a change on this node is dropped: the
    // change's record stays.
    let mut newer = key.clone();
    newer.version += 5;
    cache.put(&newer, MAX_AGE_MS);
    cache.finish_load(ck, late, Some(cache.entry(&changed, MAX_AGE_MS)));
    assert_eq!(look(&cache, &ck, MAX_AGE_MS + 1), ("hit", Some(v1 + 5)));

    // A key deleted elsewhere, read ahead, is known absent.
    let Lookup::Refresh(_, gone) = cache.get(&ck, MAX_AGE_MS / 2 * 3) else { panic!("no read ahead") };
    cache.finish_load(ck, gone, None);
    assert_eq!(look(&cache, &ck, MAX_AGE_MS / 2 * 3 + 1), ("absent", None));
}
