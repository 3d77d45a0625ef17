//! A real headless Chromium (Debian's `chromium` and `chromium-driver`)
//! driven over WebDriver, for the console's tests. It finds controls by
//! their accessible names, as a person reads them; it fails a test on any
//! request to another origin (Chromium sends everything but loopback to a
//! proxy that only records), on any error in the browser's console, and on
//! a serious or critical axe-core violation; it saves a screenshot of every
//! page under `target/console-screenshots/`.
//!
//! Without Chromium the tests skip and say so; under `CI=true` they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// axe-core, vendored (MPL-2.0): injected into each page to check it.
const AXE: &str = include_str!("../console/axe.min.js");

/// Whether the browser is installed; otherwise a printed skip (a failure
/// under CI, which installs it).
pub fn available(test: &str) -> bool {
    use keyward_store::testing::run::{Piece, ran, skipped};
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        ran(Piece::Chromium, test, CHROMIUM);
        return true;
    }
    skipped(Piece::Chromium, test, "chromium and chromium-driver are not installed");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Listens where Chromium sends every request not to loopback, records
/// what was asked for, and answers 403: a page that reaches off the server
/// shows up here.
async fn offsite_recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                // A socket opened and closed with nothing asked (Chromium
                // preconnects to its proxy) is no request off the server.
                if let Some(line) = head.lines().next().filter(|l| !l.is_empty()) {
                    record.lock().unwrap().push(line.to_owned());
                }
                let _ =
                    socket.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            });
        }
    });
    (port, seen)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Browser {
    pub client: Client,
    base: String,
    driver_url: String,
    offsite: Arc<Mutex<Vec<String>>>,
    shots: PathBuf,
    prefix: String,
    count: usize,
    _driver: Driver,
}

/// Where screenshots go: the workspace's `target/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots")
}

