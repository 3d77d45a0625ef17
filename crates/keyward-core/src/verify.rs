//! The verification decision: is this presented key good for this request?
//!
//! A pure function of the stored key, the presented token, the request and
//! the time. Finding the key (cache, storage) is the caller's job; what is
//! decided here is the same on every node and in every embedding.

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::hash::SecretHasher;
use crate::key::{ApiKey, KeyState};
use crate::origin::origin_of_url;
use crate::route::{self, RouteScope};
use crate::token::ParsedToken;

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

/// The key's scopes together with what its roles grant for a request on
/// an object with `tags`: roles without tags always, tagged roles when one
/// of their tags is the object's. Roles are cumulative; the key's flags
/// still take precedence (they are applied by [`Grants`]).
pub fn scopes_with_roles(
    key: &ApiKey,
    roles: &[crate::member::Role],
    tags: Option<&[String]>,
) -> Vec<crate::scope::Scope> {
    let mut scopes = key.scopes.clone();
    let applies = |role: &crate::member::Role| {
        role.tags.is_empty() || tags.is_some_and(|t| t.iter().any(|tag| role.tags.contains(tag)))
    };
    let held: Vec<String> = key
        .roles
        .iter()
        .filter(|name| {
            // Built-in roles grant account permissions, never public ones:
            // nothing to a publishable key.
            (crate::member::builtin_role(name).is_some() && key.key_type != crate::key::KeyType::Publishable)
                || roles.iter().any(|r| &r.name == *name && applies(r))
        })
        .cloned()
        .collect();
    for scope in crate::member::role_scopes(&held, roles) {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes
}

/// What `key` (with the workspace's `roles`) may do to objects of
/// `object_type`: view and edit, and on which tags.
pub fn access(key: &ApiKey, roles: &[crate::member::Role], object_type: &str) -> Access {
    use crate::scope::{Grants, Permission};
    let view = Permission::new(object_type, "view");
    let edit = Permission::new(object_type, "edit");
    let base = scopes_with_roles(key, roles, Some(&[]));
    let base = Grants { scopes: &base, flags: key.flags };
    let (mut view_tags, mut edit_tags) = (Vec::new(), Vec::new());
    for role in roles.iter().filter(|r| !r.tags.is_empty() && key.roles.contains(&r.name)) {
        let scopes = crate::member::role_scopes(std::slice::from_ref(&role.name), std::slice::from_ref(role));
        let grants = Grants { scopes: &scopes, flags: key.flags };
        for (permission, into) in [(&view, &mut view_tags), (&edit, &mut edit_tags)] {
            if grants.allows(permission) {
                for tag in &role.tags {
                    if !into.contains(tag) {
                        into.push(tag.clone());
                    }
                }
            }
        }
    }
    let all_view = base.allows(&view);
    let all_edit = base.allows(&edit);
    Access {
        view: all_view || !view_tags.is_empty(),
        edit: all_edit || !edit_tags.is_empty(),
        tags: (!all_view).then_some(view_tags),
        edit_tags: (!all_edit).then_some(edit_tags),
    }
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
    fn fixed(code: VerifyCode, authenticated: bool) -> Self {
        Decision { code, message: Cow::Borrowed(code.message()), authenticated }
    }
}

/// Decides for a token whose key was found. `parsed` is the token's native
/// parse, if it has one (imported foreign keys have none). `now` is called
/// only for keys that expire or are in a grace period: most keys never
/// need the wall clock, and reading it is a large part of a cached
/// verification's cost.
pub fn decide(
    key: &ApiKey,
    token: &str,
    parsed: Option<&ParsedToken<'_>>,
    hasher: &SecretHasher,
    request: &Request<'_>,
    now: impl Fn() -> DateTime<Utc>,
) -> Decision {
    if match_secret(key, token, parsed, hasher, &now) == SecretMatch::Neither {
        return Decision::fixed(VerifyCode::InvalidSecret, false);
    }
    decide_authenticated(key, None, request, now)
}

/// Which of a key's secrets a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMatch {
    Current,
    /// The secret before a roll, within its grace period.
    Grace,
    Neither,
}

