//! `/v1/workspace`: the caller's workspace and its key policy.

use axum::extract::State;
use chrono::{DateTime, Utc};
use keyward_core::workspace::Workspace;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::views::double_option;
use crate::app::AppState;
use crate::principal::Principal;
use crate::workspaces::WorkspacePatch;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    /// First part of this workspace's keys (`kw` → `kw_live_…`).
    pub token_prefix: String,
    /// Maximum number of live keys; null = unlimited.
    pub max_keys: Option<u32>,
    /// Lifetime of keys created without an expiry; null = never expire.
    pub default_key_lifetime_days: Option<u32>,
    /// Longest lifetime a key may have; null = no maximum.
    pub max_key_lifetime_days: Option<u32>,
    /// Every key must expire: created without an expiry it gets the default
    /// lifetime (refused when there is none); an edit cannot remove it.
    pub require_expiry: bool,
    /// Which permission each route of the protected API needs (forward-auth and `path` in verify).
    pub routes: Vec<RouteView>,
    /// Permissions a publishable (browser) key may hold.
    pub public_permissions: Vec<String>,
    /// Metadata fields forward-auth sends upstream as `X-Keyward-Meta-<Field>` headers.
    pub identity_metadata: Vec<String>,
    /// When wrong secrets lock a key.
    pub lockout: LockoutPatch,
    /// Keys may be created recoverable (their secret sealed under the
    /// master key, revealable by a member with keys:reveal).
    pub allow_recoverable: bool,
    /// The protected API's permissions by section; roles may name these
    /// (and the account permissions) only.
    pub permission_catalogue: Vec<CatalogueSectionView>,
    /// The site id: the workspace's FTP username (null: the workspace id is).
    #[schema(example = "site_abc123")]
    pub site_id: Option<String>,
    /// What a leaked key's report does: `revoke` (default), `roll` or `notify`.
    #[schema(example = "revoke")]
    pub leak_policy: &'static str,
    /// Days before a key expires that `key.expiring` is sent (each once).
    #[schema(example = json!([14, 1]))]
    pub expiry_notice_days: Vec<u32>,
    /// `key.credits_low` when a key's remaining credits fall to this many
    /// or fewer (null: never).
    #[schema(example = 10)]
    pub credits_low_threshold: Option<i64>,
    /// `key.unused` after this many days without a use (0: never).
    #[schema(example = 90)]
    pub unused_days: u32,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        WorkspaceView {
            id: w.id,
            name: w.name,
            token_prefix: w.token_prefix,
            max_keys: w.policy.max_keys,
            default_key_lifetime_days: w.policy.default_key_lifetime_days,
            max_key_lifetime_days: w.policy.max_key_lifetime_days,
            require_expiry: w.policy.require_expiry,
            routes: w
                .routes
                .iter()
                .map(|r| RouteView {
                    method: r.method.clone(),
                    path: r.path.clone(),
                    permission: r.permission.to_string(),
                })
                .collect(),
            public_permissions: w.public_permissions.iter().map(ToString::to_string).collect(),
            identity_metadata: w.identity_metadata,
            lockout: LockoutPatch {
                threshold: Some(w.lockout.threshold),
                window_minutes: Some(w.lockout.window_minutes),
            },
            allow_recoverable: w.allow_recoverable,
            permission_catalogue: w
                .catalogue
                .into_iter()
                .map(|s| CatalogueSectionView { name: s.name, actions: s.actions })
                .collect(),
            site_id: w.site_id,
            leak_policy: w.notices.leak_policy.as_str(),
            expiry_notice_days: w.notices.expiry_notice_days.clone(),
            credits_low_threshold: w.notices.credits_low_threshold,
            unused_days: w.notices.unused_days,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A section of the permission catalogue and its actions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSectionView {
    #[schema(example = "campaigns")]
    pub name: String,
    #[schema(example = json!(["get", "post", "put"]))]
    pub actions: Vec<String>,
}

/// A route scope: requests matching `method` and `path` need `permission`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteView {
    /// An HTTP method, or `*` for any.
    #[schema(example = "GET")]
    pub method: String,
    /// A path pattern: literal segments, `*` (one segment), `**` (any number).
    #[schema(example = "/api/v2/campaigns/**")]
    pub path: String,
    /// The permission such requests need.
    #[schema(example = "campaigns:read")]
    pub permission: String,
}

