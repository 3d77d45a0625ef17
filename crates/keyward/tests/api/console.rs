//! The console in a real headless Chromium, walked as a person would: by
//! the names of its links, buttons and fields. Every page is checked for
//! console errors, requests off the server and accessibility violations,
//! and photographed into `target/console-screenshots/`. Plain-HTTP tests
//! cover what a browser would hide (CSP, refused forms, redirects).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::browser::{Browser, available};
use crate::helpers::{OWNER_EMAIL, OWNER_PASSWORD, TestApp, backend, spawn_app};

backend_tests!(
    console_keys_walk_in_chromium,
    console_show_hide_and_disabled_keys_in_chromium,
    console_people_settings_and_audit_in_chromium,
    console_viewer_and_narrow_window_in_chromium,
    console_pages_are_locked_down,
    console_lists_page_filter_and_switch_workspace,
    console_forms_refuse_bad_input_and_change_nothing,
    console_oauth_clients_and_tokens_in_chromium,
    console_pgp_keys_in_chromium,
    console_new_secret_is_shown_once_after_a_redirect,
    console_integrations_in_chromium,
    console_webhooks_and_leaks_in_chromium,
);

fn test_name(name: &str) -> String {
    format!("{:?}::{name}", backend()).to_lowercase()
}

async fn browser(app: &TestApp, name: &str) -> Option<Browser> {
    let name = test_name(name);
    available(&name).then_some(())?;
    Some(Browser::start(&app.url(""), &name, 1280, 900).await)
}

async fn sign_in(b: &mut Browser, email: &str, password: &str) {
    b.fill("Email", email).await;
    b.fill("Password", password).await;
    b.go("button", "Sign in").await;
}

