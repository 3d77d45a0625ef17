//! The `Idempotency-Key` header over HTTP: which operations take it, and
//! the request's way through [`crate::idempotency`] (claim, run, keep the
//! answer; or replay it, or refuse).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::Code;

use super::error::ApiError;
use crate::app::AppState;
use crate::idempotency::{Answer, Begun, KEPT_HEADERS, Refusal, fingerprint, valid_key};

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that repeats the first request's.
pub const REPLAYED: &str = "idempotent-replayed";

/// The largest answer kept for a retry (creating calls answer far less).
const MAX_ANSWER: usize = 1024 * 1024;

/// Operations under `/v1` that take no key: decisions that change nothing
/// a retry could repeat, sign-in steps before there is a credential to
/// scope a key to, code hosts' signed alerts, and streamed transforms.
pub const EXEMPT: &[(&str, &str)] = &[
    ("POST", "/v1/keys/verify"),
    ("POST", "/v1/keys/verify/batch"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/reauth"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/invitations/accept"),
    ("POST", "/v1/ftp/authenticate"),
    ("POST", "/v1/leaks/github"),
    ("POST", "/v1/leaks/gitlab"),
    ("POST", "/v1/pgp-keys/{id}/encrypt"),
    ("POST", "/v1/pgp-keys/{id}/decrypt"),
    ("POST", "/v1/replication/usage"),
];

/// Whether the operation `method route` takes an `Idempotency-Key`: every
/// `POST`, `PATCH` and `DELETE` under `/v1` and `/api/api-keys` but the
/// [`EXEMPT`] ones (the OAuth endpoints live under `/oauth`).
pub fn takes_key(method: &str, route: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "DELETE")
        && (route.starts_with("/v1/") || route == "/api/api-keys")
        && !EXEMPT.iter().any(|(m, r)| *m == method && *r == route)
}

fn invalid_key() -> Response {
    ApiError::bad_request(
        Code::InvalidIdempotencyKey,
        "Idempotency-Key must be one value of 1 to 255 printable ASCII characters",
    )
    .into_response()
}

/// Answers a request that carries an `Idempotency-Key`, running it through
/// `inner` (the route) when its key is free.
pub async fn answer<S>(state: AppState, inner: S, req: Request) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    use tower::ServiceExt;
    let (mut parts, body) = req.into_parts();
    let mut values = parts.headers.get_all(HEADER).iter();
    let key = match (values.next(), values.next()) {
        (Some(v), None) if valid_key(v.as_bytes()) => v.to_str().unwrap_or_default().to_owned(),
        _ => return invalid_key(),
    };
    let route = |parts, body| async move {
        match inner.oneshot(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    if !state.idempotency.enabled() {
        return route(parts, body).await;
    }
    let principal = match super::extract::principal(&parts, &state, super::extract::peer_of(&parts)).await {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge, "Request body is too large")
                .into_response();
        }
    };
    let path = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |p| p.as_str());
    let fingerprint = fingerprint(parts.method.as_str(), path, &bytes);
    // From here the request runs to its end even when the client hangs up
    // (its time-out): the retry it sends then finds the answer kept.
    let answered = async move {
        let claim = match state.idempotency.begin(&principal, &key, fingerprint).await {
            Ok(Begun::Run(claim)) => claim,
            Ok(Begun::Replay(answer)) => return replay(answer),
            Err(refusal) => return refused(refusal),
        };
        // The route's extractor takes the caller resolved here.
        parts.extensions.insert(principal);
        let response = claim.hold(route(parts, Body::from(bytes))).await;
        if claim.lost() {
            // Another request with the key made its change first.
            return match state.idempotency.after_lost_race(&claim).await {
                Ok(answer) => replay(answer),
                Err(refusal) => refused(refusal),
            };
        }
        let (head, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_ANSWER).await else {
            state.idempotency.finish(&claim, None).await;
            return ApiError::from(keyward_core::Error::internal("the answer could not be read")).into_response();
        };
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                head.headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| ((*name).to_owned(), v.to_owned()))
            })
            .collect();
        let answer = Answer { status: head.status.as_u16(), headers, body: body.to_vec() };
        state.idempotency.finish(&claim, Some(&answer)).await;
        Response::from_parts(head, Body::from(body))
    };
    match tokio::spawn(answered).await {
        Ok(response) => response,
        Err(_) => ApiError::from(keyward_core::Error::internal("the request failed")).into_response(),
    }
}

fn replay(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(HeaderName::from_static(REPLAYED), HeaderValue::from_static("true"));
    response
}

fn refused(refusal: Refusal) -> Response {
    let (code, message) = refusal.message();
    match refusal {
        Refusal::Reused => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
        Refusal::InProgress { retry_after } => {
            ApiError::new(StatusCode::CONFLICT, code, message).retry_after(retry_after)
        }
        Refusal::Lost => ApiError::new(StatusCode::CONFLICT, code, message),
        Refusal::Error(e) => ApiError::from(e),
    }
    .into_response()
}

/// Adds the `Idempotency-Key` header parameter to every operation that
/// takes it, in the OpenAPI document, with the answers it can bring (400,
/// 409, 422) where the operation does not document them already.
pub struct IdempotencyHeader;

impl utoipa::Modify for IdempotencyHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        let parameter = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "A key of your choice (1–255 printable ASCII characters) that makes a retry safe: a retry with \
                 the same key and the same request gets the first answer again (with `Idempotent-Replayed: \
                 true`) instead of making a second change; the same key with another request is 422 \
                 `idempotency_key_reused`; while the first still runs, 409 `idempotency_key_in_progress` with \
                 `Retry-After`. Kept 24 hours (`--idempotency-hours`), per workspace and credential.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(255))))
            .build();
        let error = |description: &str| {
            use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            RefOr::T(ResponseBuilder::new().description(description).content("application/json", body).build())
        };
        let answers = [
            ("400", "An invalid Idempotency-Key (invalid_idempotency_key), or invalid input"),
            (
                "409",
                "The first request with this Idempotency-Key is still running (idempotency_key_in_progress, \
                Retry-After), or its change was made and its answer lost (idempotent_answer_lost)",
            ),
            ("422", "This Idempotency-Key was used for another request (idempotency_key_reused)"),
        ];
        for (route, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [("POST", &mut item.post), ("PATCH", &mut item.patch), ("DELETE", &mut item.delete)] {
                if let Some(op) = op.as_mut()
                    && takes_key(method, route)
                {
                    op.parameters.get_or_insert_with(Vec::new).push(parameter.clone());
                    for (status, description) in answers {
                        op.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description));
                    }
                }
            }
        }
    }
}
