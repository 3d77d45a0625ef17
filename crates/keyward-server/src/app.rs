//! The application: one context every request reaches, the router that
//! mounts the API and the console side by side, and the layers around both
//! (request log, panic guard, JSON 404/405).

use keyward_core::Code;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::error::ApiError;
use crate::api::forward_auth::{self, ForwardAuthConfig};
use crate::keys::KeyService;
use crate::verifier::Verifier;
use crate::workspaces::WorkspaceService;

/// What every handler can reach, built once at start.
#[derive(Clone)]
pub struct AppContext {
    pub keys: Arc<KeyService>,
    pub workspaces: Arc<WorkspaceService>,
    pub identities: Arc<crate::identities::IdentityService>,
    pub members: Arc<crate::members::MemberService>,
    pub roles: Arc<crate::roles::RoleService>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub insights: Arc<crate::insights::Insights>,
    pub oauth: Arc<crate::oauth::OAuthService>,
    pub pgp: Arc<crate::pgp::PgpService>,
    pub integrations: Arc<crate::integrations::IntegrationsService>,
    pub webhooks: Arc<crate::webhooks::WebhookService>,
    pub leaks: Arc<crate::leaks::LeakService>,
    pub idempotency: Arc<crate::idempotency::IdempotencyService>,
    /// The configured public URL (the OAuth issuer), without a trailing slash.
    pub public_url: Option<String>,
    /// The configured public URL's origin (`scheme://host[:port]`), which
    /// cookie-authenticated requests may also name as their `Origin`.
    pub public_origin: Option<String>,
    pub verifier: Arc<Verifier>,
    pub store: Arc<dyn Store>,
    pub metrics: Option<PrometheusHandle>,
    pub forward_auth: ForwardAuthConfig,
    /// Set on the dedicated forward-auth listener, whose callers are
    /// trusted gateways: no verifier key needed, keys of every workspace.
    pub trusted_listener: bool,
    /// The largest request body a JSON endpoint reads (the router's limit).
    pub max_body_bytes: usize,
}

/// The router's state: one `Arc`, so that handing it to a request is one
/// atomic increment and no allocation.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

impl AppState {
    pub fn new(services: &crate::startup::Services, config: &crate::startup::ServerConfig) -> Self {
        AppState(Arc::new(AppContext {
            keys: services.keys.clone(),
            workspaces: services.workspaces.clone(),
            identities: services.identities.clone(),
            members: services.members.clone(),
            roles: services.roles.clone(),
            audit: services.audit.clone(),
            insights: services.insights.clone(),
            oauth: services.oauth.clone(),
            pgp: services.pgp.clone(),
            integrations: services.integrations.clone(),
            webhooks: services.webhooks.clone(),
            leaks: services.leaks.clone(),
            idempotency: services.idempotency.clone(),
            public_url: config.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned()),
            public_origin: config.public_url.as_deref().map(origin_of),
            verifier: services.verifier.clone(),
            store: services.store.clone(),
            metrics: crate::telemetry::prometheus(),
            forward_auth: config.forward_auth.clone(),
            trusted_listener: false,
            max_body_bytes: config.max_body_bytes,
        }))
    }

    /// The same context for the trusted forward-auth listener.
    pub(crate) fn trusted(&self) -> Self {
        AppState(Arc::new(AppContext { trusted_listener: true, ..(*self.0).clone() }))
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or_default()),
        None => url.trim_end_matches('/').to_owned(),
    }
}

fn with_forward_auth(router: Router<AppState>) -> Router<AppState> {
    let handler = axum::routing::any(forward_auth::authorize);
    router
        .route(forward_auth::PREFIX, handler.clone())
        .route(&format!("{}/", forward_auth::PREFIX), handler.clone())
        .route(&format!("{}/{{*rest}}", forward_auth::PREFIX), handler)
}

/// The complete application: the API, forward-auth, the console and the docs.
pub fn router(state: AppState, max_body_bytes: usize) -> App {
    let (router, api) = crate::api::routes_and_document();
    finish(
        with_forward_auth(router).merge(crate::console::routes()).merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", api)
                // No request off the server: Swagger UI's default validator badge
                // calls a public service.
                .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")),
        ),
        state,
        max_body_bytes,
        true,
    )
}

/// The dedicated forward-auth listener: `/v1/authorize` and `/healthz` only.
pub fn forward_auth_router(state: &AppState, max_body_bytes: usize) -> App {
    let router = with_forward_auth(Router::new()).route("/healthz", axum::routing::get(crate::api::ops::healthz));
    finish(router, state.trusted(), max_body_bytes, false)
}

fn finish(router: Router<AppState>, state: AppState, max_body_bytes: usize, verify: bool) -> App {
    let state = match state.max_body_bytes == max_body_bytes {
        true => state,
        false => AppState(Arc::new(AppContext { max_body_bytes, ..(*state.0).clone() })),
    };
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer, applied once: each `Router::layer` call wraps every
        // route in another boxed service, and a request clones every box.
        // No `DefaultBodyLimit`: it would insert an extension into every
        // request. The API's extractors read under the limit themselves;
        // the others are given it (`api::extract::with_body_limit`). The
        // panic guard is `App`'s.
        .layer(EdgeLayer { state: state.clone() })
        .with_state(state.clone());
    App { router, state, verify, peer: None }
}

