//! Spawns the real server on a random port with a fresh database and talks
//! HTTP to it. Every test runs once per backend: `backend_tests!(a, b)`
//! generates `sqlite::a`, `postgres::a`, … from the one body `a`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::hash::SecretHasher;
use keyward_server::clock::ManualClock;
use keyward_server::{Application, ServerConfig};
use keyward_store::testing::{Backend, TestDb, postgres_base_url};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

pub struct TestApp {
    pub addr: SocketAddr,
    /// The trusted forward-auth listener.
    pub forward_auth_addr: SocketAddr,
    /// Envoy's ext_authz over gRPC.
    pub grpc_addr: SocketAddr,
    pub admin_key: String,
    pub workspace_id: String,
    pub services: keyward_server::Services,
    /// The server's clock: stands still until the test moves it.
    pub clock: Arc<ManualClock>,
    pub hasher: SecretHasher,
    /// The database's URL.
    pub url: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: Option<TestDb>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error in {}", self.body))
    }
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_else(|| panic!("no code in {}", self.body))
    }
    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_else(|| panic!("no {field} in {}", self.body)).to_owned()
    }
    /// Asserts an error response with this status and message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.error(), message, "body: {}", self.body);
        assert!(!self.code().is_empty());
    }
}

/// A key the test created: its id and its secret.
pub struct Key {
    pub id: String,
    pub secret: String,
    pub body: Value,
}

tokio::task_local! {
    static BACKEND: Backend;
    static REDIS: String;
    /// The running test's name, for the test run's accounting.
    static TEST: &'static str;
}

/// Generates one test per backend for each named `async fn` of the module.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    $crate::helpers::on_backend(keyward_store::testing::Backend::Sqlite, test, super::$name()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    $crate::helpers::on_backend(keyward_store::testing::Backend::Postgres, test, super::$name()).await
                }
            )*
        }
    };
}

/// Like `backend_tests!`, plus `redis::…`: each test once more on SQLite
/// with rate limits shared through Redis (`KEYWARD_TEST_REDIS_URL`).
macro_rules! limit_tests {
    ($($name:ident),* $(,)?) => {
        backend_tests!($($name),*);
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    $crate::helpers::with_redis(test, super::$name()).await
                }
            )*
        }
    };
}

/// Runs `test` with [`spawn_app`] on SQLite and Redis; skips (with a printed
/// reason) where no test Redis is configured.
pub async fn with_redis(name: &'static str, test: impl std::future::Future<Output = ()>) {
    let Some(url) = keyward_store::testing::redis_url(name) else { return };
    TEST.scope(name, REDIS.scope(url, BACKEND.scope(Backend::Sqlite, test))).await
}

/// Whether the running test shares its limits through Redis.
pub fn uses_redis() -> bool {
    REDIS.try_with(|_| ()).is_ok()
}

/// Runs `test` with [`spawn_app`] on `backend`; PostgreSQL tests skip (with
/// a printed reason) where no test database is configured.
pub async fn on_backend(backend: Backend, name: &'static str, test: impl std::future::Future<Output = ()>) {
    if backend == Backend::Postgres && postgres_base_url(name).is_none() {
        return;
    }
    TEST.scope(name, BACKEND.scope(backend, test)).await
}

/// The backend of the running test.
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Keys a new workspace has: its admin key, its JavaScript key and its
/// default REST key.
pub const BOOTSTRAP_KEYS: usize = 3;

/// The bootstrapped workspace's owner.
pub const OWNER_EMAIL: &str = "owner@example.com";
pub const OWNER_PASSWORD: &str = "correct horse battery staple";

/// The test servers' master key (recoverable keys).
pub const MASTER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with settings changed by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    spawn_app_with_hash_key(&keyward_core::ids::random_bytes::<32>(), adjust).await
}

/// [`spawn_app_with`] under a hash key the test knows (to run the CLI on
/// the same database).
pub async fn spawn_app_with_hash_key(key: &[u8; 32], adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let test = TEST.try_with(|t| *t).unwrap_or("spawn_app");
    let db = TestDb::new(backend(), test).await.expect("the backend is available");
    let hasher = SecretHasher::new(key).unwrap();
    start(db.url.clone(), hasher, Arc::new(ManualClock::new()), adjust, Some(db)).await
}

async fn start(
    url: String,
    hasher: SecretHasher,
    clock: Arc<ManualClock>,
    adjust: impl FnOnce(&mut ServerConfig),
    db: Option<TestDb>,
) -> TestApp {
    let store = keyward_store::open(&url).await.unwrap();
    let mut config = ServerConfig {
        clock: clock.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        usage_flush_interval: Duration::from_millis(50),
        negative_cache_ttl: Duration::from_millis(200),
        forward_auth_listen: Some("127.0.0.1:0".parse().unwrap()),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        redis_url: REDIS.try_with(Clone::clone).ok(),
        master_keys: Some(Arc::new(keyward_core::sealed::Keyring::parse(MASTER_KEY).unwrap())),
        ..ServerConfig::default()
    };
    adjust(&mut config);
    let app = Application::build(config, store, hasher.clone()).await.unwrap();
    let services = app.services().clone();
    let owner = keyward_server::workspaces::OwnerSpec {
        email: OWNER_EMAIL.to_owned(),
        password: Some(OWNER_PASSWORD.to_owned()),
    };
    // A sibling finds the workspace bootstrapped already.
    let (admin_key, workspace_id) = match services.workspaces.bootstrap("Test", &owner).await.unwrap() {
        Some(created) => (created.secret.expose().to_owned(), created.workspace.id),
        None => (String::new(), String::new()),
    };
    let addr = app.local_addr();
    let forward_auth_addr = app.forward_auth_addr().unwrap();
    let grpc_addr = app.grpc_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        forward_auth_addr,
        grpc_addr,
        admin_key,
        workspace_id,
        services,
        clock,
        hasher,
        url,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        server: Some(server),
        _db: db,
    }
}

