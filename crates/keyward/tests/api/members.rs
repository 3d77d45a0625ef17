//! Members: sign-in with cookie and JWT, re-authentication, sign-out,
//! invitations, roles against every management endpoint, the last-owner
//! rule and workspace isolation.

use chrono::DateTime;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, TestApp, spawn_app};

backend_tests!(
    sign_in_sets_a_strict_cookie_and_issues_a_jwt_on_request,
    wrong_password_and_unknown_email_get_the_same_answer,
    cookie_requests_that_change_things_need_this_servers_origin,
    reauth_makes_the_session_fresh_for_five_minutes,
    logout_ends_the_session_and_its_token,
    sessions_expire,
    failed_sign_ins_are_throttled_per_account,
    invitation_is_redeemed_once_and_expires,
    invitation_and_member_edits_refuse_bad_input,
    existing_member_joins_a_second_workspace_with_their_password,
    every_builtin_role_against_every_management_endpoint,
    the_last_owner_stays,
    two_owners_demoting_each_other_at_once_leave_one,
    only_owners_grant_or_take_the_owner_role,
    removing_a_member_ends_their_sessions_there,
    members_of_one_workspace_never_reach_another,
);

fn cookie_headers<'a>(cookie: &'a str, origin: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("cookie", cookie), ("origin", origin)]
}

async fn sign_in_sets_a_strict_cookie_and_issues_a_jwt_on_request() {
    let app = spawn_app().await;
    let (r, cookie) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing from {set_cookie}");
    }
    assert!(!set_cookie.contains(OWNER_PASSWORD));
    assert_eq!(r.body["member"]["email"], OWNER_EMAIL);
    assert_eq!(r.body["member"]["roles"], json!(["owner"]));
    assert_eq!(r.body["workspace"]["id"], app.workspace_id.as_str());
    assert!(r.body.get("token").is_none(), "no token unless asked for");
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    let cookie = cookie.unwrap();

    // The cookie authenticates reads without an Origin.
    let members = app.call_with(Method::GET, "/v1/members", &[("cookie", &cookie)], None).await;
    assert_eq!(members.status, 200, "{}", members.body);
    assert_eq!(members.body["data"][0]["email"], OWNER_EMAIL);

    // The email is matched case-insensitively; "token": true adds a JWT valid 7 days.
    let (r, _) = app.login("Owner@Example.COM", OWNER_PASSWORD, json!({"token": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.str("token");
    let expires = DateTime::parse_from_rfc3339(&r.str("expiresAt")).unwrap();
    use keyward_server::clock::Clock;
    let left = (expires.with_timezone(&chrono::Utc) - app.clock.now()).num_seconds();
    assert!((7 * 86400 - 1..=7 * 86400).contains(&left), "{left}");
    // Accepted by the whole API like a key, changes included, no Origin needed.
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&token), None).await.status, 200);
    let created = app.call(Method::POST, "/v1/keys", Some(&token), Some(json!({"name": "by jwt"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = app.call(Method::GET, "/v1/auth/session", Some(&token), None).await;
    assert_eq!(session.body["member"]["email"], OWNER_EMAIL);
    assert_eq!(session.body["workspace"]["name"], "Test");
    // A tampered token is refused.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&tampered), None).await.status, 401);
    // A key has no session.
    let r = app.get("/v1/auth/session").await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_session_required"));
    app.stop().await;
}

async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let (wrong, c1) = app.login(OWNER_EMAIL, "not the password at all", json!({})).await;
    let (unknown, c2) = app.login("nobody@example.com", "not the password at all", json!({})).await;
    let (malformed, _) = app.login("not an email", "whatever-long", json!({})).await;
    for r in [&wrong, &unknown, &malformed] {
        assert_eq!((r.status.as_u16(), r.code()), (401, "invalid_credentials"), "{}", r.body);
    }
    assert_eq!(wrong.body, unknown.body);
    assert!(c1.is_none() && c2.is_none(), "no cookie without sign-in");
    // No body, unknown fields: 400 naming the rule.
    let r = app.call(Method::POST, "/v1/auth/login", None, Some(json!({"email": OWNER_EMAIL}))).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_body"));
    assert!(r.error().contains("password"), "{}", r.body);
    let r =
        app.call(Method::POST, "/v1/auth/login", None, Some(json!({"email": "a@b", "password": "x", "pw": 1}))).await;
    assert_eq!(r.status, 400);
    // A workspace the member is not in.
    let (other, _) = app.other_workspace().await;
    let (r, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({"workspaceId": other})).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "workspace_not_found"));
    app.stop().await;
}