/// The application as served: its router, with the requests keyward exists
/// to answer taken before it: `POST /v1/keys/verify` and forward-auth's
/// `/v1/authorize…`. They run the same extractors and handlers, edge (query
/// refusal, request log) and panic guard as a routed request, without the
/// router's cost per request: the route lookup, the matched-path,
/// parameter and peer-address extensions, a cloned boxed route and a boxed
/// handler future.
///
/// `axum::serve` makes one copy per connection, which knows its peer.
#[derive(Clone)]
pub struct App {
    router: Router,
    state: AppState,
    /// Whether `POST /v1/keys/verify` is served here (the forward-auth
    /// listener serves only forward-auth).
    verify: bool,
    /// The connection's peer (`None` before `axum::serve` made a
    /// connection's copy: the request may carry it as `ConnectInfo`).
    peer: Option<SocketAddr>,
}

/// A request the app answers without its router, and the route pattern
/// it logs.
#[derive(Clone, Copy)]
enum Direct {
    Verify,
    Authorize(&'static str),
}

impl App {
    fn direct(&self, req: &Request) -> Option<Direct> {
        let path = req.uri().path();
        if self.verify && path == "/v1/keys/verify" && req.method() == Method::POST {
            return Some(Direct::Verify);
        }
        // The router's three forward-auth routes, every method but CONNECT.
        let rest = path.strip_prefix(forward_auth::PREFIX)?;
        let pattern = match rest {
            "" => forward_auth::PREFIX,
            "/" => FORWARD_AUTH_SLASH,
            _ if rest.starts_with('/') => FORWARD_AUTH_REST,
            _ => return None,
        };
        (req.method() != Method::CONNECT).then_some(Direct::Authorize(pattern))
    }
}

const FORWARD_AUTH_SLASH: &str = "/v1/authorize/";
const FORWARD_AUTH_REST: &str = "/v1/authorize/{*rest}";

impl<'a> tower::Service<axum::serve::IncomingStream<'a, tokio::net::TcpListener>> for App {
    type Response = App;
    type Error = Infallible;
    type Future = std::future::Ready<Result<App, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: axum::serve::IncomingStream<'a, tokio::net::TcpListener>) -> Self::Future {
        std::future::ready(Ok(App { peer: Some(*stream.remote_addr()), ..self.clone() }))
    }
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Guarded;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Guarded {
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let peer = self.peer.or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0));
            match (self.direct(&req), peer) {
                (Some(Direct::Verify), _) => {
                    Answer::Direct { answer: Box::pin(verify_directly(self.state.clone(), peer, req)) }
                }
                (Some(Direct::Authorize(route)), Some(peer)) => {
                    Answer::Direct { answer: Box::pin(authorize_directly(self.state.clone(), peer, route, req)) }
                }
                _ => {
                    if let Some(peer) = self.peer {
                        req.extensions_mut().insert(ConnectInfo(peer));
                    }
                    Answer::Routed { answer: tower::Service::call(&mut self.router, req) }
                }
            }
        }));
        Guarded { answer: called.unwrap_or_else(|_| Answer::Ready { response: Some(panic_response()) }) }
    }
}

async fn verify_directly(state: AppState, peer: Option<SocketAddr>, req: Request) -> Response {
    if has_query(&req) {
        return query_refusal();
    }
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let response = match crate::api::extract::principal(&parts, &state, peer).await {
        Err(refused) => refused.into_response(),
        Ok(principal) => {
            use axum::extract::FromRequest;
            match crate::api::extract::ApiJson::from_request(Request::from_parts(parts, body), &state).await {
                Err(refused) => refused.into_response(),
                Ok(body) => {
                    crate::api::verify::verify_key(axum::extract::State(state), principal, body).await.into_response()
                }
            }
        }
    };
    log_request(&Method::POST, Some("/v1/keys/verify"), started, response.status());
    response
}

async fn authorize_directly(state: AppState, peer: SocketAddr, route: &'static str, req: Request) -> Response {
    let started = Instant::now();
    let (parts, _) = req.into_parts();
    let method = parts.method.clone();
    let response = forward_auth::answer(&state, peer, parts).await;
    log_request(&method, Some(route), started, response.status());
    response
}

pin_project_lite::pin_project! {
    /// An answer, with a panic in its handler answered as a 500.
    pub struct Guarded {
        #[pin]
        answer: Answer,
    }
}

