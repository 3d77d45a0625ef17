//! Recoverable keys: sealed under the master key, revealed only to a
//! freshly re-authenticated member holding keys:reveal; master-key rotation.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, TestApp, spawn_app, spawn_app_with};

backend_tests!(
    recoverable_key_is_revealed_to_a_fresh_member_only,
    reveal_refuses_keys_stale_sessions_and_plain_keys,
    recoverable_needs_the_workspace_and_a_master_key,
    roll_reseals_revoke_forgets_and_clone_stays_recoverable,
    imported_plaintext_can_be_recoverable,
    master_key_rotation_rewraps_while_serving,
);

async fn allow_recoverable(app: &TestApp) {
    let r = app.patch("/v1/workspace", json!({"allowRecoverable": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["allowRecoverable"], true);
}

async fn reveal(app: &TestApp, token: &str, id: &str) -> crate::helpers::Resp {
    app.call(Method::POST, &format!("/v1/keys/{id}/reveal"), Some(token), None).await
}

async fn recoverable_key_is_revealed_to_a_fresh_member_only() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let key = app.create_key(json!({"name": "recoverable", "recoverable": true})).await;
    assert_eq!(key.body["recoverable"], true);
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    // Signing in is fresh: the secret comes back as it was shown at creation.
    let r = reveal(&app, &owner, &key.id).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("secret"), key.secret);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    // Also through the session cookie, from the server's own origin.
    let (_, cookie) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    let origin = format!("http://{}", app.addr);
    let headers = [("cookie", cookie.as_deref().unwrap()), ("origin", origin.as_str())];
    let r = app.call_with(Method::POST, &format!("/v1/keys/{}/reveal", key.id), &headers, None).await;
    assert_eq!(r.str("secret"), key.secret);
    // The revealed secret is the key: it verifies.
    assert_eq!(app.verify_code(&r.str("secret")).await, "VALID");
    // Five minutes on, a re-authentication is needed again.
    app.clock.advance(Duration::from_secs(5 * 60));
    let r = reveal(&app, &owner, &key.id).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "reauthentication_required"), "{}", r.body);
    assert!(r.body.get("secret").is_none());
    let re = app.call(Method::POST, "/v1/auth/reauth", Some(&owner), Some(json!({"password": OWNER_PASSWORD}))).await;
    assert_eq!(re.status, 200);
    assert_eq!(reveal(&app, &owner, &key.id).await.str("secret"), key.secret);
    // Nowhere else is the secret shown.
    let listed = app.get(&format!("/v1/keys/{}", key.id)).await;
    assert!(!listed.body.to_string().contains(&key.secret));
    app.stop().await;
}

async fn reveal_refuses_keys_stale_sessions_and_plain_keys() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let key = app.create_key(json!({"name": "recoverable", "recoverable": true})).await;
    // A key (even the admin key) never reveals.
    let r = app.post_empty(&format!("/v1/keys/{}/reveal", key.id)).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_required"));
    // A developer lacks keys:reveal, fresh or not.
    app.add_member("dev@example.com", "dev password!", &["developer"]).await;
    let dev = app.member_token("dev@example.com", "dev password!").await;
    let r = reveal(&app, &dev, &key.id).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_permissions"));
    assert!(r.error().contains("keys:reveal"));
    // An admin member may.
    app.add_member("admin@example.com", "admin password", &["admin"]).await;
    let admin = app.member_token("admin@example.com", "admin password").await;
    assert_eq!(reveal(&app, &admin, &key.id).await.str("secret"), key.secret);
    // A key created without `recoverable` has nothing to reveal.
    let plain = app.create_key(json!({"name": "plain"})).await;
    assert_eq!(plain.body["recoverable"], false);
    let r = reveal(&app, &admin, &plain.id).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "not_recoverable"));
    // Another workspace's key is not found.
    let (_, other_admin) = app.other_workspace().await;
    let theirs = app.call(Method::POST, "/v1/keys", Some(&other_admin), Some(json!({"name": "theirs"}))).await;
    assert_eq!(reveal(&app, &admin, &theirs.str("id")).await.status, 404);
    app.stop().await;
}

async fn recoverable_needs_the_workspace_and_a_master_key() {
    let app = spawn_app().await;
    let r = app.post("/v1/keys", json!({"name": "too soon", "recoverable": true})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "recoverable_not_allowed"));
    assert_eq!(app.key_count().await, crate::helpers::BOOTSTRAP_KEYS, "nothing created");
    app.stop().await;

    // A server without a master key cannot allow them at all.
    let app = spawn_app_with(|c| c.master_keys = None).await;
    let r = app.patch("/v1/workspace", json!({"allowRecoverable": true})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "master_key_required"), "{}", r.body);
    assert_eq!(app.get("/v1/workspace").await.body["allowRecoverable"], false);
    app.stop().await;
}

