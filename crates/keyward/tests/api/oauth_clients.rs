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

/// The Python with authlib and PyJWT: `KEYWARD_TEST_PYTHON`, or
/// `target/oauth-venv`, made here as `.ci/run` makes it when missing.
fn python() -> Option<PathBuf> {
    use keyward_store::testing::run::{Piece, ran, skipped};
    const TEST: &str = "third_party_clients_authlib_and_pyjwt";
    if let Some(named) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) {
        ran(Piece::Python, TEST, "KEYWARD_TEST_PYTHON");
        return Some(PathBuf::from(named));
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    match venv(&target.join("oauth-venv")) {
        Ok(python) => {
            ran(Piece::Python, TEST, "target/oauth-venv");
            Some(python)
        }
        Err(why) => {
            skipped(Piece::Python, TEST, &why);
            None
        }
    }
}

/// The venv at `dir` with `tests/oauth/requirements.txt` installed, made
/// or completed first when needed (one test process at a time).
fn venv(dir: &std::path::Path) -> Result<PathBuf, String> {
    use std::process::{Command, Stdio};
    let python = dir.join("bin/python");
    let lock = std::fs::File::create(dir.with_extension("lock")).map_err(|e| format!("the venv's lock: {e}"))?;
    lock.lock().map_err(|e| format!("the venv's lock: {e}"))?;
    let ready = || {
        let check = Command::new(&python).args(["-c", "import authlib, jwt, requests"]).stderr(Stdio::null()).status();
        check.is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(python);
    }
    if !python.exists() {
        let made = Command::new("python3").args(["-m", "venv"]).arg(dir).output();
        if !made.is_ok_and(|o| o.status.success()) {
            return Err("python3 -m venv cannot make target/oauth-venv".into());
        }
    }
    let requirements = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/requirements.txt");
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
        .arg(requirements)
        .output();
    if !pip.is_ok_and(|o| o.status.success()) || !ready() {
        return Err("pip cannot install authlib, PyJWT and requests into target/oauth-venv".into());
    }
    Ok(python)
}

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
    let Some(python) = python() else { return };
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
