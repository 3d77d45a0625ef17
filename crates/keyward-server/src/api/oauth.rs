//! OAuth 2.0 endpoints: `/oauth/token`, `/oauth/introspect`,
//! `/oauth/revoke` (form-encoded, RFC 6749 §5.2 errors), the server
//! metadata (RFC 8414) and the JWKS; and `/v1/tokens`, members' refresh
//! tokens for the REST API.

use crate::throttle::Seen;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::oauth::RefreshToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ClientIp, LimitedBytes};
use crate::app::AppState;
use crate::oauth::{ClientAuth, Introspection, OAuthError, TokenRequest, TokenResponse};
use crate::principal::Principal;

/// An RFC 6749 §5.2 error (`code` repeats `error`, as in every keyward error).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_scope`,
    /// `unsupported_grant_type`, `master_key_required`,
    /// `temporarily_unavailable` or `server_error`.
    #[schema(example = "invalid_grant")]
    pub error: String,
    pub error_description: String,
    pub code: String,
}

/// The parameters of `/oauth/token` (form-encoded; each at most once).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `client_credentials`, `refresh_token` or
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(example = "client_credentials")]
    grant_type: String,
    /// Space-separated; within the client's (or key's) permissions.
    scope: Option<String>,
    /// The consumer key (`client_secret_post`; with Basic it may repeat the user name).
    client_id: Option<String>,
    /// The consumer secret (`client_secret_post`).
    client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` (`client_secret_jwt`).
    client_assertion_type: Option<String>,
    /// An HS256 JWT signed with the consumer secret (recoverable clients).
    client_assertion: Option<String>,
    /// `refresh_token` grant.
    refresh_token: Option<String>,
    /// Token exchange: the API key.
    subject_token: Option<String>,
    /// Token exchange: `urn:keyward:params:oauth:token-type:api_key`.
    subject_token_type: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` (the default).
    requested_token_type: Option<String>,
}

/// The parameters of `/oauth/introspect` and `/oauth/revoke`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenParamForm {
    /// An access token or a refresh token.
    token: String,
    /// `access_token` or `refresh_token` (a hint; the token's form decides).
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

const FIELDS: &[&str] = &[
    "grant_type",
    "scope",
    "client_id",
    "client_secret",
    "client_assertion_type",
    "client_assertion",
    "refresh_token",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "token",
    "token_type_hint",
    "audience",
    "resource",
];

/// An OAuth error as an HTTP answer: 401 with `WWW-Authenticate` for
/// `invalid_client`, 409 `master_key_required` when keyward runs without
/// a master key, 503 or 500 for the server's own trouble, else 400.
pub struct OAuthFailure(pub OAuthError);

impl From<OAuthError> for OAuthFailure {
    fn from(e: OAuthError) -> Self {
        OAuthFailure(e)
    }
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match e.error {
            Code::InvalidClient => StatusCode::UNAUTHORIZED,
            Code::MasterKeyRequired => StatusCode::CONFLICT,
            Code::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = OAuthErrorBody {
            error: e.error.as_str().to_owned(),
            error_description: e.description,
            code: e.error.as_str().to_owned(),
        };
        let mut response = (status, no_store(), axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"keyward\""));
        }
        response
    }
}

fn no_store() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h
}

/// The form of a request: `application/x-www-form-urlencoded`, every
/// parameter known and at most once.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Self, OAuthError> {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "The request must be form-encoded (Content-Type: application/x-www-form-urlencoded), not JSON",
            ));
        }
        let body = body.map_err(|_| OAuthError::invalid_request("The request body is too large or unreadable"))?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(&body) {
            if !FIELDS.contains(&name.as_ref()) {
                return Err(OAuthError::invalid_request("The request has a parameter this endpoint does not know"));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!("{name} must not be sent more than once")));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Form(pairs))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    }
}

