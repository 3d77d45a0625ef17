//! `/v1/audit` (query, export, checkpoint public key), `/v1/insights/keys`
//! and the seed-001 activity log `/api/activity-log`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::audit::Entry;
use keyward_store::{AuditFilter, Page};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::keys::page;
use super::views::{time, time_opt};
use crate::app::AppState;
use crate::audit::AuditQuery;
use crate::principal::Principal;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// What the entry is about: `api_key`, `member`, `invitation`, `role`,
    /// `workspace` or `address` (failed attempts with unknown keys).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub target_type: Option<String>,
    /// `noun.past_verb`, such as `key.created` or `member.sign_in_failed`.
    pub action: Option<String>,
    /// The acting member's or key's id, or `system`.
    pub actor: Option<String>,
    /// The id of the object acted on.
    pub target: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// Back from now: a number and `m`, `h`, `d` or `w` (such as `7d`), at
    /// most the retention; or give `from`/`to`.
    pub period: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Export only: `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

fn parse_time(v: Option<&str>, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::bad_request(Code::InvalidParameter, format!("{name}: not an RFC 3339 time")))
    })
    .transpose()
}

impl AuditListQuery {
    fn filter(&self, state: &AppState) -> Result<AuditFilter, ApiError> {
        let q = AuditQuery {
            target_type: self.target_type.clone(),
            action: self.action.clone(),
            actor: self.actor.clone(),
            target: self.target.clone(),
            outcome: self.outcome.clone(),
            period: self.period.clone(),
            from: parse_time(self.from.as_deref(), "from")?,
            to: parse_time(self.to.as_deref(), "to")?,
        };
        Ok(state.audit.filter(q)?)
    }
}

/// Who acted (`member`, `key` or `system`), or what was acted on (`api_key`,
/// `member`, `invitation`, `role`, `workspace`, `address`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PartyView {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    /// Position in the workspace's chain, from 1.
    pub seq: i64,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
    pub workspace: String,
    pub actor: PartyView,
    pub action: String,
    pub target: PartyView,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// What changed (`{field: {from, to}}` for edits), never a secret.
    #[schema(value_type = Object)]
    pub changes: Value,
    /// The predecessor's hash (hex).
    pub prev_hash: String,
    /// SHA-256 of this entry and its predecessor's hash (hex).
    pub hash: String,
}

impl From<&Entry> for AuditEntryView {
    fn from(e: &Entry) -> Self {
        let ev = &e.event;
        AuditEntryView {
            seq: e.seq,
            time: ev.at,
            workspace: ev.workspace_id.clone(),
            actor: PartyView {
                kind: ev.actor.kind.as_str().to_owned(),
                id: ev.actor.id.clone(),
                name: ev.actor.name.clone(),
            },
            action: ev.action.clone(),
            target: PartyView { kind: ev.target.kind.clone(), id: ev.target.id.clone(), name: ev.target.name.clone() },
            ip: ev.ip.clone(),
            user_agent: ev.user_agent.clone(),
            outcome: ev.outcome.as_str().to_owned(),
            changes: serde_json::from_str(&ev.changes).unwrap_or(Value::Null),
            prev_hash: keyward_core::hash::hex(&e.prev_hash),
            hash: keyward_core::hash::hex(&e.hash),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    pub data: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Entries, newest first (needs audit:read)", body = AuditList),
        (status = 400, description = "Unknown type, action or outcome; bad period, from/to or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> ApiResult<axum::Json<AuditList>> {
    if q.format.is_some() {
        return Err(ApiError::bad_request(Code::InvalidParameter, "format: only for /v1/audit/export"));
    }
    let filter = q.filter(&state)?;
    let page = page(q.limit, q.cursor.as_deref())?;
    let (entries, next) = state.audit.list(&principal, &filter, page).await?;
    Ok(axum::Json(AuditList {
        data: entries.iter().map(AuditEntryView::from).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

const CSV_HEADER: &str = "seq,time,workspace,actorType,actorId,actorName,action,targetType,targetId,targetName,\
ip,userAgent,outcome,changes,prevHash,hash\n";

/// One quoted field. A value a spreadsheet would run as a formula (it
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return), or one that
/// starts with `'`, gets a leading `'`: reading back, drop one leading `'`.
fn csv_field(out: &mut String, v: &str) {
    out.push('"');
    if v.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) {
        out.push('\'');
    }
    out.push_str(&v.replace('"', "\"\""));
    out.push('"');
}

