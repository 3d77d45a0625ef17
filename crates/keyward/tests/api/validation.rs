//! Bad input gets a clear 4xx in the error shape and changes nothing.

use reqwest::Method;
use serde_json::json;

use keyward_core::scope::SCOPE_RULE_MESSAGE;

use crate::helpers::spawn_app;

async fn create_refuses_bad_settings_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app.key_count().await;
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let cases = [
        (json!({}), "API key name is required"),
        (json!({"name": ""}), "API key name is required"),
        (json!({"name": "   "}), "API key name is required"),
        (json!({"name": "x".repeat(101)}), "API key name must be at most 100 characters"),
        (json!({"name": "a", "scopes": ["superuser"]}), SCOPE_RULE_MESSAGE),
        (json!({"name": "a", "scopes": ["Campaigns:read"]}), SCOPE_RULE_MESSAGE),
        (json!({"name": "a", "expiresAt": past}), "expiresAt must be in the future"),
        (json!({"name": "a", "expiresIn": 0}), "expiresIn must be between 1 and 36500 days"),
        (json!({"name": "a", "expiresIn": 1, "expiresAt": soon}), "Give either expiresAt or expiresIn, not both"),
        (json!({"name": "a", "description": "d".repeat(501)}), "Description must be at most 500 characters"),
        (
            json!({"name": "a", "description": "line\u{0}end"}),
            "Description must not contain control characters other than line breaks and tabs",
        ),
        (json!({"name": "a", "metadata": [1, 2]}), "metadata must be a JSON object"),
        (json!({"name": "a", "metadata": {"blob": "x".repeat(9000)}}), "metadata must be at most 8 KiB of JSON"),
        (
            json!({"name": "a", "resources": ["site one"]}),
            "Resource ids are 1 to 128 letters, digits, '_', '-', '.' or ':'",
        ),
        (json!({"name": "a", "type": "ftp"}), "type must be: secret, publishable or client"),
        (json!({"name": "a", "environment": "prod"}), "environment must be: live or test"),
    ];
    for (body, message) in cases {
        app.post("/v1/keys", body).await.assert_error(400, message);
    }
    for body in [
        json!({"name": "a", "unknown": true}),
        json!({"name": 5}),
        json!({"name": "a", "scopes": "read"}),
        json!({"name": "a", "expiresIn": "ten"}),
        json!({"name": "a", "expiresAt": "tomorrow"}),
        json!([]),
        json!([null, null]),
        json!("name"),
    ] {
        let r = app.post("/v1/keys", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.code(), "invalid_body");
    }
    let r = app.raw(Method::POST, "/v1/keys", Some("application/json"), "{\"name\": ").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "malformed_json"));
    let r = app.raw(Method::POST, "/v1/keys", Some("application/json"), "").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "body_required"));
    let r = app.raw(Method::POST, "/v1/keys", Some("text/plain"), "{\"name\":\"a\"}").await;
    assert_eq!(r.status, 415);
    let huge = format!("{{\"name\": \"a\", \"description\": \"{}\"}}", "x".repeat(200_000));
    let r = app.raw(Method::POST, "/v1/keys", Some("application/json"), huge).await;
    assert_eq!((r.status.as_u16(), r.code()), (413, "payload_too_large"));
    assert_eq!(app.key_count().await, before, "no failing call created a key");
    app.stop().await;
}

