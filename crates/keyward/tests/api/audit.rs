//! The audit log: an entry for every action (failures too), queries and
//! exports, the chain checked by `keyward audit verify` after rows are
//! edited, removed, inserted and truncated in the database directly, usage
//! rollups and the hygiene report.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, TestApp, eventually, spawn_app, spawn_app_with_hash_key};

backend_tests!(
    every_action_leaves_an_entry_naming_actor_target_and_outcome,
    queries_filter_page_and_refuse_bad_parameters,
    exports_parse_back_to_the_same_entries,
    audit_verify_names_edited_removed_inserted_and_truncated_entries,
    usage_counts_match_the_verifications_made,
    the_hygiene_report_finds_each_kind_of_finding,
);

/// A well-formed token naming the same key with another secret.
fn forged(secret: &str) -> String {
    let id = keyward_core::token::parse(secret).unwrap().id.to_owned();
    keyward_core::token::generate_with_id("kw", keyward_core::token::Environment::Live, &id).expose().to_owned()
}

/// Every entry of the workspace, newest first (as the owner reads them).
async fn entries(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => format!("/v1/audit?limit=200{query}&cursor={c}"),
            None => format!("/v1/audit?limit=200{query}"),
        };
        let r = app.call(Method::GET, &page, Some(token), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

fn find<'a>(all: &'a [Value], action: &str, target: &str) -> &'a Value {
    find_with(all, action, target, "success")
}

fn find_with<'a>(all: &'a [Value], action: &str, target: &str, outcome: &str) -> &'a Value {
    all.iter()
        .find(|e| e["action"] == action && e["target"]["id"] == target && e["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no {action} entry for {target} in {}", Value::from(all.to_vec())))
}