async fn cookie_requests_that_change_things_need_this_servers_origin() {
    let app = spawn_app().await;
    let (_, cookie) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    let cookie = cookie.unwrap();
    let body = || Some(json!({"name": "from the console"}));
    let own = format!("http://{}", app.addr);
    // No Origin, another site's, a look-alike: refused, nothing created.
    for origin in [None, Some("http://evil.example"), Some(&*format!("http://{}.evil.example", app.addr))] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let r = app.call_with(Method::POST, "/v1/keys", &headers, body()).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "cross_origin_request"), "{origin:?}");
    }
    assert_eq!(app.key_count().await, crate::helpers::BOOTSTRAP_KEYS, "only the admin key");
    for method in [Method::PATCH, Method::DELETE] {
        let path = format!("/v1/members/{}", "mem_x");
        let r = app.call_with(method, &path, &[("cookie", &cookie), ("origin", "null")], Some(json!({}))).await;
        assert_eq!(r.status, 403);
    }
    // From the server's own origin it works.
    let r = app.call_with(Method::POST, "/v1/keys", &cookie_headers(&cookie, &own), body()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.stop().await;
}

async fn fresh(app: &TestApp, token: String) -> bool {
    let r = app.call(Method::GET, "/v1/auth/session", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["fresh"].as_bool().unwrap()
}

async fn reauth_makes_the_session_fresh_for_five_minutes() {
    let app = spawn_app().await;
    let token = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    assert!(fresh(&app, token.clone()).await, "signing in is a fresh authentication");
    app.clock.advance(std::time::Duration::from_secs(5 * 60));
    assert!(!fresh(&app, token.clone()).await, "stale after five minutes");

    let wrong = app.call(Method::POST, "/v1/auth/reauth", Some(&token), Some(json!({"password": "wrong one!"}))).await;
    assert_eq!((wrong.status.as_u16(), wrong.code()), (401, "invalid_credentials"));
    assert!(!fresh(&app, token.clone()).await);
    let r = app.call(Method::POST, "/v1/auth/reauth", Some(&token), Some(json!({"password": OWNER_PASSWORD}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["freshUntil"].is_string());
    assert!(fresh(&app, token.clone()).await);
    app.clock.advance(std::time::Duration::from_secs(4 * 60 + 59));
    assert!(fresh(&app, token.clone()).await, "still fresh at 4:59");
    app.clock.advance(std::time::Duration::from_secs(1));
    assert!(!fresh(&app, token.clone()).await, "stale at 5:00");

    // Keys cannot re-authenticate.
    let r = app.post("/v1/auth/reauth", json!({"password": OWNER_PASSWORD})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_session_required"));
    app.stop().await;
}

async fn logout_ends_the_session_and_its_token() {
    let app = spawn_app().await;
    let (r, cookie) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({"token": true})).await;
    let (token, cookie) = (r.str("token"), cookie.unwrap());
    let other = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let own = format!("http://{}", app.addr);
    let out = app.call_with(Method::POST, "/v1/auth/logout", &cookie_headers(&cookie, &own), None).await;
    assert_eq!(out.status, 204);
    let cleared = out.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let r = app.call_with(Method::GET, "/v1/members", &[("cookie", &cookie)], None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "session_expired"));
    let r = app.call(Method::GET, "/v1/keys", Some(&token), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "session_expired"), "the JWT of the session ends with it");
    // Another session of the same member goes on.
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&other), None).await.status, 200);
    // A JWT signs out too.
    assert_eq!(app.call(Method::POST, "/v1/auth/logout", Some(&other), None).await.status, 204);
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&other), None).await.status, 401);
    // A made-up cookie is no session.
    let r = app.call_with(Method::GET, "/v1/members", &[("cookie", "keyward_session=kws_nothing")], None).await;
    assert_eq!(r.status, 401);
    app.stop().await;
}

