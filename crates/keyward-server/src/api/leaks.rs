//! Leaked keys: code hosts' secret-scanning alerts (`/v1/leaks/github`,
//! `/v1/leaks/gitlab`), a member's report (`/v1/keys/{id}/leaked`), and
//! revocation by anyone holding the key (`/v1/keys/self-revoke`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use keyward_core::{Code, Error};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ClientIp, LimitedBytes, UserAgent};
use super::views::KeyView;
use crate::app::AppState;
use crate::leaks::{CodeHost, Feedback};
use crate::principal::Principal;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn alert(
    state: &AppState,
    host: CodeHost,
    headers: &HeaderMap,
    body: LimitedBytes,
) -> ApiResult<axum::Json<Vec<Feedback>>> {
    let body = body.0.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::PayloadTooLarge,
            "The alert is larger than this server takes",
        )
    })?;
    let (id_header, sig_header) = host.headers();
    let feedback = state.leaks.alert(host, &body, header(headers, id_header), header(headers, sig_header)).await?;
    Ok(axum::Json(feedback))
}

#[utoipa::path(post, path = "/v1/leaks/github", tag = "leaks",
    description = "GitHub's secret-scanning partner alert: a JSON list of `{token, type, url, source}`, signed \
        over the raw body with ECDSA P-256/SHA-256 (headers `Github-Public-Key-Identifier` and \
        `Github-Public-Key-Signature`, base64 DER) by a key of the operator's `--leak-public-keys` file. Each \
        token of a key of this deployment (matched by its checksum and hash) is answered `true_positive` and its \
        workspace's leak policy applied (`revoke`, `roll` or `notify`), with a `key.leaked` audit entry and \
        webhook; others `false_positive`, changing nothing.",
    request_body(content = String, content_type = "application/json"),
    responses(
        (status = 200, description = "Feedback per token, in order", body = Vec<Feedback>),
        (status = 400, description = "Not a list of found tokens", body = ErrorBody),
        (status = 401, description = "A bad, missing or unknown signature (invalid_leak_signature): nothing changed",
            body = ErrorBody),
    ))]
pub async fn github_alert(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: LimitedBytes,
) -> ApiResult<axum::Json<Vec<Feedback>>> {
    alert(&state, CodeHost::GitHub, &headers, body).await
}

#[utoipa::path(post, path = "/v1/leaks/gitlab", tag = "leaks",
    description = "GitLab's secret-detection partner alert: as `/v1/leaks/github`, signed in the headers \
        `Gitlab-Public-Key-Identifier` and `Gitlab-Public-Key-Signature`.",
    request_body(content = String, content_type = "application/json"),
    responses(
        (status = 200, description = "Feedback per token, in order", body = Vec<Feedback>),
        (status = 400, body = ErrorBody),
        (status = 401, description = "A bad, missing or unknown signature (invalid_leak_signature)", body = ErrorBody),
    ))]
pub async fn gitlab_alert(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: LimitedBytes,
) -> ApiResult<axum::Json<Vec<Feedback>>> {
    alert(&state, CodeHost::GitLab, &headers, body).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SelfRevoked {
    pub revoked: bool,
}

#[utoipa::path(post, path = "/v1/keys/self-revoke", tag = "leaks",
    description = "Revokes the key presented as the credential (`Authorization: Bearer <key>`), whatever it may \
        do: anyone who holds a leaked key can stop it. Audited as `key.leaked` (source `self`) and `key.revoked`.",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SelfRevoked),
        (status = 404, description = "No such key, or revoked already (alike)", body = ErrorBody),
    ))]
pub async fn self_revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserAgent(user_agent): UserAgent,
    headers: HeaderMap,
) -> ApiResult<axum::Json<SelfRevoked>> {
    let token = header(&headers, "authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::new(
                keyward_core::ErrorKind::Unauthenticated,
                Code::AuthenticationRequired,
                "Present the key to revoke as Authorization: Bearer <key>",
            )
        })?;
    let client = Principal::system("").from_client(ip, user_agent.as_deref());
    state.leaks.self_revoke(token, client).await?;
    Ok(axum::Json(SelfRevoked { revoked: true }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeakReported {
    pub key: KeyView,
    /// What the workspace's leak policy did: `revoked`, `rolled` or `notified`.
    #[schema(example = "revoked")]
    pub action: &'static str,
}

#[utoipa::path(post, path = "/v1/keys/{id}/leaked", tag = "leaks",
    description = "A member (or key) holding keys:manage reports the key leaked: the workspace's leak policy \
        applies (`PATCH /v1/workspace {\"leakPolicy\"}`), with a `key.leaked` audit entry and webhook, and a banner \
        on the key in the console. A rolled key's new secret is not shown: reveal it when the key is recoverable.",
    params(("id" = String, Path, description = "Key id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = LeakReported),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn report_leak(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<LeakReported>> {
    let (key, action) = state.leaks.member_report(&principal, &id).await?;
    Ok(axum::Json(LeakReported { key: KeyView::from(&key), action }))
}
