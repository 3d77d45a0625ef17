//! `POST /v1/keys/verify`: the verification API for services that ask
//! keyward whether a presented key is good for a request.

use crate::throttle::Seen;
use std::net::IpAddr;

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::expr::PermissionExpr;
use keyward_core::key::is_valid_resource_id;
use keyward_core::ratelimit::LimitRequest;
use keyward_core::verify::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::app::AppState;
use crate::principal::Principal;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key presented to your API.
    pub key: String,
    /// The permission the request needs, `resource:action`; or an expression
    /// of permissions joined by `AND` and `OR` with parentheses
    /// (`sources:view AND (channels:edit OR channels:admin)`; `AND` binds
    /// tighter; at most 32 permissions, 8 levels deep).
    #[schema(example = "campaigns:read")]
    pub permission: Option<String>,
    /// The resource (site) id the request is about.
    #[schema(example = "site_abc123")]
    pub resource: Option<String>,
    /// The HTTP method of the request; read-only keys pass only GET/HEAD.
    #[schema(example = "GET")]
    pub method: Option<String>,
    /// The path of the request; matched against the workspace's route scopes.
    #[schema(example = "/api/v2/campaigns/42")]
    pub path: Option<String>,
    /// The browser origin of the request (`Origin`, or the `Referer` URL).
    #[schema(example = "https://app.example.com")]
    pub origin: Option<String>,
    /// The client's IP address.
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
    /// Credits this request spends if it is valid (keys with credits; 0
    /// checks without spending). Default 1.
    #[schema(example = 1)]
    pub cost: Option<u32>,
    /// Named rate limits of the key or its identity this request spends,
    /// besides the auto-applied ones (1 unit each).
    #[schema(example = json!([{"name": "tokens", "cost": 12}]))]
    pub ratelimits: Option<Vec<VerifyLimit>>,
    /// The tags of the object the request is about: the key's roles with
    /// tags grant `permission` only when one of theirs is among these.
    #[schema(example = json!(["eu"]))]
    pub tags: Option<Vec<String>>,
    /// An object type (a catalogue section such as `sources`): the answer's
    /// `access` says whether the key may view and edit such objects, and
    /// which (by tag).
    #[schema(example = "sources")]
    pub object_type: Option<String>,
}

/// What the key may do to objects of `objectType`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessView {
    /// It may view some objects of the type (all, or those with `tags`).
    pub view: bool,
    /// It may edit some objects of the type (all, or those with `editTags`).
    pub edit: bool,
    /// `null`: every object of the type; otherwise only objects carrying
    /// one of these tags (empty: none).
    #[schema(example = json!(["eu"]))]
    pub tags: Option<Vec<String>>,
    /// The same for editing.
    pub edit_tags: Option<Vec<String>>,
}

/// A named limit a verification spends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyLimit {
    pub name: String,
    /// Units to spend, 0 or more (0 checks without spending). Default 1.
    pub cost: Option<i64>,
}

/// How a rate limit stands after this verification.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitView<'a> {
    pub name: &'a str,
    pub limit: i64,
    /// Units left in the current window.
    pub remaining: i64,
    /// When units next come free, ms since the epoch.
    pub reset: i64,
    /// This request went over this limit (and spent nothing).
    pub exceeded: bool,
}

/// The identity the key belongs to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRef<'a> {
    pub id: &'a str,
    pub external_id: &'a str,
    #[schema(value_type = Object)]
    pub meta: &'a Value,
}

// The answer borrows from the verification and the cached record:
// building it copies nothing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse<'a> {
    pub valid: bool,
    /// VALID, MALFORMED, NOT_FOUND, INVALID_SECRET, EXPIRED, INACTIVE, REVOKED,
    /// FORBIDDEN_RESOURCE, FORBIDDEN_ORIGIN, FORBIDDEN_IP, INSUFFICIENT_PERMISSIONS
    /// USAGE_EXCEEDED, LOCKED or RATE_LIMITED.
    #[schema(example = "VALID")]
    pub code: &'static str,
    /// Why, in words.
    pub message: &'a str,
    pub key_id: Option<&'a str>,
    pub workspace_id: Option<&'a str>,
    pub name: Option<&'a str>,
    #[serde(rename = "type")]
    pub key_type: Option<&'static str>,
    /// The key's scopes.
    #[schema(value_type = Vec<String>)]
    pub permissions: ScopeList<'a>,
    /// Roles held by the key.
    pub roles: &'a [String],
    /// With `objectType` and a valid key: what it may do to such objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<&'a AccessView>,
    /// The key's metadata.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<&'a serde_json::value::RawValue>,
    #[serde(serialize_with = "super::views::time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Credits left after this verification (keys with credits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<i64>,
    /// The rate limits checked (the key's and its identity's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratelimits: Vec<LimitView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityRef<'a>>,
}

