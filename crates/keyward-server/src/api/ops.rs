//! Operations endpoints: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_core::Code;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::app::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Status)))]
pub async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Storage answers; `ratelimits` says whether rate limits are shared \
            through Redis (`redis`) or counted by each node alone (`local`)", body = Readiness),
        (status = 503, description = "Storage does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Readiness>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Code::NotReady, "Storage is not reachable")
    })?;
    let limiter = state.verifier.limiter();
    let redis = limiter.redis_reachable().await.map(|ok| if ok { "reachable" } else { "unreachable" });
    Ok(axum::Json(Readiness { status: "ready", ratelimits: limiter.mode(), redis }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `redis`: limits shared by every node, exact; `local`: each node
    /// limits alone (no `--redis-url`, or Redis does not answer).
    #[schema(example = "redis")]
    pub ratelimits: &'static str,
    /// With `--redis-url`: `reachable` or `unreachable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.verifier.flush_metrics();
    let mut body = state.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    crate::telemetry::VERIFY_LATENCY.render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
