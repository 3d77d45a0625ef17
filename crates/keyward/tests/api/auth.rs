//! Who may call what: missing, bad, revoked and expired caller keys; tiers;
//! and workspaces that never see each other.

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

async fn caller_keys_that_do_not_authenticate() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/v1/keys", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "authentication_required");
    assert!(r.headers.contains_key("www-authenticate"));
    let unknown = keyward_core::token::generate("kw", keyward_core::token::Environment::Live);
    for bad in ["garbage", "kw_live_x", unknown.expose()] {
        app.call(Method::GET, "/v1/keys", Some(bad), None).await.assert_error(401, "Invalid API key");
    }
    let key = app.create_key(json!({"scopes": ["admin"]})).await;
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&key.secret), None).await.status, 200);
    app.post_empty(&format!("/v1/keys/{}/deactivate", key.id)).await;
    app.call(Method::GET, "/v1/keys", Some(&key.secret), None).await.assert_error(401, "Invalid API key");
    app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await;
    app.call(Method::GET, "/v1/keys", Some(&key.secret), None).await.assert_error(401, "Invalid API key");

    let soon = app.in_secs(60);
    let expiring = app.create_key(json!({"scopes": ["admin"], "expiresAt": soon})).await;
    app.clock.advance(std::time::Duration::from_secs(61));
    app.call(Method::GET, "/v1/keys", Some(&expiring.secret), None).await.assert_error(401, "API key has expired");
    app.stop().await;
}

async fn read_and_write_tiers_cannot_manage_keys() {
    let app = spawn_app().await;
    let read = app.create_key(json!({"scopes": ["read"]})).await;
    let write = app.create_key(json!({"scopes": ["write"]})).await;
    let target = app.create_key(json!({})).await;
    let before = app.key_count().await;
    for caller in [&read, &write] {
        let k = Some(caller.secret.as_str());
        let calls = [
            (Method::GET, "/v1/keys".to_owned(), None),
            (Method::POST, "/v1/keys".to_owned(), Some(json!({"name": "nope"}))),
            (Method::GET, format!("/v1/keys/{}", target.id), None),
            (Method::PATCH, format!("/v1/keys/{}", target.id), Some(json!({"name": "nope"}))),
            (Method::DELETE, format!("/v1/keys/{}", target.id), None),
            (Method::POST, format!("/v1/keys/{}/revoke", target.id), None),
            (Method::POST, format!("/v1/keys/{}/roll", target.id), None),
            (Method::POST, "/v1/keys/verify".to_owned(), Some(json!({"key": target.secret}))),
            (Method::POST, "/v1/keys/import".to_owned(), Some(json!({"name": "x", "key": "legacy_abcdefghijklmnop"}))),
            (Method::PATCH, "/v1/workspace".to_owned(), Some(json!({"maxKeys": 1}))),
            (Method::GET, "/api/api-keys".to_owned(), None),
            (Method::POST, "/api/api-keys".to_owned(), Some(json!({"name": "nope", "scope": "read"}))),
        ];
        for (method, path, body) in calls {
            let r = app.call(method.clone(), &path, k, body).await;
            assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
            assert_eq!(r.code(), "insufficient_permissions");
        }
    }
    app.call(Method::POST, "/v1/keys", Some(&read.secret), Some(json!({"name": "n"})))
        .await
        .assert_error(403, "Insufficient permissions. This key has read-only access.");
    assert_eq!(app.key_count().await, before);
    assert_eq!(app.verify_code(&target.secret).await, "VALID", "target untouched");

    // keys:manage alone is enough to manage keys; keys:verify alone to verify.
    let manager = app.create_key(json!({"scopes": ["keys:manage"]})).await;
    let r = app.call(Method::POST, "/v1/keys", Some(&manager.secret), Some(json!({"name": "by manager"}))).await;
    assert_eq!(r.status, 201);
    let verifier = app.create_key(json!({"scopes": ["keys:verify"]})).await;
    let r =
        app.call(Method::POST, "/v1/keys/verify", Some(&verifier.secret), Some(json!({"key": target.secret}))).await;
    assert_eq!(r.body["code"], "VALID");
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&verifier.secret), None).await.status, 403);
    app.stop().await;
}

async fn workspaces_never_see_each_other() {
    let app = spawn_app().await;
    let mine = app.create_key(json!({"name": "mine", "scopes": ["read"]})).await;
    let (other_ws, other_admin) = app.other_workspace().await;
    assert_ne!(other_ws, app.workspace_id);
    let k = Some(other_admin.as_str());
    let id = &mine.id;
    let calls = [
        (Method::GET, format!("/v1/keys/{id}"), None),
        (Method::PATCH, format!("/v1/keys/{id}"), Some(json!({"name": "stolen"}))),
        (Method::DELETE, format!("/v1/keys/{id}"), None),
        (Method::POST, format!("/v1/keys/{id}/clone"), None),
        (Method::POST, format!("/v1/keys/{id}/roll"), None),
        (Method::POST, format!("/v1/keys/{id}/deactivate"), None),
        (Method::POST, format!("/v1/keys/{id}/activate"), None),
        (Method::POST, format!("/v1/keys/{id}/revoke"), None),
        (Method::GET, format!("/v1/keys/{id}/usage"), None),
        (Method::DELETE, format!("/api/api-keys?id={id}"), None),
    ];
    for (method, path, body) in calls {
        let r = app.call(method.clone(), &path, k, body).await;
        r.assert_error(404, "API key not found");
    }
    let list = app.call(Method::GET, "/v1/keys", k, None).await;
    assert!(!list.body.to_string().contains(id.as_str()));
    let compat = app.call(Method::GET, "/api/api-keys", k, None).await;
    assert!(!compat.body.to_string().contains(id.as_str()));
    let v = app.call(Method::POST, "/v1/keys/verify", k, Some(json!({"key": mine.secret}))).await;
    assert_eq!(v.body["code"], "NOT_FOUND");
    assert_eq!(v.body["keyId"], serde_json::Value::Null);
    let ws = app.call(Method::GET, "/v1/workspace", k, None).await;
    assert_eq!(ws.body["id"], other_ws.as_str());
    // The same name is free in another workspace.
    let r = app.call(Method::POST, "/v1/keys", k, Some(json!({"name": "mine"}))).await;
    assert_eq!(r.status, 201);
    // And nothing of ours changed.
    let r = app.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(
        (r.body["name"].as_str(), r.body["state"].as_str(), r.body["version"].as_i64()),
        (Some("mine"), Some("active"), Some(1))
    );
    assert_eq!(app.verify_code(&mine.secret).await, "VALID");
    app.stop().await;
}

backend_tests!(
    caller_keys_that_do_not_authenticate,
    read_and_write_tiers_cannot_manage_keys,
    workspaces_never_see_each_other
);
