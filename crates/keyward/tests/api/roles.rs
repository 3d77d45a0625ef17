//! Roles: built-in and the workspace's own, drawn from the permission
//! catalogue, held by members and keys.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

backend_tests!(
    builtin_roles_are_listed_and_cannot_change,
    roles_draw_only_from_the_catalogue_and_account_permissions,
    a_custom_role_grants_members_its_account_permissions,
    roles_held_by_keys_or_members_stay_until_released,
    key_roles_with_tags_decide_verify_and_access,
    flags_take_precedence_over_roles,
    role_edits_reach_verification_at_once,
    a_keys_roles_count_for_its_own_api_calls,
);

async fn a_keys_roles_count_for_its_own_api_calls() {
    let app = spawn_app().await;
    app.post("/v1/roles", json!({"name": "key-manager", "permissions": ["keys:read", "keys:manage"]})).await;
    let viewer = app.create_key(json!({"name": "viewer key", "roles": ["viewer"]})).await;
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&viewer.secret), None).await.status, 200);
    let r = app.call(Method::POST, "/v1/keys", Some(&viewer.secret), Some(json!({"name": "x"}))).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_permissions"));
    let manager = app.create_key(json!({"name": "manager key", "roles": ["key-manager"]})).await;
    let r = app.call(Method::POST, "/v1/keys", Some(&manager.secret), Some(json!({"name": "made by a role"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&manager.secret), None).await.status, 403);
    app.stop().await;
}