impl TestApp {
    /// A second server on this one's database, hash key and clock, with
    /// settings changed by `adjust` (it shares this one's admin key).
    pub async fn sibling(&self, adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let mut app = start(self.url.clone(), self.hasher.clone(), self.clock.clone(), adjust, None).await;
        app.admin_key = self.admin_key.clone();
        app.workspace_id = self.workspace_id.clone();
        app
    }

    /// The server's time, `secs` seconds from now, as RFC 3339.
    pub fn in_secs(&self, secs: i64) -> String {
        use keyward_server::clock::Clock;
        (self.clock.now() + chrono::Duration::seconds(secs)).to_rfc3339()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        self.send(req, body).await
    }

    /// A request with the given headers (a cookie, an Origin) and no key.
    pub async fn call_with(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req, body).await
    }

    /// Signs in; the response and the session cookie (`name=value`).
    pub async fn login(&self, email: &str, password: &str, extra: Value) -> (Resp, Option<String>) {
        let mut body = json!({"email": email, "password": password});
        body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        let resp = self.call(Method::POST, "/v1/auth/login", None, Some(body)).await;
        let cookie = resp.headers.get("set-cookie").map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
        (resp, cookie)
    }

    /// A bearer JWT of a member's fresh sign-in.
    pub async fn member_token(&self, email: &str, password: &str) -> String {
        let (resp, _) = self.login(email, password, json!({"token": true})).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.str("token")
    }

    /// The owner's bearer token (a fresh sign-in).
    pub async fn owner_token(&self) -> String {
        self.member_token(OWNER_EMAIL, OWNER_PASSWORD).await
    }

    /// `POST /v1/members` by the owner: only a person invites people.
    pub async fn invite(&self, body: Value) -> Resp {
        let owner = self.owner_token().await;
        self.call(Method::POST, "/v1/members", Some(&owner), Some(body)).await
    }

    /// An invitation to `workspace_id` made by the operator (as `keyward
    /// member invite` does: a workspace made with only an admin key has
    /// no member to invite anyone); its token.
    pub async fn operator_invite(&self, workspace_id: &str, email: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let operator = keyward_server::principal::Principal::system(workspace_id);
        self.services.members.invite(&operator, email, email, &roles).await.unwrap().token
    }

    /// Invites `email` with `roles` (by the owner), accepts with
    /// `password`; the new member's id.
    pub async fn add_member(&self, email: &str, password: &str, roles: &[&str]) -> String {
        let r = self.invite(json!({"email": email, "name": email, "roles": roles})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let token = r.str("token");
        let body = json!({"token": token, "password": password});
        let a = self.call(Method::POST, "/v1/invitations/accept", None, Some(body)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["member"]["id"].as_str().unwrap().to_owned()
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, body: Option<Value>) -> Resp {
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        assert!(status.as_u16() < 500, "server error {status}: {body}");
        Resp { status, headers, body }
    }

    /// Sends a raw body with the admin key.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(&self.admin_key).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        assert!(status.as_u16() < 500, "server error {status}: {body}");
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, Some(&self.admin_key.clone()), None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(&self.admin_key.clone()), Some(body)).await
    }
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.call(Method::POST, path, Some(&self.admin_key.clone()), None).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(&self.admin_key.clone()), Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(&self.admin_key.clone()), None).await
    }

    /// Creates a key with these settings (name added when missing).
    pub async fn create_key(&self, mut settings: Value) -> Key {
        if settings.get("name").is_none() {
            settings["name"] = json!(format!("key {}", keyward_core::ids::random_base62(8)));
        }
        let r = self.post("/v1/keys", settings).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        Key { id: r.str("id"), secret: r.str("secret"), body: r.body }
    }

    pub async fn verify(&self, key: &str, extra: Value) -> Value {
        let mut body = json!({ "key": key });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let r = self.post("/v1/keys/verify", body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// Asks the trusted forward-auth listener about a Traefik-style
    /// request to `/api/x` presenting `key`.
    pub async fn authorize(&self, key: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}/v1/authorize", self.forward_auth_addr))
            .header("x-forwarded-uri", "/api/x")
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
    }

    pub async fn verify_code(&self, key: &str) -> String {
        self.verify(key, json!({})).await["code"].as_str().unwrap().to_owned()
    }

    pub async fn key_count(&self) -> usize {
        self.get("/v1/keys?limit=200").await.body["data"].as_array().unwrap().len()
    }

    /// A second workspace in the same deployment, with its own admin key.
    pub async fn other_workspace(&self) -> (String, String) {
        let created = self.services.workspaces.create_with_admin_key("Other").await.unwrap();
        (created.workspace.id, created.secret.expose().to_owned())
    }

    /// Stops the server (gracefully) and keeps its database: a
    /// [`TestApp::sibling`] starts another on it.
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub async fn stop(mut self) {
        self.stop_server().await;
    }
}

/// Waits until `check` holds, polling; panics after 5 s.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 5 s");
}
