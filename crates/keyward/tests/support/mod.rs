//! What the process tests share: `keyward serve` as a child process, and
//! JSON over HTTP. (Each test binary uses some of it.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// The binary `serve` starts: [`BIN`], or `KEYWARD_TEST_BIN` when set (a
/// release build, to measure throughput).
pub fn bin() -> String {
    std::env::var("KEYWARD_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A running `keyward serve`; killed when dropped.
pub struct Node {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The admin key, when this start bootstrapped the database.
    pub admin: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyward serve --listen 127.0.0.1:0 ARGS` and waits until it
/// prints its address.
pub fn serve(args: &[&str]) -> Node {
    serve_in(&std::env::current_dir().expect("a working directory"), args)
}

/// [`serve`], started in the directory `cwd`.
pub fn serve_in(cwd: &std::path::Path, args: &[&str]) -> Node {
    serve_on(cwd, "127.0.0.1:0", args)
}

/// [`serve_in`], listening on `listen` (a restart on the same address).
pub fn serve_on(cwd: &std::path::Path, listen: &str, args: &[&str]) -> Node {
    let mut child = Command::new(bin())
        .current_dir(cwd)
        .args(["serve", "--listen", listen])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyward starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    let base = loop {
        let line = lines.next().expect("keyward printed its address").unwrap();
        admin = admin.or_else(|| line.split_whitespace().find(|w| w.starts_with("kw_live_")).map(str::to_owned));
        if let Some(addr) = line.strip_prefix("keyward listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep reading what it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    Node { child, base, admin }
}

/// One request with a bearer key and a JSON body (none for `Value::Null`);
/// the status and the JSON answer (`Null` when there is none).
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(key);
    if !body.is_null() {
        req = req.json(body);
    }
    let resp = req.send().await.expect("keyward answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}
