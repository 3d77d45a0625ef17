//! Nobody gains authority they do not hold: one black-box regression for
//! each hole a security review found (roles, reveal, token exchange,
//! client authentication, the address throttle, keys becoming people,
//! restrictions, publishable keys, and the lesser ones), each on SQLite and
//! PostgreSQL.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Key, Resp, TestApp, eventually, spawn_app, spawn_app_with};

backend_tests!(
    a_role_manager_cannot_write_itself_more,
    reveal_hands_out_no_more_than_the_member_holds,
    an_access_token_is_no_subject_token_and_exchanged_tokens_are_revocable,
    clients_authenticate_by_their_secret_alone,
    a_named_address_is_throttled_in_its_workspace_only,
    keys_never_become_people,
    a_keys_restrictions_pass_to_what_it_makes,
    publishable_keys_hold_only_public_permissions,
    token_issuance_is_audited_and_client_families_are_bounded,
    a_members_tokens_end_with_a_new_password_or_their_removal,
    narrowed_tokens_report_their_own_scope,
    identities_are_audited,
    pgp_uploads_with_too_many_subkeys_are_refused,
);

fn cannot_grant(r: &Resp, naming: &str) {
    assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{}", r.body);
    assert!(r.error().contains(naming), "the refusal names {naming}: {}", r.body);
}

