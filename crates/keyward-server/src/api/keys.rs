//! `/v1/keys`: key management. Handlers are thin: authenticate, check the
//! permission, translate JSON to a domain command, call [`KeyService`].
//!
//! [`KeyService`]: crate::keys::KeyService

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::key::{ApiKey, KeyDraft, KeyPatch, KeyState, KeyType};
use keyward_core::scope::Flags;
use keyward_core::token::{Environment, Secret};
use keyward_store::{KeyFilter, Page};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use super::views::{KeyView, KeyWithSecret, double_option};
use crate::app::AppState;
use crate::keys::ImportDraft;
use crate::principal::Principal;

fn parse_type(t: Option<&str>) -> Result<Option<KeyType>, ApiError> {
    Ok(t.map(KeyType::parse_required).transpose()?)
}

fn parse_environment(e: Option<&str>) -> Result<Option<Environment>, ApiError> {
    e.map(|e| {
        Environment::parse(e)
            .ok_or_else(|| ApiError::bad_request(Code::InvalidEnvironment, "environment must be: live or test"))
    })
    .transpose()
}

/// Response with the key's version as a strong ETag.
pub fn with_etag(status: StatusCode, key: &ApiKey, body: impl Serialize) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", key.version)) {
        headers.insert(header::ETAG, v);
    }
    (status, headers, axum::Json(body)).into_response()
}

fn created(key: &ApiKey, secret: &Secret) -> Response {
    with_etag(StatusCode::CREATED, key, KeyWithSecret::of(key, secret))
}

/// Settings of a new key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1–100 characters, unique among the workspace's live keys.
    #[schema(example = "Production Server")]
    pub name: Option<String>,
    /// Up to 500 characters.
    pub description: Option<String>,
    /// `secret` (default), `publishable` (browser key: only the workspace's public permissions,
    /// at least one allowed origin; its token starts with `<prefix>pk_`) or `client` (an OAuth 2.0
    /// client: the answer adds `clientId`, the consumer key, and `clientSecret`; its token starts
    /// with `<prefix>cs_`).
    #[serde(rename = "type")]
    pub key_type: Option<String>,
    /// `live` (default) or `test`; part of the key's prefix.
    pub environment: Option<String>,
    /// Tiers `read`, `write`, `admin`; permissions `resource:action` (either part may be `*`); `*` for Full Access.
    #[schema(example = json!(["read"]))]
    pub scopes: Option<Vec<String>>,
    /// Only GET/HEAD, on everything. Takes precedence over scopes.
    pub read_only: Option<bool>,
    /// Everything except account management.
    pub administrator: Option<bool>,
    /// Everything, account management included.
    pub account_administrator: Option<bool>,
    /// Resource (site) ids the key is limited to.
    #[schema(example = json!(["site_abc123"]))]
    pub resources: Option<Vec<String>>,
    /// Browser origins allowed to use the key: `https://app.example.com[:port]` or `*.example.com`.
    #[schema(example = json!(["https://app.example.com", "*.example.com"]))]
    pub allowed_origins: Option<Vec<String>>,
    /// Client addresses allowed to use the key: addresses or CIDR ranges, IPv4 or IPv6.
    #[schema(example = json!(["10.0.0.0/8", "2001:db8::/32"]))]
    pub allowed_ips: Option<Vec<String>>,
    /// Absolute expiry (RFC 3339). Give this or `expiresIn`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Expiry in days from now. Without either, the workspace default applies.
    pub expires_in: Option<i64>,
    /// Free JSON object, at most 8 KiB (default email, phone, time zone…).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Uses the key may make (each valid verification spends its cost);
    /// absent: unlimited.
    pub credits: Option<super::credits::CreditsBody>,
    /// Up to 20 named limits of this key alone.
    pub ratelimits: Option<Vec<super::identities::RateLimitBody>>,
    /// The identity (your customer) the key belongs to; created when the
    /// workspace has none with this id. Its limits apply to all its keys together.
    #[schema(example = "acme")]
    pub external_id: Option<String>,
    /// Roles of the workspace (`GET /v1/roles`) whose permissions the key
    /// also holds; a role with tags grants only on objects with one of them.
    #[schema(example = json!(["editor-eu"]))]
    pub roles: Option<Vec<String>>,
    /// Also keep the secret sealed under the master key so an authorised
    /// member can reveal it (`POST /v1/keys/{id}/reveal`). Needs a master key
    /// and a workspace that allows recoverable keys.
    pub recoverable: Option<bool>,
}

