//! Scopes and what they grant.
//!
//! A key holds a list of [`Scope`]s and a set of [`Flags`]:
//! - `*` — Full Access: every permission, present and future.
//! - tiers: `read` (read actions on ordinary resources), `write` (read plus
//!   create/update/delete on ordinary resources), `admin` (everything,
//!   account management included).
//! - permissions `resource:action`, either part may be `*`. The action
//!   `read` covers every read action of the resource, `write` every read and
//!   write action, `manage` the same plus `manage`, `admin` every action.
//! - flags, which take precedence: `readOnly` (read actions on everything and
//!   nothing else, whatever the scopes say), `administrator` (everything but
//!   account management), `accountAdministrator` (everything).
//!
//! Account-management resources ([`ACCOUNT_RESOURCES`]) are reachable only
//! through `admin`, `*`, `accountAdministrator`, `readOnly` (reads) or an
//! explicit permission naming them.

use crate::Code;
use std::fmt;

/// The message of the `/api/api-keys` contract, which offers only the tiers.
pub const INVALID_SCOPE_MESSAGE: &str = "Invalid scope. Must be: read, write, or admin";
/// What `/v1` says of an invalid scope: everything a scope may be.
pub const SCOPE_RULE_MESSAGE: &str =
    "Invalid scope: use read, write, admin, * or resource:action (such as campaigns:read or tags:*)";

/// Resources that only admin-level grants reach.
pub const ACCOUNT_RESOURCES: &[&str] =
    &["keys", "members", "roles", "workspace", "settings", "audit", "tokens", "pgp", "webhooks", "integrations", "ftp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Read,
    Write,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Full,
    Tier(Tier),
    Permission(Permission),
}