/// A form POST to an OAuth endpoint, with optional Basic credentials.
async fn form(app: &TestApp, path: &str, basic: Option<(&str, &str)>, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(app.url(path)).form(fields);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(status < 500, "server error {status}: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A client key with `read`: the key and its consumer key.
async fn client(app: &TestApp, name: &str) -> (Key, String) {
    let key = app.create_key(json!({"name": name, "type": "client", "scopes": ["read"]})).await;
    let id = key.body["clientId"].as_str().unwrap().to_owned();
    (key, id)
}

async fn exchange(app: &TestApp, subject: &str, scope: Option<&str>) -> (u16, Value) {
    let mut fields = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", subject),
        ("subject_token_type", "urn:keyward:params:oauth:token-type:api_key"),
    ];
    if let Some(s) = scope {
        fields.push(("scope", s));
    }
    form(app, "/oauth/token", None, &fields).await
}

/// Audit entries with `action` (newest first), as the owner reads them.
async fn entries(app: &TestApp, action: &str) -> Vec<Value> {
    let owner = app.owner_token().await;
    let r = app.call(Method::GET, &format!("/v1/audit?action={action}&limit=100"), Some(&owner), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

// 1. A member whose role has roles:manage wrote that role (or a new one)
//    to hold members:manage and more.
async fn a_role_manager_cannot_write_itself_more() {
    let app = spawn_app().await;
    let r = app.post("/v1/roles", json!({"name": "role-admin", "permissions": ["roles:manage", "keys:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let role = r.str("id");
    app.add_member("ra@example.com", "role admin password", &["role-admin"]).await;
    let ra = app.member_token("ra@example.com", "role admin password").await;
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&ra), None).await.status, 403);
    let widened = json!({"permissions": ["roles:manage", "keys:read", "members:manage"]});
    let r = app.call(Method::PATCH, &format!("/v1/roles/{role}"), Some(&ra), Some(widened)).await;
    cannot_grant(&r, "members:manage");
    for permissions in [json!(["members:manage"]), json!(["keys:reveal", "keys:read"]), json!(["settings:manage"])] {
        let body = json!({"name": "mine", "permissions": permissions});
        let r = app.call(Method::POST, "/v1/roles", Some(&ra), Some(body)).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{permissions}: {}", r.body);
    }
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&ra), None).await.status, 403, "still refused");
    let roles = app.get("/v1/roles").await.body["data"].as_array().unwrap().clone();
    let held = roles.iter().find(|r| r["id"] == role.as_str()).unwrap();
    assert_eq!(held["permissions"], json!(["roles:manage", "keys:read"]), "unchanged");
    // What the manager holds, it may write.
    let r = app.call(Method::PATCH, &format!("/v1/roles/{role}"), Some(&ra), Some(json!({"description": "x"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = json!({"name": "readers", "permissions": ["keys:read"]});
    assert_eq!(app.call(Method::POST, "/v1/roles", Some(&ra), Some(body)).await.status, 201);
    // A role it could not give, it cannot rewrite either.
    let r = app.post("/v1/roles", json!({"name": "people", "permissions": ["members:manage"]})).await;
    let people = r.str("id");
    let narrower = json!({"permissions": ["keys:read"]});
    let r = app.call(Method::PATCH, &format!("/v1/roles/{people}"), Some(&ra), Some(narrower)).await;
    cannot_grant(&r, "members:manage");
    app.stop().await;
}

// 2. A member with keys:read and keys:reveal revealed a recoverable admin
//    key and acted as admin with it.
async fn reveal_hands_out_no_more_than_the_member_holds() {
    let app = spawn_app().await;
    assert_eq!(app.patch("/v1/workspace", json!({"allowRecoverable": true})).await.status, 200);
    let admin = app.create_key(json!({"name": "kept admin", "scopes": ["admin"], "recoverable": true})).await;
    let product =
        app.create_key(json!({"name": "kept product", "scopes": ["campaigns:read"], "recoverable": true})).await;
    app.post("/v1/roles", json!({"name": "revealer", "permissions": ["keys:read", "keys:reveal"]})).await;
    app.add_member("rv@example.com", "revealer password", &["revealer"]).await;
    let rv = app.member_token("rv@example.com", "revealer password").await;
    let r = app.call(Method::POST, &format!("/v1/keys/{}/reveal", admin.id), Some(&rv), None).await;
    cannot_grant(&r, "admin");
    assert!(!r.body.to_string().contains(&admin.secret));
    // A key within the member's authority (the API's own permissions are a
    // person's to hand out) is revealed as before.
    let r = app.call(Method::POST, &format!("/v1/keys/{}/reveal", product.id), Some(&rv), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.str("secret"), product.secret);
    // The refusal is recorded, without the secret.
    let failed = entries(&app, "key.revealed").await;
    assert!(failed.iter().any(|e| e["target"]["id"] == admin.id.as_str() && e["outcome"] == "failure"));
    app.stop().await;
}

// 3. An access token narrowed to campaigns:read was exchanged for one with
//    all of the key's scopes, renewable for ever; exchanged tokens could
//    not be revoked.
async fn an_access_token_is_no_subject_token_and_exchanged_tokens_are_revocable() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"name": "exchanger", "scopes": ["admin"]})).await;
    let (status, body) = exchange(&app, &key.secret, Some("campaigns:read")).await;
    assert_eq!(status, 200, "{body}");
    let narrowed = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&narrowed), None).await.status, 403);
    let (status, body) = exchange(&app, &narrowed, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    // The key revokes what it exchanged itself for (its id as client_id).
    let (status, body) = exchange(&app, &key.secret, None).await;
    assert_eq!(status, 200, "{body}");
    let whole = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&whole), None).await.status, 200);
    let (status, _) = form(&app, "/oauth/revoke", Some((&key.id, &key.secret)), &[("token", &whole)]).await;
    assert_eq!(status, 200);
    assert_eq!(app.call(Method::GET, "/v1/members", Some(&whole), None).await.status, 401);
    assert_eq!(app.verify_code(&whole).await, "TOKEN_REVOKED");
    // Another key's credentials revoke nothing of it.
    let other = app.create_key(json!({"name": "other", "scopes": ["read"]})).await;
    let (_, body) = exchange(&app, &key.secret, None).await;
    let kept = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = form(&app, "/oauth/revoke", Some((&other.id, &other.secret)), &[("token", &kept)]).await;
    assert_eq!(status, 200, "the same answer");
    assert_eq!(app.verify_code(&kept).await, "VALID");
    // A key is a client only to revoke: not for client credentials.
    let (status, body) =
        form(&app, "/oauth/token", Some((&key.id, &key.secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    app.stop().await;
}

// 4. After a roll with a grace period, the old consumer key with any access
//    token as client_secret got tokens long after the grace period.
async fn clients_authenticate_by_their_secret_alone() {
    let app = spawn_app().await;
    let (client, old_id) = client(&app, "client").await;
    let grant = [("grant_type", "client_credentials")];
    let (status, body) = form(&app, "/oauth/token", Some((&old_id, &client.secret)), &grant).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/v1/keys/{}/roll", client.id), json!({"gracePeriodSeconds": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (new_id, new_secret) = (r.str("clientId"), r.str("secret"));
    for (id, secret) in [(&old_id, &access), (&new_id, &access)] {
        let (status, body) = form(&app, "/oauth/token", Some((id, secret)), &grant).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "an access token is no secret");
    }
    // The old pair works within the grace period, the new one always.
    assert_eq!(form(&app, "/oauth/token", Some((&old_id, &client.secret)), &grant).await.0, 200);
    assert_eq!(form(&app, "/oauth/token", Some((&new_id, &new_secret)), &grant).await.0, 200);
    assert_eq!(form(&app, "/oauth/token", Some((&old_id, &new_secret)), &grant).await.0, 401, "no mixed pair");
    app.clock.advance(Duration::from_secs(3601));
    let (status, body) = form(&app, "/oauth/token", Some((&old_id, &client.secret)), &grant).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "the old consumer key ended");
    assert_eq!(form(&app, "/oauth/token", Some((&new_id, &new_secret)), &grant).await.0, 200);
    app.stop().await;
}

