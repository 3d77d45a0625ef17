//! `/v1/auth` (sign-in, re-authentication, sign-out), `/v1/members` and
//! `/v1/invitations/accept`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::member::{Member, Membership};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ClientIp, UserAgent};
use super::workspace::WorkspaceView;
use crate::app::AppState;
use crate::members::SESSION_COOKIE;
use crate::principal::Principal;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    #[schema(example = "mem_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub name: String,
    /// Roles in this workspace: `owner`, `admin`, `developer`, `viewer`.
    #[schema(example = json!(["developer"]))]
    pub roles: Vec<String>,
    /// When the member joined this workspace.
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: DateTime<Utc>,
}

impl MemberView {
    pub fn of(member: &Member, membership: &Membership) -> Self {
        MemberView {
            id: member.id.clone(),
            email: member.email.clone(),
            name: member.name.clone(),
            roles: membership.roles.clone(),
            joined_at: membership.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "owner@localhost")]
    pub email: String,
    pub password: String,
    /// The workspace to sign in to (default: the one joined first).
    pub workspace_id: Option<String>,
    /// Also return a bearer JWT valid 7 days, accepted by the whole API.
    #[serde(default)]
    pub token: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub member: MemberView,
    pub workspace: WorkspaceView,
    /// Every workspace the member belongs to, as `{id, name}`.
    pub workspaces: Vec<WorkspaceRef>,
    /// The bearer JWT (with `"token": true`); send as `Authorization: Bearer …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the session (and its token) ends.
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRef {
    pub id: String,
    pub name: String,
}

pub fn session_cookie(value: &str, max_age_secs: i64) -> HeaderValue {
    cookie(SESSION_COOKIE, value, "/", max_age_secs)
}

/// A `Set-Cookie` value for a cookie of keyward's own (HttpOnly, Secure,
/// SameSite=Strict), sent back for `path` only.
pub fn cookie(name: &str, value: &str, path: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; Secure; SameSite=Strict; Path={path}; Max-Age={max_age_secs}"
    ))
    .expect("cookie values are ASCII")
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "members", request_body = LoginRequest,
    description = "Signs a member in. Sets the session cookie (`keyward_session`: HttpOnly, Secure, \
        SameSite=Strict); with `\"token\": true` also returns a bearer JWT valid 7 days. Requests \
        authenticated by the cookie that change anything must carry an `Origin` naming this server. \
        Failures are throttled per account and per address (429 with Retry-After).",
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = LoginResponse),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Email or password is incorrect (invalid_credentials)", body = ErrorBody),
        (status = 403, description = "The member belongs to no workspace (no_workspace)", body = ErrorBody),
        (status = 404, description = "Not a member of the named workspace", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let ws = body.workspace_id.as_deref();
    let signed_in = state.members.login(&body.email, &body.password, ws, body.token, ip, ua.as_deref()).await?;
    let max_age = (signed_in.session.expires_at - signed_in.session.created_at).num_seconds();
    let body = LoginResponse {
        member: MemberView::of(&signed_in.member, &signed_in.membership),
        workspace: signed_in.workspace.into(),
        workspaces: signed_in
            .workspaces
            .iter()
            .map(|w| WorkspaceRef { id: w.id.clone(), name: w.name.clone() })
            .collect(),
        token: signed_in.jwt,
        expires_at: signed_in.session.expires_at,
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(&signed_in.cookie_token, max_age));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReauthRequest {
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReauthResponse {
    /// Until when the session counts as freshly authenticated (5 minutes).
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub fresh_until: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/auth/reauth", tag = "members", request_body = ReauthRequest,
    description = "Confirms the signed-in member's password; the session is fresh for 5 minutes \
        (revealing a key needs a fresh session).",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = ReauthResponse),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Wrong password, or no session", body = ErrorBody),
        (status = 403, description = "A key cannot re-authenticate", body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub async fn reauth(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Principal,
    ApiJson(body): ApiJson<ReauthRequest>,
) -> ApiResult<axum::Json<ReauthResponse>> {
    let fresh_until = state.members.reauth(&principal, &body.password, ip).await?;
    Ok(axum::Json(ReauthResponse { fresh_until }))
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "members",
    description = "Ends the session (its cookie and its bearer JWT stop working at once).",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Signed out; the cookie is cleared"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A key has no session", body = ErrorBody),
    ))]
pub async fn logout(State(state): State<AppState>, principal: Principal) -> ApiResult<Response> {
    state.members.logout(&principal).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0));
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub member: SessionMember,
    pub workspace: WorkspaceRef,
    /// Re-authenticated within the last 5 minutes (reveal needs it).
    pub fresh: bool,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub fresh_until: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionMember {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
}

#[utoipa::path(get, path = "/v1/auth/session", tag = "members",
    description = "The signed-in member's session: who, which workspace, whether it is fresh.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = SessionView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A key has no session", body = ErrorBody),
    ))]
