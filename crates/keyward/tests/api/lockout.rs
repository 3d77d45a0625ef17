//! Lockout: wrong secrets for one key lock it at the workspace's threshold
//! within its window; re-activation unlocks.

use std::time::Duration;

use keyward_core::token::{Environment, generate_with_id, parse};
use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

async fn wrong_secrets_lock_a_key_until_it_is_reactivated() {
    let app = spawn_app().await;
    let r = app.patch("/v1/workspace", json!({"lockout": {"threshold": 3}})).await;
    assert_eq!(r.body["lockout"], json!({"threshold": 3, "windowMinutes": 15}), "{}", r.body);
    let key = app.create_key(json!({"scopes": ["admin"]})).await;
    let id = parse(&key.secret).unwrap().id.to_owned();
    let forged = generate_with_id("kw", Environment::Live, &id);

    // Two wrong secrets, then the window passes: the count starts again.
    for _ in 0..2 {
        assert_eq!(app.verify_code(forged.expose()).await, "INVALID_SECRET");
    }
    app.clock.advance(Duration::from_secs(16 * 60));
    for _ in 0..2 {
        assert_eq!(app.verify_code(forged.expose()).await, "INVALID_SECRET");
    }
    assert_eq!(app.verify_code(&key.secret).await, "VALID", "two in the new window: not locked");
    assert_eq!(app.verify_code(forged.expose()).await, "INVALID_SECRET");
    // The third within the window locked it: even the right secret is refused.
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("LOCKED")), "{v}");
    assert_eq!(app.get(&format!("/v1/keys/{}", key.id)).await.body["state"], "locked");
    assert_eq!(app.get("/v1/keys?state=locked").await.body["data"].as_array().unwrap().len(), 1);
    let r = app.call(Method::GET, "/v1/keys", Some(&key.secret), None).await;
    r.assert_error(401, "Invalid API key");

    // Re-activation unlocks, with a fresh count.
    let r = app.post_empty(&format!("/v1/keys/{}/activate", key.id)).await;
    assert_eq!(r.body["state"], "active");
    assert_eq!(app.verify_code(forged.expose()).await, "INVALID_SECRET");
    assert_eq!(app.verify_code(&key.secret).await, "VALID");
    app.stop().await;
}

async fn bad_lockout_settings_are_refused() {
    let app = spawn_app().await;
    app.patch("/v1/workspace", json!({"lockout": {"threshold": 0}}))
        .await
        .assert_error(400, "lockout.threshold must be from 1 to 1000");
    app.patch("/v1/workspace", json!({"lockout": {"windowMinutes": 5000}}))
        .await
        .assert_error(400, "lockout.windowMinutes must be from 1 to 1440 (a day)");
    assert_eq!(app.get("/v1/workspace").await.body["lockout"], json!({"threshold": 10, "windowMinutes": 15}));
    app.stop().await;
}

async fn an_address_that_keeps_failing_is_refused_for_the_minute() {
    let app = spawn_app().await;
    // Callers of the API: 50 failed authentications from this address…
    for _ in 0..50 {
        app.call(Method::GET, "/v1/keys", Some("kw_live_nope"), None).await.assert_error(401, "Invalid API key");
    }
    // … and then even the right key is refused until the minute is over.
    let r = app.get("/v1/keys").await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_failures"));
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.get("/v1/keys").await.status, 200);

    // The end client's address given to verify.
    for _ in 0..50 {
        let v = app.verify("kw_live_nope", json!({"ip": "203.0.113.9"})).await;
        assert_eq!(v["code"], "MALFORMED");
    }
    let r = app.post("/v1/keys/verify", json!({"key": "kw_live_nope", "ip": "203.0.113.9"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_failures"));
    assert_eq!(app.verify("kw_live_nope", json!({"ip": "203.0.113.10"})).await["code"], "MALFORMED", "another address");

    // Forward-auth: the forwarded client address.
    let key = app.create_key(json!({"scopes": ["*"]})).await;
    let authorize = |token: String, nginx: bool| {
        let url = format!("http://{}/v1/authorize", app.forward_auth_addr);
        async move {
            let uri_header = if nginx { "x-original-uri" } else { "x-forwarded-uri" };
            reqwest::Client::new()
                .get(url)
                .header(uri_header, "/api/x")
                .header("x-forwarded-for", "198.51.100.7")
                .header("x-api-key", token)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..50 {
        assert_eq!(authorize("kw_live_nope".into(), false).await.status(), 401);
    }
    let r = authorize(key.secret.clone(), false).await;
    assert_eq!((r.status().as_u16(), r.headers()["x-keyward-error"].to_str().unwrap()), (429, "too_many_failures"));
    assert!(r.headers().contains_key("retry-after"));
    // nginx passes on only 401 and 403: a 403 with the same code.
    let r = authorize(key.secret.clone(), true).await;
    assert_eq!((r.status().as_u16(), r.headers()["x-keyward-error"].to_str().unwrap()), (403, "too_many_failures"));
    app.stop().await;
}

backend_tests!(
    wrong_secrets_lock_a_key_until_it_is_reactivated,
    bad_lockout_settings_are_refused,
    an_address_that_keeps_failing_is_refused_for_the_minute
);