/// `resource:action`. As a grant either part may be `*`; as a requirement
/// both are concrete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission {
    pub resource: String,
    pub action: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flags {
    pub read_only: bool,
    pub administrator: bool,
    pub account_administrator: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionClass {
    Read,
    Write,
    Other,
}

fn action_class(action: &str) -> ActionClass {
    match action {
        "read" | "get" | "head" | "list" | "view" | "options" => ActionClass::Read,
        "write" | "create" | "update" | "edit" | "delete" | "post" | "put" | "patch" => ActionClass::Write,
        _ => ActionClass::Other,
    }
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.'))
}

pub fn is_account_resource(resource: &str) -> bool {
    ACCOUNT_RESOURCES.contains(&resource)
}

impl Permission {
    /// Parses a grant pattern (`*` allowed in either part).
    pub fn parse_pattern(s: &str) -> Option<Self> {
        let (resource, action) = s.split_once(':')?;
        let ok = |p: &str| p == "*" || is_name(p);
        (ok(resource) && ok(action)).then(|| Permission { resource: resource.to_owned(), action: action.to_owned() })
    }

    /// Parses a concrete requirement such as `campaigns:read`.
    pub fn parse_required(s: &str) -> Option<Self> {
        let (resource, action) = s.split_once(':')?;
        (is_name(resource) && is_name(action))
            .then(|| Permission { resource: resource.to_owned(), action: action.to_owned() })
    }

    pub fn new(resource: &str, action: &str) -> Self {
        Permission { resource: resource.to_owned(), action: action.to_owned() }
    }

    fn grants(&self, required: &Permission) -> bool {
        if self.resource != "*" && self.resource != required.resource {
            return false;
        }
        let class = action_class(&required.action);
        match self.action.as_str() {
            "*" | "admin" => true,
            a if a == required.action => true,
            "read" => class == ActionClass::Read,
            "write" => class != ActionClass::Other,
            "manage" => class != ActionClass::Other || required.action == "manage",
            _ => false,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "*" => Some(Scope::Full),
            "read" => Some(Scope::Tier(Tier::Read)),
            "write" => Some(Scope::Tier(Tier::Write)),
            "admin" => Some(Scope::Tier(Tier::Admin)),
            other => Permission::parse_pattern(other).map(Scope::Permission),
        }
    }

    /// Parses a list, refusing the first invalid entry with the documented
    /// message, and dropping duplicates while keeping order.
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<Scope>, crate::Error> {
        let mut out: Vec<Scope> = Vec::with_capacity(items.len());
        for item in items {
            let scope = Scope::parse(item.as_ref().trim())
                .ok_or_else(|| crate::Error::invalid(Code::InvalidScope, SCOPE_RULE_MESSAGE))?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        if out.len() > 256 {
            return Err(crate::Error::invalid(Code::TooManyScopes, "A key may hold at most 256 scopes"));
        }
        Ok(out)
    }

    fn grants(&self, required: &Permission) -> bool {
        let class = action_class(&required.action);
        let account = is_account_resource(&required.resource);
        match self {
            Scope::Full | Scope::Tier(Tier::Admin) => true,
            Scope::Tier(Tier::Write) => !account && class != ActionClass::Other,
            Scope::Tier(Tier::Read) => !account && class == ActionClass::Read,
            Scope::Permission(p) => p.grants(required),
        }
    }

    /// Whether this scope grants anything beyond reading.
    fn is_read_only(&self) -> bool {
        match self {
            Scope::Full | Scope::Tier(Tier::Admin) | Scope::Tier(Tier::Write) => false,
            Scope::Tier(Tier::Read) => true,
            Scope::Permission(p) => action_class(&p.action) == ActionClass::Read,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Full => f.write_str("*"),
            Scope::Tier(Tier::Read) => f.write_str("read"),
            Scope::Tier(Tier::Write) => f.write_str("write"),
            Scope::Tier(Tier::Admin) => f.write_str("admin"),
            Scope::Permission(p) => p.fmt(f),
        }
    }
}

/// Everything a key is allowed, and the questions asked of it.
#[derive(Debug, Clone, Copy)]
pub struct Grants<'a> {
    pub scopes: &'a [Scope],
    pub flags: Flags,
}

impl Grants<'_> {
    /// True when the key can do nothing but read.
    pub fn is_read_only(&self) -> bool {
        self.flags.read_only
            || (!self.flags.administrator
                && !self.flags.account_administrator
                && self.scopes.iter().all(Scope::is_read_only))
    }

    pub fn allows(&self, required: &Permission) -> bool {
        let class = action_class(&required.action);
        if self.flags.read_only {
            return class == ActionClass::Read;
        }
        if self.flags.account_administrator {
            return true;
        }
        if self.flags.administrator && !is_account_resource(&required.resource) {
            return true;
        }
        self.scopes.iter().any(|s| s.grants(required))
    }

    /// Whether a request that no route scope maps to a permission is
    /// allowed: only keys whose tiers or flags cover whole methods (Full
    /// Access, `admin`, `write`, `read` for reads, administrators).
    pub fn allows_unmapped(&self, method: &str) -> bool {
        if self.flags.read_only {
            return is_read_method(method);
        }
        if self.flags.administrator || self.flags.account_administrator {
            return true;
        }
        self.scopes.iter().any(|s| match s {
            Scope::Full | Scope::Tier(Tier::Admin) | Scope::Tier(Tier::Write) => true,
            Scope::Tier(Tier::Read) => is_read_method(method),
            Scope::Permission(_) => false,
        })
    }

    /// Whether an HTTP method is allowed at all (read-only keys: GET/HEAD).
    pub fn allows_method(&self, method: &str) -> bool {
        is_read_method(method) || !self.is_read_only()
    }

    /// Everything, account management included (Full Access, the admin
    /// tier or the account-administrator flag, and not read-only).
    pub fn is_full(&self) -> bool {
        !self.flags.read_only
            && (self.flags.account_administrator
                || self.scopes.iter().any(|s| matches!(s, Scope::Full | Scope::Tier(Tier::Admin))))
    }

    /// Whether these grants give `action` (a concrete action, or `read`,
    /// `write`, `manage`, `admin` for every action of that class) on every
    /// resource outside account management, named or not. The empty
    /// resource stands for one no grant names: only tiers, flags and
    /// `*:action` patterns reach it, and they reach every resource alike.
    pub fn allows_api_wide(&self, action: &str) -> bool {
        self.allows(&Permission::new("", action))
    }

    /// Whether these grants give every permission `scope` gives. With
    /// `api_too` false only its account part is compared (what a person
    /// who manages keys may hand out: the API's own permissions are theirs
    /// to give).
    pub fn covers_scope(&self, scope: &Scope, api_too: bool) -> bool {
        let class_action = |action: &str| if action == "*" { "admin".to_owned() } else { action.to_owned() };
        match scope {
            Scope::Full | Scope::Tier(Tier::Admin) => self.is_full(),
            Scope::Tier(Tier::Write) => !api_too || self.allows_api_wide("write"),
            Scope::Tier(Tier::Read) => !api_too || self.allows_api_wide("read"),
            Scope::Permission(p) if p.resource == "*" => {
                let action = class_action(&p.action);
                ACCOUNT_RESOURCES.iter().all(|r| self.allows(&Permission::new(r, &action)))
                    && (!api_too || self.allows_api_wide(&action))
            }
            Scope::Permission(p) => {
                let needed = is_account_resource(&p.resource) || api_too;
                !needed || self.allows(&Permission::new(&p.resource, &class_action(&p.action)))
            }
        }
    }

    /// The first of `flags` whose grant these grants do not cover (see
    /// [`Grants::covers_scope`] for `api_too`).
    pub fn uncovered_flag(&self, flags: Flags, api_too: bool) -> Option<&'static str> {
        if flags.account_administrator && !self.is_full() {
            return Some("accountAdministrator");
        }
        let reads_everything = || {
            ACCOUNT_RESOURCES.iter().all(|r| self.allows(&Permission::new(r, "read")))
                && (!api_too || self.allows_api_wide("read"))
        };
        if flags.read_only && !reads_everything() {
            return Some("readOnly (it reads account settings and members)");
        }
        if flags.administrator && api_too && !self.allows_api_wide("admin") {
            return Some("administrator");
        }
        None
    }

    /// The message for a refused permission.
    pub fn refusal(&self, required: Option<&Permission>) -> String {
        match required {
            Some(p) if !(self.is_read_only() && action_class(&p.action) != ActionClass::Read) => {
                format!("Insufficient permissions. This key lacks the {p} permission.")
            }
            _ => "Insufficient permissions. This key has read-only access.".to_owned(),
        }
    }
}

