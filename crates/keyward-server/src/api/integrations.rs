//! `/v1/integrations`: a workspace's JavaScript key, default REST key and
//! FTP access; and `/v1/ftp/authenticate`, which an FTP server's external
//! authentication asks.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::{Code, Error};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::views::{KeyView, KeyWithSecret};
use crate::app::AppState;
use crate::integrations::IntegrationsView;
use crate::principal::Principal;

/// The JavaScript API key: publishable, so its full value is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JavascriptKeyView {
    #[serde(flatten)]
    pub view: KeyView,
    /// The full publishable key, for the website's code (public by design).
    #[schema(example = "kw_pk_live_3fH9xQ2mPz8TbL1cYk4Lw0xVbN7sQe2RtUiOpAsDfGhJkL1a2B")]
    pub key: String,
}

/// FTP access: the username is the workspace's site id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FtpView {
    #[schema(example = "site_abc123")]
    pub username: String,
    /// Where to connect (`--ftp-host`); null when not configured.
    #[schema(example = "ftp.example.com")]
    pub host: Option<String>,
    pub enabled: bool,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub password_set_at: DateTime<Utc>,
    /// Locked by wrong passwords (the workspace's lockout policy) until the
    /// password is rotated or access is enabled again.
    pub locked: bool,
    /// The password is kept sealed: a member can see it again (`POST /v1/integrations/ftp/reveal`).
    pub recoverable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationsBody {
    pub javascript_key: JavascriptKeyView,
    /// The default REST key (Full Access), as every key is shown; null once deleted.
    pub rest_key: Option<KeyView>,
    pub ftp: FtpView,
}

impl IntegrationsBody {
    fn of(v: IntegrationsView, host: Option<String>) -> Self {
        let ftp = &v.integrations.ftp;
        IntegrationsBody {
            javascript_key: JavascriptKeyView {
                view: KeyView::from(&v.javascript_key),
                key: v.integrations.javascript_key.clone(),
            },
            rest_key: v.rest_key.as_ref().map(KeyView::from),
            ftp: FtpView {
                username: v.ftp_username,
                host,
                enabled: ftp.enabled,
                password_set_at: ftp.password_set_at,
                locked: ftp.locked,
                recoverable: ftp.sealed,
            },
        }
    }
}

#[utoipa::path(get, path = "/v1/integrations", tag = "integrations",
    description = "The workspace's JavaScript API key, default REST API key and FTP access (made on the first \
        read for a workspace that has none yet).",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = IntegrationsBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing integrations:read", body = ErrorBody),
    ))]
pub async fn get_integrations(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<IntegrationsBody>> {
    let view = state.integrations.get(&principal).await?;
    Ok(axum::Json(IntegrationsBody::of(view, state.integrations.ftp_host.clone())))
}

#[utoipa::path(post, path = "/v1/integrations/rest-key", tag = "integrations",
    description = "Makes a new default REST API key (Full Access) when the workspace has none left (deleted or \
        revoked). Needs integrations:manage and keys:manage, and the caller must hold Full Access itself. The \
        secret is shown once.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = KeyWithSecret),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing a permission, or the caller holds less than Full Access (cannot_grant)",
            body = ErrorBody),
        (status = 409, description = "The workspace has a default REST key (rest_key_exists)", body = ErrorBody),
    ))]
pub async fn create_rest_key(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<(StatusCode, axum::Json<KeyWithSecret>)> {
    let (key, secret) = state.integrations.create_rest_key(&principal).await?;
    Ok((StatusCode::CREATED, axum::Json(KeyWithSecret::of(&key, &secret))))
}

/// FTP credentials; the password is shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct FtpCredentials {
    #[schema(example = "site_abc123")]
    pub username: String,
    #[schema(example = "Xq2mPz8TbL1cYk4Lw0xVbN7sQe2RtUiO")]
    pub password: String,
}

fn no_store(body: FtpCredentials) -> Response {
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(post, path = "/v1/integrations/ftp/rotate", tag = "integrations",
    description = "A new generated FTP password (about 190 bits), shown once; the old one stops working at \
        once, and a lock is lifted. Kept sealed (for `reveal`) when the workspace allows recoverable secrets \
        and a master key is set.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = FtpCredentials),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing integrations:manage", body = ErrorBody),
    ))]
