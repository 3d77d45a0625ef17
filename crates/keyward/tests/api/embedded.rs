//! The embedded verifier (`keyward-verifier`, feature `client`) and the
//! replication stream it follows: an axum API protected by `KeywardLayer`
//! against the real server; revocations reach it; the server stopped for
//! 10 s by the verifiers' clock (fail-closed refuses after its bound,
//! fail-open keeps answering, both recover); the stream's bad input and its
//! bound per subscriber. (tests/crash.rs kills the server with SIGKILL.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use keyward_verifier::embedded::{Check, Options, Path, Verifier};
use keyward_verifier::{KeywardLayer, replica::Event};
use serde_json::{Value, json};

use crate::helpers::*;

backend_tests!(
    the_layer_protects_an_api_as_the_server_decides,
    revocations_reach_the_embedded_verifier_within_100_ms,
    a_stopped_server_fails_closed_or_open_and_both_recover,
    the_stream_refuses_bad_input,
    a_subscriber_that_never_reads_is_dropped_and_memory_stays_bounded,
    a_key_made_before_replica_digests_gets_one_at_its_next_verification,
);

async fn a_key_made_before_replica_digests_gets_one_at_its_next_verification() {
    let app = spawn_app().await;
    let ws = app.services.store.get_workspace(&app.workspace_id).await.unwrap().unwrap();
    let draft =
        keyward_core::key::KeyDraft { name: Some("old".into()), scopes: vec!["read".into()], ..Default::default() };
    let (mut key, secret) = app.services.keys.prepare(&ws, draft).unwrap();
    // As a key stored by an earlier version: no replica digest.
    key.replica = None;
    app.services.store.insert_keys_bulk(std::slice::from_ref(&key)).await.unwrap();
    let verifier = Verifier::connect(&app.url(""), &replicator(&app).await.secret).await.unwrap();
    let check = Check { key: secret.expose(), ..Check::default() };
    // Only the server can check it: asked there, which makes its digest.
    let first = verifier.verify(&check).await;
    assert_eq!((first.decision.code.as_str(), first.path), ("VALID", Path::Remote));
    wait_for(&verifier, &check, "VALID").await;
    let stored = app.services.store.find_key(&key.id).await.unwrap().unwrap();
    assert!(stored.replica.is_some());
    assert_eq!(stored.secret, key.secret, "the server's own digest is unchanged");
}

/// A key that may replicate its workspace and ask the server about the
/// keys only the server decides.
async fn replicator(app: &TestApp) -> Key {
    app.create_key(json!({"name": "replicator", "scopes": ["keys:replicate", "keys:verify"]})).await
}