/// Compares `token` with `key`'s secrets in constant time; `now` is read
/// only for a key in a grace period whose current secret did not match.
#[inline]
pub fn match_secret(
    key: &ApiKey,
    token: &str,
    parsed: Option<&ParsedToken<'_>>,
    hasher: &SecretHasher,
    now: impl Fn() -> DateTime<Utc>,
) -> SecretMatch {
    if hasher.matches(&key.secret, token, parsed) {
        SecretMatch::Current
    } else if key.grace.as_ref().is_some_and(|g| now() < g.until && hasher.matches(&g.hash, token, parsed)) {
        SecretMatch::Grace
    } else {
        SecretMatch::Neither
    }
}

/// Decides for a key whose holder has proven itself: by its secret, or by a
/// token keyward signed (an access token, whose `scope` may narrow what the
/// key grants: both must allow the request) or one signed with the key's
/// secret (a signed request).
pub fn decide_authenticated(
    key: &ApiKey,
    token_scopes: Option<&[crate::scope::Scope]>,
    request: &Request<'_>,
    now: impl Fn() -> DateTime<Utc>,
) -> Decision {
    match key.state {
        KeyState::Revoked => return Decision::fixed(VerifyCode::Revoked, false),
        KeyState::Inactive => return Decision::fixed(VerifyCode::Inactive, false),
        KeyState::Locked => return Decision::fixed(VerifyCode::Locked, false),
        KeyState::Active => {}
    }
    if key.expires_at.is_some() && key.is_expired(now()) {
        return Decision::fixed(VerifyCode::Expired, false);
    }
    if !key.allowed_ips.is_empty() && !request.ip.is_some_and(|ip| key.allowed_ips.iter().any(|n| n.contains(&ip))) {
        return Decision::fixed(VerifyCode::ForbiddenIp, true);
    }
    if !key.allowed_origins.is_empty() {
        let origin = request.origin.map(|o| origin_of_url(o).unwrap_or(o));
        if !origin.is_some_and(|o| key.allowed_origins.iter().any(|p| p.allows(o))) {
            return Decision::fixed(VerifyCode::ForbiddenOrigin, true);
        }
    }
    if let Some(resource) = request.resource
        && !key.resources.is_empty()
        && !key.resources.iter().any(|r| r == resource)
    {
        return Decision {
            code: VerifyCode::ForbiddenResource,
            message: Cow::Owned(format!("This API key cannot access {resource}")),
            authenticated: true,
        };
    }
    let with_roles;
    let grants = if key.roles.is_empty() {
        key.grants()
    } else {
        with_roles = scopes_with_roles(key, request.roles, request.tags);
        crate::scope::Grants { scopes: &with_roles, flags: key.flags }
    };
    let decision = permitted(grants, request);
    match token_scopes {
        Some(scopes) if decision.is_valid() => {
            permitted(crate::scope::Grants { scopes, flags: crate::scope::Flags::default() }, request)
        }
        _ => decision,
    }
}

/// Whether `grants` allow the request's permission, method and route.
fn permitted(grants: crate::scope::Grants<'_>, request: &Request<'_>) -> Decision {
    let method_ok = request.method.is_none_or(|m| grants.allows_method(m));
    let missing = request.permission.and_then(|p| p.missing(&grants));
    if !method_ok || missing.is_some() {
        return Decision {
            code: VerifyCode::InsufficientPermissions,
            message: Cow::Owned(grants.refusal(missing)),
            authenticated: true,
        };
    }
    if let Some(path) = request.path {
        let method = request.method.unwrap_or("GET");
        let refused = |message: String| Decision {
            code: VerifyCode::InsufficientPermissions,
            message: Cow::Owned(message),
            authenticated: true,
        };
        let Some(segments) = route::normalize_path(path) else {
            return refused(format!("Insufficient permissions. {path} is not a valid path."));
        };
        match route::find(request.routes, method, &segments) {
            Some(r) if !grants.allows(&r.permission) => return refused(grants.refusal(Some(&r.permission))),
            Some(_) => {}
            None if !grants.allows_unmapped(method) => {
                return refused(format!(
                    "Insufficient permissions. No permission of this key covers {} {path}.",
                    method.to_ascii_uppercase()
                ));
            }
            None => {}
        }
    }
    Decision::fixed(VerifyCode::Valid, true)
}

