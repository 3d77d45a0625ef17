//! `/v1/workspace`: the caller's workspace and its key policy.

use axum::extract::State;
use chrono::{DateTime, Utc};
use keyward_core::workspace::Workspace;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::views::double_option;
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
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
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
    principal.require("settings:read")?;
    Ok(axum::Json(
        state.workspaces.get(principal.workspace_id()).await?.into(),
    ))
}

#[utoipa::path(patch, path = "/v1/workspace", tag = "workspace", request_body = UpdateWorkspaceRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = WorkspaceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn update_workspace(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<UpdateWorkspaceRequest>,
) -> ApiResult<axum::Json<WorkspaceView>> {
    principal.require("settings:manage")?;
    let patch = WorkspacePatch {
        name: body.name,
        token_prefix: body.token_prefix,
        max_keys: body.max_keys,
        default_key_lifetime_days: body.default_key_lifetime_days,
        max_key_lifetime_days: body.max_key_lifetime_days,
    };
    Ok(axum::Json(
        state
            .workspaces
            .update(principal.workspace_id(), patch)
            .await?
            .into(),
    ))
}
