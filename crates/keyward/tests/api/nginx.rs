//! A real nginx (Debian's package) with `auth_request` pointing at keyward,
//! in front of a small upstream, configured with docs/recipes/nginx.conf.
//! Skips with a message when nginx is absent; fails instead under CI=true.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::forward_auth::map_routes;
use crate::helpers::spawn_app;

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The upstream API: echoes what it received, identity headers included.
async fn spawn_upstream() -> SocketAddr {
    use axum::http::{HeaderMap, Method, Uri};
    let echo = |method: Method, uri: Uri, headers: HeaderMap| async move {
        let identity: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-keyward-"))
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
            .collect();
        axum::Json(json!({"method": method.as_str(), "uri": uri.to_string(), "identity": identity}))
    };
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not listen on {port}");
}

/// Sockets of `port` in TIME_WAIT (connections closed), by `ss`.
fn time_wait(port: u16) -> Option<usize> {
    let filter = format!("( dport = :{port} or sport = :{port} )");
    let out = Command::new("ss").args(["-tan", "state", "time-wait", &filter]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).lines().count().saturating_sub(1))
}

async fn nginx_auth_request_protects_an_api() {
    use keyward_store::testing::run::{Piece, ran, skipped};
    const TEST: &str = "nginx_auth_request_protects_an_api";
    let Some(nginx) = nginx_binary() else {
        skipped(Piece::Nginx, TEST, "nginx is not installed");
        return;
    };
    ran(Piece::Nginx, TEST, "nginx");
    let app = spawn_app().await;
    map_routes(&app).await;
    let gateway = app.create_key(json!({"name": "nginx", "scopes": ["keys:verify"]})).await;
    let upstream = spawn_upstream().await;
    let port = free_port();

    let recipe =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/recipes/nginx.conf")).unwrap();
    let config = recipe
        .replace("127.0.0.1:8080", &app.addr.to_string())
        .replace("127.0.0.1:3000", &upstream.to_string())
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
        .replace("kw_live_REPLACE_WITH_A_KEY_HOLDING_KEYS_VERIFY", &gateway.secret);
    assert_ne!(config, recipe);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
    let child = Command::new(nginx)
        .args(["-p", dir.path().to_str().unwrap(), "-c", "nginx.conf"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _nginx = Nginx(child);
    wait_for_port(port).await;

    let client = app.create_key(json!({"scopes": ["tags:read", "tags:write"]})).await;
    let reader = app.create_key(json!({"scopes": ["tags:read"], "readOnly": true})).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let send = |method: reqwest::Method, path: &str, key: Option<&str>| {
        let mut req = http.request(method, url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };

    let resp = send(reqwest::Method::GET, "/api/v2/tags/1?x=1", Some(&client.secret)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["uri"], "/api/v2/tags/1?x=1", "the upstream was reached");
    assert_eq!(seen["identity"]["x-keyward-key-id"], client.id.as_str());
    assert_eq!(seen["identity"]["x-keyward-workspace"], app.workspace_id.as_str());
    let resp = send(reqwest::Method::POST, "/api/v2/tags", Some(&client.secret)).await.unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(send(reqwest::Method::GET, "/api/v2/tags/1", None).await.unwrap().status(), 401, "no key");
    assert_eq!(send(reqwest::Method::GET, "/api/v2/tags/1", Some("kw_live_garbage")).await.unwrap().status(), 401);
    let resp = send(reqwest::Method::POST, "/api/v2/tags", Some(&reader.secret)).await.unwrap();
    assert_eq!(resp.status(), 403, "read-only key on POST");
    let resp = send(reqwest::Method::GET, "/api/v2/campaigns/1", Some(&client.secret)).await.unwrap();
    assert_eq!(resp.status(), 403, "outside its route scopes");

    // nginx keeps its connections to keyward: 300 requests, allowed and
    // denied, close none of them (no socket of keyward's port in TIME_WAIT).
    let closed_before = time_wait(app.addr.port());
    for i in 0..300 {
        // Failures stay under the address's limit (50 a minute).
        let key = if i % 10 == 0 { "kw_live_garbage" } else { client.secret.as_str() };
        send(reqwest::Method::GET, "/api/v2/tags/1", Some(key)).await.unwrap();
    }
    if let Some((before, after)) = closed_before.zip(time_wait(app.addr.port())) {
        assert!(after <= before + 2, "connections to keyward were closed: {before} -> {after} in TIME_WAIT");
    }

    // No credits left: keyward tells nginx 403 + usage_exceeded, the recipe
    // answers the client 429 with Retry-After.
    let metered = app
        .create_key(
            json!({"scopes": ["tags:read"], "credits": {"remaining": 1, "refill": {"interval": "daily", "amount": 1}}}),
        )
        .await;
    assert_eq!(send(reqwest::Method::GET, "/api/v2/tags/1", Some(&metered.secret)).await.unwrap().status(), 200);
    let resp = send(reqwest::Method::GET, "/api/v2/tags/1", Some(&metered.secret)).await.unwrap();
    assert_eq!(resp.status(), 429, "out of credits");
    assert_eq!(resp.headers()["x-keyward-error"], "usage_exceeded");
    assert!(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");

    // A rate limit: the client sees RateLimit-* on allowed answers, and a
    // 429 with Retry-After and RateLimit-* past the limit.
    let limits = json!([{"name": "requests", "limit": 2, "durationMs": 60_000, "autoApply": true}]);
    let limited = app.create_key(json!({"scopes": ["tags:read"], "ratelimits": limits})).await;
    for remaining in ["1", "0"] {
        let resp = send(reqwest::Method::GET, "/api/v2/tags/1", Some(&limited.secret)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            (
                resp.headers()["ratelimit-limit"].to_str().unwrap(),
                resp.headers()["ratelimit-remaining"].to_str().unwrap()
            ),
            ("2", remaining)
        );
    }
    let resp = send(reqwest::Method::GET, "/api/v2/tags/1", Some(&limited.secret)).await.unwrap();
    assert_eq!(resp.status(), 429, "rate limited");
    assert_eq!(resp.headers()["x-keyward-error"], "rate_limited");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    let reset: u64 = resp.headers()["ratelimit-reset"].to_str().unwrap().parse().unwrap();
    // Units free up a window (60 s) after the slot (a tenth) they were spent in ends.
    assert!((1..=66).contains(&reset), "reset in {reset} s");
    assert_eq!(resp.headers()["retry-after"].to_str().unwrap(), reset.to_string());
    let resp = send(reqwest::Method::GET, "/api/v2/campaigns/1", Some(&client.secret)).await.unwrap();
    assert_eq!(resp.status(), 403, "other refusals stay 403");

    app.post_empty(&format!("/v1/keys/{}/revoke", client.id)).await;
    let resp = send(reqwest::Method::GET, "/api/v2/tags/1", Some(&client.secret)).await.unwrap();
    assert_eq!(resp.status(), 401, "revoked: refused from the next request on");
    app.stop().await;
}

backend_tests!(nginx_auth_request_protects_an_api);