pub async fn rotate_ftp(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    let (username, password) = state.integrations.rotate_ftp(&principal).await?;
    Ok(no_store(FtpCredentials { username, password }))
}

#[utoipa::path(post, path = "/v1/integrations/ftp/reveal", tag = "integrations",
    description = "Shows the FTP password again when it was kept sealed, to a signed-in member holding \
        integrations:manage who re-authenticated (`POST /v1/auth/reauth`) in the last 5 minutes. Never to a key.",
    security(("session" = []), ("bearer" = [])),
    responses(
        (status = 200, body = FtpCredentials),
        (status = 401, description = "Not freshly re-authenticated (reauthentication_required)", body = ErrorBody),
        (status = 403, description = "A key is calling (member_required), or integrations:manage is missing",
            body = ErrorBody),
        (status = 409, description = "The password was not kept (not_recoverable)", body = ErrorBody),
    ))]
pub async fn reveal_ftp(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    let (username, password) = state.integrations.reveal_ftp(&principal).await?;
    Ok(no_store(FtpCredentials { username, password }))
}

#[utoipa::path(post, path = "/v1/integrations/ftp/disable", tag = "integrations",
    description = "Refuses every FTP login of the workspace until enabled again.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = IntegrationsBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing integrations:manage", body = ErrorBody),
    ))]
pub async fn disable_ftp(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<IntegrationsBody>> {
    let view = state.integrations.set_ftp_enabled(&principal, false).await?;
    Ok(axum::Json(IntegrationsBody::of(view, state.integrations.ftp_host.clone())))
}

#[utoipa::path(post, path = "/v1/integrations/ftp/enable", tag = "integrations",
    description = "Accepts FTP logins again (and lifts a lock).",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = IntegrationsBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing integrations:manage", body = ErrorBody),
    ))]
pub async fn enable_ftp(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<IntegrationsBody>> {
    let view = state.integrations.set_ftp_enabled(&principal, true).await?;
    Ok(axum::Json(IntegrationsBody::of(view, state.integrations.ftp_host.clone())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FtpAuthenticateRequest {
    /// The FTP username (a workspace's site id); at most 256 bytes, no control characters.
    #[schema(example = "site_abc123")]
    pub username: String,
    /// At most 256 bytes, no control characters.
    pub password: String,
    /// The FTP client's address: its failures count toward its per-address limit.
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
}

/// A login keyward accepted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FtpLoginView {
    pub workspace_id: String,
    /// The user's directory under the FTP server's root (the site id).
    #[schema(example = "site_abc123")]
    pub home: String,
    pub read_only: bool,
}

#[utoipa::path(post, path = "/v1/ftp/authenticate", tag = "integrations",
    description = "Checks an FTP login for an FTP server's external authentication (`keyward ftp-auth` for \
        pure-ftpd). The caller is the FTP server's own key, holding ftp:authenticate; it checks the FTP users of \
        its workspace. Unknown usernames, wrong passwords and disabled or locked access all answer the same 401 in \
        the same time; wrong passwords count toward the lockout of the FTP access and the per-address limit, and \
        are audited as `ftp.auth_failed` per minute.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = FtpLoginView),
        (status = 400, description = "A field over 256 bytes or with control characters (invalid_username, \
            invalid_password), or a malformed ip (invalid_ip)", body = ErrorBody),
        (status = 401, description = "Not accepted (invalid_credentials), or the caller is not authenticated",
            body = ErrorBody),
        (status = 403, description = "Missing ftp:authenticate", body = ErrorBody),
        (status = 429, description = "Too many failures from this address (too_many_failures)", body = ErrorBody),
    ))]
pub async fn authenticate_ftp(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<FtpAuthenticateRequest>,
) -> ApiResult<axum::Json<FtpLoginView>> {
    let ip = body
        .ip
        .as_deref()
        .map(|ip| ip.parse().map_err(|_| Error::invalid(Code::InvalidIp, "ip must be an IPv4 or IPv6 address")))
        .transpose()?;
    let login = state.integrations.authenticate(&principal, &body.username, &body.password, ip).await?;
    Ok(axum::Json(FtpLoginView { workspace_id: login.workspace_id, home: login.home, read_only: login.read_only }))
}
