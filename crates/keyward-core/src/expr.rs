//! Permission expressions: what a request needs, as one permission or as
//! permissions joined by `AND` and `OR` with parentheses
//! (`sources:view AND (channels:edit OR channels:publish)`). `AND` binds
//! tighter than `OR`; the keywords are case-insensitive.

use crate::Code;
use crate::Error;
use crate::scope::{Grants, Permission};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 1024;
/// Most permissions in one expression.
pub const MAX_TERMS: usize = 32;
/// Deepest nesting of parentheses.
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionExpr {
    One(Permission),
    All(Vec<PermissionExpr>),
    Any(Vec<PermissionExpr>),
}

fn invalid() -> Error {
    Error::invalid(
        Code::InvalidPermission,
        "permission must look like resource:action, or be such permissions joined by AND / OR \
         (with parentheses; at most 32 permissions, 8 levels deep)",
    )
}

impl PermissionExpr {
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.len() > MAX_LEN {
            return Err(invalid());
        }
        // One permission alone (the common case): no tokenising.
        if !text.bytes().any(|b| b.is_ascii_whitespace() || b == b'(' || b == b')') {
            return Permission::parse_required(text).map(PermissionExpr::One).ok_or_else(invalid);
        }
        let spaced = text.replace('(', " ( ").replace(')', " ) ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let mut parser = Parser { tokens: &tokens, at: 0, terms: 0 };
        let expr = parser.any(0)?;
        if parser.at != tokens.len() {
            return Err(invalid());
        }
        Ok(expr)
    }

    /// A permission the key lacks for this expression to hold (the first
    /// one that would matter), or `None` when it holds.
    pub fn missing<'a>(&'a self, grants: &Grants<'_>) -> Option<&'a Permission> {
        match self {
            PermissionExpr::One(p) => (!grants.allows(p)).then_some(p),
            PermissionExpr::All(all) => all.iter().find_map(|e| e.missing(grants)),
            PermissionExpr::Any(any) => {
                let mut first = None;
                for e in any {
                    match e.missing(grants) {
                        None => return None,
                        Some(p) => first = first.or(Some(p)),
                    }
                }
                first
            }
        }
    }
}

impl From<Permission> for PermissionExpr {
    fn from(p: Permission) -> Self {
        PermissionExpr::One(p)
    }
}

struct Parser<'t> {
    tokens: &'t [&'t str],
    at: usize,
    terms: usize,
}

impl Parser<'_> {
    fn peek_keyword(&self, keyword: &str) -> bool {
        self.tokens.get(self.at).is_some_and(|t| t.eq_ignore_ascii_case(keyword))
    }

    /// `all (OR all)*`
    fn any(&mut self, depth: usize) -> Result<PermissionExpr, Error> {
        self.joined(depth, "OR", Self::all, PermissionExpr::Any)
    }

    /// `factor (AND factor)*`
    fn all(&mut self, depth: usize) -> Result<PermissionExpr, Error> {
        self.joined(depth, "AND", Self::factor, PermissionExpr::All)
    }

    /// `part (KEYWORD part)*`: one part alone, or `join` of them all.
    fn joined(
        &mut self,
        depth: usize,
        keyword: &str,
        part: fn(&mut Self, usize) -> Result<PermissionExpr, Error>,
        join: fn(Vec<PermissionExpr>) -> PermissionExpr,
    ) -> Result<PermissionExpr, Error> {
        let mut parts = vec![part(self, depth)?];
        while self.peek_keyword(keyword) {
            self.at += 1;
            parts.push(part(self, depth)?);
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { join(parts) })
    }

    /// `( any )` or a permission.
    fn factor(&mut self, depth: usize) -> Result<PermissionExpr, Error> {
        let token = *self.tokens.get(self.at).ok_or_else(invalid)?;
        self.at += 1;
        if token == "(" {
            if depth >= MAX_DEPTH {
                return Err(invalid());
            }
            let inner = self.any(depth + 1)?;
            if self.tokens.get(self.at) != Some(&")") {
                return Err(invalid());
            }
            self.at += 1;
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(invalid());
        }
        Permission::parse_required(token).map(PermissionExpr::One).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{Flags, Scope};

    fn grants_of(scopes: &[Scope]) -> Grants<'_> {
        Grants { scopes, flags: Flags::default() }
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let scopes = Scope::parse_list(&["sources:view", "channels:publish"]).unwrap();
        let g = grants_of(&scopes);
        let holds = |e: &str| PermissionExpr::parse(e).unwrap().missing(&g).is_none();
        assert!(holds("sources:view AND (channels:edit OR channels:publish)"));
        assert!(holds("sources:view and (channels:edit or channels:publish)"));
        assert!(!holds("sources:view AND channels:edit"));
        assert!(holds("channels:edit OR sources:view AND channels:publish"));
        assert!(!holds("(channels:edit OR sources:view) AND tags:edit"));
        let e = PermissionExpr::parse("sources:view AND tags:edit AND channels:edit").unwrap();
        assert_eq!(e.missing(&g).map(ToString::to_string).as_deref(), Some("tags:edit"), "the first that matters");
        assert_eq!(
            PermissionExpr::parse("a:b").unwrap(),
            PermissionExpr::One(Permission::parse_required("a:b").unwrap())
        );
    }

    #[test]
    fn malformed_expressions_are_refused_without_echo() {
        let deep = format!("{}a:b{}", "(".repeat(9), ")".repeat(9));
        let many = vec!["a:b"; 33].join(" OR ");
        for bad in ["", "a:b AND", "AND a:b", "(a:b", "a:b)", "a:b c:d", "a:b OR OR c:d", "nocolon", "()", &deep, &many]
        {
            let e = PermissionExpr::parse(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidPermission, "{bad}");
        }
        assert!(PermissionExpr::parse(&format!("{}a:b{}", "(".repeat(8), ")".repeat(8))).is_ok());
    }
}
