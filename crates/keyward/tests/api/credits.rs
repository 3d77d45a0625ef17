//! Credits: spent by valid verifications, exact, refilled on schedule,
//! changed through the API; USAGE_EXCEEDED when none are left.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn spent_by_valid_verifications_and_changed_through_the_api() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["read"], "credits": {"remaining": 3}})).await;
    assert_eq!(key.body["credits"], json!({"remaining": 3, "refill": null}));
    for left in [2, 1, 0] {
        let v = app.verify(&key.secret, json!({})).await;
        assert_eq!((v["code"].as_str(), v["credits"].as_i64()), (Some("VALID"), Some(left)), "{v}");
    }
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!(
        (v["valid"].as_bool(), v["code"].as_str(), v["credits"].as_i64()),
        (Some(false), Some("USAGE_EXCEEDED"), Some(0))
    );
    assert_eq!(v["keyId"], key.id.as_str(), "the key is named");
    // A check that spends nothing, and a refused request, spend nothing.
    assert_eq!(app.verify(&key.secret, json!({"cost": 0})).await["code"], "VALID");
    app.post(&format!("/v1/keys/{}/credits", key.id), json!({"op": "set", "value": 5})).await;
    let refused = app.verify(&key.secret, json!({"permission": "tags:write"})).await;
    assert_eq!(refused["code"], "INSUFFICIENT_PERMISSIONS");
    let v = app.verify(&key.secret, json!({"cost": 2})).await;
    assert_eq!(v["credits"], 3, "the refused request spent nothing: {v}");

    let path = format!("/v1/keys/{}/credits", key.id);
    let r = app.post(&path, json!({"op": "increment", "value": 10})).await;
    assert_eq!((r.status.as_u16(), r.body["credits"]["remaining"].as_i64()), (200, Some(13)));
    let r = app.post(&path, json!({"op": "decrement", "value": 100})).await;
    assert_eq!(r.body["credits"]["remaining"], 0, "never below zero");
    let r = app.post(&path, json!({"op": "double", "value": 1})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_op"));
    let r = app.post(&path, json!({"op": "set", "value": -1})).await;
    assert_eq!(r.status, 400);
    let unlimited = app.create_key(json!({})).await;
    let r = app.post(&format!("/v1/keys/{}/credits", unlimited.id), json!({"op": "set", "value": 1})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "no_credits"));
    assert!(app.verify(&unlimited.secret, json!({})).await.get("credits").is_none());

    // Editing other settings leaves the count alone; PATCH credits sets it.
    app.post(&path, json!({"op": "set", "value": 4})).await;
    app.verify(&key.secret, json!({})).await;
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"name": "renamed"})).await;
    assert_eq!(r.body["credits"]["remaining"], 3, "{}", r.body);
    assert_eq!(app.get(&format!("/v1/keys/{}", key.id)).await.body["credits"]["remaining"], 3);
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"credits": null})).await;
    assert_eq!(r.body["credits"], Value::Null);
    assert_eq!(app.verify(&key.secret, json!({})).await["code"], "VALID");
    app.stop().await;
}

async fn refills_on_schedule() {
    let app = spawn_app().await;
    let daily = json!({"remaining": 1, "refill": {"interval": "daily", "amount": 2}});
    let key = app.create_key(json!({"credits": daily})).await;
    assert_eq!(app.verify(&key.secret, json!({})).await["credits"], 0);
    assert_eq!(app.verify(&key.secret, json!({})).await["code"], "USAGE_EXCEEDED");
    app.clock.advance(Duration::from_secs(24 * 3600));
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["credits"].as_i64()), (Some("VALID"), Some(1)), "refilled to 2, spent 1: {v}");
    assert_eq!(app.verify(&key.secret, json!({})).await["credits"], 0);
    assert_eq!(app.verify(&key.secret, json!({})).await["code"], "USAGE_EXCEEDED", "once per day");

    let monthly = json!({"remaining": 0, "refill": {"interval": "monthly", "amount": 7, "refillDay": 31}});
    let m = app.create_key(json!({"credits": monthly})).await;
    assert_eq!(m.body["credits"]["refill"], json!({"interval": "monthly", "amount": 7, "refillDay": 31}));
    assert_eq!(app.verify(&m.secret, json!({})).await["code"], "USAGE_EXCEEDED");
    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    assert_eq!(app.verify(&m.secret, json!({})).await["credits"], 6);
    app.stop().await;
}

async fn bad_credits_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let before = app.key_count().await;
    let cases = [
        (json!({"remaining": -1}), "credits.remaining must be a whole number from 0 to 1000000000000"),
        (
            json!({"remaining": 1, "refill": {"interval": "daily", "amount": 5, "refillDay": 1}}),
            "credits.refill.refillDay is only for a monthly refill",
        ),
        (
            json!({"remaining": 1, "refill": {"interval": "weekly", "amount": 5}}),
            "credits.refill.interval must be: daily or monthly",
        ),
        (
            json!({"remaining": 1, "refill": {"interval": "monthly", "amount": 0}}),
            "credits.refill.amount must be a whole number from 1 to 1000000000000",
        ),
        (
            json!({"remaining": 1, "refill": {"interval": "monthly", "amount": 5, "refillDay": 32}}),
            "credits.refill.refillDay must be from 1 to 31",
        ),
    ];
    for (credits, message) in cases {
        app.post("/v1/keys", json!({"name": "c", "credits": credits})).await.assert_error(400, message);
    }
    assert_eq!(app.key_count().await, before);
    let key = app.create_key(json!({"credits": {"remaining": 5}})).await;
    let r = app.post("/v1/keys/verify", json!({"key": key.secret, "cost": -1})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_body"));
    assert_eq!(app.get(&format!("/v1/keys/{}", key.id)).await.body["credits"]["remaining"], 5);
    app.stop().await;
}

async fn forward_auth_answers_429_when_credits_run_out() {
    let app = spawn_app().await;
    let credits = json!({"remaining": 1, "refill": {"interval": "daily", "amount": 1}});
    let key = app.create_key(json!({"scopes": ["*"], "credits": credits})).await;
    let authorize = || app.authorize(&key.secret);
    assert_eq!(authorize().await.status(), 200);
    let r = authorize().await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until the next refill: {retry}");
    assert_eq!(r.headers()["x-keyward-error"], "usage_exceeded");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "usage_exceeded");
    app.stop().await;
}

backend_tests!(
    spent_by_valid_verifications_and_changed_through_the_api,
    refills_on_schedule,
    bad_credits_are_refused_and_change_nothing,
    forward_auth_answers_429_when_credits_run_out
);