// 5. A keys:verify key naming another's address in "ip" got that address
//    refused on every endpoint, for every tenant.
async fn a_named_address_is_throttled_in_its_workspace_only() {
    let app = spawn_app_with(|c| c.ip_failure_limit = 5).await;
    let verifier = app.create_key(json!({"name": "verifier", "scopes": ["keys:verify"]})).await;
    let gone = app.create_key(json!({"name": "gone"})).await;
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", gone.id)).await.status, 200);
    assert!(app.delete(&format!("/v1/keys/{}", gone.id)).await.status.is_success());
    // The tests' own address, named by the verifier six times with a key
    // that no longer exists.
    let named = json!({"key": gone.secret, "ip": "127.0.0.1"});
    for _ in 0..5 {
        let r = app.call(Method::POST, "/v1/keys/verify", Some(&verifier.secret), Some(named.clone())).await;
        assert_eq!(r.body["code"], "NOT_FOUND", "{}", r.body);
    }
    let r = app.call(Method::POST, "/v1/keys/verify", Some(&verifier.secret), Some(named.clone())).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_failures"), "in the workspace's own view");
    // Nobody else is harmed: the API, another workspace, forward-auth.
    assert_eq!(app.get("/v1/keys").await.status, 200);
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&verifier.secret), None).await.status, 403, "not 429");
    let (_, other_admin) = app.other_workspace().await;
    let other_key = app.call(Method::POST, "/v1/keys", Some(&other_admin), Some(json!({"name": "k"}))).await;
    let body = json!({"key": other_key.str("secret"), "ip": "127.0.0.1"});
    let r = app.call(Method::POST, "/v1/keys/verify", Some(&other_admin), Some(body)).await;
    assert_eq!((r.status.as_u16(), r.body["code"].as_str()), (200, Some("VALID")), "{}", r.body);
    let good = app.create_key(json!({"name": "good", "scopes": ["read"]})).await;
    assert_eq!(app.authorize(&good.secret).await.status(), 200);
    app.stop().await;
}