impl Browser {
    /// A fresh browser (its own profile) of `width`×`height` pixels for the
    /// server at `base`; screenshots are named after `test`.
    pub async fn start(base: &str, test: &str, width: u32, height: u32) -> Browser {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver(child);
        let driver_url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (proxy, offsite) = offsite_recorder().await;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--disable-extensions",
                    "--disable-dev-shm-usage", "--no-default-browser-check",
                    "--disable-client-side-phishing-detection", "--no-pings", "--disable-domain-reliability",
                    "--disable-features=AutofillServerCommunication,OptimizationHints,Translate,MediaRouter,PasswordLeakDetection",
                    format!("--proxy-server=http://127.0.0.1:{proxy}"),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let mut client = None;
        for _ in 0..20 {
            match builder.connect(&driver_url).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let client = client.expect("a browser session");
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots).unwrap();
        let prefix = test.replace("::", "-");
        Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            driver_url,
            offsite,
            shots,
            prefix,
            count: 0,
            _driver: driver,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a page of the server.
    pub async fn open(&mut self, path: &str) {
        self.client.goto(&self.url(path)).await.unwrap();
    }

    /// The current path (and query).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        let mut p = url.path().to_owned();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    /// XPath of a control a person would name so: a link or button by its
    /// text or label, or a form field by its label.
    fn named(role: &str, name: &str) -> String {
        let n = xpath_literal(name);
        // Content behind an open panel is inert: out of reach, as for a person.
        let reachable = "[not(ancestor-or-self::*[@inert])]";
        let xpath = match role {
            "button" => {
                format!("//*[(self::button or @role='button') and (normalize-space(.)={n} or @aria-label={n})]")
            }
            "link" => format!("//a[normalize-space(.)={n} or @aria-label={n}]"),
            "item" => format!("//*[(self::a or self::button) and (normalize-space(.)={n} or @aria-label={n})]"),
            "field" => format!(
                "(//*[(self::input or self::select or self::textarea) and (@id=//label[normalize-space(.)={n}]/@for or @aria-label={n})] | //label[normalize-space(.)={n}]//input)"
            ),
            _ => panic!("unknown role {role}"),
        };
        format!("{xpath}{reachable}")
    }

    /// The visible control with this role and accessible name.
    pub async fn find(&self, role: &str, name: &str) -> Element {
        let xpath = Self::named(role, name);
        for _ in 0..200 {
            if let Ok(all) = self.client.find_all(Locator::XPath(&xpath)).await {
                for e in all {
                    if e.is_displayed().await.unwrap_or(false) {
                        return e;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let page = self.client.source().await.unwrap_or_default();
        panic!("no visible {role} named {name:?} on {}\n{page}", self.path().await);
    }

    /// Whether a visible control with this role and name is on the page.
    pub async fn has(&self, role: &str, name: &str) -> bool {
        let xpath = Self::named(role, name);
        for e in self.client.find_all(Locator::XPath(&xpath)).await.unwrap_or_default() {
            if e.is_displayed().await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// Clicks a control that acts on this page (Copy, a menu button).
    pub async fn click(&self, role: &str, name: &str) {
        self.find(role, name).await.click().await.unwrap();
    }

    /// Clicks a link or submit button and waits for the next page.
    pub async fn go(&self, role: &str, name: &str) {
        let e = self.find(role, name).await;
        self.navigating(e).await;
    }

    /// Clicks `e` and waits until another document has loaded.
    async fn navigating(&self, e: Element) {
        self.client.execute("window.__before_click = true;", vec![]).await.unwrap();
        e.click().await.unwrap();
        for _ in 0..200 {
            let done = self
                .client
                .execute("return !window.__before_click && document.readyState === 'complete';", vec![])
                .await
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no new page after a click on {}", self.path().await);
    }

    /// Types into the field with this label (after clearing it).
    pub async fn fill(&self, label: &str, text: &str) {
        let field = self.find("field", label).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Ticks (or unticks) the checkbox with this label.
    pub async fn check(&self, label: &str, on: bool) {
        let field = self.find("field", label).await;
        if field.is_selected().await.unwrap() != on {
            field.click().await.unwrap();
        }
    }

    /// The value of a field.
    pub async fn value(&self, label: &str) -> String {
        self.find("field", label).await.prop("value").await.unwrap().unwrap_or_default()
    }

    /// The text of the page's main content.
    pub async fn text(&self) -> String {
        self.client.find(Locator::Css("main")).await.unwrap().text().await.unwrap()
    }

    /// The text of the page's (first) table body.
    pub async fn table_text(&self) -> String {
        self.client.find(Locator::Css("tbody")).await.unwrap().text().await.unwrap()
    }

    /// The table row of the key with this name.
    pub async fn row(&self, key_name: &str) -> Element {
        let xpath = format!("//tr[@data-key-name={}]", xpath_literal(key_name));
        self.client.wait().for_element(Locator::XPath(&xpath)).await.unwrap()
    }

    pub async fn row_text(&self, key_name: &str) -> String {
        self.row(key_name).await.text().await.unwrap()
    }

    /// Clicks a button of a key's row: Copy acts on the page; Show and Hide
    /// update the row in place (htmx), without loading another page.
    pub async fn click_in_row(&self, key_name: &str, button: &str) {
        let row = self.row(key_name).await;
        let xpath = format!(".//button[normalize-space(.)={}]", xpath_literal(button));
        let e = row.find(Locator::XPath(&xpath)).await.unwrap();
        match button {
            "Copy" => e.click().await.unwrap(),
            _ => {
                let id = row.attr("id").await.unwrap().expect("rows have ids");
                self.swapping(e, &id).await
            }
        }
    }

    /// Clicks `e` and waits until the element `id` was replaced within this
    /// same document (a partial update), and htmx has settled.
    async fn swapping(&self, e: Element, id: &str) {
        let mark = "window.__same_document = true; window.__old = document.getElementById(arguments[0]);";
        self.client.execute(mark, vec![json!(id)]).await.unwrap();
        e.click().await.unwrap();
        let done = "return window.__same_document === true && document.getElementById(arguments[0]) !== window.__old \
                    && !document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping');";
        for _ in 0..200 {
            let swapped = self.client.execute(done, vec![json!(id)]).await.map(|v| v == Value::Bool(true));
            if swapped.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{id} was not updated in place on {}", self.path().await);
    }

    /// Opens a key's ⋯ menu and picks an item.
    pub async fn menu(&self, key_name: &str, item: &str) {
        self.click("button", &format!("More actions for {key_name}")).await;
        let list = self.row(key_name).await.find(Locator::Css(".menu-items")).await.unwrap();
        let xpath = format!(".//*[(self::a or self::button) and normalize-space(.)={}]", xpath_literal(item));
        let e = list.find(Locator::XPath(&xpath)).await.unwrap();
        self.navigating(e).await;
    }

    /// The items of a key's ⋯ menu.
    pub async fn menu_items(&self, key_name: &str) -> Vec<String> {
        self.click("button", &format!("More actions for {key_name}")).await;
        let list = self.row(key_name).await.find(Locator::Css(".menu-items")).await.unwrap();
        let mut out = Vec::new();
        for e in list.find_all(Locator::Css("a, button")).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        self.client.execute("document.activeElement.blur(); document.body.click();", vec![]).await.unwrap();
        out
    }

    /// The one-time secret on the page that shows a new key's.
    pub async fn new_secret(&self) -> String {
        for _ in 0..200 {
            if let Ok(e) = self.client.find(Locator::Id("new-secret")).await {
                return e.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let errors = self
            .client
            .execute("return Array.from(document.querySelectorAll('.field-error, .form-error')).map(e => e.id + ': ' + e.textContent).join(' | ');", vec![])
            .await
            .unwrap();
        panic!("no new secret on {}: {errors}", self.path().await);
    }

    /// Reads the clipboard by pasting it into a scratch field.
    pub async fn clipboard(&self) -> String {
        let script = "const a = document.createElement('textarea'); a.id = 'paste-probe'; a.setAttribute('aria-label', 'paste probe'); document.body.appendChild(a); a.focus();";
        self.client.execute(script, vec![]).await.unwrap();
        let probe = self.client.find(Locator::Id("paste-probe")).await.unwrap();
        probe.send_keys("\u{E009}v").await.unwrap();
        let text: String = probe.prop("value").await.unwrap().unwrap_or_default();
        self.client.execute("document.getElementById('paste-probe').remove();", vec![]).await.unwrap();
        text
    }

    /// Checks the page a person now sees: a screenshot named `name`, no
    /// error in the browser's console, no request off the server, no serious
    /// or critical accessibility violation.
    pub async fn check_page(&mut self, name: &str) {
        self.count += 1;
        let png = self.client.screenshot().await.unwrap();
        let file = self.shots.join(format!("{}-{:02}-{name}.png", self.prefix, self.count));
        std::fs::write(&file, png).unwrap();
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "console errors on {name}: {errors:#?}");
        let offsite: Vec<String> = self.offsite.lock().unwrap().iter().filter(|r| !browser_own(r)).cloned().collect();
        assert!(offsite.is_empty(), "requests off the server on {name}: {offsite:?}");
        let origin = self.base.clone();
        let resources: Vec<String> = serde_json::from_value(
            self.client
                .execute("return performance.getEntriesByType('resource').map(e => e.name);", vec![])
                .await
                .unwrap(),
        )
        .unwrap();
        let foreign: Vec<&String> = resources.iter().filter(|r| !r.starts_with(&origin)).collect();
        assert!(foreign.is_empty(), "resources from elsewhere on {name}: {foreign:?}");
        self.axe(name).await;
    }

    /// Runs axe-core over the page: no serious or critical violation.
    async fn axe(&self, name: &str) {
        let script = format!(
            "{AXE}\nconst done = arguments[arguments.length - 1];\
             axe.run(document, {{resultTypes: ['violations']}}).then(r => done(JSON.stringify(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => ({{id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}})))), e => done('error: ' + e));"
        );
        let result = self.client.execute_async(&script, vec![]).await.unwrap();
        let text = result.as_str().unwrap_or_default().to_owned();
        assert!(!text.starts_with("error"), "axe failed on {name}: {text}");
        let violations: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(violations, json!([]), "accessibility violations on {name}");
        // axe's own run must not leave errors behind either.
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "console errors after axe on {name}: {errors:#?}");
    }

    /// After a form the server refused: the browser logs the refusal's
    /// status (and nothing else may be wrong).
    pub async fn refused(&self, status: u16) {
        let errors = self.console_errors().await;
        let expected = format!("status of {status}");
        assert!(!errors.is_empty(), "the page was not refused with {status}");
        assert!(errors.iter().all(|e| e.contains(&expected)), "console errors: {errors:#?}");
    }

    /// The browser console's errors since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let url = format!("{}/session/{session}/se/log", self.driver_url);
        let logs: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        logs["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Copies the latest screenshot to `to` (the README's picture) when
    /// `KEYWARD_UPDATE_SCREENSHOTS` is set.
    pub async fn save_for_docs(&self, to: &str) {
        if std::env::var_os("KEYWARD_UPDATE_SCREENSHOTS").is_some() {
            let png = self.client.screenshot().await.unwrap();
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(to);
            std::fs::write(path, png).unwrap();
        }
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// The browser's own services (updates, sign-in, autofill, password leak
/// checks, clock) that Chromium calls by itself whatever the page, by the
/// domains they live under. Never the page's requests: the page's CSP
/// refuses those domains like any other, and its console and resource
/// timings are checked too.
const BROWSER_OWN: &[&str] = &["googleapis.com", "google.com", "gvt1.com", "gstatic.com"];

/// Whether a request line the proxy saw is one of the browser's own.
fn browser_own(request_line: &str) -> bool {
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let host = target.trim_start_matches("http://").trim_start_matches("https://");
    let host = host.split(['/', ':']).next().unwrap_or_default();
    BROWSER_OWN.iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// A string as an XPath literal (names may hold either quote).
fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        return format!("'{s}'");
    }
    if !s.contains('"') {
        return format!("\"{s}\"");
    }
    let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
    format!("concat({})", parts.join(", \"'\", "))
}
