//! Leaked keys stop themselves: alerts signed by a test ECDSA P-256 key as
//! GitHub and GitLab sign them, under each leak policy; self-revoke by
//! possession; a member's report. And the time-driven notices (expiring,
//! expired, unused, credits low) on the manual clock.

use std::time::Duration;

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, spawn_app_with};
use crate::webhooks::Receiver;

backend_tests!(
    alerts_apply_each_policy_and_answer_feedback,
    badly_signed_or_malformed_alerts_change_nothing,
    whoever_holds_a_key_can_revoke_it,
    a_member_reports_a_leak,
    expiring_unused_and_low_credit_keys_are_noticed_once,
);

/// A code host's signing key, and the operator's keys file naming it.
struct CodeHost {
    key: SigningKey,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl CodeHost {
    fn new() -> Self {
        let key = SigningKey::from_slice(&keyward_core::ids::random_bytes::<32>()).unwrap();
        let pem = key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("leak-keys.json");
        let doc = json!({"public_keys": [
            {"key_identifier": "old-key", "key": pem, "is_current": false},
            {"key_identifier": "test-key", "key": pem, "is_current": true},
        ]});
        std::fs::write(&file, doc.to_string()).unwrap();
        CodeHost { key, _dir: dir, file }
    }

    fn sign(&self, body: &str) -> String {
        let sig: Signature = self.key.sign(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

async fn alert(app: &TestApp, host: &str, body: &str, key_id: &str, signature: &str) -> (u16, Value) {
    let prefix = if host == "github" { "Github" } else { "Gitlab" };
    let r = app
        .client
        .post(app.url(&format!("/v1/leaks/{host}")))
        .header("content-type", "application/json")
        .header(format!("{prefix}-Public-Key-Identifier"), key_id)
        .header(format!("{prefix}-Public-Key-Signature"), signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn spawn_with_host(host: &CodeHost) -> TestApp {
    let file = host.file.clone();
    spawn_app_with(move |c| {
        c.leak_public_keys = Some(file);
        c.webhook_urls.allow_hosts = vec!["127.0.0.1".into()];
        c.webhook_delivery.poll = Duration::from_millis(50);
        c.webhook_delivery.notice_interval = Duration::from_millis(50);
    })
    .await
}

async fn alerts_apply_each_policy_and_answer_feedback() {
    let host = CodeHost::new();
    let app = spawn_with_host(&host).await;
    let receiver = Receiver::start("alerts_apply_each_policy_and_answer_feedback").await;
    if let Some(receiver) = &receiver {
        let r = app.post("/v1/webhooks", json!({"url": receiver.url, "events": ["key.leaked"]})).await;
        receiver.secrets(&[&r.str("secret")]).await;
    }
    // revoke (the default)
    let key = app.create_key(json!({"name": "leaky"})).await;
    let mut bogus = key.secret.clone();
    bogus.replace_range(bogus.len() - 8..bogus.len() - 7, if bogus.ends_with('A') { "B" } else { "A" });
    let body = json!([
        {"token": key.secret, "type": "keyward_api_key", "url": "https://github.com/o/r/blob/main/x", "source": "content"},
        {"token": "kw_live_nothing", "type": "keyward_api_key", "url": null, "source": "content"},
        {"token": bogus, "type": "keyward_api_key", "url": null, "source": "content"},
    ])
    .to_string();
    let (status, feedback) = alert(&app, "github", &body, "test-key", &host.sign(&body)).await;
    assert_eq!(status, 200, "{feedback}");
    assert_eq!(
        feedback,
        json!([
            {"token_hash": sha256_hex(&key.secret), "token_type": "keyward_api_key", "label": "true_positive"},
            {"token_hash": sha256_hex("kw_live_nothing"), "token_type": "keyward_api_key", "label": "false_positive"},
            {"token_hash": sha256_hex(&bogus), "token_type": "keyward_api_key", "label": "false_positive"},
        ])
    );
    assert_eq!(app.verify_code(&key.secret).await, "REVOKED");
    let audit = app.get("/v1/audit?action=key.leaked").await.body;
    let entry = &audit["data"][0];
    assert_eq!(
        (entry["target"]["id"].as_str(), entry["changes"]["source"].as_str()),
        (Some(&*key.id), Some("github")),
        "{audit}"
    );
    assert!(!audit.to_string().contains(&key.secret), "the token is never recorded");

    // roll: the old secret stops at once, the new one is sealed for reveal.
    assert_eq!(app.patch("/v1/workspace", json!({"leakPolicy": "roll", "allowRecoverable": true})).await.status, 200);
    let kept = app.create_key(json!({"name": "kept", "recoverable": true})).await;
    let body = json!([{"token": kept.secret, "type": "keyward_api_key", "url": null, "source": "commit"}]).to_string();
    let (status, feedback) = alert(&app, "gitlab", &body, "old-key", &host.sign(&body)).await;
    assert_eq!((status, feedback[0]["label"].as_str()), (200, Some("true_positive")));
    assert_eq!(app.verify_code(&kept.secret).await, "INVALID_SECRET", "no grace for a leaked secret");
    let k = app.get(&format!("/v1/keys/{}", kept.id)).await.body;
    assert_eq!(k["state"], "active", "{k}");
    let owner = app.owner_token().await;
    let _ = app
        .call(Method::POST, "/v1/auth/reauth", Some(&owner), Some(json!({"password": crate::helpers::OWNER_PASSWORD})))
        .await;
    let r = app.call(Method::POST, &format!("/v1/keys/{}/reveal", kept.id), Some(&owner), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.str("secret");
    assert_ne!(fresh, kept.secret);
    assert_eq!(app.verify_code(&fresh).await, "VALID");

    // notify: nothing changes but the record and the event.
    assert_eq!(app.patch("/v1/workspace", json!({"leakPolicy": "notify"})).await.status, 200);
    let noted = app.create_key(json!({"name": "noted"})).await;
    let body = json!([{"token": noted.secret, "type": "keyward_api_key", "url": null, "source": "issue"}]).to_string();
    let (_, feedback) = alert(&app, "github", &body, "test-key", &host.sign(&body)).await;
    assert_eq!(feedback[0]["label"], "true_positive");
    assert_eq!(app.verify_code(&noted.secret).await, "VALID");
    assert_eq!(app.get("/v1/audit?action=key.leaked").await.body["data"].as_array().unwrap().len(), 3);

    if let Some(receiver) = receiver {
        let events = receiver.wait_for(3).await;
        let mut ids: Vec<&str> = events.iter().map(|e| e["body"]["data"]["id"].as_str().unwrap()).collect();
        ids.sort_unstable();
        let mut expected = [&*key.id, &*kept.id, &*noted.id];
        expected.sort_unstable();
        assert_eq!(ids, expected, "one key.leaked each (in any order: deliveries go out concurrently)");
        assert!(events.iter().all(|e| e["body"]["type"] == "key.leaked" && e["verifiedWith"] == json!([0])));
        assert!(!events.iter().any(|e| e.to_string().contains(&fresh)), "the rolled secret is never sent");
    }
}

async fn badly_signed_or_malformed_alerts_change_nothing() {
    let host = CodeHost::new();
    let app = spawn_with_host(&host).await;
    let key = app.create_key(json!({"name": "safe"})).await;
    let body = json!([{"token": key.secret, "type": "keyward_api_key", "url": null, "source": "content"}]).to_string();
    let other = CodeHost::new();
    let tampered = body.replace("content", "commit");
    for (key_id, signature, what) in [
        ("test-key", other.sign(&body), "signed by another key"),
        ("nobody", host.sign(&body), "an unknown key identifier"),
        ("test-key", host.sign(&tampered), "a signature of another body"),
        ("test-key", "bm90IGEgc2lnbmF0dXJl".to_owned(), "not DER"),
        ("test-key", "%%%".to_owned(), "not base64"),
    ] {
        let (status, r) = alert(&app, "github", &body, key_id, &signature).await;
        assert_eq!((status, r["code"].as_str()), (401, Some("invalid_leak_signature")), "{what}: {r}");
        assert!(!r.to_string().contains(&key.secret));
    }
    let r = app.client.post(app.url("/v1/leaks/gitlab")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401, "unsigned");
    for malformed in ["{}", "[{\"token\": 1}]", "not json"] {
        let (status, r) = alert(&app, "github", malformed, "test-key", &host.sign(malformed)).await;
        assert_eq!(status, 400, "{malformed}: {r}");
    }
    assert_eq!(app.verify_code(&key.secret).await, "VALID");
    assert_eq!(app.get("/v1/audit?action=key.leaked").await.body["data"], json!([]));

    // Without a keys file, every alert is refused.
    let bare = spawn_app_with(|_| {}).await;
    let (status, r) = alert(&bare, "github", &body, "test-key", &host.sign(&body)).await;
    assert_eq!((status, r["code"].as_str()), (401, Some("invalid_leak_signature")));
}

async fn whoever_holds_a_key_can_revoke_it() {
    let app = spawn_app_with(|_| {}).await;
    // A key that may do nothing at all can still stop itself.
    let key = app.create_key(json!({"name": "mine", "scopes": ["read"]})).await;
    let revoke = |token: String| {
        let app = &app;
        async move {
            let r = app.client.post(app.url("/v1/keys/self-revoke")).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = revoke(key.secret.clone()).await;
    assert_eq!((status, &body), (200, &json!({"revoked": true})));
    assert_eq!(app.verify_code(&key.secret).await, "REVOKED");
    let entry = &app.get("/v1/audit?action=key.leaked").await.body["data"][0];
    assert_eq!(entry["changes"]["source"], "self");
    // Revoked already, unknown, or not a key at all: 404 alike.
    let (s1, b1) = revoke(key.secret.clone()).await;
    let (s2, b2) = revoke("kw_live_0000000000000000_00000000000000000000000000000000000000".into()).await;
    let (s3, b3) = revoke("garbage".into()).await;
    assert_eq!((s1, s2, s3), (404, 404, 404));
    assert_eq!((&b1, &b1), (&b2, &b3), "no hint which");
    let r = app.client.post(app.url("/v1/keys/self-revoke")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

async fn a_member_reports_a_leak() {
    let app = spawn_app_with(|_| {}).await;
    let key = app.create_key(json!({"name": "reported"})).await;
    let reader = app.create_key(json!({"name": "reader", "scopes": ["read"]})).await;
    let path = format!("/v1/keys/{}/leaked", key.id);
    let r = app.call(Method::POST, &path, Some(&reader.secret), None).await;
    assert_eq!(r.status, 403, "keys:manage is needed");
    assert_eq!(app.verify_code(&key.secret).await, "VALID");
    let r = app.post_empty(&path).await;
    assert_eq!(
        (r.status.as_u16(), r.body["action"].as_str(), r.body["key"]["state"].as_str()),
        (200, Some("revoked"), Some("revoked")),
        "{}",
        r.body
    );
    let (_, other) = app.other_workspace().await;
    let r = app.call(Method::POST, &path, Some(&other), None).await;
    assert_eq!(r.status, 404);
    let r = app.patch("/v1/workspace", json!({"leakPolicy": "explode"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_leak_policy"));
    let r = app.patch("/v1/workspace", json!({"expiryNoticeDays": [0]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_notices"));
    let ws = app.get("/v1/workspace").await.body;
    assert_eq!(
        (&ws["leakPolicy"], &ws["expiryNoticeDays"], &ws["creditsLowThreshold"], &ws["unusedDays"]),
        (&json!("revoke"), &json!([14, 1]), &json!(10), &json!(90))
    );
}

async fn expiring_unused_and_low_credit_keys_are_noticed_once() {
    let host = CodeHost::new();
    let app = spawn_with_host(&host).await;
    let Some(receiver) = Receiver::start("expiring_unused_and_low_credit_keys_are_noticed_once").await else { return };
    let r = app.post("/v1/webhooks", json!({"url": receiver.url, "events": ["key.*", "pgp_key.expiring"]})).await;
    receiver.secrets(&[&r.str("secret")]).await;
    let r = app
        .patch("/v1/workspace", json!({"expiryNoticeDays": [14, 1], "unusedDays": 30, "creditsLowThreshold": 2}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let expiring = app.create_key(json!({"name": "expiring", "expiresAt": app.in_secs(20 * 86_400)})).await;
    // Skip the key.created events: the notices follow.
    let created = receiver.wait_for(1).await.len();
    assert_eq!(created, 1);
    // A PGP key expiring in 10 days: within the 14-day notice at once.
    let gpg = crate::gnupg::Gpg::new("expiring_unused_and_low_credit_keys_are_noticed_once");
    if let Some(gpg) = &gpg {
        let fpr = gpg.generate("Brief <b@z.example>", crate::gnupg::Kind::Ed25519, "", "10d");
        let body = json!({"name": "brief", "type": "pgp", "contents": gpg.export_public(&[&fpr]), "private": false});
        assert_eq!(app.post("/v1/pgp-keys", body).await.status, 201);
        let events = receiver.wait_for(2).await;
        assert_eq!(
            (events[1]["body"]["type"].as_str(), events[1]["body"]["data"]["daysBefore"].as_i64()),
            (Some("pgp_key.expiring"), Some(14))
        );
        assert_eq!(events[1]["body"]["data"]["name"], "brief");
    }
    let metered = app.create_key(json!({"name": "metered", "credits": {"remaining": 4}})).await;
    // Deliveries before the notices: two key.created, the PGP key's notice.
    let offset = usize::from(gpg.is_some()) + 2;

    // Credits: 4 → 3 → 2 crosses the threshold (once), → 1 does not again.
    for _ in 0..3 {
        assert_eq!(app.verify_code(&metered.secret).await, "VALID");
    }
    // Deliveries go out concurrently: found by type, not by position.
    let of_type =
        |events: &[Value], t: &str| events.iter().filter(|e| e["body"]["type"] == t).cloned().collect::<Vec<_>>();
    let events = receiver.wait_for(offset + 1).await;
    let low = &of_type(&events, "key.credits_low")[0];
    assert_eq!(
        (low["body"]["data"]["id"].as_str(), low["body"]["data"]["remaining"].as_i64()),
        (Some(&*metered.id), Some(2))
    );

    // 7 days on: 14 days before expiry.
    app.clock.advance(Duration::from_secs(7 * 86_400));
    let events = receiver.wait_for(offset + 2).await;
    let soon = &of_type(&events, "key.expiring")[0];
    assert_eq!(
        (soon["body"]["type"].as_str(), soon["body"]["data"]["daysBefore"].as_i64()),
        (Some("key.expiring"), Some(14))
    );
    assert_eq!(soon["body"]["data"]["id"], expiring.id.as_str());
    // 12 more: 1 day before (the PGP key expired meanwhile: a notice
    // jumped over is not sent late); then expired.
    app.clock.advance(Duration::from_secs(12 * 86_400 + 3600));
    let events = receiver.wait_for(offset + 3).await;
    let last_day: Vec<&str> = events
        .iter()
        .filter(|e| e["body"]["data"]["daysBefore"] == 1)
        .map(|e| e["body"]["type"].as_str().unwrap())
        .collect();
    assert!(last_day.contains(&"key.expiring"), "{events:?}");
    app.clock.advance(Duration::from_secs(86_400));
    let events = receiver.wait_for(offset + 4).await;
    let types: Vec<&str> = events.iter().map(|e| e["body"]["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"key.expired"), "{types:?}");
    // 30 days without a use: every active key is unused (each once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = receiver.events().await.len();
    app.clock.advance(Duration::from_secs(11 * 86_400));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = receiver.events().await;
    let unused: Vec<&Value> = events[before..].iter().filter(|e| e["body"]["type"] == "key.unused").collect();
    assert_eq!(
        unused.iter().filter(|e| e["body"]["data"]["id"] == metered.id.as_str()).count(),
        1,
        "the metered key, unused for 30 days: {events:?}"
    );
    assert_eq!(unused[0]["body"]["data"]["unusedDays"], 30);
    // Each notice once, however many passes ran.
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let d = &e["body"]["data"];
        assert!(
            seen.insert((e["body"]["type"].to_string(), d["id"].to_string(), d["daysBefore"].to_string())),
            "twice: {e}"
        );
    }
}