/// Sign in; create a key in the panel; copy its one-time secret, which
/// then verifies; clone, deactivate and delete through the row menu; edit
/// and look at the key's page; legacy keys offer no Edit or Delete.
async fn console_keys_walk_in_chromium() {
    let app = spawn_app().await;
    let Some(mut b) = browser(&app, "console_keys_walk").await else { return };
    b.open("/").await;
    assert_eq!(b.path().await, "/sign-in");
    b.check_page("sign-in").await;
    // A wrong password: the message beside the field, still accessible.
    sign_in(&mut b, OWNER_EMAIL, "not the password").await;
    assert!(b.text().await.contains("incorrect"), "{}", b.text().await);
    b.refused(401).await;
    b.check_page("sign-in-refused").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    assert_eq!(b.path().await, "/keys");
    b.check_page("keys").await;

    // Create New Key: the side panel.
    b.go("button", "Create New Key").await;
    b.find("field", "Name").await;
    b.check_page("create-panel").await;
    assert_eq!(hidden_under_the_actions(&b).await, Vec::<String>::new(), "nothing hides under Generate");
    b.fill("Name", "Reporting").await;
    b.fill("Description", "Nightly exports").await;
    b.fill("Jump to", "Access tiers").await;
    let read = b.client.find(fantoccini::Locator::Css("input[name=permission][value=read]")).await.unwrap();
    read.click().await.unwrap();
    b.fill("Sites and resources", "site_abc123").await;
    b.fill("Default email", "ops@example.com").await;
    b.fill("Time zone", "Europe/Paris").await;
    b.fill("Identity", "acme").await;
    b.fill("Credits", "100").await;
    b.go("button", "Generate").await;
    let secret = b.new_secret().await;
    assert!(secret.starts_with("kw_live_"), "{secret}");
    assert!(b.text().await.contains("will not be shown again"));
    b.check_page("key-created").await;
    b.click("button", "Copy").await;
    b.find("button", "Copied").await;
    assert_eq!(b.clipboard().await, secret, "Copy puts the secret on the clipboard");

    // The secret works through the API, with what the form gave it.
    let v = app.verify(&secret, json!({"permission": "campaigns:read", "resource": "site_abc123"})).await;
    assert_eq!(v["code"], "VALID", "{v}");
    assert_eq!(v["meta"]["email"], "ops@example.com", "{v}");
    assert_eq!(v["identity"]["externalId"], "acme", "{v}");
    let denied = app.verify(&secret, json!({"permission": "campaigns:write"})).await;
    assert_eq!(denied["code"], "INSUFFICIENT_PERMISSIONS");

    // The page came after a redirect: a reload posts nothing and shows the
    // secret no more.
    assert!(b.path().await.ends_with("/secret"), "{}", b.path().await);
    let keys = app.key_count().await;
    b.client.refresh().await.unwrap();
    b.refused(410).await;
    assert!(b.text().await.contains("Secret no longer shown"), "{}", b.text().await);
    assert!(!b.text().await.contains(&secret));
    assert_eq!(app.key_count().await, keys);

    b.open("/keys").await;
    assert_eq!(keys_wrapped(&b).await, Vec::<String>::new(), "no key wraps");
    let row = b.row_text("Reporting").await;
    assert!(row.contains("Active") && row.contains("read"), "{row}");
    assert!(!row.contains(&secret), "the list shows the key masked");

    // Clone: a new key and its one-time secret.
    b.menu("Reporting", "Clone").await;
    assert!(b.text().await.contains("Key cloned"));
    let clone_secret = b.new_secret().await;
    assert_eq!(app.verify_code(&clone_secret).await, "VALID");
    b.check_page("key-cloned").await;
    b.go("link", "Back to the keys").await;
    assert!(b.row_text("Reporting (clone)").await.contains("Active"));

    // Deactivate asks first; then Delete (offered for inactive keys only).
    assert!(!b.menu_items("Reporting (clone)").await.contains(&"Delete".to_owned()));
    b.menu("Reporting (clone)", "Deactivate").await;
    b.find("button", "Confirm").await;
    b.check_page("confirm-deactivate").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The key was deactivated."));
    assert!(b.row_text("Reporting (clone)").await.contains("Inactive"));
    assert_eq!(app.verify_code(&clone_secret).await, "INACTIVE");
    b.menu("Reporting (clone)", "Delete").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The key was deleted."));
    assert!(!b.text().await.contains("Reporting (clone)"));

    // Edit: every field, saved through the API's rules; what the member
    // does not touch stays as it is, even when it changes meanwhile.
    let id = app.get("/v1/keys?name=Reporting").await.body["data"][0]["id"].as_str().unwrap().to_owned();
    let meta = json!({"email": "ops@example.com", "timeZone": "Europe/Paris", "plan": "pro"});
    let r = app.patch(&format!("/v1/keys/{id}"), json!({"scopes": ["read", "campaigns:*"], "metadata": meta})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    b.open("/keys").await;
    b.menu("Reporting", "Edit").await;
    for _ in 0..3 {
        assert_eq!(app.verify_code(&secret).await, "VALID");
    }
    assert_eq!(b.value("Name").await, "Reporting");
    assert_eq!(b.value("Default email").await, "ops@example.com");
    assert_eq!(b.value("Identity").await, "acme");
    b.check_page("key-edit").await;
    b.fill("Name", "Reporting v2").await;
    b.fill("Phone", "+33 1 23 45 67 89").await;
    b.go("button", "Save").await;
    assert!(b.text().await.contains("The key was saved."), "{}", b.text().await);
    let key = app.get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(key["name"], "Reporting v2");
    let meta =
        json!({"email": "ops@example.com", "phone": "+33 1 23 45 67 89", "timeZone": "Europe/Paris", "plan": "pro"});
    assert_eq!(key["metadata"], meta);
    let mut scopes: Vec<String> = serde_json::from_value(key["scopes"].clone()).unwrap();
    scopes.sort();
    assert_eq!(scopes, ["campaigns:*", "read"], "a wildcard outside the panel is kept");
    assert_eq!(key["credits"]["remaining"], 96, "credits spent while the page was open stay spent");

    // The key's page: usage chart (the verifications above) and audit entries.
    let text = b.text().await;
    assert!(text.contains("Usage, last 30 days") && text.contains("4 valid verifications"), "{text}");
    let chart = b.client.find(fantoccini::Locator::Css("svg.chart")).await.unwrap();
    let label = chart.attr("aria-label").await.unwrap().unwrap();
    assert!(label.contains("4 valid"), "{label}");
    assert!(text.contains("key.updated") && text.contains("key.created"), "{text}");
    b.check_page("key-detail").await;

    // Legacy keys: a badge, no Edit or Delete.
    let r = app
        .post(
            "/v1/keys/import",
            json!({"name": "Old system", "key": "legacy_0123456789abcdef0123456789", "legacy": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    b.open("/keys").await;
    assert!(b.row_text("Old system").await.contains("Legacy"));
    let items = b.menu_items("Old system").await;
    assert!(!items.contains(&"Edit".to_owned()) && !items.contains(&"Delete".to_owned()), "{items:?}");
    b.save_for_docs("docs/console-keys.png").await;
    b.check_page("keys-with-legacy").await;

    // An expired session sends the member to sign in, then back.
    app.clock.advance(Duration::from_secs(13 * 3600));
    b.open("/keys?state=active").await;
    assert_eq!(b.path().await, "/sign-in?next=%2Fkeys%3Fstate%3Dactive");
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    assert_eq!(b.path().await, "/keys?state=active");
    b.close().await;
}

/// Show/Hide with the password prompt for a session no longer fresh, and
/// Re-activate of a key disabled by wrong secrets.
async fn console_show_hide_and_disabled_keys_in_chromium() {
    let app = spawn_app().await;
    let r = app.patch("/v1/workspace", json!({"allowRecoverable": true, "lockout": {"threshold": 3}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key = app.create_key(json!({"name": "Recoverable", "recoverable": true})).await;
    let locked = app.create_key(json!({"name": "Guessed"})).await;
    let id = keyward_core::token::parse(&locked.secret).unwrap().id.to_owned();
    let wrong = keyward_core::token::generate_with_id("kw", keyward_core::token::Environment::Live, &id);
    for _ in 0..3 {
        app.verify(wrong.expose(), json!({})).await;
    }
    let Some(mut b) = browser(&app, "console_show_hide").await else { return };
    b.open("/keys").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    // Six minutes on, the sign-in no longer counts as fresh.
    app.clock.advance(Duration::from_secs(6 * 60));
    assert!(b.row_text("Recoverable").await.contains("kw_live_"));
    assert!(!b.row_text("Recoverable").await.contains(&key.secret));
    b.click_in_row("Recoverable", "Show").await;
    b.find("field", "Password").await;
    b.check_page("show-password").await;
    b.fill("Password", "not the password").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("incorrect"), "{}", b.text().await);
    b.refused(401).await;
    b.check_page("show-wrong-password").await;
    b.fill("Password", OWNER_PASSWORD).await;
    b.go("button", "Confirm").await;
    assert!(b.row_text("Recoverable").await.contains(&key.secret));
    b.check_page("shown").await;
    b.click_in_row("Recoverable", "Copy").await;
    assert_eq!(b.clipboard().await, key.secret);
    b.click_in_row("Recoverable", "Hide").await;
    assert!(!b.row_text("Recoverable").await.contains(&key.secret));
    // Fresh now: Show answers at once.
    b.click_in_row("Recoverable", "Show").await;
    assert!(b.row_text("Recoverable").await.contains(&key.secret));
    // Plain keys have no Show; Copy copies their id.
    let plain = b.row("Guessed").await;
    assert!(plain.find(fantoccini::Locator::XPath(".//button[normalize-space(.)='Show']")).await.is_err());
    b.click_in_row("Guessed", "Copy").await;
    assert_eq!(b.clipboard().await, locked.id);

    // The row menu by keyboard: Enter opens it on its first item, arrows
    // move, Escape closes it and gives the focus back to its button.
    let button = b.find("button", "More actions for Recoverable").await;
    button.send_keys("\u{E007}").await.unwrap();
    let focused = || async { b.client.active_element().await.unwrap().text().await.unwrap() };
    assert_eq!(focused().await, "Edit");
    b.client.active_element().await.unwrap().send_keys("\u{E015}").await.unwrap();
    assert_eq!(focused().await, "Clone");
    b.client.active_element().await.unwrap().send_keys("\u{E00C}").await.unwrap();
    let active = b.client.active_element().await.unwrap();
    assert_eq!(active.attr("aria-label").await.unwrap().as_deref(), Some("More actions for Recoverable"));
    assert_eq!(active.attr("aria-expanded").await.unwrap().as_deref(), Some("false"));

    // Disabled by wrong secrets: Re-activate.
    b.open("/keys?state=locked").await;
    assert!(b.row_text("Guessed").await.contains("Disabled"));
    b.check_page("disabled").await;
    assert_eq!(app.verify_code(&locked.secret).await, "LOCKED");
    b.menu("Guessed", "Re-activate").await;
    assert!(b.text().await.contains("The key was activated."));
    assert!(b.text().await.contains("No keys match."), "the filter shows disabled keys only");
    assert_eq!(app.verify_code(&locked.secret).await, "VALID");
    b.close().await;
}

/// Members (invite with a one-time link that then works, roles, remove),
/// Roles (create, edit), Settings, the Audit log, the OpenAPI download.
async fn console_people_settings_and_audit_in_chromium() {
    let app = spawn_app().await;
    app.patch("/v1/workspace", json!({"permissionCatalogue": [{"name": "sources", "actions": ["view", "edit"]}]}))
        .await;
    let Some(mut b) = browser(&app, "console_people").await else { return };
    b.open("/members").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    assert_eq!(b.path().await, "/members");
    b.check_page("members").await;
    b.fill("Email", "dev@example.com").await;
    b.fill("Name", "Dev").await;
    b.client
        .find(fantoccini::Locator::Css("section[aria-labelledby=invite-title] input[value=developer]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.go("button", "Invite").await;
    let link = b.client.find(fantoccini::Locator::Css(".secret-box code")).await.unwrap().text().await.unwrap();
    assert!(link.starts_with("/join?token=kwi_"), "{link}");
    b.check_page("invited").await;

    // Roles: a custom role from the catalogue's section.
    b.go("link", "Roles").await;
    b.check_page("roles").await;
    b.fill("Name", "source-editor").await;
    b.fill("Jump to", "sources").await;
    assert!(!b.has("field", "manage").await, "Jump to hides the other sections");
    b.client.find(fantoccini::Locator::Css("input[value='sources:edit']")).await.unwrap().click().await.unwrap();
    b.go("button", "Create role").await;
    assert!(b.text().await.contains("The role was created."));
    b.go("link", "Edit role source-editor").await;
    b.check_page("role-edit").await;
    b.fill("Description", "Edits sources").await;
    b.go("button", "Save role").await;
    assert!(b.text().await.contains("Edits sources"));
    let roles = app.get("/v1/roles").await;
    let custom = roles.body["data"].as_array().unwrap().iter().find(|r| r["name"] == "source-editor").unwrap().clone();
    assert_eq!(custom["permissions"], json!(["sources:edit"]), "{custom}");

    // The invitation link, opened by the invitee in another browser session.
    b.go("button", "Sign out").await;
    b.open(&link).await;
    b.check_page("join").await;
    b.fill("Password", "a long enough password").await;
    b.go("button", "Join").await;
    assert!(b.text().await.contains("dev@example.com joined"), "{}", b.text().await);
    b.go("link", "Sign in").await;
    sign_in(&mut b, "dev@example.com", "a long enough password").await;
    assert!(!b.has("link", "Settings").await || b.has("link", "Keys").await);
    b.go("button", "Sign out").await;

    // Back as the owner: change the new member's roles, then remove them.
    b.open("/members").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    let dev_row = "//tr[td[normalize-space(.)='dev@example.com']]";
    let viewer = format!("{dev_row}//input[@value='viewer']");
    b.client.find(fantoccini::Locator::XPath(&viewer)).await.unwrap().click().await.unwrap();
    b.go("button", "Save roles of dev@example.com").await;
    assert!(b.text().await.contains("The member's roles were saved."));
    let members = app.get("/v1/members").await;
    let dev =
        members.body["data"].as_array().unwrap().iter().find(|m| m["email"] == "dev@example.com").unwrap().clone();
    assert_eq!(dev["roles"], json!(["developer", "viewer"]), "{dev}");
    b.go("link", "Remove dev@example.com").await;
    b.check_page("confirm-remove").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The member was removed."));

    // Settings.
    b.go("link", "Settings").await;
    b.check_page("settings").await;
    b.fill("Key limit", "50").await;
    b.fill("Default lifetime (days)", "30").await;
    b.fill("Lockout threshold", "7").await;
    b.check("Allow recoverable keys", true).await;
    b.fill("Route scopes", "GET /v1/campaigns/* campaigns:read").await;
    b.go("button", "Save settings").await;
    assert!(b.text().await.contains("The settings were saved."));
    let ws = app.get("/v1/workspace").await.body;
    assert_eq!((ws["maxKeys"].clone(), ws["defaultKeyLifetimeDays"].clone()), (json!(50), json!(30)), "{ws}");
    assert_eq!(ws["lockout"]["threshold"], 7);
    assert_eq!(ws["allowRecoverable"], true);
    assert_eq!(ws["routes"][0]["permission"], "campaigns:read", "{ws}");
    // The create panel's expiry defaults to the new default lifetime.
    b.go("link", "Keys").await;
    b.go("button", "Create New Key").await;
    use keyward_server::clock::Clock as _;
    let expected = (app.clock.now() + chrono::Duration::days(30)).format("%Y-%m-%d").to_string();
    assert_eq!(b.value("Expires").await, expected);
    b.go("link", "Close").await;

    // Audit log: everything above, filtered.
    b.go("link", "Audit log").await;
    let text = b.table_text().await;
    assert!(
        text.contains("settings.changed") && text.contains("member.removed") && text.contains("role.created"),
        "{text}"
    );
    b.check_page("audit").await;
    let action = b.find("field", "Action").await;
    action.select_by_value("role.updated").await.unwrap();
    b.go("button", "Filter").await;
    let text = b.table_text().await;
    assert!(text.contains("role.updated") && !text.contains("settings.changed"), "{text}");
    let export = b.find("link", "Export CSV").await.attr("href").await.unwrap().unwrap();
    assert!(export.starts_with("/v1/audit/export?") && export.contains("action=role.updated"), "{export}");
    b.check_page("audit-filtered").await;

    // The OpenAPI file is a download link to the served document.
    let link = b.find("link", "Download OpenAPI file").await;
    assert_eq!(link.attr("href").await.unwrap().as_deref(), Some("/openapi.json"));
    assert!(link.attr("download").await.unwrap().is_some());
    b.close().await;
}

/// A viewer sees the list read-only (no Create, no menu); a member without
/// keys:read has no Keys page; a phone-sized window still creates a key.
async fn console_viewer_and_narrow_window_in_chromium() {
    let app = spawn_app().await;
    app.create_key(json!({"name": "Existing"})).await;
    app.add_member("viewer@example.com", "viewer password 1", &["viewer"]).await;
    let r = app.post("/v1/roles", json!({"name": "people-reader", "permissions": ["members:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.add_member("people@example.com", "people password 1", &["people-reader"]).await;
    let Some(mut b) = browser(&app, "console_viewer").await else { return };
    b.open("/keys").await;
    sign_in(&mut b, "viewer@example.com", "viewer password 1").await;
    assert!(b.row_text("Existing").await.contains("Active"));
    assert!(!b.has("button", "Create New Key").await);
    assert!(!b.has("button", "More actions for Existing").await);
    b.check_page("viewer-keys").await;
    b.go("link", "Settings").await;
    assert!(!b.has("button", "Save settings").await);
    assert!(!b.find("field", "Key limit").await.is_enabled().await.unwrap(), "settings are read-only");
    b.check_page("viewer-settings").await;
    b.go("button", "Sign out").await;

    b.open("/").await;
    sign_in(&mut b, "people@example.com", "people password 1").await;
    assert_eq!(b.path().await, "/members", "signed in, a member lands on the first page they may open");
    assert!(!b.has("link", "Keys").await, "no Keys page without keys:read");
    b.open("/keys").await;
    assert!(b.text().await.contains("Not allowed"), "{}", b.text().await);
    b.refused(403).await;
    b.check_page("no-keys-read").await;
    b.close().await;

    // A phone: the table becomes cards, the panel fills the screen.
    let name = test_name("console_narrow");
    let mut b = Browser::start(&app.url(""), &name, 390, 844).await;
    b.open("/keys").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    b.check_page("narrow-keys").await;
    assert_eq!(keys_wrapped(&b).await, Vec::<String>::new(), "no key wraps on a phone");
    b.go("button", "Create New Key").await;
    b.fill("Name", "From a phone").await;
    b.check_page("narrow-panel").await;
    assert_eq!(hidden_under_the_actions(&b).await, Vec::<String>::new(), "nothing hides under Generate");
    b.go("button", "Generate").await;
    let secret = b.new_secret().await;
    assert_eq!(app.verify_code(&secret).await, "VALID");
    b.check_page("narrow-created").await;
    b.go("link", "Back to the keys").await;
    b.menu("From a phone", "Deactivate").await;
    b.go("button", "Confirm").await;
    assert!(b.row_text("From a phone").await.contains("Inactive"));
    b.check_page("narrow-deactivated").await;
    b.close().await;
}

/// A signed-in client of the console's pages, over plain HTTP.
async fn console_client(app: &TestApp) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client
        .post(app.url("/sign-in"))
        .header("Origin", app.url(""))
        .form(&[("email", OWNER_EMAIL), ("password", OWNER_PASSWORD), ("next", "/keys")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    (client, cookie)
}

/// The keys of the list (masked keys, consumer keys) that take more than
/// one line: a key is one token, never broken.
async fn keys_wrapped(b: &Browser) -> Vec<String> {
    let script = r#"
        const codes = [...document.querySelectorAll('td.key code.masked')];
        if (codes.length === 0) return ['no key on the page'];
        return codes.filter(c => {
            const line = parseFloat(getComputedStyle(c).fontSize) * 1.6;
            return c.getBoundingClientRect().height > line || c.title !== c.textContent;
        }).map(c => c.textContent);
    "#;
    serde_json::from_value(b.client.execute(script, vec![]).await.unwrap()).unwrap()
}

/// What the open side panel shows under its sticky actions (the
/// `Generate` bar), scrolled to its end and to each field in turn (as
/// focus moves there): the texts of the hints, labels and fields it covers.
async fn hidden_under_the_actions(b: &Browser) -> Vec<String> {
    let script = r#"
        const panel = document.querySelector('.side-panel');
        const bar = panel.querySelector('.form-actions');
        const covered = new Set();
        const look = () => {
            const top = bar.getBoundingClientRect().top;
            for (const e of panel.querySelectorAll('form p, form label, form input, form textarea, form select')) {
                if (bar.contains(e) || e.type === 'hidden') continue;
                const r = e.getBoundingClientRect();
                const shown = r.height > 0 && r.bottom > panel.getBoundingClientRect().top;
                if (shown && r.bottom > top + 1 && r.top < top) covered.add((e.textContent || e.name || e.id).trim().slice(0, 60));
            }
        };
        panel.scrollTop = panel.scrollHeight;
        look();
        for (const field of panel.querySelectorAll('form input:not([type=hidden]), form textarea')) {
            field.focus();
            const hint = document.getElementById(field.id + '-hint');
            if (hint) hint.scrollIntoView({block: 'nearest'});
            field.scrollIntoView({block: 'nearest'});
            if (hint) {
                const r = hint.getBoundingClientRect(), top = bar.getBoundingClientRect().top;
                if (r.bottom > top + 1) covered.add(hint.textContent.trim().slice(0, 60));
            }
        }
        document.activeElement.blur();
        panel.scrollTop = 0;
        return [...covered];
    "#;
    let found = b.client.execute(script, vec![]).await.unwrap();
    serde_json::from_value(found).unwrap()
}

/// A created key's secret comes after a redirect (POST → 303 → a no-store
/// page that shows it once), so a reload never posts the form again; the
/// sealed cookie that carries it opens for that session and key alone.
async fn console_new_secret_is_shown_once_after_a_redirect() {
    let app = spawn_app().await;
    let (client, cookie) = console_client(&app).await;
    let before = app.key_count().await;
    let r = client
        .post(app.url("/keys/new"))
        .header("Cookie", &cookie)
        .header("Origin", app.url(""))
        .form(&[("name", "Once")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/keys/key_") && location.ends_with("/secret"), "{location}");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains(&format!("Path={location};")), "{set}");
    let handoff = set.split(';').next().unwrap().to_owned();
    assert!(!handoff.contains("kw_live_") && !r.text().await.unwrap().contains("kw_live_"), "the secret is sealed");
    assert_eq!(app.key_count().await, before + 1);

    let get = |path: String, extra: Option<String>| {
        let cookies = match extra {
            Some(more) => format!("{cookie}; {more}"),
            None => cookie.clone(),
        };
        let (client, url) = (client.clone(), app.url(&path));
        async move { client.get(url).header("Cookie", cookies).send().await.unwrap() }
    };
    // Another key's page does not open it.
    let other = app.create_key(json!({"name": "Other"})).await;
    let r = get(format!("/keys/{}/secret", other.id), Some(handoff.clone())).await;
    assert_eq!(r.status(), 410);
    assert!(!r.text().await.unwrap().contains("kw_live_"));
    // Its own page shows it, not to be stored, and clears the cookie.
    let r = get(location.clone(), Some(handoff.clone())).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("keyward_new_secret=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let html = r.text().await.unwrap();
    assert!(html.contains("Key created") && html.contains("will not be shown again"), "{html}");
    let secret = html.split_once("kw_live_").map(|(_, rest)| format!("kw_live_{}", rest.split('<').next().unwrap()));
    assert_eq!(app.verify_code(&secret.expect("the secret on the page")).await, "VALID");
    // A reload, the cookie gone: no secret, no second key.
    let r = get(location.clone(), None).await;
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("Secret no longer shown") && !html.contains("kw_live_"), "{html}");
    assert_eq!(app.key_count().await, before + 2);
}

/// Headers of every page; no page without a session; forms refused from
/// another origin; sign-in's `next` only leads to this server.
async fn console_pages_are_locked_down() {
    let app = spawn_app().await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/keys", "/keys/new", "/members", "/roles", "/settings", "/audit"] {
        let r = plain.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/sign-in?next="), "{path} → {to}");
    }
    let r = plain.get(app.url("/sign-in")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style=") && !html.contains("onclick"),
        "no inline script or style"
    );

    // A wrong password: the page says so beside the field, and nothing
    // about saving (signing in saves nothing).
    let r = plain
        .post(app.url("/sign-in"))
        .form(&[("email", OWNER_EMAIL), ("password", "not the password"), ("next", "/keys")])
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("set-cookie"));
    let html = r.text().await.unwrap();
    assert!(html.contains("field-error") && !html.contains("Nothing was saved"), "{html}");

    // `next` never leads off the server.
    for next in ["https://evil.example/", "//evil.example/", "/\\evil.example"] {
        let r = plain
            .post(app.url("/sign-in"))
            .form(&[("email", OWNER_EMAIL), ("password", OWNER_PASSWORD), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["location"], "/", "{next}");
    }
    // A sign-in (or join) form posted from another site is refused: no session.
    for (name, value) in [("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")] {
        for path in ["/sign-in", "/join"] {
            let r = plain
                .post(app.url(path))
                .header(name, value)
                .form(&[("email", OWNER_EMAIL), ("password", OWNER_PASSWORD), ("token", "kwi_x")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} {name}");
            assert!(!r.headers().contains_key("set-cookie"), "{path} {name}");
        }
    }

    let (client, cookie) = console_client(&app).await;
    for path in ["/keys", "/keys/new", "/members", "/roles", "/settings", "/audit"] {
        let r = client.get(app.url(path)).header("Cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        assert!(r.headers().contains_key("content-security-policy"), "{path}");
    }
    // Partial updates (htmx): a refusal replaces the page's content, not the
    // row; without a session the whole page goes to sign in.
    let r = client
        .post(app.url("/keys/key_AAAAAAAAAAAAAAAA/show"))
        .header("Cookie", &cookie)
        .header("Origin", app.url(""))
        .header("HX-Request", "true")
        .form(&[("back", "/keys")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        (r.headers()["hx-retarget"].clone(), r.headers()["hx-reselect"].clone()),
        ("#main".parse().unwrap(), "#main".parse().unwrap())
    );
    assert!(!r.headers().contains_key("x-keyward-whole-page"));
    let r = plain.get(app.url("/keys?state=active")).header("HX-Request", "true").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["hx-redirect"], "/sign-in?next=%2Fkeys%3Fstate%3Dactive");

    // A form posted from another site is refused and changes nothing.
    let before = app.key_count().await;
    let r = client
        .post(app.url("/keys/new"))
        .header("Cookie", &cookie)
        .header("Origin", "https://evil.example")
        .form(&[("name", "Forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.key_count().await, before);
    // Names are escaped, and characters that would reorder text are shown inert.
    let hostile = "<img src=x>\u{202E}gnp.exe";
    let r = app.invite(json!({"email": "x@example.com", "name": hostile, "roles": ["viewer"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.str("token");
    let accept = json!({"token": token, "password": "x password 12"});
    app.call(Method::POST, "/v1/invitations/accept", None, Some(accept)).await;
    let html = client.get(app.url("/members")).header("Cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("&#60;img src=x&#62;[U+202E]gnp.exe") || html.contains("&lt;img src=x&gt;[U+202E]gnp.exe"),
        "{html}"
    );
    assert!(!html.contains('\u{202E}') && !html.contains("<img src=x>"));
}

/// The keys list in pages of 25, filtered by state and name; a member of
/// two workspaces switches between them.
async fn console_lists_page_filter_and_switch_workspace() {
    let app = spawn_app().await;
    for i in 0..30 {
        app.create_key(json!({"name": format!("bulk {i:02}")})).await;
    }
    let gone = app.create_key(json!({"name": "Gone"})).await;
    app.post_empty(&format!("/v1/keys/{}/revoke", gone.id)).await;
    let (client, cookie) = console_client(&app).await;
    let page = |path: String| {
        let (client, cookie, url) = (client.clone(), cookie.clone(), app.url(&path));
        async move { client.get(url).header("Cookie", cookie).send().await.unwrap().text().await.unwrap() }
    };
    let rows = |html: &str| html.matches("data-key-name=").count();
    let first = page("/keys".into()).await;
    assert_eq!(rows(&first), 25);
    let next = first.split_once("href=\"/keys?cursor=").map(|(_, r)| r.split('"').next().unwrap().to_owned());
    let next = next.expect("a Next page link");
    let second = page(format!("/keys?cursor={next}")).await;
    // 30 bulk keys, Gone and the workspace's admin, JavaScript and REST keys.
    assert_eq!(rows(&second), 34 - 25, "{second}");
    let named_next = page(format!("/keys?name=bulk&cursor={next}")).await;
    assert!(named_next.contains("href=\"/keys?name=bulk\">First page"), "the first page keeps the filter");
    assert!(second.contains("First page"));
    let revoked = page("/keys?state=revoked".into()).await;
    assert_eq!(rows(&revoked), 1);
    assert!(revoked.contains("data-key-name=\"Gone\""));
    let named = page("/keys?name=BULK+0".into()).await;
    assert_eq!(rows(&named), 10, "names match case-insensitively");
    // Expired keys are told apart from active ones across store pages.
    for i in 0..3 {
        app.create_key(json!({"name": format!("short {i}"), "expiresAt": app.in_secs(60)})).await;
    }
    app.clock.advance(Duration::from_secs(120));
    let expired = page("/keys?state=expired".into()).await;
    assert_eq!(rows(&expired), 3, "{expired}");
    assert!(expired.contains("Expired") && !expired.contains("Next page"));
    let active = page("/keys?state=active".into()).await;
    assert_eq!(rows(&active), 25);
    assert!(!active.contains("data-key-name=\"short 0\""));
    // Unknown or malformed filters are ignored, not an error page.
    let odd = page("/keys?state=nonsense&cursor=-4&extra=1".into()).await;
    assert_eq!(rows(&odd), 25);

    // The audit log's export links work with the console's session.
    let audit = page("/audit?type=api_key&period=24h".into()).await;
    let export =
        audit.split_once("href=\"/v1/audit/export?").unwrap().1.split('"').next().unwrap().replace("&#38;", "&");
    let r = client.get(app.url(&format!("/v1/audit/export?{export}"))).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let created = csv.lines().filter(|l| l.contains(",\"key.created\",")).count();
    assert_eq!(created, 37, "the workspace's 3 keys, 30 bulk, Gone, 3 short");
    assert!(csv.lines().all(|l| !l.contains(",\"key.revoked\",") || l.contains("\"Gone\"")));

    // The owner joins a second workspace; the header switches between them.
    let (other, _) = app.other_workspace().await;
    let token = app.operator_invite(&other, OWNER_EMAIL, &["admin"]).await;
    let accept = json!({"token": token, "password": OWNER_PASSWORD});
    let a = app.call(Method::POST, "/v1/invitations/accept", None, Some(accept)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let keys = page("/keys".into()).await;
    assert!(keys.contains("Switch") && keys.contains(&format!("value=\"{other}\"")), "{keys}");
    let r = client
        .post(app.url("/switch-workspace"))
        .header("Cookie", &cookie)
        .header("Origin", app.url(""))
        .form(&[("workspace", other.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let switched = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let other_keys =
        client.get(app.url("/keys")).header("Cookie", &switched).send().await.unwrap().text().await.unwrap();
    assert_eq!(rows(&other_keys), 3, "the other workspace has its admin, JavaScript and REST keys only");
    assert!(!other_keys.contains("bulk 00"));
    // The old session ended with the switch.
    let old = client.get(app.url("/keys")).header("Cookie", &cookie).send().await.unwrap();
    assert_eq!(old.status(), 303);
    // Not a member there: refused, nothing changes.
    let r = client
        .post(app.url("/switch-workspace"))
        .header("Cookie", &switched)
        .header("Origin", app.url(""))
        .form(&[("workspace", "ws_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A refused form shows the API's own message beside its field and saves
/// nothing.
async fn console_forms_refuse_bad_input_and_change_nothing() {
    let app = spawn_app().await;
    app.create_key(json!({"name": "Taken"})).await;
    let (client, cookie) = console_client(&app).await;
    let before = app.key_count().await;
    let post = |path: &'static str, form: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        let cookie = cookie.clone();
        let url = app.url(path);
        let origin = app.url("");
        async move {
            let r =
                client.post(url).header("Cookie", cookie).header("Origin", origin).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let field_error = |html: &str, field: &str| {
        let marker = format!("id=\"f-{field}-error\">");
        html.split_once(&marker).map(|(_, rest)| rest.split('<').next().unwrap().to_owned())
    };
    let cases: &[(Vec<(&str, &str)>, &str)] = &[
        (vec![("name", "Taken")], "name"),
        (vec![("name", "")], "name"),
        (vec![("name", "Bad date"), ("expires", "2020-01-01")], "expires"),
        (vec![("name", "Bad date"), ("expires", "tomorrow")], "expires"),
        (vec![("name", "Bad origin"), ("allowed_origins", "not an origin")], "allowed_origins"),
        (vec![("name", "Bad ip"), ("allowed_ips", "10.0.0.0/99")], "allowed_ips"),
        (vec![("name", "Bad credits"), ("credits", "lots")], "credits"),
        (vec![("name", "Bad credits"), ("credits", "-5")], "credits"),
    ];
    for (form, field) in cases {
        let (status, html) = post("/keys/new", form.clone()).await;
        assert!((400..500).contains(&status), "{form:?}: {status}");
        let message =
            field_error(&html, field).unwrap_or_else(|| panic!("no message beside {field} for {form:?}: {html}"));
        assert!(!message.trim().is_empty(), "{form:?}");
        // The values come back in the form; no secret or stack trace in the answer.
        assert!(html.contains("Create New Key") && !html.contains("panicked"), "{form:?}");
    }
    assert_eq!(app.key_count().await, before, "nothing was created");
    // The API's own message, word for word.
    let api = app.post("/v1/keys", json!({"name": "Taken"})).await;
    let (_, html) = post("/keys/new", vec![("name", "Taken")]).await;
    assert_eq!(field_error(&html, "name").unwrap(), askama_escape(api.error()));

    // An edit of a key changed meanwhile is refused (the page's version).
    let taken = app.get("/v1/keys?name=Taken").await.body["data"][0]["id"].as_str().unwrap().to_owned();
    let edit = client.get(app.url(&format!("/keys/{taken}/edit"))).header("Cookie", &cookie).send().await.unwrap();
    let edit = edit.text().await.unwrap();
    let version = edit.split_once("name=\"version\" value=\"").unwrap().1.split('"').next().unwrap().to_owned();
    app.patch(&format!("/v1/keys/{taken}"), json!({"description": "changed elsewhere"})).await;
    let r = client
        .post(app.url(&format!("/keys/{taken}/edit")))
        .header("Cookie", &cookie)
        .header("Origin", app.url(""))
        .form(&[("name", "Renamed"), ("version", version.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("changed since this page was opened"));
    assert_eq!(app.get(&format!("/v1/keys/{taken}")).await.body["name"], "Taken");

    let (status, html) = post("/settings", vec![("name", "Test"), ("max_keys", "many")]).await;
    assert_eq!(status, 400);
    assert!(field_error(&html, "max_keys").unwrap().contains("whole number"), "{html}");
    let (status, html) = post("/settings", vec![("name", "Test"), ("routes", "GET")]).await;
    assert_eq!(status, 400);
    assert!(field_error(&html, "routes").is_some(), "{html}");
    assert_eq!(app.get("/v1/workspace").await.body["routes"], json!([]));
    let (status, html) = post("/members", vec![("email", "not an email"), ("name", "X")]).await;
    assert_eq!(status, 400, "{html}");
    assert!(field_error(&html, "email").is_some(), "{html}");
    let (status, html) = post("/roles", vec![("name", "r"), ("permission", "nope:never")]).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("field-error"), "{html}");
}

/// What the templates print for a message (HTML-escaped).
fn askama_escape(s: &str) -> String {
    s.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// A client credentials request with this pair: the status.
async fn client_token_status(app: &TestApp, id: &str, secret: &str) -> u16 {
    let r = reqwest::Client::new()
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// The `OAuth clients` page (create with the Consumer Key and Consumer
/// Secret shown once, Copy, Regenerate Secret, Re-activate) and the
/// `Tokens` page (create, shown once, revoke).
async fn console_oauth_clients_and_tokens_in_chromium() {
    let app = spawn_app().await;
    assert_eq!(app.patch("/v1/workspace", json!({"lockout": {"threshold": 3}})).await.status, 200);
    let Some(mut b) = browser(&app, "console_oauth").await else { return };
    b.open("/").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    b.go("link", "OAuth clients").await;
    assert_eq!(b.path().await, "/oauth-clients");
    assert!(b.text().await.contains("No OAuth clients match."));
    b.check_page("oauth-clients-empty").await;

    // Create New Key here makes a client.
    b.go("button", "Create New Key").await;
    assert_eq!(b.value("Type").await, "client");
    b.fill("Name", "Billing client").await;
    b.fill("Jump to", "Access tiers").await;
    let read = b.client.find(fantoccini::Locator::Css("input[name=permission][value=read]")).await.unwrap();
    read.click().await.unwrap();
    b.check_page("oauth-client-panel").await;
    b.go("button", "Generate").await;
    let text = b.text().await;
    assert!(text.contains("Consumer Key") && text.contains("Consumer Secret"), "{text}");
    let secret = b.new_secret().await;
    assert!(secret.starts_with("kwcs_live_"), "{secret}");
    let client_id = b.client.find(fantoccini::Locator::Id("consumer-key")).await.unwrap().text().await.unwrap();
    assert!(client_id.starts_with("ck_"), "{client_id}");
    b.check_page("oauth-client-created").await;
    b.click("button", "Copy Consumer Key").await;
    assert_eq!(b.clipboard().await, client_id);
    b.click("button", "Copy Consumer Secret").await;
    assert_eq!(b.clipboard().await, secret);
    assert_eq!(client_token_status(&app, &client_id, &secret).await, 200);

    // The list: the consumer key with Copy, the secret masked.
    b.go("link", "Back to the OAuth clients").await;
    let row = b.row_text("Billing client").await;
    assert!(row.contains(&client_id) && !row.contains(&secret), "{row}");
    b.click("button", "Copy Consumer Key of Billing client").await;
    assert_eq!(b.clipboard().await, client_id);
    b.check_page("oauth-clients").await;

    // Regenerate Secret: a new pair, the old one refused (no grace period).
    b.menu("Billing client", "Regenerate Secret").await;
    assert!(b.text().await.contains("new Consumer Key and Consumer Secret"), "{}", b.text().await);
    b.check_page("oauth-client-regenerate").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("Secret regenerated"));
    let new_secret = b.new_secret().await;
    let new_id = b.client.find(fantoccini::Locator::Id("consumer-key")).await.unwrap().text().await.unwrap();
    assert_ne!(new_id, client_id);
    assert_eq!(client_token_status(&app, &client_id, &secret).await, 401);
    assert_eq!(client_token_status(&app, &new_id, &new_secret).await, 200);

    // Disabled by wrong secrets, then Re-activate.
    let parsed = keyward_core::token::parse(&new_secret).unwrap();
    let wrong = keyward_core::token::generate_with_id(parsed.prefix, parsed.environment, parsed.id);
    for _ in 0..3 {
        assert_eq!(client_token_status(&app, &new_id, wrong.expose()).await, 401);
    }
    assert_eq!(client_token_status(&app, &new_id, &new_secret).await, 401);
    b.open("/oauth-clients?state=locked").await;
    assert!(b.row_text("Billing client").await.contains("Disabled"));
    b.menu("Billing client", "Re-activate").await;
    assert!(b.text().await.contains("The key was activated."), "{}", b.text().await);
    assert_eq!(b.path().await, "/oauth-clients?state=locked&done=activate");
    assert_eq!(client_token_status(&app, &new_id, &new_secret).await, 200);

    // Tokens: create one (shown once), use it, revoke it.
    b.go("link", "Tokens").await;
    assert!(b.text().await.contains("No tokens yet."));
    b.check_page("tokens-empty").await;
    b.fill("Name", "").await;
    b.go("button", "Create token").await;
    b.refused(400).await;
    b.check_page("tokens-refused").await;
    b.fill("Name", "Nightly export").await;
    b.go("button", "Create token").await;
    let token = b.new_secret().await;
    assert!(token.starts_with("kw_rt_"), "{token}");
    assert!(b.text().await.contains("will not be visible again"));
    b.check_page("token-created").await;
    b.click("button", "Copy").await;
    assert_eq!(b.clipboard().await, token);
    let refresh = |token: String| {
        let app = &app;
        async move {
            let form = [("grant_type", "refresh_token"), ("refresh_token", token.as_str())];
            let r = reqwest::Client::new().post(app.url("/oauth/token")).form(&form).send().await.unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(refresh(token.clone()).await, 200);
    b.open("/tokens").await;
    let table = b.table_text().await;
    assert!(table.contains("Nightly export") && table.contains(OWNER_EMAIL) && !table.contains(&token), "{table}");
    b.go("link", "Revoke Nightly export").await;
    b.check_page("token-revoke").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The token was revoked."));
    assert_eq!(refresh(token).await, 400);
    b.close().await;
}

/// The PGP keys page: upload a private key pasted (a wrong passphrase
/// first) and a public key from a file, see both listed with what GnuPG
/// reports, delete one with a confirmation.
async fn console_pgp_keys_in_chromium() {
    let Some(gpg) = crate::gnupg::Gpg::new("console_pgp_keys_in_chromium") else { return };
    let app = spawn_app().await;
    let Some(mut b) = browser(&app, "console_pgp").await else { return };
    let pass = "s3cret phrase";
    let ed = gpg.generate("Partner <drop@partner.example>", crate::gnupg::Kind::Ed25519, pass, "never");
    let rsa = gpg.generate("Archive <archive@example.com>", crate::gnupg::Kind::Rsa3072, "", "never");
    b.open("/").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    b.go("link", "PGP keys").await;
    assert_eq!(b.path().await, "/pgp-keys");
    let text = b.text().await;
    assert!(text.contains("File Encryption") && text.contains("No PGP keys yet."), "{text}");
    b.check_page("pgp-empty").await;

    // A private key, pasted; the passphrase field shows once the toggle is on.
    b.go("button", "Create New Key").await;
    assert_eq!(b.value("Key type").await, "pgp");
    assert!(!b.has("field", "Passphrase").await, "hidden while Private key is off");
    b.fill("Key name", "Partner drop").await;
    b.fill("Key description", "Files from the partner's SFTP").await;
    b.fill("Key contents", &gpg.export_secret(&ed, pass)).await;
    b.check("Private key", true).await;
    assert!(b.has("field", "Passphrase").await, "shown once Private key is on");
    b.fill("Passphrase", "not it").await;
    b.check_page("pgp-panel").await;
    b.go("button", "Upload key").await;
    b.refused(400).await;
    assert!(b.text().await.contains("the passphrase does not unlock this private key"), "{}", b.text().await);
    assert!(!b.client.source().await.unwrap().contains("PRIVATE KEY"), "a private key is not printed back");
    assert_eq!(app.get("/v1/pgp-keys").await.body["data"], json!([]));
    b.fill("Key contents", &gpg.export_secret(&ed, pass)).await;
    b.fill("Passphrase", pass).await;
    b.go("button", "Upload key").await;
    assert_eq!(b.path().await, "/pgp-keys?done=upload");
    assert!(b.text().await.contains("The key was uploaded."));
    let row = b.row_text("Partner drop").await;
    for part in [ed.as_str(), "EdDSA Ed25519 + ECDH Curve25519", "Never", "Private", "drop@partner.example"] {
        assert!(row.contains(part), "{part} in {row}");
    }

    // A public key from a file.
    b.go("button", "Create New Key").await;
    b.fill("Key name", "Archive").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive.asc");
    std::fs::write(&file, gpg.export_public(&[&rsa])).unwrap();
    b.find("field", "Key file").await.send_keys(file.to_str().unwrap()).await.unwrap();
    b.go("button", "Upload key").await;
    let row = b.row_text("Archive").await;
    assert!(row.contains(&rsa) && row.contains("RSA 3072") && row.contains("Public"), "{row}");
    b.check_page("pgp-list").await;

    // Delete, after a confirmation.
    b.go("link", "Delete Partner drop").await;
    assert!(b.text().await.contains("Delete Partner drop?"));
    b.check_page("pgp-delete").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The key was deleted."));
    let names: Vec<String> = app.get("/v1/pgp-keys").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Archive"]);
    b.close().await;
    app.stop().await;
}

/// Whether the FTP server (here: the API it asks) accepts this login.
async fn ftp_accepts(app: &TestApp, username: &str, password: &str) -> bool {
    let body = json!({"username": username, "password": password});
    app.post("/v1/ftp/authenticate", body).await.status == 200
}

/// Settings › Integrations › Keys: the three credentials with Copy, the
/// FTP password rotated after a confirmation and shown once, shown again
/// when kept, and the default REST key made again after it was removed.
async fn console_integrations_in_chromium() {
    let app = spawn_app().await;
    let Some(mut b) = browser(&app, "console_integrations").await else { return };
    let api = app.get("/v1/integrations").await.body;
    let (js, user) = (api["javascriptKey"]["key"].as_str().unwrap(), api["ftp"]["username"].as_str().unwrap());
    b.open("/").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    b.go("link", "Integrations").await;
    assert_eq!(b.path().await, "/integrations");
    let text = b.text().await;
    for part in [
        "File Encryption",
        "API/FTP",
        "JavaScript API key",
        "Default REST API key",
        "FTP",
        "Manage Tokens",
        "REST API keys",
        user,
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    assert!(b.has("link", "PGP keys").await && b.has("link", "Manage Tokens").await);
    assert!(!b.has("button", "Show Default REST API key").await, "not recoverable");
    b.check_page("integrations").await;
    b.click("button", "Copy JavaScript API key").await;
    assert_eq!(b.clipboard().await, js);
    b.click("button", "Copy FTP username").await;
    assert_eq!(b.clipboard().await, user);

    // Rotate password, after a confirmation: the new one, shown once.
    b.go("link", "Rotate password").await;
    assert!(b.text().await.contains("Rotate the FTP password?"));
    b.check_page("integrations-rotate").await;
    b.go("button", "Confirm").await;
    let shown = b.client.find(fantoccini::Locator::Css("code[aria-label='FTP password']")).await.unwrap();
    let password = shown.text().await.unwrap();
    b.click("button", "Copy FTP password").await;
    assert_eq!(b.clipboard().await, password);
    assert!(ftp_accepts(&app, user, &password).await, "the password shown works");
    b.check_page("integrations-rotated").await;
    b.open("/integrations").await;
    assert!(!b.text().await.contains(&password), "shown once");
    assert!(!b.has("button", "Show FTP password").await, "not kept");

    // Kept (recoverable secrets allowed): Show brings it back.
    assert_eq!(app.patch("/v1/workspace", json!({"allowRecoverable": true})).await.status, 200);
    let kept = app.post_empty("/v1/integrations/ftp/rotate").await.str("password");
    b.open("/integrations").await;
    b.go("button", "Show FTP password").await;
    let shown = b.client.find(fantoccini::Locator::Css("code[aria-label='FTP password']")).await.unwrap();
    assert_eq!(shown.text().await.unwrap(), kept);

    // Disable and enable.
    b.go("button", "Disable FTP").await;
    assert!(b.text().await.contains("FTP access is disabled"));
    assert!(!ftp_accepts(&app, user, &kept).await);
    b.go("button", "Enable FTP").await;
    assert!(ftp_accepts(&app, user, &kept).await);

    // The site id, set in Settings, is the FTP username.
    b.go("link", "Settings").await;
    b.fill("Site ID", "ws_mine").await;
    b.go("button", "Save settings").await;
    b.refused(400).await;
    assert!(b.text().await.contains("siteId must be"), "{}", b.text().await);
    b.fill("Site ID", "site_console").await;
    b.go("button", "Save settings").await;
    b.go("link", "Integrations").await;
    assert!(b.text().await.contains("Username site_console"), "{}", b.text().await);
    assert!(ftp_accepts(&app, "site_console", &kept).await);

    // The default REST key removed: Create makes one, its secret shown once.
    let rest_id = api["restKey"]["id"].as_str().unwrap();
    assert_eq!(app.post_empty(&format!("/v1/keys/{rest_id}/deactivate")).await.status, 200);
    assert!(app.delete(&format!("/v1/keys/{rest_id}")).await.status.is_success());
    b.open("/integrations").await;
    assert!(b.text().await.contains("None: it was removed."));
    b.check_page("integrations-removed").await;
    b.go("button", "Create Default REST API key").await;
    let secret = b.new_secret().await;
    assert_eq!(app.verify(&secret, json!({})).await["valid"], true);
    let made = app.get("/v1/integrations").await.body["restKey"].clone();
    assert_eq!((made["name"].clone(), made["scopes"].clone()), (json!("Default REST API key"), json!(["*"])));
    b.close().await;
    app.stop().await;
}

/// Webhooks in the console: Add Endpoint (URL, events), the signing secret
/// shown once (it verifies deliveries), the deliveries with Send test
/// event and Resend, Rotate secret, Disable and a disabled endpoint's
/// notice; the leak policy in Settings and a reported key's banner.
async fn console_webhooks_and_leaks_in_chromium() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.webhook_urls.allow_hosts = vec!["127.0.0.1".into()];
        c.webhook_delivery.poll = Duration::from_millis(50);
    })
    .await;
    let Some(receiver) = crate::receiver::Receiver::start("console_webhooks_and_leaks_in_chromium").await else {
        return;
    };
    let Some(mut b) = browser(&app, "console_webhooks").await else { return };
    b.open("/").await;
    sign_in(&mut b, OWNER_EMAIL, OWNER_PASSWORD).await;
    b.go("link", "Webhooks").await;
    assert_eq!(b.path().await, "/webhooks");
    assert!(b.text().await.contains("No endpoints yet."));
    b.check_page("webhooks-empty").await;
    b.go("button", "Add Endpoint").await;
    b.check_page("webhooks-add").await;
    // A URL keyward may not send to: refused beside the field.
    b.fill("Endpoint URL", "https://10.0.0.1/hook").await;
    b.go("button", "Add endpoint").await;
    b.refused(400).await;
    assert!(b.text().await.contains("url:"), "{}", b.text().await);
    b.fill("Endpoint URL", &receiver.url).await;
    b.check("All events", false).await;
    b.check("key.created", true).await;
    b.check("key.leaked", true).await;
    b.go("button", "Add endpoint").await;
    let secret = b.new_secret().await;
    assert!(secret.starts_with("whsec_"));
    b.click("button", "Copy signing secret").await;
    assert_eq!(b.clipboard().await, secret);
    b.check_page("webhooks-secret").await;
    receiver.secrets(&[&secret]).await;

    app.create_key(json!({"name": "hooked"})).await;
    receiver.wait_for(1).await;
    b.open("/webhooks").await;
    assert!(b.table_text().await.contains("key.created, key.leaked"), "{}", b.table_text().await);
    b.go("link", &format!("Deliveries of {}", receiver.url)).await;
    b.go("button", "Send test event").await;
    assert!(b.text().await.contains("A test event was sent"));
    let events = receiver.wait_for(2).await;
    assert_eq!(events[1]["body"]["type"], "webhook.test");
    assert_eq!(events[1]["verifiedWith"], json!([0]), "the secret the console showed signs");
    b.open(&b.path().await.clone()).await;
    let table = b.table_text().await;
    assert!(table.contains("webhook.test") && table.contains("delivered") && table.contains("200"), "{table}");
    b.check_page("webhooks-deliveries").await;
    let test_id = events[1]["id"].as_str().unwrap().to_owned();
    b.click("button", &format!("Resend webhook.test {test_id}")).await;
    let events = receiver.wait_for(3).await;
    assert_eq!(events[2]["id"], test_id.as_str());

    // Rotate: the new secret shown once; both sign for a day.
    b.go("button", "Rotate secret").await;
    let rotated = b.new_secret().await;
    assert_ne!(rotated, secret);
    assert!(b.text().await.contains("The previous secret goes on signing"));
    receiver.secrets(&[&secret, &rotated]).await;

    // The leak policy in Settings; a member's report on the key's page.
    b.go("link", "Settings").await;
    let policy = b.find("field", "When a key is reported leaked").await;
    policy.select_by_value("notify").await.unwrap();
    b.go("button", "Save settings").await;
    assert_eq!(app.get("/v1/workspace").await.body["leakPolicy"], "notify");
    let key = app.create_key(json!({"name": "spilled"})).await;
    b.open(&format!("/keys/{}", key.id)).await;
    b.go("link", "Report leaked").await;
    assert!(b.text().await.contains("leak policy applies at once"));
    b.go("button", "Confirm").await;
    let text = b.text().await;
    assert!(text.contains("Leaked.") && text.contains("Reported leaked by a member"), "{text}");
    b.check_page("key-leaked").await;
    assert_eq!(app.verify_code(&key.secret).await, "VALID", "notify only");
    let events = receiver.wait_for(5).await;
    let leaked = events.iter().find(|e| e["body"]["type"] == "key.leaked").unwrap();
    assert_eq!(leaked["verifiedWith"], json!([0, 1]));

    // Disabled by keyward: the notice says why.
    receiver.answer(410).await;
    app.create_key(json!({"name": "gone"})).await;
    let id = app.get("/v1/webhooks").await.body["data"][0]["id"].as_str().unwrap().to_owned();
    crate::helpers::eventually(|| async { app.get(&format!("/v1/webhooks/{id}")).await.body["enabled"] == false })
        .await;
    b.open("/webhooks").await;
    assert!(b.text().await.contains("Endpoint disabled."), "{}", b.text().await);
    assert!(b.text().await.contains("410 Gone"));
    b.check_page("webhooks-disabled").await;
    b.go("link", "enable it again").await;
    b.go("button", "Enable").await;
    assert!(b.text().await.contains("The endpoint is enabled."));
    b.go("link", "Delete").await;
    b.go("button", "Confirm").await;
    assert!(b.text().await.contains("The endpoint was deleted."));
    assert_eq!(app.get("/v1/webhooks").await.body["data"], json!([]));
    b.close().await;
}
