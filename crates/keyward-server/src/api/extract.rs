//! Extractors whose rejections use our error shape, and which never echo a
//! value from the request (it might be a secret) in an error message.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::principal::Principal;

/// Replaces every double-quoted part of a message with `"…"`: serde quotes
/// the offending input, and input may be a secret.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…");
            }
            inside = !inside;
            if !inside {
                out.push('"');
            }
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Every body of this API is a JSON object; serde would also accept an
/// array for a struct, so the shape is checked first.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes).map_err(body_error),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            Err(ApiError::bad_request("invalid_body", "Invalid request body: expected a JSON object"))
        }
        _ => Err(serde_json::from_slice::<serde_json::Value>(bytes).err().map_or_else(
            || ApiError::bad_request("invalid_body", "Invalid request body: expected a JSON object"),
            body_error,
        )),
    }
}

fn body_error(e: serde_json::Error) -> ApiError {
    let message = redact_quoted(&e.to_string());
    match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request("invalid_body", format!("Invalid request body: {message}"))
        }
        _ => ApiError::bad_request("malformed_json", format!("Request body is not valid JSON: {message}")),
    }
}

async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the request body as application/json",
            ));
        }
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Request body is too large")
        } else {
            ApiError::bad_request("unreadable_body", "The request body could not be read")
        }
    })
}

/// A JSON body. Missing bodies, syntax errors, wrong types and unknown
/// fields are 400; bodies over the limit 413; other media types 415.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("body_required", "A JSON request body is required"));
        }
        parse_object(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`], but an empty body means `T::default()` (for actions
/// whose parameters are all optional).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

/// Query parameters, with 400 in our shape when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", redact_quoted(&e.body_text())))
    }
}

/// Path parameters, with 400 in our shape when they do not decode.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", redact_quoted(&e.body_text())))
    }
}

/// The bearer token of a request, from `Authorization: Bearer …`.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_required",
                "Authentication required: send Authorization: Bearer <API key>",
            )
        })?;
        Ok(Principal::authenticate(&state.verifier, token).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_quoted;

    #[test]
    fn quoted_input_is_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "kw_live_secret", expected u32"#),
            r#"invalid type: string "…", expected u32"#
        );
        assert_eq!(redact_quoted("unknown field `foo`"), "unknown field `foo`");
    }
}
