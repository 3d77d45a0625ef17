//! Named rate limits on keys and identities, through verify and
//! forward-auth; on each backend, and with Redis.

use keyward_server::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, uses_redis};

limit_tests!(
    an_auto_applied_limit_refuses_past_the_limit_until_time_frees_it,
    named_limits_spend_their_cost_and_unknown_names_are_refused,
    a_refused_request_spends_nothing,
    an_identity_limit_spans_its_keys,
    forward_auth_answers_429_with_ratelimit_headers,
    readiness_reports_the_limiting_mode,
    identities_are_managed_and_kept_while_live_keys_use_them,
    bad_limits_and_identities_change_nothing,
);

fn limit(name: &str, limit: i64, duration_ms: i64, auto_apply: bool) -> Value {
    json!({"name": name, "limit": limit, "durationMs": duration_ms, "autoApply": auto_apply})
}

async fn an_auto_applied_limit_refuses_past_the_limit_until_time_frees_it() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["*"], "ratelimits": [limit("requests", 3, 10_000, true)]})).await;
    assert_eq!(key.body["ratelimits"][0]["durationMs"], 10_000);
    for remaining in [2, 1, 0] {
        let v = app.verify(&key.secret, json!({})).await;
        assert_eq!(v["code"], "VALID", "{v}");
        let l = &v["ratelimits"][0];
        assert_eq!(
            (l["name"].as_str(), l["limit"].as_i64(), l["remaining"].as_i64()),
            (Some("requests"), Some(3), Some(remaining))
        );
        assert_eq!(l["exceeded"], false);
    }
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["valid"].as_bool()), (Some("RATE_LIMITED"), Some(false)), "{v}");
    let l = &v["ratelimits"][0];
    assert_eq!((l["remaining"].as_i64(), l["exceeded"].as_bool()), (Some(0), Some(true)));
    let reset = l["reset"].as_i64().unwrap();
    let now = app.clock.now_ms();
    assert!(reset > now && reset <= now + 11_000, "reset {reset} within the window after {now}");
    // Time frees the units (the manual clock; nothing sleeps).
    app.clock.advance(std::time::Duration::from_millis((reset - now) as u64));
    assert_eq!(app.verify_code(&key.secret).await, "VALID");
    app.stop().await;
}

async fn named_limits_spend_their_cost_and_unknown_names_are_refused() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["*"], "ratelimits": [limit("tokens", 100, 60_000, false)]})).await;
    // Not auto-applied: a plain verification neither checks nor reports it.
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!(v["code"], "VALID");
    assert!(v.get("ratelimits").is_none(), "{v}");
    let spend = |cost: i64| json!({"ratelimits": [{"name": "tokens", "cost": cost}]});
    let v = app.verify(&key.secret, spend(60)).await;
    assert_eq!((v["code"].as_str(), v["ratelimits"][0]["remaining"].as_i64()), (Some("VALID"), Some(40)));
    let v = app.verify(&key.secret, spend(50)).await;
    assert_eq!(v["code"], "RATE_LIMITED");
    assert_eq!(
        (v["ratelimits"][0]["remaining"].as_i64(), v["ratelimits"][0]["exceeded"].as_bool()),
        (Some(40), Some(true))
    );
    // Cost 0 checks without spending.
    let v = app.verify(&key.secret, spend(0)).await;
    assert_eq!((v["code"].as_str(), v["ratelimits"][0]["remaining"].as_i64()), (Some("VALID"), Some(40)));
    let r = app.post("/v1/keys/verify", json!({"key": key.secret, "ratelimits": [{"name": "nope"}]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_ratelimit"));
    assert!(r.error().starts_with("ratelimits[0].name"), "{}", r.error());
    let r =
        app.post("/v1/keys/verify", json!({"key": key.secret, "ratelimits": [{"name": "tokens", "cost": -1}]})).await;
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("ratelimits[0].cost"), "{}", r.error());
    app.stop().await;
}

async fn a_refused_request_spends_nothing() {
    let app = spawn_app().await;
    let key = app
        .create_key(json!({
            "scopes": ["*"],
            "credits": {"remaining": 1},
            "ratelimits": [limit("requests", 10, 60_000, true), limit("tokens", 5, 60_000, false)],
        }))
        .await;
    // Over the tokens limit: neither the credit nor a request unit is spent.
    let v = app.verify(&key.secret, json!({"ratelimits": [{"name": "tokens", "cost": 6}]})).await;
    assert_eq!(v["code"], "RATE_LIMITED", "{v}");
    assert_eq!(app.get(&format!("/v1/keys/{}", key.id)).await.body["credits"]["remaining"], 1);
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["credits"].as_i64()), (Some("VALID"), Some(0)), "{v}");
    assert_eq!(v["ratelimits"][0]["remaining"], 9, "only the valid verification spent a unit: {v}");
    // Out of credits: the limits it passed are given back.
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!(v["code"], "USAGE_EXCEEDED");
    app.patch(&format!("/v1/keys/{}", key.id), json!({"credits": {"remaining": 5}})).await;
    let v = app.verify(&key.secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["ratelimits"][0]["remaining"].as_i64()), (Some("VALID"), Some(8)), "{v}");
    app.stop().await;
}

