//! A workspace's integration credentials: the JavaScript (publishable)
//! key, the default REST key and FTP access, and the check an FTP server
//! asks for (`POST /v1/ftp/authenticate`).

use std::time::Duration;

use keyward_store::{Change, Write};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, Resp, TestApp, eventually, spawn_app};

backend_tests!(
    every_workspace_has_its_three_credentials,
    an_older_workspace_gets_them_once_on_its_first_read,
    the_default_rest_key_is_an_ordinary_key,
    the_javascript_key_shows_its_value_after_a_roll_and_comes_back,
    ftp_logins_follow_rotation_disabling_and_the_site_id,
    wrong_ftp_passwords_lock_and_are_audited_per_minute,
    a_kept_ftp_password_is_shown_to_a_fresh_member_only,
    bad_ftp_requests_are_refused_and_change_nothing,
);

async fn integrations(app: &TestApp, key: &str) -> Resp {
    app.call(Method::GET, "/v1/integrations", Some(key), None).await
}

async fn ftp_login(app: &TestApp, server: &str, username: &str, password: &str) -> Resp {
    let body = json!({"username": username, "password": password, "ip": "198.51.100.7"});
    app.call(Method::POST, "/v1/ftp/authenticate", Some(server), Some(body)).await
}

/// The FTP server's own key.
async fn ftp_server_key(app: &TestApp) -> String {
    app.create_key(json!({"name": "ftp server", "scopes": ["ftp:authenticate"]})).await.secret
}

async fn rotate(app: &TestApp) -> String {
    let r = app.post_empty("/v1/integrations/ftp/rotate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let password = r.str("password");
    assert!(password.len() >= 22 && password.chars().all(|c| c.is_ascii_alphanumeric()), "≥ 128 bits");
    password
}

async fn every_workspace_has_its_three_credentials() {
    let app = spawn_app().await;
    let r = app.get("/v1/integrations").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let js = &r.body["javascriptKey"];
    assert_eq!((js["type"].clone(), js["name"].clone()), (json!("publishable"), json!("JavaScript API key")));
    assert_eq!(js["allowedOrigins"], json!(["http://localhost"]));
    let value = js["key"].as_str().unwrap();
    assert!(value.starts_with("kwpk_live_"), "the full publishable key: {value}");
    // The value is the key's: it verifies, from an allowed origin.
    let verified = app.verify(value, json!({"origin": "http://localhost"})).await;
    assert_eq!((verified["valid"].clone(), verified["keyId"].clone()), (json!(true), js["id"].clone()));
    let rest = &r.body["restKey"];
    assert_eq!((rest["name"].clone(), rest["scopes"].clone()), (json!("Default REST API key"), json!(["*"])));
    assert_eq!(rest["state"], "active");
    assert!(rest.get("secret").is_none() && rest.get("key").is_none(), "no secret: {rest}");
    let ftp = &r.body["ftp"];
    assert_eq!((ftp["username"].clone(), ftp["enabled"].clone()), (json!(app.workspace_id), json!(true)));
    assert_eq!((ftp["host"].clone(), ftp["locked"].clone()), (Value::Null, json!(false)));
    assert!(ftp.get("password").is_none());
    // The same on every read; both keys are listed with the others.
    let again = app.get("/v1/integrations").await;
    assert_eq!(again.body["javascriptKey"]["id"], js["id"]);
    assert_eq!(again.body["restKey"]["id"], rest["id"]);
    let listed: Vec<Value> = app.get("/v1/keys?limit=200").await.body["data"].as_array().unwrap().clone();
    for id in [&js["id"], &rest["id"]] {
        assert!(listed.iter().any(|k| &k["id"] == id), "{id} listed");
    }

    // A workspace created later has its own, made with it.
    let (other_id, other_key) = app.other_workspace().await;
    let o = integrations(&app, &other_key).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(o.body["ftp"]["username"], other_id.as_str());
    assert_ne!(o.body["restKey"]["id"], rest["id"]);

    // --ftp-host is shown beside the username.
    let with_host = app.sibling(|c| c.ftp_host = Some("ftp.example.com".into())).await;
    assert_eq!(with_host.get("/v1/integrations").await.body["ftp"]["host"], "ftp.example.com");

    // Reading needs integrations:read.
    let keys_only = app.create_key(json!({"scopes": ["keys:read"]})).await;
    let r = integrations(&app, &keys_only.secret).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_permissions"), "{}", r.body);
    let reader = app.create_key(json!({"scopes": ["integrations:read"]})).await;
    assert_eq!(integrations(&app, &reader.secret).await.status, 200);
}

async fn an_older_workspace_gets_them_once_on_its_first_read() {
    let app = spawn_app().await;
    // A workspace from before integrations: no credentials yet.
    let ws = keyward_core::workspace::Workspace::new("Older", chrono::Utc::now()).unwrap();
    app.services.store.commit(Change { writes: vec![Write::InsertWorkspace(ws.clone())] }).await.unwrap();
    let admin = app.services.workspaces.mint_admin_key(&ws.id).await.unwrap().secret.expose().to_owned();
    assert!(app.services.store.get_integrations(&ws.id).await.unwrap().is_none());
    let keys_before =
        app.call(Method::GET, "/v1/keys", Some(&admin), None).await.body["data"].as_array().unwrap().len();

    // Two nodes read at the same moment: one set is made.
    let node2 = app.sibling(|_| {}).await;
    let (a, b) = tokio::join!(integrations(&app, &admin), integrations(&node2, &admin));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200), "{} {}", a.body, b.body);
    assert_eq!(a.body["javascriptKey"]["id"], b.body["javascriptKey"]["id"]);
    assert_eq!(a.body["restKey"]["id"], b.body["restKey"]["id"]);
    assert_eq!(a.body["ftp"]["username"], ws.id.as_str());
    let keys_after = app.call(Method::GET, "/v1/keys", Some(&admin), None).await.body["data"].as_array().unwrap().len();
    assert_eq!(keys_after, keys_before + 2, "two keys made, once");
    let made = app.call(Method::GET, "/v1/audit?action=integrations.created", Some(&admin), None).await;
    assert_eq!(made.body["data"].as_array().unwrap().len(), 1, "{}", made.body);
}

