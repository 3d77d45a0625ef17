//! Several nodes on one PostgreSQL database: two `keyward serve` processes
//! on one fresh schema. Revocations made on node A reach node B within
//! 100 ms (p99, printed); two nodes racing for the last key of a limit
//! create exactly one. Access tokens revoked on A (or their client
//! deactivated) stop on B; a signing key rotated by the CLI is published by
//! both. Skips without KEYWARD_TEST_POSTGRES_URL (fails
//! under CI=true instead).

use std::time::{Duration, Instant};

use keyward_store::testing::{Backend, TestDb};
use serde_json::{Value, json};

#[path = "support/python.rs"]
mod python;
#[path = "support/receiver.rs"]
mod receiver;
mod support;

use support::{Node, call, serve};

const REVOCATIONS: usize = 200;

fn start(url: &str, hash_key: &str, data: &tempfile::TempDir, redis: Option<&str>, extra: &[&str]) -> Node {
    let data = data.path().to_str().unwrap();
    let mut args = vec!["--log-level", "warn", "--database-url", url, "--hash-key", hash_key, "--data-dir", data];
    if let Some(redis) = redis {
        args.extend(["--redis-url", redis]);
    }
    args.extend(extra);
    serve(&args)
}

/// Polls until `code` answers `expected`; fails after a second (the
/// propagation bound is 100 ms).
async fn wait_for<F, Fut>(code: F, expected: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let started = Instant::now();
    loop {
        let got = code().await;
        if got == expected {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "node B still answers {got}, not {expected}");
    }
}

