//! The binary as a user runs it: bootstrap, workspace creation, `serve`
//! as a process (SIGTERM, usage flushed at shutdown), the `keys` commands,
//! and the README's own serve command.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keyward_store::testing::{Backend, TestDb};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn keyward(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_remove("KEYWARD_API_KEY").output().expect("keyward runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bootstrap_prints_once_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let first = keyward(&["bootstrap", "--data-dir", data, "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let v: Value = serde_json::from_str(&stdout(&first)).unwrap();
    assert!(v["workspaceId"].as_str().unwrap().starts_with("ws_"));
    assert!(v["adminKey"].as_str().unwrap().starts_with("kw_live_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("hash.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the generated hash key is private");
    }

    let db = std::fs::read(dir.path().join("keyward.db")).unwrap();
    let second = keyward(&["bootstrap", "--data-dir", data, "--json"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(stdout(&second).is_empty());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already bootstrapped"));
    let _ = db; // the refusal wrote nothing: a new workspace would show below

    let other = keyward(&["workspace", "create", "Second", "--data-dir", data, "--json"]);
    assert!(other.status.success());
    let w: Value = serde_json::from_str(&stdout(&other)).unwrap();
    assert_ne!(w["workspaceId"], v["workspaceId"]);
    assert_ne!(w["adminKey"], v["adminKey"]);

    let wrong_key = keyward(&["bootstrap", "--data-dir", data, "--hash-key", &"ab".repeat(32)]);
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong_key.stderr).contains("not the one this database was created with"));
}

#[test]
fn help_explains_every_option() {
    let help = stdout(&keyward(&["serve", "--help"]));
    for option in [
        "--listen",
        "--database-url",
        "--data-dir",
        "--hash-key-file",
        "--log-format",
        "KEYWARD_LISTEN",
        "KEYWARD_DATABASE_URL",
    ] {
        assert!(help.contains(option), "{option} missing from serve --help");
    }
    let help = stdout(&keyward(&["keys", "create", "--help"]));
    assert!(help.contains("--scope") && help.contains("KEYWARD_API_KEY"));
}

/// A running `keyward serve` process with its stdout lines.
struct Server {
    child: Child,
    addr: String,
    admin_key: Option<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn read_until_listening(child: &mut Child, timeout: Duration) -> (String, Option<String>) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut admin_key = None;
    loop {
        let line = rx.recv_timeout(timeout).expect("keyward printed its address in time");
        if let Some(k) = line.split_whitespace().find(|w| w.starts_with("kw_live_")) {
            admin_key = Some(k.to_owned());
        }
        if let Some(addr) = line.strip_prefix("keyward listening on http://") {
            return (addr.trim().to_owned(), admin_key);
        }
    }
}

fn spawn_command(mut cmd: Command, timeout: Duration) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("keyward starts");
    let err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let (addr, admin_key) = read_until_listening(&mut child, timeout);
    Server { child, addr, admin_key, stderr }
}

fn serve(data: &Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--log-level", "debug"])
        .args(extra);
    spawn_command(cmd, Duration::from_secs(30))
}

impl Server {
    /// SIGTERM to keyward; returns (exit success, stderr). (`cargo run`
    /// replaces itself with the program on Unix: its child is keyward.)
    fn terminate(mut self) -> (bool, String) {
        let pid = self.child.id();
        assert!(pid > 1);
        let status = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        (exit.success(), self.stderr.join().unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// One HTTP call, blocking; returns the JSON body (or the text as a string).
fn http(method: &str, url: &str, key: &str, body: Option<&str>) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(key);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_owned());
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    })
}

fn cli_keys(server: &Server, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("keys")
        .args(args)
        .env("KEYWARD_URL", format!("http://{}", server.addr))
        .env("KEYWARD_API_KEY", key)
        .output()
        .unwrap()
}

