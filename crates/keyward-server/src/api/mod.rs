//! The HTTP API: routes, the OpenAPI document generated from them, and the
//! cross-cutting layers (body limit, request log, panic guard, JSON 404/405).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use keyward_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::keys::KeyService;
use crate::verifier::Verifier;
use crate::workspaces::WorkspaceService;
use error::ApiError;

pub mod audit;
pub mod compat;
pub mod credits;
pub mod error;
pub mod extract;
pub mod forward_auth;
pub mod identities;
pub mod keys;
pub mod members;
pub mod oauth;
pub mod ops;
pub mod pgp;
pub mod roles;
pub mod verify;
pub mod views;
pub mod workspace;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<KeyService>,
    pub workspaces: Arc<WorkspaceService>,
    pub identities: Arc<crate::identities::IdentityService>,
    pub members: Arc<crate::members::MemberService>,
    pub roles: Arc<crate::roles::RoleService>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub insights: Arc<crate::insights::Insights>,
    pub oauth: Arc<crate::oauth::OAuthService>,
    pub pgp: Arc<crate::pgp::PgpService>,
    /// The configured public URL (the OAuth issuer), without a trailing slash.
    pub public_url: Option<String>,
    /// The configured public URL's origin (`scheme://host[:port]`), which
    /// cookie-authenticated requests may also name as their `Origin`.
    pub public_origin: Option<String>,
    pub verifier: Arc<Verifier>,
    pub store: Arc<dyn Store>,
    pub metrics: Option<PrometheusHandle>,
    pub forward_auth: Arc<forward_auth::ForwardAuthConfig>,
    /// Set on the dedicated forward-auth listener, whose callers are
    /// trusted gateways: no verifier key needed, keys of every workspace.
    pub trusted_listener: bool,
}

