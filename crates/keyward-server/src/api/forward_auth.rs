//! `/v1/authorize`: forward-auth for gateways. nginx `auth_request`,
//! Traefik ForwardAuth and Envoy's HTTP ext_authz ask here about every
//! request; keyward answers 200 with identity headers, or 401/403 with the
//! JSON error body.
//!
//! The original request comes from `X-Original-Method`/`X-Original-URI`
//! (nginx, as the recipe configures them), `X-Forwarded-Method`/
//! `X-Forwarded-Uri` (Traefik), or, for Envoy, the method and the path
//! after `/v1/authorize` of the auth request itself. The gateway proves
//! itself with `X-Keyward-Verifier-Key` (a key holding `keys:verify`, whose
//! workspace is the one verified against), or by calling the dedicated
//! forward-auth listener, which trusts its callers.

use crate::throttle::Seen;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use keyward_core::Code;
use keyward_core::verify::{Request, VerifyCode};

use super::error::ApiError;
use crate::app::AppState;
use crate::principal::Principal;

pub const PREFIX: &str = "/v1/authorize";
pub const VERIFIER_KEY_HEADER: &str = "x-keyward-verifier-key";
const MAX_URI: usize = 8192;

/// How forward-auth finds keys and clients.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// A header that may carry the client's key (besides `Authorization: Bearer`).
    pub key_header: Option<HeaderName>,
    /// A query parameter of the original URI that may carry the client's key.
    pub key_query_param: Option<String>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            key_header: Some(HeaderName::from_static("x-api-key")),
            key_query_param: None,
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")],
        }
    }
}

fn header_str(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn bad_request(code: Code, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The original method and URI of the request being authorised.
fn original_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let envoy_path = uri.path().strip_prefix(PREFIX).filter(|rest| rest.starts_with('/'));
    let original_uri = header_str(headers, "x-original-uri")
        .or_else(|| header_str(headers, "x-forwarded-uri"))
        .map(str::to_owned)
        .or_else(|| {
            envoy_path.map(|p| match uri.query() {
                Some(q) => format!("{p}?{q}"),
                None => p.to_owned(),
            })
        })
        .ok_or_else(|| {
            bad_request(
                Code::MissingOriginalUri,
                "The original request URI is missing: send X-Original-URI (nginx) or X-Forwarded-Uri (Traefik), \
                 or append the path to /v1/authorize (Envoy)",
            )
        })?;
    if !original_uri.starts_with('/')
        || original_uri.len() > MAX_URI
        || original_uri.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad_request(Code::InvalidOriginalUri, "The original request URI is not an absolute path"));
    }
    let original_method = header_str(headers, "x-original-method")
        .or_else(|| header_str(headers, "x-forwarded-method"))
        .unwrap_or(method.as_str());
    if original_method.is_empty()
        || original_method.len() > 16
        || !original_method.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(bad_request(Code::InvalidOriginalMethod, "The original request method is not an HTTP method"));
    }
    Ok((original_method.to_ascii_uppercase(), original_uri))
}

/// The client's key: `Authorization: Bearer`, the configured header, or the
/// configured query parameter of the original URI.
fn presented_key(headers: &HeaderMap, query: Option<&str>, config: &ForwardAuthConfig) -> Option<String> {
    if let Some(value) = header_str(headers, "authorization")
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    if let Some(name) = &config.key_header
        && let Some(v) = header_str(headers, name.as_str())
    {
        return Some(v.to_owned());
    }
    let (param, query) = (config.key_query_param.as_deref()?, query?);
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == param).map(|(_, v)| v.into_owned())
}

/// The client address: the peer, or, when the peer is a trusted proxy, the
/// last untrusted address of `X-Forwarded-For` (else `X-Real-IP`).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    if let Some(xff) = header_str(headers, &X_FORWARDED_FOR) {
        let hops: Vec<IpAddr> = xff.split(',').filter_map(|h| h.trim().parse().ok()).collect();
        if let Some(ip) = hops.iter().rev().find(|ip| !is_trusted(ip)).or(hops.first()) {
            return *ip;
        }
    }
    header_str(headers, &X_REAL_IP).and_then(|v| v.parse().ok()).unwrap_or(peer)
}

