//! `/api/api-keys`: the documented contract of an analytics product's
//! API-keys API, so that its curl examples run against keyward unchanged
//! but for the host. Field names, bodies and error messages are that
//! contract's; DELETE revokes at once, as it documents.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::scope::{INVALID_SCOPE_MESSAGE, Scope, Tier};
use keyward_store::KeyFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::views::{time, time_opt};
use crate::app::AppState;
use crate::principal::Principal;

/// A key in this contract's shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompatKey {
    #[schema(example = "key_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    pub name: String,
    /// Masked in lists; the full key only in the create response.
    pub key: String,
    /// `read`, `write` or `admin` (other scopes, space-separated).
    pub scope: String,
    pub site_id: Option<String>,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
}

fn compat_key(k: &ApiKey, key: String) -> CompatKey {
    CompatKey {
        id: k.id.to_string(),
        name: k.name.clone(),
        key,
        scope: k.scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        site_id: k.resources.first().cloned(),
        last_used: k.last_used_at,
        created_at: k.created_at,
        expires_at: k.expires_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompatKeyList {
    pub api_keys: Vec<CompatKey>,
}

#[utoipa::path(get, path = "/api/api-keys", tag = "compatibility",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every live key of the workspace, masked", body = CompatKeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<CompatKeyList>> {
    let keys = state.keys.list_all(&principal, &KeyFilter::default()).await?;
    let api_keys = keys.iter().filter(|k| k.is_live()).map(|k| compat_key(k, k.masked.clone())).collect();
    Ok(axum::Json(CompatKeyList { api_keys }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompatCreateRequest {
    /// Descriptive name (max 100 characters).
    pub name: Option<String>,
    /// `read`, `write` or `admin`.
    pub scope: Option<String>,
    /// Expiration in days; null for no expiration.
    pub expires_in: Option<i64>,
    /// Limit the key to one site; null for all sites.
    pub site_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompatCreated {
    pub api_key: CompatKey,
}

#[utoipa::path(post, path = "/api/api-keys", tag = "compatibility", request_body = CompatCreateRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `apiKey.key` is the full key, shown only here", body = CompatCreated),
        (status = 400, description = "API key name is required / Invalid scope. Must be: read, write, or admin", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "API key limit reached. Upgrade to create more keys.", body = ErrorBody),
    ))]
pub async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CompatCreateRequest>,
) -> ApiResult<(StatusCode, axum::Json<CompatCreated>)> {
    keyward_core::key::validate_name(body.name.as_deref())?;
    let scope = body.scope.as_deref().map(str::trim).and_then(Scope::parse);
    if !matches!(scope, Some(Scope::Tier(Tier::Read | Tier::Write | Tier::Admin))) {
        return Err(ApiError::bad_request(Code::InvalidScope, INVALID_SCOPE_MESSAGE));
    }
    let draft = KeyDraft {
        name: body.name,
        scopes: body.scope.into_iter().map(|s| s.trim().to_owned()).collect(),
        resources: body.site_id.into_iter().collect(),
        expires_in_days: body.expires_in,
        ..Default::default()
    };
    let (key, secret) = state.keys.create(&principal, draft).await?;
    Ok((StatusCode::CREATED, axum::Json(CompatCreated { api_key: compat_key(&key, secret.expose().to_owned()) })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CompatDeleteQuery {
    /// API key ID to revoke.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompatDeleted {
    #[schema(example = true)]
    pub success: bool,
    #[schema(example = "API key revoked successfully")]
    pub message: String,
}

#[utoipa::path(delete, path = "/api/api-keys", tag = "compatibility", params(CompatDeleteQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked; every request with the key fails from now on", body = CompatDeleted),
        (status = 400, description = "API key ID is required", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "API key not found", body = ErrorBody),
    ))]
pub async fn delete_api_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<CompatDeleteQuery>,
) -> ApiResult<axum::Json<CompatDeleted>> {
    let id =
        q.id.filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::bad_request(Code::IdRequired, "API key ID is required"))?;
    let key = state.keys.get(&principal, &id).await?;
    if !key.is_live() {
        return Err(keyward_core::Error::key_not_found().into());
    }
    state.keys.revoke(&principal, &id).await?;
    Ok(axum::Json(CompatDeleted { success: true, message: "API key revoked successfully".into() }))
}
