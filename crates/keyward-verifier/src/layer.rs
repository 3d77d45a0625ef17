//! [`KeywardLayer`]: a tower layer that lets through only requests whose
//! key the embedded [`Verifier`] accepts, answering the others as
//! keyward's forward-auth does (401, 403 or 429 with its JSON error; 503
//! with `Retry-After` when a fail-closed verifier's copy is stale). The key
//! comes from `Authorization: Bearer` or `X-API-Key`; the accepted
//! request carries the [`Verdict`] in its extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use keyward_core::verify::VerifyCode;

use crate::embedded::{Check, Path, Permission, Verdict, Verifier};

/// Protects a service with an embedded [`Verifier`].
#[derive(Clone)]
pub struct KeywardLayer {
    verifier: Verifier,
    permission: Option<Arc<Permission>>,
}

impl KeywardLayer {
    pub fn new(verifier: Verifier) -> Self {
        KeywardLayer { verifier, permission: None }
    }

    /// Every request also needs `permission` (`resource:action`, or an
    /// expression of them); the workspace's route scopes apply regardless.
    pub fn require(mut self, permission: &str) -> Result<Self, keyward_core::Error> {
        self.permission = Some(Arc::new(Permission::parse(permission)?));
        Ok(self)
    }
}

impl<S> tower::Layer<S> for KeywardLayer {
    type Service = Keyward<S>;
    fn layer(&self, inner: S) -> Keyward<S> {
        Keyward { inner, verifier: self.verifier.clone(), permission: self.permission.clone() }
    }
}

/// The service [`KeywardLayer`] makes.
#[derive(Clone)]
pub struct Keyward<S> {
    inner: S,
    verifier: Verifier,
    permission: Option<Arc<Permission>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for Keyward<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: From<String> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The service polled ready is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = presented_key(&request) else {
            return Box::pin(std::future::ready(Ok(refusal(
                StatusCode::UNAUTHORIZED,
                "authentication_required",
                "API key required",
                None,
            ))));
        };
        let check = |key| Check {
            key,
            permission: self.permission.as_deref(),
            method: Some(request.method().as_str()),
            path: Some(request.uri().path()),
            origin: request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            ..Check::default()
        };
        match self.verifier.verify_local(&check(&key)) {
            Some(verdict) => match answer(verdict) {
                Ok(verdict) => {
                    request.extensions_mut().insert(verdict);
                    Box::pin(inner.call(request))
                }
                Err(refused) => Box::pin(std::future::ready(Ok(refused))),
            },
            None => {
                let (verifier, permission) = (self.verifier.clone(), self.permission.clone());
                Box::pin(async move {
                    let check = Check {
                        key: &key,
                        permission: permission.as_deref(),
                        method: Some(request.method().as_str()),
                        path: Some(request.uri().path()),
                        origin: request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()),
                        ..Check::default()
                    };
                    match answer(verifier.verify(&check).await) {
                        Ok(verdict) => {
                            request.extensions_mut().insert(verdict);
                            inner.call(request).await
                        }
                        Err(refused) => Ok(refused),
                    }
                })
            }
        }
    }
}

fn presented_key<B>(request: &Request<B>) -> Option<String> {
    let headers = request.headers();
    if let Some((scheme, token)) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()?.split_once(' '))
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_owned());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|k| k.trim().to_owned())
}

/// The verdict to pass on, or the answer refusing the request.
fn answer<RB: From<String>>(verdict: Verdict) -> Result<Verdict, Response<RB>> {
    if verdict.decision.is_valid() {
        return Ok(verdict);
    }
    let message = &verdict.decision.message;
    Err(match (verdict.path, verdict.decision.code) {
        (Path::Stale, _) => refusal(StatusCode::SERVICE_UNAVAILABLE, "verifier_stale", message, Some(1)),
        (_, VerifyCode::Expired) => refusal(StatusCode::UNAUTHORIZED, "api_key_expired", message, None),
        (_, VerifyCode::ForbiddenResource) => refusal(StatusCode::FORBIDDEN, "forbidden_resource", message, None),
        (_, VerifyCode::ForbiddenOrigin) => refusal(StatusCode::FORBIDDEN, "forbidden_origin", message, None),
        (_, VerifyCode::ForbiddenIp) => refusal(StatusCode::FORBIDDEN, "forbidden_ip", message, None),
        (_, VerifyCode::InsufficientPermissions) => {
            refusal(StatusCode::FORBIDDEN, "insufficient_permissions", message, None)
        }
        (_, VerifyCode::UsageExceeded) => refusal(StatusCode::TOO_MANY_REQUESTS, "usage_exceeded", message, None),
        (_, VerifyCode::RateLimited) => refusal(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message, Some(1)),
        _ => refusal(StatusCode::UNAUTHORIZED, "invalid_api_key", "Invalid API key", None),
    })
}

fn refusal<RB: From<String>>(status: StatusCode, code: &str, message: &str, retry_after: Option<u32>) -> Response<RB> {
    let body = serde_json::json!({"error": message, "code": code}).to_string();
    let mut response = Response::new(RB::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(s) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}