pin_project_lite::pin_project! {
    #[project = AnswerProjection]
    enum Answer {
        Direct { answer: Pin<Box<dyn Future<Output = Response> + Send>> },
        Routed { #[pin] answer: axum::routing::future::RouteFuture<Infallible> },
        Ready { response: Option<Response> },
    }
}

impl Future for Guarded {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let answer = self.project().answer;
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match answer.project() {
            AnswerProjection::Direct { answer } => answer.as_mut().poll(cx),
            AnswerProjection::Routed { answer } => answer.poll(cx).map(|Ok(response)| response),
            AnswerProjection::Ready { response } => Poll::Ready(response.take().expect("polled after it was ready")),
        }));
        Poll::Ready(Ok(match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => response,
            Err(_) => panic_response(),
        }))
    }
}

/// Endpoints that read a query string (each refuses parameters it does not
/// know); every other API endpoint refuses any query string, as it would an
/// unknown body field. Gateways' forward-auth, the docs and the operations
/// endpoints are left alone.
const QUERY_ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/v1/keys"),
    ("GET", "/v1/identities"),
    ("DELETE", "/api/api-keys"),
    ("GET", "/v1/keys/{id}/usage"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/export"),
    ("GET", "/api/activity-log"),
    ("POST", "/v1/pgp-keys/{id}/encrypt"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
    ("GET", "/v1/replication/stream"),
];

/// What every request passes through: a body that may be large read on
/// after an early answer (`linger`), a query string only where the
/// endpoint reads one, an `Idempotency-Key` where the operation takes one,
/// then the request log. A tower service of its own: `middleware::from_fn`
/// clones and boxes the inner service and boxes its future on every
/// request (here only a request with an `Idempotency-Key` is boxed).
#[derive(Clone)]
struct EdgeLayer {
    state: AppState,
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, state: self.state.clone() }
    }
}

#[derive(Clone)]
struct Edge<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if crate::linger::may_be_large(req.headers()) {
            let body = std::mem::take(req.body_mut());
            *req.body_mut() = crate::linger::lingering(body);
        }
        if let Some(refused) = unexpected_query(&req) {
            return EdgeFuture::Refused { response: Some(refused) };
        }
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let started = Instant::now();
        if req.headers().contains_key(crate::api::idempotency::HEADER)
            && route.as_ref().is_some_and(|r| crate::api::idempotency::takes_key(method.as_str(), r.as_str()))
        {
            let answer = crate::api::idempotency::answer(self.state.clone(), self.inner.clone(), req);
            return EdgeFuture::Idempotent { answer: Box::pin(answer), method, route, started };
        }
        EdgeFuture::Running { inner: self.inner.call(req), method, route, started }
    }
}

pin_project_lite::pin_project! {
    #[project = EdgeProjection]
    enum EdgeFuture<F> {
        Refused { response: Option<Response> },
        Running { #[pin] inner: F, method: Method, route: Option<MatchedPath>, started: Instant },
        Idempotent {
            answer: Pin<Box<dyn Future<Output = Response> + Send>>,
            method: Method,
            route: Option<MatchedPath>,
            started: Instant,
        },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for EdgeFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EdgeProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("polled after it was ready")))
            }
            EdgeProjection::Running { inner, method, route, started } => {
                let Ok(response) = std::task::ready!(inner.poll(cx));
                log_request(method, route.as_ref().map(MatchedPath::as_str), *started, response.status());
                Poll::Ready(Ok(response))
            }
            EdgeProjection::Idempotent { answer, method, route, started } => {
                let response = std::task::ready!(answer.as_mut().poll(cx));
                log_request(method, route.as_ref().map(MatchedPath::as_str), *started, response.status());
                Poll::Ready(Ok(response))
            }
        }
    }
}

fn unexpected_query(req: &Request) -> Option<Response> {
    if has_query(req)
        && let Some(route) = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str)
    {
        let api = route.starts_with("/v1/") || route.starts_with("/api/");
        let exempt = route.starts_with(forward_auth::PREFIX)
            || QUERY_ENDPOINTS.iter().any(|(m, r)| *r == route && req.method().as_str() == *m);
        if api && !exempt {
            return Some(query_refusal());
        }
    }
    None
}

fn has_query(req: &Request) -> bool {
    req.uri().query().is_some_and(|q| !q.is_empty())
}

fn query_refusal() -> Response {
    ApiError::bad_request(Code::UnknownQueryParameter, "This endpoint takes no query parameters").into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, Code::NotFound, "No such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, Code::MethodNotAllowed, "Method not allowed on this endpoint")
}

fn panic_response() -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::InternalError, "Internal server error").into_response()
}

/// Logs method, route pattern (never the raw URI, which may carry a key),
/// status and duration. The route is the router's own shared string: no
/// copy per request.
fn log_request(method: &Method, route: Option<&str>, started: Instant, status: StatusCode) {
    let status = status.as_u16();
    let route = route.unwrap_or("<unmatched>");
    if status >= 500 {
        let micros = started.elapsed().as_micros() as u64;
        tracing::warn!(%method, route, status, micros, "request failed");
    } else {
        tracing::debug!(%method, route, status, micros = started.elapsed().as_micros() as u64, "request");
    }
}
