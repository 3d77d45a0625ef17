//! `/v1/replication`: what embedded verifiers (the `keyward-verifier`
//! crate) read and report. The stream of verification records and their
//! changes, and the uses they counted.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::verify::VerifyCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, bearer_token};
use crate::app::AppState;
use crate::replication::{AfterError, Scope};

/// What replicating needs of a workspace's key or member.
pub const REPLICATE: &str = "keys:replicate";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this sequence number (the last event applied); an
    /// older one than this node keeps gets a fresh snapshot.
    after: Option<String>,
    /// Only this workspace (the node-wide token's subscribers; a
    /// workspace's own credential may name only its own).
    workspace: Option<String>,
}

/// Who may replicate what: the node-wide replication token (every
/// workspace, or the one named), or a key or member of one workspace
/// holding `keys:replicate` (its own only).
async fn scope_of(parts: &Parts, state: &AppState, workspace: Option<&str>) -> Result<Scope, ApiError> {
    let replication = state.verifier.replication();
    if bearer_token(parts).is_some_and(|t| replication.is_node_token(t)) {
        return Ok(workspace.map_or(Scope::All, |w| Scope::Workspace(w.to_owned())));
    }
    let principal = super::extract::principal(parts, state, super::extract::peer_of(parts)).await?;
    principal.require(REPLICATE)?;
    if workspace.is_some_and(|w| w != principal.workspace_id()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Code::OtherWorkspace,
            "workspace names another workspace than this credential's; omit it or name its own",
        ));
    }
    Ok(Scope::Workspace(principal.workspace_id().to_owned()))
}

/// The replication stream: JSON lines (`application/x-ndjson`). A
/// snapshot (`snapshot`, each `workspace` with its replica key, route
/// scopes and roles, each `key` with its record, `snapshot_end`), then
/// every change in order, each with its sequence number (`key` events name
/// the key and its new `state`: `active`, `inactive`, `revoked`, `locked`,
/// or `deleted`), and a `heartbeat` each second without one. Records carry
/// replica digests, never secrets. A subscriber that falls 4,096 events
/// behind is dropped; it resumes with `?after=`.
#[utoipa::path(get, path = "/v1/replication/stream", tag = "replication",
    params(StreamQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream, as JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "`after` is not a sequence number of this node", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Without `keys:replicate`, or naming another workspace", body = ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    parts: Parts,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> ApiResult<Response> {
    let scope = scope_of(&parts, &state, query.workspace.as_deref()).await?;
    let after = match query.after.as_deref() {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| invalid_after())?),
    };
    let lines = state.verifier.replication().subscribe(scope, after).map_err(|AfterError::Future| {
        ApiError::bad_request(Code::InvalidAfter, "after is beyond the last event of this node; resume without it")
    })?;
    let body = Body::from_stream(futures_util::stream::unfold(lines, |mut lines| async move {
        lines.recv().await.map(|line| (line, lines))
    }));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response())
}

fn invalid_after() -> ApiError {
    ApiError::bad_request(Code::InvalidAfter, "after must be a sequence number the stream gave (a whole number)")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Each key's uses since the last report (at most 1,000 keys).
    pub usage: Vec<KeyUses>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyUses {
    pub key_id: String,
    /// Verifications by code (`VALID`, `INSUFFICIENT_PERMISSIONS`, …).
    #[schema(example = json!({"VALID": 120, "REVOKED": 2}))]
    pub counts: BTreeMap<String, u32>,
    /// The latest of them.
    pub last_used: DateTime<Utc>,
}

/// The most keys one usage report names.
pub const MAX_REPORT: usize = 1000;

/// Uses an embedded verifier counted: added to each key's usage as if
/// this node had verified them (`lastUsed`, the hourly counts). Keys the
/// credential cannot see are skipped; the answer says how many.
#[utoipa::path(post, path = "/v1/replication/usage", tag = "replication", request_body = UsageReport,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many keys' uses were counted", body = Object,
            example = json!({"counted": 2, "skipped": 0})),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn report_usage(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(report): ApiJson<UsageReport>,
) -> ApiResult<Response> {
    let scope = scope_of(&parts, &state, None).await?;
    if report.usage.len() > MAX_REPORT {
        return Err(ApiError::bad_request(Code::InvalidBatch, "usage must name at most 1000 keys"));
    }
    let mut parsed = Vec::with_capacity(report.usage.len());
    for uses in &report.usage {
        for (code, n) in &uses.counts {
            let code = VerifyCode::ALL.into_iter().find(|c| c.as_str() == code).ok_or_else(|| {
                ApiError::bad_request(Code::InvalidBody, "usage[].counts takes verification codes (VALID, REVOKED, …)")
            })?;
            parsed.push((uses.key_id.as_str(), code, *n, uses.last_used.timestamp_millis()));
        }
    }
    let workspace = match &scope {
        Scope::All => None,
        Scope::Workspace(w) => Some(w.as_str()),
    };
    let (mut counted, mut skipped) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for (key_id, code, n, at_ms) in parsed {
        if n == 0 {
            continue;
        }
        match state.verifier.count_reported(workspace, key_id, code, n, at_ms).await? {
            true => counted.insert(key_id),
            false => skipped.insert(key_id),
        };
    }
    Ok(axum::Json(serde_json::json!({"counted": counted.len(), "skipped": skipped.len()})).into_response())
}
