//! The words of a verification: what is asked ([`Request`]) and what is
//! answered ([`Decision`], [`VerifyCode`]). The decision itself is made by
//! the `keyward-verifier` crate, from a key's compact record.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::route::RouteScope;

/// The answer's machine code, as documented in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyCode {
    Valid,
    Malformed,
    NotFound,
    InvalidSecret,
    Expired,
    Inactive,
    Revoked,
    ForbiddenResource,
    ForbiddenOrigin,
    ForbiddenIp,
    InsufficientPermissions,
    /// The key has no credits left for this request.
    UsageExceeded,
    /// Too many wrong secrets locked the key until a member re-activates it.
    Locked,
    /// A rate limit of the key or its identity is used up for now.
    RateLimited,
    /// A JWT (access token or signed request) whose signature, algorithm,
    /// key id or claims are not acceptable.
    TokenInvalid,
    /// A JWT past its `exp`.
    TokenExpired,
    /// A JWT whose `iat` or `nbf` lies in the future.
    TokenNotYetValid,
    /// A signed request whose `jti` was already used.
    TokenReplayed,
    /// An access token revoked (RFC 7009), or issued to a client whose
    /// consumer key has been regenerated since.
    TokenRevoked,
}

impl VerifyCode {
    pub const ALL: [VerifyCode; 19] = [
        VerifyCode::Valid,
        VerifyCode::Malformed,
        VerifyCode::NotFound,
        VerifyCode::InvalidSecret,
        VerifyCode::Expired,
        VerifyCode::Inactive,
        VerifyCode::Revoked,
        VerifyCode::ForbiddenResource,
        VerifyCode::ForbiddenOrigin,
        VerifyCode::ForbiddenIp,
        VerifyCode::InsufficientPermissions,
        VerifyCode::UsageExceeded,
        VerifyCode::Locked,
        VerifyCode::RateLimited,
        VerifyCode::TokenInvalid,
        VerifyCode::TokenExpired,
        VerifyCode::TokenNotYetValid,
        VerifyCode::TokenReplayed,
        VerifyCode::TokenRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::InvalidSecret => "INVALID_SECRET",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Inactive => "INACTIVE",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::ForbiddenResource => "FORBIDDEN_RESOURCE",
            VerifyCode::ForbiddenOrigin => "FORBIDDEN_ORIGIN",
            VerifyCode::ForbiddenIp => "FORBIDDEN_IP",
            VerifyCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
            VerifyCode::Locked => "LOCKED",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::TokenInvalid => "TOKEN_INVALID",
            VerifyCode::TokenExpired => "TOKEN_EXPIRED",
            VerifyCode::TokenNotYetValid => "TOKEN_NOT_YET_VALID",
            VerifyCode::TokenReplayed => "TOKEN_REPLAYED",
            VerifyCode::TokenRevoked => "TOKEN_REVOKED",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The fixed message of codes that carry no detail.
    pub fn message(self) -> &'static str {
        match self {
            VerifyCode::Valid => "API key is valid",
            VerifyCode::Malformed => "The key is not a well-formed API key",
            VerifyCode::NotFound => "API key not found",
            VerifyCode::InvalidSecret => "Invalid API key",
            VerifyCode::Expired => "API key has expired",
            VerifyCode::Inactive => "API key is inactive",
            VerifyCode::Revoked => "API key has been revoked",
            VerifyCode::ForbiddenResource => "This API key cannot access the resource",
            VerifyCode::ForbiddenOrigin => "This API key cannot be used from this origin",
            VerifyCode::ForbiddenIp => "This API key cannot be used from this IP address",
            VerifyCode::InsufficientPermissions => "Insufficient permissions",
            VerifyCode::UsageExceeded => "API key has no credits left",
            VerifyCode::Locked => "API key is locked after too many failed attempts; re-activate it to unlock",
            VerifyCode::RateLimited => "Rate limit exceeded",
            VerifyCode::TokenInvalid => "The token is not valid",
            VerifyCode::TokenExpired => "The token has expired",
            VerifyCode::TokenNotYetValid => "The token is not valid yet",
            VerifyCode::TokenReplayed => "The token has already been used",
            VerifyCode::TokenRevoked => "The token has been revoked",
        }
    }
}

/// What the request is about. Every part is optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// What the request needs: one permission or an expression of them.
    pub permission: Option<&'a crate::expr::PermissionExpr>,
    /// A resource id such as a site id.
    pub resource: Option<&'a str>,
    /// The HTTP method of the protected request.
    pub method: Option<&'a str>,
    /// The path of the protected request; with `routes`, decides the
    /// permission the request needs.
    pub path: Option<&'a str>,
    /// The workspace's route scopes (filled in by the verifier).
    pub routes: &'a [RouteScope],
    /// The browser origin (`Origin`, or the origin of `Referer`).
    pub origin: Option<&'a str>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// Credits a valid verification spends (keys with credits); `None`: 1.
    pub cost: Option<u32>,
    /// Named rate limits the request spends, besides the auto-applied ones.
    pub ratelimits: &'a [crate::ratelimit::LimitRequest],
    /// The tags of the object the request is about: roles with tags grant
    /// only when one of theirs is among them.
    pub tags: Option<&'a [String]>,
    /// The workspace's own roles (filled in by the verifier for keys that
    /// hold roles).
    pub roles: &'a [crate::member::Role],
}

/// What a key may do to the objects of one type (`objectType` in verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub view: bool,
    pub edit: bool,
    /// The objects the key may view: `None` all of the type, else those
    /// carrying one of these tags.
    pub tags: Option<Vec<String>>,
    /// Likewise for edit.
    pub edit_tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub code: VerifyCode,
    pub message: Cow<'static, str>,
    /// The secret matched a live key: the key was used, even if the request
    /// itself is refused (wrong resource, missing permission).
    pub authenticated: bool,
}

impl Decision {
    pub fn is_valid(&self) -> bool {
        self.code == VerifyCode::Valid
    }
    /// A decision with the code's fixed message.
    pub fn fixed(code: VerifyCode, authenticated: bool) -> Self {
        Decision { code, message: Cow::Borrowed(code.message()), authenticated }
    }
}

/// The key is good for the request but has no credits left for it.
pub fn usage_exceeded() -> Decision {
    Decision::fixed(VerifyCode::UsageExceeded, true)
}

pub fn rate_limited() -> Decision {
    Decision::fixed(VerifyCode::RateLimited, true)
}

/// The decision for a token that does not parse or whose key does not exist.
pub fn without_key(code: VerifyCode) -> Decision {
    debug_assert!(matches!(code, VerifyCode::Malformed | VerifyCode::NotFound));
    Decision::fixed(code, false)
}

/// A refused JWT: one of the `TOKEN_*` codes, with what was wrong.
pub fn token_refused(code: VerifyCode, why: &'static str) -> Decision {
    Decision { code, message: Cow::Borrowed(why), authenticated: false }
}
