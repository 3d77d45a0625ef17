//! The domain error: a kind (which the server maps to an HTTP status), a
//! stable machine `code` and a human message that never contains a secret.

use crate::Code;
use std::fmt;

/// What sort of failure this is; decides the HTTP status at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400).
    Invalid,
    /// No acceptable credential was presented (401).
    Unauthenticated,
    /// The caller is known but not allowed, or a plan limit is hit (403).
    Forbidden,
    /// The object does not exist in the caller's workspace (404).
    NotFound,
    /// The object's state forbids the operation (409).
    Conflict,
    /// `If-Match` named another version (412).
    PreconditionFailed,
    /// Too many attempts; try again after this many seconds (429).
    TooManyRequests { retry_after_secs: u64 },
    /// Something on our side failed; the message is opaque (500).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, code: Code, message: impl Into<String>) -> Self {
        Self { kind, code, message: message.into() }
    }
    pub fn invalid(code: Code, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn conflict(code: Code, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }
    pub fn forbidden(code: Code, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, Code::InternalError, message)
    }
    pub fn key_not_found() -> Self {
        Self::new(ErrorKind::NotFound, Code::KeyNotFound, "API key not found")
    }
    pub fn key_limit_reached() -> Self {
        Self::forbidden(Code::KeyLimitReached, "API key limit reached. Upgrade to create more keys.")
    }
    pub fn invalid_api_key() -> Self {
        Self::new(ErrorKind::Unauthenticated, Code::InvalidApiKey, "Invalid API key")
    }
    pub fn expired_api_key() -> Self {
        Self::new(ErrorKind::Unauthenticated, Code::ApiKeyExpired, "API key has expired")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