/// The example API of `crates/keyward-verifier/examples/protected_api.rs`,
/// served on a random port.
async fn protected_api(verifier: Verifier) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/admin/{x}", get(|| async { "admin\n" }))
        .layer(KeywardLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn call(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(k) = key {
        request = request.bearer_auth(k);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn the_layer_protects_an_api_as_the_server_decides() {
    let app = spawn_app().await;
    // Route scopes: /admin/** needs admin:read.
    let r = app
        .patch(
            "/v1/workspace",
            json!({"routes": [{"method": "GET", "path": "/admin/**", "permission": "admin:manage"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reader = app.create_key(json!({"scopes": ["read"]})).await;
    let admin = app.create_key(json!({"scopes": ["admin:manage", "read"]})).await;
    let expired = app.create_key(json!({"scopes": ["read"], "expiresAt": app.in_secs(3600)})).await;
    let credited = app.create_key(json!({"scopes": ["read"], "credits": {"remaining": 1}})).await;
    let other = spawn_app().await.create_key(json!({"scopes": ["*"]})).await;
    let revoked = app.create_key(json!({"scopes": ["read"]})).await;
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", revoked.id)).await.status, 200);

    let verifier = Verifier::connect(&app.url(""), &replicator(&app).await.secret).await.unwrap();
    assert!(verifier.len() >= 6, "the snapshot holds the workspace's keys: {}", verifier.len());
    assert!(verifier.last_event_age() < Duration::from_secs(2));
    let api = protected_api(verifier.clone()).await;

    assert_eq!(call(api, "/hello", Some(&reader.secret)).await, (200, "hello\n".into()));
    assert_eq!(call(api, "/admin/x", Some(&admin.secret)).await.0, 200);
    // Each refusal is the server's own decision for the same request.
    for (key, path, status, code) in [
        (Some(reader.secret.as_str()), "/admin/x", 403, "INSUFFICIENT_PERMISSIONS"),
        (Some(revoked.secret.as_str()), "/hello", 401, "REVOKED"),
        (Some(other.secret.as_str()), "/hello", 401, "NOT_FOUND"),
        (Some("kw_live_notakeyatall"), "/hello", 401, "MALFORMED"),
        (None, "/hello", 401, ""),
    ] {
        let (got, body) = call(api, path, key).await;
        assert_eq!(got, status, "{path} with {code}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["error"].is_string() && body["code"].is_string(), "{body}");
        if let Some(key) = key {
            let server = app.verify(key, json!({"method": "GET", "path": path})).await;
            assert_eq!(server["code"], code, "the server decides {path} alike");
            let local =
                verifier.verify(&Check { key, method: Some("GET"), path: Some(path), ..Check::default() }).await;
            assert_eq!(local.decision.code.as_str(), code);
        }
    }
    // Expiry on the key's own time.
    let local = verifier.verify(&Check { key: &expired.secret, ..Check::default() }).await;
    assert_eq!((local.decision.code.as_str(), local.path), ("VALID", Path::Local));
    // Keys with credits are the server's: spent there, exactly.
    let check = Check { key: &credited.secret, ..Check::default() };
    let first = verifier.verify(&check).await;
    assert_eq!((first.decision.code.as_str(), first.path), ("VALID", Path::Remote));
    let second = verifier.verify(&check).await;
    assert_eq!((second.decision.code.as_str(), second.path), ("USAGE_EXCEEDED", Path::Remote));
    assert_eq!(call(api, "/hello", Some(&credited.secret)).await.0, 429);

    // Uses are reported back: the reader's show in its usage.
    eventually(|| async {
        let usage = app.get(&format!("/v1/keys/{}/usage", reader.id)).await.body;
        usage.to_string().contains("VALID")
            && app.get(&format!("/v1/keys/{}", reader.id)).await.body["lastUsed"].is_string()
    })
    .await;
}

async fn revocations_reach_the_embedded_verifier_within_100_ms() {
    let app = spawn_app().await;
    let verifier = Verifier::connect(&app.url(""), &replicator(&app).await.secret).await.unwrap();
    let mut delays = Vec::new();
    for _ in 0..200 {
        let key = app.create_key(json!({"scopes": ["read"]})).await;
        let check = Check { key: &key.secret, ..Check::default() };
        // Created: valid in-process once its event arrived.
        wait_for(&verifier, &check, "VALID").await;
        let started = Instant::now();
        assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await.status, 200);
        wait_for(&verifier, &check, "REVOKED").await;
        delays.push(started.elapsed());
    }
    delays.sort();
    let (p50, p99) = (delays[delays.len() / 2], delays[delays.len() * 99 / 100]);
    println!("revocation delay over {} revocations: p50 {p50:?}, p99 {p99:?}", delays.len());
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
}

/// Polls the local decision for `check` until it is `code` (5 s at most).
async fn wait_for(verifier: &Verifier, check: &Check<'_>, code: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let verdict = verifier.verify_local(check);
        if verdict.as_ref().is_some_and(|v| v.decision.code.as_str() == code) {
            return;
        }
        assert!(Instant::now() < deadline, "never {code}: {verdict:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn a_stopped_server_fails_closed_or_open_and_both_recover() {
    let app = spawn_app().await;
    let replicator = replicator(&app).await;
    let key = app.create_key(json!({"scopes": ["read"]})).await;
    let bound = Duration::from_secs(2);
    // The verifiers' clock: the wall clock plus what the test moves it by.
    let moved = Arc::new(AtomicI64::new(0));
    let clock: keyward_verifier::clock::Clock = {
        let moved = moved.clone();
        Arc::new(move || keyward_verifier::clock::wall_clock() + moved.load(Ordering::Relaxed))
    };
    let options = |fail_open| Options { fail_open, max_staleness: bound, clock: clock.clone(), ..Options::default() };
    let closed = Verifier::connect_with(&app.url(""), &replicator.secret, options(false)).await.unwrap();
    let open = Verifier::connect_with(&app.url(""), &replicator.secret, options(true)).await.unwrap();
    let check = Check { key: &key.secret, ..Check::default() };
    for v in [&closed, &open] {
        assert_eq!(v.verify(&check).await.decision.code.as_str(), "VALID");
    }
    // The server goes away for 10 s (its database stays).
    let mut app = app;
    let addr = app.addr;
    app.stop_server().await;
    assert!(!closed.is_stale(), "within its bound");
    moved.fetch_add(2_500, Ordering::Relaxed);
    assert!(closed.is_stale() && closed.last_event_age() > bound);
    let refused = closed.verify(&check).await;
    assert_eq!((refused.decision.code.as_str(), refused.path), ("NOT_FOUND", Path::Stale));
    let answered = open.verify(&check).await;
    assert_eq!((answered.decision.code.as_str(), answered.path), ("VALID", Path::Local));
    let api = protected_api(closed.clone()).await;
    let (status, _) = call(api, "/hello", Some(&key.secret)).await;
    assert_eq!(status, 503, "fail-closed: the API answers 503 while the copy is stale");
    moved.fetch_add(7_500, Ordering::Relaxed);
    assert!(closed.is_stale() && open.is_stale());
    assert_eq!(open.verify(&check).await.path, Path::Local, "fail-open still answers after 10 s");
    // Back, on the same address and database: both recover by themselves.
    let back = app.sibling(|c| c.listen = addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for v in [&closed, &open] {
        loop {
            let verdict = v.verify(&check).await;
            if verdict.path == Path::Local && verdict.decision.is_valid() && !v.is_stale() {
                break;
            }
            assert!(Instant::now() < deadline, "did not recover: {verdict:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(call(api, "/hello", Some(&key.secret)).await.0, 200);
    // And it follows the node it reconnected to.
    let r = back.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(&closed, &check, "REVOKED").await;
    back.stop().await;
}

async fn the_stream_refuses_bad_input() {
    let app = spawn_app().await;
    let replicator = replicator(&app).await;
    let get = |path: String, key: String| {
        let client = app.client.clone();
        async move { client.get(path).bearer_auth(key).send().await.unwrap() }
    };
    let stream = app.url("/v1/replication/stream");
    // Garbage, and a position from the future.
    for after in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let r = get(format!("{stream}?after={after}"), replicator.secret.clone()).await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_after", "{body}");
        assert!(!body["error"].as_str().unwrap().contains(after), "no value echoed");
    }
    let future = app.services.verifier.replication().seq() + 1000;
    let r = get(format!("{stream}?after={future}"), replicator.secret.clone()).await;
    assert_eq!(r.status(), 400);
    // Another workspace, by name, or by credential.
    let r = get(format!("{stream}?workspace=ws_other"), replicator.secret.clone()).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "other_workspace");
    let plain = app.create_key(json!({"scopes": ["keys:verify"]})).await;
    assert_eq!(get(stream.clone(), plain.secret.clone()).await.status(), 403);
    assert_eq!(app.client.get(&stream).send().await.unwrap().status(), 401);
    // Records carry replica digests, never a secret or the server's hash.
    let key = app.create_key(json!({"scopes": ["read"]})).await;
    let mut r = get(stream.clone(), replicator.secret.clone()).await;
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut text = String::new();
    while !text.contains("snapshot_end") {
        text.push_str(std::str::from_utf8(&r.chunk().await.unwrap().unwrap()).unwrap());
    }
    let events: Vec<Event> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(matches!(events[0], Event::Snapshot { .. }));
    assert!(events.iter().any(|e| matches!(e, Event::Key { id, .. } if *id == key.id)));
    let token_secret = key.secret.rsplit('_').next().unwrap();
    assert!(!text.contains(token_secret) && !text.contains(&key.secret));
    let stored = app.services.store.find_key(&key.id).await.unwrap().unwrap();
    assert!(!text.contains(&keyward_core::hash::hex(&stored.secret.digest)), "the server's digest stays home");
    // Another workspace's keys are not in it.
    let other = spawn_app().await;
    let foreign = other.create_key(json!({"scopes": ["read"]})).await;
    assert!(!text.contains(&foreign.id));
    // The node-wide token reads every workspace, or the one it names.
    let token = "t".repeat(40);
    let node = app.sibling(|c| c.replication_token = Some(token.clone())).await;
    let r = get(format!("{}?workspace={}", node.url("/v1/replication/stream"), app.workspace_id), token).await;
    assert_eq!(r.status(), 200);
}

async fn a_subscriber_that_never_reads_is_dropped_and_memory_stays_bounded() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let replicator = replicator(&app).await;
    // 100,000 changes at full size on SQLite; 20,000 elsewhere (the bound
    // does not depend on the count past a few thousand).
    let full_size = std::env::var_os("CI").is_some() || std::env::var_os("KEYWARD_TEST_FULL").is_some();
    let full = if full_size && app.url.starts_with("sqlite") { 100_000 } else { 20_000 };
    // A subscriber that asks and then never reads.
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET /v1/replication/stream HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        app.addr, replicator.secret
    );
    silent.write_all(request.as_bytes()).await.unwrap();
    // A reader alongside, which keeps up.
    let reader = Verifier::connect(&app.url(""), &replicator.secret).await.unwrap();
    let key = app.create_key(json!({"scopes": ["read"]})).await;
    let rss_before = rss_kib();
    // Changes: keys deactivated and activated again, by 16 writers at once.
    let mut writers = Vec::new();
    for _ in 0..16 {
        let id = app.create_key(json!({"scopes": ["read"]})).await.id;
        let services = app.services.clone();
        let principal = keyward_server::principal::Principal::system(&app.workspace_id);
        writers.push(tokio::spawn(async move {
            for i in 0..full / 16 {
                match i % 2 {
                    0 => services.keys.deactivate(&principal, &id).await.unwrap(),
                    _ => services.keys.activate(&principal, &id).await.unwrap(),
                };
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let rss_after = rss_kib();
    println!(
        "{full} changes with a subscriber that never reads: RSS {rss_before} → {rss_after} KiB (the whole test process)"
    );
    // The silent one was dropped once it fell behind; what the node keeps
    // for subscribers is bounded whatever they do.
    let replication = app.services.verifier.replication();
    let deadline = Instant::now() + keyward_server::replication::STALLED * 3;
    while replication.subscribers() != 1 {
        assert!(Instant::now() < deadline, "the silent subscriber is still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replication.history_len() <= keyward_server::replication::HISTORY);
    // The one that reads is up to date.
    let check = Check { key: &key.secret, ..Check::default() };
    assert!(reader.verify_local(&check).is_some_and(|v| v.decision.is_valid()));
    let seq = app.services.verifier.replication().seq();
    assert!(seq > 0);
    drop(silent);
}

/// The process's resident memory (KiB).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
