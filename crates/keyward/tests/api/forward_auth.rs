//! Route scopes, browser and network restrictions, publishable keys, and
//! /v1/authorize as each gateway calls it.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Route scopes of a small API: tags are read with tags:read, written with
/// tags:write; campaigns need campaigns:read.
pub async fn map_routes(app: &TestApp) {
    let r = app
        .patch(
            "/v1/workspace",
            json!({
                "routes": [
                    {"method": "GET", "path": "/api/v2/tags/**", "permission": "tags:read"},
                    {"method": "*", "path": "/api/v2/tags/**", "permission": "tags:write"},
                    {"method": "GET", "path": "/api/v2/campaigns/*", "permission": "campaigns:read"}
                ],
                "publicPermissions": ["events:create"],
                "identityMetadata": ["plan"]
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["routes"][0]["path"], "/api/v2/tags/**");
}

async fn verify_applies_routes_origins_and_ips() {
    let app = spawn_app().await;
    map_routes(&app).await;
    let tags = app.create_key(json!({"scopes": ["tags:read"]})).await;
    let check = |method: &'static str, path: &'static str| json!({"method": method, "path": path});
    assert_eq!(app.verify(&tags.secret, check("GET", "/api/v2/tags/7")).await["code"], "VALID");
    let v = app.verify(&tags.secret, check("POST", "/api/v2/tags")).await;
    assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(v["message"], "Insufficient permissions. This key has read-only access.");
    assert_eq!(app.verify(&tags.secret, check("GET", "/api/v2/campaigns/1")).await["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(app.verify(&tags.secret, check("GET", "/api/v2/other")).await["code"], "INSUFFICIENT_PERMISSIONS");
    let full = app.create_key(json!({"scopes": ["*"]})).await;
    assert_eq!(app.verify(&full.secret, check("DELETE", "/api/v2/anything/new")).await["code"], "VALID");

    let fenced = app
        .create_key(json!({"scopes": ["read"], "allowedOrigins": ["*.example.com"], "allowedIps": ["10.0.0.0/8", "2001:db8::/32"]}))
        .await;
    assert_eq!(fenced.body["allowedIps"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    let ok = json!({"origin": "https://shop.example.com", "ip": "10.9.8.7"});
    assert_eq!(app.verify(&fenced.secret, ok).await["code"], "VALID");
    let v6 = json!({"origin": "https://shop.example.com/cart", "ip": "2001:db8::42"});
    assert_eq!(app.verify(&fenced.secret, v6).await["code"], "VALID");
    let wrong_origin = json!({"origin": "https://evil.test", "ip": "10.9.8.7"});
    assert_eq!(app.verify(&fenced.secret, wrong_origin).await["code"], "FORBIDDEN_ORIGIN");
    let wrong_ip = json!({"origin": "https://shop.example.com", "ip": "192.0.2.1"});
    assert_eq!(app.verify(&fenced.secret, wrong_ip).await["code"], "FORBIDDEN_IP");

    // Bad values are refused, naming them, and change nothing.
    let r = app
        .patch("/v1/workspace", json!({"routes": [{"method": "GET", "path": "/a*b", "permission": "x:read"}]}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("Invalid route path:") && !r.error().contains("/a*b"), "{}", r.error());
    assert_eq!(app.get("/v1/workspace").await.body["routes"].as_array().unwrap().len(), 3);
    let r = app.post("/v1/keys", json!({"name": "bad ip", "allowedIps": ["10.0.0.0/33"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_ip_range"));
    assert!(r.error().contains("allowedIps") && !r.error().contains("10.0.0.0/33"));
    let r = app.post("/v1/keys", json!({"name": "bad origin", "allowedOrigins": ["example.com/path"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_origin"));
    let r = app.post("/v1/keys/verify", json!({"key": full.secret, "ip": "nope"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_ip"));
    app.stop().await;
}

async fn publishable_keys() {
    let app = spawn_app().await;
    map_routes(&app).await;
    let r = app.post("/v1/keys", json!({"name": "js", "type": "publishable", "scopes": ["read"], "allowedOrigins": ["https://shop.example.com"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "not_public"));
    let r = app.post("/v1/keys", json!({"name": "js", "type": "publishable", "scopes": ["events:create"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "origins_required"));
    let pk = app
        .create_key(json!({"name": "js", "type": "publishable", "scopes": ["events:create"], "allowedOrigins": ["https://shop.example.com"]}))
        .await;
    assert!(pk.secret.starts_with("kwpk_live_"), "{}", pk.secret);
    assert_eq!(pk.body["type"], "publishable");
    let v = app.verify(&pk.secret, json!({"origin": "https://shop.example.com", "permission": "events:create"})).await;
    assert_eq!(v["code"], "VALID");
    assert_eq!(app.verify(&pk.secret, json!({"permission": "events:create"})).await["code"], "FORBIDDEN_ORIGIN");
    let r = app.patch(&format!("/v1/keys/{}", pk.id), json!({"scopes": ["events:create", "contacts:read"]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "not_public"));
    app.stop().await;
}

/// One forward-auth call; returns status, headers and body.
async fn authorize(url: String, method: reqwest::Method, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let nginx = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-original-uri"));
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = resp.text().await.unwrap();
    assert!(status < 500, "{status} {text}");
    // Gateways keep connections open only to answers they read whole: an
    // allowed request, and any answer to nginx, has no body.
    if status == 200 || nginx {
        assert_eq!(text, "", "no body for {status} (nginx: {nginx})");
        assert_eq!(h.get("content-length").map(|v| v.to_str().unwrap()), Some("0"));
    }
    let code = h.get("x-keyward-error").map(|v| v.to_str().unwrap().to_owned());
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(body) => {
            assert_eq!(body["code"].as_str(), code.as_deref(), "X-Keyward-Error names the body's code");
            body
        }
        Err(_) => code.map_or(Value::Null, |c| json!({"code": c})),
    };
    assert_eq!(status == 200, body.is_null(), "every denial names its code: {status} {body}");
    (status, h, body)
}

async fn forward_auth_as_each_gateway_calls_it() {
    let app = spawn_app().await;
    map_routes(&app).await;
    let gateway = app.create_key(json!({"name": "gateway", "scopes": ["keys:verify"]})).await;
    let client = app.create_key(json!({"scopes": ["tags:read", "tags:write"], "metadata": {"plan": "pro"}})).await;
    let reader = app.create_key(json!({"scopes": ["tags:read"], "readOnly": true})).await;
    let bearer = format!("Bearer {}", client.secret);
    let main = app.url("/v1/authorize");

    // nginx auth_request: X-Original-* and the verifier key.
    let nginx = |uri: &'static str, method: &'static str, auth: String| {
        vec![
            ("x-keyward-verifier-key".to_owned(), gateway.secret.clone()),
            ("x-original-uri".to_owned(), uri.to_owned()),
            ("x-original-method".to_owned(), method.to_owned()),
            ("authorization".to_owned(), auth),
        ]
    };
    let call = |headers: Vec<(String, String)>| {
        let url = main.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            authorize(url, reqwest::Method::GET, &h).await
        }
    };
    let (status, headers, body) = call(nginx("/api/v2/tags/1?x=1", "PUT", bearer.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-keyward-key-id"], client.id.as_str());
    assert_eq!(headers["x-keyward-workspace"], app.workspace_id.as_str());
    assert_eq!(headers["x-keyward-scopes"], "tags:read tags:write");
    assert_eq!(headers["x-keyward-meta-plan"], "pro");
    assert!(headers.get("x-keyward-key-id").is_some());

    let (status, headers, body) = call(nginx("/api/v2/tags", "GET", String::new())).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("authentication_required")));
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, body) = call(nginx("/api/v2/campaigns/1", "GET", bearer.clone())).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("insufficient_permissions")), "outside its route scopes");
    let (status, _, _) = call(nginx("/api/v2/tags/1", "POST", format!("Bearer {}", reader.secret))).await;
    assert_eq!(status, 403, "read-only key on POST");
    let (status, _, _) = call(nginx("/api/v2/tags/../campaigns/1", "GET", bearer.clone())).await;
    assert_eq!(status, 403, "dot segments are resolved before matching");

    // The gateway must identify itself on the main listener.
    let h = [("x-original-uri", "/api/v2/tags"), ("authorization", bearer.as_str())];
    let (status, _, body) = authorize(main.clone(), reqwest::Method::GET, &h).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("verifier_key_required")));
    let weak = [
        ("x-keyward-verifier-key", reader.secret.as_str()),
        ("x-original-uri", "/api/v2/tags"),
        ("authorization", bearer.as_str()),
    ];
    let (status, _, _) = authorize(main.clone(), reqwest::Method::GET, &weak).await;
    assert_eq!(status, 403, "the gateway's key needs keys:verify");
    // A missing or malformed original URI is a 400, never a 200.
    let h = [("x-keyward-verifier-key", gateway.secret.as_str()), ("authorization", bearer.as_str())];
    let (status, _, body) = authorize(main.clone(), reqwest::Method::GET, &h).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("missing_original_uri")));
    let h = [
        ("x-keyward-verifier-key", gateway.secret.as_str()),
        ("x-original-uri", "api/v2"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(authorize(main.clone(), reqwest::Method::GET, &h).await.0, 400);

    // Traefik: X-Forwarded-*, on the trusted forward-auth listener, key in X-API-Key.
    let traefik = format!("http://{}/v1/authorize", app.forward_auth_addr);
    let h = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/api/v2/tags/9"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-for", "203.0.113.5"),
        ("x-api-key", client.secret.as_str()),
    ];
    let (status, headers, body) = authorize(traefik.clone(), reqwest::Method::GET, &h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-keyward-key-id"], client.id.as_str());
    let recipe =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/recipes/traefik.yml")).unwrap();
    assert!(recipe.contains("/v1/authorize") && recipe.contains("X-Keyward-Key-Id"));

    // Envoy ext_authz: original method, original path after the prefix.
    let envoy = app.url("/v1/authorize/api/v2/tags/3?expand=1");
    let h = [("x-keyward-verifier-key", gateway.secret.as_str()), ("authorization", bearer.as_str())];
    let (status, _, body) = authorize(envoy, reqwest::Method::PATCH, &h).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = authorize(app.url("/v1/authorize/api/v2/campaigns/3"), reqwest::Method::GET, &h).await;
    assert_eq!(status, 403);
    let recipe =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/recipes/envoy-http.yaml")).unwrap();
    assert!(recipe.contains("path_prefix: /v1/authorize") && recipe.contains("X-Keyward-Verifier-Key"));

    // IP allowlists see the client behind a trusted proxy.
    let fenced = app.create_key(json!({"scopes": ["*"], "allowedIps": ["203.0.113.0/24"]})).await;
    let inside =
        [("x-forwarded-uri", "/x"), ("x-forwarded-for", "203.0.113.77"), ("x-api-key", fenced.secret.as_str())];
    assert_eq!(authorize(traefik.clone(), reqwest::Method::GET, &inside).await.0, 200);
    let outside =
        [("x-forwarded-uri", "/x"), ("x-forwarded-for", "198.51.100.1"), ("x-api-key", fenced.secret.as_str())];
    let (status, _, body) = authorize(traefik.clone(), reqwest::Method::GET, &outside).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden_ip")));

    // Revocation takes effect on the next request.
    app.post_empty(&format!("/v1/keys/{}/revoke", client.id)).await;
    let (status, _, body) = call(nginx("/api/v2/tags/1", "GET", bearer.clone())).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_api_key")));
    // Keys in the query string are off unless configured.
    let q = [("x-forwarded-uri", "/x?api_key=whatever")];
    assert_eq!(authorize(traefik, reqwest::Method::GET, &q).await.0, 401);
    app.stop().await;
}

backend_tests!(verify_applies_routes_origins_and_ips, publishable_keys, forward_auth_as_each_gateway_calls_it);
