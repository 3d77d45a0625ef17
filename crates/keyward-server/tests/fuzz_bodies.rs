//! Property-based fuzzing of request bodies: arbitrary bytes and arbitrary
//! JSON (with the API's own field names) sent to every writing endpoint of
//! the real router never get a 5xx, and no error message repeats a value
//! that was sent or names a Rust type. (The token parser has its own property
//! tests in keyward-core.) `PROPTEST_CASES` raises the count.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use keyward_core::hash::SecretHasher;
use keyward_server::app::{App, AppState, router};
use keyward_server::{ServerConfig, Services};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: App,
    admin: String,
    key_id: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (router, admin, key_id) = runtime.block_on(async {
            let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
            let store = keyward_store::open(&url).await.unwrap();
            let services =
                Services::new(store.clone(), SecretHasher::new(&[5u8; 32]).unwrap(), &ServerConfig::default())
                    .await
                    .unwrap();
            let created = services.workspaces.bootstrap("fuzz", &Default::default()).await.unwrap().unwrap();
            let state = AppState::new(&services, &ServerConfig::default());
            (router(state, 64 * 1024), created.secret.expose().to_owned(), created.admin_key.id.to_string())
        });
        Fixture { runtime, router, admin, key_id, _dir: dir }
    })
}

const FIELDS: &[&str] = &[
    "name",
    "description",
    "type",
    "environment",
    "scopes",
    "readOnly",
    "administrator",
    "accountAdministrator",
    "resources",
    "allowedOrigins",
    "allowedIps",
    "expiresAt",
    "expiresIn",
    "metadata",
    "key",
    "permission",
    "resource",
    "method",
    "path",
    "origin",
    "ip",
    "sha256",
    "prefix",
    "id",
    "legacy",
    "gracePeriodSeconds",
    "maxKeys",
    "defaultKeyLifetimeDays",
    "maxKeyLifetimeDays",
    "tokenPrefix",
    "routes",
    "publicPermissions",
    "identityMetadata",
    "scope",
    "siteId",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,40}".prop_map(Value::String),
        prop::sample::select(vec!["read", "*", "keys:manage", "2030-01-01T00:00:00Z", "10.0.0.0/8", "/a/**", "GET"])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// The values of a JSON body distinctive enough to recognise in a message:
/// strings of 8 or more characters, numbers of 6 or more.
fn submitted(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.trim().chars().count() >= 8 => out.push(s.clone()),
        Value::Number(n) if n.to_string().len() >= 6 => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| submitted(i, out)),
        Value::Object(map) => map.values().for_each(|i| submitted(i, out)),
        _ => {}
    }
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..256), json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),]
}

fn endpoint() -> impl Strategy<Value = (&'static str, String)> {
    let id = fixture().key_id.clone();
    prop::sample::select(vec![
        ("POST", "/v1/keys".to_owned()),
        ("POST", "/v1/keys/verify".to_owned()),
        ("POST", "/v1/keys/import".to_owned()),
        ("PATCH", "/v1/workspace".to_owned()),
        ("POST", "/api/api-keys".to_owned()),
        ("POST", format!("/v1/keys/{id}/clone")),
        ("PATCH", format!("/v1/keys/key_{}", "0".repeat(16))),
        ("POST", "/v1/authorize".to_owned()),
        ("POST", "/v1/identities".to_owned()),
        ("PATCH", format!("/v1/identities/id_{}", "0".repeat(16))),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_body_gets_a_server_error((method, path) in endpoint(), body in body(), json_type in any::<bool>()) {
        let f = fixture();
        let mut sent = Vec::new();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            submitted(&v, &mut sent);
        }
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header("authorization", format!("Bearer {}", f.admin))
            .header("x-keyward-verifier-key", &f.admin)
            .header("x-original-uri", "/x");
        if json_type {
            req = req.header("content-type", "application/json");
        }
        let mut req = req.body(Body::from(body)).unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        let response = f.runtime.block_on(f.router.clone().oneshot(req)).unwrap();
        let status = response.status();
        prop_assert!(status.as_u16() < 500, "{method} {path} answered {status}");
        let bytes = f.runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(message) = answer["error"].as_str() {
            for value in &sent {
                prop_assert!(!message.contains(value.as_str()), "{method} {path}: {message:?} repeats {value:?}");
            }
            for rust in ["i64", "u32", "u64", "usize", "f64", "struct ", "`"] {
                prop_assert!(!message.contains(rust), "{method} {path}: {message:?} names {rust:?}");
            }
        }
    }
}
