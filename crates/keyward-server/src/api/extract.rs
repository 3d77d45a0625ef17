//! Extractors whose rejections use our error shape, and which never echo a
//! value from the request (it might be a secret) in an error message.

use crate::throttle::Seen;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use keyward_core::Code;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::AppState;
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
pub(crate) fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            // Most bodies are good: parse once without tracking the path,
            // and again with it only to describe a failure.
            if let Ok(value) = serde_json::from_slice(bytes) {
                return Ok(value);
            }
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value: T = serde_path_to_error::deserialize(&mut de)
                .map_err(|e| describe_body_error(&e.path().to_string(), e.inner()))?;
            de.end().map_err(|e| describe_body_error("", &e))?;
            Ok(value)
        }
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            Err(ApiError::bad_request(Code::InvalidBody, "Invalid request body: expected a JSON object"))
        }
        _ => Err(serde_json::from_slice::<serde_json::Value>(bytes).err().map_or_else(
            || ApiError::bad_request(Code::InvalidBody, "Invalid request body: expected a JSON object"),
            body_error,
        )),
    }
}

fn body_error(e: serde_json::Error) -> ApiError {
    describe_body_error("", &e)
}

/// A body the API cannot take, in words for the client: which field and
/// what it allows. Never the submitted value (it might be a secret) and
/// never a Rust type name.
fn describe_body_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if !matches!(e.classify(), Category::Data) {
        return ApiError::bad_request(
            Code::MalformedJson,
            format!("Request body is not valid JSON (line {}, column {})", e.line(), e.column()),
        );
    }
    let text = e.to_string();
    let message = text.split(" at line ").next().unwrap_or_default();
    let field = match path {
        "" | "." => "The request body".to_owned(),
        p => format!("Field {p}"),
    };
    // The last "expected": a quoted value before it may contain the word.
    let after_expected = || message.rsplit_once("expected ").map(|(_, e)| e.replace('`', ""));
    let described = if message.starts_with("unknown field") {
        let named = unknown_name(message).map_or_else(String::new, |n| format!(" {n}"));
        match after_expected() {
            Some(allowed) => {
                format!("Unknown field{named} in the request body; allowed: {}", allowed.trim_start_matches("one of "))
            }
            None => format!("The request body takes no fields (unknown field{named})"),
        }
    } else if CHRONO_MESSAGES.contains(&message) {
        let or_days = match path.rsplit('.').next() {
            Some("expiresAt") => " (or give expiresIn, a number of days)",
            _ => "",
        };
        format!("{field} must be a date and time in RFC 3339, e.g. 2027-01-31T12:00:00Z{or_days}")
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        match path {
            "" | "." => format!("{name} is required"),
            p => format!("{p}.{name} is required"),
        }
    } else if message.starts_with("unknown variant") {
        format!("{field} must be one of: {}", after_expected().unwrap_or_default())
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        format!("{field} must be {}", expected_in_words(&after_expected().unwrap_or_default()))
    } else if message.starts_with("invalid length") {
        format!("{field} has the wrong number of items")
    } else if let Some(rest) = message.strip_prefix("duplicate field `") {
        format!("{} is given more than once", rest.split('`').next().unwrap_or_default())
    } else {
        // Our own parsers' messages (dates, …) name no input; drop any
        // quoted part all the same.
        format!("{field} is invalid: {}", strip_quoted(message))
    };
    ApiError::bad_request(Code::InvalidBody, described)
}

/// What chrono says of a date it cannot read (none names the input).
const CHRONO_MESSAGES: [&str; 7] = [
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
    "bad or unsupported format string",
];

/// The name of an unknown field or parameter in serde's message, when it
/// looks like a name (at most 64 letters, digits, `_`, `-`, `.`): a name
/// is not a submitted value, but anything else is not shown.
fn unknown_name(message: &str) -> Option<&str> {
    let name = message.strip_prefix("unknown field `")?.split('`').next()?;
    let plausible = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    plausible.then_some(name)
}

/// serde's name of an expected type, as a client would say it.
fn expected_in_words(expected: &str) -> String {
    let whole = |max: u64| format!("a whole number from 0 to {max}");
    match expected.trim() {
        "u8" => whole(u8::MAX.into()),
        "u16" => whole(u16::MAX.into()),
        "u32" => whole(u32::MAX.into()),
        "u64" | "usize" => whole(u64::MAX),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" | "a borrowed string" | "a character" => "a string".to_owned(),
        "a sequence" => "a list".to_owned(),
        e if e.starts_with("a map") || e.starts_with("struct ") => "an object".to_owned(),
        e if e.starts_with("a ") || e.starts_with("an ") => strip_quoted(e),
        _ => "of another type".to_owned(),
    }
}