fn csv_row(e: &Entry) -> String {
    let ev = &e.event;
    let seq = e.seq.to_string();
    let time = ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (prev, hash) = (keyward_core::hash::hex(&e.prev_hash), keyward_core::hash::hex(&e.hash));
    let fields: [&str; 16] = [
        &seq,
        &time,
        &ev.workspace_id,
        ev.actor.kind.as_str(),
        ev.actor.id.as_deref().unwrap_or(""),
        ev.actor.name.as_deref().unwrap_or(""),
        &ev.action,
        &ev.target.kind,
        ev.target.id.as_deref().unwrap_or(""),
        ev.target.name.as_deref().unwrap_or(""),
        ev.ip.as_deref().unwrap_or(""),
        ev.user_agent.as_deref().unwrap_or(""),
        ev.outcome.as_str(),
        &ev.changes,
        &prev,
        &hash,
    ];
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f);
    }
    out.push('\n');
    out
}

#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every matching entry, newest first, streamed as JSON lines \
            (application/x-ndjson, one entry as in /v1/audit per line) or CSV (text/csv, a header row, \
            every field quoted, changes as JSON; a field starting with =, +, -, @, a tab, a carriage return \
            or ' has a ' put before it, so no spreadsheet runs it as a formula)",
            content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "Unknown format or filter", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn export_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => false,
        "csv" => true,
        _ => return Err(ApiError::bad_request(Code::InvalidParameter, "format: one of jsonl, csv")),
    };
    if q.limit.is_some() || q.cursor.is_some() {
        return Err(ApiError::bad_request(Code::InvalidParameter, "limit: an export holds every matching entry"));
    }
    let filter = q.filter(&state)?;
    // The first page now, so a refusal (403) is an error, not a cut stream.
    let first = state.audit.list(&principal, &filter, Page { after: None, limit: 200 }).await?;
    let audit = state.audit.clone();
    let stream = futures_util::stream::unfold((Some(first), csv, false), move |(pending, csv, header_sent)| {
        let (audit, principal, filter) = (audit.clone(), principal.clone(), filter.clone());
        async move {
            if csv && !header_sent {
                return Some((Ok::<_, std::io::Error>(CSV_HEADER.to_owned()), (pending, csv, true)));
            }
            let (entries, next) = pending?;
            let mut chunk = String::new();
            for e in &entries {
                if csv {
                    chunk.push_str(&csv_row(e));
                } else {
                    chunk.push_str(&serde_json::to_string(&AuditEntryView::from(e)).unwrap_or_default());
                    chunk.push('\n');
                }
            }
            let pending = match next {
                None => None,
                Some(after) => match audit.list(&principal, &filter, Page { after: Some(after), limit: 200 }).await {
                    Ok(page) => Some(page),
                    Err(e) => {
                        tracing::warn!(error = %e.message, "audit export stopped");
                        return Some((Err(std::io::Error::other("audit export failed")), (None, csv, true)));
                    }
                },
            };
            Some((Ok(chunk), (pending, csv, true)))
        }
    });
    let (content_type, file) =
        if csv { ("text/csv; charset=utf-8", "audit.csv") } else { ("application/x-ndjson", "audit.jsonl") };
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The key audit checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPublicKey {
    #[schema(example = "Ed25519")]
    pub algorithm: String,
    /// The 32-byte public key, hex.
    pub public_key: String,
}

#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, description = "Checks the signatures of `keyward audit checkpoint` files; public, \
        no authentication", body = AuditPublicKey)))]