// Named once: a lookup by `&str` parses the name on every request.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

fn identity_headers(v: &crate::verifier::Verification) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(key) = v.key.as_deref() else {
        return out;
    };
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(HeaderName::from_static("x-keyward-key-id"), &key.id);
    put(HeaderName::from_static("x-keyward-workspace"), &key.workspace_id);
    put(HeaderName::from_static("x-keyward-key-type"), key.key_type.as_str());
    let mut scopes = String::with_capacity(64);
    for (i, scope) in v.permission_scopes().iter().enumerate() {
        use std::fmt::Write;
        let _ = write!(scopes, "{}{scope}", if i == 0 { "" } else { " " });
    }
    put(HeaderName::from_static("x-keyward-scopes"), &scopes);
    if let Some(ws) = v.workspace.as_deref() {
        // Read only for workspaces that name fields: the record holds the
        // metadata as text.
        let metadata: serde_json::Map<String, serde_json::Value> = match ws.identity_metadata.is_empty() {
            true => serde_json::Map::new(),
            false => serde_json::from_str(key.metadata().get()).unwrap_or_default(),
        };
        for field in &ws.identity_metadata {
            let value = match metadata.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
                _ => continue,
            };
            if value.bytes().all(|b| (0x20..0x7f).contains(&b))
                && let Ok(name) = HeaderName::try_from(format!("x-keyward-meta-{}", field.to_ascii_lowercase()))
            {
                put(name, &value);
            }
        }
    }
    out
}

fn refusal(code: VerifyCode, message: &str) -> ApiError {
    match code {
        VerifyCode::Expired => keyward_core::Error::expired_api_key().into(),
        VerifyCode::ForbiddenResource => ApiError::new(StatusCode::FORBIDDEN, Code::ForbiddenResource, message),
        VerifyCode::ForbiddenOrigin => ApiError::new(StatusCode::FORBIDDEN, Code::ForbiddenOrigin, message),
        VerifyCode::ForbiddenIp => ApiError::new(StatusCode::FORBIDDEN, Code::ForbiddenIp, message),
        VerifyCode::InsufficientPermissions => {
            ApiError::new(StatusCode::FORBIDDEN, Code::InsufficientPermissions, message)
        }
        VerifyCode::UsageExceeded => ApiError::new(StatusCode::TOO_MANY_REQUESTS, Code::UsageExceeded, message),
        VerifyCode::RateLimited => ApiError::new(StatusCode::TOO_MANY_REQUESTS, Code::RateLimited, message),
        _ => keyward_core::Error::invalid_api_key().into(),
    }
}

#[utoipa::path(get, path = "/v1/authorize", tag = "verification",
    description = "Forward-auth for gateways; any method is accepted. The client's key comes from \
        `Authorization: Bearer`, the configured key header (default `X-API-Key`) or query parameter; the \
        original request from `X-Original-Method`/`X-Original-URI` (nginx), `X-Forwarded-Method`/`X-Forwarded-Uri` \
        (Traefik) or the method and the path after `/v1/authorize` (Envoy ext_authz). The gateway authenticates \
        with `X-Keyward-Verifier-Key` (a key with keys:verify) unless it calls the forward-auth listener.",
    params(
        ("X-Keyward-Verifier-Key" = Option<String>, Header, description = "The gateway's key (keys:verify)"),
        ("X-Original-URI" = Option<String>, Header, description = "Original URI (nginx)"),
        ("X-Original-Method" = Option<String>, Header, description = "Original method (nginx)"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "Original URI (Traefik)"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "Original method (Traefik)"),
    ),
    responses(
        (status = 200, description = "Allowed, with an empty body (so gateways keep the connection); the \
            identity is in the X-Keyward-Key-Id, X-Keyward-Workspace, X-Keyward-Key-Type, X-Keyward-Scopes and \
            X-Keyward-Meta-* headers"),
        (status = 400, description = "The original request is missing or malformed (the gateway denies). Every \
            denial names its code in X-Keyward-Error and carries the JSON error ({\"error\", \"code\"}), except \
            to nginx (a request with X-Original-URI), which gets no body"),
        (status = 401, description = "No key, or an invalid, revoked, inactive or expired one (body as for 400)"),
        (status = 403, description = "Key not allowed for this route, origin, address or resource; or the \
            gateway's key lacks keys:verify (body as for 400)"),
        (status = 429, description = "A rate limit of the key or its identity is used up (rate_limited; \
            Retry-After and RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset of that limit; allowed answers carry \
            the tightest limit's RateLimit-* headers too), the key has no credits left (usage_exceeded; Retry-After: \
            the next refill, when it has one), or the client's address failed authentication too often this minute \
            (too_many_failures; Retry-After); body as for 400"),
    ))]