impl CreateKeyRequest {
    /// The domain's draft of these settings (the console's forms build one too).
    pub fn into_draft(self) -> Result<KeyDraft, ApiError> {
        Ok(KeyDraft {
            key_type: parse_type(self.key_type.as_deref())?,
            name: self.name,
            description: self.description,
            environment: parse_environment(self.environment.as_deref())?,
            scopes: self.scopes.unwrap_or_default(),
            flags: Flags {
                read_only: self.read_only.unwrap_or(false),
                administrator: self.administrator.unwrap_or(false),
                account_administrator: self.account_administrator.unwrap_or(false),
            },
            resources: self.resources.unwrap_or_default(),
            allowed_origins: self.allowed_origins.unwrap_or_default(),
            allowed_ips: self.allowed_ips.unwrap_or_default(),
            expires_at: self.expires_at,
            expires_in_days: self.expires_in,
            metadata: self.metadata,
            credits: self.credits.map(super::credits::CreditsBody::into_credits).transpose()?,
            ratelimits: super::identities::into_limits(self.ratelimits.unwrap_or_default()),
            external_id: self.external_id,
            roles: self.roles.unwrap_or_default(),
            recoverable: self.recoverable.unwrap_or(false),
        })
    }
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created. `secret` is shown only in this response.", body = KeyWithSecret),
        (status = 400, description = "Invalid settings", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Missing keys:manage, the workspace key limit is reached, or the key would carry \
            more than the caller holds (cannot_grant, naming the permission or restriction)", body = ErrorBody),
        (status = 409, description = "A live key already has this name", body = ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKeyRequest>,
) -> ApiResult<Response> {
    let (key, secret) = state.keys.create(&principal, body.into_draft()?).await?;
    Ok(created(&key, &secret))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListKeysQuery {
    /// `active`, `inactive` or `revoked`.
    pub state: Option<String>,
    /// `secret`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub key_type: Option<String>,
    /// Case-insensitive part of the name.
    pub name: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyList {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(ListKeysQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Newest first", body = KeyList),
        (status = 400, description = "Invalid filter or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListKeysQuery>,
) -> ApiResult<axum::Json<KeyList>> {
    let filter = KeyFilter {
        state: q
            .state
            .as_deref()
            .map(|s| {
                KeyState::parse(s).ok_or_else(|| {
                    ApiError::bad_request(Code::InvalidState, "state must be: active, inactive, locked or revoked")
                })
            })
            .transpose()?,
        key_type: parse_type(q.key_type.as_deref())?,
        name_contains: q.name.map(|n| keyward_core::key::normalize_name(&n)).filter(|n| !n.is_empty()),
    };
    let page = page(q.limit, q.cursor.as_deref())?;
    let page = state.keys.list(&principal, &filter, page).await?;
    Ok(axum::Json(KeyList {
        data: page.keys.iter().map(KeyView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// A list page from `limit` (1–200, default 50) and `cursor` (a previous
/// answer's `nextCursor`).
pub fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(Code::InvalidLimit, "limit must be between 1 and 200"));
    }
    let after = cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::bad_request(Code::InvalidCursor, "cursor is not valid"))
        })
        .transpose()?;
    Ok(Page { after, limit })
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key; `ETag` carries its version", body = KeyView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "API key not found", body = ErrorBody),
    ))]
pub async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let key = state.keys.get(&principal, &id).await?;
    Ok(with_etag(StatusCode::OK, &key, KeyView::from(&key)))
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateKeyRequest {
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub read_only: Option<bool>,
    pub administrator: Option<bool>,
    pub account_administrator: Option<bool>,
    pub resources: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Can only be brought forward (or set on a key that never expires).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Sets the remaining credits and their refill; null: unlimited uses.
    #[serde(default, deserialize_with = "double_option")]
    pub credits: Option<Option<super::credits::CreditsBody>>,
    /// Replaces the key's own rate limits (`[]` removes them).
    pub ratelimits: Option<Vec<super::identities::RateLimitBody>>,
    /// Moves the key to the identity with this id (created when new); null: no identity.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Replaces the key's roles.
    pub roles: Option<Vec<String>>,
}

impl UpdateKeyRequest {
    /// The domain's patch of these changes.
    pub fn into_patch(self) -> Result<KeyPatch, ApiError> {
        Ok(KeyPatch {
            name: self.name,
            description: self.description,
            scopes: self.scopes,
            read_only: self.read_only,
            administrator: self.administrator,
            account_administrator: self.account_administrator,
            resources: self.resources,
            allowed_origins: self.allowed_origins,
            allowed_ips: self.allowed_ips,
            metadata: self.metadata,
            expires_at: self.expires_at,
            credits: self.credits.map(|c| c.map(super::credits::CreditsBody::into_credits).transpose()).transpose()?,
            ratelimits: self.ratelimits.map(super::identities::into_limits),
            identity: None,
            external_id: self.external_id,
            roles: self.roles,
        })
    }
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let v = v.to_str().unwrap_or_default().trim();
    if v == "*" {
        return Ok(None);
    }
    v.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::bad_request(Code::InvalidIfMatch, "If-Match must be an ETag returned by this API"))
}

#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", request_body = UpdateKeyRequest,
    params(("id" = String, Path, description = "Key id"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being edited")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The edited key", body = KeyView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Legacy or revoked key, or name taken", body = ErrorBody),
        (status = 412, description = "If-Match does not match", body = ErrorBody),
    ))]
pub async fn update_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateKeyRequest>,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    let patch = body.into_patch()?;
    let key = state.keys.update(&principal, &id, patch, expected).await?;
    Ok(with_etag(StatusCode::OK, &key, KeyView::from(&key)))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted for good"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The key is active (deactivate it first) or legacy", body = ErrorBody),
    ))]
