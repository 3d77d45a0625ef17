//! Envoy's external authorization over gRPC (`--grpc-listen`):
//! `envoy.service.auth.v3.Authorization/Check`, deciding exactly as
//! `/v1/authorize` does on the trusted forward-auth listener (the request
//! becomes the Envoy-style forward-auth request it describes, and its
//! answer becomes `OkHttpResponse` headers or a `DeniedHttpResponse`).
//! Like the forward-auth listener, its callers are trusted gateways: keys
//! of every workspace, no verifier key.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::google::rpc;

use crate::api::forward_auth;
use crate::app::AppState;

/// Headers through which a plain HTTP gateway names the original request:
/// over gRPC, Envoy says it in the request's attributes, and a client
/// sending these would only try to pass for another request.
const GATEWAY_HEADERS: &[&str] = &["x-original-uri", "x-original-method", "x-forwarded-uri", "x-forwarded-method"];

pub struct ExtAuthz {
    state: AppState,
}

impl ExtAuthz {
    /// The service, answering as the trusted forward-auth listener.
    pub fn service(state: &AppState) -> AuthorizationServer<ExtAuthz> {
        AuthorizationServer::new(ExtAuthz { state: state.trusted() })
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request.remote_addr();
        let check = request.into_inner();
        let Some(http) = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref())
        else {
            return Err(tonic::Status::invalid_argument("attributes.request.http is required"));
        };
        // The downstream client, as Envoy saw it; else the caller.
        let client = check
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.address.as_ref())
            .and_then(|a| a.address.as_ref())
            .and_then(|a| match a {
                Address::SocketAddress(s) => s.address.parse().ok().map(|ip| SocketAddr::new(ip, 0)),
                _ => None,
            })
            .or(peer)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut headers = HeaderMap::new();
        let named = http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        let listed = http.header_map.iter().flat_map(|m| m.headers.iter()).map(|h: &EnvoyHeader| {
            let value = if h.raw_value.is_empty() { h.value.as_bytes() } else { &h.raw_value[..] };
            (h.key.as_str(), value)
        });
        for (name, value) in named.chain(listed) {
            // Pseudo-headers (`:path`, …) are in the attributes already.
            if name.starts_with(':') || GATEWAY_HEADERS.contains(&name) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(value)) {
                headers.append(name, value);
            }
        }
        let method = Method::from_bytes(http.method.as_bytes()).unwrap_or(Method::GET);
        // Not a path: refused as forward-auth refuses a bad original URI.
        let refused = || Ok(tonic::Response::new(denied(StatusCode::BAD_REQUEST, bad_path_headers(), bad_path())));
        if !http.path.starts_with('/') {
            return refused();
        }
        let mut parts = match axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", forward_auth::PREFIX, http.path))
            .body(())
        {
            Ok(request) => request.into_parts().0,
            Err(_) => return refused(),
        };
        parts.headers = headers;
        let answer = forward_auth::answer(&self.state, client, parts).await;
        let (answer, body) = answer.into_parts();
        if answer.status == StatusCode::OK {
            // Identity for the upstream; the rate-limit headers for the client too.
            let client: HeaderMap = answer
                .headers
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("ratelimit-"))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let ok = OkHttpResponse {
                headers: options(&answer.headers),
                response_headers_to_add: options(&client),
                ..Default::default()
            };
            return Ok(tonic::Response::new(CheckResponse {
                status: Some(rpc::Status { code: tonic::Code::Ok as i32, ..Default::default() }),
                http_response: Some(HttpResponse::OkResponse(ok)),
                ..Default::default()
            }));
        }
        let body = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
        Ok(tonic::Response::new(denied(answer.status, answer.headers, String::from_utf8_lossy(&body).into_owned())))
    }
}

fn bad_path_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(forward_auth::ERROR_HEADER, HeaderValue::from_static("invalid_original_uri"));
    headers
}

fn bad_path() -> String {
    serde_json::json!({"error": "The original request URI is not an absolute path", "code": "invalid_original_uri"})
        .to_string()
}

/// A refusal: the client gets `status`, `headers` and the JSON `body`.
fn denied(status: StatusCode, headers: HeaderMap, body: String) -> CheckResponse {
    let code = match status {
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        _ => tonic::Code::PermissionDenied,
    };
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus { code: i32::from(status.as_u16()) }),
        headers: options(&headers),
        body,
    };
    CheckResponse {
        status: Some(rpc::Status { code: code as i32, message: status.to_string(), ..Default::default() }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

/// Answer headers as Envoy sets them (replacing any of the same name).
fn options(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .filter(|(name, _)| *name != axum::http::header::CONTENT_LENGTH)
        .filter_map(|(name, value)| {
            let header = EnvoyHeader {
                key: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
                ..Default::default()
            };
            Some(HeaderValueOption {
                header: Some(header),
                append_action: envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            })
        })
        .collect()
}
