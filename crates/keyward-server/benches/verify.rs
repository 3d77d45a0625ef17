//! In-process verification cost: token parsing, the pure decision, and the
//! whole service path for a cached key (what a keyward node does per
//! request, minus HTTP). Run: `cargo bench -p keyward-server --bench verify`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_core::scope::Permission;
use keyward_core::token;
use keyward_core::verify::Request;
use keyward_server::{ServerConfig, Services};
use keyward_verifier::decide::decide;

/// Polls a future that completes without waiting (a cache hit) once.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (services, workspace_id, secret) = runtime.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = keyward_store::open(&url).await.unwrap();
        let hasher = SecretHasher::new(&[9u8; 32]).unwrap();
        let services = Services::new(store, hasher, &ServerConfig::default()).await.unwrap();
        let created = services.workspaces.create_with_admin_key("bench").await.unwrap();
        let draft = KeyDraft {
            name: Some("bench".into()),
            scopes: vec!["campaigns:read".into(), "write".into()],
            resources: vec!["site_a".into()],
            ..Default::default()
        };
        let (_, secret) = services
            .keys
            .create(&keyward_server::principal::Principal::system(&created.workspace.id), draft)
            .await
            .unwrap();
        (services, created.workspace.id, secret.expose().to_owned())
    });
    let permission: keyward_core::expr::PermissionExpr = Permission::new("campaigns", "read").into();
    let request =
        Request { permission: Some(&permission), resource: Some("site_a"), method: Some("GET"), ..Request::default() };

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_token", |b| b.iter(|| token::parse(black_box(&secret)).unwrap()));

    let key = runtime.block_on(services.verifier.verify(&secret, &request, Some(&workspace_id))).unwrap().key.unwrap();
    let hasher = services.verifier.hasher().clone();
    let now = chrono::Utc::now();
    group.bench_function("decide", |b| {
        b.iter(|| {
            let parsed = token::parse(black_box(&secret)).unwrap();
            decide(&key, &secret, Some(&parsed), &hasher, &request, || now)
        })
    });

    let _guard = runtime.enter();
    group.bench_function("service_cached_key", |b| {
        b.iter(|| {
            let v = now_or_never(services.verifier.verify(black_box(&secret), &request, Some(&workspace_id))).unwrap();
            assert!(v.decision.is_valid());
            v
        })
    });
    group.bench_function("service_malformed_key", |b| {
        b.iter(|| now_or_never(services.verifier.verify(black_box("kw_live_nonsense"), &request, None)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