async fn an_identity_limit_spans_its_keys() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/identities",
            json!({"externalId": "acme", "meta": {"plan": "pro"}, "ratelimits": [limit("requests", 5, 60_000, true)]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let identity_id = r.str("id");
    let a = app.create_key(json!({"scopes": ["*"], "externalId": "acme"})).await;
    let b = app.create_key(json!({"scopes": ["*"], "externalId": "acme"})).await;
    assert_eq!(
        (a.body["externalId"].as_str(), a.body["identityId"].as_str()),
        (Some("acme"), Some(identity_id.as_str()))
    );
    let mut valid = 0;
    for i in 0..10 {
        let key = if i % 2 == 0 { &a } else { &b };
        let v = app.verify(&key.secret, json!({})).await;
        assert_eq!(v["identity"]["externalId"], "acme", "{v}");
        assert_eq!(v["identity"]["meta"]["plan"], "pro");
        match v["code"].as_str() {
            Some("VALID") => valid += 1,
            Some("RATE_LIMITED") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(valid, 5, "the identity's 5 requests are shared by both keys");
    // A key naming a new customer creates its identity.
    let c = app.create_key(json!({"scopes": ["*"], "externalId": "newco"})).await;
    let list = app.get("/v1/identities").await;
    let ids: Vec<&str> =
        list.body["data"].as_array().unwrap().iter().map(|i| i["externalId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["newco", "acme"]);
    let page = app.get("/v1/identities?limit=1").await;
    assert_eq!(page.body["data"][0]["externalId"], "newco");
    let cursor = page.str("nextCursor");
    let rest = app.get(&format!("/v1/identities?limit=1&cursor={cursor}")).await;
    assert_eq!((rest.body["data"][0]["externalId"].as_str(), &rest.body["nextCursor"]), (Some("acme"), &Value::Null));
    assert_eq!(app.verify_code(&c.secret).await, "VALID");
    // Raising the identity's limit takes effect at once.
    let r = app
        .patch(&format!("/v1/identities/{identity_id}"), json!({"ratelimits": [limit("requests", 7, 60_000, true)]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.verify_code(&a.secret).await, "VALID");
    app.stop().await;
}

async fn forward_auth_answers_429_with_ratelimit_headers() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["*"], "ratelimits": [limit("requests", 2, 10_000, true)]})).await;
    let authorize = || app.authorize(&key.secret);
    let header = |r: &reqwest::Response, name: &str| -> i64 {
        r.headers()[name].to_str().unwrap().parse().unwrap_or_else(|_| panic!("{name} is a number"))
    };
    for remaining in [1, 0] {
        let r = authorize().await;
        assert_eq!(r.status(), 200);
        assert_eq!((header(&r, "ratelimit-limit"), header(&r, "ratelimit-remaining")), (2, remaining));
        assert!((1..=11).contains(&header(&r, "ratelimit-reset")));
    }
    let r = authorize().await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-keyward-error"], "rate_limited");
    assert_eq!((header(&r, "ratelimit-limit"), header(&r, "ratelimit-remaining")), (2, 0));
    let retry = header(&r, "retry-after");
    assert!((1..=11).contains(&retry), "retry after {retry}");
    assert_eq!(header(&r, "ratelimit-reset"), retry);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Out of credits: 429 with the RateLimit headers of the credits.
    let credits = json!({"remaining": 0, "refill": {"interval": "daily", "amount": 50}});
    let key = app.create_key(json!({"scopes": ["*"], "credits": credits})).await;
    let r = app.authorize(&key.secret).await;
    assert_eq!(r.status(), 429);
    assert_eq!((header(&r, "ratelimit-limit"), header(&r, "ratelimit-remaining")), (50, 0));
    assert_eq!(header(&r, "ratelimit-reset"), header(&r, "retry-after"));
    app.stop().await;
}

async fn readiness_reports_the_limiting_mode() {
    let app = spawn_app().await;
    let r = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    if uses_redis() {
        assert_eq!((r.body["ratelimits"].as_str(), r.body["redis"].as_str()), (Some("redis"), Some("reachable")));
    } else {
        assert_eq!(r.body["ratelimits"], "local");
        assert!(r.body.get("redis").is_none());
    }
    app.stop().await;
}

async fn identities_are_managed_and_kept_while_live_keys_use_them() {
    let app = spawn_app().await;
    let r = app.post("/v1/identities", json!({"externalId": "acme"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("id");
    assert_eq!((r.body["meta"].clone(), r.body["ratelimits"].clone()), (json!({}), json!([])));
    let r = app.post("/v1/identities", json!({"externalId": "acme"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_external_id"));
    let r = app.patch(&format!("/v1/identities/{id}"), json!({"meta": {"tier": "gold"}})).await;
    assert_eq!(r.body["meta"]["tier"], "gold");
    assert_eq!(app.get(&format!("/v1/identities/{id}")).await.body["meta"]["tier"], "gold");
    let key = app.create_key(json!({"externalId": "acme"})).await;
    let r = app.delete(&format!("/v1/identities/{id}")).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "identity_in_use"));
    // Another workspace is told nothing about it.
    let (_, other) = app.other_workspace().await;
    let r = app.call(reqwest::Method::DELETE, &format!("/v1/identities/{id}"), Some(&other), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Moving the key off the identity (or revoking it) frees it.
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"externalId": null})).await;
    assert_eq!(r.body["externalId"], Value::Null, "{}", r.body);
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"externalId": "acme"})).await;
    assert_eq!(r.body["identityId"], id.as_str());
    app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await;
    assert_eq!(app.delete(&format!("/v1/identities/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/identities/{id}")).await.status, 404);
    assert_eq!(app.get(&format!("/v1/keys/{}", key.id)).await.body["externalId"], Value::Null);
    // Another workspace sees none of it.
    let r = app.call(reqwest::Method::GET, "/v1/identities", Some(&other), None).await;
    assert_eq!(r.body["data"], json!([]));
    app.stop().await;
}

async fn bad_limits_and_identities_change_nothing() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..21).map(|i| limit(&format!("l{i}"), 1, 1_000, true)).collect();
    let cases = [
        (json!([limit("requests", 0, 1_000, true)]), "ratelimits[0].limit"),
        (json!([limit("requests", -5, 1_000, true)]), "ratelimits[0].limit"),
        (json!([limit("requests", 1, 999, true)]), "ratelimits[0].durationMs"),
        (json!([limit("requests", 1, 2_592_000_001_i64, true)]), "ratelimits[0].durationMs"),
        (json!(many), "ratelimits holds at most 20"),
        (json!([limit("a", 1, 1_000, true), limit("a", 2, 1_000, true)]), "ratelimits[1].name"),
    ];
    let keys_before = app.key_count().await;
    for (limits, field) in &cases {
        let r = app.post("/v1/keys", json!({"name": "limited", "ratelimits": limits})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.error().starts_with(field), "{} should name {field}", r.error());
        let r = app.post("/v1/identities", json!({"externalId": "x", "ratelimits": limits})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.error().starts_with(field), "{} should name {field}", r.error());
    }
    for external_id in [String::new(), "x".repeat(257)] {
        let r = app.post("/v1/identities", json!({"externalId": external_id})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_external_id"));
        assert!(r.error().starts_with("externalId"));
        let r = app.post("/v1/keys", json!({"name": "k", "externalId": external_id})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_external_id"));
    }
    // A key refused for another reason does not create its identity.
    let r = app.post("/v1/keys", json!({"name": "k", "externalId": "ghost", "scopes": ["bad scope"]})).await;
    assert_eq!(r.status, 400);
    assert_eq!(app.key_count().await, keys_before);
    assert_eq!(app.get("/v1/identities").await.body["data"], json!([]));
    app.stop().await;
}