/// The decision for a token that does not parse or whose key does not exist.
/// The key is good for the request but has no credits left for it.
pub fn usage_exceeded() -> Decision {
    Decision::fixed(VerifyCode::UsageExceeded, true)
}

pub fn rate_limited() -> Decision {
    Decision::fixed(VerifyCode::RateLimited, true)
}

pub fn without_key(code: VerifyCode) -> Decision {
    debug_assert!(matches!(code, VerifyCode::Malformed | VerifyCode::NotFound));
    Decision::fixed(code, false)
}

/// A refused JWT: one of the `TOKEN_*` codes, with what was wrong.
pub fn token_refused(code: VerifyCode, why: &'static str) -> Decision {
    Decision { code, message: Cow::Borrowed(why), authenticated: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyDraft;
    use crate::token::{Environment, generate, parse};
    use crate::workspace::Workspace;
    use chrono::Duration;

    struct Fixture {
        hasher: SecretHasher,
        key: ApiKey,
        token: String,
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn fixture(scopes: &[&str], resources: &[&str]) -> Fixture {
        let hasher = SecretHasher::new(&[3u8; 32]).unwrap();
        let token = generate("kw", Environment::Live);
        let parsed = parse(token.expose()).unwrap();
        let draft = KeyDraft {
            name: Some("k".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            expires_in_days: Some(10),
            ..Default::default()
        };
        let key = draft.validate(&Workspace::new("w", now()).unwrap(), now()).unwrap().into_key(
            parsed.key_id(),
            "ws_1",
            "masked".into(),
            hasher.native(&parsed),
            now(),
        );
        Fixture { hasher, key, token: token.expose().to_owned() }
    }

    fn run(f: &Fixture, req: Request<'_>, at: DateTime<Utc>) -> Decision {
        let parsed = parse(&f.token).unwrap();
        decide(&f.key, &f.token, Some(&parsed), &f.hasher, &req, || at)
    }

    #[test]
    fn states_and_expiry() {
        let mut f = fixture(&["read"], &[]);
        assert_eq!(run(&f, Request::default(), now()).code, VerifyCode::Valid);
        assert_eq!(run(&f, Request::default(), now() + Duration::days(10)).code, VerifyCode::Expired);
        f.key.deactivate(now()).unwrap();
        assert_eq!(run(&f, Request::default(), now()).code, VerifyCode::Inactive);
        f.key.revoke(now());
        assert_eq!(run(&f, Request::default(), now()).code, VerifyCode::Revoked);
    }

    #[test]
    fn wrong_secret() {
        let f = fixture(&["read"], &[]);
        let other = generate("kw", Environment::Live);
        let p = parse(other.expose()).unwrap();
        let d = decide(&f.key, other.expose(), Some(&p), &f.hasher, &Request::default(), now);
        assert_eq!(d.code, VerifyCode::InvalidSecret);
        assert!(!d.authenticated);
    }

    #[test]
    fn resources_permissions_methods() {
        let f = fixture(&["read"], &["site_abc123"]);
        let req = Request { resource: Some("site_xyz789"), ..Default::default() };
        let d = run(&f, req, now());
        assert_eq!(d.code, VerifyCode::ForbiddenResource);
        assert_eq!(d.message, "This API key cannot access site_xyz789");
        let ok = Request { resource: Some("site_abc123"), method: Some("GET"), ..Default::default() };
        assert!(run(&f, ok, now()).is_valid());
        let post = Request { method: Some("POST"), ..Default::default() };
        let d = run(&f, post, now());
        assert_eq!(d.code, VerifyCode::InsufficientPermissions);
        assert_eq!(d.message, "Insufficient permissions. This key has read-only access.");
        let perm = crate::scope::Permission::new("campaigns", "read").into();
        assert!(run(&f, Request { permission: Some(&perm), ..Default::default() }, now()).is_valid());
    }

    #[test]
    fn route_scopes_origins_and_ips() {
        let mut f = fixture(&["campaigns:read", "tags:write"], &[]);
        let routes = vec![
            RouteScope::parse("GET", "/api/v2/campaigns/**", "campaigns:read").unwrap(),
            RouteScope::parse("*", "/api/v2/tags/**", "tags:write").unwrap(),
            RouteScope::parse("DELETE", "/api/v2/campaigns/*", "campaigns:delete").unwrap(),
        ];
        let req =
            |method, path| Request { method: Some(method), path: Some(path), routes: &routes, ..Default::default() };
        assert!(run(&f, req("GET", "/api/v2/campaigns/7"), now()).is_valid());
        assert!(run(&f, req("POST", "/api/v2/tags"), now()).is_valid());
        let d = run(&f, req("DELETE", "/api/v2/campaigns/7"), now());
        assert_eq!(d.message, "Insufficient permissions. This key lacks the campaigns:delete permission.");
        let d = run(&f, req("GET", "/api/v2/contacts"), now());
        assert_eq!(d.code, VerifyCode::InsufficientPermissions, "unmapped routes need a tier");
        assert_eq!(
            run(&f, req("GET", "/api/v2/tags/../../v2/contacts"), now()).code,
            VerifyCode::InsufficientPermissions
        );

        f.key.allowed_origins = vec![crate::origin::OriginPattern::parse("*.example.com").unwrap()];
        f.key.allowed_ips = vec![crate::origin::parse_ip_range("10.0.0.0/8").unwrap()];
        let ip = "10.1.2.3".parse().unwrap();
        let ok = Request { origin: Some("https://shop.example.com"), ip: Some(ip), ..Default::default() };
        assert!(run(&f, ok, now()).is_valid());
        let referer = Request { origin: Some("https://shop.example.com/cart?x=1"), ip: Some(ip), ..Default::default() };
        assert!(run(&f, referer, now()).is_valid());
        let bad_origin = Request { origin: Some("https://evil.com"), ip: Some(ip), ..Default::default() };
        assert_eq!(run(&f, bad_origin, now()).code, VerifyCode::ForbiddenOrigin);
        let no_ip = Request { origin: Some("https://shop.example.com"), ..Default::default() };
        assert_eq!(run(&f, no_ip, now()).code, VerifyCode::ForbiddenIp);
        let bad_ip = Request {
            origin: Some("https://shop.example.com"),
            ip: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(run(&f, bad_ip, now()).code, VerifyCode::ForbiddenIp);
    }

    #[test]
    fn unmapped_routes_follow_tiers() {
        let f = fixture(&["read"], &[]);
        let req = |method| Request { method: Some(method), path: Some("/anything"), ..Default::default() };
        assert!(run(&f, req("GET"), now()).is_valid());
        assert_eq!(run(&f, req("POST"), now()).code, VerifyCode::InsufficientPermissions);
        let full = fixture(&["*"], &[]);
        assert!(run(&full, req("DELETE"), now()).is_valid());
    }

    #[test]
    fn grace_period_after_roll() {
        let mut f = fixture(&["read"], &[]);
        let old = f.token.clone();
        let parsed = parse(&old).unwrap();
        let fresh = crate::token::generate_with_id("kw", Environment::Live, parsed.id);
        let fresh_parsed = parse(fresh.expose()).unwrap();
        f.key.roll(f.hasher.native(&fresh_parsed), 60, now()).unwrap();
        assert!(run(&f, Request::default(), now() + Duration::seconds(59)).is_valid());
        assert_eq!(run(&f, Request::default(), now() + Duration::seconds(60)).code, VerifyCode::InvalidSecret);
        f.token = fresh.expose().to_owned();
        assert!(run(&f, Request::default(), now() + Duration::seconds(61)).is_valid());
    }
}