/// Two nodes on one fresh PostgreSQL schema (A bootstrapped it), with the
/// admin key; `None` (after saying why) where PostgreSQL is not configured.
struct Pair {
    a: Node,
    b: Node,
    admin: String,
    /// The nodes' hash key (for a CLI command on their database).
    hash_key: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _db: TestDb,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// The tests of this file load the machine's two cores (several nodes,
/// PostgreSQL, 64 clients): they take turns, so that one's load does not
/// starve another's database connections.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

async fn two_nodes(test: &str) -> Option<Pair> {
    two_nodes_with(test, None, &[]).await
}

/// Two nodes sharing rate limits through Redis; `None` (after saying why)
/// where PostgreSQL or Redis is not configured.
async fn two_nodes_with_redis(test: &str) -> Option<Pair> {
    let redis = keyward_store::testing::redis_url(test)?;
    two_nodes_with(test, Some(&redis), &[]).await
}

async fn two_nodes_with(test: &str, redis: Option<&str>, extra: &[&str]) -> Option<Pair> {
    let db = TestDb::new(Backend::Postgres, test).await?;
    let turn = turn().await;
    let hash_key = keyward_core::hash::hex(&keyward_core::ids::random_bytes::<32>());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&db.url, &hash_key, &dirs.0, redis, extra);
    let admin = a.admin.clone().expect("the first node bootstrapped");
    let b = start(&db.url, &hash_key, &dirs.1, redis, extra);
    assert!(b.admin.is_none(), "the second node found the workspace and created none");
    Some(Pair { a, b, admin, hash_key, _dirs: dirs, _db: db, _turn: turn })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_other_nodes_and_limits_hold_across_them() {
    let Some(Pair { a, b, admin, _dirs, _db, _turn, .. }) = two_nodes("cluster::revocations_reach_other_nodes").await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;

    let mut keys = Vec::new();
    for i in 0..REVOCATIONS {
        let (status, body) =
            call(&http, post.clone(), format!("{}/v1/keys", a.base), &admin, &json!({"name": format!("k{i}")})).await;
        assert_eq!(status, 201, "{body}");
        let secret = body["secret"].as_str().unwrap().to_owned();
        // Node B learns the key (and caches it).
        let (_, v) =
            call(&http, post.clone(), format!("{}/v1/keys/verify", b.base), &admin, &json!({"key": secret})).await;
        assert_eq!(v["code"], "VALID", "{v}");
        keys.push((body["id"].as_str().unwrap().to_owned(), secret));
    }

    let mut latencies = Vec::new();
    for (id, secret) in &keys {
        let (status, _) =
            call(&http, post.clone(), format!("{}/v1/keys/{id}/revoke", a.base), &admin, &json!({})).await;
        assert_eq!(status, 200);
        let revoked = Instant::now();
        loop {
            let (_, v) =
                call(&http, post.clone(), format!("{}/v1/keys/verify", b.base), &admin, &json!({"key": secret})).await;
            if v["code"] == "REVOKED" {
                break;
            }
            assert_eq!(v["code"], "VALID", "{v}");
            assert!(revoked.elapsed() < Duration::from_secs(5), "revocation of {id} never reached node B");
        }
        latencies.push(revoked.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "cluster: {REVOCATIONS} revocations on node A seen on node B: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_millis(100), "p99 propagation {p99:?} is above 100 ms");

    // Other changes reach node B too: deactivation, deletion, and the
    // workspace's route scopes.
    let routes =
        |permission: &str| json!({"routes": [{"method": "GET", "path": "/api/tags/**", "permission": permission}]});
    let patch = reqwest::Method::PATCH;
    let (status, _) =
        call(&http, patch.clone(), format!("{}/v1/workspace", a.base), &admin, &routes("tags:read")).await;
    assert_eq!(status, 200);
    let (_, k) = call(
        &http,
        post.clone(),
        format!("{}/v1/keys", a.base),
        &admin,
        &json!({"name": "routes", "scopes": ["tags:read"]}),
    )
    .await;
    let (id, secret) = (k["id"].as_str().unwrap().to_owned(), k["secret"].as_str().unwrap().to_owned());
    let on_b = |body: Value| {
        let (http, url, admin) = (http.clone(), format!("{}/v1/keys/verify", b.base), admin.clone());
        async move { call(&http, reqwest::Method::POST, url, &admin, &body).await.1["code"].as_str().unwrap().to_owned() }
    };
    let tags = json!({"key": secret, "path": "/api/tags/1", "method": "GET"});
    wait_for(|| on_b(tags.clone()), "VALID").await;
    let (status, _) = call(&http, patch, format!("{}/v1/workspace", a.base), &admin, &routes("tags:admin")).await;
    assert_eq!(status, 200);
    wait_for(|| on_b(tags.clone()), "INSUFFICIENT_PERMISSIONS").await;
    call(&http, post.clone(), format!("{}/v1/keys/{id}/deactivate", a.base), &admin, &Value::Null).await;
    wait_for(|| on_b(json!({"key": secret})), "INACTIVE").await;
    let (status, _) =
        call(&http, reqwest::Method::DELETE, format!("{}/v1/keys/{id}", a.base), &admin, &Value::Null).await;
    assert_eq!(status, 204);
    wait_for(|| on_b(json!({"key": secret})), "NOT_FOUND").await;

    // Two nodes race for the last key a workspace may hold, several times.
    for round in 0..5 {
        let (_, list) = call(
            &http,
            reqwest::Method::GET,
            format!("{}/v1/keys?limit=200&state=active", a.base),
            &admin,
            &Value::Null,
        )
        .await;
        let live = list["data"].as_array().unwrap().len();
        let (status, body) = call(
            &http,
            reqwest::Method::PATCH,
            format!("{}/v1/workspace", a.base),
            &admin,
            &json!({"maxKeys": live + 1}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let race = |base: String, name: String| {
            let (http, admin) = (http.clone(), admin.clone());
            tokio::spawn(async move {
                call(&http, reqwest::Method::POST, format!("{base}/v1/keys"), &admin, &json!({"name": name})).await
            })
        };
        let (x, y) = (race(a.base.clone(), format!("race a {round}")), race(b.base.clone(), format!("race b {round}")));
        let (x, y) = (x.await.unwrap(), y.await.unwrap());
        let created = [x.0, y.0].iter().filter(|s| **s == 201).count();
        assert_eq!(created, 1, "exactly one node creates the last key: {x:?} {y:?}");
        assert!([x.0, y.0].contains(&403), "the other is refused for the limit: {x:?} {y:?}");
    }
    drop((a, b));
}

/// Nodes starting together on an empty database: migrations are applied
/// once (an advisory lock), the deployment is bootstrapped once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_and_bootstrap_once() {
    let Some(db) = TestDb::new(Backend::Postgres, "cluster::nodes_starting_at_once").await else { return };
    let _turn = turn().await;
    let hash_key = keyward_core::hash::hex(&keyward_core::ids::random_bytes::<32>());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs.iter().map(|d| s.spawn(|| start(&db.url, &hash_key, d, None, &[]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admins: Vec<&String> = nodes.iter().filter_map(|n| n.admin.as_ref()).collect();
    assert_eq!(admins.len(), 1, "exactly one node bootstrapped");
    let http = reqwest::Client::new();
    for node in &nodes {
        let (status, body) =
            call(&http, reqwest::Method::GET, format!("{}/v1/workspace", node.base), admins[0], &Value::Null).await;
        assert_eq!(status, 200, "every node serves the one workspace: {body}");
    }
}

/// Credits are exact across nodes: 64 clients spending one key with 1,000
/// credits through two nodes get exactly 1,000 VALID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_spent_exactly_across_nodes() {
    let Some(pair) = two_nodes("cluster::credits_are_spent_exactly").await else { return };
    spend_credits_from_64_clients(pair, json!({"name": "metered", "credits": {"remaining": 1000}})).await;
}

/// The same with Redis sharing the key's (generous) rate limit: limits are
/// checked, then credits spent, and a refusal for credits gives back the
/// limit's units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_spent_exactly_across_nodes_with_redis() {
    let Some(pair) = two_nodes_with_redis("cluster::credits_are_spent_exactly_with_redis").await else { return };
    let limits = json!([{"name": "requests", "limit": 1_000_000, "durationMs": 60_000, "autoApply": true}]);
    spend_credits_from_64_clients(
        pair,
        json!({"name": "metered", "credits": {"remaining": 1000}, "ratelimits": limits}),
    )
    .await;
}

async fn spend_credits_from_64_clients(pair: Pair, body: Value) {
    let Pair { a, b, admin, _dirs, _db, _turn, .. } = pair;
    let http = reqwest::Client::new();
    let (_, key) = call(&http, reqwest::Method::POST, format!("{}/v1/keys", a.base), &admin, &body).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let url = format!("{}/v1/keys/verify", if i % 2 == 0 { &a.base } else { &b.base });
            let (http, admin, secret) = (http.clone(), admin.clone(), secret.clone());
            tokio::spawn(async move {
                let (mut valid, mut exceeded) = (0, 0);
                for _ in 0..20 {
                    let (_, v) = call(&http, reqwest::Method::POST, url.clone(), &admin, &json!({"key": secret})).await;
                    match v["code"].as_str() {
                        Some("VALID") => valid += 1,
                        Some("USAGE_EXCEEDED") => exceeded += 1,
                        other => panic!("unexpected {other:?}: {v}"),
                    }
                }
                (valid, exceeded)
            })
        })
        .collect();
    let (mut valid, mut exceeded) = (0, 0);
    for c in clients {
        let (v, e) = c.await.unwrap();
        valid += v;
        exceeded += e;
    }
    println!("credits: 1,280 verifications through two nodes: {valid} VALID, {exceeded} USAGE_EXCEEDED");
    assert_eq!(valid, 1000, "exactly the credits were spent");
    assert_eq!(exceeded, 280);
    drop((a, b));
}

/// Wrong secrets are counted per key across nodes: alternating between two
/// nodes, the threshold locks the key on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_are_counted_across_nodes() {
    let Some(Pair { a, b, admin, _dirs, _db, _turn, .. }) = two_nodes("cluster::wrong_secrets_are_counted").await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let patch = json!({"lockout": {"threshold": 4}});
    call(&http, reqwest::Method::PATCH, format!("{}/v1/workspace", a.base), &admin, &patch).await;
    let (_, key) =
        call(&http, reqwest::Method::POST, format!("{}/v1/keys", a.base), &admin, &json!({"name": "k"})).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let token_id = keyward_core::token::parse(&secret).unwrap().id.to_owned();
    let forged = keyward_core::token::generate_with_id("kw", keyward_core::token::Environment::Live, &token_id);
    let code = |node: &Node, token: String| {
        let (http, url, admin) = (http.clone(), format!("{}/v1/keys/verify", node.base), admin.clone());
        async move { call(&http, reqwest::Method::POST, url, &admin, &json!({"key": token})).await.1["code"].clone() }
    };
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(code(node, forged.expose().to_owned()).await, "INVALID_SECRET");
    }
    assert_eq!(code(&a, secret.clone()).await, "LOCKED");
    assert_eq!(code(&b, secret.clone()).await, "LOCKED");
    drop((a, b));
}

/// A limit of 100 per 10 s on one key, spent by 64 clients through two
/// nodes sharing Redis for 21 s: no 10 s window admits more than 100.
///
/// Each admission happens somewhere between its request's send and its
/// answer's arrival; a window counts the admissions that certainly fall in
/// it (sent after the window opened, answered before it closed), so timing
/// jitter cannot fail the test, and a real overshoot still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_nodes_with_redis() {
    const WINDOW: Duration = Duration::from_secs(10);
    let Some(Pair { a, b, admin, _dirs, _db, _turn, .. }) = two_nodes_with_redis("cluster::a_rate_limit_holds").await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let limits = json!([{"name": "requests", "limit": 100, "durationMs": 10_000, "autoApply": true}]);
    let body = json!({"name": "limited", "ratelimits": limits});
    let (_, key) = call(&http, reqwest::Method::POST, format!("{}/v1/keys", a.base), &admin, &body).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let run_for = Duration::from_secs(21);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let url = format!("{}/v1/keys/verify", if i % 2 == 0 { &a.base } else { &b.base });
            let (http, admin, secret) = (http.clone(), admin.clone(), secret.clone());
            tokio::spawn(async move {
                let (mut admitted, mut refused) = (Vec::new(), 0u64);
                while started.elapsed() < run_for {
                    let sent = started.elapsed();
                    let (_, v) = call(&http, reqwest::Method::POST, url.clone(), &admin, &json!({"key": secret})).await;
                    match v["code"].as_str() {
                        Some("VALID") => admitted.push((sent, started.elapsed())),
                        Some("RATE_LIMITED") => refused += 1,
                        other => panic!("unexpected {other:?}: {v}"),
                    }
                }
                (admitted, refused)
            })
        })
        .collect();
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for c in clients {
        let (a, r) = c.await.unwrap();
        admitted.extend(a);
        refused += r;
    }
    admitted.sort();
    let max = admitted
        .iter()
        .map(|&(opened, _)| {
            admitted.iter().filter(|&&(sent, answered)| sent >= opened && answered <= opened + WINDOW).count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "rate limit 100 per 10 s through two nodes with Redis, 64 clients for {run_for:?}: {} admitted, {refused} \
         refused; at most {max} admitted in any 10 s window",
        admitted.len()
    );
    assert!(max <= 100, "a 10 s window admitted {max}");
    assert_eq!(max, 100, "the limit was reached");
    assert!(admitted.len() >= 200, "a later window admitted again: {}", admitted.len());
    drop((a, b));
}

