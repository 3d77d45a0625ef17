//! `/v1/identities`: customers whose keys share rate limits; and the
//! `ratelimits` object shared by keys and identities.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyward_core::identity::Identity;
use keyward_core::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::app::AppState;
use crate::principal::Principal;

/// A named limit: at most `limit` units per `durationMs`, never more in
/// any window of that length.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitBody {
    /// 1–64 letters, digits, `_`, `-`, `.` or `:`; unique per key or identity.
    #[schema(example = "requests")]
    pub name: String,
    /// Units per window, at least 1.
    #[schema(example = 100)]
    pub limit: i64,
    /// The window, from 1000 (1 s) to 2592000000 (30 days).
    #[schema(example = 60000)]
    pub duration_ms: i64,
    /// Checked (1 unit) on every verification; otherwise only when a verify
    /// request names it. Default false.
    #[serde(default)]
    pub auto_apply: bool,
}

impl RateLimitBody {
    pub fn into_limit(self) -> RateLimit {
        RateLimit { name: self.name, limit: self.limit, duration_ms: self.duration_ms, auto_apply: self.auto_apply }
    }

    pub fn of(l: &RateLimit) -> Self {
        RateLimitBody { name: l.name.clone(), limit: l.limit, duration_ms: l.duration_ms, auto_apply: l.auto_apply }
    }
}

pub fn into_limits(v: Vec<RateLimitBody>) -> Vec<RateLimit> {
    v.into_iter().map(RateLimitBody::into_limit).collect()
}

pub fn views_of(limits: &[RateLimit]) -> Vec<RateLimitBody> {
    limits.iter().map(RateLimitBody::of).collect()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    #[schema(example = "id_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    /// Your id for this customer, unique in the workspace.
    #[schema(example = "acme")]
    pub external_id: String,
    #[schema(value_type = Object)]
    pub meta: Value,
    /// Shared by all the identity's keys together.
    pub ratelimits: Vec<RateLimitBody>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&Identity> for IdentityView {
    fn from(i: &Identity) -> Self {
        IdentityView {
            id: i.id.clone(),
            external_id: i.external_id.clone(),
            meta: i.meta.clone(),
            ratelimits: views_of(&i.ratelimits),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIdentityRequest {
    /// 1–256 characters.
    #[schema(example = "acme")]
    pub external_id: String,
    /// Free JSON object, at most 8 KiB.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// Up to 20 limits shared by every key of the identity.
    pub ratelimits: Option<Vec<RateLimitBody>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateIdentityRequest {
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// Replaces the identity's limits.
    pub ratelimits: Option<Vec<RateLimitBody>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListIdentitiesQuery {
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityList {
    pub data: Vec<IdentityView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/identities", tag = "identities", request_body = CreateIdentityRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = IdentityView),
        (status = 400, description = "Invalid externalId, meta or ratelimits", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing keys:manage", body = ErrorBody),
        (status = 409, description = "An identity with this externalId exists", body = ErrorBody),
    ))]
pub async fn create_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateIdentityRequest>,
) -> ApiResult<(StatusCode, axum::Json<IdentityView>)> {
    let limits = into_limits(body.ratelimits.unwrap_or_default());
    let identity = state.identities.create(&principal, body.external_id, body.meta, limits).await?;
    Ok((StatusCode::CREATED, axum::Json(IdentityView::from(&identity))))
}

#[utoipa::path(get, path = "/v1/identities", tag = "identities", params(ListIdentitiesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Newest first", body = IdentityList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
pub async fn list_identities(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListIdentitiesQuery>,
) -> ApiResult<axum::Json<IdentityList>> {
    let page = super::keys::page(q.limit, q.cursor.as_deref())?;
    let (identities, next) = state.identities.list(&principal, page).await?;
    Ok(axum::Json(IdentityList {
        data: identities.iter().map(IdentityView::from).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

#[utoipa::path(get, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = IdentityView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<IdentityView>> {
    Ok(axum::Json(IdentityView::from(&state.identities.get(&principal, &id).await?)))
}

#[utoipa::path(patch, path = "/v1/identities/{id}", tag = "identities", request_body = UpdateIdentityRequest,
    params(("id" = String, Path, description = "Identity id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The edited identity", body = IdentityView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile", body = ErrorBody),
    ))]
pub async fn update_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateIdentityRequest>,
) -> ApiResult<axum::Json<IdentityView>> {
    let limits = body.ratelimits.map(into_limits);
    let identity = state.identities.update(&principal, &id, body.meta, limits).await?;
    Ok(axum::Json(IdentityView::from(&identity)))
}

#[utoipa::path(delete, path = "/v1/identities/{id}", tag = "identities",
    params(("id" = String, Path, description = "Identity id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; its revoked keys no longer name it"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Live keys belong to the identity", body = ErrorBody),
    ))]
pub async fn delete_identity(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.identities.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
