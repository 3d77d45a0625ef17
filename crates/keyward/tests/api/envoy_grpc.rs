//! Envoy's ext_authz over gRPC (`--grpc-listen`), driven by a client that
//! `grpcio-tools` generates from Envoy's own protos (`proto/`,
//! `tests/envoy/ext_authz.py`): every answer of the HTTP forward-auth
//! tests, asked once over gRPC and once of the trusted forward-auth
//! listener as Traefik asks, must be the same answer.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::forward_auth::map_routes;
use crate::helpers::*;

backend_tests!(grpc_ext_authz_answers_as_forward_auth_or_skip);

/// One request to authorise: method, path (with query), headers, client address.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    source: &'static str,
    /// A `CheckRequest` without attributes.
    bare: bool,
}

fn case(what: &'static str, method: &'static str, path: &str, headers: Vec<(&'static str, String)>) -> Case {
    Case { what, method, path: path.to_owned(), headers, source: "203.0.113.5", bare: false }
}

/// The answers of `--grpc-listen` to `cases`, in order.
async fn over_grpc(app: &TestApp, python: &PathBuf, cases: &[Case]) -> Vec<Value> {
    use tokio::io::AsyncWriteExt;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let input: Vec<Value> = cases
        .iter()
        .map(|c| {
            let headers: serde_json::Map<String, Value> =
                c.headers.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            json!({"method": c.method, "path": c.path, "headers": headers, "source": c.source, "bare": c.bare})
        })
        .collect();
    let mut child = tokio::process::Command::new(python)
        .arg(root.join("tests/envoy/ext_authz.py"))
        .arg(app.grpc_addr.to_string())
        .arg(root.join("../../proto"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(Value::from(input).to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the gRPC client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("answers as JSON")
}

/// The trusted forward-auth listener's answer to `case`, as Traefik asks.
async fn over_http(app: &TestApp, case: &Case) -> Value {
    let mut request = app
        .client
        .get(format!("http://{}/v1/authorize", app.forward_auth_addr))
        .header("x-forwarded-method", case.method)
        .header("x-forwarded-uri", &case.path)
        .header("x-forwarded-for", case.source);
    for (k, v) in &case.headers {
        request = request.header(*k, v);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let headers: serde_json::Map<String, Value> =
        r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap()))).collect();
    json!({"status": status, "headers": headers, "body": r.text().await.unwrap()})
}

/// The headers an answer is judged by (the rest is transport).
const COMPARED: &[&str] = &[
    "x-keyward-key-id",
    "x-keyward-workspace",
    "x-keyward-key-type",
    "x-keyward-scopes",
    "x-keyward-meta-plan",
    "x-keyward-error",
    "www-authenticate",
    "content-type",
    "ratelimit-limit",
    "ratelimit-remaining",
];

async fn grpc_ext_authz_answers_as_forward_auth_or_skip() {
    let Some(python) = crate::python::python("grpc_ext_authz_answers_as_forward_auth") else { return };
    let app = spawn_app().await;
    map_routes(&app).await;
    let client = app.create_key(json!({"scopes": ["tags:read", "tags:write"], "metadata": {"plan": "pro"}})).await;
    let reader = app.create_key(json!({"scopes": ["tags:read"], "readOnly": true})).await;
    let fenced = app.create_key(json!({"scopes": ["*"], "allowedIps": ["203.0.113.0/24"]})).await;
    let revoked = app.create_key(json!({"scopes": ["*"]})).await;
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", revoked.id)).await.status, 200);
    let limit = json!([{"name": "requests", "limit": 2, "durationMs": 60_000, "autoApply": true}]);
    let credits = json!({"remaining": 1, "refill": {"interval": "daily", "amount": 50}});
    // Keys whose answers change as they are used: one for each side.
    let twins = |settings: Value| {
        let app = &app;
        async move { (app.create_key(settings.clone()).await, app.create_key(settings).await) }
    };
    let (limited_grpc, limited_http) = twins(json!({"scopes": ["*"], "ratelimits": limit})).await;
    let (credited_grpc, credited_http) = twins(json!({"scopes": ["*"], "credits": credits})).await;

    let bearer = |k: &Key| vec![("authorization", format!("Bearer {}", k.secret))];
    let stateless = |(grpc, http): (&Key, &Key)| (bearer(grpc), bearer(http));
    let mut grpc_cases = Vec::new();
    let mut http_cases = Vec::new();
    type Headers = Vec<(&'static str, String)>;
    let mut both = |what, method, path: &str, (g, h): (Headers, Headers)| {
        grpc_cases.push(case(what, method, path, g));
        http_cases.push(case(what, method, path, h));
    };
    both("allowed, identity headers", "PUT", "/api/v2/tags/1?x=1", stateless((&client, &client)));
    both("no key", "GET", "/api/v2/tags", (vec![], vec![]));
    both("outside its route scopes", "GET", "/api/v2/campaigns/1", stateless((&client, &client)));
    both("read-only key on POST", "POST", "/api/v2/tags/1", stateless((&reader, &reader)));
    both("dot segments resolved", "GET", "/api/v2/tags/../campaigns/1", stateless((&client, &client)));
    let api_key = vec![("x-api-key", client.secret.clone())];
    both("key in X-API-Key", "DELETE", "/api/v2/tags/9", (api_key.clone(), api_key));
    both("revoked", "GET", "/api/v2/tags/1", stateless((&revoked, &revoked)));
    both("key in the query: off", "GET", &format!("/x?api_key={}", client.secret), (vec![], vec![]));
    both("garbage key", "GET", "/x", (bearer_of("kw_live_garbage"), bearer_of("kw_live_garbage")));
    both("a path without its slash", "GET", "api/v2/tags", stateless((&client, &client)));
    both("a path with a space", "GET", "/api/v2/ta gs", stateless((&client, &client)));
    for _ in 0..3 {
        both("rate limited on the third", "GET", "/x", (bearer(&limited_grpc), bearer(&limited_http)));
    }
    for _ in 0..2 {
        both("out of credits on the second", "GET", "/x", (bearer(&credited_grpc), bearer(&credited_http)));
    }
    // A client claiming another original URI in headers of its own.
    let mut spoof = bearer(&client);
    spoof.push(("x-forwarded-uri", "/api/v2/tags/1".to_owned()));
    grpc_cases.push(case("a spoofed X-Forwarded-Uri is ignored", "GET", "/api/v2/campaigns/1", spoof));
    let mut inside = case("IP allowlist: inside", "GET", "/x", bearer(&fenced));
    inside.source = "203.0.113.77";
    let mut outside = case("IP allowlist: outside", "GET", "/x", bearer(&fenced));
    outside.source = "198.51.100.1";
    let (inside_http, outside_http) = (
        Case { headers: bearer(&fenced), ..case("", "GET", "/x", vec![]) }.with_source("203.0.113.77"),
        Case { headers: bearer(&fenced), ..case("", "GET", "/x", vec![]) }.with_source("198.51.100.1"),
    );
    grpc_cases.push(inside);
    grpc_cases.push(outside);

    let grpc = over_grpc(&app, &python, &grpc_cases).await;
    let mut http = Vec::new();
    for c in &http_cases {
        http.push(over_http(&app, c).await);
    }
    http.push(over_http(&app, &http_cases[2]).await); // the spoof's twin: refused as outside its scopes
    http.push(over_http(&app, &inside_http).await);
    http.push(over_http(&app, &outside_http).await);
    assert_eq!(grpc.len(), http.len());

    let twin_ids = [(&limited_grpc.id, &limited_http.id), (&credited_grpc.id, &credited_http.id)];
    for ((g, h), c) in grpc.iter().zip(&http).zip(&grpc_cases) {
        let what = c.what;
        assert_eq!(g["status"], h["status"], "{what}: {g} vs {h}");
        let status = g["status"].as_u64().unwrap();
        let expected_grpc = match status {
            200 => 0,
            401 => 16,
            403 => 7,
            429 => 8,
            _ => 3,
        };
        assert_eq!(g["grpc"], expected_grpc, "{what}: the gRPC status of {status}");
        for name in COMPARED {
            let (mut gv, hv) = (g["headers"][name].clone(), h["headers"][name].clone());
            if *name == "x-keyward-key-id" {
                for (a, b) in twin_ids {
                    if gv == json!(a) {
                        gv = json!(b);
                    }
                }
            }
            assert_eq!(gv, hv, "{what}: {name}");
        }
        for name in ["retry-after", "ratelimit-reset"] {
            let seconds = |v: &Value| v[name].as_str().map(|s| s.parse::<i64>().unwrap());
            match (seconds(&g["headers"]), seconds(&h["headers"])) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1, "{what}: {name} {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "{what}: {name}"),
            }
        }
        if status != 200 {
            let (gb, hb): (Value, Value) = (
                serde_json::from_str(g["body"].as_str().unwrap()).unwrap(),
                serde_json::from_str(h["body"].as_str().unwrap()).unwrap(),
            );
            assert_eq!(gb, hb, "{what}: the JSON error");
            assert!(gb["error"].is_string() && gb["code"].is_string());
        } else {
            assert_eq!(g["body"], "");
        }
    }
    // What the answers are, not only that they agree.
    let status = |i: usize| grpc[i]["status"].as_u64().unwrap();
    assert_eq!(
        [status(0), status(1), status(2), status(3), status(4), status(5), status(6), status(7)],
        [200, 401, 403, 403, 403, 200, 401, 401]
    );
    assert_eq!(grpc[0]["headers"]["x-keyward-key-id"], client.id.as_str());
    assert_eq!(grpc[0]["headers"]["x-keyward-meta-plan"], "pro");
    assert_eq!(grpc[0]["headers"]["x-keyward-scopes"], "tags:read tags:write");
    assert_eq!([status(9), status(10)], [400, 400], "bad paths");
    assert_eq!(grpc[9]["grpc"], 3);
    assert_eq!([status(11), status(12), status(13)], [200, 200, 429]);
    assert_eq!(grpc[13]["headers"]["ratelimit-remaining"], "0");
    assert!(grpc[13]["headers"]["retry-after"].is_string());
    assert_eq!([status(14), status(15)], [200, 429]);
    let n = grpc.len();
    let recipe =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/recipes/envoy.yaml")).unwrap();
    assert!(recipe.contains("grpc_service") && recipe.contains("http2_protocol_options"));
    // A request without attributes is a gRPC error (Envoy then denies).
    let bare = Case { bare: true, ..case("bare", "GET", "/", vec![]) };
    let answer = over_grpc(&app, &python, &[bare]).await;
    assert_eq!(answer[0]["grpc"], 3, "INVALID_ARGUMENT: {}", answer[0]);
    assert_eq!([status(n - 3), status(n - 2), status(n - 1)], [403, 200, 403]);
    app.stop().await;
}

fn bearer_of(key: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {key}"))]
}

impl Case {
    fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }
}