pub async fn authorize(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    answer(&state, peer, request.into_parts().0).await
}

/// The forward-auth answer to a request (its head: the body, if any, is
/// never read) from `peer`.
pub(crate) async fn answer(state: &AppState, peer: SocketAddr, request: axum::http::request::Parts) -> Response {
    let axum::http::request::Parts { method, uri, headers, .. } = request;
    // nginx never reads the body of an auth_request answer, and a body left
    // unread costs it the connection (a new one per request, sockets piling
    // up in TIME_WAIT). So every answer to nginx (it sends X-Original-URI)
    // is headers only; other gateways get the JSON of a denial, which
    // Traefik passes on to the client. The code is in X-Keyward-Error.
    let headers_only = headers.contains_key("x-original-uri");
    match decide_forward_auth(state, peer, &method, &uri, &headers).await {
        Ok(identity) => (StatusCode::OK, identity).into_response(),
        Err(e) => {
            let code = HeaderValue::from_static(e.code.as_str());
            let mut e = e;
            // nginx's auth_request passes on only 401 and 403 (anything else
            // becomes a 500): to nginx, a 429 is a 403 that keeps its code
            // and Retry-After for the recipe to map back.
            if headers_only && e.status == StatusCode::TOO_MANY_REQUESTS {
                e.status = StatusCode::FORBIDDEN;
            }
            let mut response = e.into_response();
            response.headers_mut().insert(ERROR_HEADER, code);
            if headers_only {
                *response.body_mut() = axum::body::Body::empty();
                response.headers_mut().remove(header::CONTENT_TYPE);
                response.headers_mut().remove(header::CONTENT_LENGTH);
            }
            response
        }
    }
}

/// The header naming a denial's code (`invalid_api_key`, …).
pub const ERROR_HEADER: &str = "x-keyward-error";

