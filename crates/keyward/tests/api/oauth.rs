//! OAuth 2.0 over HTTP: client keys at `/oauth/token` (every grant, every
//! client authentication, every refusal), access tokens and signed requests
//! at `/v1/keys/verify` and forward-auth, introspection, revocation,
//! signing-key rotation, and members' refresh tokens (`/v1/tokens`).

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Key, OWNER_EMAIL, OWNER_PASSWORD, TestApp, spawn_app, spawn_app_with};

backend_tests!(
    client_credentials_by_basic_and_post,
    bad_client_authentication_is_invalid_client_alike,
    token_requests_refuse_bad_input,
    access_tokens_verify_within_their_scope,
    refused_access_tokens_name_the_problem,
    a_revoked_client_stops_its_tokens_at_once,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    api_keys_exchange_for_short_lived_tokens,
    signed_requests_verify_once,
    client_secret_jwt_authenticates_recoverable_clients,
    regenerate_secret_issues_a_new_pair,
    introspection_and_revocation,
    signing_keys_rotate_and_stay_published_until_their_tokens_expire,
    member_refresh_tokens_reach_the_rest_api,
    legacy_clients_authenticate_but_stay_as_imported,
    without_a_master_key_tokens_are_a_setting_not_an_outage,
);

/// A form POST to an OAuth endpoint, with optional Basic credentials.
async fn form(
    app: &TestApp,
    path: &str,
    basic: Option<(&str, &str)>,
    fields: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().post(app.url(path)).form(fields);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    assert!(status < 500, "server error {status}: {text}");
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn client(app: &TestApp, settings: Value) -> (Key, String) {
    let mut settings = settings;
    settings["type"] = json!("client");
    let key = app.create_key(settings).await;
    assert_eq!(key.body["clientSecret"], key.body["secret"], "{}", key.body);
    assert!(key.secret.contains("cs_live_"), "{}", key.secret);
    let id = key.body["clientId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ck_"), "{id}");
    (key, id)
}

async fn token(app: &TestApp, id: &str, secret: &str, scope: Option<&str>) -> Value {
    let mut fields = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        fields.push(("scope", s));
    }
    let (status, _, body) = form(app, "/oauth/token", Some((id, secret)), &fields).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

async fn allow_recoverable(app: &TestApp) {
    let r = app.patch("/v1/workspace", json!({"allowRecoverable": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn now(app: &TestApp) -> i64 {
    use keyward_server::clock::Clock;
    app.clock.now().timestamp()
}

/// An HS256 JWT signed with `secret`, naming `kid`.
fn hs256(kid: Option<&str>, claims: Value, secret: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
}

/// A well-formed secret for the same key id, but not the key's.
fn wrong_secret(secret: &str) -> String {
    let parsed = keyward_core::token::parse(secret).unwrap();
    keyward_core::token::generate_with_id(parsed.prefix, parsed.environment, parsed.id).expose().to_owned()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A server built without a master key (`keyward serve` always has one: it
/// generates it on first start) names the missing setting: 409
/// `master_key_required`, never a 503 outage.
async fn without_a_master_key_tokens_are_a_setting_not_an_outage() {
    let app = spawn_app_with(|c| c.master_keys = None).await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let (status, headers, body) =
        form(&app, "/oauth/token", Some((&id, &key.secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("master_key_required")), "{body}");
    assert_eq!(body["code"], "master_key_required");
    assert!(body["error_description"].as_str().unwrap().contains("master key"), "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    app.stop().await;
}

async fn client_credentials_by_basic_and_post() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["campaigns:*", "read"]})).await;
    let t = token(&app, &id, &key.secret, None).await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "campaigns:* read");
    assert!(t["refresh_token"].as_str().unwrap().starts_with("kw_rt_"), "{t}");
    let access = t["access_token"].as_str().unwrap();
    let c = claims(access);
    let base = format!("http://{}", app.addr);
    assert_eq!(c["iss"], base.as_str());
    assert_eq!(c["aud"], base.as_str());
    assert_eq!(c["sub"], key.id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    assert_eq!(c["workspace"], app.workspace_id.as_str());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 3600);
    assert!(c["jti"].as_str().unwrap().starts_with("at_"));
    let h = header_of(access);
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("EdDSA"), Some("at+jwt")), "{h}");

    // client_secret_post, a narrower scope.
    let fields = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", key.secret.as_str()),
        ("scope", "campaigns:read"),
    ];
    let (status, headers, body) = form(&app, "/oauth/token", None, &fields).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "campaigns:read");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["scope_limited"], true);
    // The key's listing carries the consumer key, never the secret.
    let listed = app.get(&format!("/v1/keys/{}", key.id)).await;
    assert_eq!(listed.body["clientId"], id.as_str());
    assert!(listed.body.get("secret").is_none() && listed.body.get("clientSecret").is_none());
    app.stop().await;
}

