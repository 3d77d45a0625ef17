//! Redis goes away and comes back: a redis-server of the test's own (on a
//! free port, never the shared one) is stopped while `keyward serve`
//! verifies keys with rate limits, then started again. Meanwhile the node
//! limits on its own, answers every verification at once and says so in
//! `/readyz`; then it shares its limits through Redis again by itself.
//! Skips without `redis-server` (fails under CI=true instead).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_store::testing::run::{Piece, ran, skipped};
use serde_json::{Value, json};

mod support;

use support::{call, serve};

const TEST: &str = "rate_limits_survive_a_redis_outage";

/// A redis-server of the test's own; killed when dropped.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(port: u16) -> Option<Redis> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            ran(Piece::Redis, TEST, "a redis-server of its own");
            Some(Redis(child))
        }
        Err(e) => {
            skipped(Piece::Redis, TEST, &format!("redis-server cannot run: {e}"));
            None
        }
    }
}

fn wait_for_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_survive_a_redis_outage() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(redis) = start_redis(port) else { return };
    wait_for_port(port);
    let data = tempfile::tempdir().unwrap();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let node = serve(&["--data-dir", data.path().to_str().unwrap(), "--redis-url", &redis_url, "--log-level", "warn"]);
    let admin = node.admin.clone().unwrap();
    let http = reqwest::Client::new();
    let limits = json!([{"name": "requests", "limit": 3, "durationMs": 60_000, "autoApply": true}]);
    let body = json!({"name": "limited", "ratelimits": limits});
    let (_, key) = call(&http, reqwest::Method::POST, format!("{}/v1/keys", node.base), &admin, &body).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let verify = || async {
        let started = Instant::now();
        let (status, v) = call(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/keys/verify", node.base),
            &admin,
            &json!({"key": secret}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(started.elapsed() < Duration::from_secs(2), "answered at once: {:?}", started.elapsed());
        v["code"].as_str().unwrap().to_owned()
    };
    let readiness = || async {
        let (status, r) = call(&http, reqwest::Method::GET, format!("{}/readyz", node.base), "", &Value::Null).await;
        assert_eq!(status, 200, "{r}");
        (r["ratelimits"].as_str().unwrap_or_default().to_owned(), r["redis"].as_str().unwrap_or_default().to_owned())
    };
    let codes = |n| async move {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(verify().await);
        }
        out
    };

    assert_eq!(readiness().await, ("redis".to_owned(), "reachable".to_owned()));
    assert_eq!(codes(4).await, ["VALID", "VALID", "VALID", "RATE_LIMITED"]);

    // Redis goes away: the node limits on its own (a fresh count), at once.
    drop(redis);
    let local = codes(4).await;
    assert_eq!(local, ["VALID", "VALID", "VALID", "RATE_LIMITED"], "counted on the node meanwhile");
    assert_eq!(readiness().await, ("local".to_owned(), "unreachable".to_owned()));

    // Redis is back: shared again without a restart.
    let _redis = start_redis(port).unwrap();
    wait_for_port(port);
    let started = Instant::now();
    while readiness().await.0 != "redis" {
        assert!(started.elapsed() < Duration::from_secs(10), "the node did not go back to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(codes(4).await, ["VALID", "VALID", "VALID", "RATE_LIMITED"], "counted in the new Redis");
}
