//! Crash safety: a storm of creates, edits and revokes; keyward is killed
//! with SIGKILL at a random moment, restarted, and everything it
//! acknowledged must still be there. Several rounds on one database.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[path = "support/python.rs"]
mod python;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use support::Node;

/// What the server acknowledged (2xx received).
#[derive(Default, Clone)]
struct Acked {
    /// id → secret
    created: HashMap<String, String>,
    revoked: Vec<String>,
    /// id → (last acknowledged name, names sent after it without an answer)
    names: HashMap<String, (String, Vec<String>)>,
}

fn start(data: &std::path::Path) -> Node {
    support::serve(&["--data-dir", data.to_str().unwrap(), "--log-level", "warn"])
}

fn kill9(server: &mut Node) {
    let pid = server.child.id();
    assert!(pid > 1);
    assert!(Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status().unwrap().success());
    server.child.wait().unwrap();
}

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

async fn storm(base: String, admin: String, acked: Arc<Mutex<Acked>>, worker: usize, round: usize) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for i in 0.. {
        let name = format!("r{round} w{worker} k{i}");
        let Ok(resp) =
            http.post(format!("{base}/v1/keys")).bearer_auth(&admin).json(&json!({"name": name})).send().await
        else {
            return; // the server is gone
        };
        if !resp.status().is_success() {
            return;
        }
        let Ok(body) = resp.json::<Value>().await else { return };
        let id = body["id"].as_str().unwrap().to_owned();
        {
            let mut a = acked.lock().unwrap();
            a.created.insert(id.clone(), body["secret"].as_str().unwrap().to_owned());
            a.names.insert(id.clone(), (name.clone(), Vec::new()));
        }
        let renamed = format!("{name} edited");
        acked.lock().unwrap().names.get_mut(&id).unwrap().1.push(renamed.clone());
        let Ok(resp) =
            http.patch(format!("{base}/v1/keys/{id}")).bearer_auth(&admin).json(&json!({"name": renamed})).send().await
        else {
            return;
        };
        if resp.status().is_success() {
            acked.lock().unwrap().names.insert(id.clone(), (renamed, Vec::new()));
        }
        if i % 2 == 0 {
            let Ok(resp) = http.post(format!("{base}/v1/keys/{id}/revoke")).bearer_auth(&admin).send().await else {
                return;
            };
            if resp.status().is_success() {
                acked.lock().unwrap().revoked.push(id);
            }
        }
    }
}

