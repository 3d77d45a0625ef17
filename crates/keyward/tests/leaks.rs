//! No secret leaks: a full scenario with logs at the most verbose level;
//! no issued secret may appear in the logs, in an error body or in the
//! metrics.

use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()])
        .args(["--log-level", "trace", "--log-format", "json", "--forward-auth-key-query", "api_key"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut admin, mut base) = (String::new(), String::new());
    while base.is_empty() {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "keyward exited early");
        if let Some(k) = line.split_whitespace().find(|w| w.starts_with("kw_live_")) {
            admin = k.to_owned();
        }
        if let Some(a) = line.strip_prefix("keyward listening on ") {
            base = a.trim().to_owned();
        }
    }
    let http = reqwest::Client::new();
    let mut secrets = vec![admin.clone()];
    let mut error_bodies = Vec::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}")).bearer_auth(&admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            let ok = resp.status().is_success();
            (ok, resp.text().await.unwrap())
        }
    };
    let (_, created) =
        call(reqwest::Method::POST, "/v1/keys", Some(json!({"name": "leaky", "scopes": ["read"]}))).await;
    let created: Value = serde_json::from_str(&created).unwrap();
    let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    secrets.push(secret.clone());
    let (_, rolled) =
        call(reqwest::Method::POST, &format!("/v1/keys/{id}/roll"), Some(json!({"gracePeriodSeconds": 60}))).await;
    secrets.push(serde_json::from_str::<Value>(&rolled).unwrap()["secret"].as_str().unwrap().to_owned());
    let (_, cloned) = call(reqwest::Method::POST, &format!("/v1/keys/{id}/clone"), None).await;
    secrets.push(serde_json::from_str::<Value>(&cloned).unwrap()["secret"].as_str().unwrap().to_owned());
    let imported = "legacy_live_0123456789abcdefghijklmnopqrstuv".to_owned();
    call(reqwest::Method::POST, "/v1/keys/import", Some(json!({"name": "old", "key": imported}))).await;
    secrets.push(imported.clone());

    // Every way a secret travels in a request, right and wrong.
    for s in secrets.clone() {
        for body in [
            json!({"key": s}),
            json!({"key": s, "permission": "keys:manage", "method": "POST", "path": "/x", "ip": "10.0.0.1"}),
            json!({"key": format!("{s}x")}),
            json!({"key": s, "unknown": s}),
            json!({"key": 5, "permission": s}),
        ] {
            let (ok, text) = call(reqwest::Method::POST, "/v1/keys/verify", Some(body)).await;
            if !ok {
                error_bodies.push(text);
            }
        }
        let (ok, text) = call(reqwest::Method::POST, "/v1/keys", Some(json!({"name": "n", "expiresIn": s}))).await;
        assert!(!ok);
        error_bodies.push(text);
        for headers in [vec![("authorization", format!("Bearer {s}"))], vec![("x-api-key", s.clone())]] {
            let mut req = http
                .get(format!("{base}/v1/authorize"))
                .header("x-keyward-verifier-key", &admin)
                .header("x-original-uri", format!("/api?api_key={s}"));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            if !resp.status().is_success() {
                error_bodies.push(resp.text().await.unwrap());
            }
        }
        let resp = http.get(format!("{base}/v1/keys")).bearer_auth(format!("{s}zz")).send().await.unwrap();
        error_bodies.push(resp.text().await.unwrap());
    }
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();

    assert!(Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(logs.lines().count() > 20, "trace logging produced output");
    for s in &secrets {
        // The secret part alone must not appear either (the id part is public).
        let tail = &s[s.len() - 20..];
        assert!(!logs.contains(tail), "a secret reached the logs");
        assert!(!metrics.contains(tail), "a secret reached the metrics");
        for body in &error_bodies {
            assert!(!body.contains(tail), "a secret reached an error body: {body}");
        }
    }
    assert!(error_bodies.len() > 10);
}
