//! The database goes away under load and comes back: a throwaway PostgreSQL
//! cluster of the test's own (initdb + pg_ctl on a free port, never the
//! shared server) is stopped while `keyward serve` answers verifications,
//! then started again. Cached keys keep verifying, an unknown key is never
//! allowed, readiness and writes answer 503 meanwhile and recover by
//! themselves. Skips without PostgreSQL's server binaries (fails under
//! CI=true instead).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

use support::call;

/// A throwaway cluster of the test's own, stopped when dropped.
struct Cluster {
    inner: keyward_store::testing::run::Cluster,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn create(bin: std::path::PathBuf) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let inner = keyward_store::testing::run::Cluster::create(bin, dir.path().join("pg")).unwrap();
        Cluster { inner, _dir: dir }
    }

    fn pg_ctl(&self, args: &[&str]) {
        self.inner.pg_ctl(args).unwrap();
    }

    fn url(&self) -> String {
        self.inner.url()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.inner.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

async fn verify(http: &reqwest::Client, base: &str, admin: &str, key: &str) -> (u16, Value) {
    call(http, reqwest::Method::POST, format!("{base}/v1/keys/verify"), admin, &json!({"key": key})).await
}

async fn create(http: &reqwest::Client, base: &str, admin: &str, name: &str) -> (u16, Value) {
    call(http, reqwest::Method::POST, format!("{base}/v1/keys"), admin, &json!({"name": name})).await
}

async fn ready(http: &reqwest::Client, base: &str) -> u16 {
    http.get(format!("{base}/readyz")).send().await.unwrap().status().as_u16()
}

/// Polls `check` until it holds; panics after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_database_outage() {
    use keyward_store::testing::run::{Piece, ran, skipped};
    const TEST: &str = "a_node_rides_out_a_database_outage";
    let Some(bin) = keyward_store::testing::run::Cluster::installed() else {
        skipped(Piece::Postgres, TEST, "PostgreSQL's initdb and pg_ctl are not installed");
        return;
    };
    ran(Piece::Postgres, TEST, "a cluster of its own");
    let cluster = Cluster::create(bin);
    cluster.pg_ctl(&["start"]);
    let data = tempfile::tempdir().unwrap();
    let url = cluster.url();
    let node =
        support::serve(&["--log-level", "error", "--database-url", &url, "--data-dir", data.path().to_str().unwrap()]);
    let (base, admin) = (node.base.clone(), node.admin.clone().expect("bootstrapped"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    let mut cached = Vec::new();
    for i in 0..20 {
        let (status, body) = create(&http, &base, &admin, &format!("k{i}")).await;
        assert_eq!(status, 201, "{body}");
        let secret = body["secret"].as_str().unwrap().to_owned();
        assert_eq!(verify(&http, &base, &admin, &secret).await.1["code"], "VALID");
        cached.push(secret);
    }

    // A verify load over cached keys and made-up ones, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (checked, unknown_refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (http, base, admin, cached) = (http.clone(), base.clone(), admin.clone(), cached.clone());
        let (stop, checked, unknown_refused) = (stop.clone(), checked.clone(), unknown_refused.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, v) = verify(&http, &base, &admin, &cached[i % cached.len()]).await;
                assert_eq!((status, v["code"].as_str()), (200, Some("VALID")), "a cached key kept verifying: {v}");
                let made_up = keyward_core::token::generate("kw", keyward_core::token::Environment::Live);
                let (status, v) = verify(&http, &base, &admin, made_up.expose()).await;
                assert_ne!(v["valid"], true, "an unknown key was allowed");
                assert!(status == 503 || v["code"] == "NOT_FOUND", "unknown key: {status} {v}");
                unknown_refused.fetch_add(1, Ordering::Relaxed);
                checked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    cluster.pg_ctl(&["-m", "immediate", "stop"]);
    within(Duration::from_secs(15), "readiness 503", || async { ready(&http, &base).await == 503 }).await;
    let (status, body) = create(&http, &base, &admin, "during outage").await;
    assert_eq!((status, body["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
    let during = checked.load(Ordering::Relaxed);
    within(Duration::from_secs(60), "verifications during the outage", || {
        let checked = checked.clone();
        async move { checked.load(Ordering::Relaxed) >= during + 5 }
    })
    .await;

    cluster.pg_ctl(&["start"]);
    within(Duration::from_secs(30), "readiness 200", || async { ready(&http, &base).await == 200 }).await;
    within(Duration::from_secs(30), "writes recovering", || async {
        create(&http, &base, &admin, &format!("after {}", keyward_core::ids::random_base62(6))).await.0 == 201
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the verify load saw only correct answers");
    // The refused write changed nothing.
    let url = format!("{base}/v1/keys?name=during%20outage");
    let (_, list) = call(&http, reqwest::Method::GET, url, &admin, &Value::Null).await;
    assert_eq!(list["data"], json!([]));
    println!(
        "outage: {} verification pairs (cached + unknown), {} unknown refused, none allowed",
        checked.load(Ordering::Relaxed),
        unknown_refused.load(Ordering::Relaxed)
    );
}
