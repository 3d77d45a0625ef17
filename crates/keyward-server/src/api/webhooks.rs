//! `/v1/webhooks`: a workspace's endpoints, their secret (shown once,
//! rotated with an overlap), the delivery log, resends and test events.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keyward_core::webhook::Endpoint;
use keyward_core::{Code, Error};
use keyward_store::webhooks::{Delivery, DeliveryStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use super::views::{double_option, time, time_opt};
use crate::app::AppState;
use crate::principal::Principal;
use crate::webhooks::{EndpointDraft, EndpointPatch};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    #[schema(example = "wh_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    pub workspace_id: String,
    #[schema(example = "https://hooks.example.com/keyward")]
    pub url: String,
    pub description: Option<String>,
    /// Event types (`key.created`, …), groups (`key.*`, `member.*`) or `*`.
    #[schema(example = json!(["key.revoked", "key.leaked"]))]
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why keyward turned it off: `gone` (it answered 410) or `failing`
    /// (every delivery failed for 3 days); null when on, or turned off by a member.
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed; null after a success.
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for WebhookView {
    fn from(e: Endpoint) -> Self {
        WebhookView {
            id: e.id,
            workspace_id: e.workspace_id,
            url: e.url,
            description: e.description,
            events: e.events.names(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new endpoint, with its signing secret (shown only here).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub view: WebhookView,
    /// The signing secret (Standard Webhooks: `whsec_` and base64), shown once.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub data: Vec<WebhookView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// https, or http to a host the operator allows (`--webhook-allow-hosts`);
    /// no credentials; not to a loopback, private or link-local address
    /// unless the operator allows the host.
    #[schema(example = "https://hooks.example.com/keyward")]
    pub url: String,
    /// Event types, groups (`key.*`) or `*` (everything).
    #[schema(example = json!(["key.revoked", "key.leaked", "key.expiring"]))]
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Turning an endpoint on again starts its failures over.
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateSecretRequest {
    /// How long the old secret goes on signing beside the new one (0 to
    /// 604800; default 86400, a day).
    pub overlap_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new signing secret, shown once.
    pub secret: String,
    /// When the previous secret stops signing.
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub previous_expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The event's id: the `webhook-id` header of every attempt.
    #[schema(example = "msg_2hG8sK3mPz8TbL1cYk4Lw0")]
    pub event_id: String,
    pub endpoint_id: String,
    #[serde(rename = "type")]
    #[schema(example = "key.revoked")]
    pub event_type: String,
    /// `pending` (to be sent, or retried), `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When a pending delivery is tried next.
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer.
    pub response_status: Option<i64>,
    /// How long the last attempt took.
    pub latency_ms: Option<i64>,
    /// The start of the last answer's body (at most 1 KiB).
    pub response_body: Option<String>,
    /// Why the last attempt failed, when it got no 2xx.
    pub error: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            event_id: d.event_id,
            endpoint_id: d.endpoint_id,
            event_type: d.event_type,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at).flatten(),
            response_status: d.response_status,
            latency_ms: d.latency_ms,
            response_body: d.response_body,
            error: d.error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    /// Newest first.
    pub data: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestEventSent {
    /// The test event's id (see its delivery in the log).
    pub event_id: String,
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = WebhookList),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing webhooks:manage", body = ErrorBody),
    ))]
pub async fn list_webhooks(State(state): State<AppState>, principal: Principal) -> ApiResult<axum::Json<WebhookList>> {
    let data = state.webhooks.list(&principal).await?.into_iter().map(WebhookView::from).collect();
    Ok(axum::Json(WebhookList { data }))
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    description = "Makes an endpoint. Its signing secret is in the answer's `secret`, shown once. Deliveries are \
        signed by the Standard Webhooks scheme: headers `webhook-id`, `webhook-timestamp` and `webhook-signature` \
        (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, space-separated when two secrets sign). Needs a master key.",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 201, body = WebhookWithSecret),
        (status = 400, description = "A URL not allowed (webhook_url_not_allowed) or an unknown event (invalid_events)",
            body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Missing webhooks:manage", body = ErrorBody),
        (status = 409, description = "No master key (master_key_required), or too many endpoints", body = ErrorBody),
    ))]