// 6. An admin API key invited a member (itself, as admin), accepted, signed
//    in and revealed secrets.
async fn keys_never_become_people() {
    let app = spawn_app().await;
    let body = json!({"email": "bot@example.com", "name": "Bot", "roles": ["viewer"]});
    let r = app.post("/v1/members", body.clone()).await;
    cannot_grant(&r, "person");
    let (r, _) = app.login("bot@example.com", "any password at all", json!({})).await;
    assert_eq!(r.status, 401, "no person was made");
    // The same invitation from a person is fine.
    let r = app.invite(body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // And a key never reveals, whichever key it names.
    assert_eq!(app.patch("/v1/workspace", json!({"allowRecoverable": true})).await.status, 200);
    let kept = app.create_key(json!({"name": "kept", "recoverable": true})).await;
    let r = app.post_empty(&format!("/v1/keys/{}/reveal", kept.id)).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_required"));
    app.stop().await;
}

async fn create_as(app: &TestApp, by: &Key, body: Value) -> Resp {
    app.call(Method::POST, "/v1/keys", Some(&by.secret), Some(body)).await
}

// 7. A key limited to resources (or expiring, or to addresses) with
//    keys:manage made a key with the same scopes and no limit.
async fn a_keys_restrictions_pass_to_what_it_makes() {
    let app = spawn_app().await;
    let limited = app
        .create_key(json!({"name": "site a", "scopes": ["keys:manage", "campaigns:read"], "resources": ["site_a"]}))
        .await;
    cannot_grant(&create_as(&app, &limited, json!({"name": "free", "scopes": ["campaigns:read"]})).await, "resources");
    let wider = json!({"name": "wider", "scopes": ["campaigns:read"], "resources": ["site_a", "site_b"]});
    cannot_grant(&create_as(&app, &limited, wider).await, "resources");
    let within = json!({"name": "within", "scopes": ["campaigns:read"], "resources": ["site_a"]});
    let r = create_as(&app, &limited, within).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let made = r.str("id");
    // Nor may it lift the limit later, or take over a key without one.
    let lift = json!({"resources": []});
    cannot_grant(
        &app.call(Method::PATCH, &format!("/v1/keys/{made}"), Some(&limited.secret), Some(lift)).await,
        "resources",
    );
    let free = app.create_key(json!({"name": "unlimited", "scopes": ["campaigns:read"]})).await;
    for path in [format!("/v1/keys/{}/roll", free.id), format!("/v1/keys/{}/clone", free.id)] {
        let r = app.call(Method::POST, &path, Some(&limited.secret), Some(json!({}))).await;
        cannot_grant(&r, "resources");
    }
    // The API's own permissions pass from a key only if it holds them.
    let more = json!({"name": "more", "scopes": ["campaigns:write"], "resources": ["site_a"]});
    cannot_grant(&create_as(&app, &limited, more).await, "campaigns:write");

    // Expiring tomorrow: what it makes expires no later.
    let expiring = app.create_key(json!({"name": "expiring", "scopes": ["keys:manage", "read"], "expiresIn": 1})).await;
    cannot_grant(&create_as(&app, &expiring, json!({"name": "forever", "scopes": ["read"]})).await, "expiresAt");
    let later = json!({"name": "later", "scopes": ["read"], "expiresIn": 2});
    cannot_grant(&create_as(&app, &expiring, later).await, "expiresAt");
    let r = create_as(&app, &expiring, json!({"name": "sooner", "scopes": ["read"], "expiresIn": 1})).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Limited to addresses (the tests' own): what it makes is too.
    let local = app
        .create_key(json!({"name": "local", "scopes": ["keys:manage", "read"], "allowedIps": ["127.0.0.0/8"]}))
        .await;
    cannot_grant(&create_as(&app, &local, json!({"name": "anywhere", "scopes": ["read"]})).await, "allowedIps");
    let r = create_as(&app, &local, json!({"name": "here", "scopes": ["read"], "allowedIps": ["127.0.0.1"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Elsewhere it does not authenticate at all.
    let remote =
        app.create_key(json!({"name": "remote", "scopes": ["keys:manage"], "allowedIps": ["192.0.2.0/24"]})).await;
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&remote.secret), None).await.status, 401);
    app.stop().await;
}

// 8. A publishable key held a role whose permissions then passed
//    verification although they were not public.
async fn publishable_keys_hold_only_public_permissions() {
    let app = spawn_app().await;
    let settings = json!({
        "permissionCatalogue": [{"name": "campaigns", "actions": ["read", "write"]}],
        "publicPermissions": ["campaigns:read"],
    });
    assert_eq!(app.patch("/v1/workspace", settings).await.status, 200);
    let writer = app.post("/v1/roles", json!({"name": "writer", "permissions": ["campaigns:write"]})).await;
    assert_eq!(writer.status, 201, "{}", writer.body);
    let reader = app.post("/v1/roles", json!({"name": "reader", "permissions": ["campaigns:read"]})).await;
    let origin = "https://app.example.com";
    let publishable =
        |roles: Value| json!({"name": "browser", "type": "publishable", "roles": roles, "allowedOrigins": [origin]});
    for roles in [json!(["writer"]), json!(["viewer"]), json!(["admin"])] {
        let r = app.post("/v1/keys", publishable(roles.clone())).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "not_public"), "{roles}: {}", r.body);
    }
    let key = app.create_key(publishable(json!(["reader"]))).await;
    let verify =
        |permission: &'static str| app.verify(&key.secret, json!({"permission": permission, "origin": origin}));
    assert_eq!(verify("campaigns:read").await["code"], "VALID");
    // The role comes to hold more: the publishable key does not.
    let widen = json!({"permissions": ["campaigns:read", "campaigns:write"]});
    assert_eq!(app.patch(&format!("/v1/roles/{}", reader.str("id")), widen).await.status, 200);
    assert_eq!(verify("campaigns:write").await["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(verify("campaigns:read").await["code"], "VALID");
    // Nor can it be edited to hold a role that is not public.
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"roles": ["writer"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "not_public"), "{}", r.body);
    app.stop().await;
}

// 9. Token issuance, exchange and refresh left no audit entry, and every
//    client_credentials call stored a 30-day refresh family with no bound.
async fn token_issuance_is_audited_and_client_families_are_bounded() {
    let app = spawn_app().await;
    // Issued within one minute of the clock: start at a minute's beginning.
    {
        use keyward_server::clock::Clock;
        let into_minute = app.clock.now().timestamp().rem_euclid(60) as u64;
        app.clock.advance(Duration::from_secs(60 - into_minute));
    }
    let (client, id) = client(&app, "batch client").await;
    let grant = [("grant_type", "client_credentials")];
    let (status, first) = form(&app, "/oauth/token", Some((&id, &client.secret)), &grant).await;
    assert_eq!(status, 200, "{first}");
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(1));
    let (status, second) = form(&app, "/oauth/token", Some((&id, &client.secret)), &grant).await;
    assert_eq!(status, 200);
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", second["refresh_token"].as_str().unwrap())];
    assert_eq!(form(&app, "/oauth/token", Some((&id, &client.secret)), &refresh).await.0, 200);
    let key = app.create_key(json!({"name": "exchanged", "scopes": ["read"]})).await;
    for _ in 0..3 {
        assert_eq!(exchange(&app, &key.secret, None).await.0, 200);
    }
    // Counted, one entry per key and action a minute, once the minute is over.
    app.clock.advance(Duration::from_secs(61));
    eventually(|| async { !entries(&app, "token.exchanged").await.is_empty() }).await;
    for (action, by, count) in
        [("token.issued", &client.id, 2), ("token.refreshed", &client.id, 1), ("token.exchanged", &key.id, 3)]
    {
        let found = entries(&app, action).await;
        assert_eq!(found.len(), 1, "{action}: {found:?}");
        assert_eq!(
            (
                found[0]["actor"]["id"].as_str(),
                found[0]["target"]["id"].as_str(),
                found[0]["changes"]["count"].as_u64()
            ),
            (Some(by.as_str()), Some(by.as_str()), Some(count)),
            "{action}: {found:?}"
        );
    }
    // A client keeps its newest 100 families (checked every TRIM_EVERY grants):
    // the oldest end.
    for _ in 0..(100 + keyward_server::oauth::TRIM_EVERY) {
        app.clock.advance(Duration::from_secs(1));
        assert_eq!(form(&app, "/oauth/token", Some((&id, &client.secret)), &grant).await.0, 200);
    }
    let again = [("grant_type", "refresh_token"), ("refresh_token", first_refresh.as_str())];
    let (status, body) = form(&app, "/oauth/token", Some((&id, &client.secret)), &again).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    app.stop().await;
}

// 9. A member's refresh tokens survived `member set-password` and their
//    removal from the workspace.
async fn a_members_tokens_end_with_a_new_password_or_their_removal() {
    let app = spawn_app().await;
    app.post("/v1/roles", json!({"name": "exporter", "permissions": ["tokens:manage", "keys:read"]})).await;
    for (email, password) in [("reset@example.com", "reset password"), ("leaver@example.com", "leaver password")] {
        app.add_member(email, password, &["exporter"]).await;
    }
    let mut refresh = Vec::new();
    for (email, password) in [("reset@example.com", "reset password"), ("leaver@example.com", "leaver password")] {
        let me = app.member_token(email, password).await;
        let r = app.call(Method::POST, "/v1/tokens", Some(&me), Some(json!({"name": "export"}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        refresh.push(r.str("refreshToken"));
    }
    let use_token = |t: String| {
        let app = &app;
        async move { form(app, "/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &t)]).await }
    };
    for t in &refresh {
        assert_eq!(use_token(t.clone()).await.0, 200);
    }
    // The operator sets a new password (`keyward member set-password`).
    let operator = keyward_server::principal::Principal::system(&app.workspace_id);
    app.services.members.set_password(&operator, "reset@example.com", Some("a new password!".into())).await.unwrap();
    let (status, body) = use_token(refresh[0].clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // The other is removed from the workspace.
    let members = app.get("/v1/members").await.body["data"].as_array().unwrap().clone();
    let leaver =
        members.iter().find(|m| m["email"] == "leaver@example.com").unwrap()["id"].as_str().unwrap().to_owned();
    let owner = app.owner_token().await;
    assert_eq!(app.call(Method::DELETE, &format!("/v1/members/{leaver}"), Some(&owner), None).await.status, 204);
    let (status, body) = use_token(refresh[1].clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // The owner's own token is untouched.
    let r = app.call(Method::POST, "/v1/tokens", Some(&owner), Some(json!({"name": "mine"}))).await;
    assert_eq!(use_token(r.str("refreshToken")).await.0, 200);
    app.stop().await;
}

// 9. Forward-auth's X-Keyward-Scopes and verify's permissions reported the
//    key's scopes for a narrowed token.
async fn narrowed_tokens_report_their_own_scope() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"name": "wide", "scopes": ["read", "campaigns:*"]})).await;
    let (_, body) = exchange(&app, &key.secret, Some("read")).await;
    let narrowed = body["access_token"].as_str().unwrap().to_owned();
    let v = app.verify(&narrowed, json!({})).await;
    assert_eq!((v["code"].as_str(), v["permissions"].clone()), (Some("VALID"), json!(["read"])));
    let r = app.authorize(&narrowed).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-keyward-scopes"], "read");
    let r = app.authorize(&key.secret).await;
    assert_eq!(r.headers()["x-keyward-scopes"], "read campaigns:*", "the key itself: its scopes");
    app.stop().await;
}

// 9. Identity create, update and delete left no audit entry.
async fn identities_are_audited() {
    let app = spawn_app().await;
    let r = app.post("/v1/identities", json!({"externalId": "customer-7", "meta": {"plan": "gold"}})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("id");
    let r = app.patch(&format!("/v1/identities/{id}"), json!({"meta": {"plan": "silver"}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(app.delete(&format!("/v1/identities/{id}")).await.status.is_success());
    for action in ["identity.created", "identity.updated", "identity.deleted"] {
        let found = entries(&app, action).await;
        assert_eq!(found.len(), 1, "{action}: {found:?}");
        assert_eq!(
            (found[0]["target"]["id"].as_str(), found[0]["target"]["name"].as_str()),
            (Some(&*id), Some("customer-7"))
        );
        assert!(!found[0].to_string().contains("gold"), "the caller's metadata stays out");
    }
    app.stop().await;
}

// 9. PGP uploads ran every subkey's S2K derivation, as many as the key
//    carried, on the async workers.
async fn pgp_uploads_with_too_many_subkeys_are_refused() {
    let Some(gpg) = crate::gnupg::Gpg::new("pgp_uploads_with_too_many_subkeys_are_refused") else { return };
    let app = spawn_app().await;
    let fpr = gpg.generate("Many <many@example.com>", crate::gnupg::Kind::Ed25519, "", "never");
    for _ in 0..16 {
        gpg.add_subkey(&fpr, "cv25519", "");
    }
    let upload = |contents: String, private: bool| json!({"name": format!("many {private}"), "type": "pgp", "contents": contents, "private": private});
    let r = app.post("/v1/pgp-keys", upload(gpg.export_public(&[&fpr]), false)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "too_many_subkeys"), "{}", r.body);
    let r = app.post("/v1/pgp-keys", upload(gpg.export_secret(&fpr, ""), true)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "too_many_subkeys"), "{}", r.body);
    assert_eq!(app.get("/v1/pgp-keys").await.body["data"], json!([]), "nothing stored");
    app.stop().await;
}