async fn roll_reseals_revoke_forgets_and_clone_stays_recoverable() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let key = app.create_key(json!({"name": "r", "recoverable": true})).await;
    let rolled = app.post_empty(&format!("/v1/keys/{}/roll", key.id)).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    let new_secret = rolled.str("secret");
    assert_ne!(new_secret, key.secret);
    assert_eq!(reveal(&app, &owner, &key.id).await.str("secret"), new_secret, "the rolled secret is kept");
    let clone = app.post(&format!("/v1/keys/{}/clone", key.id), json!({})).await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    assert_eq!(clone.body["recoverable"], true);
    assert_eq!(reveal(&app, &owner, &clone.str("id")).await.str("secret"), clone.str("secret"));
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await.status, 200);
    let r = reveal(&app, &owner, &key.id).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "key_revoked"));
    assert!(app.services.store.sealed_secret(&key.id).await.unwrap().is_none(), "the sealed secret is gone");
    app.stop().await;
}

async fn imported_plaintext_can_be_recoverable() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let legacy = "zta_live_abcdefghijklmnopqrstuvwxyz012345";
    let r = app
        .post("/v1/keys/import", json!({"key": legacy, "name": "legacy", "legacy": true, "recoverable": true}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(reveal(&app, &owner, &r.str("id")).await.str("secret"), legacy, "a legacy key can be copied");
    let digest = "0".repeat(64);
    let r = app
        .post("/v1/keys/import", json!({"sha256": digest, "prefix": "zz_", "name": "hashed", "recoverable": true}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "recoverable_needs_plaintext"));
    app.stop().await;
}

async fn master_key_rotation_rewraps_while_serving() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(app.create_key(json!({"name": format!("r{i}"), "recoverable": true})).await);
    }
    // An imported key may take an id like a PGP key's: its sealed secret
    // is still its own record (a rotation once looped on it for ever).
    let plain = "legacy_live_0123456789abcdefghijklmnop";
    let body = json!({"name": "pgp-like", "id": "pgp_collide", "key": plain, "recoverable": true});
    let imported = app.post("/v1/keys/import", body).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let old = keyward_core::sealed::Keyring::parse(crate::helpers::MASTER_KEY).unwrap();
    let in_use = app.services.store.master_keys_in_use().await.unwrap();
    assert_eq!(in_use, vec![old.current_id().to_owned()]);

    // The operator's rotation: new key first, old after, against the same database.
    let new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let both =
        Arc::new(keyward_core::sealed::Keyring::parse(&format!("{new_key},{}", crate::helpers::MASTER_KEY)).unwrap());
    let config = keyward_server::ServerConfig { master_keys: Some(both.clone()), ..Default::default() };
    let operator =
        keyward_server::Services::new(app.services.store.clone(), app.hasher.clone(), &config).await.unwrap();
    assert_eq!(operator.keys.rewrap_sealed().await.unwrap(), 4);
    assert_eq!(app.services.store.master_keys_in_use().await.unwrap(), vec![both.current_id().to_owned()]);
    assert_eq!(operator.keys.rewrap_sealed().await.unwrap(), 0, "nothing left to do");

    // A server with only the old key now refuses to start, naming the key it lacks.
    let old_only = keyward_server::ServerConfig { master_keys: Some(Arc::new(old)), ..Default::default() };
    let err = keyward_server::Services::new(app.services.store.clone(), app.hasher.clone(), &old_only)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains(both.current_id()), "{err}");
    // As does one with none.
    let none = keyward_server::ServerConfig::default();
    assert!(keyward_server::Services::new(app.services.store.clone(), app.hasher.clone(), &none).await.is_err());
    // The new key alone opens everything.
    let new_only = Arc::new(keyward_core::sealed::Keyring::parse(new_key).unwrap());
    let app2 = spawn_app_sharing(&app, new_only).await;
    let owner = app2.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    for k in &keys {
        let r = reveal(&app2, &owner, &k.id).await;
        assert_eq!(r.str("secret"), k.secret);
    }
    assert_eq!(reveal(&app2, &owner, "pgp_collide").await.str("secret"), plain);
    app2.stop().await;
    app.stop().await;
}

/// A second server on the first one's database, with other master keys.
async fn spawn_app_sharing(app: &TestApp, keys: Arc<keyward_core::sealed::Keyring>) -> TestApp {
    app.sibling(|c| c.master_keys = Some(keys)).await
}
