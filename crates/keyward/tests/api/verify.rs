//! POST /v1/keys/verify: every code it answers.

use keyward_core::token::{Environment, generate_with_id, parse};
use serde_json::json;

use crate::helpers::spawn_app;

async fn every_code() {
    let app = spawn_app().await;
    let key =
        app.create_key(json!({"scopes": ["read"], "resources": ["site_abc123"], "metadata": {"plan": "pro"}})).await;

    let v = app
        .verify(&key.secret, json!({"permission": "campaigns:read", "resource": "site_abc123", "method": "GET"}))
        .await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["code"], "VALID");
    assert_eq!(v["keyId"], key.id.as_str());
    assert_eq!(v["workspaceId"], app.workspace_id.as_str());
    assert_eq!(v["type"], "secret");
    assert_eq!(v["permissions"], json!(["read"]));
    assert_eq!(v["roles"], json!([]));
    assert_eq!(v["meta"]["plan"], "pro");

    let v = app.verify(&key.secret, json!({"resource": "site_xyz789"})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("FORBIDDEN_RESOURCE")));
    assert_eq!(v["message"], "This API key cannot access site_xyz789");

    let v = app.verify(&key.secret, json!({"method": "DELETE"})).await;
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(v["message"], "Insufficient permissions. This key has read-only access.");
    let v = app.verify(&key.secret, json!({"permission": "keys:manage"})).await;
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS");

    for bad in ["", "kw_live_", "not a key", "kw_live_0123456789abcdef", &format!("{}A", key.secret)] {
        assert_eq!(app.verify_code(bad).await, "MALFORMED", "{bad:?}");
    }
    // A mistyped character fails the checksum.
    let mut typo = key.secret.clone().into_bytes();
    let last = typo.len() - 10;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    assert_eq!(app.verify_code(&String::from_utf8(typo).unwrap()).await, "MALFORMED");

    let unknown = keyward_core::token::generate("kw", Environment::Live);
    assert_eq!(app.verify_code(unknown.expose()).await, "NOT_FOUND");
    assert_eq!(app.verify_code(unknown.expose()).await, "NOT_FOUND", "remembered as unknown");

    let id = parse(&key.secret).unwrap().id.to_owned();
    let forged = generate_with_id("kw", Environment::Live, &id);
    let v = app.verify(forged.expose(), json!({})).await;
    assert_eq!(v["code"], "INVALID_SECRET");

    let soon = app.in_secs(60);
    let expiring = app.create_key(json!({"expiresAt": soon})).await;
    assert_eq!(app.verify_code(&expiring.secret).await, "VALID");
    app.clock.advance(std::time::Duration::from_secs(59));
    assert_eq!(app.verify_code(&expiring.secret).await, "VALID");
    app.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.verify_code(&expiring.secret).await, "EXPIRED");

    app.post_empty(&format!("/v1/keys/{}/deactivate", key.id)).await;
    assert_eq!(app.verify_code(&key.secret).await, "INACTIVE");
    app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await;
    assert_eq!(app.verify_code(&key.secret).await, "REVOKED");
    app.stop().await;
}

async fn flags_and_full_access() {
    let app = spawn_app().await;
    let full = app.create_key(json!({"scopes": ["*"]})).await;
    assert_eq!(
        app.verify(&full.secret, json!({"permission": "anything:future", "method": "DELETE"})).await["code"],
        "VALID"
    );
    let ro = app.create_key(json!({"scopes": ["*"], "readOnly": true})).await;
    assert_eq!(app.verify(&ro.secret, json!({"method": "POST"})).await["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(app.verify(&ro.secret, json!({"permission": "keys:read"})).await["code"], "VALID");
    let admin = app.create_key(json!({"administrator": true})).await;
    assert_eq!(app.verify(&admin.secret, json!({"permission": "campaigns:delete"})).await["code"], "VALID");
    assert_eq!(
        app.verify(&admin.secret, json!({"permission": "keys:manage"})).await["code"],
        "INSUFFICIENT_PERMISSIONS"
    );
    let acct = app.create_key(json!({"accountAdministrator": true})).await;
    assert_eq!(app.verify(&acct.secret, json!({"permission": "keys:manage"})).await["code"], "VALID");
    let write = app.create_key(json!({"scopes": ["write"]})).await;
    assert_eq!(
        app.verify(&write.secret, json!({"permission": "contacts:write", "method": "PUT"})).await["code"],
        "VALID"
    );
    app.stop().await;
}

/// `permission` as an expression (seed 004): AND binds tighter than OR.
async fn permission_expressions() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["sources:view", "channels:publish"]})).await;
    let check = |expr: &'static str| {
        let secret = key.secret.clone();
        let app = &app;
        async move { app.verify(&secret, json!({"permission": expr})).await }
    };
    assert_eq!(check("sources:view AND (channels:edit OR channels:publish)").await["code"], "VALID");
    assert_eq!(check("channels:edit OR sources:view AND channels:publish").await["code"], "VALID");
    let v = check("sources:view AND (channels:edit OR tags:edit)").await;
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(v["message"], "Insufficient permissions. This key lacks the channels:edit permission.");
    let ro = app.create_key(json!({"scopes": ["*"], "readOnly": true})).await;
    let v = app.verify(&ro.secret, json!({"permission": "sources:view AND sources:edit"})).await;
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS", "the read-only flag takes precedence");
    for bad in ["sources:view AND", "(sources:view", "sources:view channels:edit", "sources:view OR OR a:b"] {
        let r = app.post("/v1/keys/verify", json!({"key": key.secret, "permission": bad})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_permission"), "{bad}");
        assert!(!r.error().contains(bad), "the expression is not echoed");
    }
    app.stop().await;
}

async fn bad_verify_requests() {
    let app = spawn_app().await;
    let key = app.create_key(json!({})).await;
    for (extra, code) in [
        (json!({"permission": "campaigns"}), "invalid_permission"),
        (json!({"permission": "a:*"}), "invalid_permission"),
        (json!({"resource": "a b"}), "invalid_resource"),
        (json!({"method": "G E T"}), "invalid_method"),
    ] {
        let mut body = json!({"key": key.secret});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post("/v1/keys/verify", body).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, code));
    }
    let r = app.post("/v1/keys/verify", json!({})).await;
    assert_eq!(r.status, 400);
    let r = app.post("/v1/keys/verify", json!({"key": key.secret, "labels": []})).await;
    assert_eq!(r.status, 400);
    app.stop().await;
}

backend_tests!(every_code, flags_and_full_access, permission_expressions, bad_verify_requests);
