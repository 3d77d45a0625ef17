//! `Idempotency-Key` on creating and changing calls, and batch
//! verification: retries after a time-out, reuse with another request,
//! concurrent retries, two nodes, expiry on the clock; a batch answers as
//! its single verifications would.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

backend_tests!(
    a_create_retried_after_a_time_out_returns_the_same_key_once,
    a_key_used_for_another_request_is_refused_and_changes_nothing,
    concurrent_requests_with_one_key_make_one_change,
    two_nodes_share_the_records,
    records_expire_on_the_clock,
    batch_verification_answers_as_single_verifications,
    bad_batches_are_refused,
);

impl TestApp {
    /// A call with the admin key and an `Idempotency-Key`.
    async fn with_key(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Resp {
        let headers = [("authorization", format!("Bearer {}", self.admin_key)), ("idempotency-key", key.to_owned())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.call_with(method, path, &headers, body).await
    }

    async fn keys_named(&self, name: &str) -> usize {
        let page = self.get("/v1/keys?limit=200").await.body;
        page["data"].as_array().unwrap().iter().filter(|k| k["name"] == name).count()
    }
}

fn replayed(r: &Resp) -> bool {
    r.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
}

/// Sends `POST path` with `body` on a connection of its own, and reads no
/// answer: the caller hangs up (its time-out struck) by dropping it.
async fn send_unanswered(app: &TestApp, path: &str, key: &str, body: &Value) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        app.addr,
        app.admin_key,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

async fn a_create_retried_after_a_time_out_returns_the_same_key_once() {
    let app = spawn_app().await;
    let body = json!({"name": "made once", "scopes": ["read"]});
    let first = send_unanswered(&app, "/v1/keys", "create-1", &body).await;
    // The server makes the key; the client, its time-out struck, hangs up
    // without the answer.
    eventually(|| async { app.keys_named("made once").await == 1 }).await;
    drop(first);
    // The client retries with the same key until it hears an answer: the
    // first request's, whatever the moment.
    let mut answer = None;
    for _ in 0..100 {
        let r = app.with_key(Method::POST, "/v1/keys", "create-1", Some(body.clone())).await;
        if r.status == 409 && r.code() == "idempotency_key_in_progress" {
            assert!(r.headers.get("retry-after").is_some(), "{:?}", r.headers);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        answer = Some(r);
        break;
    }
    let first = answer.expect("the first request finished");
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(replayed(&first), "the answer is the one made for the request that hung up: {:?}", first.headers);
    assert_eq!(first.headers.get("content-type").unwrap(), "application/json");
    let (id, secret) = (first.str("id"), first.str("secret"));
    assert_eq!(app.keys_named("made once").await, 1);
    // And once more: the same key and secret, and the secret works.
    let again = app.with_key(Method::POST, "/v1/keys", "create-1", Some(body.clone())).await;
    assert_eq!((again.status.as_u16(), again.str("id"), again.str("secret")), (201, id.clone(), secret.clone()));
    assert!(replayed(&again));
    assert_eq!(app.verify_code(&secret).await, "VALID");
    assert_eq!(app.keys_named("made once").await, 1);
    // Without a key, a second request is a second request (the name is taken).
    let plain = app.post("/v1/keys", body).await;
    assert_eq!(plain.status, 409, "{}", plain.body);
    assert!(!replayed(&plain));

    // Every kind of change replays: an edit, an action, a deletion.
    let edit = json!({"description": "edited once"});
    let path = format!("/v1/keys/{id}");
    let r1 = app.with_key(Method::PATCH, &path, "edit-1", Some(edit.clone())).await;
    let r2 = app.with_key(Method::PATCH, &path, "edit-1", Some(edit)).await;
    assert_eq!((r1.status.as_u16(), r2.status.as_u16()), (200, 200), "{} {}", r1.body, r2.body);
    assert_eq!(r1.body, r2.body);
    assert!(!replayed(&r1) && replayed(&r2));
    let v1 = app.with_key(Method::POST, &format!("{path}/revoke"), "revoke-1", None).await;
    let v2 = app.with_key(Method::POST, &format!("{path}/revoke"), "revoke-1", None).await;
    assert_eq!((v1.status, &v1.body), (v2.status, &v2.body));
    assert!(v1.status.is_success() && replayed(&v2), "{}", v1.body);
    let d1 = app.with_key(Method::DELETE, &path, "delete-1", None).await;
    let d2 = app.with_key(Method::DELETE, &path, "delete-1", None).await;
    assert_eq!((d1.status.as_u16(), d2.status.as_u16()), (d1.status.as_u16(), d1.status.as_u16()));
    assert!(d1.status.is_success() && replayed(&d2), "{} {:?}", d1.status, d2.headers);
    assert_eq!(app.get(&path).await.status, 404, "deleted once, and a retry did not fail");
    // The documented contract of /api/api-keys takes keys too.
    let compat = json!({"name": "compat once", "scope": "read"});
    let c1 = app.with_key(Method::POST, "/api/api-keys", "compat-1", Some(compat.clone())).await;
    let c2 = app.with_key(Method::POST, "/api/api-keys", "compat-1", Some(compat)).await;
    assert_eq!(c1.status, c2.status, "{} {}", c1.body, c2.body);
    assert_eq!(c1.body, c2.body);
    assert!(replayed(&c2));
    app.stop().await;
}

async fn a_key_used_for_another_request_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let first = app.with_key(Method::POST, "/v1/keys", "k-1", Some(json!({"name": "one"}))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let before = app.key_count().await;
    // Another body, another path, another method: 422, nothing made.
    let other_body = app.with_key(Method::POST, "/v1/keys", "k-1", Some(json!({"name": "two"}))).await;
    assert_eq!((other_body.status.as_u16(), other_body.code()), (422, "idempotency_key_reused"), "{}", other_body.body);
    assert!(!other_body.error().contains("two"), "no submitted value is echoed: {}", other_body.body);
    let path = format!("/v1/keys/{}", first.str("id"));
    let other_path = app.with_key(Method::PATCH, &path, "k-1", Some(json!({"name": "one"}))).await;
    assert_eq!(other_path.status, 422, "{}", other_path.body);
    assert_eq!(app.key_count().await, before);
    assert_eq!(app.get(&path).await.body["name"], "one");

    // A request that changed nothing lets its key go: fixed, it runs.
    let bad = app.with_key(Method::POST, "/v1/keys", "k-2", Some(json!({"name": ""}))).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let good = app.with_key(Method::POST, "/v1/keys", "k-2", Some(json!({"name": "fixed"}))).await;
    assert_eq!(good.status, 201, "{}", good.body);
    assert!(!replayed(&good));

    // Keys belong to a workspace and credential: another's same key is its own.
    let (_, other_admin) = app.other_workspace().await;
    let headers = [("authorization", format!("Bearer {other_admin}")), ("idempotency-key", "k-1".to_owned())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let theirs = app.call_with(Method::POST, "/v1/keys", &headers, Some(json!({"name": "one"}))).await;
    assert_eq!(theirs.status, 201, "{}", theirs.body);
    assert!(!replayed(&theirs));
    assert_ne!(theirs.str("id"), first.str("id"));

    // Bad keys: empty, too long, not printable ASCII, twice.
    let long = "x".repeat(256);
    let auth = format!("Bearer {}", app.admin_key);
    for key in ["", long.as_str(), "tab\there"] {
        let r = app
            .call_with(
                Method::POST,
                "/v1/keys",
                &[("authorization", &auth), ("idempotency-key", key)],
                Some(json!({"name": "never"})),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_idempotency_key"), "{key:?}: {}", r.body);
        assert!(r.error().contains("Idempotency-Key"), "{}", r.body);
    }
    let accented = reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap();
    let r = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(&app.admin_key)
        .header("idempotency-key", accented)
        .json(&json!({"name": "never"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let twice = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(&app.admin_key)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&json!({"name": "never"}))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let ok255 = app.with_key(Method::POST, "/v1/keys", &"y".repeat(255), Some(json!({"name": "at the limit"}))).await;
    assert_eq!(ok255.status, 201, "{}", ok255.body);
    assert_eq!(app.keys_named("never").await, 0);
    // No caller, no key: 401 as without one.
    let anonymous =
        app.call_with(Method::POST, "/v1/keys", &[("idempotency-key", "k-3")], Some(json!({"name": "never"}))).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    // Verification takes no key: each call is a decision of its own.
    let metered = app.create_key(json!({"scopes": ["read"], "credits": {"remaining": 5}})).await;
    let v1 = app.with_key(Method::POST, "/v1/keys/verify", "v-1", Some(json!({"key": metered.secret}))).await;
    let v2 = app.with_key(Method::POST, "/v1/keys/verify", "v-1", Some(json!({"key": metered.secret}))).await;
    assert_eq!((v1.body["credits"].as_i64(), v2.body["credits"].as_i64()), (Some(4), Some(3)));
    assert!(!replayed(&v2));
    app.stop().await;
}

async fn concurrent_requests_with_one_key_make_one_change() {
    let app = spawn_app().await;
    let body = json!({"name": "raced", "scopes": ["read"]});
    let answers = futures_util::future::join_all(
        (0..8).map(|_| app.with_key(Method::POST, "/v1/keys", "race-1", Some(body.clone()))),
    )
    .await;
    let mut ids = std::collections::BTreeSet::new();
    let (mut made, mut waiting) = (0, 0);
    for r in &answers {
        match r.status.as_u16() {
            201 => {
                ids.insert(r.str("id"));
                if !replayed(r) {
                    made += 1;
                }
            }
            409 => {
                assert_eq!(r.code(), "idempotency_key_in_progress", "{}", r.body);
                let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&wait), "{wait}");
                waiting += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(made, 1, "one request made the key; the others waited or replayed ({waiting} waited)");
    assert_eq!(ids.len(), 1, "every 201 names the same key");
    assert_eq!(app.keys_named("raced").await, 1);
    app.stop().await;
}

async fn two_nodes_share_the_records() {
    let a = spawn_app().await;
    let b = a.sibling(|_| {}).await;
    let body = json!({"name": "on node a", "scopes": ["read"]});
    let first = a.with_key(Method::POST, "/v1/keys", "shared-1", Some(body.clone())).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let retry = b.with_key(Method::POST, "/v1/keys", "shared-1", Some(body)).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert!(replayed(&retry));
    assert_eq!((retry.str("id"), retry.str("secret")), (first.str("id"), first.str("secret")));
    let reused = b.with_key(Method::POST, "/v1/keys", "shared-1", Some(json!({"name": "other"}))).await;
    assert_eq!(reused.status, 422, "{}", reused.body);
    assert_eq!(a.keys_named("on node a").await, 1);
    b.stop().await;
    a.stop().await;
}

async fn records_expire_on_the_clock() {
    let app = spawn_app().await;
    let body = json!({"name": "kept a day", "scopes": ["read"]});
    let first = app.with_key(Method::POST, "/v1/keys", "day-1", Some(body.clone())).await;
    assert_eq!(first.status, 201, "{}", first.body);
    app.clock.advance(Duration::from_secs(23 * 3600));
    let within = app.with_key(Method::POST, "/v1/keys", "day-1", Some(body.clone())).await;
    assert_eq!((within.status.as_u16(), within.str("id")), (201, first.str("id")));
    assert!(replayed(&within));
    // After 24 hours the key is forgotten: the request runs again (and
    // meets the key it made then).
    app.clock.advance(Duration::from_secs(2 * 3600));
    let after = app.with_key(Method::POST, "/v1/keys", "day-1", Some(body)).await;
    assert_eq!(after.status, 409, "{}", after.body);
    assert!(!replayed(&after));
    // A forgotten key takes any request again.
    let other = app.with_key(Method::POST, "/v1/keys", "day-1", Some(json!({"name": "new day"}))).await;
    assert_eq!(other.status, 201, "{}", other.body);
    assert_eq!(app.keys_named("kept a day").await, 1);
    app.stop().await;
}

/// A batch's items against `set` (each item names a key by its index in
/// `set`, or a secret of its own), mixed outcomes: valid, revoked, unknown,
/// credits running out, a rate limit hit, forbidden permissions, and
/// malformed items.
fn batch_items(set: &[String]) -> Vec<Value> {
    (0..100)
        .map(|i| match i % 10 {
            0 | 1 => json!({"key": set[0]}),
            2 => json!({"key": set[1]}),
            3 => json!({"key": set[2], "cost": 2}),
            4 => json!({"key": set[3]}),
            5 => json!({"key": set[0], "permission": "keys:write"}),
            6 => json!({"key": "kw_live_doesnotexist0000000000000000"}),
            7 => json!({"key": set[0], "permission": "not a (permission"}),
            8 => json!({"keyy": set[0]}),
            _ => json!({"key": set[0], "resource": "bad resource!"}),
        })
        .collect()
}

/// The parts of a verify answer that are the same for twin keys.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for field in ["keyId", "name", "workspaceId"] {
            o.remove(field);
        }
        if let Some(limits) = o.get_mut("ratelimits").and_then(Value::as_array_mut) {
            for l in limits {
                l.as_object_mut().unwrap().remove("reset");
            }
        }
    }
    v
}

async fn batch_verification_answers_as_single_verifications() {
    let app = spawn_app().await;
    // Two sets of twin keys in the same state: one checked one by one,
    // the other in one batch.
    let mut sets = Vec::new();
    for twin in ["a", "b"] {
        let valid = app.create_key(json!({"name": format!("valid {twin}"), "scopes": ["read"]})).await;
        let revoked = app.create_key(json!({"name": format!("revoked {twin}"), "scopes": ["read"]})).await;
        assert!(app.post_empty(&format!("/v1/keys/{}/revoke", revoked.id)).await.status.is_success());
        let metered = app
            .create_key(json!({"name": format!("metered {twin}"), "scopes": ["read"], "credits": {"remaining": 11}}))
            .await;
        let limited = app
            .create_key(json!({"name": format!("limited {twin}"), "scopes": ["read"],
                "ratelimits": [{"name": "requests", "limit": 6, "durationMs": 60_000, "autoApply": true}]}))
            .await;
        sets.push((vec![valid.secret, revoked.secret, metered.secret, limited.secret], valid.id));
    }
    let single: Vec<Resp> = {
        let mut out = Vec::new();
        for item in batch_items(&sets[0].0) {
            out.push(app.post("/v1/keys/verify", item).await);
        }
        out
    };
    let batch = app.post("/v1/keys/verify/batch", json!({"requests": batch_items(&sets[1].0)})).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let results = batch.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    let mut codes = std::collections::BTreeSet::new();
    for (i, (one, batched)) in single.iter().zip(results).enumerate() {
        if one.status == 200 {
            assert_eq!(comparable(&one.body), comparable(batched), "item {i}");
            codes.insert(one.body["code"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(
                (batched["status"].as_u64(), batched["code"].as_str(), batched["error"].as_str()),
                (Some(u64::from(one.status.as_u16())), Some(one.code()), Some(one.error())),
                "item {i}: {}",
                one.body
            );
            codes.insert(one.code().to_owned());
        }
    }
    for code in [
        "VALID",
        "REVOKED",
        "MALFORMED",
        "USAGE_EXCEEDED",
        "RATE_LIMITED",
        "INSUFFICIENT_PERMISSIONS",
        "invalid_body",
        "invalid_resource",
    ] {
        assert!(codes.contains(code), "{code} among {codes:?}");
    }
    // Counted per item: the valid twin's usage as its single twin's (20
    // valid, 10 refused for the permission).
    let usage = |id: String| {
        let app = &app;
        async move { app.get(&format!("/v1/keys/{id}/usage")).await.body["totals"].clone() }
    };
    let (a_id, b_id) = (sets[0].1.clone(), sets[1].1.clone());
    let expected = json!({"VALID": 20, "INSUFFICIENT_PERMISSIONS": 10});
    eventually(|| async { usage(a_id.clone()).await == expected }).await;
    eventually(|| async { usage(b_id.clone()).await == expected }).await;
    app.stop().await;
}

async fn bad_batches_are_refused() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["read"], "credits": {"remaining": 5}})).await;
    for (body, words) in [
        (json!({"requests": []}), "1 to 100"),
        (json!({"requests": vec![json!({"key": key.secret}); 101]}), "1 to 100"),
        (json!({"requests": {"key": key.secret}}), "requests"),
        (json!({}), "requests"),
    ] {
        let r = app.post("/v1/keys/verify/batch", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.error().contains(words), "{}", r.body);
        assert!(!r.error().contains(&key.secret), "no secret echoed: {}", r.body);
    }
    assert_eq!(app.verify(&key.secret, json!({"cost": 0})).await["credits"], 5, "nothing was spent");
    // A caller without keys:verify is refused as a whole.
    let reader = app.create_key(json!({"scopes": ["keys:read"]})).await;
    let r = app
        .call(
            Method::POST,
            "/v1/keys/verify/batch",
            Some(&reader.secret),
            Some(json!({"requests": [{"key": key.secret}]})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r =
        app.call(Method::POST, "/v1/keys/verify/batch", None, Some(json!({"requests": [{"key": key.secret}]}))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(app.verify(&key.secret, json!({"cost": 0})).await["credits"], 5);
    app.stop().await;
}
