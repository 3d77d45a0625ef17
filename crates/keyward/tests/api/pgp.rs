//! PGP keys for file encryption, checked against real GnuPG: keys GnuPG
//! makes upload and show the fingerprint it reports; what keyward encrypts
//! GnuPG decrypts and the other way round; every bad upload is refused and
//! stores nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::gnupg::{Gpg, Kind};
use crate::helpers::{Resp, TestApp, spawn_app};

backend_tests!(
    gnupg_keys_upload_and_show_what_gnupg_reports,
    files_cross_between_keyward_and_gnupg_both_ways,
    bad_uploads_are_refused_and_store_nothing,
    encrypt_and_decrypt_refuse_what_they_cannot_do,
    a_refusal_reaches_a_client_still_sending_its_file,
    keys_are_edited_deleted_and_every_use_is_audited,
);

const PASS: &str = "tr0ub4dor&3";

async fn upload(app: &TestApp, body: Value) -> Resp {
    app.post("/v1/pgp-keys", body).await
}

fn public_body(name: &str, contents: &str) -> Value {
    json!({"name": name, "description": "for tests", "type": "pgp", "contents": contents, "private": false})
}

fn private_body(name: &str, contents: &str, passphrase: &str) -> Value {
    json!({"name": name, "type": "pgp", "contents": contents, "private": true, "passphrase": passphrase})
}

/// A raw request with the admin key: status and body bytes.
async fn stream(app: &TestApp, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(status < 500, "server error {status}");
    (status, r.bytes().await.unwrap().to_vec())
}

fn code_of(body: &[u8]) -> String {
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("JSON error: {}", String::from_utf8_lossy(body)));
    v["code"].as_str().unwrap_or_default().to_owned()
}