/// A query string the endpoint cannot take: unknown parameters are refused
/// like unknown body fields, naming what is allowed, never what was sent.
fn describe_query_error(path: &str, text: &str) -> ApiError {
    if text.starts_with("unknown field") {
        let named = unknown_name(text).map_or_else(String::new, |n| format!(" {n}"));
        let allowed = text.rsplit_once("expected ").map(|(_, e)| e.replace('`', ""));
        let allowed = allowed.as_deref().map_or("none", |a| a.trim_start_matches("one of "));
        return ApiError::bad_request(
            Code::UnknownQueryParameter,
            format!("Unknown query parameter{named}; allowed: {allowed}"),
        );
    }
    let parameter = match path {
        "" | "." => "A query parameter".to_owned(),
        p => format!("Query parameter {p}"),
    };
    // The standard library's words for a number it cannot read.
    let whole_number = ["invalid digit", "cannot parse integer", "number too large", "number too small"];
    let described = if whole_number.iter().any(|w| text.contains(w)) {
        format!("{parameter} must be a whole number")
    } else if text.starts_with("unknown variant") {
        let allowed = text.rsplit_once("expected ").map(|(_, e)| e.replace('`', ""));
        format!("{parameter} must be one of: {}", allowed.unwrap_or_default())
    } else if text.contains("provided string was not `true` or `false`") {
        format!("{parameter} must be true or false")
    } else if CHRONO_MESSAGES.contains(&text) {
        format!("{parameter} must be a date and time in RFC 3339, e.g. 2027-01-31T12:00:00Z")
    } else {
        format!("{parameter} is invalid: {}", strip_quoted(&redact_quoted(text)))
    };
    ApiError::bad_request(Code::InvalidQuery, described)
}

/// Drops every part of a message between backticks.
fn strip_quoted(message: &str) -> String {
    message.split('`').step_by(2).collect::<Vec<_>>().join("…")
}

async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        let json_suffix = essence.len() >= 5 && essence.is_char_boundary(essence.len() - 5) && {
            essence[essence.len() - 5..].eq_ignore_ascii_case("+json")
        };
        if !(essence.eq_ignore_ascii_case("application/json") || json_suffix) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                "Send the request body as application/json",
            ));
        }
    }
    // Read under the router's limit directly: `Bytes::from_request` boxes
    // the body to limit it, once per request; and a body that comes in one
    // frame (most do) is that frame's bytes, not a copy.
    use http_body_util::BodyExt;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge, "Request body is too large");
    let unreadable = || ApiError::bad_request(Code::UnreadableBody, "The request body could not be read");
    let limit = state.max_body_bytes;
    let mut body = req.into_body();
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    let mut whole: Option<Bytes> = None;
    let mut more = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else { continue };
        let read = whole.as_ref().map_or(0, Bytes::len) + more.len() + data.len();
        if read > limit {
            return Err(too_large());
        }
        match whole.take() {
            None if more.is_empty() => whole = Some(data),
            first => {
                more.extend_from_slice(&first.unwrap_or_default());
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(whole.unwrap_or_else(|| Bytes::from(more)))
}

/// `req` with the router's body limit marked on it, for an axum extractor
/// that reads the body (`Bytes`, `Multipart`). The router marks no request
/// itself (`DefaultBodyLimit` as a layer would insert an extension into
/// every request, the hot paths' too); the API's own extractors read under
/// the limit directly.
pub async fn with_body_limit(req: Request, limit: usize) -> Request {
    use tower::{Layer, ServiceExt};
    let mark = axum::extract::DefaultBodyLimit::max(limit)
        .layer(tower::service_fn(|req: Request| async move { Ok::<_, std::convert::Infallible>(req) }));
    match mark.oneshot(req).await {
        Ok(req) => req,
        Err(never) => match never {},
    }
}

/// The body as bytes under the router's limit: what axum's `Bytes`
/// extractor gives (its rejection included).
pub struct LimitedBytes(pub Result<Bytes, axum::extract::rejection::BytesRejection>);

impl FromRequest<AppState> for LimitedBytes {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let req = with_body_limit(req, state.max_body_bytes).await;
        Ok(LimitedBytes(Bytes::from_request(req, state).await))
    }
}