async fn seed_roles(app: &TestApp) {
    declare_catalogue(app).await;
    for role in [
        json!({"name": "viewer-all", "permissions": ["sources:view"]}),
        json!({"name": "editor-eu", "permissions": ["sources:view", "sources:edit"], "tags": ["eu"]}),
        json!({"name": "channel-editor", "permissions": ["channels:edit"]}),
    ] {
        let r = app.post("/v1/roles", role).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

async fn check(app: &TestApp, key: &str, body: serde_json::Value) -> serde_json::Value {
    let mut body = body;
    body["key"] = json!(key);
    let r = app.post("/v1/keys/verify", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

async fn key_roles_with_tags_decide_verify_and_access() {
    let app = spawn_app().await;
    seed_roles(&app).await;
    let eu = app.create_key(json!({"name": "eu editor", "roles": ["editor-eu"]})).await;
    let edit = |tags: serde_json::Value| json!({"permission": "sources:edit", "tags": tags});
    assert_eq!(check(&app, &eu.secret, edit(json!(["eu"]))).await["code"], "VALID");
    assert_eq!(check(&app, &eu.secret, edit(json!(["us", "eu"]))).await["code"], "VALID");
    assert_eq!(check(&app, &eu.secret, edit(json!(["us"]))).await["code"], "INSUFFICIENT_PERMISSIONS");
    let untagged = check(&app, &eu.secret, json!({"permission": "sources:edit"})).await;
    assert_eq!(untagged["code"], "INSUFFICIENT_PERMISSIONS", "an object of unknown tags is not covered");
    let a = check(&app, &eu.secret, json!({"objectType": "sources"})).await;
    assert_eq!(a["roles"], json!(["editor-eu"]));
    assert_eq!(a["access"], json!({"view": true, "edit": true, "tags": ["eu"], "editTags": ["eu"]}));
    // Cumulative: an untagged role adds viewing everything.
    let both = app.create_key(json!({"name": "both", "roles": ["viewer-all", "editor-eu"]})).await;
    let a = check(&app, &both.secret, json!({"objectType": "sources"})).await;
    assert_eq!(a["access"], json!({"view": true, "edit": true, "tags": null, "editTags": ["eu"]}));
    assert_eq!(check(&app, &both.secret, json!({"permission": "sources:view"})).await["code"], "VALID");
    // Nothing at all on another type: the API answers an empty list.
    let a = check(&app, &both.secret, json!({"objectType": "channels"})).await;
    assert_eq!(a["access"], json!({"view": false, "edit": false, "tags": [], "editTags": []}));
    // Expressions combine roles.
    let expr = json!({"permission": "sources:view AND (channels:edit OR channels:admin)"});
    let ch = app.create_key(json!({"name": "ch", "roles": ["viewer-all", "channel-editor"]})).await;
    assert_eq!(check(&app, &ch.secret, expr.clone()).await["code"], "VALID");
    assert_eq!(check(&app, &both.secret, expr).await["code"], "INSUFFICIENT_PERMISSIONS");
    // Bad input names the field.
    for (body, code) in [
        (json!({"key": eu.secret, "tags": ["bad tag"]}), "invalid_tags"),
        (json!({"key": eu.secret, "objectType": "Not A Type"}), "invalid_object_type"),
    ] {
        let r = app.post("/v1/keys/verify", body).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, code));
    }
    app.stop().await;
}

async fn flags_take_precedence_over_roles() {
    let app = spawn_app().await;
    seed_roles(&app).await;
    let ro = app.create_key(json!({"name": "ro", "readOnly": true, "roles": ["editor-eu"]})).await;
    let edit_eu = json!({"permission": "sources:edit", "tags": ["eu"]});
    assert_eq!(check(&app, &ro.secret, edit_eu.clone()).await["code"], "INSUFFICIENT_PERMISSIONS");
    let a = check(&app, &ro.secret, json!({"objectType": "sources"})).await;
    assert_eq!(a["access"], json!({"view": true, "edit": false, "tags": null, "editTags": []}));
    let admin = app.create_key(json!({"name": "adm", "administrator": true, "roles": ["editor-eu"]})).await;
    assert_eq!(
        check(&app, &admin.secret, json!({"permission": "sources:edit", "tags": ["us"]})).await["code"],
        "VALID"
    );
    let a = check(&app, &admin.secret, json!({"objectType": "sources"})).await;
    assert_eq!(a["access"], json!({"view": true, "edit": true, "tags": null, "editTags": null}));
    // The write tier covers edit, the read tier view only.
    let w = app.create_key(json!({"name": "w", "scopes": ["read"], "roles": ["channel-editor"]})).await;
    let a = check(&app, &w.secret, json!({"objectType": "sources"})).await;
    assert_eq!(a["access"], json!({"view": true, "edit": false, "tags": null, "editTags": []}));
    app.stop().await;
}

async fn role_edits_reach_verification_at_once() {
    let app = spawn_app().await;
    seed_roles(&app).await;
    let eu = app.create_key(json!({"name": "eu", "roles": ["editor-eu"]})).await;
    let uk = json!({"permission": "sources:edit", "tags": ["uk"]});
    assert_eq!(check(&app, &eu.secret, uk.clone()).await["code"], "INSUFFICIENT_PERMISSIONS");
    let id =
        app.get("/v1/roles").await.body["data"].as_array().unwrap().iter().find(|r| r["name"] == "editor-eu").unwrap()
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let r = app.patch(&format!("/v1/roles/{id}"), json!({"tags": ["eu", "uk"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(check(&app, &eu.secret, uk.clone()).await["code"], "VALID");
    // Taking the role from the key takes its grants.
    assert_eq!(app.patch(&format!("/v1/keys/{}", eu.id), json!({"roles": []})).await.status, 200);
    assert_eq!(check(&app, &eu.secret, uk).await["code"], "INSUFFICIENT_PERMISSIONS");
    app.stop().await;
}

async fn declare_catalogue(app: &TestApp) {
    let catalogue = json!([
        {"name": "sources", "actions": ["view", "edit"]},
        {"name": "channels", "actions": ["view", "edit", "admin"]},
    ]);
    let r = app.patch("/v1/workspace", json!({"permissionCatalogue": catalogue})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn builtin_roles_are_listed_and_cannot_change() {
    let app = spawn_app().await;
    let r = app.get("/v1/roles").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.body["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "admin", "developer", "viewer"]);
    assert!(r.body["data"].as_array().unwrap().iter().all(|r| r["builtin"] == true));
    for id in ["owner", "admin", "developer", "viewer"] {
        let p = app.patch(&format!("/v1/roles/{id}"), json!({"description": "mine now"})).await;
        assert_eq!((p.status.as_u16(), p.code()), (409, "builtin_role"), "{id}");
        let d = app.delete(&format!("/v1/roles/{id}")).await;
        assert_eq!((d.status.as_u16(), d.code()), (409, "builtin_role"));
    }
    assert_eq!(app.delete("/v1/roles/rol_nothing").await.status, 404);
    app.stop().await;
}

async fn roles_draw_only_from_the_catalogue_and_account_permissions() {
    let app = spawn_app().await;
    let role = json!({"name": "editor-eu", "permissions": ["sources:view", "sources:edit"], "tags": ["eu"]});
    let r = app.post("/v1/roles", role.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_permission"), "no catalogue yet");
    declare_catalogue(&app).await;
    let listed = app.get("/v1/permissions").await;
    assert!(listed.body["account"].as_array().unwrap().contains(&json!("keys:reveal")));
    assert_eq!(listed.body["sections"][0], json!({"name": "sources", "actions": ["view", "edit"]}));
    let r = app.post("/v1/roles", role.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!((r.body["tags"].clone(), r.body["builtin"].clone()), (json!(["eu"]), json!(false)));
    assert!(r.str("id").starts_with("rol_"));
    let again = app.post("/v1/roles", role).await;
    assert_eq!((again.status.as_u16(), again.code()), (409, "duplicate_role"));
    let cases = [
        (json!({"name": "admin", "permissions": ["keys:read"]}), 409, "duplicate_role"),
        (json!({"name": "has space", "permissions": ["keys:read"]}), 400, "invalid_name"),
        (json!({"name": "x", "permissions": []}), 400, "invalid_permissions"),
        (json!({"name": "x", "permissions": ["sources:delete"]}), 400, "unknown_permission"),
        (json!({"name": "x", "permissions": ["campaigns:get"]}), 400, "unknown_permission"),
        (json!({"name": "x", "permissions": ["not a permission"]}), 400, "unknown_permission"),
        (json!({"name": "x", "permissions": ["keys:read"], "tags": ["bad tag"]}), 400, "invalid_tags"),
    ];
    for (body, status, code) in cases {
        let r = app.post("/v1/roles", body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code), "{body}: {}", r.body);
    }
    // A section's wildcard and account permissions are fine.
    let r = app.post("/v1/roles", json!({"name": "channel-admin", "permissions": ["channels:*", "keys:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let bad = [
        json!([{"name": "keys", "actions": ["get"]}]),
        json!([{"name": "Bad Name", "actions": ["get"]}]),
        json!([{"name": "a", "actions": []}]),
        json!([{"name": "a", "actions": ["x", "x"]}]),
    ];
    for catalogue in bad {
        let r = app.patch("/v1/workspace", json!({"permissionCatalogue": catalogue})).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_catalogue"), "{catalogue}");
    }
    let names: Vec<String> = app.get("/v1/roles").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["owner", "admin", "developer", "viewer", "channel-admin", "editor-eu"]);
    app.stop().await;
}

async fn a_custom_role_grants_members_its_account_permissions() {
    let app = spawn_app().await;
    let r = app.post("/v1/roles", json!({"name": "key-manager", "permissions": ["keys:read", "keys:manage"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = app.add_member("km@example.com", "key manager pw", &["key-manager"]).await;
    let token = app.member_token("km@example.com", "key manager pw").await;
    let created = app.call(Method::POST, "/v1/keys", Some(&token), Some(json!({"name": "by km"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let members = app.call(Method::GET, "/v1/members", Some(&token), None).await;
    assert_eq!(members.status, 403, "no members:read");
    // Roles are cumulative: viewer adds members:read.
    let r = app.patch(&format!("/v1/members/{id}"), json!({"roles": ["key-manager", "viewer"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&token), None).await.status, 200);
    // A role the workspace does not have.
    let r = app.patch(&format!("/v1/members/{id}"), json!({"roles": ["nope"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_role"));
    app.stop().await;
}

async fn roles_held_by_keys_or_members_stay_until_released() {
    let app = spawn_app().await;
    declare_catalogue(&app).await;
    let role = app.post("/v1/roles", json!({"name": "editor_eu", "permissions": ["sources:edit"]})).await.str("id");
    // A look-alike name is not "in use" (LIKE wildcards are escaped).
    app.post("/v1/roles", json!({"name": "editorXeu", "permissions": ["sources:view"]})).await;
    let r = app.post("/v1/keys", json!({"name": "k", "roles": ["nope"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_role"));
    let key = app.create_key(json!({"name": "k", "roles": ["editorXeu"]})).await;
    assert_eq!(key.body["roles"], json!(["editorXeu"]));
    assert_eq!(app.delete(&format!("/v1/roles/{role}")).await.status, 204, "editor_eu was free");
    let role = app.post("/v1/roles", json!({"name": "editor_eu", "permissions": ["sources:edit"]})).await.str("id");
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"roles": ["editor_eu"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = app.delete(&format!("/v1/roles/{role}")).await;
    assert_eq!((d.status.as_u16(), d.code()), (409, "role_in_use"));
    let rename = app.patch(&format!("/v1/roles/{role}"), json!({"name": "editor-europe"})).await;
    assert_eq!((rename.status.as_u16(), rename.code()), (409, "role_in_use"));
    // Editing what it grants is fine.
    let r = app.patch(&format!("/v1/roles/{role}"), json!({"permissions": ["sources:view", "sources:edit"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Held by a member, too.
    assert_eq!(app.patch(&format!("/v1/keys/{}", key.id), json!({"roles": []})).await.status, 200);
    let member = app.add_member("m@example.com", "member password", &["editor_eu"]).await;
    assert_eq!(app.delete(&format!("/v1/roles/{role}")).await.status, 409);
    assert_eq!(app.delete(&format!("/v1/members/{member}")).await.status, 204);
    assert_eq!(app.delete(&format!("/v1/roles/{role}")).await.status, 204);
    app.stop().await;
}