async fn bad_client_authentication_is_invalid_client_alike() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let other = app.create_key(json!({"scopes": ["read"]})).await;
    let (locked, locked_id) = client(&app, json!({"scopes": ["read"]})).await;
    let (expiring, expiring_id) = client(&app, json!({"scopes": ["read"], "expiresAt": app.in_secs(60)})).await;
    let (inactive, inactive_id) = client(&app, json!({"scopes": ["read"]})).await;
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/deactivate", inactive.id)).await.status, 200);
    let wrong = wrong_secret(&key.secret);
    let mut answers = Vec::new();
    for (client_id, secret) in [
        (id.as_str(), wrong.as_str()),                        // wrong secret
        ("ck_NoSuchClientXXXXXXXXXXXX", key.secret.as_str()), // unknown client id
        (id.as_str(), other.secret.as_str()),                 // a secret key, not this client
        (inactive_id.as_str(), inactive.secret.as_str()),     // inactive
        (id.as_str(), "not a secret at all"),
    ] {
        let (status, headers, body) =
            form(&app, "/oauth/token", Some((client_id, secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(headers["www-authenticate"], "Basic realm=\"keyward\"");
        assert_eq!(body["code"], "invalid_client");
        answers.push(body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "the answers differ: {answers:?}");
    // Expired.
    app.clock.advance(Duration::from_secs(61));
    let (status, _, body) =
        form(&app, "/oauth/token", Some((&expiring_id, &expiring.secret)), &[("grant_type", "client_credentials")])
            .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    // Locked by wrong secrets (the workspace's lockout), then refused with the right one.
    app.patch("/v1/workspace", json!({"lockout": {"threshold": 3}})).await;
    let wrong = wrong_secret(&locked.secret);
    for _ in 0..3 {
        form(&app, "/oauth/token", Some((&locked_id, &wrong)), &[("grant_type", "client_credentials")]).await;
    }
    let k = app.get(&format!("/v1/keys/{}", locked.id)).await;
    assert_eq!(k.body["state"], "locked", "{}", k.body);
    let (status, _, body) =
        form(&app, "/oauth/token", Some((&locked_id, &locked.secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    // No authentication at all.
    let (status, _, body) =
        form(&app, "/oauth/token", None, &[("grant_type", "client_credentials"), ("client_id", &id)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    app.stop().await;
}

async fn token_requests_refuse_bad_input() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["campaigns:read"]})).await;
    let http = reqwest::Client::new();
    // JSON instead of a form.
    let r = http
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&key.secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].as_str().unwrap().contains("form-encoded"), "{body}");
    let basic = Some((id.as_str(), key.secret.as_str()));
    for (fields, error) in [
        (vec![("grant_type", "password")], "unsupported_grant_type"),
        (vec![("grant_type", "authorization_code")], "unsupported_grant_type"),
        (vec![("scope", "campaigns:read")], "invalid_request"),
        (vec![("grant_type", "client_credentials"), ("scope", "campaigns:write")], "invalid_scope"),
        (vec![("grant_type", "client_credentials"), ("scope", "keys:read")], "invalid_scope"),
        (vec![("grant_type", "client_credentials"), ("scope", "*")], "invalid_scope"),
        (vec![("grant_type", "client_credentials"), ("scope", "{bad}")], "invalid_scope"),
        (vec![("grant_type", "client_credentials"), ("grant_type", "client_credentials")], "invalid_request"),
        (vec![("grant_type", "client_credentials"), ("username", "x")], "invalid_request"),
        (vec![("grant_type", "refresh_token")], "invalid_request"),
    ] {
        let (status, headers, body) = form(&app, "/oauth/token", basic, &fields).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{fields:?}: {body}");
        assert_eq!(body["code"], error);
        assert_eq!(headers["cache-control"], "no-store");
        assert!(!body.to_string().contains(&key.secret));
    }
    // Two ways of authenticating at once.
    let fields =
        [("grant_type", "client_credentials"), ("client_id", id.as_str()), ("client_secret", key.secret.as_str())];
    let (status, _, body) = form(&app, "/oauth/token", basic, &fields).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    app.stop().await;
}

async fn access_tokens_verify_within_their_scope() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["campaigns:*", "tags:read"]})).await;
    let all = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    let narrow =
        token(&app, &id, &key.secret, Some("campaigns:read")).await["access_token"].as_str().unwrap().to_owned();
    let code = |v: Value| v["code"].as_str().unwrap().to_owned();
    assert_eq!(code(app.verify(&all, json!({"permission": "campaigns:delete"})).await), "VALID");
    assert_eq!(code(app.verify(&all, json!({"permission": "tags:read"})).await), "VALID");
    assert_eq!(code(app.verify(&narrow, json!({"permission": "campaigns:read"})).await), "VALID");
    assert_eq!(code(app.verify(&narrow, json!({"permission": "campaigns:delete"})).await), "INSUFFICIENT_PERMISSIONS");
    assert_eq!(code(app.verify(&narrow, json!({"permission": "tags:read"})).await), "INSUFFICIENT_PERMISSIONS");
    let v = app.verify(&all, json!({"permission": "keys:read"})).await;
    assert_eq!(code(v.clone()), "INSUFFICIENT_PERMISSIONS");
    assert_eq!(v["keyId"], key.id.as_str());
    // The client's permissions as they stand now still bound the token.
    let r = app.patch(&format!("/v1/keys/{}", key.id), json!({"scopes": ["tags:read"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(code(app.verify(&all, json!({"permission": "campaigns:delete"})).await), "INSUFFICIENT_PERMISSIONS");
    assert_eq!(code(app.verify(&narrow, json!({"permission": "campaigns:read"})).await), "INSUFFICIENT_PERMISSIONS");
    // Forward-auth takes access tokens as it takes keys (a request with no
    // route of its own needs reads).
    assert_eq!(app.authorize(&all).await.status(), 403);
    let (reader, reader_id) = client(&app, json!({"scopes": ["read"]})).await;
    let read = token(&app, &reader_id, &reader.secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.authorize(&read).await.status(), 200);
    // A token of another workspace is not found there.
    let (_, other_admin) = app.other_workspace().await;
    let r = app.call(Method::POST, "/v1/keys/verify", Some(&other_admin), Some(json!({"key": all}))).await;
    assert_eq!(r.body["code"], "NOT_FOUND", "{}", r.body);
    // Access tokens authenticate to the REST API too, within their scope.
    let admin_client = client(&app, json!({"scopes": ["keys:read", "keys:manage"]})).await;
    let read_only = token(&app, &admin_client.1, &admin_client.0.secret, Some("keys:read")).await;
    let read_only = read_only["access_token"].as_str().unwrap();
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(read_only), None).await.status, 200);
    let r = app.call(Method::POST, "/v1/keys", Some(read_only), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    app.stop().await;
}

async fn refused_access_tokens_name_the_problem() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let access = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let code = |v: Value| v["code"].as_str().unwrap().to_owned();
    // A changed claim: the signature no longer matches.
    let mut c = claims(&access);
    c["scope"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_eq!(code(app.verify(&forged, json!({})).await), "TOKEN_INVALID");
    // A bad signature.
    parts[2] = "A".repeat(parts[2].len());
    assert_eq!(code(app.verify(&parts.join("."), json!({})).await), "TOKEN_INVALID");
    // alg: none.
    let head = b64(&json!({"alg": "none", "typ": "JWT", "kid": header_of(&access)["kid"]}));
    let none = format!("{head}.{}.", b64(&claims(&access)));
    let v = app.verify(&format!("{none}x"), json!({})).await;
    assert_eq!(code(v), "TOKEN_INVALID");
    // Another algorithm than the signing key's (ES256 named, EdDSA key).
    let head = b64(&json!({"alg": "ES256", "typ": "at+jwt", "kid": header_of(&access)["kid"]}));
    let other_alg = format!("{head}.{}.{}", access.split('.').nth(1).unwrap(), access.split('.').nth(2).unwrap());
    let v = app.verify(&other_alg, json!({})).await;
    assert_eq!(code(v.clone()), "TOKEN_INVALID");
    assert!(v["message"].as_str().unwrap().contains("algorithm"), "{v}");
    // An unknown signing key.
    let head = b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "sig_NoSuchKeyXXXXXXX"}));
    let unknown = format!("{head}.{}.{}", access.split('.').nth(1).unwrap(), access.split('.').nth(2).unwrap());
    let v = app.verify(&unknown, json!({})).await;
    assert_eq!(code(v.clone()), "TOKEN_INVALID");
    assert!(v["message"].as_str().unwrap().contains("kid"), "{v}");
    // Expired.
    assert_eq!(code(app.verify(&access, json!({})).await), "VALID");
    app.clock.advance(Duration::from_secs(3600));
    let v = app.verify(&access, json!({})).await;
    assert_eq!((code(v.clone()), v["valid"].as_bool()), ("TOKEN_EXPIRED".to_owned(), Some(false)));
    // The REST API refuses them all alike.
    for bad in [&access, &forged, &none] {
        let r = app.call(Method::GET, "/v1/keys", Some(bad), None).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    app.stop().await;
}