pub async fn get_session(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<SessionView>> {
    let m = principal.member().ok_or_else(|| {
        keyward_core::Error::forbidden(Code::MemberSessionRequired, "Only a signed-in member has a session")
    })?;
    let ws = state.workspaces.name_of(&m.workspace_id).await?;
    Ok(axum::Json(SessionView {
        member: SessionMember {
            id: m.member_id.clone(),
            email: m.email.clone(),
            name: m.name.clone(),
            roles: m.roles.clone(),
        },
        workspace: WorkspaceRef { id: m.workspace_id.clone(), name: ws },
        fresh: m.fresh,
        fresh_until: m.fresh_until,
        expires_at: m.expires_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberList {
    /// Oldest member first.
    pub data: Vec<MemberView>,
}

#[utoipa::path(get, path = "/v1/members", tag = "members",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = MemberList),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing members:read", body = ErrorBody),
    ))]
pub async fn list_members(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<MemberList>> {
    let members = state.members.list(&principal).await?;
    Ok(axum::Json(MemberList { data: members.iter().map(|(m, s)| MemberView::of(m, s)).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    #[schema(example = "Ann")]
    pub name: String,
    /// At least one of `owner` (owners only), `admin`, `developer`, `viewer`.
    #[schema(example = json!(["developer"]))]
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationView {
    #[schema(example = "inv_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    /// The one-time invitation token, shown only here; redeem it with
    /// `POST /v1/invitations/accept`.
    #[schema(example = "kwi_…")]
    pub token: String,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = InviteRequest,
    description = "Invites a person. The answer holds a one-time token (valid 7 days, shown once) for \
        `POST /v1/invitations/accept`.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = InvitationView),
        (status = 400, description = "Malformed email or name, unknown role", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Missing members:manage; only owners grant owner; a key never invites, and \
            nobody gives roles beyond their own (cannot_grant)", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
    ))]
pub async fn invite_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, [(header::HeaderName, HeaderValue); 1], axum::Json<InvitationView>)> {
    let created = state.members.invite(&principal, &body.email, &body.name, &body.roles).await?;
    let i = created.invitation;
    let view = InvitationView {
        id: i.id,
        email: i.email,
        name: i.name,
        roles: i.roles,
        token: created.token,
        expires_at: i.expires_at,
    };
    // The one-time token must not be kept by any cache.
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], axum::Json(view)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptRequest {
    /// The invitation token.
    pub token: String,
    /// A new password (at least 10 characters, not the email), or, for
    /// someone already a member elsewhere, their password.
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptResponse {
    pub member: MemberView,
    pub workspace: WorkspaceRef,
}

#[utoipa::path(post, path = "/v1/invitations/accept", tag = "members", request_body = AcceptRequest,
    description = "Redeems an invitation (once). Then sign in with `POST /v1/auth/login`.",
    responses(
        (status = 200, body = AcceptResponse),
        (status = 400, description = "Weak password; expired invitation", body = ErrorBody),
        (status = 401, description = "Wrong password of an existing account", body = ErrorBody),
        (status = 404, description = "No such invitation", body = ErrorBody),
        (status = 409, description = "Already used", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords for the existing account", body = ErrorBody),
    ))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    ApiJson(body): ApiJson<AcceptRequest>,
) -> ApiResult<axum::Json<AcceptResponse>> {
    let (member, membership, ws) = state.members.accept(&body.token, &body.password, ip, ua.as_deref()).await?;
    Ok(axum::Json(AcceptResponse {
        member: MemberView::of(&member, &membership),
        workspace: WorkspaceRef { id: ws.id, name: ws.name },
    }))
}

#[utoipa::path(get, path = "/v1/members/{id}", tag = "members",
    params(("id" = String, Path, description = "Member id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = MemberView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<MemberView>> {
    let (m, s) = state.members.get(&principal, &id).await?;
    Ok(axum::Json(MemberView::of(&m, &s)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMemberRequest {
    pub name: Option<String>,
    /// Replaces the member's roles in this workspace.
    pub roles: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", request_body = UpdateMemberRequest,
    params(("id" = String, Path, description = "Member id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = MemberView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Missing members:manage; only owners change the owner role; roles beyond the \
            caller's own, or from a restricted key (cannot_grant)", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The last owner cannot be demoted (last_owner)", body = ErrorBody),
    ))]
pub async fn update_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateMemberRequest>,
) -> ApiResult<axum::Json<MemberView>> {
    let (m, s) = state.members.update(&principal, &id, body.name.as_deref(), body.roles.as_deref()).await?;
    Ok(axum::Json(MemberView::of(&m, &s)))
}

#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members",
    params(("id" = String, Path, description = "Member id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Removed from the workspace; their sessions in it ended"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The last owner cannot be removed (last_owner)", body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.members.remove(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie_value(headers: &HeaderMap) -> Option<&str> {
    cookie_value(headers, SESSION_COOKIE)
}

/// The value of the cookie `name`, if the request carries it (not empty).
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}