/// Scopes written as their strings, straight into the answer.
#[derive(Debug)]
pub struct ScopeList<'a>(pub &'a [keyward_core::scope::Scope]);

impl Serialize for ScopeList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for scope in self.0 {
            seq.serialize_element(&DisplayStr(scope))?;
        }
        seq.end()
    }
}

struct DisplayStr<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for DisplayStr<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

fn is_method(m: &str) -> bool {
    !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_alphabetic())
}

#[utoipa::path(post, path = "/v1/keys/verify", tag = "verification", request_body = VerifyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verdict, valid or not; `code` says why", body = VerifyResponse),
        (status = 400, description = "Malformed permission, resource, method or ratelimits; or a named limit \
            the key and its identity do not have (unknown_ratelimit)", body = ErrorBody),
        (status = 401, description = "The caller's own key is missing or invalid", body = ErrorBody),
        (status = 403, description = "The caller lacks keys:verify", body = ErrorBody),
        (status = 429, description = "`ip` (or the caller's address) failed authentication too often this minute \
            (too_many_failures; Retry-After)", body = ErrorBody),
    ))]
pub async fn verify_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> ApiResult<axum::response::Response> {
    let checked = check(&state, &principal, body).await?;
    Ok(json_answer(&checked.answer()))
}

/// A verification, with what the answer says besides.
struct Checked {
    v: crate::verifier::Verification,
    access: Option<AccessView>,
}

/// Verifies one request for `principal`: what `/v1/keys/verify` answers,
/// and each item of a batch.
async fn check(state: &AppState, principal: &Principal, body: VerifyRequest) -> Result<Checked, ApiError> {
    let permission = body.permission.as_deref().map(PermissionExpr::parse).transpose()?;
    if let Some(r) = &body.resource
        && !is_valid_resource_id(r)
    {
        return Err(ApiError::bad_request(
            Code::InvalidResource,
            "resource must be 1 to 128 letters, digits, '_', '-', '.' or ':'",
        ));
    }
    if let Some(m) = &body.method
        && !is_method(m)
    {
        return Err(ApiError::bad_request(Code::InvalidMethod, "method must be an HTTP method such as GET"));
    }
    if let Some(p) = &body.path
        && !(p.starts_with('/') && p.len() <= 2048)
    {
        return Err(ApiError::bad_request(Code::InvalidPath, "path must start with / (at most 2048 characters)"));
    }
    let ip = body
        .ip
        .as_deref()
        .map(|ip| {
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| ApiError::bad_request(Code::InvalidIp, "ip must be an IPv4 or IPv6 address"))
        })
        .transpose()?;
    let limits: Vec<LimitRequest> = body
        .ratelimits
        .unwrap_or_default()
        .into_iter()
        .map(|l| LimitRequest { name: l.name, cost: l.cost.unwrap_or(1) })
        .collect();
    keyward_core::ratelimit::validate_requests(&limits)?;
    let tags = body.tags.map(|t| keyward_core::member::validate_tags(t, "tags")).transpose()?;
    if let Some(t) = &body.object_type
        && keyward_core::scope::Permission::parse_required(&format!("{t}:view")).is_none()
    {
        return Err(ApiError::bad_request(
            Code::InvalidObjectType,
            "objectType must be 1 to 64 lowercase letters, digits, '_', '-' or '.' (a catalogue section)",
        ));
    }
    let request = Request {
        permission: permission.as_ref(),
        resource: body.resource.as_deref(),
        method: body.method.as_deref(),
        path: body.path.as_deref(),
        routes: &[],
        origin: body.origin.as_deref(),
        ip,
        cost: body.cost,
        ratelimits: &limits,
        tags: tags.as_deref(),
        roles: &[],
    };
    // The end client's address, when given, is limited in failures too,
    // in this workspace's view of it only: naming an address harms nobody
    // else.
    let seen = Seen::ByWorkspace(principal.workspace_id());
    let v = state.verifier.verify_client(Some(principal), seen, ip, &body.key, &request).await?;
    let access = match (v.key.as_deref(), &body.object_type) {
        (Some(k), Some(t)) if v.decision.is_valid() => {
            let a = keyward_verifier::decide::access(k, v.roles.as_deref().map_or(&[], |r| &r[..]), t);
            Some(AccessView { view: a.view, edit: a.edit, tags: a.tags, edit_tags: a.edit_tags })
        }
        _ => None,
    };
    Ok(Checked { v, access })
}