async fn errors_never_echo_submitted_values() {
    let app = spawn_app().await;
    let key = app.create_key(json!({})).await;
    // A secret sent where a number belongs must not come back in the error.
    let r = app.post("/v1/keys", json!({"name": "a", "expiresIn": key.secret})).await;
    assert_eq!(r.status, 400);
    assert!(!r.body.to_string().contains(&key.secret), "{}", r.body);
    let r = app.post("/v1/keys/verify", json!({"key": key.secret, "permission": 7})).await;
    assert!(!r.body.to_string().contains(&key.secret), "{}", r.body);

    // Each refusal names the field and what it allows: no submitted value,
    // no Rust type name.
    let cases = [
        ("/v1/keys", json!({"name": 5}), "Field name must be a string"),
        ("/v1/keys", json!({"name": "a", "readOnly": "yes"}), "Field readOnly must be true or false"),
        ("/v1/keys", json!({"name": "a", "scopes": "read"}), "Field scopes must be a list"),
        ("/v1/keys", json!({"name": "a", "resources": [1]}), "Field resources[0] must be a string"),
        (
            "/v1/keys/verify",
            json!({"key": "kw_live_x", "tenant-id": 1}),
            "Unknown field tenant-id in the request body; allowed: key, ",
        ),
        (
            "/v1/keys/verify",
            json!({"key": "kw_live_x", "kw_live_not a name: it is not shown": 1}),
            "Unknown field in the request body; allowed: key, ",
        ),
        (
            "/v1/keys",
            json!({"name": "a", "expiresAt": "tomorrow"}),
            "Field expiresAt must be a date and time in RFC 3339, e.g. 2027-01-31T12:00:00Z (or give expiresIn, a number of days)",
        ),
        (
            "/v1/keys/import",
            json!({"key": "zz_0123456789abcdef", "prefix": "zz_", "legacy": "nope"}),
            "Field legacy must be true or false",
        ),
    ];
    for (path, body, message) in cases {
        let r = app.post(path, body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_body"), "{body}: {}", r.body);
        assert!(r.error().starts_with(message), "{body}: {}", r.error());
        assert!(!r.error().contains("kw_live_") && !r.error().contains('`'), "{}", r.error());
    }
    let r = app.patch("/v1/workspace", json!({"maxKeys": 4.24e19})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_body"));
    assert!(
        r.error().starts_with("Field maxKeys must be a whole number") && !r.error().contains("4.24"),
        "{}",
        r.error()
    );
    let r = app.post("/v1/keys", json!({"name": "a", "expiresIn": 4242424242u64})).await;
    r.assert_error(400, "expiresIn must be between 1 and 36500 days");
    let r = app.post("/v1/keys", json!({"name": "a", "expiresIn": 4.24e19})).await;
    assert!(
        r.error().starts_with("Field expiresIn must be a whole number") && !r.error().contains("4242424242"),
        "{}",
        r.error()
    );
    let r = app.post("/v1/keys", json!({"name": "a", "allowedOrigins": ["javascript:alert(1)"]})).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("allowedOrigins") && !r.error().contains("javascript"), "{}", r.error());
    let r = app.post("/v1/keys", json!({"name": "a", "allowedIps": ["10.0.0.0/99"]})).await;
    assert!(r.error().contains("allowedIps") && !r.error().contains("/99"), "{}", r.error());

    // Unknown query parameters are refused like unknown fields, named
    // when they look like a name; bad values in keyward's words.
    let r = app.get("/v1/keys?limit=5&secretive=1").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_query_parameter"));
    assert!(r.error().starts_with("Unknown query parameter secretive; allowed:"), "{}", r.error());
    let r = app.get("/v1/keys?limit=5&kw%20live=1").await;
    assert!(r.error().starts_with("Unknown query parameter; allowed:"), "{}", r.error());
    let r = app.get("/v1/keys?limit=abc").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_query"));
    assert_eq!(r.error(), "Query parameter limit must be a whole number");
    let r = app.get(&format!("/v1/keys/{}?expand=1", key.id)).await;
    r.assert_error(400, "This endpoint takes no query parameters");
    assert_eq!(app.get("/v1/keys?limit=5&state=active").await.status, 200);
    app.stop().await;
}

async fn unknown_routes_ids_and_methods() {
    let app = spawn_app().await;
    app.get("/v1/keys/key_doesnotexist0000").await.assert_error(404, "API key not found");
    app.get("/v1/keys/k%00..").await.assert_error(404, "API key not found");
    assert_eq!(app.get("/v1/keys?name=a%00b").await.body["data"], json!([]));
    let r = app.get("/v1/keys/%ff%fe").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_path"));
    let r = app.get("/v1/nothing-here").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
    let r = app.call(Method::PUT, "/v1/keys", Some(&app.admin_key), Some(json!({}))).await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed"));
    // Verification and forward-auth, answered before the router, keep the
    // router's edges.
    let verify = |method, path: &'static str| app.call(method, path, Some(&app.admin_key), Some(json!({"key": "x"})));
    verify(Method::POST, "/v1/keys/verify?key=x").await.assert_error(400, "This endpoint takes no query parameters");
    let r = verify(Method::GET, "/v1/keys/verify").await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed"));
    let r = verify(Method::POST, "/v1/keys/verify/").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
    assert_eq!(verify(Method::POST, "/v1/keys/verify").await.body["code"], "MALFORMED");
    let r = app.get("/v1/authorizex").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
    for action in ["clone", "roll", "deactivate", "activate", "revoke", "usage"] {
        let method = if action == "usage" { Method::GET } else { Method::POST };
        let r = app.call(method, &format!("/v1/keys/key_nope/{action}"), Some(&app.admin_key), None).await;
        r.assert_error(404, "API key not found");
    }
    let r = app.patch("/v1/keys/key_nope", json!({"name": "x"})).await;
    r.assert_error(404, "API key not found");
    app.stop().await;
}

async fn edits_refuse_bad_values_and_change_nothing() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"name": "stable", "scopes": ["read"]})).await;
    let path = format!("/v1/keys/{}", key.id);
    app.patch(&path, json!({"name": ""})).await.assert_error(400, "API key name is required");
    app.patch(&path, json!({"scopes": ["nope"]})).await.assert_error(400, SCOPE_RULE_MESSAGE);
    assert_eq!(app.patch(&path, json!({"bogus": 1})).await.status, 400);
    let r = app.get(&path).await;
    assert_eq!(r.body["name"], "stable");
    assert_eq!(r.body["scopes"], json!(["read"]));
    assert_eq!(r.body["version"], 1);
    app.stop().await;
}

backend_tests!(
    create_refuses_bad_settings_and_changes_nothing,
    errors_never_echo_submitted_values,
    unknown_routes_ids_and_methods,
    edits_refuse_bad_values_and_change_nothing
);