async fn the_default_rest_key_is_an_ordinary_key() {
    let app = spawn_app().await;
    let rest_id = app.get("/v1/integrations").await.body["restKey"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{rest_id}");
    // Edited, deactivated and deleted like any other key.
    let r = app.patch(&path, json!({"description": "ours"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.get("/v1/integrations").await.body["restKey"]["description"], "ours");
    let r = app.post("/v1/integrations/rest-key", json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "rest_key_exists"), "{}", r.body);
    assert_eq!(app.post_empty(&format!("{path}/deactivate")).await.status, 200);
    assert!(app.delete(&path).await.status.is_success());
    assert_eq!(app.get("/v1/integrations").await.body["restKey"], Value::Null);

    // Making a new one needs Full Access: a developer (keys:manage) may not.
    app.add_member("dev@example.com", "a long enough password", &["developer"]).await;
    let dev = app.member_token("dev@example.com", "a long enough password").await;
    let r = app.call(Method::POST, "/v1/integrations/rest-key", Some(&dev), None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let manager = app.create_key(json!({"scopes": ["integrations:manage", "keys:manage"]})).await;
    let r = app.call(Method::POST, "/v1/integrations/rest-key", Some(&manager.secret), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{}", r.body);
    assert_eq!(app.get("/v1/integrations").await.body["restKey"], Value::Null, "nothing made");

    let owner = app.owner_token().await;
    let r = app.call(Method::POST, "/v1/integrations/rest-key", Some(&owner), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["scopes"].clone(), r.body["name"].clone()), (json!(["*"]), json!("Default REST API key")));
    let secret = r.str("secret");
    assert_eq!(app.verify(&secret, json!({})).await["valid"], true);
    assert_eq!(app.get("/v1/integrations").await.body["restKey"]["id"], r.body["id"]);
    let r = app.call(Method::POST, "/v1/integrations/rest-key", Some(&owner), None).await;
    assert_eq!(r.code(), "rest_key_exists");
}

async fn the_javascript_key_shows_its_value_after_a_roll_and_comes_back() {
    let app = spawn_app().await;
    let js = app.get("/v1/integrations").await.body["javascriptKey"].clone();
    let id = js["id"].as_str().unwrap();
    // Its origins are edited through the key.
    let r = app.patch(&format!("/v1/keys/{id}"), json!({"allowedOrigins": ["https://shop.example"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rolled = app.post(&format!("/v1/keys/{id}/roll"), json!({})).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    let now = app.get("/v1/integrations").await.body["javascriptKey"].clone();
    assert_eq!(now["key"], rolled.body["secret"], "the new value");
    assert_eq!(now["allowedOrigins"], json!(["https://shop.example"]));
    assert_ne!(now["key"], js["key"]);

    // Deleted, a new one is made on the next read.
    assert_eq!(app.post_empty(&format!("/v1/keys/{id}/deactivate")).await.status, 200);
    assert!(app.delete(&format!("/v1/keys/{id}")).await.status.is_success());
    let again = app.get("/v1/integrations").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.body["javascriptKey"]["id"], js["id"]);
    let value = again.body["javascriptKey"]["key"].as_str().unwrap();
    assert_eq!(app.verify(value, json!({"origin": "http://localhost"})).await["valid"], true);
}

async fn ftp_logins_follow_rotation_disabling_and_the_site_id() {
    let app = spawn_app().await;
    let server = ftp_server_key(&app).await;
    let first = rotate(&app).await;
    let ws = app.workspace_id.clone();
    let ok = ftp_login(&app, &server, &ws, &first).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body, json!({"workspaceId": ws, "home": ws, "readOnly": false}));

    // A rotation: the new password works, the old one no longer.
    let second = rotate(&app).await;
    assert_ne!(first, second);
    assert_eq!(ftp_login(&app, &server, &ws, &first).await.code(), "invalid_credentials");
    assert_eq!(ftp_login(&app, &server, &ws, &second).await.status, 200);

    // Disabled: the right password is refused, with the same answer.
    let r = app.post_empty("/v1/integrations/ftp/disable").await;
    assert_eq!((r.status.as_u16(), r.body["ftp"]["enabled"].clone()), (200, json!(false)), "{}", r.body);
    let refused = ftp_login(&app, &server, &ws, &second).await;
    assert_eq!((refused.status.as_u16(), refused.code()), (401, "invalid_credentials"));
    let unknown = ftp_login(&app, &server, "site_nobody", &second).await;
    assert_eq!(refused.body, unknown.body, "no hint which");
    assert_eq!(app.post_empty("/v1/integrations/ftp/enable").await.status, 200);
    assert_eq!(ftp_login(&app, &server, &ws, &second).await.status, 200);

    // The site id becomes the username; the workspace id no longer is.
    let r = app.patch("/v1/workspace", json!({"siteId": "site_abc123"})).await;
    assert_eq!((r.status.as_u16(), r.body["siteId"].clone()), (200, json!("site_abc123")), "{}", r.body);
    assert_eq!(app.get("/v1/integrations").await.body["ftp"]["username"], "site_abc123");
    let ok = ftp_login(&app, &server, "site_abc123", &second).await;
    assert_eq!((ok.status.as_u16(), ok.body["home"].clone()), (200, json!("site_abc123")), "{}", ok.body);
    assert_eq!(ftp_login(&app, &server, &ws, &second).await.status, 401);
    // Site ids are unique, and shaped so.
    let (_, other_key) = app.other_workspace().await;
    let taken =
        app.call(Method::PATCH, "/v1/workspace", Some(&other_key), Some(json!({"siteId": "site_abc123"}))).await;
    assert_eq!((taken.status.as_u16(), taken.code()), (409, "duplicate_site_id"), "{}", taken.body);
    for bad in ["ws_abc", "", "a/b", "-x"] {
        let r = app.patch("/v1/workspace", json!({"siteId": bad})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_site_id"), "{bad}: {}", r.body);
    }
    // Another workspace's FTP users are not this server's to check.
    let other_server = app.call(
        Method::POST,
        "/v1/keys",
        Some(&other_key),
        Some(json!({"name": "s", "scopes": ["ftp:authenticate"]})),
    );
    let other_server = other_server.await.str("secret");
    assert_eq!(ftp_login(&app, &other_server, "site_abc123", &second).await.status, 401);
    // Cleared, the workspace id is the username again.
    assert_eq!(app.patch("/v1/workspace", json!({"siteId": null})).await.status, 200);
    assert_eq!(ftp_login(&app, &server, &ws, &second).await.status, 200);
}

async fn wrong_ftp_passwords_lock_and_are_audited_per_minute() {
    let app = spawn_app().await;
    let server = ftp_server_key(&app).await;
    let password = rotate(&app).await;
    let ws = app.workspace_id.clone();
    assert_eq!(app.patch("/v1/workspace", json!({"lockout": {"threshold": 3}})).await.status, 200);
    for _ in 0..3 {
        assert_eq!(ftp_login(&app, &server, &ws, "not the password").await.status, 401);
    }
    // Counted after the answer, then locked: the right password is refused.
    eventually(|| async { app.get("/v1/integrations").await.body["ftp"]["locked"] == json!(true) }).await;
    assert_eq!(ftp_login(&app, &server, &ws, &password).await.code(), "invalid_credentials");
    let locked = app.get("/v1/audit?action=ftp.locked").await;
    assert_eq!(locked.body["data"].as_array().unwrap().len(), 1, "{}", locked.body);
    // A rotation lifts the lock.
    let fresh = rotate(&app).await;
    assert_eq!(app.get("/v1/integrations").await.body["ftp"]["locked"], false);
    assert_eq!(ftp_login(&app, &server, &ws, &fresh).await.status, 200);

    // An unknown username is recorded by the address it came from.
    assert_eq!(ftp_login(&app, &server, "site_nobody", &fresh).await.status, 401);
    // Refusals are recorded once the minute is over, one entry a minute.
    app.clock.advance(Duration::from_secs(61));
    let failed =
        || async { app.get("/v1/audit?action=ftp.auth_failed").await.body["data"].as_array().unwrap().clone() };
    eventually(|| async { failed().await.len() == 2 }).await;
    let entries = failed().await;
    let of = |kind: &str| entries.iter().find(|e| e["target"]["type"] == kind).unwrap_or_else(|| panic!("{entries:?}"));
    let user = of("ftp");
    let changes = &user["changes"];
    assert_eq!(changes["attempts"], 4, "{user}");
    assert_eq!(changes["codes"], json!({"invalid_credentials": 3, "locked": 1}), "{user}");
    assert_eq!(user["target"]["id"], ws.as_str(), "{user}");
    let address = of("address");
    assert_eq!(address["target"]["id"], "198.51.100.7", "{address}");
    assert_eq!(address["changes"]["codes"], json!({"unknown_username": 1}), "{address}");
    let text = Value::from(entries.clone()).to_string();
    assert!(!text.contains(&password) && !text.contains("not the password"), "no secret in the log");

    // Per address: past the limit, the address is refused (429).
    let limited = app.sibling(|c| c.ip_failure_limit = 2).await;
    for _ in 0..2 {
        assert_eq!(ftp_login(&limited, &server, "site_nobody", "x").await.status, 401);
    }
    let r = ftp_login(&limited, &server, &ws, &fresh).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_failures"), "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
}

async fn a_kept_ftp_password_is_shown_to_a_fresh_member_only() {
    let app = spawn_app().await;
    // Not kept unless the workspace allows recoverable secrets.
    rotate(&app).await;
    let owner = app.owner_token().await;
    let app = &app;
    let reveal =
        |token: String| async move { app.call(Method::POST, "/v1/integrations/ftp/reveal", Some(&token), None).await };
    assert_eq!(reveal(owner.clone()).await.code(), "not_recoverable");
    assert_eq!(app.patch("/v1/workspace", json!({"allowRecoverable": true})).await.status, 200);
    let password = rotate(app).await;
    assert_eq!(app.get("/v1/integrations").await.body["ftp"]["recoverable"], true);
    let r = reveal(owner).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.str("password"), r.str("username")), (password, app.workspace_id.clone()));
    assert_eq!(r.headers["cache-control"], "no-store");
    // Never to a key; a member must have re-authenticated lately.
    let r = reveal(app.admin_key.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_required"));
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    app.clock.advance(Duration::from_secs(6 * 60));
    let r = reveal(owner).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "reauthentication_required"), "{}", r.body);
    let shown = app.get("/v1/audit?action=ftp.password_revealed").await;
    assert_eq!(shown.body["data"].as_array().unwrap().len(), 1, "{}", shown.body);
}

async fn bad_ftp_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let server = ftp_server_key(&app).await;
    let password = rotate(&app).await;
    let ws = app.workspace_id.clone();
    let long = "u".repeat(257);
    let cases = [
        (json!({"username": long, "password": "p"}), "invalid_username", "username"),
        (json!({"username": ws, "password": "p".repeat(257)}), "invalid_password", "password"),
        (json!({"username": ws, "password": "secret\u{1}value"}), "invalid_password", "password"),
        (json!({"username": "a\nb", "password": "p"}), "invalid_username", "username"),
        (json!({"username": ws, "password": "p", "ip": "not-an-ip"}), "invalid_ip", "ip"),
        (json!({"username": ws}), "invalid_body", "password"),
        (json!({"username": ws, "password": "p", "extra": 1}), "invalid_body", "extra"),
    ];
    for (body, code, field) in cases {
        let r = app.call(Method::POST, "/v1/ftp/authenticate", Some(&server), Some(body.clone())).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, code), "{body}: {}", r.body);
        assert!(r.error().contains(field), "{}", r.body);
        assert!(!r.error().contains("secret") && !r.error().contains("uuu"), "no value echoed: {}", r.body);
    }
    // Only the FTP server's permission asks; only integrations:manage changes.
    let r = ftp_login(&app, &app.admin_key.clone(), &ws, &password).await;
    assert_eq!(r.status, 200, "the admin tier holds ftp:authenticate");
    let verifier = app.create_key(json!({"scopes": ["keys:verify"]})).await;
    assert_eq!(ftp_login(&app, &verifier.secret, &ws, &password).await.status, 403);
    let keys = app.create_key(json!({"scopes": ["keys:manage", "integrations:read"]})).await;
    for path in ["/v1/integrations/ftp/rotate", "/v1/integrations/ftp/disable", "/v1/integrations/ftp/enable"] {
        let r = app.call(Method::POST, path, Some(&keys.secret), None).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_permissions"), "{path}: {}", r.body);
    }
    // Nothing changed: the password still works, access is enabled.
    assert_eq!(ftp_login(&app, &server, &ws, &password).await.status, 200);
    assert_eq!(app.get("/v1/integrations").await.body["ftp"]["enabled"], true);
}