async fn gnupg_keys_upload_and_show_what_gnupg_reports() {
    let Some(gpg) = Gpg::new("gnupg_keys_upload_and_show_what_gnupg_reports") else { return };
    let app = spawn_app().await;
    let rsa = gpg.generate("RSA Partner <rsa@partner.example>", Kind::Rsa3072, "", "never");
    let ed = gpg.generate("Ed Partner <ed@partner.example>", Kind::Ed25519, PASS, "never");

    let r = upload(&app, public_body("rsa public", &gpg.export_public(&[&rsa]))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.str("fingerprint"), rsa);
    assert_eq!(r.str("keyId"), rsa[24..]);
    assert_eq!(r.str("algorithm"), "RSA 3072");
    assert_eq!(r.body["userIds"], json!(["RSA Partner <rsa@partner.example>"]));
    assert_eq!((r.body["private"].clone(), r.body["hasPassphrase"].clone()), (json!(false), json!(false)));
    assert_eq!((r.body["expiresAt"].clone(), r.body["expired"].clone()), (Value::Null, json!(false)));
    assert_eq!((r.str("type"), r.str("description")), ("pgp".to_owned(), "for tests".to_owned()));
    assert!(r.str("id").starts_with("pgp_"));
    let rsa_public_id = r.str("id");

    let r = upload(&app, private_body("rsa private", &gpg.export_secret(&rsa, ""), "")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.str("fingerprint"), r.body["private"].clone(), r.body["hasPassphrase"].clone()),
        (rsa.clone(), json!(true), json!(false))
    );

    let secret = gpg.export_secret(&ed, PASS);
    let r = upload(&app, private_body("ed private", &secret, PASS)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.str("fingerprint"), ed);
    assert_eq!(r.str("algorithm"), "EdDSA Ed25519 + ECDH Curve25519");
    assert_eq!((r.body["private"].clone(), r.body["hasPassphrase"].clone()), (json!(true), json!(true)));
    let ed_id = r.str("id");

    // The binary form, base64-encoded, is accepted as well.
    let r = upload(&app, public_body("ed public (binary)", &gpg.export_public_base64(&ed))).await;
    assert_eq!((r.status.as_u16(), r.str("fingerprint")), (201, ed.clone()), "{}", r.body);

    // Listed by name; no answer carries the private key or its passphrase.
    let list = app.get("/v1/pgp-keys").await;
    let names: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ed private", "ed public (binary)", "rsa private", "rsa public"]);
    let got = app.get(&format!("/v1/pgp-keys/{ed_id}")).await;
    assert_eq!((got.status.as_u16(), got.str("fingerprint")), (200, ed.clone()));
    for text in [list.body.to_string(), got.body.to_string()] {
        assert!(!text.contains("PRIVATE KEY") && !text.contains(PASS), "{text}");
    }

    // The public part (of a private upload too) imports into GnuPG as the same key.
    for id in [&ed_id, &rsa_public_id] {
        let r = app
            .client
            .get(app.url(&format!("/v1/pgp-keys/{id}/public")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/pgp-keys");
        let armored = r.text().await.unwrap();
        assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") && !armored.contains("PRIVATE"));
        let other = Gpg::new("import").unwrap();
        other.import(&armored);
        let expected = if id == &ed_id { &ed } else { &rsa };
        assert_eq!(&other.fingerprint(expected), expected);
    }
    app.stop().await;
}

async fn files_cross_between_keyward_and_gnupg_both_ways() {
    let Some(gpg) = Gpg::new("files_cross_between_keyward_and_gnupg_both_ways") else { return };
    let app = spawn_app().await;
    let file: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (uid, kind, pass) in [("Ed <ed@x.example>", Kind::Ed25519, PASS), ("RSA <rsa@x.example>", Kind::Rsa3072, "")] {
        let fpr = gpg.generate(uid, kind, pass, "never");
        let r = upload(&app, private_body(uid, &gpg.export_secret(&fpr, pass), pass)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.str("id");
        // keyward encrypts (binary and armored); GnuPG decrypts.
        let (status, sealed) = stream(&app, &format!("/v1/pgp-keys/{id}/encrypt"), file.clone()).await;
        assert_eq!(status, 200);
        assert!(gpg.decrypt(pass, &sealed) == file, "{kind:?}: gpg decrypts what keyward encrypted");
        let (status, armored) = stream(&app, &format!("/v1/pgp-keys/{id}/encrypt?armor=true"), file.clone()).await;
        assert_eq!(status, 200);
        assert!(armored.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        assert!(gpg.decrypt(pass, &armored) == file, "{kind:?}: armored too");
        // GnuPG encrypts; keyward decrypts (binary, and its own armored output).
        let (status, plain) = stream(&app, &format!("/v1/pgp-keys/{id}/decrypt"), gpg.encrypt(&fpr, &file)).await;
        assert_eq!(status, 200);
        assert!(plain == file, "{kind:?}: keyward decrypts what gpg encrypted");
        let (status, plain) = stream(&app, &format!("/v1/pgp-keys/{id}/decrypt"), armored).await;
        assert!(status == 200 && plain == file);
        // An empty file round-trips too.
        let (_, sealed) = stream(&app, &format!("/v1/pgp-keys/{id}/encrypt"), Vec::new()).await;
        assert!(gpg.decrypt(pass, &sealed).is_empty());
    }
    app.stop().await;
}

/// The key with its primary key packet overwritten (its first base64 line).
fn damaged(armored: &str) -> String {
    let mut lines: Vec<String> = armored.lines().map(str::to_owned).collect();
    let body = lines.iter().position(String::is_empty).expect("armor headers end with a blank line") + 1;
    lines[body].replace_range(8..40, &"B".repeat(32));
    lines.join("\n")
}

async fn bad_uploads_are_refused_and_store_nothing() {
    let Some(gpg) = Gpg::new("bad_uploads_are_refused_and_store_nothing") else { return };
    let app = spawn_app().await;
    let ed = gpg.generate("Ed <ed@y.example>", Kind::Ed25519, PASS, "never");
    let rsa = gpg.generate("RSA <rsa@y.example>", Kind::Rsa3072, "", "never");
    let sign_only = gpg.generate("Signer <sign@y.example>", Kind::SignOnly, "", "never");
    let ed_public = gpg.export_public(&[&ed]);
    let ed_secret = gpg.export_secret(&ed, PASS);
    let cases = [
        (public_body("a", "not a key at all"), "invalid_contents"),
        (public_body("a", &damaged(&ed_public)), "invalid_contents"),
        (public_body("a", &gpg.export_public(&[&ed, &rsa])), "several_keys"),
        (public_body("a", &format!("{ed_public}\n{}", gpg.export_public(&[&rsa]))), "several_keys"),
        (json!({"name": "a", "type": "pgp", "contents": ed_public, "private": true}), "private_mismatch"),
        (json!({"name": "a", "type": "pgp", "contents": ed_secret, "private": false}), "private_mismatch"),
        (json!({"name": "a", "type": "pgp", "contents": ed_secret, "private": true}), "passphrase_required"),
        (private_body("a", &ed_secret, "not the passphrase"), "invalid_passphrase"),
        (public_body("a", &gpg.export_public(&[&sign_only])), "no_encryption_key"),
        (json!({"name": "a", "type": "x509", "contents": ed_public}), "invalid_type"),
        (public_body("", &ed_public), "invalid_name"),
    ];
    for (body, code) in cases {
        let r = upload(&app, body).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, code), "{}", r.body);
        assert!(!r.body.to_string().contains("not the passphrase") && !r.body.to_string().contains("BEGIN PGP"));
    }
    // Over the body limit: 413.
    let huge = public_body("a", &"A".repeat(70 * 1024));
    let r = upload(&app, huge).await;
    assert_eq!((r.status.as_u16(), r.code()), (413, "payload_too_large"), "{}", r.body);
    assert_eq!(app.get("/v1/pgp-keys").await.body["data"], json!([]), "nothing was stored");
    // Names are unique in the workspace.
    assert_eq!(upload(&app, public_body("partner", &ed_public)).await.status, 201);
    let r = upload(&app, public_body("partner", &gpg.export_public(&[&rsa]))).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_name"));
    assert_eq!(app.get("/v1/pgp-keys").await.body["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn encrypt_and_decrypt_refuse_what_they_cannot_do() {
    let Some(gpg) = Gpg::new("encrypt_and_decrypt_refuse_what_they_cannot_do") else { return };
    let app = spawn_app().await;
    let ed = gpg.generate("Ed <ed@z.example>", Kind::Ed25519, "", "never");
    let other = gpg.generate("Other <o@z.example>", Kind::Ed25519, "", "never");
    let soon = gpg.generate("Brief <b@z.example>", Kind::Ed25519, "", "1d");
    let public_id = upload(&app, public_body("public only", &gpg.export_public(&[&ed]))).await.str("id");
    let private_id = upload(&app, private_body("private", &gpg.export_secret(&ed, ""), "")).await.str("id");
    let soon_id = upload(&app, public_body("brief", &gpg.export_public(&[&soon]))).await.str("id");

    // Decrypting needs the private part, and an OpenPGP message to this key.
    let (status, body) = stream(&app, &format!("/v1/pgp-keys/{public_id}/decrypt"), gpg.encrypt(&ed, b"x")).await;
    assert_eq!((status, code_of(&body)), (400, "no_private_key".to_owned()));
    let (status, body) = stream(&app, &format!("/v1/pgp-keys/{private_id}/decrypt"), b"just some bytes".to_vec()).await;
    assert_eq!((status, code_of(&body)), (400, "not_openpgp".to_owned()));
    let (status, body) = stream(&app, &format!("/v1/pgp-keys/{private_id}/decrypt"), gpg.encrypt(&other, b"x")).await;
    assert_eq!((status, code_of(&body)), (400, "wrong_key".to_owned()));
    let (status, body) = stream(&app, "/v1/pgp-keys/pgp_missing/encrypt", b"x".to_vec()).await;
    assert_eq!((status, code_of(&body)), (404, "pgp_key_not_found".to_owned()));
    let (status, body) = stream(&app, &format!("/v1/pgp-keys/{public_id}/encrypt?armour=1"), b"x".to_vec()).await;
    assert_eq!((status, code_of(&body)), (400, "unknown_query_parameter".to_owned()));

    // A key that has expired is flagged and no longer encrypts (the
    // server's clock moves; nobody waits).
    assert_eq!(stream(&app, &format!("/v1/pgp-keys/{soon_id}/encrypt"), b"x".to_vec()).await.0, 200);
    app.clock.advance(std::time::Duration::from_secs(2 * 86_400));
    let got = app.get(&format!("/v1/pgp-keys/{soon_id}")).await;
    assert_eq!(got.body["expired"], json!(true));
    assert!(got.body["expiresAt"].is_string());
    let (status, body) = stream(&app, &format!("/v1/pgp-keys/{soon_id}/encrypt"), b"x".to_vec()).await;
    assert_eq!((status, code_of(&body)), (400, "key_expired".to_owned()));

    // Permissions: pgp:read lists, pgp:use encrypts, pgp:manage uploads.
    app.post("/v1/roles", json!({"name": "pgp-reader", "permissions": ["pgp:read"]})).await;
    app.post("/v1/roles", json!({"name": "pgp-user", "permissions": ["pgp:read", "pgp:use"]})).await;
    let reader = app.create_key(json!({"name": "reader", "roles": ["pgp-reader"]})).await;
    let user = app.create_key(json!({"name": "user", "roles": ["pgp-user"]})).await;
    assert_eq!(app.call(Method::GET, "/v1/pgp-keys", Some(&reader.secret), None).await.status, 200);
    let encrypt = |secret: String| {
        let url = app.url(&format!("/v1/pgp-keys/{public_id}/encrypt"));
        let client = app.client.clone();
        async move { client.post(url).bearer_auth(secret).body("x").send().await.unwrap().status().as_u16() }
    };
    assert_eq!(encrypt(reader.secret.clone()).await, 403);
    assert_eq!(encrypt(user.secret.clone()).await, 200);
    let r = app.call(Method::POST, "/v1/pgp-keys", Some(&user.secret), Some(public_body("z", "x"))).await;
    assert_eq!(r.status, 403);
    let r = app.call(Method::DELETE, &format!("/v1/pgp-keys/{public_id}"), Some(&user.secret), None).await;
    assert_eq!(r.status, 403);
    app.stop().await;
}

/// A refusal answered before the upload was read whole reaches a client
/// still sending it (the server reads the rest and throws it away rather
/// than resetting the connection), for a body of known length and a
/// chunked one, and the connection serves the next request.
async fn a_refusal_reaches_a_client_still_sending_its_file() {
    let Some(gpg) = Gpg::new("a_refusal_reaches_a_client_still_sending_its_file") else { return };
    let app = spawn_app().await;
    let ed = gpg.generate("Ed <ed@l.example>", Kind::Ed25519, "", "never");
    let public_id = upload(&app, public_body("public only", &gpg.export_public(&[&ed]))).await.str("id");
    let private_id = upload(&app, private_body("private", &gpg.export_secret(&ed, ""), "")).await.str("id");
    // 8 MiB: more than loopback's socket buffers take at once.
    const SIZE: usize = 8 << 20;
    let cases = [
        (format!("/v1/pgp-keys/{public_id}/decrypt"), app.admin_key.clone(), 400, "no_private_key"),
        (format!("/v1/pgp-keys/{private_id}/decrypt"), app.admin_key.clone(), 400, "not_openpgp"),
        ("/v1/pgp-keys/pgp_missing/encrypt".to_owned(), app.admin_key.clone(), 404, "pgp_key_not_found"),
        (format!("/v1/pgp-keys/{public_id}/encrypt"), "kw_not_a_key".to_owned(), 401, "invalid_api_key"),
        (format!("/v1/pgp-keys/{public_id}/encrypt?armour=1"), app.admin_key.clone(), 400, "unknown_query_parameter"),
        ("/v1/keys".to_owned(), app.admin_key.clone(), 413, "payload_too_large"),
    ];
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![b'x'; SIZE]).unwrap();
    for sent in ["whole", "chunked", "from a file"] {
        for (path, secret, status, code) in &cases {
            let body = match sent {
                "whole" => reqwest::Body::from(vec![b'x'; SIZE]),
                "chunked" => {
                    let parts = (0..SIZE / 65_536).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 65_536]));
                    reqwest::Body::wrap_stream(futures_util::stream::iter(parts))
                }
                // As `keyward pgp encrypt --in` sends it.
                _ => {
                    let file = tokio::fs::File::open(file.path()).await.unwrap();
                    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024))
                }
            };
            let r = app.client.post(app.url(path)).bearer_auth(secret).body(body).send().await;
            let r = r.unwrap_or_else(|e| panic!("{path} (sent {sent}): no answer: {e}"));
            let got = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            assert_eq!((got, code_of(&body)), (*status, (*code).to_owned()), "{path} (sent {sent})");
        }
    }
    assert_eq!(app.get("/v1/pgp-keys").await.body["data"].as_array().unwrap().len(), 2);
    app.stop().await;
}

