//! The seed contract: `/api/api-keys` as its documentation shows it.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{eventually, spawn_app};

async fn documented_examples_work_as_written() {
    let app = spawn_app().await;
    // Create API Key
    let r = app.post("/api/api-keys", json!({"name": "Production Server", "scope": "read", "expiresIn": null})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = &r.body["apiKey"];
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("kw_live_"));
    assert_eq!(created["name"], "Production Server");
    assert_eq!(created["scope"], "read");
    assert_eq!(created["expiresAt"], serde_json::Value::Null);
    let created_at = created["createdAt"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && created_at.len() == "2024-12-12T16:00:00.000Z".len(), "{created_at}");

    // Site-specific and expiring keys.
    let r = app
        .post("/api/api-keys", json!({"name": "example.com Analytics", "scope": "read", "siteId": "site_abc123"}))
        .await;
    let site_key = r.body["apiKey"]["key"].as_str().unwrap().to_owned();
    assert_eq!(r.body["apiKey"]["siteId"], "site_abc123");
    let v = app.verify(&site_key, json!({"resource": "site_xyz789"})).await;
    assert_eq!(v["message"], "This API key cannot access site_xyz789");
    let r = app.post("/api/api-keys", json!({"name": "Trial Integration", "scope": "read", "expiresIn": 30})).await;
    assert!(r.body["apiKey"]["expiresAt"].is_string());
    let r = app.post("/api/api-keys", json!({"name": "Admin Script", "scope": "admin"})).await;
    assert_eq!(r.body["apiKey"]["scope"], "admin");

    // List API Keys: masked, with lastUsed.
    app.verify_code(&secret).await;
    eventually(|| async {
        let list = app.get("/api/api-keys").await;
        let keys = list.body["apiKeys"].as_array().unwrap().clone();
        keys.iter().any(|k| k["id"] == id.as_str() && k["lastUsed"].is_string())
    })
    .await;
    let list = app.get("/api/api-keys").await;
    let keys = list.body["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 7, "four created plus the workspace's admin, JavaScript and REST keys");
    for k in keys {
        for field in ["id", "name", "key", "scope", "lastUsed", "createdAt", "expiresAt"] {
            assert!(k.get(field).is_some(), "{field} missing in {k}");
        }
        assert!(k["key"].as_str().unwrap().contains('…'));
    }
    assert!(!list.body.to_string().contains(&secret));

    // Delete API Key: revokes at once.
    let r = app.delete(&format!("/api/api-keys?id={id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"success": true, "message": "API key revoked successfully"}));
    app.call(Method::GET, "/api/api-keys", Some(&secret), None).await.assert_error(401, "Invalid API key");
    assert_eq!(app.verify_code(&secret).await, "REVOKED");
    let list = app.get("/api/api-keys").await;
    assert!(!list.body.to_string().contains(&id));
    app.delete(&format!("/api/api-keys?id={id}")).await.assert_error(404, "API key not found");
    app.stop().await;
}

async fn documented_errors() {
    let app = spawn_app().await;
    app.post("/api/api-keys", json!({"scope": "read"})).await.assert_error(400, "API key name is required");
    app.post("/api/api-keys", json!({"name": "", "scope": "read"})).await.assert_error(400, "API key name is required");
    app.post("/api/api-keys", json!({"name": "a", "scope": "superuser"}))
        .await
        .assert_error(400, "Invalid scope. Must be: read, write, or admin");
    app.post("/api/api-keys", json!({"name": "a"}))
        .await
        .assert_error(400, "Invalid scope. Must be: read, write, or admin");
    app.post("/api/api-keys", json!({"name": "a", "scope": "campaigns:get"}))
        .await
        .assert_error(400, "Invalid scope. Must be: read, write, or admin");
    app.delete("/api/api-keys").await.assert_error(400, "API key ID is required");
    app.delete("/api/api-keys?id=key_unknown").await.assert_error(404, "API key not found");
    app.call(Method::GET, "/api/api-keys", Some("zta_live_abc123"), None).await.assert_error(401, "Invalid API key");

    let read = app.post("/api/api-keys", json!({"name": "Reporting Dashboard", "scope": "read"})).await;
    let read_key = read.body["apiKey"]["key"].as_str().unwrap().to_owned();
    app.call(Method::POST, "/api/api-keys", Some(&read_key), Some(json!({"name": "x", "scope": "read"})))
        .await
        .assert_error(403, "Insufficient permissions. This key has read-only access.");

    app.patch("/v1/workspace", json!({"maxKeys": 2})).await;
    app.post("/api/api-keys", json!({"name": "one too many", "scope": "read"}))
        .await
        .assert_error(403, "API key limit reached. Upgrade to create more keys.");

    let soon = app.in_secs(60);
    app.patch("/v1/workspace", json!({"maxKeys": null})).await;
    let expiring = app.create_key(json!({"scopes": ["admin"], "expiresAt": soon})).await;
    app.clock.advance(std::time::Duration::from_secs(61));
    app.call(Method::GET, "/api/api-keys", Some(&expiring.secret), None).await.assert_error(401, "API key has expired");
    app.stop().await;
}

backend_tests!(documented_examples_work_as_written, documented_errors);