#[test]
fn serve_manage_keys_with_the_cli_and_flush_usage_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--usage-flush-interval-ms", "60000"]);
    let admin = server.admin_key.clone().expect("serve printed the bootstrap admin key");

    let created =
        cli_keys(&server, &admin, &["create", "--name", "ci", "--scope", "read", "--resource", "site_a", "--json"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();

    let table = stdout(&cli_keys(&server, &admin, &["list"]));
    assert!(table.starts_with("ID") && table.contains("ci") && table.contains(&id), "{table}");
    assert!(!table.contains(&secret));
    let got: Value = serde_json::from_slice(&cli_keys(&server, &admin, &["get", &id, "--json"]).stdout).unwrap();
    assert_eq!(got["scopes"], serde_json::json!(["read"]));

    // A verification, counted in memory only (the flush interval is long)…
    let v = http("POST", &server.url("/v1/keys/verify"), &admin, Some(&format!("{{\"key\": \"{secret}\"}}")));
    assert_eq!(v["code"], "VALID");
    let before = http("GET", &server.url(&format!("/v1/keys/{id}")), &admin, None);
    assert_eq!(before["lastUsed"], Value::Null);
    // …is written by the graceful shutdown.
    let (ok, logs) = server.terminate();
    assert!(ok, "keyward exits 0 on SIGTERM; logs:\n{logs}");
    assert!(logs.contains("flushed usage counts at shutdown"), "{logs}");
    assert!(!logs.contains(&secret) && !logs.contains(&admin), "secrets must never reach the logs");

    let server = serve(dir.path(), &[]);
    assert!(server.admin_key.is_none(), "no second bootstrap");
    let after = http("GET", &server.url(&format!("/v1/keys/{id}")), &admin, None);
    assert!(after["lastUsed"].is_string(), "{after}");

    let revoked = cli_keys(&server, &admin, &["revoke", &id]);
    assert!(revoked.status.success());
    assert!(stdout(&revoked).contains("revoked"));
    let deleted = cli_keys(&server, &admin, &["delete", &id, "--json"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let missing = cli_keys(&server, &admin, &["get", &id]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("API key not found"));
    let denied = cli_keys(&server, "kw_live_nope", &["list"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Invalid API key"));
    let (ok, _) = server.terminate();
    assert!(ok);
}

/// The README's first command: under `CI=true` exactly `cargo run
/// --release -- serve` (CI has just made that release build); elsewhere
/// `serve` of the binary under test, so that `cargo test` never waits on a
/// release build of its own.
#[test]
fn readme_serve_command_runs_keyward() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- serve"), "README states the serve command");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = if std::env::var("CI").as_deref() == Ok("true") {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["run", "--release", "--quiet", "--", "serve"]);
        // As typed in a shell: without the package variables `cargo test`
        // gives its tests (ring's build script reruns when CARGO_PKG_NAME
        // changes, and with it everything that links rustls).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_") && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR") {
                cargo.env_remove(&*name);
            }
        }
        cargo
    } else {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_keyward"));
        serve.arg("serve");
        serve
    };
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("KEYWARD_DATA_DIR", dir.path())
        .env("KEYWARD_LISTEN", "127.0.0.1:0");
    let server = spawn_command(cmd, Duration::from_secs(600));
    let admin = server.admin_key.clone().expect("the admin key is printed once");
    let health = http("GET", &server.url("/healthz"), "", None);
    assert_eq!(health["status"], "ok");
    let list = http("GET", &server.url("/v1/keys?name=Admin"), &admin, None);
    assert_eq!(list["data"][0]["name"], "Admin key");
    assert!(dir.path().join("keyward.db").exists(), "SQLite file in the data dir");
    let (ok, _) = server.terminate();
    assert!(ok);
}

#[test]
fn database_urls_are_checked_and_migrate_applies_pending_migrations() {
    let o = keyward(&["migrate", "--database-url", "mysql://kw:s3cret@db/kw"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("sqlite:") && err.contains("postgres://") && err.contains("postgresql://"), "{err}");
    assert!(!err.contains("s3cret"), "the password is masked: {err}");

    let o = keyward(&["migrate", "--database-url", "postgres://kw:s3cret@127.0.0.1:1/kw"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("postgres://kw:***@127.0.0.1:1/kw") && err.contains("refused"), "{err}");
    assert!(!err.contains("s3cret"), "the password is masked: {err}");

    let dir = tempfile::tempdir().unwrap();
    let o = keyward(&["migrate", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("up to date"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let test = "cli::database_urls_are_checked_and_migrate_applies_pending_migrations";
    let Some(db) = runtime.block_on(TestDb::new(Backend::Postgres, test)) else { return };
    for _ in 0..2 {
        let o = keyward(&["migrate", "--database-url", &db.url]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout(&o).contains("schema at migration"), "{}", stdout(&o));
    }
    drop(db);
}

#[test]
fn a_lost_admin_key_is_replaced_and_every_command_says_where_the_data_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let first = keyward(&["bootstrap", "--data-dir", data_arg, "--json"]);
    assert!(first.status.success());
    let err = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(err.contains(&format!("data directory {data_arg};")), "{err}");
    assert!(err.contains(&format!("sqlite://{data_arg}/keyward.db")) && err.contains("(new, empty)"), "{err}");
    let ws: Value = serde_json::from_str(&stdout(&first)).unwrap();
    let ws_id = ws["workspaceId"].as_str().unwrap();

    // The same data from another working directory, through a relative path.
    let relative = Command::new(BIN)
        .args(["workspace", "list", "--json", "--data-dir", "data"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(relative.status.success(), "{}", String::from_utf8_lossy(&relative.stderr));
    let err = String::from_utf8_lossy(&relative.stderr).into_owned();
    assert!(err.contains(&format!("data directory {data_arg};")), "the path is absolute: {err}");
    assert!(err.contains("existing: 1 workspace and 3 keys"), "the admin, JavaScript and REST keys: {err}");
    let list: Value = serde_json::from_slice(&relative.stdout).unwrap();
    assert_eq!(list[0]["id"], ws_id);
    assert_eq!(list[0]["liveKeys"], 3);

    let minted = keyward(&["workspace", "admin-key", ws_id, "--data-dir", data_arg, "--json"]);
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let minted: Value = serde_json::from_str(&stdout(&minted)).unwrap();
    let new_admin = minted["adminKey"].as_str().unwrap();
    assert_ne!(new_admin, ws["adminKey"].as_str().unwrap());
    let unknown = keyward(&["workspace", "admin-key", "ws_unknown", "--data-dir", data_arg]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("Workspace not found"));

    // The new key manages the workspace through a running server.
    let server = serve(&data, &[]);
    let keys = http("GET", &server.url("/v1/keys?name=admin"), new_admin, None);
    let names: Vec<&str> = keys["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Admin key 2", "Admin key"]);
    let (ok, _) = server.terminate();
    assert!(ok);
}

#[test]
fn a_backup_taken_under_write_load_restores_every_acknowledged_key() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (data, data2, backup) = (dir.path().join("data"), dir.path().join("restored"), dir.path().join("backup.db"));
    let server = serve(&data, &[]);
    let admin = server.admin_key.clone().unwrap();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, admin, acked, stop) = (server.url("/v1/keys"), admin.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!(r#"{{"name": "w{w} k{i}"}}"#);
                    let key = http("POST", &url, &admin, Some(&body));
                    acked
                        .lock()
                        .unwrap()
                        .push((key["id"].as_str().unwrap().into(), key["secret"].as_str().unwrap().into()));
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 100 {
        std::thread::yield_now();
    }
    let before = acked.lock().unwrap().clone();
    let out = keyward(&["backup", backup.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("Keep the hash key"));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let during = acked.lock().unwrap().len() - before.len();
    let (ok, _) = server.terminate();
    assert!(ok);

    std::fs::create_dir(&data2).unwrap();
    std::fs::copy(data.join("hash.key"), data2.join("hash.key")).unwrap();
    let out = keyward(&["restore", backup.to_str().unwrap(), "--data-dir", data2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = serve(&data2, &[]);
    assert!(restored.admin_key.is_none(), "the restored database is not bootstrapped again");
    for (id, secret) in &before {
        let v = http("POST", &restored.url("/v1/keys/verify"), &admin, Some(&format!(r#"{{"key": "{secret}"}}"#)));
        assert_eq!(v["code"], "VALID", "acknowledged key {id} is in the backup");
    }
    println!(
        "backup: {} keys acknowledged before it, {during} created while it ran; all of the first restored",
        before.len()
    );
    let (ok, _) = restored.terminate();
    assert!(ok);
}

#[test]
fn a_clean_stop_leaves_everything_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().unwrap();
    http("POST", &server.url("/v1/keys"), &admin, Some(r#"{"name": "kept"}"#));
    let (ok, _) = server.terminate();
    assert!(ok);
    let wal = dir.path().join("keyward.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "the WAL was checkpointed");
    // The .db file alone, copied elsewhere, holds the key.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("keyward.db"), copy.path().join("keyward.db")).unwrap();
    std::fs::copy(dir.path().join("hash.key"), copy.path().join("hash.key")).unwrap();
    let list = keyward(&["workspace", "list", "--json", "--data-dir", copy.path().to_str().unwrap()]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["liveKeys"], 4, "the workspace's admin, JavaScript and REST keys, and the created key");
}

#[test]
fn metrics_count_answers_apart_from_callers_and_logs_have_no_colour_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().unwrap();
    let metric = |name: &str| -> f64 {
        let text = http("GET", &server.url("/metrics"), "", None);
        let text = text.as_str().unwrap_or_default().to_owned();
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    for _ in 0..3 {
        http("GET", &server.url("/v1/keys"), &admin, None);
    }
    assert_eq!(metric("keyward_verifications_total"), 0.0, "callers' keys are not verification answers");
    assert!(metric("keyward_caller_authentications_total{result=\"accepted\"}") >= 3.0);
    http("GET", &server.url("/v1/keys"), "kw_live_nope", None);
    assert!(metric("keyward_caller_authentications_total{result=\"refused\"}") >= 1.0);
    let body = format!(r#"{{"key": "{admin}"}}"#);
    http("POST", &server.url("/v1/keys/verify"), &admin, Some(&body));
    assert_eq!(metric("keyward_verifications_total{code=\"VALID\"}"), 1.0);
    let (ok, stderr) = server.terminate();
    assert!(ok);
    assert!(!stderr.is_empty(), "serve logged (debug level)");
    assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal");
}

/// Runs `keyward keys|workspace ARGS` against `server` with `key`, feeding
/// `stdin`; returns (exit code, stdout, stderr).
fn client(server: &Server, key: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("KEYWARD_URL", format!("http://{}", server.addr))
        .env("KEYWARD_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), stdout(&out), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_key_operation_is_a_cli_command() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().unwrap();
    let json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = client(&server, &admin, &all, "");
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{args:?} printed JSON: {out}"))
    };

    let created = json(&["keys", "create", "--name", "svc", "--scope", "tags:read", "--metadata", r#"{"plan":"pro"}"#]);
    let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    assert_eq!(created["metadata"]["plan"], "pro");
    let edited = json(&["keys", "edit", &id, "--name", "svc 2", "--scope", "tags:read", "--scope", "tags:write"]);
    assert_eq!((edited["name"].as_str(), edited["scopes"].as_array().unwrap().len()), (Some("svc 2"), 2));
    let stale = client(&server, &admin, &["keys", "edit", &id, "--name", "x", "--if-match", "1"], "");
    assert_eq!(stale.0, 1, "a stale If-Match is refused: {}", stale.2);
    assert!(stale.2.contains("precondition_failed"), "{}", stale.2);
    let clone = json(&["keys", "clone", &id]);
    assert_eq!(clone["name"], "svc 2 (clone)");
    let rolled = json(&["keys", "roll", &id, "--grace-seconds", "60"]);
    assert_ne!(rolled["secret"], secret.as_str());
    // verify: the old secret within its grace period, from standard input.
    let (code, out, _) = client(&server, &admin, &["keys", "verify", "-", "--permission", "tags:read"], &secret);
    assert_eq!((code, out.starts_with("VALID")), (0, true), "{out}");
    let (code, out, _) = client(&server, &admin, &["keys", "verify", "kw_live_nope"], "");
    assert_eq!((code, out.starts_with("MALFORMED")), (1, true), "an invalid key exits 1: {out}");
    assert_eq!(json(&["keys", "deactivate", &id])["state"], "inactive");
    assert_eq!(json(&["keys", "activate", &id])["state"], "active");
    assert_eq!(json(&["keys", "revoke", &id])["state"], "revoked");
    assert_eq!(json(&["keys", "get", &id])["state"], "revoked");
    let usage = json(&["keys", "usage", &id, "--period", "24h", "--granularity", "hour"]);
    assert_eq!((usage["keyId"].as_str(), usage["granularity"].as_str()), (Some(id.as_str()), Some("hour")));
    let hygiene = json(&["keys", "hygiene"]);
    assert!(hygiene["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "privileged"), "{hygiene}");
    let (code, table, _) = client(&server, &admin, &["keys", "hygiene"], "");
    assert!(code == 0 && table.starts_with("FINDING") && table.contains("Narrow it"), "{table}");
    assert_eq!(json(&["keys", "delete", &id])["deleted"], id.as_str());
    let imported = client(
        &server,
        &admin,
        &["keys", "import", "--name", "legacy", "--plaintext", "-", "--prefix", "zz_", "--json"],
        "zz_0123456789abcdef0123\n",
    );
    assert_eq!(imported.0, 0, "{}", imported.2);
    let (code, out, _) = client(&server, &admin, &["keys", "verify", "-"], "zz_0123456789abcdef0123");
    assert_eq!((code, out.starts_with("VALID")), (0, true), "{out}");
    let listed = json(&["keys", "list", "--state", "active"]);
    assert_eq!(listed.as_array().unwrap().len(), 5, "admin, JavaScript, REST, clone, import: {listed}");
    let (code, table, _) = client(&server, &admin, &["keys", "list", "--name", "legacy"], "");
    assert_eq!(code, 0);
    assert!(table.starts_with("ID") && table.contains("legacy"), "{table}");

    // identities, and keys with limits that belong to one.
    let limits = r#"[{"name":"requests","limit":5,"durationMs":60000,"autoApply":true}]"#;
    let acme = json(&["identities", "create", "--external-id", "acme", "--ratelimits", limits]);
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    let member = json(&["keys", "create", "--name", "acme 1", "--external-id", "acme", "--ratelimits", "[]"]);
    assert_eq!(member["identityId"], acme_id.as_str());
    let edited = json(&["identities", "edit", &acme_id, "--meta", r#"{"plan":"pro"}"#]);
    assert_eq!(edited["meta"]["plan"], "pro");
    assert_eq!(json(&["identities", "get", &acme_id])["ratelimits"][0]["limit"], 5);
    assert_eq!(json(&["identities", "list"]).as_array().unwrap().len(), 1);
    let (code, table, _) = client(&server, &admin, &["identities", "list"], "");
    assert!(code == 0 && table.contains("requests=5/60000ms"), "{table}");
    let (code, _, err) = client(&server, &admin, &["identities", "delete", &acme_id], "");
    assert_eq!(code, 1, "a live key belongs to it");
    assert!(err.contains("identity_in_use"), "{err}");
    let (code, _, err) = client(&server, &admin, &["identities", "edit", &acme_id, "--ratelimits", "{nope"], "");
    assert_eq!(code, 2, "{err}");

    // workspace get|set: the policy, through the server.
    let ws = json(&["workspace", "set", "--max-keys", "10", "--max-key-lifetime-days", "none"]);
    assert_eq!((ws["maxKeys"].as_u64(), ws["maxKeyLifetimeDays"].is_null()), (Some(10), true));
    assert_eq!(json(&["workspace", "get"])["maxKeys"], 10);
    let (code, out, _) = client(&server, &admin, &["workspace", "get"], "");
    assert_eq!(code, 0);
    assert!(out.contains("max keys") && out.contains("10"), "{out}");
    let ws = json(&["workspace", "set", "--default-key-lifetime-days", "30", "--require-expiry", "true"]);
    assert_eq!(ws["requireExpiry"], true);
    let applied = json(&["workspace", "apply-expiry-policy"]);
    assert!(applied["updated"].as_u64().unwrap() >= 1, "keys without an expiry got one: {applied}");

    // Exit codes: 1 refused, 2 usage; a missing key names both ways to give it.
    let (code, _, err) = client(&server, &admin, &["keys", "get", "key_nope"], "");
    assert_eq!(code, 1);
    assert!(err.contains("API key not found (key_not_found, HTTP 404)"), "{err}");
    let (code, _, err) = client(&server, "", &["keys", "list"], "");
    assert_eq!(code, 2);
    assert!(err.contains("--key") && err.contains("KEYWARD_API_KEY"), "{err}");
    let (code, _, _) = client(&server, &admin, &["keys", "create", "--bogus"], "");
    assert_eq!(code, 2);
    let (code, _, err) = client(&server, &admin, &["workspace", "set", "--max-keys", "lots"], "");
    assert_eq!(code, 2, "{err}");
    // Client commands show no server option.
    let (_, help, _) = client(&server, &admin, &["keys", "list", "--help"], "");
    assert!(!help.contains("--data-dir") && !help.contains("--config") && help.contains("--url"), "{help}");
    let (ok, _) = server.terminate();
    assert!(ok);
}

#[test]
fn completions_and_a_closed_pipe() {
    for shell in ["bash", "zsh", "fish"] {
        let out = keyward(&["completions", shell]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("keys"), "{shell} completion names the commands");
    }
    // `keyward openapi | head -c 1`: the reader goes away; keyward ends quietly.
    let mut child = Command::new(BIN).arg("openapi").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "status {:?}", out.status);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The README's Quick start, pasted as written into a shell (only the
/// server's address and the admin key are those of this test's server).
#[test]
fn readme_quick_start_runs_as_pasted() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let quick = readme.split("## Quick start").nth(1).unwrap().split("\n## ").next().unwrap();
    let script =
        quick.split("```sh\n").nth(2).expect("the second block is the one to paste").split("```").next().unwrap();
    assert!(script.starts_with("export KEY=kw_live_…"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().unwrap();
    let script = script
        .replace("export KEY=kw_live_…", &format!("export KEY={admin}"))
        .replace("http://127.0.0.1:8080", &format!("http://{}", server.addr));
    let out = Command::new("bash").args(["-eu", "-o", "pipefail", "-c", &script]).output().unwrap();
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = printed.lines();
    assert!(lines.next().unwrap().starts_with("kw_live_"), "the secret is in the variable: {printed}");
    let answer: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(answer["code"], "VALID", "{answer}");
    let (ok, _) = server.terminate();
    assert!(ok);
}

/// A server whose output nobody reads any more (the terminal closed, a pipe
/// reader gone) goes on serving.
#[test]
fn serve_goes_on_when_nobody_reads_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.strip_prefix("keyward listening on ") {
            break a.trim().to_owned();
        }
    };
    drop(lines);
    std::thread::sleep(Duration::from_millis(300)); // the lines after "listening" meet a closed pipe
    let health = http("GET", &format!("{addr}/healthz"), "", None);
    assert_eq!(health["status"], "ok", "{health}");
    let _ = child.kill();
    let _ = child.wait();
}

/// POSTs JSON without a key; (status, body).
fn post_json(url: &str, body: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
    })
}

#[test]
fn bootstrap_creates_the_owner_who_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = keyward(&["bootstrap", "--data-dir", data, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ownerEmail"], "owner@localhost");
    let ws = v["workspaceId"].as_str().unwrap().to_owned();
    let password = v["ownerPassword"].as_str().expect("a generated password is printed").to_owned();
    assert!(password.len() >= 20);
    let server = serve(dir.path(), &[]);
    let body = serde_json::json!({"email": "owner@localhost", "password": password}).to_string();
    let (status, answer) = post_json(&server.url("/v1/auth/login"), &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["member"]["roles"], serde_json::json!(["owner"]));
    // A locked-out owner: the operator sets a new password, while keyward serves.
    let reset = keyward(&["member", "set-password", "owner@localhost", "--data-dir", data]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let new_password = stdout(&reset).lines().map(str::trim).find(|l| l.len() == 20).unwrap().to_owned();
    let (status, _) = post_json(&server.url("/v1/auth/login"), &body);
    assert_eq!(status, 401, "the old password no longer works");
    let body = serde_json::json!({"email": "owner@localhost", "password": new_password}).to_string();
    assert_eq!(post_json(&server.url("/v1/auth/login"), &body).0, 200);
    // The operator invites a person (an admin key cannot: keys never
    // become people).
    let invited = keyward(&[
        "member",
        "invite",
        "ops@localhost",
        "--workspace",
        &ws,
        "--role",
        "admin",
        "--json",
        "--data-dir",
        data,
    ]);
    assert!(invited.status.success(), "{}", String::from_utf8_lossy(&invited.stderr));
    let invitation: Value = serde_json::from_str(&stdout(&invited)).unwrap();
    let accept = serde_json::json!({"token": invitation["token"], "password": "ops password 1"}).to_string();
    let (status, joined) = post_json(&server.url("/v1/invitations/accept"), &accept);
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["member"]["roles"], serde_json::json!(["admin"]));
    let nowhere = keyward(&["member", "invite", "x@localhost", "--workspace", "ws_nope", "--data-dir", data]);
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("workspace_not_found"));
    let unknown = keyward(&["member", "set-password", "ghost@localhost", "--data-dir", data]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("member_not_found"));
    let (ok, stderr) = server.terminate();
    assert!(ok);
    assert!(!stderr.contains(&password) && !stderr.contains(&new_password), "passwords never reach the logs");

    // Given a password (here through the environment), none is printed.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["bootstrap", "--json", "--owner-email", "Ops@Example.com", "--data-dir", dir.path().to_str().unwrap()])
        .env("KEYWARD_OWNER_PASSWORD", "a long enough password")
        .output()
        .unwrap();
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ownerEmail"], "ops@example.com");
    assert!(v.get("ownerPassword").is_none());
    // A weak one is refused before anything is created.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let weak = keyward(&["bootstrap", "--data-dir", data, "--owner-password", "short"]);
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 10 characters"));
    assert!(keyward(&["bootstrap", "--data-dir", data, "--json"]).status.success(), "nothing was bootstrapped");
}

#[test]
fn master_key_is_generated_checked_and_rotated() {
    let generated = stdout(&keyward(&["master-key", "generate"]));
    let old = generated.trim();
    assert_eq!(old.len(), 64);
    assert!(old.bytes().all(|b| b.is_ascii_hexdigit()));
    let new = stdout(&keyward(&["master-key", "generate"])).trim().to_owned();
    assert_ne!(old, new);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{old}\n")).unwrap();
    let key_arg = key_file.to_str().unwrap();

    let bad = keyward(&["bootstrap", "--data-dir", data, "--master-key", "abcd"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("64 hexadecimal characters"));

    let out = keyward(&["bootstrap", "--data-dir", data, "--json", "--owner-password", "owner password 1"]);
    let admin = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["adminKey"].as_str().unwrap().to_owned();
    let server = serve(dir.path(), &["--master-key-file", key_arg]);
    let ws = http("PATCH", &server.url("/v1/workspace"), &admin, Some(r#"{"allowRecoverable": true}"#));
    assert_eq!(ws["allowRecoverable"], true, "{ws}");
    let key = http("POST", &server.url("/v1/keys"), &admin, Some(r#"{"name": "kept", "recoverable": true}"#));
    let secret = key["secret"].as_str().unwrap().to_owned();
    // A PGP private key is sealed under the master key too.
    let (code, out, err) =
        client(&server, &admin, &["pgp", "upload", "--name", "archive", "--private", "--file", RSA_SEC, "--json"], "");
    assert_eq!(code, 0, "{err}");
    let pgp_id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    let (plain, sealed) = (dir.path().join("plain.txt"), dir.path().join("plain.txt.pgp"));
    std::fs::write(&plain, "sealed before the rotation").unwrap();
    let encrypt = ["pgp", "encrypt", &pgp_id, "--in", plain.to_str().unwrap(), "--out", sealed.to_str().unwrap()];
    assert_eq!(client(&server, &admin, &encrypt, "").0, 0);
    assert!(server.terminate().0);

    // Without the master key the data was sealed with, keyward will not start.
    let refused = keyward(&["migrate", "--data-dir", data]);
    assert!(refused.status.success(), "migrate needs no master key");
    let refused = keyward(&["master-key", "rotate", "--data-dir", data, "--master-key", &new]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not configured"), "{refused:?}");

    // Rotation: the new key first, the old after it.
    let rotated = keyward(&["master-key", "rotate", "--data-dir", data, "--master-key", &format!("{new},{old}")]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    // The key's secret, the PGP private key, and the answer kept for the
    // upload's Idempotency-Key (the CLI sends one).
    assert!(stdout(&rotated).contains("Re-wrapped 3 recoverable secrets "), "{}", stdout(&rotated));
    // Now the new key alone serves, and the secret is still there.
    std::fs::write(&key_file, format!("{new}\n")).unwrap();
    let server = serve(dir.path(), &["--master-key-file", key_arg]);
    let body = r#"{"email": "owner@localhost", "password": "owner password 1", "token": true}"#;
    let (_, login) = post_json(&server.url("/v1/auth/login"), body);
    let token = login["token"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    let revealed = http("POST", &server.url(&format!("/v1/keys/{id}/reveal")), token, None);
    assert_eq!(revealed["secret"].as_str(), Some(secret.as_str()), "{revealed}");
    let (code, out, err) = client(&server, &admin, &["pgp", "decrypt", &pgp_id, "--in", sealed.to_str().unwrap()], "");
    assert_eq!((code, out.as_str()), (0, "sealed before the rotation"), "{err}");
    let (ok, stderr) = server.terminate();
    assert!(ok);
    assert!(!stderr.contains(&secret) && !stderr.contains(&new), "no secret in the logs");

    // A signing-key rotation tells the operator when a SQLite node follows.
    let rotated = keyward(&["signing-key", "rotate", "--data-dir", data, "--master-key", &new]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let said = stdout(&rotated);
    assert!(said.contains("now signs access tokens") && said.contains("within a minute"), "{said}");
}

/// The first `serve` generates a master key beside the hash key (0600, its
/// path printed), so OAuth works at once; later starts reuse it silently.
#[test]
fn the_first_serve_generates_a_master_key_and_oauth_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().expect("the first serve prints the admin key");
    let path = dir.path().join("master.key");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64, "32 bytes as hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let client = http("POST", &server.url("/v1/keys"), &admin, Some(r#"{"name": "app", "type": "client"}"#));
    let (id, secret) = (client["clientId"].as_str().unwrap(), client["clientSecret"].as_str().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = runtime.block_on(async {
        let r = reqwest::Client::new()
            .post(server.url("/oauth/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].as_str().is_some_and(|t| t.starts_with("eyJ")), "{body}");
    let (ok, stderr) = server.terminate();
    assert!(ok);
    assert!(stderr.contains(&format!("Generated a master key at {}", path.display())), "{stderr}");
    assert!(!stderr.contains(text.trim()), "the master key itself is never printed");

    let server = serve(dir.path(), &[]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the same key on the next start");
    // Stopped right after it said it listens: a clean stop all the same.
    let (ok, stderr) = server.terminate();
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("Generated a master key"), "{stderr}");
}

/// Fixtures made by GnuPG (crates/keyward-core/testdata/pgp).
const RSA_SEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../keyward-core/testdata/pgp/rsa3072.sec.asc");
const ED_PUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../keyward-core/testdata/pgp/ed25519.pub.asc");

#[test]
fn pgp_keys_and_files_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    std::fs::write(&master, "2f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
    let server = serve(dir.path(), &["--master-key-file", master.to_str().unwrap()]);
    let admin = server.admin_key.clone().unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = client(&server, &admin, args, "");
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let json = |args: &[&str]| -> Value {
        let out = run(&[args, &["--json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("{args:?} printed JSON: {out}"))
    };
    let public = json(&["pgp", "upload", "--name", "partner", "--description", "SFTP drop", "--file", ED_PUB]);
    assert_eq!(public["fingerprint"], "7BDBFFBF6EC03C7B499D0AE9322D0D6C03E0BD81");
    let public_id = public["id"].as_str().unwrap().to_owned();
    let private = json(&["pgp", "upload", "--name", "archive", "--private", "--file", RSA_SEC]);
    let private_id = private["id"].as_str().unwrap().to_owned();
    assert_eq!((private["private"].clone(), private["algorithm"].clone()), (json!(true), json!("RSA 3072")));

    let table = run(&["pgp", "list"]);
    assert!(
        table.starts_with("ID")
            && table.contains("CD05C64F91092F075443D347DADBE2F6E1DC9A84")
            && table.contains("private"),
        "{table}"
    );
    assert_eq!(json(&["pgp", "get", &public_id])["description"], "SFTP drop");
    assert_eq!(json(&["pgp", "edit", &public_id, "--name", "partner 2"])["name"], "partner 2");
    let armored = run(&["pgp", "public", &private_id]);
    assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") && !armored.contains("PRIVATE"), "{armored}");

    // A file through encrypt and decrypt, binary and armored.
    let plain = dir.path().join("report.csv");
    std::fs::write(&plain, "id,total\n1,42\n".repeat(10_000)).unwrap();
    for armor in [false, true] {
        let sealed = dir.path().join(format!("report.{armor}.pgp"));
        let mut args =
            vec!["pgp", "encrypt", &private_id, "--in", plain.to_str().unwrap(), "--out", sealed.to_str().unwrap()];
        if armor {
            args.push("--armor");
        }
        run(&args);
        let head = std::fs::read(&sealed).unwrap();
        assert_eq!(head.starts_with(b"-----BEGIN PGP MESSAGE-----"), armor);
        let back = dir.path().join("back.csv");
        run(&["pgp", "decrypt", &private_id, "--in", sealed.to_str().unwrap(), "--out", back.to_str().unwrap()]);
        assert!(std::fs::read(&back).unwrap() == std::fs::read(&plain).unwrap(), "armor {armor}");
    }
    // Refusals exit 1 with the server's message.
    let (code, _, err) = client(&server, &admin, &["pgp", "decrypt", &public_id, "--in", plain.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("no_private_key"), "{err}");
    let (code, _, err) = client(&server, &admin, &["pgp", "upload", "--name", "x", "--file", RSA_SEC], "");
    assert!(code == 1 && err.contains("private_mismatch"), "{err}");
    assert_eq!(json(&["pgp", "delete", &public_id])["deleted"], public_id.as_str());
    assert_eq!(json(&["pgp", "list"]).as_array().unwrap().len(), 1);
    assert!(server.terminate().0);
}

/// `keyward ftp-auth` as pure-authd runs it: the login in the environment.
fn ftp_auth(url: &str, key: &str, account: &str, password: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["ftp-auth", "--url", url, "--root", "/srv/ftp", "--uid", "2000", "--gid", "2001"])
        .env("KEYWARD_API_KEY", key)
        .env("AUTHD_ACCOUNT", account)
        .env("AUTHD_PASSWORD", password)
        .env("AUTHD_REMOTE_IP", "198.51.100.9")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn integrations_and_ftp_auth_from_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--ftp-host", "ftp.example.com"]);
    let admin = server.admin_key.clone().expect("bootstrapped");
    let (code, out, err) = client(&server, &admin, &["integrations", "show"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JavaScript API key   kwpk_live_") && out.contains("Default REST API key"), "{out}");
    assert!(out.contains("on ftp.example.com  (enabled)"), "{out}");
    let (code, out, err) = client(&server, &admin, &["integrations", "show", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    let user = shown["ftp"]["username"].as_str().unwrap().to_owned();
    let (code, out, err) = client(&server, &admin, &["integrations", "ftp-rotate", "--json"], "");
    assert_eq!(code, 0, "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let password = rotated["password"].as_str().unwrap().to_owned();
    assert_eq!(rotated["username"], user.as_str());

    let url = format!("http://{}", server.addr);
    let ftp_key =
        http("POST", &server.url("/v1/keys"), &admin, Some(r#"{"name": "ftpd", "scopes": ["ftp:authenticate"]}"#));
    let ftp_key = ftp_key["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        ftp_auth(&url, &ftp_key, &user, &password),
        (0, format!("auth_ok:1\nuid:2000\ngid:2001\ndir:/srv/ftp/{user}\nend\n"))
    );
    assert_eq!(ftp_auth(&url, &ftp_key, &user, "wrong"), (0, "auth_ok:0\nend\n".to_owned()));
    assert_eq!(ftp_auth(&url, &ftp_key, "site_nobody", &password), (0, "auth_ok:0\nend\n".to_owned()));
    // A refused program key, or no keyward at all: -1, never a crash.
    assert_eq!(ftp_auth(&url, "kw_live_notakey", &user, &password), (0, "auth_ok:-1\nend\n".to_owned()));
    let (status, _) = server.terminate();
    assert!(status);
    assert_eq!(ftp_auth(&url, &ftp_key, &user, &password), (0, "auth_ok:-1\nend\n".to_owned()));
}

/// A proxy to `upstream` that swallows the answer to the first request
/// it passes (as a network that lost it would: the client's time-out
/// strikes), then passes everything through. Its address.
fn answer_losing_proxy(upstream: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let server = std::net::TcpStream::connect(&upstream).unwrap();
                let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                let (mut from_server, mut to_client) = (server, client);
                let _ = match i {
                    0 => std::io::copy(&mut from_server, &mut std::io::sink()),
                    _ => std::io::copy(&mut from_server, &mut to_client),
                };
            });
        }
    });
    addr
}

#[test]
fn the_cli_retries_a_timed_out_create_with_its_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let admin = server.admin_key.clone().expect("serve printed the bootstrap admin key");
    let proxy = answer_losing_proxy(server.addr.clone());
    let out = Command::new(BIN)
        .args(["keys", "create", "--name", "made once", "--scope", "read", "--json"])
        .env("KEYWARD_URL", format!("http://{proxy}"))
        .env("KEYWARD_API_KEY", &admin)
        .env("KEYWARD_TIMEOUT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("asking again with the same Idempotency-Key"), "the first answer was lost: {stderr}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = created["secret"].as_str().unwrap();
    // The key was made by the first request, once; the retry got its secret.
    let keys = http("GET", &server.url("/v1/keys?limit=100"), &admin, None);
    let named: Vec<&Value> = keys["data"].as_array().unwrap().iter().filter(|k| k["name"] == "made once").collect();
    assert_eq!(named.len(), 1, "{keys}");
    assert_eq!(named[0]["id"], created["id"]);
    let v = http("POST", &server.url("/v1/keys/verify"), &admin, Some(&format!("{{\"key\": \"{secret}\"}}")));
    assert_eq!(v["code"], "VALID");
    let (ok, logs) = server.terminate();
    assert!(ok && !logs.contains(secret), "{logs}");
}
