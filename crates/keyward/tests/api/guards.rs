//! Nobody gets more than they hold: account permissions pass only from
//! someone who holds them, through keys, roles or invitations; sign-in
//! limits hold under concurrency; role names match exactly.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, spawn_app};

backend_tests!(
    a_developer_cannot_mint_or_take_over_stronger_keys,
    members_and_keys_grant_only_roles_within_their_own_permissions,
    parallel_wrong_passwords_cannot_outrun_the_limit,
    role_names_match_exactly_and_tagged_roles_grant_no_account_permission,
    a_shared_persons_name_is_theirs,
);

async fn a_developer_cannot_mint_or_take_over_stronger_keys() {
    let app = spawn_app().await;
    app.add_member("dev@example.com", "dev password!", &["developer"]).await;
    let dev = app.member_token("dev@example.com", "dev password!").await;
    let create = |body| app.call(Method::POST, "/v1/keys", Some(&dev), Some(body));
    for body in [
        json!({"name": "a", "scopes": ["*"]}),
        json!({"name": "b", "scopes": ["admin"]}),
        json!({"name": "c", "scopes": ["members:manage"]}),
        json!({"name": "d", "scopes": ["keys:*"]}),
        json!({"name": "e", "scopes": ["*:read"]}),
        json!({"name": "f", "accountAdministrator": true}),
        json!({"name": "g", "readOnly": true}),
        json!({"name": "h", "roles": ["admin"]}),
    ] {
        let r = create(body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{body}: {}", r.body);
    }
    assert_eq!(app.key_count().await, crate::helpers::BOOTSTRAP_KEYS, "nothing was created");
    // What the developer holds, or ordinary API permissions, it may give.
    for body in [
        json!({"name": "ok1", "scopes": ["keys:read", "keys:verify"]}),
        json!({"name": "ok2", "scopes": ["campaigns:*", "write"]}),
        json!({"name": "ok3", "administrator": true}),
        json!({"name": "ok4", "roles": ["developer"]}),
    ] {
        let r = create(body.clone()).await;
        assert_eq!(r.status, 201, "{body}: {}", r.body);
    }
    // The admin key: no roll, clone or edit by the developer (each would
    // hand them its power).
    let admin_id = app.get("/v1/keys?name=Admin%20key").await.body["data"][0]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (Method::POST, format!("/v1/keys/{admin_id}/roll"), None),
        (Method::POST, format!("/v1/keys/{admin_id}/clone"), Some(json!({}))),
        (Method::PATCH, format!("/v1/keys/{admin_id}"), Some(json!({"name": "mine"}))),
    ] {
        let r = app.call(method.clone(), &path, Some(&dev), body).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{method} {path}");
    }
    // Nor can the developer raise a key it made.
    let own = app.get("/v1/keys?name=ok1").await.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app.call(Method::PATCH, &format!("/v1/keys/{own}"), Some(&dev), Some(json!({"scopes": ["*"]}))).await;
    assert_eq!(r.code(), "cannot_grant");
    // The owner can.
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let r = app.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({"name": "full", "scopes": ["*"]}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.stop().await;
}

async fn members_and_keys_grant_only_roles_within_their_own_permissions() {
    let app = spawn_app().await;
    let r = app.post("/v1/roles", json!({"name": "people", "permissions": ["members:read", "members:manage"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.add_member("hr@example.com", "hr password!!", &["people"]).await;
    let hr = app.member_token("hr@example.com", "hr password!!").await;
    let invite = |roles: serde_json::Value| {
        let body = json!({"email": "new@example.com", "name": "New", "roles": roles});
        app.call(Method::POST, "/v1/members", Some(&hr), Some(body))
    };
    let r = invite(json!(["admin"])).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "cannot_grant"), "{}", r.body);
    let r = invite(json!(["developer"])).await;
    assert_eq!(r.code(), "cannot_grant", "keys:manage is not theirs to give");
    let r = invite(json!(["people"])).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store", "the one-time token is not cached");
    // Nor may they promote themselves.
    let me = app.call(Method::GET, "/v1/auth/session", Some(&hr), None).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.call(Method::PATCH, &format!("/v1/members/{me}"), Some(&hr), Some(json!({"roles": ["admin"]}))).await;
    assert_eq!(r.code(), "cannot_grant");
    // A key holding members:manage cannot turn itself into an admin person.
    let hr_key = app.post("/v1/keys", json!({"name": "hr key", "scopes": ["members:manage"]})).await.str("secret");
    let body = json!({"email": "bot@example.com", "name": "Bot", "roles": ["admin"]});
    let r = app.call(Method::POST, "/v1/members", Some(&hr_key), Some(body)).await;
    assert_eq!(r.code(), "cannot_grant");
    app.stop().await;
}

async fn parallel_wrong_passwords_cannot_outrun_the_limit() {
    let app = spawn_app().await;
    let attempts = (0..30).map(|_| app.login(OWNER_EMAIL, "not the password", json!({})));
    let answers = futures_join_all(attempts).await;
    let refused = answers.iter().filter(|(r, _)| r.status == 429).count();
    let wrong = answers.iter().filter(|(r, _)| r.status == 401).count();
    assert_eq!(wrong, 10, "exactly the limit is checked: {wrong} checked, {refused} refused");
    assert_eq!(refused, 20);
    app.stop().await;
}

async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out = Vec::new();
    // All in flight at once: poll them together.
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.extend(results.into_iter().map(Option::unwrap));
    out
}

async fn role_names_match_exactly_and_tagged_roles_grant_no_account_permission() {
    let app = spawn_app().await;
    let r = app.post("/v1/roles", json!({"name": "Owner", "permissions": ["keys:read"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_role"), "no look-alike of a built-in role");
    let upper = app.post("/v1/roles", json!({"name": "Reader", "permissions": ["keys:read"]})).await;
    assert_eq!(upper.status, 201);
    let lower = app.post("/v1/roles", json!({"name": "reader", "permissions": ["keys:read"]})).await.str("id");
    app.create_key(json!({"name": "k", "roles": ["Reader"]})).await;
    assert_eq!(app.delete(&format!("/v1/roles/{lower}")).await.status, 204, "'reader' is not 'Reader'");
    let d = app.delete(&format!("/v1/roles/{}", upper.str("id"))).await;
    assert_eq!(d.code(), "role_in_use");
    let r = app.post("/v1/roles", json!({"name": "eu-keys", "permissions": ["keys:manage"], "tags": ["eu"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "tagged_account_permission"));
    app.stop().await;
}

async fn a_shared_persons_name_is_theirs() {
    let app = spawn_app().await;
    let (other_ws, other_admin) = app.other_workspace().await;
    let token = app.operator_invite(&other_ws, OWNER_EMAIL, &["viewer"]).await;
    let accept = json!({"token": token, "password": OWNER_PASSWORD});
    app.clock.advance(std::time::Duration::from_secs(1));
    let id = app.call(Method::POST, "/v1/invitations/accept", None, Some(accept)).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(Method::PATCH, &format!("/v1/members/{id}"), Some(&other_admin), Some(json!({"name": "Renamed"})))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "name_is_personal"));
    // They may rename themselves, even where they are only a viewer.
    let (signed_in, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({"token": true, "workspaceId": other_ws})).await;
    let me = signed_in.str("token");
    let r = app.call(Method::PATCH, &format!("/v1/members/{id}"), Some(&me), Some(json!({"name": "Olga"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.call(Method::PATCH, &format!("/v1/members/{id}"), Some(&me), Some(json!({"roles": ["admin"]}))).await;
    assert_eq!(r.status, 403, "but not their roles");
    app.stop().await;
}
