//! The one error response: `{"error": "<message>", "code": "<code>"}` with
//! the matching status. Internal failures get an opaque message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_core::Code;
use keyward_core::{Error, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// Every error the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A human-readable message. Never contains a secret.
    #[schema(example = "API key not found")]
    pub error: String,
    #[schema(schema_with = code_schema)]
    pub code: Code,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Seconds after which trying again may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
    /// Further headers (`RateLimit-*`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None, headers: Vec::new() }
    }

    pub fn with_headers(mut self, headers: Vec<(header::HeaderName, HeaderValue)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// The answer to an address over its failed-authentication limit.
    pub fn too_many_failures(retry_after: u64) -> Self {
        crate::verifier::too_many_failures(retry_after).into()
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn bad_request(code: Code, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::TooManyRequests { retry_after_secs } => {
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.code, e.message).retry_after(retry_after_secs);
            }
            ErrorKind::Internal if e.code == Code::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, code: e.code, message: e.message, retry_after: None, headers: Vec::new() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            "Internal server error".to_owned()
        } else {
            self.message
        };
        let mut response = (self.status, axum::Json(ErrorBody { error: message, code: self.code })).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"keyward\""));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The `code` of an error: one of [`Code::ALL`].
fn code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("A stable machine-readable code."))
        .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
        .examples([serde_json::json!("key_not_found")])
        .build()
}
