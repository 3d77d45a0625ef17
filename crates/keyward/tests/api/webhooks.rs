//! Webhooks: every event arrives once, signed (checked by the
//! `standardwebhooks` library in a real receiver), from the outbox written
//! with the change; retries back off on the manual clock; `410` disables;
//! secrets rotate with an overlap; bad URLs and events are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward_core::token::{Environment, generate_with_id, parse};
use keyward_server::startup::ServerConfig;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app_with};
pub use crate::receiver::Receiver;

backend_tests!(
    every_event_arrives_once_signed_by_the_standard,
    failed_deliveries_back_off_then_fail_after_a_day,
    gone_and_failing_endpoints_are_disabled,
    a_rotated_secret_signs_beside_the_old_one_for_the_overlap,
    the_log_resends_and_test_events,
    bad_webhook_requests_are_refused_and_change_nothing,
);

fn allow_loopback(c: &mut ServerConfig) {
    c.webhook_urls.allow_hosts = vec!["127.0.0.1".into()];
    c.webhook_delivery.poll = Duration::from_millis(50);
}

/// An endpoint to the receiver, its secret given to the receiver.
async fn endpoint(app: &TestApp, receiver: &Receiver, events: Value) -> (String, String) {
    let r = app.post("/v1/webhooks", json!({"url": receiver.url, "events": events, "description": "test"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.str("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.secrets(&[&secret]).await;
    (r.str("id"), secret)
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

async fn every_event_arrives_once_signed_by_the_standard() {
    let app = spawn_app_with(allow_loopback).await;
    let Some(receiver) = Receiver::start("every_event_arrives_once_signed_by_the_standard").await else { return };
    let (_, secret) = endpoint(&app, &receiver, json!(["key.*", "member.*"])).await;

    let key = app.create_key(json!({"name": "billing", "scopes": ["read"]})).await;
    let path = format!("/v1/keys/{}", key.id);
    assert_eq!(app.patch(&path, json!({"description": "for billing"})).await.status, 200);
    assert_eq!(app.post_empty(&format!("{path}/roll")).await.status, 200);
    assert_eq!(app.post_empty(&format!("{path}/revoke")).await.status, 200);
    assert_eq!(app.delete(&path).await.status, 204);
    // A change that is refused sends nothing: a second key of that name.
    let twin = app.create_key(json!({"name": "twin"})).await;
    assert_eq!(app.post("/v1/keys", json!({"name": "twin"})).await.status, 409);
    // Locked by wrong secrets.
    assert_eq!(app.patch("/v1/workspace", json!({"lockout": {"threshold": 1}})).await.status, 200);
    let forged = generate_with_id("kw", Environment::Live, parse(&twin.secret).unwrap().id);
    assert_eq!(app.verify_code(forged.expose()).await, "INVALID_SECRET");
    // A member invited, joining, changed and removed.
    let member = app.add_member("new@example.com", "a long enough password", &["viewer"]).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/v1/members/{member}"),
            Some(&app.owner_token().await),
            Some(json!({"roles": ["admin"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.call(Method::DELETE, &format!("/v1/members/{member}"), Some(&app.owner_token().await), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    // Not subscribed: nothing of it arrives.
    assert_eq!(app.patch("/v1/workspace", json!({"name": "Renamed"})).await.status, 200);

    let events = receiver.wait_for(11).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = if receiver.events().await.len() > events.len() { receiver.events().await } else { events };
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *count.entry(e["body"]["type"].as_str().unwrap().to_owned()).or_default() += 1;
        assert_eq!(e["verifiedWith"], json!([0]), "every delivery verifies with the secret: {e}");
        assert_eq!(e["signatures"], 1);
        assert!(e["id"].as_str().unwrap().starts_with("msg_"), "{e}");
        let text = e["body"].to_string();
        assert!(!text.contains(&key.secret) && !text.contains(&twin.secret) && !text.contains(&secret), "{text}");
        assert!(!text.contains("hash"), "no hash in an event: {text}");
    }
    let expected: BTreeMap<String, usize> = [
        ("key.created", 2),
        ("key.updated", 1),
        ("key.rolled", 1),
        ("key.revoked", 1),
        ("key.deleted", 1),
        ("key.locked", 1),
        ("member.invited", 1),
        ("member.joined", 1),
        ("member.changed", 1),
        ("member.removed", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(count, expected, "each event once: {events:?}");
    // Deliveries go out concurrently: their order is not the events' order.
    let created = events
        .iter()
        .find(|e| e["body"]["type"] == "key.created" && e["body"]["data"]["id"] == key.id.as_str())
        .unwrap();
    assert_eq!(created["body"]["data"]["id"], key.id.as_str());
    assert_eq!(created["body"]["data"]["name"], "billing");
    assert!(created["body"]["timestamp"].as_str().unwrap().ends_with('Z'));
    let deleted = events.iter().find(|e| e["body"]["type"] == "key.deleted").unwrap();
    assert_eq!(deleted["body"]["data"]["id"], key.id.as_str());
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "one id per event");
}

async fn failed_deliveries_back_off_then_fail_after_a_day() {
    let app = spawn_app_with(allow_loopback).await;
    let Some(receiver) = Receiver::start("failed_deliveries_back_off_then_fail_after_a_day").await else { return };
    let (id, _) = endpoint(&app, &receiver, json!(["key.created"])).await;
    receiver.answer(500).await;
    app.create_key(json!({"name": "one"})).await;
    receiver.wait_for(1).await;
    let first = || async { deliveries(&app, &id).await[0].clone() };
    eventually(|| async { first().await["error"].is_string() }).await;
    let d = first().await;
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_i64(), d["responseStatus"].as_i64()),
        (Some("pending"), Some(1), Some(500)),
        "{d}"
    );
    assert!(d["responseBody"].as_str().unwrap().len() <= 1024, "at most 1 KiB of the answer is kept");
    // 5 s ± 20 %: not before 4 s, by 6 s.
    app.clock.advance(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events().await.len(), 1, "no retry before its time");
    app.clock.advance(Duration::from_secs(3));
    receiver.wait_for(2).await;
    eventually(|| async { first().await["attempts"] == 2 && first().await["error"].is_string() }).await;
    // Then 5 minutes; the receiver recovers.
    receiver.answer(200).await;
    app.clock.advance(Duration::from_secs(361));
    receiver.wait_for(3).await;
    eventually(|| async { first().await["status"] == "delivered" }).await;
    assert_eq!(first().await["attempts"], 3);

    // Another that never gets through: retried for a day, then failed.
    receiver.answer(503).await;
    app.create_key(json!({"name": "two"})).await;
    let mut seen = 3;
    for step in [6, 360, 2160, 8640, 21_600, 43_200] {
        receiver.wait_for(seen + 1).await;
        seen += 1;
        let d = deliveries(&app, &id).await[0].clone();
        eventually(|| async { deliveries(&app, &id).await[0]["attempts"].as_i64() == Some(seen as i64 - 3) }).await;
        let _ = d;
        app.clock.advance(Duration::from_secs(step));
    }
    receiver.wait_for(seen + 1).await;
    eventually(|| async { deliveries(&app, &id).await[0]["status"] == "failed" }).await;
    let d = deliveries(&app, &id).await[0].clone();
    assert_eq!(d["attempts"], 7, "{d}");
    assert!(d["nextAttemptAt"].is_null());
}

async fn gone_and_failing_endpoints_are_disabled() {
    let app = spawn_app_with(allow_loopback).await;
    let Some(receiver) = Receiver::start("gone_and_failing_endpoints_are_disabled").await else { return };
    let (gone, _) = endpoint(&app, &receiver, json!(["key.created"])).await;
    receiver.answer(410).await;
    app.create_key(json!({"name": "one"})).await;
    eventually(|| async { app.get(&format!("/v1/webhooks/{gone}")).await.body["enabled"] == false }).await;
    let e = app.get(&format!("/v1/webhooks/{gone}")).await.body;
    assert_eq!(e["disabledReason"], "gone", "{e}");
    assert_eq!(deliveries(&app, &gone).await[0]["status"], "failed");
    let audit = app.get("/v1/audit?action=webhook.disabled").await;
    assert_eq!(audit.body["data"].as_array().unwrap().len(), 1, "{}", audit.body);
    // Off, it is sent nothing; turned on again, it is.
    app.create_key(json!({"name": "two"})).await;
    receiver.answer(200).await;
    let r = app.patch(&format!("/v1/webhooks/{gone}"), json!({"enabled": true})).await;
    assert_eq!((r.body["enabled"].as_bool(), &r.body["disabledReason"]), (Some(true), &Value::Null));
    app.create_key(json!({"name": "three"})).await;
    let events = receiver.wait_for(2).await;
    assert_eq!(events[1]["body"]["data"]["name"], "three");

    // Failing for 3 days: every event retried, none delivered, then off.
    receiver.answer(500).await;
    for day in 0..3 {
        let before = receiver.count().await;
        app.create_key(json!({"name": format!("day {day}")})).await;
        receiver.wait_for(before + 1).await;
        app.clock.advance(Duration::from_secs(25 * 3600));
    }
    // 75 hours after the first failure: the next failure (a retry or this
    // key's event) disables it.
    app.create_key(json!({"name": "last"})).await;
    eventually(|| async { app.get(&format!("/v1/webhooks/{gone}")).await.body["enabled"] == false }).await;
    assert_eq!(app.get(&format!("/v1/webhooks/{gone}")).await.body["disabledReason"], "failing");
}

async fn a_rotated_secret_signs_beside_the_old_one_for_the_overlap() {
    let app = spawn_app_with(allow_loopback).await;
    let Some(receiver) = Receiver::start("a_rotated_secret_signs_beside_the_old_one_for_the_overlap").await else {
        return;
    };
    let (id, old) = endpoint(&app, &receiver, json!(["*"])).await;
    let r = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({"overlapSeconds": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.str("secret");
    assert_ne!(new, old);
    receiver.secrets(&[&old, &new]).await;
    app.create_key(json!({"name": "during"})).await;
    let events = receiver.wait_for(1).await;
    assert_eq!((events[0]["signatures"].as_i64(), &events[0]["verifiedWith"]), (Some(2), &json!([0, 1])));
    app.clock.advance(Duration::from_secs(3601));
    app.create_key(json!({"name": "after"})).await;
    let events = receiver.wait_for(2).await;
    assert_eq!((events[1]["signatures"].as_i64(), &events[1]["verifiedWith"]), (Some(1), &json!([1])));
    let audit = app.get("/v1/audit?action=webhook.secret_rotated").await;
    assert!(!audit.body.to_string().contains(&new[6..]), "the secret is never audited");
}

async fn the_log_resends_and_test_events() {
    let app = spawn_app_with(allow_loopback).await;
    let Some(receiver) = Receiver::start("the_log_resends_and_test_events").await else { return };
    let (id, _) = endpoint(&app, &receiver, json!(["key.revoked"])).await;
    let r = app.post_empty(&format!("/v1/webhooks/{id}/test")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let event_id = r.str("eventId");
    let events = receiver.wait_for(1).await;
    assert_eq!(
        (events[0]["body"]["type"].as_str(), events[0]["id"].as_str()),
        (Some("webhook.test"), Some(&*event_id))
    );
    eventually(|| async { deliveries(&app, &id).await[0]["status"] == "delivered" }).await;
    let d = app.get(&format!("/v1/webhooks/{id}/deliveries/{event_id}")).await.body;
    assert_eq!(
        (d["type"].as_str(), d["responseStatus"].as_i64(), d["attempts"].as_i64()),
        (Some("webhook.test"), Some(200), Some(1))
    );
    assert!(d["latencyMs"].is_i64());
    let r = app.post_empty(&format!("/v1/webhooks/{id}/deliveries/{event_id}/resend")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let events = receiver.wait_for(2).await;
    assert_eq!(events[1]["id"], events[0]["id"], "a resend keeps the webhook-id");
    // Filter and page.
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries?status=failed")).await;
    assert_eq!(r.body["data"], json!([]), "{}", r.body);
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries?limit=1")).await;
    assert!(r.body["nextCursor"].is_string(), "{}", r.body);
    let next = r.body["nextCursor"].as_str().unwrap().to_owned();
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries?limit=1&cursor={next}")).await;
    assert_eq!(r.body["data"], json!([]), "one delivery in all: {}", r.body);
    // Deleted: gone with its log.
    assert_eq!(app.delete(&format!("/v1/webhooks/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}/deliveries")).await.status, 404);
}

async fn bad_webhook_requests_are_refused_and_change_nothing() {
    let app = spawn_app_with(|c| c.webhook_urls.allow_hosts = vec!["hooks.internal".into()]).await;
    for url in [
        "ftp://hooks.example.com/x",
        "http://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://169.254.169.254/latest",
        "https://[::1]/x",
        "https://[fd00::1]/x",
        "https://localhost/x",
        "not a url",
    ] {
        let r = app.post("/v1/webhooks", json!({"url": url, "events": ["*"]})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "webhook_url_not_allowed"), "{url}: {}", r.body);
        assert!(r.error().starts_with("url:"), "{}", r.body);
        assert!(!r.error().contains("hooks.example.com") && !r.error().contains("169.254"), "no echo: {}", r.body);
    }
    let r = app.post("/v1/webhooks", json!({"url": "http://hooks.internal/x", "events": ["key.exploded"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_events"));
    assert!(r.error().contains("key.exploded"), "names it: {}", r.body);
    let r = app.post("/v1/webhooks", json!({"url": "http://hooks.internal/x", "events": []})).await;
    assert_eq!(r.code(), "invalid_events");
    let r = app.post("/v1/webhooks", json!({"url": "http://hooks.internal/x", "events": ["*"], "secret": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(app.get("/v1/webhooks").await.body["data"], json!([]), "nothing was made");

    // An allowed host may be plain http; the edit is checked the same way.
    let r = app.post("/v1/webhooks", json!({"url": "http://hooks.internal/x", "events": ["*"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("id");
    let r = app.patch(&format!("/v1/webhooks/{id}"), json!({"url": "https://192.168.0.1/"})).await;
    assert_eq!(r.code(), "webhook_url_not_allowed");
    let r = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({"overlapSeconds": 9_999_999})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_parameter"));
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost")).await;
    assert_eq!(r.status, 400);
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries?cursor=garbage")).await;
    assert_eq!(r.status, 400);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.body["url"], "http://hooks.internal/x");

    // Other workspaces see nothing of it; a key without webhooks:manage is refused.
    let (_, other) = app.other_workspace().await;
    for (m, p) in [(Method::GET, format!("/v1/webhooks/{id}")), (Method::DELETE, format!("/v1/webhooks/{id}"))] {
        let r = app.call(m, &p, Some(&other), None).await;
        assert_eq!((r.status.as_u16(), r.code()), (404, "webhook_not_found"), "{}", r.body);
    }
    let reader = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let r = app.call(Method::GET, "/v1/webhooks", Some(&reader.secret), None).await;
    assert_eq!(r.status, 403);
    let r = app.call(Method::GET, "/v1/webhooks/wh_nothing", None, None).await;
    assert_eq!(r.status, 401);
}