async fn a_revoked_client_stops_its_tokens_at_once() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let access = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.verify_code(&access).await, "VALID");
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/deactivate", key.id)).await.status, 200);
    assert_eq!(app.verify_code(&access).await, "INACTIVE");
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/activate", key.id)).await.status, 200);
    assert_eq!(app.verify_code(&access).await, "VALID");
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", key.id)).await.status, 200);
    assert_eq!(app.verify_code(&access).await, "REVOKED");
    assert_eq!(app.authorize(&access).await.status(), 401);
    app.stop().await;
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["campaigns:*"]})).await;
    let (other, other_id) = client(&app, json!({"scopes": ["campaigns:*"]})).await;
    let basic = Some((id.as_str(), key.secret.as_str()));
    let first = token(&app, &id, &key.secret, Some("campaigns:read campaigns:write")).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String, scope: Option<&'static str>| {
        let app = &app;
        async move {
            let mut fields = vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", rt)];
            if let Some(s) = scope {
                fields.push(("scope", s.to_owned()));
            }
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form(app, "/oauth/token", basic, &fields).await
        }
    };
    let (status, _, second) = refresh(rt1.clone(), None).await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_eq!(second["scope"], "campaigns:read campaigns:write");
    assert_eq!(
        app.verify(second["access_token"].as_str().unwrap(), json!({"permission": "campaigns:read"})).await["code"],
        "VALID"
    );
    // A narrower scope on refresh; a wider one is refused.
    let (status, _, body) = refresh(rt2.clone(), Some("campaigns:delete")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    let (status, _, third) = refresh(rt2.clone(), Some("campaigns:read")).await;
    assert_eq!((status, third["scope"].as_str()), (200, Some("campaigns:read")), "{third}");
    let rt3 = third["refresh_token"].as_str().unwrap().to_owned();
    // Another client cannot use it; nor can nobody.
    let fields = [("grant_type", "refresh_token"), ("refresh_token", rt3.as_str())];
    let (status, _, body) = form(&app, "/oauth/token", Some((&other_id, &other.secret)), &fields).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, _, body) = form(&app, "/oauth/token", None, &fields).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    // Reusing a rotated token revokes the whole family: rt3 dies too.
    let (status, _, body) = refresh(rt1.clone(), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("already used"), "{body}");
    let (status, _, body) = refresh(rt3.clone(), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let entries = app.get("/v1/audit?action=token.reuse_detected").await;
    assert_eq!(entries.body["data"].as_array().map(Vec::len), Some(1), "{}", entries.body);
    // Unknown and malformed tokens.
    for bad in ["kw_rt_0000000000000000000000000000000000000000000", "nonsense"] {
        let (status, _, body) = refresh(bad.to_owned(), None).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    // Expired: a family lives 30 days, whatever its rotations.
    let fresh = token(&app, &id, &key.secret, None).await["refresh_token"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(30 * 86_400));
    let (status, _, body) = refresh(fresh, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
    app.stop().await;
}

async fn api_keys_exchange_for_short_lived_tokens() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"scopes": ["campaigns:*", "tags:read"]})).await;
    let exchange = |subject: String, extra: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let mut fields = vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange".to_owned()),
                ("subject_token", subject),
                ("subject_token_type", "urn:keyward:params:oauth:token-type:api_key".to_owned()),
            ];
            fields.extend(extra.into_iter().map(|(k, v)| (k, v.to_owned())));
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form(app, "/oauth/token", None, &fields).await
        }
    };
    let (status, _, body) = exchange(key.secret.clone(), vec![("scope", "campaigns:read")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(body["expires_in"], 900);
    assert!(body.get("refresh_token").is_none());
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["sub"], key.id.as_str());
    assert_eq!(app.verify(access, json!({"permission": "campaigns:read"})).await["code"], "VALID");
    assert_eq!(app.verify(access, json!({"permission": "campaigns:write"})).await["code"], "INSUFFICIENT_PERMISSIONS");
    // The whole key's permissions, without a scope.
    let (_, _, body) = exchange(key.secret.clone(), vec![]).await;
    assert_eq!(
        app.verify(body["access_token"].as_str().unwrap(), json!({"permission": "tags:read"})).await["code"],
        "VALID"
    );
    // Refusals.
    let wrong = wrong_secret(&key.secret);
    let publishable = {
        let r = app.patch("/v1/workspace", json!({"publicPermissions": ["widgets:read"]})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        app.create_key(
            json!({"type": "publishable", "scopes": ["widgets:read"], "allowedOrigins": ["https://a.example"]}),
        )
        .await
    };
    for (subject, extra, error) in [
        (wrong.clone(), vec![], "invalid_request"),
        ("kw_live_nonsense".to_owned(), vec![], "invalid_request"),
        (publishable.secret.clone(), vec![], "invalid_request"),
        (key.secret.clone(), vec![("scope", "keys:read")], "invalid_scope"),
        (
            key.secret.clone(),
            vec![("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")],
            "invalid_request",
        ),
    ] {
        let (status, _, body) = exchange(subject, extra).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{body}");
    }
    let (status, _, body) = form(
        &app,
        "/oauth/token",
        None,
        &[("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", &key.secret)],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    // A key that expires sooner bounds the token.
    let soon = app.create_key(json!({"scopes": ["read"], "expiresAt": app.in_secs(120)})).await;
    let (_, _, body) = exchange(soon.secret.clone(), vec![]).await;
    assert_eq!(body["expires_in"], 120, "{body}");
    app.stop().await;
}

async fn signed_requests_verify_once() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let key = app.create_key(json!({"scopes": ["campaigns:read", "read"], "recoverable": true})).await;
    let plain = app.create_key(json!({"scopes": ["campaigns:read", "read"]})).await;
    let t = now(&app);
    let signed = |claims: Value| hs256(Some(&key.id), claims, &key.secret);
    let good = signed(json!({"iat": t, "exp": t + 300, "jti": "req-1"}));
    let v = app.verify(&good, json!({"permission": "campaigns:read"})).await;
    assert_eq!(v["code"], "VALID", "{v}");
    assert_eq!(v["keyId"], key.id.as_str());
    // Replayed.
    let v = app.verify(&good, json!({})).await;
    assert_eq!(v["code"], "TOKEN_REPLAYED", "{v}");
    // Forward-auth, with a jti of its own.
    assert_eq!(app.authorize(&signed(json!({"iat": t, "exp": t + 60, "jti": "req-2"}))).await.status(), 200);
    let code = |token: String| {
        let app = &app;
        async move { app.verify(&token, json!({})).await["code"].as_str().unwrap().to_owned() }
    };
    assert_eq!(code(signed(json!({"iat": t, "exp": t + 301, "jti": "a"}))).await, "TOKEN_INVALID");
    assert_eq!(code(signed(json!({"exp": t + 60, "jti": "b"}))).await, "TOKEN_INVALID");
    assert_eq!(code(signed(json!({"iat": t, "exp": t + 60}))).await, "TOKEN_INVALID");
    assert_eq!(code(signed(json!({"iat": t - 400, "exp": t - 100, "jti": "c"}))).await, "TOKEN_EXPIRED");
    assert_eq!(code(signed(json!({"iat": t + 120, "exp": t + 180, "jti": "d"}))).await, "TOKEN_NOT_YET_VALID");
    assert_eq!(
        code(signed(json!({"iat": t, "nbf": t + 120, "exp": t + 180, "jti": "e"}))).await,
        "TOKEN_NOT_YET_VALID"
    );
    // Signed with the wrong secret; with a key that is not recoverable; naming no key.
    assert_eq!(
        code(hs256(Some(&key.id), json!({"iat": t, "exp": t + 60, "jti": "f"}), &plain.secret)).await,
        "INVALID_SECRET"
    );
    let v = app
        .verify(&hs256(Some(&plain.id), json!({"iat": t, "exp": t + 60, "jti": "g"}), &plain.secret), json!({}))
        .await;
    assert_eq!(v["code"], "TOKEN_INVALID");
    assert!(v["message"].as_str().unwrap().contains("recoverable"), "{v}");
    assert_eq!(
        code(hs256(Some("key_NoSuchKeyXXXXXXX"), json!({"iat": t, "exp": t + 60, "jti": "h"}), &key.secret)).await,
        "NOT_FOUND"
    );
    assert_eq!(code(hs256(None, json!({"iat": t, "exp": t + 60, "jti": "i"}), &key.secret)).await, "TOKEN_INVALID");
    // alg: none, naming the key.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": key.id})),
        b64(&json!({"iat": t, "exp": t + 60, "jti": "j"}))
    );
    assert_eq!(code(none).await, "TOKEN_INVALID");
    // Once the key is deactivated, its signed requests stop too.
    app.post_empty(&format!("/v1/keys/{}/deactivate", key.id)).await;
    assert_eq!(code(signed(json!({"iat": t, "exp": t + 60, "jti": "k"}))).await, "INACTIVE");
    app.stop().await;
}