impl Checked {
    fn answer(&self) -> VerifyResponse<'_> {
        let v = &self.v;
        let key = v.key.as_deref();
        VerifyResponse {
            valid: v.decision.is_valid(),
            code: v.decision.code.as_str(),
            message: &v.decision.message,
            key_id: key.map(|k| &*k.id),
            workspace_id: key.map(|k| &*k.workspace_id),
            name: key.map(|k| &*k.name),
            key_type: key.map(|k| k.key_type.as_str()),
            permissions: ScopeList(v.permission_scopes()),
            roles: key.map_or(&[], |k| k.roles()),
            access: self.access.as_ref(),
            meta: key.map(|k| k.metadata()),
            expires_at: key.and_then(|k| k.expires_at),
            credits: v.credits,
            ratelimits: v
                .ratelimits
                .iter()
                .map(|(name, s)| LimitView {
                    name,
                    limit: s.limit,
                    remaining: s.remaining,
                    reset: s.reset_ms,
                    exceeded: s.exceeded,
                })
                .collect(),
            identity: v.identity.as_deref().map(|i| IdentityRef {
                id: &i.id,
                external_id: &i.external_id,
                meta: &i.meta,
            }),
        }
    }
}

/// The most requests one batch verifies.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchVerifyRequest {
    /// 1 to 100 verify requests, each as `/v1/keys/verify` takes it.
    #[schema(value_type = Vec<VerifyRequest>)]
    pub requests: Vec<Box<serde_json::value::RawValue>>,
}

/// One answer per request, in order: a verify answer, or the error that
/// request alone met (`{"error", "code", "status"}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchVerifyResponse {
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Value>,
}

#[utoipa::path(post, path = "/v1/keys/verify/batch", tag = "verification", request_body = BatchVerifyRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One result per request, in order: each exactly what `/v1/keys/verify` \
            answers for it (credits and limits spent per item, in order; each counted and audited as one \
            verification), or, for a request that is malformed, `{\"error\", \"code\", \"status\"}` with \
            the status that request alone would have had. The other items are verified.", body = BatchVerifyResponse),
        (status = 400, description = "`requests` is empty or holds more than 100 (invalid_batch)", body = ErrorBody),
        (status = 401, description = "The caller's own key is missing or invalid", body = ErrorBody),
        (status = 403, description = "The caller lacks keys:verify", body = ErrorBody),
    ))]
pub async fn verify_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<BatchVerifyRequest>,
) -> ApiResult<axum::response::Response> {
    if body.requests.is_empty() || body.requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            Code::InvalidBatch,
            format!("requests must hold 1 to {MAX_BATCH} verify requests"),
        ));
    }
    principal.require_parsed(&crate::verifier::VERIFY_PERMISSION)?;
    let mut out = Vec::with_capacity(512 * body.requests.len());
    out.extend_from_slice(b"{\"results\":[");
    for (i, item) in body.requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let checked = match super::extract::parse_object::<VerifyRequest>(item.get().as_bytes()) {
            Ok(request) => check(&state, &principal, request).await,
            Err(refused) => Err(refused),
        };
        let written = match checked {
            Ok(checked) => checked.answer().write_json(&mut out),
            Err(refused) => serde_json::to_writer(
                &mut out,
                &serde_json::json!({"error": refused.message, "code": refused.code.as_str(), "status": refused.status.as_u16()}),
            ),
        };
        written.map_err(|_| ApiError::from(keyward_core::Error::internal("writing the answer")))?;
    }
    out.extend_from_slice(b"]}");
    let mut response = axum::response::Response::new(axum::body::Body::from(out));
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The answer as JSON: written into this thread's buffer, then copied
/// once into a body of its exact size (one allocation; a `Vec` with room
/// to spare becomes a body through a second one).
fn json_answer(answer: &VerifyResponse<'_>) -> axum::response::Response {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    let body = BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        let written = answer.write_json(buffer);
        let body = written.map(|()| axum::body::Bytes::copy_from_slice(buffer));
        // A rare large answer does not keep its room.
        buffer.truncate(0);
        buffer.shrink_to(4096);
        body
    });
    match body {
        Ok(body) => {
            let mut response = axum::response::Response::new(axum::body::Body::from(body));
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => ApiError::from(keyward_core::Error::internal("writing the answer")).into_response(),
    }
}