pub async fn audit_public_key(State(state): State<AppState>) -> axum::Json<AuditPublicKey> {
    axum::Json(AuditPublicKey {
        algorithm: "Ed25519".to_owned(),
        public_key: keyward_core::hash::hex(&state.audit.public_key()),
    })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingView {
    /// `never_used`, `unused`, `rotation_due`, `privileged`, `no_expiry`,
    /// `expiring_soon`, `locked` or `unusual_hours`.
    pub kind: String,
    pub key_id: String,
    pub key_name: String,
    pub detail: String,
    pub recommendation: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInsights {
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: DateTime<Utc>,
    /// Keys older than this many days are due for rotation.
    pub rotation_days: u32,
    /// The UTC hours of the day holding 95 % of the workspace's traffic
    /// over the last 90 days.
    pub usual_hours: Vec<u32>,
    pub findings: Vec<FindingView>,
}

#[utoipa::path(get, path = "/v1/insights/keys", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key hygiene report (needs keys:read)", body = KeyInsights),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn key_insights(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<KeyInsights>> {
    let r = state.insights.keys(&principal).await?;
    Ok(axum::Json(KeyInsights {
        generated_at: r.generated_at,
        rotation_days: r.rotation_days,
        usual_hours: r.usual_hours,
        findings: r
            .findings
            .into_iter()
            .map(|f| FindingView {
                kind: f.kind.to_owned(),
                key_id: f.key_id,
                key_name: f.key_name,
                detail: f.detail,
                recommendation: f.recommendation.to_owned(),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// `api_key` (the only type this contract knows).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Back from now, such as `7d` (default).
    pub period: Option<String>,
}

/// One event of the activity log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// `api_key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `created`, `used`, `revoked`, `failed_authentication`, or another
    /// key action (`updated`, `rolled`, `deleted`, …).
    pub event: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
    /// Who did it (member email, key name), when someone did.
    pub actor: Option<String>,
    pub ip: Option<String>,
    /// Uses in the day (`used`) or attempts in the minute
    /// (`failed_authentication`).
    pub count: Option<u64>,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityLog {
    pub activities: Vec<Activity>,
}

/// Events read at most, newest first.
const ACTIVITY_LIMIT: usize = 1000;

#[utoipa::path(get, path = "/api/activity-log", tag = "compatibility", params(ActivityQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "API key events, newest first: created, used (per day), revoked, failed \
            authentication attempts (per key or address per minute), and the other key actions", body = ActivityLog),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    ))]
pub async fn activity_log(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<axum::Json<ActivityLog>> {
    if q.kind.as_deref().is_some_and(|t| t != "api_key") {
        return Err(ApiError::bad_request(Code::InvalidParameter, "type: must be api_key"));
    }
    let default = state.audit.default_period(7);
    let (since, _) = state.audit.window(Some(q.period.as_deref().unwrap_or(&default)), None, None)?;
    let filter = AuditFilter { from: since, ..Default::default() };
    let mut activities = Vec::new();
    let mut after = None;
    while activities.len() < ACTIVITY_LIMIT {
        let (entries, next) = state.audit.list(&principal, &filter, Page { after, limit: 200 }).await?;
        for e in entries.iter().filter(|e| e.event.action.starts_with("key.")) {
            let ev = &e.event;
            let changes: Value = serde_json::from_str(&ev.changes).unwrap_or(Value::Null);
            let event = match ev.action.trim_start_matches("key.") {
                "auth_failed" => "failed_authentication".to_owned(),
                other => other.to_owned(),
            };
            let by_address = ev.target.kind == "address";
            activities.push(Activity {
                kind: "api_key".to_owned(),
                event,
                key_id: ev.target.id.clone().filter(|_| !by_address),
                key_name: ev.target.name.clone(),
                timestamp: ev.at,
                actor: ev.actor.name.clone(),
                ip: if by_address { ev.target.id.clone() } else { ev.ip.clone() },
                count: changes.get("attempts").and_then(Value::as_u64),
                until: None,
            });
        }
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let since = since.unwrap_or_else(|| state.audit.now());
    let names: std::collections::HashMap<String, String> = state
        .keys
        .list_all(&principal, &Default::default())
        .await?
        .into_iter()
        .map(|k| (k.id.to_string(), k.name))
        .collect();
    for (key_id, day, count) in
        state.store.key_days(principal.workspace_id(), since).await.map_err(crate::keys::store_error)?
    {
        activities.push(Activity {
            kind: "api_key".to_owned(),
            event: "used".to_owned(),
            key_name: names.get(&key_id).cloned(),
            key_id: Some(key_id),
            timestamp: day,
            actor: None,
            ip: None,
            count: Some(count),
            until: Some(day + chrono::Duration::days(1)),
        });
    }
    activities.sort_by_key(|a| std::cmp::Reverse(a.timestamp));
    activities.truncate(ACTIVITY_LIMIT);
    Ok(axum::Json(ActivityLog { activities }))
}
