//! Create, list, get, edit, clone, roll, deactivate, activate, revoke, delete.

use serde_json::json;

use crate::helpers::{eventually, spawn_app};

async fn create_shows_the_secret_once_then_only_masked() {
    let app = spawn_app().await;
    let key = app
        .create_key(json!({
            "name": "Production Server", "description": "billing", "scopes": ["read", "campaigns:get"],
            "resources": ["site_abc123"], "expiresIn": 30, "metadata": {"email": "ops@example.com", "timeZone": "UTC"}
        }))
        .await;
    assert!(key.secret.starts_with("kw_live_"), "{}", key.secret);
    assert_eq!(key.body["name"], "Production Server");
    assert_eq!(key.body["scopes"], json!(["read", "campaigns:get"]));
    assert_eq!(key.body["state"], "active");
    assert!(key.body["expiresAt"].is_string());
    assert_eq!(key.body["metadata"]["timeZone"], "UTC");

    let got = app.get(&format!("/v1/keys/{}", key.id)).await;
    assert_eq!(got.status, 200);
    assert!(got.body.get("secret").is_none());
    let masked = got.str("maskedKey");
    assert!(masked.starts_with("kw_live_") && masked.contains('…'));
    assert!(!got.body.to_string().contains(&key.secret[8..]));
    assert_eq!(got.headers["etag"], "\"1\"");

    let list = app.get("/v1/keys").await;
    assert!(!list.body.to_string().contains(&key.secret[8..]));
    assert_eq!(app.verify_code(&key.secret).await, "VALID");
    app.stop().await;
}

async fn list_paginates_and_filters() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_key(json!({"name": format!("batch {i}")})).await;
    }
    let first = app.get("/v1/keys?limit=2").await;
    assert_eq!(first.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["data"][0]["name"], "batch 4", "newest first");
    let mut seen = Vec::new();
    let mut cursor = first.body["nextCursor"].as_str().map(str::to_owned);
    seen.extend(first.body["data"].as_array().unwrap().iter().map(|k| k["id"].clone()));
    while let Some(c) = cursor {
        let page = app.get(&format!("/v1/keys?limit=2&cursor={c}")).await;
        seen.extend(page.body["data"].as_array().unwrap().iter().map(|k| k["id"].clone()));
        cursor = page.body["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 8, "5 keys plus the workspace's 3, each once");
    seen.dedup();
    assert_eq!(seen.len(), 8);

    let by_name = app.get("/v1/keys?name=BATCH%203").await;
    assert_eq!(by_name.body["data"].as_array().unwrap().len(), 1);
    let k = by_name.body["data"][0]["id"].as_str().unwrap().to_owned();
    app.post_empty(&format!("/v1/keys/{k}/deactivate")).await;
    let inactive = app.get("/v1/keys?state=inactive").await;
    assert_eq!(inactive.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(inactive.body["data"][0]["id"], k.as_str());
    // The JavaScript key is publishable.
    assert_eq!(app.get("/v1/keys?type=secret").await.body["data"].as_array().unwrap().len(), 7);
    // Filters that are not filters.
    app.get("/v1/keys?state=sleeping").await.assert_error(400, "state must be: active, inactive, locked or revoked");
    app.get("/v1/keys?limit=0").await.assert_error(400, "limit must be between 1 and 200");
    app.get("/v1/keys?limit=abc").await.code();
    assert_eq!(app.get("/v1/keys?limit=abc").await.status, 400);
    app.get("/v1/keys?cursor=zzz").await.assert_error(400, "cursor is not valid");
    app.get("/v1/keys?type=public").await.assert_error(400, "type must be: secret, publishable or client");
    app.stop().await;
}

async fn edit_changes_what_it_names_and_honours_if_match() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"name": "old", "description": "d", "scopes": ["read"], "expiresIn": 10})).await;
    let path = format!("/v1/keys/{}", key.id);
    let r = app
        .patch(&path, json!({"name": "new", "description": null, "scopes": ["write"], "metadata": {"phone": "+1"}, "resources": ["site_a"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "new");
    assert_eq!(r.body["description"], serde_json::Value::Null);
    assert_eq!(r.body["scopes"], json!(["write"]));
    assert_eq!(r.body["resources"], json!(["site_a"]));
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.headers["etag"], "\"2\"");
    // The change reaches verification at once (the cache follows writes).
    let v = app.verify(&key.secret, json!({"method": "POST", "resource": "site_a"})).await;
    assert_eq!(v["code"], "VALID", "{v}");

    // Expiry may only come closer.
    let sooner = (chrono::Utc::now() + chrono::Duration::days(5)).to_rfc3339();
    assert_eq!(app.patch(&path, json!({"expiresAt": sooner})).await.status, 200);
    let later = (chrono::Utc::now() + chrono::Duration::days(50)).to_rfc3339();
    let r = app.patch(&path, json!({"expiresAt": later})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "expiry_extension");
    assert_eq!(app.patch(&path, json!({"expiresAt": null})).await.status, 400);

    // If-Match.
    let stale = app.client_patch_with_if_match(&path, "\"1\"", json!({"name": "stale"})).await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    let current = app.get(&path).await.headers["etag"].to_str().unwrap().to_owned();
    let ok = app.client_patch_with_if_match(&path, &current, json!({"name": "fresh"})).await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.get(&path).await.body["name"], "fresh");
    app.stop().await;
}