pub async fn delete_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.keys.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneKeyRequest {
    /// Name of the clone (default: the original's name + " (clone)").
    pub name: Option<String>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/clone", tag = "keys", request_body(content = Option<CloneKeyRequest>),
    params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new key with the same settings and a new secret", body = KeyWithSecret),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ))]
pub async fn clone_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<CloneKeyRequest>,
) -> ApiResult<Response> {
    let (key, secret) = state.keys.clone_key(&principal, &id, body.name).await?;
    Ok(created(&key, &secret))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollKeyRequest {
    /// Seconds the previous secret keeps working (0–2592000; default 0).
    pub grace_period_seconds: Option<u32>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/roll", tag = "keys", request_body(content = Option<RollKeyRequest>),
    params(("id" = String, Path, description = "Key id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Same id, new secret (shown only here)", body = KeyWithSecret),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Revoked, legacy or foreign-format key", body = ErrorBody),
    ))]
pub async fn roll_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RollKeyRequest>,
) -> ApiResult<Response> {
    let (key, secret) = state.keys.roll(&principal, &id, body.grace_period_seconds.unwrap_or(0)).await?;
    Ok(with_etag(StatusCode::OK, &key, KeyWithSecret::of(&key, &secret)))
}

/// A revealed secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevealedSecret {
    /// The key's full secret. Shown to a person; copy it, do not log it.
    pub secret: String,
    /// A client's consumer key, to copy with its consumer secret.
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/keys/{id}/reveal", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    description = "Shows a recoverable key's secret again, to a signed-in member (session cookie or member JWT) \
        holding keys:reveal who re-authenticated (`POST /v1/auth/reauth`) in the last 5 minutes. Never to a key.",
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, body = RevealedSecret),
        (status = 401, description = "Not freshly re-authenticated (reauthentication_required)", body = ErrorBody),
        (status = 403, description = "A key is calling (member_required), keys:reveal is missing, or the key grants \
            more than the member holds (cannot_grant)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not recoverable (not_recoverable) or revoked", body = ErrorBody),
    ))]
pub async fn reveal_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let (secret, key) = state.keys.reveal(&principal, &id).await?;
    let revealed = RevealedSecret { secret: secret.expose().to_owned(), client_id: key.client_id };
    let mut response = axum::Json(revealed).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

macro_rules! state_action {
    ($fn_name:ident, $path:literal, $method:ident, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "keys", params(("id" = String, Path, description = "Key id")),
            security(("bearer" = [])),
            description = $what,
            responses(
                (status = 200, description = "The key in its new state", body = KeyView),
                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody), (status = 409, description = "Not allowed in the key's state", body = ErrorBody),
            ))]
        pub async fn $fn_name(State(state): State<AppState>, principal: Principal, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
            let key = state.keys.$method(&principal, &id).await?;
            Ok(with_etag(StatusCode::OK, &key, KeyView::from(&key)))
        }
    };
}

state_action!(
    deactivate_key,
    "/v1/keys/{id}/deactivate",
    deactivate,
    "Switches the key off (reversible). An inactive key is rejected whatever its scopes."
);
state_action!(activate_key, "/v1/keys/{id}/activate", activate, "Switches an inactive key back on.");
state_action!(
    revoke_key,
    "/v1/keys/{id}/revoke",
    revoke,
    "Kills the key for good, at once. Its record stays until deleted."
);

