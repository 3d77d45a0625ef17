//! `/v1/roles` and `/v1/permissions`: roles for members and keys, and the
//! permission catalogue they are drawn from.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyward_core::member::ACCOUNT_PERMISSIONS;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::views::double_option;
use super::workspace::CatalogueSectionView;
use crate::app::AppState;
use crate::principal::Principal;
use crate::roles::{RoleEntry, RolePatch};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    /// `rol_…`; a built-in role's id is its name.
    #[schema(example = "rol_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    #[schema(example = "editor-eu")]
    pub name: String,
    pub description: Option<String>,
    /// Account permissions and `section:action` of the catalogue; `*` is everything.
    #[schema(example = json!(["sources:view", "sources:edit"]))]
    pub permissions: Vec<String>,
    /// When not empty, the role grants only on objects carrying one of these tags.
    #[schema(example = json!(["eu"]))]
    pub tags: Vec<String>,
    /// Built-in roles (owner, admin, developer, viewer) cannot be edited or deleted.
    pub builtin: bool,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<RoleEntry> for RoleView {
    fn from(e: RoleEntry) -> Self {
        let r = e.role;
        RoleView {
            id: r.id,
            name: r.name,
            description: r.description,
            permissions: r.permissions,
            tags: r.tags,
            builtin: e.builtin,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    /// Built-in roles first, then the workspace's own by name.
    pub data: Vec<RoleView>,
}

#[utoipa::path(get, path = "/v1/roles", tag = "roles",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = RoleList),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing keys:read", body = ErrorBody),
    ))]
pub async fn list_roles(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<RoleList>> {
    let roles = state.roles.list(&principal).await?;
    Ok(axum::Json(RoleList { data: roles.into_iter().map(RoleView::from).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// 1–64 letters, digits, `_`, `-`, `.`, `:`; unique in the workspace.
    #[schema(example = "editor-eu")]
    pub name: String,
    /// Up to 500 characters.
    pub description: Option<String>,
    /// At least one: account permissions or `section:action` (`section:*`) of the catalogue.
    #[schema(example = json!(["sources:view", "sources:edit"]))]
    pub permissions: Vec<String>,
    /// Up to 50 tags; the role then grants only on objects with one of them.
    #[serde(default)]
    #[schema(example = json!(["eu"]))]
    pub tags: Vec<String>,
}

#[utoipa::path(post, path = "/v1/roles", tag = "roles", request_body = CreateRoleRequest,
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = RoleView),
        (status = 400, description = "Invalid name; unknown permission (unknown_permission)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing roles:manage, or the role would grant what the caller does not hold \
            (cannot_grant)", body = ErrorBody),
        (status = 409, description = "The name is taken (duplicate_role)", body = ErrorBody),
    ))]
pub async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateRoleRequest>,
) -> ApiResult<(StatusCode, axum::Json<RoleView>)> {
    let role = state.roles.create(&principal, &body.name, body.description, body.permissions, body.tags).await?;
    Ok((StatusCode::CREATED, axum::Json(RoleEntry { role, builtin: false }.into())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRoleRequest {
    /// Renaming is refused while members or live keys hold the role.
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub permissions: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/v1/roles/{id}", tag = "roles", request_body = UpdateRoleRequest,
    params(("id" = String, Path, description = "Role id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = RoleView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Built-in role; name taken; renaming a role in use", body = ErrorBody),
    ))]
pub async fn update_role(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateRoleRequest>,
) -> ApiResult<axum::Json<RoleView>> {
    let patch =
        RolePatch { name: body.name, description: body.description, permissions: body.permissions, tags: body.tags };
    let role = state.roles.update(&principal, &id, patch).await?;
    Ok(axum::Json(RoleEntry { role, builtin: false }.into()))
}

#[utoipa::path(delete, path = "/v1/roles/{id}", tag = "roles",
    params(("id" = String, Path, description = "Role id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Built-in role (builtin_role), or held by members or live keys (role_in_use)",
            body = ErrorBody),
    ))]
pub async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.roles.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionCatalogue {
    /// What members and admin-tier keys may do to the workspace itself.
    #[schema(example = json!(["keys:read", "keys:manage", "keys:reveal"]))]
    pub account: Vec<String>,
    /// The protected API's permissions by section (set with
    /// `PATCH /v1/workspace {"permissionCatalogue": …}`).
    pub sections: Vec<CatalogueSectionView>,
}

#[utoipa::path(get, path = "/v1/permissions", tag = "roles",
    description = "The permissions roles and keys are drawn from, for a permission panel.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = PermissionCatalogue),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn list_permissions(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<PermissionCatalogue>> {
    let ws = state.roles.catalogue(&principal).await?;
    Ok(axum::Json(PermissionCatalogue {
        account: ACCOUNT_PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
        sections: ws.catalogue.into_iter().map(|s| CatalogueSectionView { name: s.name, actions: s.actions }).collect(),
    }))
}