pub fn is_read_method(method: &str) -> bool {
    method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") || method.eq_ignore_ascii_case("OPTIONS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(scopes: &[&str]) -> Vec<Scope> {
        Scope::parse_list(scopes).unwrap()
    }
    fn allows(scopes: &[&str], flags: Flags, perm: &str) -> bool {
        let s = grants(scopes);
        Grants { scopes: &s, flags }.allows(&Permission::parse_required(perm).unwrap())
    }
    const NONE: Flags = Flags { read_only: false, administrator: false, account_administrator: false };

    #[test]
    fn tiers() {
        assert!(allows(&["read"], NONE, "campaigns:read"));
        assert!(allows(&["read"], NONE, "campaigns:get"));
        assert!(!allows(&["read"], NONE, "campaigns:post"));
        assert!(!allows(&["read"], NONE, "keys:read"));
        assert!(allows(&["write"], NONE, "campaigns:delete"));
        assert!(!allows(&["write"], NONE, "keys:manage"));
        assert!(!allows(&["write"], NONE, "campaigns:publish"));
        assert!(allows(&["admin"], NONE, "keys:manage"));
        assert!(allows(&["*"], NONE, "anything:future"));
    }

    #[test]
    fn permissions_and_wildcards() {
        assert!(allows(&["campaigns:get"], NONE, "campaigns:get"));
        assert!(!allows(&["campaigns:get"], NONE, "campaigns:post"));
        assert!(allows(&["campaigns:*"], NONE, "campaigns:post"));
        assert!(allows(&["*:read"], NONE, "keys:read"));
        assert!(allows(&["campaigns:write"], NONE, "campaigns:get"));
        assert!(!allows(&["campaigns:write"], NONE, "contacts:get"));
        assert!(allows(&["keys:manage"], NONE, "keys:read"));
        assert!(allows(&["keys:manage"], NONE, "keys:manage"));
        assert!(!allows(&["keys:manage"], NONE, "keys:reveal"));
    }

    #[test]
    fn flags_take_precedence() {
        let ro = Flags { read_only: true, ..NONE };
        assert!(!allows(&["*"], ro, "campaigns:post"));
        assert!(allows(&[], ro, "keys:read"));
        let admin = Flags { administrator: true, ..NONE };
        assert!(allows(&[], admin, "campaigns:delete"));
        assert!(!allows(&[], admin, "keys:manage"));
        let acct = Flags { account_administrator: true, ..NONE };
        assert!(allows(&[], acct, "keys:manage"));
    }

    #[test]
    fn read_only_detection_and_methods() {
        let s = grants(&["read", "campaigns:get"]);
        let g = Grants { scopes: &s, flags: NONE };
        assert!(g.is_read_only());
        assert!(g.allows_method("GET") && g.allows_method("head"));
        assert!(!g.allows_method("POST"));
        assert_eq!(g.refusal(None), "Insufficient permissions. This key has read-only access.");
        let w = grants(&["write"]);
        let g = Grants { scopes: &w, flags: NONE };
        assert!(g.allows_method("DELETE"));
        let p = Permission::new("keys", "manage");
        assert_eq!(g.refusal(Some(&p)), "Insufficient permissions. This key lacks the keys:manage permission.");
    }

    #[test]
    fn invalid_scopes_are_refused() {
        for bad in ["", "superuser", "campaigns", "campaigns:", ":read", "Campaigns:read", "a:b:c"] {
            let err = Scope::parse_list(&[bad]).unwrap_err();
            assert_eq!(err.message, SCOPE_RULE_MESSAGE, "{bad:?}");
        }
        assert_eq!(grants(&["read", "read"]).len(), 1);
        assert_eq!(Scope::parse("campaigns:get").unwrap().to_string(), "campaigns:get");
    }
}