async fn keys_are_edited_deleted_and_every_use_is_audited() {
    let Some(gpg) = Gpg::new("keys_are_edited_deleted_and_every_use_is_audited") else { return };
    let app = spawn_app().await;
    let ed = gpg.generate("Ed <ed@w.example>", Kind::Ed25519, PASS, "never");
    let id = upload(&app, private_body("drop", &gpg.export_secret(&ed, PASS), PASS)).await.str("id");
    upload(&app, public_body("other", &gpg.export_public(&[&ed]))).await;

    let r = app.patch(&format!("/v1/pgp-keys/{id}"), json!({"name": "partner drop", "description": "SFTP"})).await;
    assert_eq!((r.status.as_u16(), r.str("name"), r.str("description")), (200, "partner drop".into(), "SFTP".into()));
    assert_eq!(r.str("fingerprint"), ed);
    let r = app.patch(&format!("/v1/pgp-keys/{id}"), json!({"name": "other"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "duplicate_name"));
    let r = app.patch(&format!("/v1/pgp-keys/{id}"), json!({"contents": "x"})).await;
    assert_eq!(r.status, 400, "the key itself cannot change");
    let r = app.patch(&format!("/v1/pgp-keys/{id}"), json!({"description": null})).await;
    assert_eq!(r.body["description"], Value::Null);

    let (_, sealed) = stream(&app, &format!("/v1/pgp-keys/{id}/encrypt"), b"audited".to_vec()).await;
    let (status, plain) = stream(&app, &format!("/v1/pgp-keys/{id}/decrypt"), sealed).await;
    assert_eq!((status, plain.as_slice()), (200, &b"audited"[..]));

    assert_eq!(app.delete(&format!("/v1/pgp-keys/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/pgp-keys/{id}")).await.status, 404);
    assert_eq!(app.delete(&format!("/v1/pgp-keys/{id}")).await.status, 404);
    assert_eq!(stream(&app, &format!("/v1/pgp-keys/{id}/decrypt"), b"x".to_vec()).await.0, 404);

    let log = app.get("/v1/audit?limit=200").await;
    let entries = log.body["data"].as_array().unwrap();
    let of_key: Vec<&str> =
        entries.iter().filter(|e| e["target"]["id"] == json!(id)).map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        of_key,
        [
            "pgp_key.deleted",
            "pgp_key.decrypted",
            "pgp_key.encrypted",
            "pgp_key.updated",
            "pgp_key.updated",
            "pgp_key.uploaded"
        ],
        "newest first"
    );
    let text = log.body.to_string();
    assert!(!text.contains(PASS) && !text.contains("PRIVATE KEY"), "no secret in the audit log");
    app.stop().await;
}