async fn sessions_expire() {
    let app = spawn_app().await;
    let (_, cookie) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    let cookie = cookie.unwrap();
    let token = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let headers = [("cookie", cookie.as_str())];
    assert_eq!(app.call_with(Method::GET, "/v1/members", &headers, None).await.status, 200);
    app.clock.advance(std::time::Duration::from_secs(12 * 3600));
    let r = app.call_with(Method::GET, "/v1/members", &headers, None).await;
    assert_eq!(r.status, 401, "a cookie session lasts 12 hours");
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&token), None).await.status, 200, "a token session 7 days");
    app.clock.advance(std::time::Duration::from_secs(6 * 86400 + 12 * 3600));
    let r = app.call(Method::GET, "/v1/keys", Some(&token), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "token_expired"));
    app.stop().await;
}

async fn failed_sign_ins_are_throttled_per_account() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let (r, _) = app.login(OWNER_EMAIL, "wrong password!", json!({})).await;
        assert_eq!(r.status, 401);
    }
    // Now even the right password waits.
    let (r, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_sign_in_attempts"), "{}", r.body);
    let wait: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    // Unknown accounts are throttled alike (no way to tell them apart).
    for _ in 0..10 {
        app.login("ghost@example.com", "wrong password!", json!({})).await;
    }
    let (r, _) = app.login("ghost@example.com", "wrong password!", json!({})).await;
    assert_eq!(r.status, 429);
    app.clock.advance(std::time::Duration::from_secs(15 * 60));
    let (r, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    assert_eq!(r.status, 200, "the window ends: {}", r.body);
    app.stop().await;
}

async fn invitation_is_redeemed_once_and_expires() {
    let app = spawn_app().await;
    let r = app.invite(json!({"email": "Dev@Example.com", "name": "Dev", "roles": ["developer"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["email"], "dev@example.com");
    let token = r.str("token");
    assert!(token.starts_with("kwi_"));
    let accept = |password: &str| {
        let body = json!({"token": token, "password": password});
        app.call(Method::POST, "/v1/invitations/accept", None, Some(body))
    };
    let weak = accept("short").await;
    assert_eq!((weak.status.as_u16(), weak.code()), (400, "weak_password"));
    let same = accept("dev@example.com").await;
    assert_eq!((same.status.as_u16(), same.code()), (400, "weak_password"));
    let ok = accept("a decent password").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["member"]["roles"], json!(["developer"]));
    assert_eq!(ok.body["workspace"]["id"], app.workspace_id.as_str());
    let again = accept("a decent password").await;
    assert_eq!((again.status.as_u16(), again.code()), (409, "invitation_used"));
    let (signed_in, _) = app.login("dev@example.com", "a decent password", json!({})).await;
    assert_eq!(signed_in.status, 200);
    assert_eq!(signed_in.body["member"]["name"], "Dev");

    let r = app.invite(json!({"email": "late@example.com", "name": "Late", "roles": ["viewer"]})).await;
    let late = r.str("token");
    app.clock.advance(std::time::Duration::from_secs(7 * 86400));
    let body = json!({"token": late, "password": "a decent password"});
    let r = app.call(Method::POST, "/v1/invitations/accept", None, Some(body)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invitation_expired"));
    let (r, _) = app.login("late@example.com", "a decent password", json!({})).await;
    assert_eq!(r.status, 401, "no member was created");
    let body = json!({"token": "kwi_unknown", "password": "a decent password"});
    let r = app.call(Method::POST, "/v1/invitations/accept", None, Some(body)).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "invitation_not_found"));
    app.stop().await;
}

async fn invitation_and_member_edits_refuse_bad_input() {
    let app = spawn_app().await;
    let cases = [
        (json!({"email": "nope", "name": "N", "roles": ["viewer"]}), "invalid_email"),
        (json!({"email": "a@example.com", "name": "", "roles": ["viewer"]}), "invalid_name"),
        (json!({"email": "a@example.com", "name": "A", "roles": ["boss"]}), "unknown_role"),
        (json!({"email": "a@example.com", "name": "A", "roles": []}), "invalid_roles"),
        (json!({"email": OWNER_EMAIL, "name": "Me", "roles": ["viewer"]}), "already_member"),
    ];
    for (body, code) in cases {
        let r = app.invite(body.clone()).await;
        assert_eq!(r.code(), code, "{body}: {}", r.body);
        assert!(r.status.as_u16() == 400 || r.status.as_u16() == 409);
        assert!(!r.error().contains("boss") && !r.error().contains("nope"), "echoes no value: {}", r.body);
    }
    let id = app.add_member("v@example.com", "viewer password", &["viewer"]).await;
    let r = app.patch(&format!("/v1/members/{id}"), json!({"roles": ["root"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_role"));
    let r = app.patch(&format!("/v1/members/{id}"), json!({"name": "Vera", "roles": ["developer"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["roles"].clone()), (Some("Vera"), json!(["developer"])));
    let got = app.get(&format!("/v1/members/{id}")).await;
    assert_eq!(got.body["name"], "Vera");
    assert_eq!(app.get("/v1/members/mem_nobody").await.status, 404);
    app.stop().await;
}

async fn existing_member_joins_a_second_workspace_with_their_password() {
    let app = spawn_app().await;
    let (other_ws, _) = app.other_workspace().await;
    let token = app.operator_invite(&other_ws, OWNER_EMAIL, &["viewer"]).await;
    let wrong = json!({"token": token, "password": "a brand new password"});
    let r = app.call(Method::POST, "/v1/invitations/accept", None, Some(wrong)).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "invalid_credentials"));
    let right = json!({"token": token, "password": OWNER_PASSWORD});
    app.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.call(Method::POST, "/v1/invitations/accept", None, Some(right)).await.status, 200);
    // Signs in to either; the first joined is the default.
    let (r, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({})).await;
    assert_eq!(r.body["workspace"]["id"], app.workspace_id.as_str());
    assert_eq!(r.body["workspaces"].as_array().unwrap().len(), 2);
    let (r, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({"workspaceId": other_ws, "token": true})).await;
    assert_eq!(r.body["member"]["roles"], json!(["viewer"]), "roles are per workspace");
    let viewer = r.str("token");
    let r = app.call(Method::POST, "/v1/keys", Some(&viewer), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, 403, "a viewer there");
    app.stop().await;
}

/// (method, path, body, permission it needs).
fn management_endpoints(member_id: &str) -> Vec<(Method, String, Option<Value>, &'static str)> {
    vec![
        (Method::GET, "/v1/keys".into(), None, "keys:read"),
        (Method::POST, "/v1/keys".into(), Some(json!({"name": "made by role"})), "keys:manage"),
        (Method::GET, "/v1/identities".into(), None, "keys:read"),
        (Method::POST, "/v1/identities".into(), Some(json!({"externalId": "by-role"})), "keys:manage"),
        (Method::POST, "/v1/keys/verify".into(), Some(json!({"key": "kw_live_nothing"})), "keys:verify"),
        (Method::GET, "/v1/members".into(), None, "members:read"),
        (Method::GET, format!("/v1/members/{member_id}"), None, "members:read"),
        (
            Method::POST,
            "/v1/members".into(),
            Some(json!({"email": "new@example.com", "name": "N", "roles": ["viewer"]})),
            "members:manage",
        ),
        (Method::PATCH, format!("/v1/members/{member_id}"), Some(json!({"name": "Renamed"})), "members:manage"),
        (Method::GET, "/v1/workspace".into(), None, "settings:read"),
        (Method::PATCH, "/v1/workspace".into(), Some(json!({"name": "Renamed"})), "settings:manage"),
        (Method::POST, "/v1/workspace/apply-expiry-policy".into(), None, "settings:manage"),
        (Method::GET, "/v1/roles".into(), None, "keys:read"),
        (Method::GET, "/v1/permissions".into(), None, "keys:read"),
        (
            Method::POST,
            "/v1/roles".into(),
            Some(json!({"name": "made-by-role", "permissions": ["keys:read"]})),
            "roles:manage",
        ),
        (Method::DELETE, "/v1/roles/rol_missing".into(), None, "roles:manage"),
        (Method::POST, "/v1/keys/key_missing/reveal".into(), None, "keys:reveal"),
        (Method::DELETE, "/v1/members/mem_missing".into(), None, "members:manage"),
    ]
}

async fn every_builtin_role_against_every_management_endpoint() {
    let app = spawn_app().await;
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let target = app.add_member("target@example.com", "target password", &["viewer"]).await;
    let roles: [(&str, &[&str]); 4] = [
        ("owner", &["*"]),
        ("admin", &["*"]),
        ("developer", &["keys:read", "keys:manage", "keys:verify", "members:read", "settings:read"]),
        ("viewer", &["keys:read", "members:read", "settings:read"]),
    ];
    for (role, grants) in roles {
        let email = format!("role-{role}@example.com");
        let body = json!({"email": email, "name": role, "roles": [role]});
        let r = app.call(Method::POST, "/v1/members", Some(&owner), Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let body = json!({"token": r.str("token"), "password": "role password"});
        assert_eq!(app.call(Method::POST, "/v1/invitations/accept", None, Some(body)).await.status, 200);
        let token = app.member_token(&email, "role password").await;
        for (method, path, body, permission) in management_endpoints(&target) {
            let allowed = grants.contains(&"*") || grants.contains(&permission);
            let r = app.call(method.clone(), &path, Some(&token), body).await;
            if allowed {
                assert_ne!(r.status, 403, "{role} should reach {method} {path}: {}", r.body);
                assert_ne!(r.status, 401);
            } else {
                assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_permissions"), "{role} {method} {path}");
                assert!(r.error().contains(permission), "names the permission: {}", r.body);
            }
        }
        // Repeat-safe: what one role created, the next may create again.
        if let Some(id) = app.get("/v1/roles").await.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "made-by-role")
            .map(|r| r["id"].as_str().unwrap().to_owned())
        {
            assert_eq!(app.delete(&format!("/v1/roles/{id}")).await.status, 204);
        }
        if let Some(id) = app.get("/v1/keys?name=made%20by%20role").await.body["data"]
            .as_array()
            .unwrap()
            .first()
            .map(|k| k["id"].as_str().unwrap().to_owned())
        {
            assert_eq!(app.post_empty(&format!("/v1/keys/{id}/revoke")).await.status, 200);
        }
        if let Some(id) = app.get("/v1/members").await.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == "new@example.com")
            .map(|m| m["id"].as_str().unwrap().to_owned())
        {
            assert_eq!(app.delete(&format!("/v1/members/{id}")).await.status, 204);
        }
    }
    app.stop().await;
}

async fn the_last_owner_stays() {
    let app = spawn_app().await;
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let me = app.call(Method::GET, "/v1/auth/session", Some(&owner), None).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let demote =
        app.call(Method::PATCH, &format!("/v1/members/{me}"), Some(&owner), Some(json!({"roles": ["admin"]}))).await;
    assert_eq!((demote.status.as_u16(), demote.code()), (409, "last_owner"), "{}", demote.body);
    let remove = app.call(Method::DELETE, &format!("/v1/members/{me}"), Some(&owner), None).await;
    assert_eq!((remove.status.as_u16(), remove.code()), (409, "last_owner"));
    assert_eq!(app.get(&format!("/v1/members/{me}")).await.body["roles"], json!(["owner"]), "nothing changed");
    // With a second owner, the first may step down.
    let second = app.add_member("second@example.com", "second password", &["admin"]).await;
    let promote = json!({"roles": ["owner"]});
    let r = app.call(Method::PATCH, &format!("/v1/members/{second}"), Some(&owner), Some(promote)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        app.call(Method::PATCH, &format!("/v1/members/{me}"), Some(&owner), Some(json!({"roles": ["admin"]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second_token = app.member_token("second@example.com", "second password").await;
    let r = app.call(Method::DELETE, &format!("/v1/members/{second}"), Some(&second_token), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "last_owner"));
    app.stop().await;
}

async fn two_owners_demoting_each_other_at_once_leave_one() {
    let app = spawn_app().await;
    let first = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let me = app.call(Method::GET, "/v1/auth/session", Some(&first), None).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_id = app.add_member("second@example.com", "second password", &["admin"]).await;
    let promote = json!({"roles": ["owner"]});
    let r = app.call(Method::PATCH, &format!("/v1/members/{second_id}"), Some(&first), Some(promote.clone())).await;
    assert_eq!(r.status, 200);
    let second = app.member_token("second@example.com", "second password").await;
    for _ in 0..5 {
        let demote = json!({"roles": ["admin"]});
        let (path_a, path_b) = (format!("/v1/members/{second_id}"), format!("/v1/members/{me}"));
        let (a, b) = tokio::join!(
            app.call(Method::PATCH, &path_a, Some(&first), Some(demote.clone())),
            app.call(Method::PATCH, &path_b, Some(&second), Some(demote.clone())),
        );
        let owners = app.get("/v1/members").await.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["roles"].as_array().unwrap().contains(&json!("owner")))
            .count();
        assert_eq!(owners, 1, "exactly one owner left: {} / {}", a.body, b.body);
        let codes = [&a, &b].map(|r| r.body["code"].as_str().unwrap_or("ok").to_owned());
        assert!(codes.iter().any(|c| c == "last_owner" || c == "owner_required"), "{codes:?}");
        // Make both owners again for the next round.
        let (owner_token, other_id) = if a.status == 200 { (&first, &second_id) } else { (&second, &me) };
        let r =
            app.call(Method::PATCH, &format!("/v1/members/{other_id}"), Some(owner_token), Some(promote.clone())).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    app.stop().await;
}

async fn only_owners_grant_or_take_the_owner_role() {
    let app = spawn_app().await;
    let admin_id = app.add_member("admin@example.com", "admin password", &["admin"]).await;
    let admin = app.member_token("admin@example.com", "admin password").await;
    let body = json!({"email": "x@example.com", "name": "X", "roles": ["owner"]});
    let r = app.call(Method::POST, "/v1/members", Some(&admin), Some(body.clone())).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "owner_required"));
    // Nor can an admin-tier key.
    let r = app.call(Method::POST, "/v1/members", Some(&app.admin_key), Some(body)).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "owner_required"));
    let r = app
        .call(Method::PATCH, &format!("/v1/members/{admin_id}"), Some(&admin), Some(json!({"roles": ["owner"]})))
        .await;
    assert_eq!(r.status, 403);
    let owners = app.get("/v1/members").await.body["data"].as_array().unwrap().clone();
    let owner_id = owners.iter().find(|m| m["email"] == OWNER_EMAIL).unwrap()["id"].as_str().unwrap().to_owned();
    let r = app.call(Method::DELETE, &format!("/v1/members/{owner_id}"), Some(&admin), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "owner_required"));
    // Admins manage everyone else.
    let dev = app.add_member("dev@example.com", "dev password!", &["developer"]).await;
    let r =
        app.call(Method::PATCH, &format!("/v1/members/{dev}"), Some(&admin), Some(json!({"roles": ["viewer"]}))).await;
    assert_eq!(r.status, 200);
    app.stop().await;
}

async fn removing_a_member_ends_their_sessions_there() {
    let app = spawn_app().await;
    let id = app.add_member("leaver@example.com", "leaver password", &["developer"]).await;
    let token = app.member_token("leaver@example.com", "leaver password").await;
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&token), None).await.status, 200);
    assert_eq!(app.delete(&format!("/v1/members/{id}")).await.status, 204);
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&token), None).await.status, 401);
    let (r, _) = app.login("leaver@example.com", "leaver password", json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "no_workspace"));
    assert_eq!(app.get(&format!("/v1/members/{id}")).await.status, 404);
    app.stop().await;
}

