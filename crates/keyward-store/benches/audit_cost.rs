//! Key creations per second through the write seam, with the audit entry
//! that every creation now commits with it and without, in the same run
//! (alternating rounds), on SQLite and, when `KEYWARD_TEST_POSTGRES_URL` is
//! set, PostgreSQL. 16 concurrent creators share group commits, as under
//! load. `cargo bench -p keyward-store --bench audit_cost`.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use keyward_core::audit::{Actor, AuditKey, Event, Outcome, Target};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_store::testing::{Backend, TestDb};
use keyward_store::{AuditWrite, Change, Store, Write};

const CREATORS: usize = 16;
const PER_ROUND: usize = 1600;
const ROUNDS: usize = 5;

fn key(ws: &Workspace, hasher: &SecretHasher, n: usize) -> ApiKey {
    let draft =
        KeyDraft { name: Some(format!("bench {n} {}", keyward_core::ids::random_base62(6))), ..Default::default() };
    let valid = draft.validate(ws, Utc::now()).unwrap();
    let secret = token::generate(&ws.token_prefix, Environment::Live);
    let parsed = token::parse(secret.expose()).unwrap();
    valid.into_key(parsed.key_id(), &ws.id, token::mask(secret.expose()), hasher.native(&parsed), Utc::now())
}

fn entry(key: &ApiKey, audit_key: &Arc<AuditKey>) -> Write {
    Write::Audit(AuditWrite {
        event: Event {
            workspace_id: key.workspace_id.clone(),
            at: Utc::now(),
            actor: Actor {
                kind: keyward_core::audit::ActorKind::Member,
                id: Some("mem_bench".into()),
                name: Some("bench@example.com".into()),
            },
            action: "key.created".into(),
            target: Target::new("api_key", key.id.to_string(), Some(&key.name)),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("bench".into()),
            outcome: Outcome::Success,
            changes: serde_json::json!({"name": key.name, "scopes": ["read"], "expiresAt": null}).to_string(),
        },
        key: audit_key.clone(),
    })
}

/// Creations per second of one round.
async fn round(store: &Arc<dyn Store>, ws: &Workspace, audited: bool) -> f64 {
    let hasher = Arc::new(SecretHasher::new(&[7u8; 32]).unwrap());
    let audit_key = Arc::new(AuditKey::new([9; 32]));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CREATORS {
        let (store, ws, hasher, audit_key) = (store.clone(), ws.clone(), hasher.clone(), audit_key.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_ROUND / CREATORS {
                let k = key(&ws, &hasher, c * PER_ROUND + n);
                let mut change = Change::of(Write::InsertKey { key: k.clone(), max_live_keys: None });
                if audited {
                    change.push(entry(&k, &audit_key));
                }
                store.commit(change).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    PER_ROUND as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn measure(backend: Backend, name: &str) {
    let Some(db) = TestDb::new(backend, "audit_cost").await else { return };
    let store = keyward_store::open(&db.url).await.unwrap();
    let ws = Workspace::new("bench", Utc::now()).unwrap();
    store.commit(Change::of(Write::InsertWorkspace(ws.clone()))).await.unwrap();
    round(&store, &ws, true).await; // warm-up
    let (mut with, mut without) = (Vec::new(), Vec::new());
    // ABBA order, so neither side always runs on the larger table.
    for r in 0..ROUNDS {
        if r % 2 == 0 {
            without.push(round(&store, &ws, false).await);
            with.push(round(&store, &ws, true).await);
        } else {
            with.push(round(&store, &ws, true).await);
            without.push(round(&store, &ws, false).await);
        }
    }
    let (w, wo) = (median(with), median(without));
    println!(
        "{name}: key creations/s, {CREATORS} concurrent, median of {ROUNDS} rounds of {PER_ROUND}: \
         without audit entry {wo:.0}, with {w:.0} ({:+.1} %)",
        (w / wo - 1.0) * 100.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        measure(Backend::Sqlite, "sqlite").await;
        if std::env::var(keyward_store::testing::POSTGRES_URL_VAR).is_ok_and(|v| !v.is_empty()) {
            measure(Backend::Postgres, "postgres").await;
        }
    });
}
