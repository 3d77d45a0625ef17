//! Route scopes: a workspace maps permissions to HTTP routes, so that a
//! gateway asking about `POST /api/v2/tags` learns which permission that
//! request needs.
//!
//! A pattern is a path whose segments are literals, `*` (exactly one
//! segment) or `**` (any number of segments, including none). Request paths
//! are normalised first (`.`/`..` resolved, empty segments dropped) so that
//! `/public/../admin` cannot pass as `/public/…`.

use crate::Code;
use crate::Error;
use crate::scope::Permission;

pub const MAX_ROUTES: usize = 500;
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

/// One route: a method (or `*`), a path pattern and the permission it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteScope {
    /// Upper-case method, or `*` for any.
    pub method: String,
    pub path: String,
    pub permission: Permission,
    segments: Vec<Segment>,
}

impl RouteScope {
    pub fn parse(method: &str, path: &str, permission: &str) -> Result<Self, Error> {
        let method = method.trim().to_ascii_uppercase();
        if method != "*" && !METHODS.contains(&method.as_str()) {
            return Err(Error::invalid(
                Code::InvalidRoute,
                "Invalid route method: use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or *",
            ));
        }
        let invalid = |why: &str| Error::invalid(Code::InvalidRoute, format!("Invalid route path: {why}"));
        if !path.starts_with('/') || path.len() > 512 {
            return Err(invalid("it must start with / and be at most 512 characters"));
        }
        let mut segments = Vec::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            segments.push(match seg {
                "*" => Segment::One,
                "**" => Segment::Any,
                "." | ".." => return Err(invalid("it must not contain . or .. segments")),
                s if s.contains('*') => return Err(invalid("* must be a whole segment (* or **)")),
                s if s.chars().any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#') => {
                    return Err(invalid("it must not contain spaces, control characters, ? or #"));
                }
                s => Segment::Literal(s.to_owned()),
            });
        }
        let permission = Permission::parse_required(permission)
            .ok_or_else(|| Error::invalid(Code::InvalidRoute, "Invalid route permission: use resource:action"))?;
        Ok(RouteScope { method, path: path.to_owned(), permission, segments })
    }

    fn matches(&self, method: &str, path: &[&str]) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method)) && match_segments(&self.segments, path)
    }
}

fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => (0..=path.len()).any(|i| match_segments(rest, &path[i..])),
        Some((Segment::One, rest)) => !path.is_empty() && match_segments(rest, &path[1..]),
        Some((Segment::Literal(l), rest)) => path.first().is_some_and(|p| p == l) && match_segments(rest, &path[1..]),
    }
}

/// The segments of a request path with `.` and `..` resolved; `None` when
/// `..` climbs above the root or the path is not absolute.
pub fn normalize_path(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    Some(out)
}

/// The first route that matches, in declaration order.
pub fn find<'r>(routes: &'r [RouteScope], method: &str, path: &[&str]) -> Option<&'r RouteScope> {
    routes.iter().find(|r| r.matches(method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, path: &str) -> RouteScope {
        RouteScope::parse(method, path, "x:read").unwrap()
    }
    fn m(route: &RouteScope, method: &str, path: &str) -> bool {
        route.matches(method, &normalize_path(path).unwrap())
    }

    #[test]
    fn patterns() {
        let exact = r("GET", "/api/v2/tags");
        assert!(m(&exact, "GET", "/api/v2/tags"));
        assert!(m(&exact, "get", "/api/v2/tags/"));
        assert!(!m(&exact, "POST", "/api/v2/tags"));
        assert!(!m(&exact, "GET", "/api/v2/tags/1"));
        let one = r("*", "/api/*/tags");
        assert!(m(&one, "DELETE", "/api/v9/tags"));
        assert!(!m(&one, "GET", "/api/tags"));
        let any = r("GET", "/api/**");
        assert!(m(&any, "GET", "/api"));
        assert!(m(&any, "GET", "/api/a/b/c"));
        let mid = r("GET", "/a/**/z");
        assert!(m(&mid, "GET", "/a/z") && m(&mid, "GET", "/a/b/c/z") && !m(&mid, "GET", "/a/b"));
    }

    #[test]
    fn normalisation_defeats_traversal() {
        assert_eq!(normalize_path("/public/../admin").unwrap(), vec!["admin"]);
        assert_eq!(normalize_path("//a/./b/").unwrap(), vec!["a", "b"]);
        assert!(normalize_path("/..").is_none());
        assert!(normalize_path("relative").is_none());
        let public = r("GET", "/public/**");
        assert!(!m(&public, "GET", "/public/../admin"));
    }

    #[test]
    fn bad_routes() {
        assert!(RouteScope::parse("FETCH", "/a", "x:read").is_err());
        assert!(RouteScope::parse("GET", "a", "x:read").is_err());
        assert!(RouteScope::parse("GET", "/a*", "x:read").is_err());
        assert!(RouteScope::parse("GET", "/a/../b", "x:read").is_err());
        assert!(RouteScope::parse("GET", "/a", "nope").is_err());
    }
}