async fn members_of_one_workspace_never_reach_another() {
    let app = spawn_app().await;
    let (other_ws, other_admin) = app.other_workspace().await;
    // A member of the other workspace, and its key.
    let token = app.operator_invite(&other_ws, "b@example.com", &["admin"]).await;
    let accept = json!({"token": token, "password": "b's password"});
    let b_id = app.call(Method::POST, "/v1/invitations/accept", None, Some(accept)).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_key = app.call(Method::POST, "/v1/keys", Some(&other_admin), Some(json!({"name": "b key"}))).await.str("id");
    let b_identity = app
        .call(Method::POST, "/v1/identities", Some(&other_admin), Some(json!({"externalId": "b-customer"})))
        .await
        .str("id");
    let b_role = app
        .call(
            Method::POST,
            "/v1/roles",
            Some(&other_admin),
            Some(json!({"name": "b-role", "permissions": ["keys:read"]})),
        )
        .await
        .str("id");
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let attempts = [
        (Method::POST, format!("/v1/keys/{b_key}/reveal"), None),
        (Method::POST, format!("/v1/keys/{b_key}/roll"), None),
        (Method::POST, format!("/v1/keys/{b_key}/clone"), Some(json!({}))),
        (Method::POST, format!("/v1/keys/{b_key}/deactivate"), None),
        (Method::GET, format!("/v1/keys/{b_key}/usage"), None),
        (Method::GET, format!("/v1/identities/{b_identity}"), None),
        (Method::PATCH, format!("/v1/identities/{b_identity}"), Some(json!({"meta": {"x": 1}}))),
        (Method::DELETE, format!("/v1/identities/{b_identity}"), None),
        (Method::PATCH, format!("/v1/roles/{b_role}"), Some(json!({"description": "hijacked"}))),
        (Method::DELETE, format!("/v1/roles/{b_role}"), None),
        (Method::GET, format!("/v1/members/{b_id}"), None),
        (Method::PATCH, format!("/v1/members/{b_id}"), Some(json!({"name": "Hijacked"}))),
        (Method::DELETE, format!("/v1/members/{b_id}"), None),
        (Method::GET, format!("/v1/keys/{b_key}"), None),
        (Method::PATCH, format!("/v1/keys/{b_key}"), Some(json!({"name": "Hijacked"}))),
        (Method::POST, format!("/v1/keys/{b_key}/revoke"), None),
        (Method::DELETE, format!("/v1/keys/{b_key}"), None),
    ];
    for (method, path, body) in attempts {
        for caller in [owner.as_str(), app.admin_key.as_str()] {
            let r = app.call(method.clone(), &path, Some(caller), body.clone()).await;
            // A key never reveals, whichever key it names: refused before the lookup.
            let expected = if caller == app.admin_key && path.ends_with("/reveal") { 403 } else { 404 };
            assert_eq!(r.status, expected, "{method} {path}: {}", r.body);
        }
    }
    let listed = app.call(Method::GET, "/v1/members", Some(&owner), None).await;
    assert!(listed.body["data"].as_array().unwrap().iter().all(|m| m["email"] != "b@example.com"));
    let b = app.call(Method::GET, &format!("/v1/members/{b_id}"), Some(&other_admin), None).await;
    assert_eq!(b.body["name"], "b@example.com", "untouched");
    let k = app.call(Method::GET, &format!("/v1/keys/{b_key}"), Some(&other_admin), None).await;
    assert_eq!((k.body["name"].as_str(), k.body["state"].as_str()), (Some("b key"), Some("active")));
    let roles = app.call(Method::GET, "/v1/roles", Some(&owner), None).await;
    assert!(roles.body["data"].as_array().unwrap().iter().all(|r| r["name"] != "b-role"));
    // A member names another workspace's key in verify: not found.
    let b_secret =
        app.call(Method::POST, "/v1/keys", Some(&other_admin), Some(json!({"name": "b2"}))).await.str("secret");
    let v = app.call(Method::POST, "/v1/keys/verify", Some(&owner), Some(json!({"key": b_secret}))).await;
    assert_eq!(v.body["code"], "NOT_FOUND");
    app.stop().await;
}
