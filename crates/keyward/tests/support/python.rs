//! The Python the tests drive third-party clients with (shared by the test
//! binaries that use it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keyward_store::testing::run::{Piece, ran, skipped};

/// The Python with authlib, PyJWT, requests and standardwebhooks: `KEYWARD_TEST_PYTHON`, or
/// `target/oauth-venv`, made here as `.ci/run` makes it when missing; or,
/// after recording why not, `None`.
pub fn python(test: &str) -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) {
        ran(Piece::Python, test, "KEYWARD_TEST_PYTHON");
        return Some(PathBuf::from(named));
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    match venv(&target.join("oauth-venv")) {
        Ok(python) => {
            ran(Piece::Python, test, "target/oauth-venv");
            Some(python)
        }
        Err(why) => {
            skipped(Piece::Python, test, &why);
            None
        }
    }
}

/// The venv at `dir` with `tests/oauth/requirements.txt` installed, made
/// or completed first when needed (one test process at a time).
fn venv(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin/python");
    let lock = std::fs::File::create(dir.with_extension("lock")).map_err(|e| format!("the venv's lock: {e}"))?;
    lock.lock().map_err(|e| format!("the venv's lock: {e}"))?;
    let ready = || {
        let check = Command::new(&python)
            .args(["-c", "import authlib, jwt, requests, standardwebhooks, grpc, grpc_tools"])
            .stderr(Stdio::null())
            .status();
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
        return Err("pip cannot install authlib, PyJWT, requests and standardwebhooks into target/oauth-venv".into());
    }
    Ok(python)
}