async fn check(base: &str, admin: &str, acked: &Acked) {
    let http = reqwest::Client::new();
    for (id, secret) in &acked.created {
        let resp = http.get(format!("{base}/v1/keys/{id}")).bearer_auth(admin).send().await.unwrap();
        assert_eq!(resp.status(), 200, "acknowledged key {id} lost");
        let key: Value = resp.json().await.unwrap();
        let (last, pending) = &acked.names[id];
        let name = key["name"].as_str().unwrap();
        assert!(name == last || pending.iter().any(|p| p == name), "{id}: name {name:?}, acknowledged {last:?}");
        let v: Value = http
            .post(format!("{base}/v1/keys/verify"))
            .bearer_auth(admin)
            .json(&json!({"key": secret}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if acked.revoked.contains(id) {
            assert_eq!(v["code"], "REVOKED", "acknowledged revoke of {id} lost");
        } else {
            assert!(v["code"] == "VALID" || v["code"] == "REVOKED", "{id}: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut admin = None;
    for round in 0..4 {
        let mut server = start(dir.path());
        admin = admin.or(server.admin.take());
        let key = admin.clone().expect("the first start bootstrapped");
        let snapshot = acked.lock().unwrap().clone();
        check(&server.base, &key, &snapshot).await;
        let workers: Vec<_> =
            (0..4).map(|w| tokio::spawn(storm(server.base.clone(), key.clone(), acked.clone(), w, round))).collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.next() % 900)).await;
        kill9(&mut server);
        for w in workers {
            w.await.unwrap();
        }
    }
    let server = start(dir.path());
    let key = admin.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.created.len() > 20, "the storm created keys ({} acknowledged)", acked.created.len());
    check(&server.base, &key, &acked).await;
    let mut server = server;
    kill9(&mut server);
}

/// Events committed by a node that sends none (`--webhook-concurrency 0`:
/// between commit and send), which is then killed with SIGKILL, are sent
/// by the next start: each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_committed_before_kill_9_are_sent_after_restart() {
    let Some(receiver) = receiver::Receiver::start("crash::webhooks_committed_before_kill_9").await else { return };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let quiet = ["--data-dir", dir, "--log-level", "warn", "--webhook-allow-hosts", "127.0.0.1"];
    let mut args = quiet.to_vec();
    args.extend(["--webhook-concurrency", "0"]);
    let mut node = support::serve(&args);
    let admin = node.admin.clone().unwrap();
    let http = reqwest::Client::new();
    let body = json!({"url": receiver.url, "events": ["key.created", "key.revoked"]});
    let (status, made) =
        support::call(&http, reqwest::Method::POST, format!("{}/v1/webhooks", node.base), &admin, &body).await;
    assert_eq!(status, 201, "{made}");
    receiver.secrets(&[made["secret"].as_str().unwrap()]).await;
    for i in 0..25 {
        let url = format!("{}/v1/keys", node.base);
        let (status, k) =
            support::call(&http, reqwest::Method::POST, url, &admin, &json!({"name": format!("k{i}")})).await;
        assert_eq!(status, 201);
        let url = format!("{}/v1/keys/{}/revoke", node.base, k["id"].as_str().unwrap());
        assert_eq!(support::call(&http, reqwest::Method::POST, url, &admin, &json!({})).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count().await, 0, "this node sends nothing");
    kill9(&mut node);
    let _node = support::serve(&quiet);
    let events = receiver.wait_for(50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = if receiver.count().await > events.len() { receiver.events().await } else { events };
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((events.len(), ids.len()), (50, 50), "each once");
    assert!(events.iter().all(|e| e["verifiedWith"] == json!([0])));
}

/// An embedded verifier while its server is killed with SIGKILL (the
/// stream ends without its last chunk) and down for 10 s by the verifiers'
/// clock: fail-closed refuses once its bound has passed, fail-open keeps
/// answering from its copy; both follow the restarted server by
/// themselves, a revocation made there included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_verifier_outlives_a_killed_server() {
    use keyward_verifier::embedded::{Check, Options, Path, Verifier};
    use std::sync::atomic::{AtomicI64, Ordering};

    let data = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let args = ["--data-dir", data.path().to_str().unwrap(), "--log-level", "warn"];
    let mut node = support::serve_on(data.path(), &listen, &args);
    let admin = node.admin.clone().unwrap();
    let http = reqwest::Client::new();
    let create = |name: &str, scopes: Value| {
        let (http, url, admin) = (http.clone(), format!("{}/v1/keys", node.base), admin.clone());
        let body = json!({"name": name, "scopes": scopes});
        async move {
            let (status, key) = support::call(&http, reqwest::Method::POST, url, &admin, &body).await;
            assert_eq!(status, 201, "{key}");
            key
        }
    };
    let replicator = create("replicator", json!(["keys:replicate", "keys:verify"])).await;
    let key = create("protected", json!(["read"])).await;
    let (replicator, secret) = (replicator["secret"].as_str().unwrap(), key["secret"].as_str().unwrap());

    let moved = Arc::new(AtomicI64::new(0));
    let clock: keyward_verifier::clock::Clock = {
        let moved = moved.clone();
        Arc::new(move || keyward_verifier::clock::wall_clock() + moved.load(Ordering::Relaxed))
    };
    let bound = Duration::from_secs(2);
    let options = |fail_open| Options { fail_open, max_staleness: bound, clock: clock.clone(), ..Options::default() };
    let closed = Verifier::connect_with(&node.base, replicator, options(false)).await.unwrap();
    let open = Verifier::connect_with(&node.base, replicator, options(true)).await.unwrap();
    let check = Check { key: secret, ..Check::default() };
    for v in [&closed, &open] {
        assert_eq!(v.verify(&check).await.decision.code.as_str(), "VALID");
    }

    kill9(&mut node);
    moved.fetch_add(2_500, Ordering::Relaxed);
    let refused = closed.verify(&check).await;
    assert_eq!((refused.decision.code.as_str(), refused.path), ("NOT_FOUND", Path::Stale));
    moved.fetch_add(7_500, Ordering::Relaxed);
    let answered = open.verify(&check).await;
    assert_eq!((answered.decision.code.as_str(), answered.path), ("VALID", Path::Local));

    let node = support::serve_on(data.path(), &listen, &args);
    for v in [&closed, &open] {
        let mut verdict = v.verify(&check).await;
        for _ in 0..500 {
            if verdict.path == Path::Local && verdict.decision.is_valid() && !v.is_stale() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            verdict = v.verify(&check).await;
        }
        assert!(verdict.path == Path::Local && verdict.decision.is_valid(), "did not recover: {verdict:?}");
    }
    let url = format!("{}/v1/keys/{}/revoke", node.base, key["id"].as_str().unwrap());
    assert_eq!(support::call(&http, reqwest::Method::POST, url, &admin, &Value::Null).await.0, 200);
    for v in [&closed, &open] {
        let mut code = String::new();
        for _ in 0..500 {
            code = v.verify_local(&check).map(|v| v.decision.code.as_str().to_owned()).unwrap_or_default();
            if code == "REVOKED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(code, "REVOKED", "the restarted server's revocation arrives");
    }
}
