//! The HTTP API: its routes and the OpenAPI document generated from them.
//! [`crate::app`] mounts it beside the console.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub mod audit;
pub mod compat;
pub mod credits;
pub mod error;
pub mod extract;
pub mod forward_auth;
pub mod idempotency;
pub mod identities;
pub mod integrations;
pub mod keys;
pub mod leaks;
pub mod members;
pub mod oauth;
pub mod ops;
pub mod pgp;
pub mod replication;
pub mod roles;
pub mod verify;
pub mod views;
pub mod webhooks;
pub mod workspace;

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
        (name = "replication", description = "Embedded verifiers (the keyward-verifier crate): the stream of verification records and their changes, and the uses they report"),
        (name = "identities", description = "Customers whose keys share rate limits"),
        (name = "members", description = "Sign-in, sessions, invitations and the workspace's members"),
        (name = "roles", description = "Roles for members and keys, and the permission catalogue"),
        (name = "audit", description = "The audit log (hash-chained, signed checkpoints), its export, and the key hygiene report"),
        (name = "workspace", description = "The caller's workspace and its key policy"),
        (name = "pgp", description = "OpenPGP keys for file encryption: upload, and encrypt or decrypt files with them, streamed, as GnuPG reads and writes"),
        (name = "integrations", description = "The workspace's JavaScript API key, default REST API key and FTP access, and the FTP servers' login check"),
        (name = "webhooks", description = "Signed webhooks for key and member events, from a durable outbox: endpoints, secrets, the delivery log, resends and test events"),
        (name = "leaks", description = "Leaked keys stop themselves: code hosts' secret-scanning alerts, a member's report, revocation by whoever holds the key"),
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

pub(crate) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::get_key, keys::update_key, keys::delete_key))
        .routes(routes!(keys::clone_key))
        .routes(routes!(keys::roll_key))
        .routes(routes!(keys::deactivate_key))
        .routes(routes!(keys::activate_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(leaks::self_revoke))
        .routes(routes!(leaks::report_leak))
        .routes(routes!(leaks::github_alert))
        .routes(routes!(leaks::gitlab_alert))
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
        .routes(routes!(integrations::get_integrations))
        .routes(routes!(integrations::create_rest_key))
        .routes(routes!(integrations::rotate_ftp))
        .routes(routes!(integrations::reveal_ftp))
        .routes(routes!(integrations::disable_ftp))
        .routes(routes!(integrations::enable_ftp))
        .routes(routes!(integrations::authenticate_ftp))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::get_delivery))
        .routes(routes!(webhooks::resend_delivery))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(verify::verify_key))
        .routes(routes!(verify::verify_batch))
        .routes(routes!(replication::stream))
        .routes(routes!(replication::report_usage))
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

/// The API's routes and its OpenAPI 3.1 document, generated from the
/// handlers' annotations (with the `Idempotency-Key` header on every
/// operation that takes it).
pub(crate) fn routes_and_document() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = api_router().split_for_parts();
    idempotency::IdempotencyHeader.modify(&mut document);
    (router, document)
}

/// The OpenAPI 3.1 document, generated from the handlers' annotations.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}