impl crate::helpers::TestApp {
    async fn client_patch_with_if_match(
        &self,
        path: &str,
        etag: &str,
        body: serde_json::Value,
    ) -> crate::helpers::Resp {
        let resp = reqwest::Client::new()
            .patch(self.url(path))
            .bearer_auth(&self.admin_key)
            .header("if-match", etag)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        crate::helpers::Resp { status, headers, body: resp.json().await.unwrap() }
    }
}

async fn clone_makes_a_new_key_with_the_same_settings() {
    let app = spawn_app().await;
    let key = app
        .create_key(json!({"name": "svc", "scopes": ["campaigns:get"], "resources": ["site_a"], "metadata": {"a": 1}}))
        .await;
    let r = app.post_empty(&format!("/v1/keys/{}/clone", key.id)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_ne!(r.str("id"), key.id);
    assert_ne!(r.str("secret"), key.secret);
    assert_eq!(r.body["name"], "svc (clone)");
    assert_eq!(r.body["scopes"], key.body["scopes"]);
    assert_eq!(r.body["resources"], key.body["resources"]);
    assert_eq!(r.body["metadata"], key.body["metadata"]);
    assert_eq!(app.verify_code(&r.str("secret")).await, "VALID");
    assert_eq!(app.verify_code(&key.secret).await, "VALID", "the original still works");
    let named = app.post(&format!("/v1/keys/{}/clone", key.id), json!({"name": "svc v2"})).await;
    assert_eq!(named.body["name"], "svc v2");
    // Cloning again does not fail on the taken name.
    for expected in ["svc (clone 2)", "svc (clone 3)"] {
        let r = app.post_empty(&format!("/v1/keys/{}/clone", key.id)).await;
        assert_eq!((r.status.as_u16(), r.body["name"].as_str()), (201, Some(expected)), "{}", r.body);
    }
    // A name given for the clone must be free.
    let r = app.post(&format!("/v1/keys/{}/clone", key.id), json!({"name": "svc v2"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_name"));
    app.stop().await;
}

async fn roll_keeps_the_id_and_honours_the_grace_period() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["read"]})).await;
    let r = app.post_empty(&format!("/v1/keys/{}/roll", key.id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("id"), key.id);
    let second = r.str("secret");
    assert_ne!(second, key.secret);
    assert_eq!(app.verify_code(&key.secret).await, "INVALID_SECRET", "no grace: the old secret stops at once");
    assert_eq!(app.verify_code(&second).await, "VALID");

    let r = app.post(&format!("/v1/keys/{}/roll", key.id), json!({"gracePeriodSeconds": 3600})).await;
    let third = r.str("secret");
    assert!(r.body["previousSecretExpiresAt"].is_string());
    assert_eq!(app.verify_code(&second).await, "VALID", "within the grace period");
    assert_eq!(app.verify_code(&third).await, "VALID");
    app.clock.advance(std::time::Duration::from_secs(3599));
    assert_eq!(app.verify_code(&second).await, "VALID", "at the end of the grace period");
    app.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.verify_code(&second).await, "INVALID_SECRET", "after the grace period");
    assert_eq!(app.verify_code(&third).await, "VALID");
    let r = app.post(&format!("/v1/keys/{}/roll", key.id), json!({"gracePeriodSeconds": 99999999})).await;
    assert_eq!(r.status, 400);
    app.stop().await;
}

async fn deactivate_activate_revoke_delete() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["*"]})).await;
    let path = format!("/v1/keys/{}", key.id);

    app.delete(&path).await.assert_error(409, "API key is active. Deactivate it before deleting it.");
    let r = app.post_empty(&format!("{path}/deactivate")).await;
    assert_eq!(r.body["state"], "inactive");
    assert_eq!(app.verify_code(&key.secret).await, "INACTIVE");
    let r = app.post_empty(&format!("{path}/activate")).await;
    assert_eq!(r.body["state"], "active");
    assert_eq!(app.verify_code(&key.secret).await, "VALID");

    let r = app.post_empty(&format!("{path}/revoke")).await;
    assert_eq!(r.body["state"], "revoked");
    assert!(r.body["revokedAt"].is_string());
    assert_eq!(app.verify_code(&key.secret).await, "REVOKED");
    assert_eq!(app.post_empty(&format!("{path}/activate")).await.status, 409);
    assert_eq!(app.post_empty(&format!("{path}/roll")).await.status, 409);
    assert_eq!(app.patch(&path, json!({"name": "x"})).await.status, 409);

    assert_eq!(app.delete(&path).await.status, 204);
    app.get(&path).await.assert_error(404, "API key not found");
    assert_eq!(app.verify_code(&key.secret).await, "NOT_FOUND");
    app.delete(&path).await.assert_error(404, "API key not found");
    app.stop().await;
}