/// Reads `Authorization: Basic` (RFC 6749 §2.3.1: each part form-encoded).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some((scheme, encoded)) = value.split_once(' ') else { return Err(OAuthError::invalid_client()) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_request("Client authentication is Basic, form fields or a client assertion"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(OAuthError::invalid_client)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// How the client authenticated; more than one way at once is refused.
fn client_auth(headers: &HeaderMap, form: &Form) -> Result<ClientAuth, OAuthError> {
    let basic = basic_credentials(headers)?;
    let (id, secret) = (form.get("client_id"), form.get("client_secret"));
    let assertion = match (form.get("client_assertion_type"), form.get("client_assertion")) {
        (Some(t), Some(a)) if t == crate::oauth::ASSERTION_TYPE_JWT => Some(a),
        (None, None) => None,
        _ => {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion needs client_assertion_type {}",
                crate::oauth::ASSERTION_TYPE_JWT
            )));
        }
    };
    let methods = usize::from(basic.is_some()) + usize::from(secret.is_some()) + usize::from(assertion.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request("Use one client authentication method, not several"));
    }
    if let (Some((basic_id, _)), Some(form_id)) = (&basic, &id)
        && basic_id != form_id
    {
        return Err(OAuthError::invalid_client());
    }
    Ok(match (basic, secret, assertion) {
        (Some((client_id, secret)), _, _) => ClientAuth::Basic { client_id, secret },
        (None, Some(secret), _) => match id {
            Some(client_id) => ClientAuth::Post { client_id, secret },
            None => return Err(OAuthError::invalid_request("client_secret needs client_id")),
        },
        (None, None, Some(assertion)) => ClientAuth::Jwt { client_id: id, assertion },
        (None, None, None) => ClientAuth::None,
    })
}

fn issuer(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    crate::oauth::issuer_of(state.public_url.as_deref(), host)
}

/// Counts an `invalid_client` against the address (like any failed
/// authentication), and refuses addresses over their limit.
async fn throttled<T>(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    work: impl Future<Output = Result<T, OAuthError>>,
) -> Result<T, OAuthFailure> {
    let throttle = state.verifier.throttle();
    if ip.and_then(|ip| throttle.retry_after(Seen::Api, ip)).is_some() {
        return Err(OAuthError::new(
            Code::InvalidClient,
            "Too many failed authentications from this address; retry later",
        )
        .into());
    }
    let result = work.await;
    if let (Err(e), Some(ip)) = (&result, ip)
        && e.error == Code::InvalidClient
    {
        throttle.failed(Seen::Api, ip);
    }
    result.map_err(OAuthFailure)
}

#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    description = "The token endpoint (RFC 6749). `client_credentials` with the consumer key and secret \
        (HTTP Basic, form fields, or an HS256 `client_assertion`, RFC 7523) returns a signed JWT access \
        token and a refresh token; `refresh_token` exchanges a refresh token (a client's rotates: each use \
        returns a new one, and reusing an old one revokes the whole grant; a member's token from \
        `POST /v1/tokens` returns an access token acting as the member); token exchange (RFC 8693) turns \
        an API key (`subject_token_type` `urn:keyward:params:oauth:token-type:api_key`) into a short-lived \
        access token carrying its permissions. Answers carry `Cache-Control: no-store`.",
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client (with WWW-Authenticate)", body = OAuthErrorBody),
        (status = 409, description = "master_key_required: this node has no master key to keep signing keys", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable: storage does not answer", body = OAuthErrorBody),
    ))]
pub async fn token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, OAuthFailure> {
    let form = Form::parse(&headers, body)?;
    let auth = client_auth(&headers, &form)?;
    let request = TokenRequest {
        grant_type: form.get("grant_type").unwrap_or_default(),
        scope: form.get("scope"),
        refresh_token: form.get("refresh_token"),
        subject_token: form.get("subject_token"),
        subject_token_type: form.get("subject_token_type"),
        requested_token_type: form.get("requested_token_type"),
    };
    let issuer = issuer(&state, &headers);
    let endpoint = format!("{issuer}/oauth/token");
    let answer = throttled(&state, ip, state.oauth.token(request, auth, &issuer, &endpoint)).await?;
    Ok((no_store(), axum::Json(answer)).into_response())
}

#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"),
    description = "Token introspection (RFC 7662), for an authenticated client: whether an access or \
        refresh token of its workspace is active, and its claims. Anything else is `{\"active\": false}`.",
    responses(
        (status = 200, body = Introspection),
        (status = 400, body = OAuthErrorBody),
        (status = 401, body = OAuthErrorBody),
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, OAuthFailure> {
    let form = Form::parse(&headers, body)?;
    let auth = client_auth(&headers, &form)?;
    let token = form.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let endpoint = format!("{}/oauth/token", issuer(&state, &headers));
    let answer = throttled(&state, ip, state.oauth.introspect(auth, &token, &endpoint)).await?;
    Ok((no_store(), axum::Json(answer)).into_response())
}

#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"),
    description = "Token revocation (RFC 7009): a refresh token of the authenticated client (with every \
        token of its grant) or one of its access tokens (refused on every node from then on). A secret API \
        key revokes the tokens it exchanged itself for (its key id as client_id, the key as client_secret). \
        Unknown tokens get the same 200.",
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, body = OAuthErrorBody),
        (status = 401, body = OAuthErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, OAuthFailure> {
    let form = Form::parse(&headers, body)?;
    let auth = client_auth(&headers, &form)?;
    let token = form.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let endpoint = format!("{}/oauth/token", issuer(&state, &headers));
    throttled(&state, ip, state.oauth.revoke(auth, &token, &endpoint)).await?;
    Ok((StatusCode::OK, no_store()).into_response())
}

/// The authorization server's metadata (RFC 8414).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    pub service_documentation: String,
}

const AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "client_secret_jwt"];

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    description = "Authorization server metadata (RFC 8414), for OAuth client libraries.",
    responses((status = 200, body = ServerMetadata)))]
pub async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> axum::Json<ServerMetadata> {
    let issuer = issuer(&state, &headers);
    axum::Json(ServerMetadata {
        token_endpoint: format!("{issuer}/oauth/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        introspection_endpoint: format!("{issuer}/oauth/introspect"),
        revocation_endpoint: format!("{issuer}/oauth/revoke"),
        grant_types_supported: vec![
            crate::oauth::GRANT_CLIENT_CREDENTIALS,
            crate::oauth::GRANT_REFRESH_TOKEN,
            crate::oauth::GRANT_TOKEN_EXCHANGE,
        ],
        // No authorization endpoint: machine clients only.
        response_types_supported: vec!["token"],
        token_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
        token_endpoint_auth_signing_alg_values_supported: vec!["HS256"],
        introspection_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
        revocation_endpoint_auth_methods_supported: AUTH_METHODS.to_vec(),
        service_documentation: format!("{issuer}/docs"),
        issuer,
    })
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth",
    description = "The public keys access tokens are signed with (JWK Set, RFC 7517): the current key \
        and retired ones until every token they signed has expired.",
    responses((status = 200, description = "`{\"keys\": [JWK, …]}`", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    (headers, axum::Json(state.oauth.signer().jwks())).into_response()
}

/// A member's refresh token as listed: masked, never the token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    #[schema(example = "rtk_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    pub name: String,
    #[schema(example = "kw_rt_AbCd…wxyz")]
    pub masked_token: String,
    /// The member it acts for.
    pub member_id: String,
    #[serde(serialize_with = "super::views::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenView {
    pub fn of(t: &RefreshToken) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone().unwrap_or_default(),
            masked_token: t.masked.clone(),
            member_id: t.member_id.clone().unwrap_or_default(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenWithSecret {
    #[serde(flatten)]
    pub token: TokenView,
    /// The refresh token. Shown only in this response: it is never visible again.
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1–100 characters.
    #[schema(example = "Nightly export")]
    pub name: String,
    /// 1–3650; none: until revoked.
    pub expires_in_days: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "oauth", request_body = CreateTokenRequest,
    description = "Creates a refresh token for the REST API, acting as the signed-in member (needs \
        `tokens:manage`). Exchange it at `/oauth/token` (`grant_type=refresh_token`, no client \
        authentication) for access tokens. Shown once.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = TokenWithSecret),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not a member, or without tokens:manage", body = ErrorBody),
    ))]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> ApiResult<Response> {
    let made = state.oauth.create_member_token(&principal, &body.name, body.expires_in_days).await?;
    let answer = TokenWithSecret { token: TokenView::of(&made.record), refresh_token: made.token.expose().to_owned() };
    Ok((StatusCode::CREATED, no_store(), axum::Json(answer)).into_response())
}

#[utoipa::path(get, path = "/v1/tokens", tag = "oauth",
    description = "The workspace's members' refresh tokens that are not revoked (masked), newest first.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = Vec<TokenView>),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
pub async fn list_tokens(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<Vec<TokenView>>> {
    let tokens = state.oauth.member_tokens(&principal).await?;
    Ok(axum::Json(tokens.iter().map(TokenView::of).collect()))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "oauth",
    params(("id" = String, Path, description = "Token id (`rtk_…`)")),
    description = "Revokes a member's refresh token: it and the access tokens made from it stop working.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = TokenView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<TokenView>> {
    let revoked = state.oauth.revoke_member_token(&principal, &id).await?;
    Ok(axum::Json(TokenView::of(&revoked)))
}