async fn every_action_leaves_an_entry_naming_actor_target_and_outcome() {
    let app = spawn_app().await;
    let keys = app.get("/v1/keys?name=Admin%20key").await;
    let admin_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    // Members: a failed and a good sign-in, settings, an invitation, a
    // join, a change, a removal, roles, a sign-out.
    let bad = app.login(OWNER_EMAIL, "not the password at all", json!({})).await.0;
    assert_eq!(bad.status, 401);
    let owner = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let owner_id = app.call(Method::GET, "/v1/auth/session", Some(&owner), None).await.body["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_owner = |m: Method, path: String, body: Option<Value>| {
        let (app, owner) = (&app, owner.clone());
        async move { app.call(m, &path, Some(&owner), body).await }
    };
    let r = as_owner(
        Method::PATCH,
        "/v1/workspace".into(),
        Some(json!({"allowRecoverable": true, "lockout": {"threshold": 2}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let member_id = app.add_member("dev@example.com", "a long enough password", &["viewer"]).await;
    let r = as_owner(Method::PATCH, format!("/v1/members/{member_id}"), Some(json!({"roles": ["developer"]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = as_owner(Method::POST, "/v1/roles".into(), Some(json!({"name": "auditor", "permissions": ["audit:read"]})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let role_id = r.str("id");
    let r =
        as_owner(Method::PATCH, format!("/v1/roles/{role_id}"), Some(json!({"description": "Reads the log"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(as_owner(Method::DELETE, format!("/v1/roles/{role_id}"), None).await.status, 204);

    // Keys, by the admin key and by the owner.
    let key = app.create_key(json!({"name": "svc", "credits": {"remaining": 5}})).await;
    let path = |tail: &str| format!("/v1/keys/{}{tail}", key.id);
    assert_eq!(app.patch(&path(""), json!({"name": "svc renamed"})).await.status, 200);
    let clone = app.post_empty(&path("/clone")).await;
    assert_eq!(clone.status, 201, "{}", clone.body);
    let clone_id = clone.str("id");
    let rolled = app.post_empty(&path("/roll")).await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(app.post(&path("/credits"), json!({"op": "increment", "value": 2})).await.status, 200);
    assert_eq!(app.patch(&path(""), json!({"credits": {"remaining": 9}})).await.status, 200);
    assert_eq!(app.post_empty(&path("/deactivate")).await.status, 200);
    assert_eq!(app.post_empty(&path("/activate")).await.status, 200);
    let imported = app.post("/v1/keys/import", json!({"name": "old", "key": "zta_live_0123456789abcdefghij"})).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let imported_id = imported.str("id");
    let r = as_owner(Method::POST, "/v1/keys".into(), Some(json!({"name": "kept", "recoverable": true}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let kept = r.str("id");
    assert_eq!(as_owner(Method::POST, format!("/v1/keys/{kept}/reveal"), None).await.status, 200);
    // A refused reveal is recorded as a failure.
    let dev = app.member_token("dev@example.com", "a long enough password").await;
    assert_eq!(app.call(Method::POST, &format!("/v1/keys/{kept}/reveal"), Some(&dev), None).await.status, 403);

    // Failed authentication: wrong secrets lock the rolled key (threshold
    // 2); an unknown key is counted per address.
    let victim = app.create_key(json!({"name": "victim"})).await;
    let wrong_secret = forged(&victim.secret);
    for _ in 0..2 {
        assert_eq!(app.verify_code(&wrong_secret).await, "INVALID_SECRET");
    }
    let gone = app.create_key(json!({"name": "gone"})).await;
    assert_eq!(app.post_empty(&format!("/v1/keys/{}/revoke", gone.id)).await.status, 200);
    assert!(app.delete(&format!("/v1/keys/{}", gone.id)).await.status.is_success());
    let unknown = app.verify(&gone.secret, json!({"ip": "203.0.113.7"})).await;
    assert_eq!(unknown["code"], "NOT_FOUND");
    // Member removal and sign-out.
    assert_eq!(as_owner(Method::DELETE, format!("/v1/members/{member_id}"), None).await.status, 204);
    // Failures are aggregated per minute: once the minute is over and the
    // counts are flushed, they are in the log.
    app.clock.advance(Duration::from_secs(61));
    eventually(|| async { entries(&app, &owner, "&action=key.auth_failed").await.len() >= 2 }).await;
    assert_eq!(as_owner(Method::POST, "/v1/auth/logout".into(), None).await.status, 204);

    let owner2 = app.member_token(OWNER_EMAIL, OWNER_PASSWORD).await;
    let all = entries(&app, &owner2, "").await;
    let admin = ("key", admin_id.as_str());
    let me = ("member", owner_id.as_str());
    let system = ("system", "");
    // (action, target id, actor, outcome)
    let table: Vec<(&str, &str, (&str, &str), &str)> = vec![
        ("member.sign_in_failed", &owner_id, me, "failure"),
        ("member.signed_in", &owner_id, me, "success"),
        ("settings.changed", &app.workspace_id, me, "success"),
        ("member.joined", &member_id, ("member", &member_id), "success"),
        ("member.changed", &member_id, me, "success"),
        ("role.created", &role_id, me, "success"),
        ("role.updated", &role_id, me, "success"),
        ("role.deleted", &role_id, me, "success"),
        ("key.created", &key.id, admin, "success"),
        ("key.updated", &key.id, admin, "success"),
        ("key.cloned", &clone_id, admin, "success"),
        ("key.rolled", &key.id, admin, "success"),
        ("key.credits_changed", &key.id, admin, "success"),
        ("key.deactivated", &key.id, admin, "success"),
        ("key.activated", &key.id, admin, "success"),
        ("key.imported", &imported_id, admin, "success"),
        ("key.created", &kept, me, "success"),
        ("key.revealed", &kept, me, "success"),
        ("key.locked", &victim.id, system, "success"),
        ("key.auth_failed", &victim.id, system, "failure"),
        ("key.auth_failed", "203.0.113.7", system, "failure"),
        ("key.revoked", &gone.id, admin, "success"),
        ("key.deleted", &gone.id, admin, "success"),
        ("member.removed", &member_id, me, "success"),
        ("member.signed_out", &owner_id, me, "success"),
    ];
    for (action, target, (actor_type, actor_id), outcome) in table {
        let e = find_with(&all, action, target, outcome);
        assert_eq!(e["actor"]["type"], actor_type, "{e}");
        if !actor_id.is_empty() {
            assert_eq!(e["actor"]["id"], actor_id, "{e}");
        }
        assert_eq!(e["outcome"], outcome, "{e}");
        assert_eq!(e["workspace"], app.workspace_id.as_str());
        assert!(e["hash"].as_str().unwrap().len() == 64 && e["prevHash"].as_str().unwrap().len() == 64);
    }
    // The invitation names the invited email; a refused reveal is a failure.
    assert!(all.iter().any(|e| e["action"] == "member.invited" && e["target"]["name"] == "dev@example.com"));
    let refused = all
        .iter()
        .find(|e| e["action"] == "key.revealed" && e["outcome"] == "failure")
        .expect("the refused reveal is recorded");
    assert_eq!(refused["changes"]["error"], "insufficient_permissions");
    // Edits say what changed; the failed attempts how many; no secret anywhere.
    let updated = find(&all.iter().rev().cloned().collect::<Vec<_>>(), "key.updated", &key.id).clone();
    assert_eq!(updated["changes"]["name"], json!({"from": "svc", "to": "svc renamed"}));
    let credits = find(&all, "key.updated", &key.id);
    assert_eq!(credits["changes"]["credits"]["to"]["remaining"], 9, "{credits}");
    assert_eq!(find(&all, "key.revealed", &kept)["target"]["name"], "kept");
    assert_eq!(all.iter().filter(|e| e["action"] == "key.locked").count(), 1);
    let failed = find_with(&all, "key.auth_failed", &victim.id, "failure");
    assert_eq!(failed["changes"]["attempts"], 2);
    assert_eq!(failed["changes"]["codes"]["INVALID_SECRET"], 2);
    let text = Value::from(all.clone()).to_string();
    let rolled_secret = rolled.str("secret");
    for secret in [key.secret.as_str(), &victim.secret, &wrong_secret, &rolled_secret, OWNER_PASSWORD] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
    // The IP and user agent of the caller are kept.
    let created = find(&all, "key.created", &key.id);
    assert_eq!(created["ip"], "127.0.0.1");
    // Sequence numbers run 1..=n without a gap, newest first.
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=all.len() as i64).rev().collect::<Vec<_>>());
    app.stop().await;
}

async fn queries_filter_page_and_refuse_bad_parameters() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_key(json!({"name": format!("k{i}")})).await;
    }
    let k = app.create_key(json!({"name": "target"})).await;
    app.post_empty(&format!("/v1/keys/{}/revoke", k.id)).await;
    let page = app.get("/v1/audit?limit=3").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["data"].as_array().unwrap().len(), 3);
    assert_eq!(page.body["data"][0]["action"], "key.revoked", "newest first");
    let next = page.body["nextCursor"].as_str().unwrap().to_owned();
    let rest = app.get(&format!("/v1/audit?limit=200&cursor={next}")).await;
    assert!(rest.body["nextCursor"].is_null());
    let by_target = app.get(&format!("/v1/audit?target={}&type=api_key&period=7d", k.id)).await;
    let actions: Vec<&str> =
        by_target.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["key.revoked", "key.created"]);
    let failures = app.get("/v1/audit?outcome=failure").await;
    assert!(failures.body["data"].as_array().unwrap().is_empty());
    let by_actor = app.get("/v1/audit?actor=system&action=key.created").await;
    let made = by_actor.body["data"].as_array().unwrap().len();
    assert_eq!(made, 3, "the bootstrap admin key, and the JavaScript and default REST keys");
    let later = app.in_secs(3600);
    let none = app.get(&format!("/v1/audit?from={}", later.replace('+', "%2B"))).await;
    assert!(none.body["data"].as_array().unwrap().is_empty(), "{}", none.body);
    for (query, names) in [
        ("type=car", "type"),
        ("action=key.exploded", "action"),
        ("outcome=maybe", "outcome"),
        ("period=7x", "period"),
        ("period=7%C3%A9", "period"),
        ("period=400d", "period"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=yesterday", "from"),
        ("cursor=abc", "cursor"),
        ("actor=%00", "actor"),
        ("target=a%0Ab", "target"),
        ("limit=500", "limit"),
    ] {
        let r = app.get(&format!("/v1/audit?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.error().contains(names), "{query}: {}", r.body);
    }
    let r = app.get("/v1/audit/export?format=xml").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("format"));
    // Reading the log needs audit:read.
    let reader = app.create_key(json!({"name": "reader", "scopes": ["keys:read"]})).await;
    assert_eq!(app.call(Method::GET, "/v1/audit", Some(&reader.secret), None).await.status, 403);
    assert_eq!(app.call(Method::GET, "/api/activity-log?type=api_key", Some(&reader.secret), None).await.status, 403);
    // The activity log of the seed's product: created, revoked, used.
    app.verify_code(&app.create_key(json!({"name": "used"})).await.secret).await;
    eventually(|| async {
        let log = app.get("/api/activity-log?type=api_key&period=7d").await;
        log.body["activities"].as_array().unwrap().iter().any(|a| a["event"] == "used")
    })
    .await;
    let log = app.get("/api/activity-log?type=api_key&period=7d").await;
    let events: Vec<&str> =
        log.body["activities"].as_array().unwrap().iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert!(events.contains(&"created") && events.contains(&"revoked"), "{events:?}");
    assert_eq!(app.get("/api/activity-log?type=member").await.status, 400);
    // The checkpoint key is public.
    let pk = app.call(Method::GET, "/v1/audit/public-key", None, None).await;
    assert_eq!((pk.body["algorithm"].as_str(), pk.str("publicKey").len()), (Some("Ed25519"), 64));
    app.stop().await;
}

async fn exports_parse_back_to_the_same_entries() {
    let app = spawn_app().await;
    for i in 0..4 {
        let name = if i == 0 { "=HYPERLINK(\"x\")".to_owned() } else { format!("quote \"{i}\", comma") };
        let k = app.create_key(json!({"name": name})).await;
        app.patch(&format!("/v1/keys/{}", k.id), json!({"description": "line\nbreak"})).await;
    }
    let listed = app.get("/v1/audit?limit=200").await.body["data"].as_array().unwrap().clone();
    let client = reqwest::Client::new();
    let get = |format: &str| {
        client.get(app.url(&format!("/v1/audit/export?format={format}"))).bearer_auth(&app.admin_key).send()
    };
    let jsonl = get("jsonl").await.unwrap();
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = jsonl.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, listed);
    let csv = get("csv").await.unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(text.contains("\"'=HYPERLINK(\"\"x\"\")\""), "a formula is neutralised: {text}");
    let rows: Vec<Vec<String>> = parse_csv(&text)
        .into_iter()
        .map(|r| r.into_iter().map(|f| f.strip_prefix('\'').map(str::to_owned).unwrap_or(f)).collect())
        .collect();
    assert_eq!(rows[0][0], "seq");
    assert_eq!(rows.len() - 1, listed.len());
    for (row, entry) in rows[1..].iter().zip(&listed) {
        assert_eq!(row[0], entry["seq"].to_string());
        assert_eq!(row[6], entry["action"].as_str().unwrap());
        assert_eq!(row[9], entry["target"]["name"].as_str().unwrap_or(""));
        assert_eq!(serde_json::from_str::<Value>(&row[13]).unwrap(), entry["changes"]);
        assert_eq!(row[15], entry["hash"].as_str().unwrap());
    }
    app.stop().await;
}

/// RFC 4180: quoted fields, doubled quotes, line breaks inside quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut quoted) = (Vec::new(), Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

const HASH_KEY: [u8; 32] = [42; 32];

/// Runs SQL on the database directly, from another process for SQLite
/// (Python's sqlite3), as someone with access to the file would.
async fn tamper(url: &str, statements: &[&str]) {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return keyward_store::testing::execute(url, statements).await;
    };
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=30)\nfor s in sys.argv[2:]:\n    c.execute(s)\nc.commit()\nc.close()";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(path).args(statements).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `keyward audit …` on the app's database: exit code, stdout (and
/// stderr after it).
fn audit_cli(app: &TestApp, args: &[&str]) -> (i32, String) {
    let key = HASH_KEY.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("audit")
        .args(args)
        .args(["--database-url", &app.url, "--hash-key", &key])
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

async fn audit_verify_names_edited_removed_inserted_and_truncated_entries() {
    let app = spawn_app_with_hash_key(&HASH_KEY, |_| {}).await;
    for i in 0..5 {
        app.create_key(json!({"name": format!("k{i}")})).await;
    }
    let ws = app.workspace_id.clone();
    let (code, out) = audit_cli(&app, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{ws}: 9 entries, chain intact")), "{out}");
    let (code, checkpoint) = audit_cli(&app, &["checkpoint", "--workspace", &ws]);
    assert_eq!(code, 0, "{checkpoint}");
    let checkpoint = checkpoint.split("\n\n").next().unwrap().trim().to_owned();
    let cp: Value = serde_json::from_str(&checkpoint).unwrap_or_else(|e| panic!("{e}: {checkpoint}"));
    assert_eq!(cp["seq"], 9, "four entries of the bootstrap, five keys");
    let dir = tempfile::tempdir().unwrap();
    let cp_file = dir.path().join("checkpoint.json");
    std::fs::write(&cp_file, &checkpoint).unwrap();
    let cp_path = cp_file.to_str().unwrap();
    assert_eq!(audit_cli(&app, &["verify", "--checkpoint", cp_path]).0, 0);
    // The database refuses edits to the log; someone with database access
    // turns that off first.
    let postgres = !app.url.starts_with("sqlite:");
    let unlock: &[&str] = if postgres {
        &["ALTER TABLE audit_log DISABLE TRIGGER USER"]
    } else {
        &["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"]
    };
    tamper(&app.url, unlock).await;
    let sql = |s: &str| s.replace("WS", &ws);

    // An edited field.
    tamper(&app.url, &[&sql("UPDATE audit_log SET actor_name = 'someone else' WHERE workspace_id = 'WS' AND seq = 3")])
        .await;
    let (code, out) = audit_cli(&app, &["verify", "--workspace", &ws]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 3: its fields do not match its hash (edited)"), "{out}");
    tamper(&app.url, &[&sql("UPDATE audit_log SET actor_name = (SELECT actor_name FROM audit_log WHERE workspace_id = 'WS' AND seq = 2) WHERE workspace_id = 'WS' AND seq = 3")]).await;
    assert_eq!(audit_cli(&app, &["verify"]).0, 0, "restored");

    // The newest entry removed, and the head moved back to cover it: only
    // the checkpoint kept elsewhere tells.
    tamper(&app.url, &[
        &sql("DELETE FROM audit_log WHERE workspace_id = 'WS' AND seq = 9"),
        &sql("UPDATE audit_heads SET seq = 8, hash = (SELECT hash FROM audit_log WHERE workspace_id = 'WS' AND seq = 8) WHERE workspace_id = 'WS'"),
    ]).await;
    assert_eq!(audit_cli(&app, &["verify"]).0, 0);
    let (code, out) = audit_cli(&app, &["verify", "--checkpoint", cp_path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entries after 8 were removed from the end"), "{out}");

    // An entry removed from the middle.
    tamper(&app.url, &[&sql("DELETE FROM audit_log WHERE workspace_id = 'WS' AND seq = 2")]).await;
    let (code, out) = audit_cli(&app, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 3: expected entry 2 here"), "{out}");

    // An entry inserted in its place (a copy of its neighbour, renumbered).
    tamper(
        &app.url,
        &[&sql(
            "INSERT INTO audit_log SELECT workspace_id, 2, at, actor_type, actor_id, actor_name, action, target_type, \
         target_id, target_name, ip, user_agent, outcome, changes, prev_hash, hash, mac FROM audit_log \
         WHERE workspace_id = 'WS' AND seq = 1",
        )],
    )
    .await;
    let (code, out) = audit_cli(&app, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 2: its fields do not match its hash (edited)"), "{out}");
    app.stop().await;
}

async fn usage_counts_match_the_verifications_made() {
    let app = spawn_app().await;
    let key = app.create_key(json!({"name": "counted", "scopes": ["read"]})).await;
    for _ in 0..4 {
        assert_eq!(app.verify_code(&key.secret).await, "VALID");
    }
    let refused = app.verify(&key.secret, json!({"permission": "keys:write"})).await;
    assert_eq!(refused["code"], "INSUFFICIENT_PERMISSIONS");
    // An hour later, two more.
    app.clock.advance(Duration::from_secs(3600));
    for _ in 0..2 {
        app.verify_code(&key.secret).await;
    }
    let path = format!("/v1/keys/{}/usage", key.id);
    eventually(|| async { app.get(&path).await.body["total"] == 6 }).await;
    let by_day = app.get(&path).await.body;
    assert_eq!(by_day["totals"], json!({"VALID": 6, "INSUFFICIENT_PERMISSIONS": 1}));
    assert_eq!(by_day["granularity"], "day");
    let hourly = app.get(&format!("{path}?granularity=hour&period=24h")).await.body;
    let per_hour: Vec<u64> = hourly["data"].as_array().unwrap().iter().map(|b| b["total"].as_u64().unwrap()).collect();
    assert_eq!(per_hour, [4, 2]);
    assert!(app.get(&format!("/v1/keys/{}", key.id)).await.body["lastUsed"].is_string());
    for bad in ["granularity=minute", "period=0d", "period=1000d", "period=x", "period=%E2%82%AC"] {
        let r = app.get(&format!("{path}?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    app.stop().await;
}

async fn the_hygiene_report_finds_each_kind_of_finding() {
    let app = spawn_app().await;
    let never = app.create_key(json!({"name": "never used", "scopes": ["read"]})).await;
    let old = app.create_key(json!({"name": "old", "scopes": ["read"]})).await;
    let full = app.create_key(json!({"name": "everything", "scopes": ["*"]})).await;
    let night = app.create_key(json!({"name": "night owl", "scopes": ["read"]})).await;
    let day = app.create_key(json!({"name": "day worker", "scopes": ["read"]})).await;
    // 100 days on, `old` was last used long ago and is due for rotation.
    app.verify_code(&old.secret).await;
    eventually(|| async { app.get(&format!("/v1/keys/{}", old.id)).await.body["lastUsed"].is_string() }).await;
    app.clock.advance(Duration::from_secs(100 * 86_400));
    // Busy hours for the workspace: many uses now (through the gateway, so
    // no caller key is used with them); one twelve hours later.
    for _ in 0..400 {
        assert_eq!(app.authorize(&day.secret).await.status(), 200);
    }
    app.clock.advance(Duration::from_secs(12 * 3600));
    assert_eq!(app.authorize(&night.secret).await.status(), 200);
    let expiring =
        app.create_key(json!({"name": "expiring", "scopes": ["read"], "expiresAt": app.in_secs(5 * 86_400)})).await;
    app.patch("/v1/workspace", json!({"lockout": {"threshold": 1}})).await;
    let locked = app.create_key(json!({"name": "locked", "scopes": ["read"]})).await;
    assert_eq!(app.verify_code(&forged(&locked.secret)).await, "INVALID_SECRET");
    let path = format!("/v1/keys/{}/usage", night.id);
    eventually(|| async { app.get(&path).await.body["total"] == 1 }).await;
    let report = app.get("/v1/insights/keys").await;
    assert_eq!(report.status, 200, "{}", report.body);
    let findings = report.body["findings"].as_array().unwrap();
    let has = |kind: &str, id: &str| findings.iter().any(|f| f["kind"] == kind && f["keyId"] == id);
    assert!(has("never_used", &never.id), "{}", report.body);
    assert!(has("unused", &old.id));
    assert!(has("rotation_due", &old.id));
    assert!(has("privileged", &full.id));
    assert!(has("no_expiry", &never.id));
    assert!(has("expiring_soon", &expiring.id));
    assert!(has("locked", &locked.id), "{}", report.body);
    assert!(has("unusual_hours", &night.id), "{}", report.body);
    assert!(!has("unusual_hours", &day.id));
    assert!(findings.iter().all(|f| !f["recommendation"].as_str().unwrap().is_empty()));
    assert!(!has("rotation_due", &expiring.id));
    app.stop().await;
}