async fn names_are_unique_among_live_keys() {
    let app = spawn_app().await;
    let a = app.create_key(json!({"name": "twin"})).await;
    let r = app.post("/v1/keys", json!({"name": "twin"})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "duplicate_name");
    app.post_empty(&format!("/v1/keys/{}/revoke", a.id)).await;
    app.create_key(json!({"name": "twin"})).await;

    // Names that look the same are the same: Unicode NFC, and no invisible
    // characters.
    let composed = app.create_key(json!({"name": "caf\u{e9}"})).await;
    assert_eq!(composed.body["name"], "café");
    let r = app.post("/v1/keys", json!({"name": "cafe\u{301}"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_name"), "decomposed é is the same name");
    let found = app.get("/v1/keys?name=cafe%CC%81").await;
    assert_eq!(found.body["data"].as_array().unwrap().len(), 1, "the filter is normalised too");
    for sneaky in ["twin\u{200b}", "\u{202e}niwt", "tw\u{2066}in", "\u{feff}twin"] {
        let r = app.post("/v1/keys", json!({"name": sneaky})).await;
        r.assert_error(400, "API key name must not contain zero-width or bidirectional control characters");
    }
    let r = app.patch("/v1/workspace", json!({"name": "Acme\u{200d}"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_workspace_name"));
    app.stop().await;
}

async fn workspace_key_limit_and_expiry_policy() {
    let app = spawn_app().await;
    let r = app.get("/v1/workspace").await;
    assert_eq!(r.body["maxKeys"], serde_json::Value::Null);
    let r = app.patch("/v1/workspace", json!({"maxKeys": 4})).await;
    assert_eq!(r.body["maxKeys"], 4);
    let one = app.create_key(json!({})).await; // with the workspace's 3: 4 live keys
    let before = app.key_count().await;
    app.post("/v1/keys", json!({"name": "third"}))
        .await
        .assert_error(403, "API key limit reached. Upgrade to create more keys.");
    app.post_empty(&format!("/v1/keys/{}/clone", one.id))
        .await
        .assert_error(403, "API key limit reached. Upgrade to create more keys.");
    assert_eq!(app.key_count().await, before, "nothing created");
    app.post_empty(&format!("/v1/keys/{}/revoke", one.id)).await;
    app.create_key(json!({"name": "third"})).await;
    app.patch("/v1/workspace", json!({"maxKeys": null})).await;

    let r = app.patch("/v1/workspace", json!({"defaultKeyLifetimeDays": 365, "maxKeyLifetimeDays": 400})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let k = app.create_key(json!({})).await;
    let expires = chrono::DateTime::parse_from_rfc3339(k.body["expiresAt"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((364..=365).contains(&days), "default lifetime applied: {days}");
    app.post("/v1/keys", json!({"name": "long", "expiresIn": 401}))
        .await
        .assert_error(400, "Key lifetime exceeds the workspace maximum of 400 days");
    app.create_key(json!({"expiresIn": 30})).await;
    let r = app.patch("/v1/workspace", json!({"defaultKeyLifetimeDays": 500})).await;
    assert_eq!(r.status, 400);
    app.patch("/v1/workspace", json!({"defaultKeyLifetimeDays": 0})).await.code();
    assert_eq!(app.patch("/v1/workspace", json!({"maxKeys": -1})).await.status, 400);
    assert_eq!(app.patch("/v1/workspace", json!({"tokenPrefix": "Bad Prefix"})).await.status, 400);
    app.patch("/v1/workspace", json!({"tokenPrefix": "acme"})).await;
    let k = app.create_key(json!({"environment": "test", "expiresIn": 3})).await;
    assert!(k.secret.starts_with("acme_test_"), "{}", k.secret);
    assert_eq!(app.verify_code(&k.secret).await, "VALID");
    app.stop().await;
}

/// Seed 004's mandatory expiry: requireExpiry, then every live key brought
/// in line at once.
async fn required_expiry_applies_to_new_keys_and_then_to_every_live_key() {
    use keyward_server::clock::Clock;
    let app = spawn_app().await;
    let forever = app.create_key(json!({"name": "forever"})).await;
    let long = app.create_key(json!({"name": "long", "expiresIn": 900})).await;
    let short = app.create_key(json!({"name": "short", "expiresIn": 10})).await;
    let revoked = app.create_key(json!({"name": "revoked"})).await;
    app.post_empty(&format!("/v1/keys/{}/revoke", revoked.id)).await;
    // Required expiry needs a date to give.
    let r = app.patch("/v1/workspace", json!({"requireExpiry": true})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_policy"));
    assert!(r.error().starts_with("requireExpiry"), "{}", r.error());
    let r = app.post_empty("/v1/workspace/apply-expiry-policy").await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "no_expiry_policy"));
    let r = app.patch("/v1/workspace", json!({"requireExpiry": true, "defaultKeyLifetimeDays": 90})).await;
    assert_eq!((r.status.as_u16(), r.body["requireExpiry"].as_bool()), (200, Some(true)), "{}", r.body);
    let days = |v: &serde_json::Value| {
        let at = chrono::DateTime::parse_from_rfc3339(v["expiresAt"].as_str().unwrap()).unwrap();
        // Whole days (answers carry whole seconds).
        ((at.with_timezone(&chrono::Utc) - app.clock.now()).num_seconds() as f64 / 86_400.0).round() as i64
    };
    // New keys get the default lifetime; an edit cannot remove an expiry.
    let new = app.create_key(json!({"name": "new"})).await;
    assert_eq!(days(&new.body), 90);
    let r = app.patch(&format!("/v1/keys/{}", forever.id), json!({"name": "still forever"})).await;
    assert_eq!(r.status, 200, "other edits of a key without expiry still work");
    let r = app.patch(&format!("/v1/keys/{}", new.id), json!({"expiresAt": null})).await;
    assert_eq!(r.status, 400);
    // Existing keys keep their dates until the policy is applied.
    assert!(app.get(&format!("/v1/keys/{}", forever.id)).await.body["expiresAt"].is_null());
    app.patch("/v1/workspace", json!({"maxKeyLifetimeDays": 365})).await;
    let r = app.post_empty("/v1/workspace/apply-expiry-policy").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The workspace's own 3 keys and "forever" had none, "long" outlived
    // the maximum.
    assert_eq!(r.body["updated"], 5, "{}", r.body);
    assert_eq!(days(&app.get(&format!("/v1/keys/{}", forever.id)).await.body), 90);
    assert_eq!(days(&app.get(&format!("/v1/keys/{}", long.id)).await.body), 365);
    assert_eq!(days(&app.get(&format!("/v1/keys/{}", short.id)).await.body), 10, "already within the policy");
    assert!(app.get(&format!("/v1/keys/{}", revoked.id)).await.body["expiresAt"].is_null(), "revoked keys stay");
    assert_eq!(app.verify_code(&forever.secret).await, "VALID");
    assert_eq!(app.post_empty("/v1/workspace/apply-expiry-policy").await.body["updated"], 0, "nothing left to do");
    // At the new date the key expires, on this node's cache too (asked
    // through forward-auth: the admin key has expired as well).
    app.clock.advance(std::time::Duration::from_secs(91 * 86_400));
    let r = app.authorize(&forever.secret).await;
    assert_eq!((r.status().as_u16(), r.headers()["x-keyward-error"].to_str().unwrap()), (401, "api_key_expired"));
    app.stop().await;
}

async fn usage_is_counted_and_flushed_in_the_background() {
    let app = spawn_app().await;
    let key = app.create_key(json!({})).await;
    let path = format!("/v1/keys/{}/usage", key.id);
    assert_eq!(app.get(&path).await.body["total"], 0);
    for _ in 0..3 {
        app.verify_code(&key.secret).await;
    }
    app.verify_code(&format!("{}x", &key.secret)).await; // malformed: not a use
    eventually(|| async { app.get(&path).await.body["total"] == 3 }).await;
    let r = app.get(&path).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert!(r.body["lastUsed"].is_string());
    assert!(app.get(&format!("/v1/keys/{}", key.id)).await.body["lastUsed"].is_string());
    app.stop().await;
}

backend_tests!(
    create_shows_the_secret_once_then_only_masked,
    list_paginates_and_filters,
    edit_changes_what_it_names_and_honours_if_match,
    clone_makes_a_new_key_with_the_same_settings,
    roll_keeps_the_id_and_honours_the_grace_period,
    deactivate_activate_revoke_delete,
    names_are_unique_among_live_keys,
    workspace_key_limit_and_expiry_policy,
    required_expiry_applies_to_new_keys_and_then_to_every_live_key,
    usage_is_counted_and_flushed_in_the_background
);