impl VerifyResponse<'_> {
    /// Writes exactly what `serde_json::to_writer(out, self)` writes (a
    /// test holds them equal), with the field names as constant bytes:
    /// serde_json escapes every name and goes through its map machinery
    /// per field, which was most of an answer's cost. Values are written
    /// by serde_json.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        fn value(out: &mut Vec<u8>, v: &(impl Serialize + ?Sized)) -> serde_json::Result<()> {
            serde_json::to_writer(out, v)
        }
        out.extend_from_slice(if self.valid { b"{\"valid\":true,\"code\":" } else { b"{\"valid\":false,\"code\":" });
        value(out, self.code)?;
        out.extend_from_slice(b",\"message\":");
        value(out, self.message)?;
        out.extend_from_slice(b",\"keyId\":");
        value(out, &self.key_id)?;
        out.extend_from_slice(b",\"workspaceId\":");
        value(out, &self.workspace_id)?;
        out.extend_from_slice(b",\"name\":");
        value(out, &self.name)?;
        out.extend_from_slice(b",\"type\":");
        value(out, &self.key_type)?;
        out.extend_from_slice(b",\"permissions\":[");
        for (i, scope) in self.permissions.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            value(out, &DisplayStr(scope))?;
        }
        out.extend_from_slice(b"],\"roles\":");
        value(out, self.roles)?;
        if let Some(access) = &self.access {
            out.extend_from_slice(b",\"access\":");
            value(out, access)?;
        }
        out.extend_from_slice(b",\"meta\":");
        match self.meta {
            Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"expiresAt\":");
        match &self.expires_at {
            Some(t) => value(out, &super::views::format_time(t))?,
            None => out.extend_from_slice(b"null"),
        }
        if let Some(credits) = self.credits {
            out.extend_from_slice(b",\"credits\":");
            value(out, &credits)?;
        }
        if !self.ratelimits.is_empty() {
            out.extend_from_slice(b",\"ratelimits\":");
            value(out, &self.ratelimits)?;
        }
        if let Some(identity) = &self.identity {
            out.extend_from_slice(b",\"identity\":");
            value(out, identity)?;
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::scope::Scope;

    /// The hand-laid answer is byte for byte what serde derives.
    #[test]
    fn written_answer_is_the_derived_one() {
        let scopes: Vec<Scope> = ["read", "campaigns:write", "*"].iter().filter_map(|s| Scope::parse(s)).collect();
        assert_eq!(scopes.len(), 3, "the scopes parse");
        let roles = vec!["Billing \"ops\"".to_owned(), "ünïcode\n".to_owned()];
        let meta = serde_json::value::RawValue::from_string(r#"{"plan":"pro","n":[1,2]}"#.to_owned()).unwrap();
        let identity_meta = serde_json::json!({"tier": "gold"});
        let expires = chrono::DateTime::from_timestamp(1_900_000_000, 123_000_000);
        let access = AccessView { view: true, edit: false, tags: Some(vec!["eu".into()]), edit_tags: None };
        let full = VerifyResponse {
            valid: true,
            code: "VALID",
            message: "API key is valid",
            key_id: Some("key_abc"),
            workspace_id: Some("ws_def"),
            name: Some("a \"quoted\" name\twith\u{1} controls / ∑"),
            key_type: Some("secret"),
            permissions: ScopeList(&scopes),
            roles: &roles,
            access: Some(&access),
            meta: Some(&meta),
            expires_at: expires,
            credits: Some(-3),
            ratelimits: vec![LimitView {
                name: "requests",
                limit: 10,
                remaining: 9,
                reset: 1_700_000_000_000,
                exceeded: false,
            }],
            identity: Some(IdentityRef { id: "id_1", external_id: "user \\ 1", meta: &identity_meta }),
        };
        let bare = VerifyResponse {
            valid: false,
            code: "NOT_FOUND",
            message: "Key not found",
            key_id: None,
            workspace_id: None,
            name: None,
            key_type: None,
            permissions: ScopeList(&[]),
            roles: &[],
            access: None,
            meta: None,
            expires_at: None,
            credits: None,
            ratelimits: Vec::new(),
            identity: None,
        };
        for answer in [full, bare] {
            let mut written = Vec::new();
            answer.write_json(&mut written).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&answer).unwrap());
        }
    }
}