async fn client_secret_jwt_authenticates_recoverable_clients() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let (key, id) = client(&app, json!({"scopes": ["read"], "recoverable": true})).await;
    let (plain, plain_id) = client(&app, json!({"scopes": ["read"]})).await;
    let endpoint = app.url("/oauth/token");
    let t = now(&app);
    let assertion = |client: &str, secret: &str, aud: &str, jti: &str| {
        hs256(None, json!({"iss": client, "sub": client, "aud": aud, "iat": t, "exp": t + 120, "jti": jti}), secret)
    };
    let ask = |assertion: String| {
        let app = &app;
        async move {
            let fields = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion.as_str()),
            ];
            form(app, "/oauth/token", None, &fields).await
        }
    };
    let first = assertion(&id, &key.secret, &endpoint, "one");
    let (status, _, body) = ask(first.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["client_id"], id.as_str());
    // Replayed; wrong audience; wrong secret; a client that keeps no secret.
    for bad in [
        first,
        assertion(&id, &key.secret, "https://elsewhere.example/oauth/token", "two"),
        assertion(&id, &plain.secret, &endpoint, "three"),
        assertion(&plain_id, &plain.secret, &endpoint, "four"),
    ] {
        let (status, _, body) = ask(bad).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    }
    app.stop().await;
}