/// A JSON body. Missing bodies, syntax errors, wrong types and unknown
/// fields are 400; bodies over the limit 413; other media types 415.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(Code::BodyRequired, "A JSON request body is required"));
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
        // Parsed with the path tracked, so a refusal names the parameter.
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| describe_query_error(&e.path().to_string(), &e.inner().to_string()))
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
            .map_err(|e| ApiError::bad_request(Code::InvalidPath, redact_quoted(&e.body_text())))
    }
}

/// The bearer token of a request, from `Authorization: Bearer …`.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller's address (behind a trusted proxy, the client's).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state)))
    }
}

fn client_ip(parts: &Parts, state: &AppState) -> Option<std::net::IpAddr> {
    client_ip_of(peer_of(parts), parts, state)
}

/// The connection's peer, as the server marked it on the request.
pub(crate) fn peer_of(parts: &Parts) -> Option<std::net::SocketAddr> {
    parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0)
}

fn client_ip_of(peer: Option<std::net::SocketAddr>, parts: &Parts, state: &AppState) -> Option<std::net::IpAddr> {
    peer.map(|peer| super::forward_auth::client_ip(peer.ip(), &parts.headers, &state.forward_auth.trusted_proxies))
}

/// The client's `User-Agent`, as recorded in the audit log.
pub struct UserAgent(pub Option<String>);

impl FromRequestParts<AppState> for UserAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(UserAgent(user_agent(parts)))
    }
}

fn user_agent(parts: &Parts) -> Option<String> {
    parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether a request's `Origin` names this server: the request's own host,
/// or the configured public URL.
pub fn same_origin(parts: &Parts, public_origin: Option<&str>) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let origin = origin.trim_end_matches('/');
    if public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some(("http" | "https", authority)), Some(host)) => authority.eq_ignore_ascii_case(host),
        _ => false,
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Resolved already for the request's `Idempotency-Key`.
        if let Some(resolved) = parts.extensions.remove::<Principal>() {
            return Ok(resolved);
        }
        principal(parts, state, peer_of(parts)).await
    }
}

/// Who sends the request, from a connection whose peer is `peer` (the
/// extractor's work, for the routes the app answers before its router).
pub(crate) async fn principal(
    parts: &Parts,
    state: &AppState,
    peer: Option<std::net::SocketAddr>,
) -> Result<Principal, ApiError> {
    let ip = client_ip_of(peer, parts, state);
    let throttle = state.verifier.throttle();
    if let Some(wait) = ip.and_then(|ip| throttle.retry_after(Seen::Api, ip)) {
        return Err(ApiError::too_many_failures(wait));
    }
    // The cookie is looked for only without a bearer token.
    let bearer = bearer_token(parts);
    let cookie = || super::members::session_cookie_value(&parts.headers);
    let principal = match (bearer, bearer.is_none().then(cookie).flatten()) {
        (Some(token), _) if crate::members::MemberService::is_session_jwt(token) => {
            // Boxed: only the API key path is a hot one.
            Box::pin(state.members.from_jwt(token)).await
        }
        // An access token (keyward-signed; signed requests are for
        // verification, not the API).
        (Some(token), _) if keyward_core::oauth::looks_like_jwt(token) => Box::pin(state.oauth.principal(token)).await,
        (Some(token), _) => Principal::authenticate(&state.verifier, token, ip).await,
        (None, Some(cookie)) => {
            let unsafe_method = !matches!(parts.method.as_str(), "GET" | "HEAD" | "OPTIONS");
            if unsafe_method && !same_origin(parts, state.public_origin.as_deref()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    Code::CrossOriginRequest,
                    "A request signed in by cookie that changes anything must come from this server's own \
                     pages (its Origin header must name this server)",
                ));
            }
            Box::pin(state.members.from_cookie(cookie)).await
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::AuthenticationRequired,
                "Authentication required: send Authorization: Bearer <API key or token>, or sign in",
            ));
        }
    };
    if let (Err(e), Some(ip)) = (&principal, ip)
        && e.kind == keyward_core::ErrorKind::Unauthenticated
    {
        throttle.failed(Seen::Api, ip);
    }
    // The header as sent, copied once (cleaned) into the principal.
    let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    Ok(principal?.from_client(ip, user_agent))
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
