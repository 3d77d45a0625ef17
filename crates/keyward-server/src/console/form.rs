//! Form bodies (`application/x-www-form-urlencoded`, or
//! `multipart/form-data` where a form uploads a file), read as name/value
//! pairs: checkboxes repeat a name, and every field is text until a page
//! turns it into the API's own request. An uploaded file is its text, or
//! base64 of its bytes when they are not text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;

use crate::app::AppState;

/// The fields of a submitted form, in order.
#[derive(Debug, Default, Clone)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    pub fn parse(bytes: &[u8]) -> Self {
        FormData(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The field's value, trimmed; absent or blank is `None`.
    pub fn text(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// The field's value as sent (passwords are not trimmed).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated field (checked checkboxes), blank ones left out.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim().to_owned()).collect()
    }

    /// The field's value as sent, or empty (to print back into a form).
    pub fn val(&self, name: &str) -> &str {
        self.raw(name).unwrap_or_default()
    }

    /// Whether a repeated field holds this value (a checked checkbox of a group).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && v == value)
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    /// A checkbox: checked when present with any value.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// A text area of one item a line (or separated by commas).
    pub fn lines(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .unwrap_or_default()
            .split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl FromRequest<AppState> for FormData {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let req = crate::api::extract::with_body_limit(req, state.max_body_bytes).await;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let too_large = |status: StatusCode| {
            let (status, msg) = match status {
                StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "The form is too large"),
                _ => (StatusCode::BAD_REQUEST, "The form could not be read"),
            };
            super::message_page(status, "Form refused", msg)
        };
        if content_type.starts_with("multipart/form-data") {
            let mut multipart =
                axum::extract::Multipart::from_request(req, state).await.map_err(|r| too_large(r.status()))?;
            let mut fields = Vec::new();
            while let Some(field) = multipart.next_field().await.map_err(|e| too_large(e.status()))? {
                let name = field.name().unwrap_or_default().to_owned();
                let is_file = field.file_name().is_some();
                let bytes = field.bytes().await.map_err(|e| too_large(e.status()))?;
                if is_file && bytes.is_empty() {
                    continue; // no file chosen
                }
                let value = match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => text,
                    Err(_) => {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD.encode(&bytes)
                    }
                };
                fields.push((name, value));
            }
            return Ok(FormData(fields));
        }
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(super::message_page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported form",
                "Console forms are sent as application/x-www-form-urlencoded or multipart/form-data",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| too_large(r.status()))?;
        Ok(FormData::parse(&bytes))
    }
}

/// A page's query string, read like a form (never refused: unknown or
/// malformed parameters are ignored by the pages).
pub struct Params(pub FormData);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params(FormData::parse(parts.uri.query().unwrap_or_default().as_bytes())))
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::FormData;

    #[test]
    fn reads_fields_checkboxes_and_lines() {
        let f = FormData::parse(
            b"name=+Ann+&perm=keys%3Aread&perm=keys%3Amanage&perm=&ro=on&ips=10.0.0.0%2F8%0D%0A%0D%0A%3A%3A1",
        );
        assert_eq!(f.text("name").as_deref(), Some("Ann"));
        assert_eq!(f.all("perm"), ["keys:read", "keys:manage"]);
        assert!(f.checked("ro"));
        assert!(!f.checked("admin"));
        assert_eq!(f.lines("ips"), ["10.0.0.0/8", "::1"]);
        assert_eq!(f.text("missing"), None);
    }
}
