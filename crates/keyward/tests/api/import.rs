//! Importing keys from another system: plaintext, SHA-256, legacy.

use keyward_core::hash::{hex, sha256};
use serde_json::json;

use crate::helpers::{eventually, spawn_app};

async fn plaintext_and_hashed_imports_verify() {
    let app = spawn_app().await;
    let plain = "zta_live_abc123def456ghi789jkl012mno345pqr678";
    let r = app
        .post(
            "/v1/keys/import",
            json!({"name": "Production Server", "key": plain, "id": "key_abc123", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], "key_abc123");
    assert!(r.body.get("secret").is_none());
    assert_eq!(r.body["maskedKey"], "zta_live_abc1…r678");
    let v = app.verify(plain, json!({})).await;
    assert_eq!((v["code"].as_str(), v["keyId"].as_str()), (Some("VALID"), Some("key_abc123")));
    assert_eq!(app.verify_code("zta_live_abc123def456ghi789jkl012mno345pqr679").await, "NOT_FOUND");
    assert_eq!(app.verify_code("other_live_abc123def456ghi789jkl012mno345pqr679").await, "MALFORMED");

    let hashed = "zta_live_xyz789abc123xyz789abc123xyz789abc123";
    let r = app
        .post("/v1/keys/import", json!({"name": "Hashed", "sha256": hex(&sha256(hashed)), "prefix": "zta_live_"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("id");
    assert_eq!(app.verify_code(hashed).await, "VALID");
    // The first success re-hashes it to keyward's keyed scheme, in the background.
    eventually(|| async { app.get(&format!("/v1/keys/{id}")).await.body["version"] == 2 }).await;
    assert_eq!(app.verify_code(hashed).await, "VALID");

    // The same key cannot be imported twice.
    let r = app.post("/v1/keys/import", json!({"name": "again", "key": plain})).await;
    assert_eq!(r.status, 409);
    app.stop().await;
}

async fn keyward_keys_keep_their_id_and_legacy_keys_are_frozen() {
    let app = spawn_app().await;
    let token = keyward_core::token::generate("kw", keyward_core::token::Environment::Live);
    let id = keyward_core::token::parse(token.expose()).unwrap().key_id();
    let r = app.post("/v1/keys/import", json!({"name": "moved", "key": token.expose(), "legacy": true})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["legacy"], true);
    assert_eq!(app.verify_code(token.expose()).await, "VALID");
    let path = format!("/v1/keys/{id}");
    app.patch(&path, json!({"name": "x"})).await.assert_error(409, "Legacy API keys cannot be edited");
    app.post_empty(&format!("{path}/deactivate")).await;
    app.delete(&path).await.assert_error(409, "Legacy API keys cannot be deleted");
    app.post_empty(&format!("{path}/activate")).await;
    assert_eq!(app.verify_code(token.expose()).await, "VALID");
    app.stop().await;
}

async fn bad_imports_are_refused() {
    let app = spawn_app().await;
    let before = app.key_count().await;
    for (body, code) in [
        (json!({"name": "a"}), "import_source_required"),
        (json!({"name": "a", "key": "zta_live_abcdefghijklmnop", "sha256": "00"}), "import_source_required"),
        (json!({"name": "a", "key": "short"}), "invalid_import_key"),
        (json!({"name": "a", "sha256": "zz", "prefix": "zta_"}), "invalid_sha256"),
        (json!({"name": "a", "sha256": hex(&sha256("x"))}), "prefix_required"),
        (json!({"name": "a", "key": "abcdefghijklmnopqrstuvwxyz"}), "prefix_required"),
        (json!({"name": "a", "key": "zta_live_abcdefghijklmnop", "prefix": "xyz_"}), "invalid_prefix"),
        (json!({"name": "a", "key": "zta_live_abcdefghijklmnop", "id": "bad id"}), "invalid_id"),
        (json!({"key": "zta_live_abcdefghijklmnop"}), "name_required"),
    ] {
        let r = app.post("/v1/keys/import", body).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, code), "{}", r.body);
    }
    assert_eq!(app.key_count().await, before);
    app.stop().await;
}

backend_tests!(
    plaintext_and_hashed_imports_verify,
    keyward_keys_keep_their_id_and_legacy_keys_are_frozen,
    bad_imports_are_refused
);