/// A key from another system, given as plaintext or as the SHA-256 of its plaintext.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportKeyRequest {
    /// The plaintext key. Give this or `sha256`.
    pub key: Option<String>,
    /// Hex SHA-256 of the plaintext key; re-hashed on its first verification.
    pub sha256: Option<String>,
    /// The prefix the system's keys share (`zta_live_`); required with `sha256`.
    pub prefix: Option<String>,
    /// Keep this id (default: a new one; keyward keys keep theirs).
    pub id: Option<String>,
    /// Legacy keys verify but cannot be edited or deleted.
    pub legacy: Option<bool>,
    /// `secret` (default), `publishable` or `client`: an imported client gets a new
    /// `clientId` (consumer key) and keeps the given key as its consumer secret.
    #[serde(rename = "type")]
    pub key_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub environment: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub read_only: Option<bool>,
    pub administrator: Option<bool>,
    pub account_administrator: Option<bool>,
    pub resources: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    pub expires_in: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Uses the key may make; absent: unlimited.
    pub credits: Option<super::credits::CreditsBody>,
    pub ratelimits: Option<Vec<super::identities::RateLimitBody>>,
    pub external_id: Option<String>,
    pub roles: Option<Vec<String>>,
    /// Seal the given plaintext `key` so it can be revealed (not with `sha256`).
    pub recoverable: Option<bool>,
}

impl ImportKeyRequest {
    fn into_import(self) -> Result<ImportDraft, ApiError> {
        let settings = CreateKeyRequest {
            name: self.name,
            description: self.description,
            key_type: self.key_type,
            environment: self.environment,
            scopes: self.scopes,
            read_only: self.read_only,
            administrator: self.administrator,
            account_administrator: self.account_administrator,
            resources: self.resources,
            allowed_origins: self.allowed_origins,
            allowed_ips: self.allowed_ips,
            expires_at: self.expires_at,
            expires_in: self.expires_in,
            metadata: self.metadata,
            credits: self.credits,
            ratelimits: self.ratelimits,
            external_id: self.external_id,
            roles: self.roles,
            recoverable: self.recoverable,
        };
        Ok(ImportDraft {
            draft: settings.into_draft()?,
            id: self.id,
            plaintext: self.key.map(Secret::new),
            sha256: self.sha256,
            prefix: self.prefix,
            legacy: self.legacy.unwrap_or(false),
        })
    }
}

#[utoipa::path(post, path = "/v1/keys/import", tag = "keys", request_body = ImportKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Imported; the key verifies from now on", body = KeyView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Id or key already present, or name taken", body = ErrorBody),
    ))]
pub async fn import_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ImportKeyRequest>,
) -> ApiResult<Response> {
    let key = state.keys.import(&principal, body.into_import()?).await?;
    Ok(with_etag(StatusCode::CREATED, &key, KeyView::from(&key)))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageBucket {
    /// Start of the day or hour (UTC).
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<Utc>,
    /// Successful verifications (`VALID`).
    pub total: u64,
    /// Verifications by outcome code (`VALID`, `INVALID_SECRET`, `EXPIRED`, …).
    pub counts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    pub key_id: String,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used: Option<DateTime<Utc>>,
    /// `day` or `hour`.
    pub granularity: String,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// Successful verifications over the period.
    pub total: u64,
    /// Verifications over the period by outcome code.
    pub totals: std::collections::BTreeMap<String, u64>,
    /// Days (or hours) with at least one verification, oldest first.
    pub data: Vec<UsageBucket>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Back from now, such as `30d` (default) or `24h`; at most the
    /// retention (90 days unless configured).
    pub period: Option<String>,
    /// `day` (default) or `hour`.
    pub granularity: Option<String>,
}

#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = "keys", params(("id" = String, Path, description = "Key id"), UsageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Verifications per day or hour (UTC) by outcome", body = KeyUsage),
        (status = 400, description = "Bad period or granularity", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn key_usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<axum::Json<KeyUsage>> {
    let report = state.keys.usage(&principal, &id, q.period.as_deref(), q.granularity.as_deref()).await?;
    let mut totals = std::collections::BTreeMap::new();
    for (_, counts) in &report.buckets {
        for (code, n) in counts {
            *totals.entry(code.clone()).or_insert(0) += n;
        }
    }
    let valid = |c: &std::collections::BTreeMap<String, u64>| c.get("VALID").copied().unwrap_or(0);
    Ok(axum::Json(KeyUsage {
        key_id: report.key_id.to_string(),
        last_used: report.last_used_at,
        granularity: report.granularity.to_owned(),
        since: report.since,
        total: valid(&totals),
        data: report
            .buckets
            .into_iter()
            .map(|(start, counts)| UsageBucket { start, total: valid(&counts), counts })
            .collect(),
        totals,
    }))
}