async fn regenerate_secret_issues_a_new_pair() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let old_token = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/v1/keys/{}/roll", key.id), json!({"gracePeriodSeconds": 600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (new_id, new_secret) = (r.str("clientId"), r.str("clientSecret"));
    assert_ne!(new_id, id);
    assert_ne!(new_secret, key.secret);
    assert_eq!(r.str("id"), key.id);
    // During the grace period both pairs work (never crossed), and old tokens too.
    token(&app, &new_id, &new_secret, None).await;
    token(&app, &id, &key.secret, None).await;
    for (cid, secret) in [(&id, &new_secret), (&new_id, &key.secret)] {
        let (status, _, _) =
            form(&app, "/oauth/token", Some((cid, secret)), &[("grant_type", "client_credentials")]).await;
        assert_eq!(status, 401);
    }
    assert_eq!(app.verify_code(&old_token).await, "VALID");
    app.clock.advance(Duration::from_secs(601));
    let (status, _, _) =
        form(&app, "/oauth/token", Some((&id, &key.secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 401);
    assert_eq!(app.verify_code(&old_token).await, "TOKEN_REVOKED");
    // Without a grace period the old pair's tokens stop at once.
    let current = token(&app, &new_id, &new_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/v1/keys/{}/roll", key.id), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.verify_code(&current).await, "TOKEN_REVOKED");
    token(&app, &r.str("clientId"), &r.str("clientSecret"), None).await;
    app.stop().await;
}

async fn introspection_and_revocation() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["campaigns:read"]})).await;
    let (other, other_id) = client(&app, json!({"scopes": ["campaigns:read"]})).await;
    let t = token(&app, &id, &key.secret, None).await;
    let (access, refresh) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
    let basic = Some((id.as_str(), key.secret.as_str()));
    let (status, _, body) = form(&app, "/oauth/introspect", basic, &[("token", access)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["scope"], "campaigns:read");
    assert_eq!(body["token_type"], "access_token");
    let (_, _, body) =
        form(&app, "/oauth/introspect", basic, &[("token", refresh), ("token_type_hint", "refresh_token")]).await;
    assert_eq!((body["active"].as_bool(), body["token_type"].as_str()), (Some(true), Some("refresh_token")), "{body}");
    let (_, _, body) = form(&app, "/oauth/introspect", basic, &[("token", "garbage")]).await;
    assert_eq!(body, json!({"active": false}));
    // Introspection needs a client; a wrong one is invalid_client.
    let (status, _, body) = form(&app, "/oauth/introspect", None, &[("token", access)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    // Another client cannot revoke this client's tokens (same answer, nothing revoked).
    let (status, _, _) = form(&app, "/oauth/revoke", Some((&other_id, &other.secret)), &[("token", access)]).await;
    assert_eq!(status, 200);
    assert_eq!(app.verify_code(access).await, "VALID");
    // Revoking the access token: refused at once, inactive to introspection.
    let (status, headers, _) = form(&app, "/oauth/revoke", basic, &[("token", access)]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(app.verify_code(access).await, "TOKEN_REVOKED");
    let (_, _, body) = form(&app, "/oauth/introspect", basic, &[("token", access)]).await;
    assert_eq!(body["active"], false);
    // Revoking the refresh token ends its grant.
    form(&app, "/oauth/revoke", basic, &[("token", refresh)]).await;
    let (status, _, body) =
        form(&app, "/oauth/token", basic, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // Unknown tokens: the same 200.
    assert_eq!(form(&app, "/oauth/revoke", basic, &[("token", "whatever")]).await.0, 200);
    let entries = app.get("/v1/audit?action=token.revoked").await;
    assert_eq!(entries.body["data"].as_array().map(Vec::len), Some(2), "{}", entries.body);
    // A token revoked before a restart stays revoked after it.
    let sibling = app.sibling(|_| {}).await;
    let r = sibling.post("/v1/keys/verify", json!({"key": access})).await;
    assert_eq!(r.body["code"], "TOKEN_REVOKED", "{}", r.body);
    sibling.stop().await;
    app.stop().await;
}

async fn signing_keys_rotate_and_stay_published_until_their_tokens_expire() {
    let app = spawn_app().await;
    let (key, id) = client(&app, json!({"scopes": ["read"]})).await;
    let jwks = || {
        let app = &app;
        async move { app.call(Method::GET, "/.well-known/jwks.json", None, None).await.body }
    };
    let before = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    let first_kid = header_of(&before)["kid"].as_str().unwrap().to_owned();
    let set = jwks().await;
    assert_eq!(set["keys"].as_array().unwrap().len(), 1, "{set}");
    assert_eq!(set["keys"][0]["kid"], first_kid.as_str());
    assert_eq!(set["keys"][0]["kty"], "OKP");
    assert!(set["keys"][0].get("d").is_none(), "the private key is never published: {set}");
    app.clock.advance(Duration::from_secs(1));
    let new_kid = app.services.oauth.signer().rotate().await.unwrap();
    let after = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(header_of(&after)["kid"], new_kid.as_str());
    let set = jwks().await;
    let kids: Vec<&str> = set["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![new_kid.as_str(), first_kid.as_str()]);
    assert_eq!(app.verify_code(&before).await, "VALID");
    assert_eq!(app.verify_code(&after).await, "VALID");
    // Once every token the old key signed has expired, it leaves the JWKS.
    app.clock.advance(Duration::from_secs(3600 + 61));
    let set = jwks().await;
    let kids: Vec<&str> = set["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    // The private key is stored sealed, never in the clear.
    let stored = app.services.store.signing_keys().await.unwrap();
    assert!(stored.iter().all(|k| !k.public_jwk.contains("\"d\"") && k.sealed.blob.len() > 48));
    // Due by age: the next token is signed by a new key.
    app.clock.advance(Duration::from_secs(91 * 86_400));
    let later = token(&app, &id, &key.secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_ne!(header_of(&later)["kid"], new_kid.as_str());
    assert_eq!(app.verify_code(&later).await, "VALID");
    app.stop().await;
}

async fn member_refresh_tokens_reach_the_rest_api() {
    let app = spawn_app().await;
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let r = app.call(Method::POST, "/v1/tokens", Some(&owner), Some(json!({"name": "Nightly export"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let (id, refresh) = (r.str("id"), r.str("refreshToken"));
    assert!(r.str("maskedToken").contains('…'));
    // Listed masked, never the token.
    let list = app.call(Method::GET, "/v1/tokens", Some(&owner), None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body[0]["id"], id.as_str());
    assert!(!list.body.to_string().contains(&refresh));
    // Exchanged (no client) for an access token acting as the owner.
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    let (status, _, body) = form(&app, "/oauth/token", None, &fields).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "a member's token does not rotate: {body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let r = app.call(Method::GET, "/v1/auth/session", Some(&access), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&access), None).await.status, 200);
    // It is not a key: verify does not accept it.
    assert_eq!(app.verify_code(&access).await, "TOKEN_INVALID");
    // Used again: the same token still works, and its last use shows.
    let (status, _, _) = form(&app, "/oauth/token", None, &fields).await;
    assert_eq!(status, 200);
    let list = app.call(Method::GET, "/v1/tokens", Some(&owner), None).await;
    assert!(list.body[0]["lastUsed"].is_string(), "{}", list.body);
    // Refusals: a key is not a member; a viewer lacks tokens:manage; bad names.
    let r = app.post("/v1/tokens", json!({"name": "x"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "member_required"), "{}", r.body);
    app.add_member("viewer@example.com", "a long viewer password", &["viewer"]).await;
    let viewer = app.member_token("viewer@example.com", "a long viewer password").await;
    let r = app.call(Method::POST, "/v1/tokens", Some(&viewer), Some(json!({"name": "x"}))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    for bad in [json!({"name": ""}), json!({"name": "x", "expiresInDays": 0}), json!({"name": "x", "extra": 1})] {
        let r = app.call(Method::POST, "/v1/tokens", Some(&owner), Some(bad)).await;
        assert_eq!(r.status, 400, "{}", r.body);
    }
    // Revoked: neither it nor its access tokens work any more.
    let r = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(&owner), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, _, body) = form(&app, "/oauth/token", None, &fields).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(app.call(Method::GET, "/v1/keys", Some(&access), None).await.status, 401);
    let r = app.call(Method::DELETE, &format!("/v1/tokens/{id}"), Some(&owner), None).await;
    assert_eq!(r.status, 404);
    let entries = app.get("/v1/audit?action=token.created").await;
    assert_eq!(entries.body["data"].as_array().map(Vec::len), Some(1), "{}", entries.body);
    app.stop().await;
}

/// An imported legacy client keeps its secret: it gets a consumer key,
/// authenticates with the old secret, cannot be edited or deleted, and
/// (recoverable) its secret can be revealed to copy.
async fn legacy_clients_authenticate_but_stay_as_imported() {
    let app = spawn_app().await;
    allow_recoverable(&app).await;
    let old_secret = "acme_sk_9f8e7d6c5b4a39281706";
    let r = app
        .post(
            "/v1/keys/import",
            json!({"name": "Old partner", "type": "client", "key": old_secret, "prefix": "acme_sk_",
                   "legacy": true, "recoverable": true, "scopes": ["read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (key_id, client_id) = (r.str("id"), r.str("clientId"));
    assert!(client_id.starts_with("ck_"), "{}", r.body);
    assert_eq!(r.body["type"], "client");
    let t = token(&app, &client_id, old_secret, None).await;
    assert_eq!(t["scope"], "read");
    assert_eq!(app.verify_code(t["access_token"].as_str().unwrap()).await, "VALID");
    let (status, _, body) = form(
        &app,
        "/oauth/token",
        Some((&client_id, "acme_sk_0000000000000000000")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");

    let edit = app.patch(&format!("/v1/keys/{key_id}"), json!({"name": "renamed"})).await;
    assert_eq!((edit.status.as_u16(), edit.str("code")), (409, "legacy_key".to_owned()), "{}", edit.body);
    let gone = app.delete(&format!("/v1/keys/{key_id}")).await;
    assert_eq!((gone.status.as_u16(), gone.str("code")), (409, "legacy_key".to_owned()), "{}", gone.body);
    let (login, _) = app.login(OWNER_EMAIL, OWNER_PASSWORD, json!({"token": true})).await;
    let owner = login.str("token");
    let shown = app.call(Method::POST, &format!("/v1/keys/{key_id}/reveal"), Some(&owner), None).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.str("secret"), old_secret);
    assert_eq!(shown.str("clientId"), client_id, "{}", shown.body);
    app.stop().await;
}
