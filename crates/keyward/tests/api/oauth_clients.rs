//! Third-party OAuth and JWT libraries against keyward:
//! `tests/oauth/clients.py` drives authlib's OAuth 2 client and PyJWT's
//! JWKS client (named by `KEYWARD_TEST_PYTHON`, or installed into
//! `target/oauth-venv`, by this test when missing), before and after a
//! signing-key rotation. The test skips, counted in the run's last line,
//! where Python cannot make that venv, and fails under `CI=true`.

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

backend_tests!(third_party_clients_authlib_and_pyjwt_or_skip);

async fn run(app: &TestApp, python: &PathBuf, phase: &str, env: &[(&str, String)]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/clients.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("KEYWARD_URL", format!("http://{}", app.addr))
        .env("PHASE", phase)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{phase}:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{phase} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn third_party_clients_authlib_and_pyjwt_or_skip() {
    let Some(python) = crate::python::python("third_party_clients_authlib_and_pyjwt") else { return };
    let app = spawn_app().await;
    assert_eq!(app.patch("/v1/workspace", json!({"allowRecoverable": true})).await.status, 200);
    let plain = app.create_key(json!({"type": "client", "scopes": ["campaigns:*"]})).await;
    let recoverable = app.create_key(json!({"type": "client", "scopes": ["read"], "recoverable": true})).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CLIENT_ID", plain.body["clientId"].as_str().unwrap().to_owned()),
        ("CLIENT_SECRET", plain.secret.clone()),
        ("JWT_CLIENT_ID", recoverable.body["clientId"].as_str().unwrap().to_owned()),
        ("JWT_CLIENT_SECRET", recoverable.secret.clone()),
        ("TOKEN_FILE", dir.path().join("token.json").to_str().unwrap().to_owned()),
    ];
    run(&app, &python, "before", &env).await;
    app.services.oauth.signer().rotate().await.unwrap();
    run(&app, &python, "after", &env).await;
    app.stop().await;
}