pub async fn create_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> ApiResult<Response> {
    let draft =
        EndpointDraft { url: body.url, events: body.events, description: body.description, enabled: body.enabled };
    let (endpoint, secret) = state.webhooks.create(&principal, draft).await?;
    let body = WebhookWithSecret { view: endpoint.into(), secret: secret.to_text() };
    Ok(no_store((StatusCode::CREATED, axum::Json(body)).into_response()))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = WebhookView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(state.webhooks.get(&principal, &id).await?.into()))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = WebhookView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn update_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhookRequest>,
) -> ApiResult<axum::Json<WebhookView>> {
    let patch =
        EndpointPatch { url: body.url, events: body.events, description: body.description, enabled: body.enabled };
    Ok(axum::Json(state.webhooks.update(&principal, &id, patch).await?.into()))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Deleted, with its secrets and deliveries"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.webhooks.delete(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    description = "A new signing secret, shown once. The old one goes on signing beside it for `overlapSeconds` \
        (default a day): meanwhile `webhook-signature` carries two signatures.",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = Option<RotateSecretRequest>),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = RotatedSecret),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RotateSecretRequest>,
) -> ApiResult<Response> {
    let overlap = body.overlap_seconds.unwrap_or(86_400);
    let (secret, previous_expires_at) = state.webhooks.rotate_secret(&principal, &id, overlap).await?;
    let body = RotatedSecret { secret: secret.to_text(), previous_expires_at };
    Ok(no_store(axum::Json(body).into_response()))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    description = "The endpoint's delivery log, newest first: status, attempts, the last answer's status, latency \
        and at most 1 KiB of its body. Kept for the retention (`--webhook-retention-days`).",
    params(("id" = String, Path, description = "Endpoint id"), DeliveryQuery),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<axum::Json<DeliveryList>> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            DeliveryStatus::parse(s)
                .ok_or_else(|| Error::invalid(Code::InvalidParameter, "status: one of pending, delivered, failed"))?,
        ),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Error::invalid(Code::InvalidParameter, "limit: from 1 to 100").into());
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            parse_cursor(c)
                .ok_or_else(|| Error::invalid(Code::InvalidParameter, "cursor: the nextCursor of a previous page"))?,
        ),
    };
    let rows = state.webhooks.deliveries(&principal, &id, status, before, limit).await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| format!("{}.{}", d.created_at.timestamp_millis(), d.event_id)))
        .flatten();
    Ok(axum::Json(DeliveryList { data: rows.into_iter().map(DeliveryView::from).collect(), next_cursor }))
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (at, id) = c.split_once('.')?;
    let at: i64 = at.parse().ok()?;
    (id.starts_with("msg_") && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| (at, id.to_owned()))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{eventId}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), ("eventId" = String, Path, description = "Event id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = DeliveryView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<DeliveryView>> {
    Ok(axum::Json(state.webhooks.delivery(&principal, &id, &event_id).await?.into()))
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{eventId}/resend", tag = "webhooks",
    description = "Sends the event to the endpoint again, now (with the same `webhook-id`).",
    params(("id" = String, Path, description = "Endpoint id"), ("eventId" = String, Path, description = "Event id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, body = DeliveryView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn resend_delivery(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, axum::Json<DeliveryView>)> {
    let d = state.webhooks.resend(&principal, &id, &event_id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(d.into())))
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    description = "Sends a `webhook.test` event to this endpoint (whatever it subscribes to).",
    params(("id" = String, Path, description = "Endpoint id")),
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 202, body = TestEventSent),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub async fn test_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, axum::Json<TestEventSent>)> {
    let event_id = state.webhooks.send_test(&principal, &id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TestEventSent { event_id })))
}
