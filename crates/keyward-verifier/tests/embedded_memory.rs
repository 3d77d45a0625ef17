//! The heap the embedded verifier's local copy costs per key, at 1,000,000
//! keys shaped like bench/'s (a name, two scopes, no metadata), and that a
//! key of the copy verifies in-process.

use chrono::{DateTime, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_core::token::{self, Environment};
use keyward_core::verify::VerifyCode;
use keyward_core::workspace::Workspace;
use keyward_verifier::embedded::{Check, Options, Path, Verifier};
use keyward_verifier::replica::{Event, ReplicaWorkspace};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes of heap per key of the copy, at most.
const BUDGET: usize = 300;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

/// A snapshot of `n` keys, made as the server makes them; and the secret
/// of the first.
fn snapshot(n: usize) -> (impl Iterator<Item = Event>, String) {
    let hasher = SecretHasher::new(&[5u8; 32]).unwrap();
    let now = now();
    let ws = Workspace::new("w", now).unwrap();
    let replica = hasher.replica(&ws.id);
    let workspace = ReplicaWorkspace::new(&ws.id, &hasher.replica_key(&ws.id), &[], &[]);
    let first = token::generate("kw", Environment::Live).expose().to_owned();
    let kept = first.clone();
    let keys = (0..n).map(move |i| {
        let secret = if i == 0 { kept.clone() } else { token::generate("kw", Environment::Live).expose().to_owned() };
        let parsed = token::parse(&secret).unwrap();
        let draft = KeyDraft {
            name: Some(format!("bench {i}")),
            scopes: vec!["read".into(), "campaigns:write".into()],
            ..Default::default()
        };
        let mut key = draft.validate(&ws, now).unwrap().into_key(
            parsed.key_id(),
            &ws.id,
            token::mask(&secret),
            hasher.native(&parsed),
            now,
        );
        key.replica = Some(replica.native(&parsed).digest);
        Event::key(1, &key.id, &key.workspace_id, Some(&key))
    });
    let events = [Event::Snapshot { seq: 1 }, Event::Workspace { seq: 1, workspace }]
        .into_iter()
        .chain(keys)
        .chain([Event::SnapshotEnd { seq: 1 }]);
    (events, first)
}

#[test]
fn a_key_of_the_local_copy_stays_within_its_memory_budget() {
    const KEYS: usize = 1_000_000;
    let (events, _) = snapshot(0);
    let empty = Verifier::from_events(events, Options::default()).unwrap();
    drop(empty);
    let (events, secret) = snapshot(KEYS);
    // The events are made as they are read; what stays is the copy.
    let region = Region::new(GLOBAL);
    let verifier = Verifier::from_events(events, Options { fail_open: true, ..Options::default() }).unwrap();
    let stats = region.change();
    let per_key = (stats.bytes_allocated - stats.bytes_deallocated) / KEYS;
    println!("a key of the embedded verifier's copy: {per_key} bytes of heap at {KEYS} keys (budget {BUDGET})");
    assert_eq!(verifier.len(), KEYS);
    let verdict = verifier.verify_local(&Check { key: &secret, method: Some("GET"), ..Check::default() }).unwrap();
    assert_eq!((verdict.decision.code, verdict.path), (VerifyCode::Valid, Path::Local));
    // A token that is not keyward's format is the server's to judge.
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    assert!(verifier.verify_local(&Check { key: &wrong, ..Check::default() }).is_none());
    assert!(per_key <= BUDGET, "a key of the copy costs {per_key} bytes of heap, over the budget of {BUDGET}");
}