/// Settings to change; `null` clears a limit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWorkspaceRequest {
    pub name: Option<String>,
    /// Applies to keys created or rolled from now on.
    pub token_prefix: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_keys: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub default_key_lifetime_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_key_lifetime_days: Option<Option<u32>>,
    /// Replaces the route scopes (first match wins, in order).
    pub routes: Option<Vec<RouteView>>,
    /// Replaces the permissions publishable keys may hold.
    pub public_permissions: Option<Vec<String>>,
    /// Replaces the metadata fields sent upstream by forward-auth.
    pub identity_metadata: Option<Vec<String>>,
    /// Changes when wrong secrets lock a key (the fields given).
    pub lockout: Option<LockoutPatch>,
    /// Every key must expire (needs defaultKeyLifetimeDays or
    /// maxKeyLifetimeDays). Keys that exist keep their dates until
    /// `POST /v1/workspace/apply-expiry-policy`.
    pub require_expiry: Option<bool>,
    /// Allow recoverable keys (needs a master key).
    pub allow_recoverable: Option<bool>,
    /// Replaces the permission catalogue: up to 200 sections of up to 50
    /// actions each.
    pub permission_catalogue: Option<Vec<CatalogueSectionView>>,
    /// The site id, unique among workspaces: 1–64 letters, digits, `.`,
    /// `_` or `-`, not beginning with `ws_`. It is the FTP username; `null`
    /// makes the workspace id the username again.
    #[serde(default, deserialize_with = "super::views::double_option")]
    #[schema(value_type = Option<String>)]
    pub site_id: Option<Option<String>>,
    /// What a leaked key's report does: `revoke`, `roll` (a new secret at
    /// once, sealed for reveal when the key is recoverable) or `notify`.
    pub leak_policy: Option<String>,
    /// Up to 5 numbers of days (1–365) before expiry to send `key.expiring`.
    pub expiry_notice_days: Option<Vec<u32>>,
    /// Remaining credits at or below which `key.credits_low` is sent; null: never.
    #[serde(default, deserialize_with = "super::views::double_option")]
    #[schema(value_type = Option<i64>)]
    pub credits_low_threshold: Option<Option<i64>>,
    /// Days without a use before `key.unused` (0–3650; 0: never).
    pub unused_days: Option<u32>,
}

/// Wrong secrets for one key that lock it: `threshold` (1–1000) within
/// `windowMinutes` (1–1440), counted across nodes. Default 10 in 15.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockoutPatch {
    #[schema(example = 10)]
    pub threshold: Option<u32>,
    #[schema(example = 15)]
    pub window_minutes: Option<u32>,
}

#[utoipa::path(get, path = "/v1/workspace", tag = "workspace",
    security(("bearer" = [])),
    responses(
        (status = 200, body = WorkspaceView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn get_workspace(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<WorkspaceView>> {
    Ok(axum::Json(state.workspaces.get(&principal).await?.into()))
}

#[utoipa::path(patch, path = "/v1/workspace", tag = "workspace", request_body = UpdateWorkspaceRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = WorkspaceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Another workspace has the siteId (duplicate_site_id)", body = ErrorBody),
    ))]
pub async fn update_workspace(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateWorkspaceRequest>,
) -> ApiResult<axum::Json<WorkspaceView>> {
    let patch = WorkspacePatch {
        name: body.name,
        token_prefix: body.token_prefix,
        max_keys: body.max_keys,
        default_key_lifetime_days: body.default_key_lifetime_days,
        max_key_lifetime_days: body.max_key_lifetime_days,
        routes: body.routes.map(|rs| rs.into_iter().map(|r| (r.method, r.path, r.permission)).collect()),
        public_permissions: body.public_permissions,
        identity_metadata: body.identity_metadata,
        lockout: body.lockout.map(|l| (l.threshold, l.window_minutes)),
        require_expiry: body.require_expiry,
        allow_recoverable: body.allow_recoverable,
        catalogue: body.permission_catalogue.map(|v| {
            v.into_iter()
                .map(|s| keyward_core::workspace::CatalogueSection { name: s.name, actions: s.actions })
                .collect()
        }),
        site_id: body.site_id,
        leak_policy: body.leak_policy,
        expiry_notice_days: body.expiry_notice_days,
        credits_low_threshold: body.credits_low_threshold,
        unused_days: body.unused_days,
    };
    Ok(axum::Json(state.workspaces.update(&principal, patch).await?.into()))
}

/// What applying the expiry policy changed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// Live keys that got the policy's date.
    pub updated: u64,
}

#[utoipa::path(post, path = "/v1/workspace/apply-expiry-policy", tag = "workspace",
    description = "Gives every live key without an expiry (when expiry is required or a maximum is set), \
        or expiring later than the maximum lifetime allows, the policy's date: the default lifetime from now, \
        else the maximum.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = AppliedPolicy),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The workspace sets no default or maximum lifetime (no_expiry_policy)",
            body = ErrorBody),
    ))]
pub async fn apply_expiry_policy(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<AppliedPolicy>> {
    Ok(axum::Json(AppliedPolicy { updated: state.workspaces.apply_expiry_policy(&principal).await? }))
}
