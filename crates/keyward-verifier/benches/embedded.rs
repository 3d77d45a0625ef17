//! In-process decisions of the embedded verifier for a key of its copy
//! (10,000 keys held): token parse, lookup, HMAC, decision and the use
//! counted. Run: `cargo bench -p keyward-verifier --features client --bench embedded`.

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_verifier::embedded::{Check, Options, Path, Permission, Verifier};
use keyward_verifier::replica::{Event, ReplicaWorkspace};

fn bench(c: &mut Criterion) {
    let hasher = SecretHasher::new(&[9u8; 32]).unwrap();
    let ws = Workspace::new("bench", Utc::now()).unwrap();
    let replica = hasher.replica(&ws.id);
    let mut events = vec![
        Event::Snapshot { seq: 1 },
        Event::Workspace { seq: 1, workspace: ReplicaWorkspace::new(&ws.id, &hasher.replica_key(&ws.id), &[], &[]) },
    ];
    let mut secrets = Vec::new();
    for i in 0..10_000 {
        let secret = token::generate("kw", Environment::Live).expose().to_owned();
        let parsed = token::parse(&secret).unwrap();
        let draft = KeyDraft {
            name: Some(format!("bench {i}")),
            scopes: vec!["campaigns:read".into(), "write".into()],
            ..Default::default()
        };
        let mut key = draft.validate(&ws, Utc::now()).unwrap().into_key(
            parsed.key_id(),
            &ws.id,
            token::mask(&secret),
            hasher.native(&parsed),
            Utc::now(),
        );
        key.replica = Some(replica.native(&parsed).digest);
        events.push(Event::key(1, &key.id, &key.workspace_id, Some(&key)));
        secrets.push(secret);
    }
    events.push(Event::SnapshotEnd { seq: 1 });
    // Fail-closed, as by default (so each decision also checks staleness);
    // the bound is long enough that no heartbeat is missed here.
    let options = Options { max_staleness: std::time::Duration::from_secs(3600), ..Options::default() };
    let verifier = Verifier::from_events(events, options).unwrap();
    let permission = Permission::parse("campaigns:read").unwrap();
    let secret = &secrets[4242];
    let check = Check { key: secret, permission: Some(&permission), method: Some("GET"), ..Check::default() };
    assert_eq!(verifier.verify_local(&check).unwrap().path, Path::Local);

    let mut group = c.benchmark_group("embedded");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_local_cached_key", |b| {
        b.iter(|| verifier.verify_local(black_box(&check)).unwrap().decision.is_valid())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
