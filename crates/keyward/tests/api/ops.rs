//! Health, readiness, metrics, docs and the OpenAPI document.

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (200, Some("ok")));
    let r = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (200, Some("ready")));

    let key = app.create_key(json!({})).await;
    app.verify_code(&key.secret).await;
    app.verify_code("nonsense").await;
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    for needle in [
        "keyward_verifications_total{code=\"VALID\"}",
        "keyward_verifications_total{code=\"MALFORMED\"}",
        "keyward_verify_duration_seconds_bucket",
        "keyward_cache_hits_total",
        "keyward_cache_misses_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }
    assert!(!text.contains(&key.secret[8..]), "no secret in metrics");
    app.stop().await;
}

async fn docs_are_served_without_a_cdn() {
    let app = spawn_app().await;
    let resp = reqwest::get(app.url("/docs/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "the docs page is Swagger UI");
    assert!(!html.contains("https://"), "no external assets");
    let init = reqwest::get(app.url("/docs/swagger-initializer.js")).await.unwrap().text().await.unwrap();
    let compact: String = init.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains(r#""validatorUrl":"none""#), "no validator badge calling out: {init}");
    let spec: serde_json::Value = reqwest::get(app.url("/openapi.json")).await.unwrap().json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/v1/keys/verify"]["post"].is_object());
    app.stop().await;
}

/// The committed `docs/openapi.json` is what the code generates. Run with
/// `KEYWARD_UPDATE_OPENAPI=1` to rewrite it after changing the API.
#[test]
fn committed_openapi_document_is_current() {
    let generated = keyward_server::api::openapi_document().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("KEYWARD_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `KEYWARD_UPDATE_OPENAPI=1 cargo test -p keyward committed_openapi` and commit it"
    );
}

backend_tests!(health_readiness_and_metrics, docs_are_served_without_a_cdn);