impl AppState {
    pub fn new(services: &crate::startup::Services, config: &crate::startup::ServerConfig) -> Self {
        AppState {
            keys: services.keys.clone(),
            workspaces: services.workspaces.clone(),
            identities: services.identities.clone(),
            members: services.members.clone(),
            roles: services.roles.clone(),
            audit: services.audit.clone(),
            insights: services.insights.clone(),
            oauth: services.oauth.clone(),
            pgp: services.pgp.clone(),
            public_url: config.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned()),
            public_origin: config.public_url.as_deref().map(origin_of),
            verifier: services.verifier.clone(),
            store: services.store.clone(),
            metrics: crate::telemetry::prometheus(),
            forward_auth: Arc::new(config.forward_auth.clone()),
            trusted_listener: false,
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or_default()),
        None => url.trim_end_matches('/').to_owned(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Self-hosted API key management and verification. Authenticate with \
            `Authorization: Bearer <API key>`; management needs `keys:manage` (the admin tier has it), \
            verification `keys:verify`. Errors are `{\"error\": \"...\", \"code\": \"...\"}`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(forward_auth::authorize),
    modifiers(&BearerAuth),
    tags(
        (name = "keys", description = "Create, list, edit, clone, roll, deactivate, revoke, delete and import keys"),
        (name = "verification", description = "Is this key good for this request?"),
        (name = "identities", description = "Customers whose keys share rate limits"),
        (name = "members", description = "Sign-in, sessions, invitations and the workspace's members"),
        (name = "roles", description = "Roles for members and keys, and the permission catalogue"),
        (name = "audit", description = "The audit log (hash-chained, signed checkpoints), its export, and the key hygiene report"),
        (name = "workspace", description = "The caller's workspace and its key policy"),
        (name = "pgp", description = "OpenPGP keys for file encryption: upload, and encrypt or decrypt files with them, streamed, as GnuPG reads and writes"),
        (name = "oauth", description = "OAuth 2.0 for machine clients: tokens, introspection, revocation, metadata, JWKS, and members' refresh tokens"),
        (name = "compatibility", description = "The `/api/api-keys` contract of a popular analytics API"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key or member JWT").build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new(crate::members::SESSION_COOKIE),
            )),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::get_key, keys::update_key, keys::delete_key))
        .routes(routes!(keys::clone_key))
        .routes(routes!(keys::roll_key))
        .routes(routes!(keys::deactivate_key))
        .routes(routes!(keys::activate_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::import_key))
        .routes(routes!(keys::key_usage))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::export_audit))
        .routes(routes!(audit::audit_public_key))
        .routes(routes!(audit::key_insights))
        .routes(routes!(audit::activity_log))
        .routes(routes!(credits::change_credits))
        .routes(routes!(identities::create_identity, identities::list_identities))
        .routes(routes!(identities::get_identity, identities::update_identity, identities::delete_identity))
        .routes(routes!(members::login))
        .routes(routes!(members::reauth))
        .routes(routes!(members::logout))
        .routes(routes!(members::get_session))
        .routes(routes!(members::list_members, members::invite_member))
        .routes(routes!(members::get_member, members::update_member, members::remove_member))
        .routes(routes!(members::accept_invitation))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(roles::update_role, roles::delete_role))
        .routes(routes!(roles::list_permissions))
        .routes(routes!(pgp::list_pgp_keys, pgp::upload_pgp_key))
        .routes(routes!(pgp::get_pgp_key, pgp::update_pgp_key, pgp::delete_pgp_key))
        .routes(routes!(pgp::public_pgp_key))
        .routes(routes!(pgp::encrypt))
        .routes(routes!(pgp::decrypt))
        .routes(routes!(keys::reveal_key))
        .routes(routes!(verify::verify_key))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(oauth::metadata))
        .routes(routes!(oauth::jwks))
        .routes(routes!(oauth::create_token, oauth::list_tokens))
        .routes(routes!(oauth::revoke_token))
        .routes(routes!(workspace::get_workspace, workspace::update_workspace))
        .routes(routes!(workspace::apply_expiry_policy))
        .routes(routes!(compat::list_api_keys, compat::create_api_key, compat::delete_api_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
}

/// The OpenAPI 3.1 document, generated from the handlers' annotations.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

fn with_forward_auth(router: Router<AppState>) -> Router<AppState> {
    let handler = axum::routing::any(forward_auth::authorize);
    router
        .route(forward_auth::PREFIX, handler.clone())
        .route(&format!("{}/", forward_auth::PREFIX), handler.clone())
        .route(&format!("{}/{{*rest}}", forward_auth::PREFIX), handler)
}

/// The complete application router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (router, api) = api_router().split_for_parts();
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
    )
}

/// The dedicated forward-auth listener: `/v1/authorize` and `/healthz` only.
pub fn forward_auth_router(mut state: AppState, max_body_bytes: usize) -> Router {
    state.trusted_listener = true;
    let router = with_forward_auth(Router::new()).route("/healthz", axum::routing::get(ops::healthz));
    finish(router, state, max_body_bytes)
}

fn finish(router: Router<AppState>, state: AppState, max_body_bytes: usize) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(refuse_unexpected_query))
        .layer(middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state)
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
];

async fn refuse_unexpected_query(req: Request, next: Next) -> Response {
    let has_query = req.uri().query().is_some_and(|q| !q.is_empty());
    if has_query && let Some(route) = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        let api = route.starts_with("/v1/") || route.starts_with("/api/");
        let exempt = route.starts_with(forward_auth::PREFIX)
            || QUERY_ENDPOINTS.iter().any(|(m, r)| *r == route && req.method().as_str() == *m);
        if api && !exempt {
            return ApiError::bad_request("unknown_query_parameter", "This endpoint takes no query parameters")
                .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed on this endpoint")
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "Internal server error").into_response()
}

/// Logs method, route pattern (never the raw URI, which may carry a key),
/// status and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::warn!(%method, route, status, micros, "request failed");
    } else {
        tracing::debug!(%method, route, status, micros, "request");
    }
    response
}
