//! The verification decision: is this presented key good for this request?
//!
//! A pure function of the key's record, the presented token, the request
//! and the time. Finding the record (cache, storage, a replica) is the
//! caller's job; what is decided here is the same on every node and in
//! every embedding.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{KeyGrant, KeyState};
use keyward_core::origin::origin_of_url;
use keyward_core::route;
use keyward_core::token::ParsedToken;
use keyward_core::verify::{Access, Decision, Request, VerifyCode};

use crate::record::KeyRecord;

/// The key's scopes together with what its roles grant for a request on
/// an object with `tags`: roles without tags always, tagged roles when one
/// of their tags is the object's. Roles are cumulative; the key's flags
/// still take precedence (they are applied by [`Grants`]).
pub fn scopes_with_roles(
    key: &KeyRecord,
    roles: &[keyward_core::member::Role],
    tags: Option<&[String]>,
) -> Vec<keyward_core::scope::Scope> {
    let mut scopes = key.scopes.to_vec();
    let applies = |role: &keyward_core::member::Role| {
        role.tags.is_empty() || tags.is_some_and(|t| t.iter().any(|tag| role.tags.contains(tag)))
    };
    let held: Vec<String> = key
        .roles()
        .iter()
        .filter(|name| {
            // Built-in roles grant account permissions, never public ones:
            // nothing to a publishable key.
            (keyward_core::member::builtin_role(name).is_some()
                && key.key_type != keyward_core::key::KeyType::Publishable)
                || roles.iter().any(|r| &r.name == *name && applies(r))
        })
        .cloned()
        .collect();
    for scope in keyward_core::member::role_scopes(&held, roles) {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes
}

/// What `key` (with the workspace's `roles`) may do to objects of
/// `object_type`: view and edit, and on which tags.
pub fn access(key: &KeyRecord, roles: &[keyward_core::member::Role], object_type: &str) -> Access {
    use keyward_core::scope::{Grants, Permission};
    let view = Permission::new(object_type, "view");
    let edit = Permission::new(object_type, "edit");
    let base = scopes_with_roles(key, roles, Some(&[]));
    let base = Grants { scopes: &base, flags: key.flags };
    let (mut view_tags, mut edit_tags) = (Vec::new(), Vec::new());
    for role in roles.iter().filter(|r| !r.tags.is_empty() && key.roles().contains(&r.name)) {
        let scopes = keyward_core::member::role_scopes(std::slice::from_ref(&role.name), std::slice::from_ref(role));
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

/// Decides for a token whose key was found. `parsed` is the token's native
/// parse, if it has one (imported foreign keys have none). `now` is called
/// only for keys that expire or are in a grace period: most keys never
/// need the wall clock, and reading it is a large part of a cached
/// verification's cost.
pub fn decide(
    key: &KeyRecord,
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
    key: &KeyRecord,
    token: &str,
    parsed: Option<&ParsedToken<'_>>,
    hasher: &SecretHasher,
    now: impl Fn() -> DateTime<Utc>,
) -> SecretMatch {
    if hasher.matches(&key.secret, token, parsed) {
        SecretMatch::Current
    } else if key.grace().is_some_and(|g| now() < g.until && hasher.matches(&g.hash, token, parsed)) {
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
    key: &KeyRecord,
    token_scopes: Option<&[keyward_core::scope::Scope]>,
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
    if !key.allowed_ips().is_empty() && !request.ip.is_some_and(|ip| key.allowed_ips().iter().any(|n| n.contains(&ip)))
    {
        return Decision::fixed(VerifyCode::ForbiddenIp, true);
    }
    if !key.allowed_origins().is_empty() {
        let origin = request.origin.map(|o| origin_of_url(o).unwrap_or(o));
        if !origin.is_some_and(|o| key.allowed_origins().iter().any(|p| p.allows(o))) {
            return Decision::fixed(VerifyCode::ForbiddenOrigin, true);
        }
    }
    if let Some(resource) = request.resource
        && !key.resources().is_empty()
        && !key.resources().iter().any(|r| r == resource)
    {
        return Decision {
            code: VerifyCode::ForbiddenResource,
            message: Cow::Owned(format!("This API key cannot access {resource}")),
            authenticated: true,
        };
    }
    let with_roles;
    let grants = if key.roles().is_empty() {
        key.grants()
    } else {
        with_roles = scopes_with_roles(key, request.roles, request.tags);
        keyward_core::scope::Grants { scopes: &with_roles, flags: key.flags }
    };
    let decision = permitted(grants, request);
    match token_scopes {
        Some(scopes) if decision.is_valid() => {
            permitted(keyward_core::scope::Grants { scopes, flags: keyward_core::scope::Flags::default() }, request)
        }
        _ => decision,
    }
}

/// Whether `grants` allow the request's permission, method and route.
fn permitted(grants: keyward_core::scope::Grants<'_>, request: &Request<'_>) -> Decision {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use keyward_core::key::ApiKey;
    use keyward_core::key::KeyDraft;
    use keyward_core::route::RouteScope;
    use keyward_core::token::{Environment, generate, parse};
    use keyward_core::workspace::Workspace;

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
        decide(&KeyRecord::of(&f.key), &f.token, Some(&parsed), &f.hasher, &req, || at)
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
        let d = decide(&KeyRecord::of(&f.key), other.expose(), Some(&p), &f.hasher, &Request::default(), now);
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
        let perm = keyward_core::scope::Permission::new("campaigns", "read").into();
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

        f.key.allowed_origins = vec![keyward_core::origin::OriginPattern::parse("*.example.com").unwrap()];
        f.key.allowed_ips = vec![keyward_core::origin::parse_ip_range("10.0.0.0/8").unwrap()];
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
        let fresh = keyward_core::token::generate_with_id("kw", Environment::Live, parsed.id);
        let fresh_parsed = parse(fresh.expose()).unwrap();
        f.key.roll(f.hasher.native(&fresh_parsed), None, 60, now()).unwrap();
        assert!(run(&f, Request::default(), now() + Duration::seconds(59)).is_valid());
        assert_eq!(run(&f, Request::default(), now() + Duration::seconds(60)).code, VerifyCode::InvalidSecret);
        f.token = fresh.expose().to_owned();
        assert!(run(&f, Request::default(), now() + Duration::seconds(61)).is_valid());
    }
}
