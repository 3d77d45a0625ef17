//! Allocations per request on the hot paths, counted through the whole app
//! as served (`app::App`; no socket: `tower::ServiceExt::oneshot`) under a
//! counting global allocator. A change that adds allocations per
//! verification fails here, however small its cost looks in a benchmark:
//! small costs add up.
//!
//! The budgets are the figures reached, plus a little; each test prints
//! its figure. Lower a budget when a change lowers the figure.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_server::app::{self, AppState};
use keyward_server::principal::Principal;
use keyward_server::{ServerConfig, Services};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A cached `POST /v1/keys/verify`: the caller's key and the presented key
/// both from memory, the answer's JSON.
const VERIFY_BUDGET: usize = 12;
/// A cached `GET /v1/authorize` on the forward-auth listener.
const AUTHORIZE_BUDGET: usize = 14;
/// A verification whose key is read from the store (SQLite).
const MISS_BUDGET: usize = 105;

const ROUNDS: usize = 200;

/// The counter is global: one measurement at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` alone, on a single-threaded runtime.
fn alone<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test());
}

struct Fixture {
    _dir: tempfile::TempDir,
    services: Services,
    state: AppState,
    caller: String,
    keys: Vec<String>,
}

async fn fixture(keys: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("alloc.db").display());
    let store = keyward_store::open(&url).await.unwrap();
    let config = ServerConfig::default();
    let services = Services::new(store, SecretHasher::new(&[5u8; 32]).unwrap(), &config).await.unwrap();
    let created = services.workspaces.create_with_admin_key("alloc").await.unwrap();
    let system = Principal::system(&created.workspace.id);
    let mut made = Vec::new();
    for i in 0..keys {
        let draft = KeyDraft {
            name: Some(format!("key {i}")),
            scopes: vec!["campaigns:read".into(), "read".into()],
            ..Default::default()
        };
        let (_, secret) = services.keys.create(&system, draft).await.unwrap();
        made.push(secret.expose().to_owned());
    }
    let state = AppState::new(&services, &config);
    Fixture { _dir: dir, services, state, caller: created.secret.expose().to_owned(), keys: made }
}

fn verify_request(caller: &str, key: &str) -> Request<Body> {
    let body = format!(r#"{{"key":"{key}","permission":"campaigns:read"}}"#);
    let mut req = Request::post("/v1/keys/verify")
        .header("authorization", format!("Bearer {caller}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

fn authorize_request(key: &str) -> Request<Body> {
    let mut req = Request::get("/v1/authorize")
        .header("authorization", format!("Bearer {key}"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/campaigns/42")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

/// Allocations per request of `requests` sent through `router`; building
/// the requests is not counted.
async fn per_request(router: &app::App, requests: Vec<Request<Body>>, expect: StatusCode) -> usize {
    let n = requests.len();
    let region = Region::new(GLOBAL);
    for req in requests {
        let response = router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert_eq!(status, expect, "{}", String::from_utf8_lossy(&body));
        drop(body);
    }
    region.change().allocations / n
}

#[test]
fn cached_verify_stays_within_its_allocation_budget() {
    alone(|| async {
        let f = fixture(1).await;
        let router = app::router(f.state.clone(), 1 << 20);
        // Warm: both keys cached, lazy statics made.
        per_request(&router, (0..10).map(|_| verify_request(&f.caller, &f.keys[0])).collect(), StatusCode::OK).await;
        let requests = (0..ROUNDS).map(|_| verify_request(&f.caller, &f.keys[0])).collect();
        let allocations = per_request(&router, requests, StatusCode::OK).await;
        println!("cached verify: {allocations} allocations per request (budget {VERIFY_BUDGET})");
        assert!(allocations <= VERIFY_BUDGET, "cached verify allocates {allocations} times, budget {VERIFY_BUDGET}");
    });
}

#[test]
fn cached_forward_auth_stays_within_its_allocation_budget() {
    alone(|| async {
        let f = fixture(1).await;
        let router = app::forward_auth_router(&f.state, 1 << 20);
        per_request(&router, (0..10).map(|_| authorize_request(&f.keys[0])).collect(), StatusCode::OK).await;
        let allocations =
            per_request(&router, (0..ROUNDS).map(|_| authorize_request(&f.keys[0])).collect(), StatusCode::OK).await;
        println!("cached forward-auth: {allocations} allocations per request (budget {AUTHORIZE_BUDGET})");
        assert!(
            allocations <= AUTHORIZE_BUDGET,
            "forward-auth allocates {allocations} times, budget {AUTHORIZE_BUDGET}"
        );
    });
}

#[test]
fn cache_miss_stays_within_its_allocation_budget() {
    alone(|| async {
        let f = fixture(60).await;
        let router = app::router(f.state.clone(), 1 << 20);
        per_request(&router, vec![verify_request(&f.caller, &f.keys[0])], StatusCode::OK).await;
        // Background work (the usage flush, the store's worker thread) adds
        // allocations to whichever batch it falls in, and only adds: the
        // figure is the least of three batches.
        let mut least = usize::MAX;
        for _ in 0..3 {
            // Every record is due to be read again; the caller's key is read
            // once more in the warm-up.
            f.services.verifier.cache().distrust_all(f.services.verifier.clock().now_ms());
            per_request(&router, vec![verify_request(&f.caller, &f.keys[0])], StatusCode::OK).await;
            let requests = f.keys[1..].iter().map(|k| verify_request(&f.caller, k)).collect();
            least = least.min(per_request(&router, requests, StatusCode::OK).await);
        }
        println!("cache miss: {least} allocations per request (budget {MISS_BUDGET})");
        assert!(least <= MISS_BUDGET, "a cache miss allocates {least} times, budget {MISS_BUDGET}");
    });
}