/// OAuth across nodes holding one master key: a token issued on A verifies
/// on B; revoked on A, or its client deactivated there, it stops on B at
/// once; a signing key rotated by the CLI is published by both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_and_signing_keys_reach_other_nodes() {
    let master = keyward_core::hash::hex(&keyward_core::ids::random_bytes::<32>());
    let extra = ["--master-key", master.as_str()];
    let Some(Pair { a, b, admin, hash_key, _dirs, _db, _turn }) =
        two_nodes_with("cluster::access_tokens_reach_other_nodes", None, &extra).await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let body = json!({"name": "partner", "type": "client", "scopes": ["read"]});
    let (status, client) = call(&http, reqwest::Method::POST, format!("{}/v1/keys", a.base), &admin, &body).await;
    assert_eq!(status, 201, "{client}");
    let field = |name: &str| client[name].as_str().unwrap().to_owned();
    let (id, client_id, secret) = (field("id"), field("clientId"), field("clientSecret"));
    let token_on = |base: &str| {
        let (http, url, cid, secret) = (http.clone(), format!("{base}/oauth/token"), client_id.clone(), secret.clone());
        async move {
            let resp = http
                .post(url)
                .basic_auth(cid, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
        }
    };
    let on_b = |token: String| {
        let (http, url, admin) = (http.clone(), format!("{}/v1/keys/verify", b.base), admin.clone());
        async move {
            let answer = call(&http, reqwest::Method::POST, url, &admin, &json!({"key": token})).await.1;
            answer["code"].as_str().unwrap().to_owned()
        }
    };

    let first = token_on(&a.base).await;
    assert_eq!(on_b(first.clone()).await, "VALID");
    let revoked = http
        .post(format!("{}/oauth/revoke", a.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    wait_for(|| on_b(first.clone()), "TOKEN_REVOKED").await;

    let second = token_on(&b.base).await;
    assert_eq!(on_b(second.clone()).await, "VALID");
    let (status, _) =
        call(&http, reqwest::Method::POST, format!("{}/v1/keys/{id}/deactivate", a.base), &admin, &Value::Null).await;
    assert_eq!(status, 200);
    wait_for(|| on_b(second.clone()), "INACTIVE").await;

    let published = |base: String| {
        let http = http.clone();
        async move {
            let jwks: Value =
                http.get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
            jwks["keys"].as_array().unwrap().len().to_string()
        }
    };
    assert_eq!(published(a.base.clone()).await, "1");
    assert_eq!(published(b.base.clone()).await, "1");
    let data = tempfile::tempdir().unwrap();
    let rotate = std::process::Command::new(support::BIN)
        .args(["signing-key", "rotate", "--database-url", &_db.url, "--master-key", &master, "--hash-key", &hash_key])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    // The old key stays published beside the new one, on both nodes.
    wait_for(|| published(a.base.clone()), "2").await;
    wait_for(|| published(b.base.clone()), "2").await;
    drop((a, b));
}

/// 1,000 events made on two nodes (500 each, 8 clients at once) reach the
/// receiver exactly once each, signed: both nodes send from one outbox
/// (`FOR UPDATE SKIP LOCKED`). Prints how long delivery took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_each_webhook_once() {
    const EVENTS: usize = 1000;
    let test = "cluster::two_nodes_send_each_webhook_once";
    let Some(receiver) = receiver::Receiver::start(test).await else { return };
    // Nodes share the master key the signing secret is sealed under.
    let master = keyward_core::hash::hex(&keyward_core::ids::random_bytes::<32>());
    let extra = ["--webhook-allow-hosts", "127.0.0.1", "--master-key", &master];
    let Some(Pair { a, b, admin, _dirs, _db, _turn, .. }) = two_nodes_with(test, None, &extra).await else {
        return;
    };
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let body = json!({"url": receiver.url, "events": ["key.created"]});
    let (status, made) = call(&http, post.clone(), format!("{}/v1/webhooks", a.base), &admin, &body).await;
    assert_eq!(status, 201, "{made}");
    receiver.secrets(&[made["secret"].as_str().unwrap()]).await;
    let endpoint = made["id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, admin) = (http.clone(), admin.clone());
        let base = if c % 2 == 0 { a.base.clone() } else { b.base.clone() };
        clients.push(tokio::spawn(async move {
            for i in 0..EVENTS / 8 {
                let body = json!({"name": format!("c{c}-{i}")});
                let (status, r) = call(&http, reqwest::Method::POST, format!("{base}/v1/keys"), &admin, &body).await;
                assert_eq!(status, 201, "{r}");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let made = started.elapsed();
    let events = receiver.wait_for_within(EVENTS, Duration::from_secs(30)).await;
    let delivered = started.elapsed();
    println!("{EVENTS} keys made on two nodes in {made:?}; their {EVENTS} events delivered by {delivered:?}");
    // Once no delivery is pending (each recorded as delivered), a second
    // send of any of them would have arrived already.
    let pending = format!("{}/v1/webhooks/{endpoint}/deliveries?status=pending&limit=1", a.base);
    for _ in 0..100 {
        let (_, page) = call(&http, reqwest::Method::GET, pending.clone(), &admin, &Value::Null).await;
        if page["data"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = if receiver.count().await > events.len() { receiver.events().await } else { events };
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((events.len(), ids.len()), (EVENTS, EVENTS), "each event exactly once");
    assert!(events.iter().all(|e| e["verifiedWith"] == json!([0])), "every delivery signed");
    assert!(delivered < Duration::from_secs(10), "1,000 events delivered in {delivered:?} (bound: 10 s)");
}