/// The identity headers of an allowed request, or why it is refused.
async fn decide_forward_auth(
    state: &AppState,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<HeaderMap, ApiError> {
    let gateway = if state.trusted_listener {
        None
    } else {
        let verifier_key = header_str(headers, VERIFIER_KEY_HEADER).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::VerifierKeyRequired,
                "Forward-auth needs the gateway's key in X-Keyward-Verifier-Key (or use the forward-auth listener)",
            )
        })?;
        Some(Principal::authenticate(&state.verifier, verifier_key, Some(peer.ip())).await?)
    };
    let (original_method, original_uri) = original_request(method, uri, headers)?;
    let (path, query) = match original_uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (original_uri.as_str(), None),
    };
    let Some(token) = presented_key(headers, query, &state.forward_auth) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, Code::AuthenticationRequired, "API key required"));
    };
    let origin = header_str(headers, "origin").or_else(|| header_str(headers, header::REFERER.as_str()));
    let client = client_ip(peer.ip(), headers, &state.forward_auth.trusted_proxies);
    // The client's failures count in its gateway's view only.
    let seen = match &gateway {
        Some(gateway) => Seen::ByWorkspace(gateway.workspace_id()),
        None => Seen::ByGateway,
    };
    let request =
        Request { method: Some(&original_method), path: Some(path), origin, ip: Some(client), ..Request::default() };
    // The trusted listener's gateways verify keys of every workspace.
    let v = state.verifier.verify_client(gateway.as_ref(), seen, Some(client), &token, &request).await?;
    let now = state.verifier.clock().now();
    let now_ms = now.timestamp_millis();
    if !v.decision.is_valid() {
        let refused = refusal(v.decision.code, &v.decision.message);
        let refill = v.key.as_deref().and_then(|k| k.credits()).and_then(|c| c.refill);
        return Err(match (v.decision.code, refill) {
            // Out of credits: try again after the next refill, if there is one.
            (VerifyCode::UsageExceeded, Some(r)) => {
                let wait = (r.next_refill(now) - now).num_seconds().max(1);
                refused.retry_after(wait as u64).with_headers(ratelimit_headers(Some(r.amount), 0, Some(wait)))
            }
            (VerifyCode::UsageExceeded, None) => refused.with_headers(ratelimit_headers(None, 0, None)),
            (VerifyCode::RateLimited, _) => {
                let exceeded = v.ratelimits.iter().map(|(_, s)| s).filter(|s| s.exceeded).max_by_key(|s| s.reset_ms);
                match exceeded {
                    Some(s) => {
                        let wait = seconds_until(s.reset_ms, now_ms);
                        refused.retry_after(wait as u64).with_headers(ratelimit_headers(
                            Some(s.limit),
                            s.remaining,
                            Some(wait),
                        ))
                    }
                    None => refused,
                }
            }
            _ => refused,
        });
    }
    let mut headers = identity_headers(&v);
    // The tightest limit, for the client to pace itself.
    if let Some(s) = v.ratelimits.iter().map(|(_, s)| s).min_by_key(|s| s.remaining) {
        for (name, value) in ratelimit_headers(Some(s.limit), s.remaining, Some(seconds_until(s.reset_ms, now_ms))) {
            headers.insert(name, value);
        }
    }
    Ok(headers)
}

/// Whole seconds from `now_ms` to `at_ms`, at least 1.
fn seconds_until(at_ms: i64, now_ms: i64) -> i64 {
    ((at_ms - now_ms + 999) / 1000).max(1)
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds),
/// as the IETF draft names them.
fn ratelimit_headers(limit: Option<i64>, remaining: i64, reset: Option<i64>) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = vec![(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(remaining.max(0)))];
    if let Some(limit) = limit {
        out.push((HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limit)));
    }
    if let Some(reset) = reset {
        out.push((HeaderName::from_static("ratelimit-reset"), HeaderValue::from(reset)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted = ForwardAuthConfig::default().trusted_proxies;
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.2, 127.0.0.1"));
        assert_eq!(client_ip("127.0.0.1".parse().unwrap(), &h, &trusted), "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip("192.0.2.1".parse().unwrap(), &h, &trusted), "192.0.2.1".parse::<IpAddr>().unwrap());
        let empty = HeaderMap::new();
        assert_eq!(client_ip("::1".parse().unwrap(), &empty, &trusted), "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn original_request_from_each_gateway() {
        let mut nginx = HeaderMap::new();
        nginx.insert("x-original-uri", HeaderValue::from_static("/api/x?y=1"));
        nginx.insert("x-original-method", HeaderValue::from_static("post"));
        let uri: Uri = "/v1/authorize".parse().unwrap();
        assert_eq!(original_request(&Method::GET, &uri, &nginx).unwrap(), ("POST".into(), "/api/x?y=1".into()));
        let envoy: Uri = "/v1/authorize/api/x?y=1".parse().unwrap();
        assert_eq!(
            original_request(&Method::DELETE, &envoy, &HeaderMap::new()).unwrap(),
            ("DELETE".into(), "/api/x?y=1".into())
        );
        assert_eq!(original_request(&Method::GET, &uri, &HeaderMap::new()).unwrap_err().code, Code::MissingOriginalUri);
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-uri", HeaderValue::from_static("http://evil/x"));
        assert_eq!(original_request(&Method::GET, &uri, &bad).unwrap_err().code, Code::InvalidOriginalUri);
    }
}
