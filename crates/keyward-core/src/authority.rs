//! Authority: what a caller holds, and the one rule for what it may hand
//! out.
//!
//! Whatever a caller creates, changes, reveals, exchanges or hands out — a
//! key, a role, an invitation, a token, a revealed secret — carries no more
//! authority than the caller's own. [`Authority::covers`] decides it; the
//! services ask it once per operation, with the thing as it would be.
//!
//! Authority is permissions (scopes, tiers, flags and roles), restrictions
//! (resources, expiry, allowed addresses and origins, the key type) and who
//! holds it: the operator, a person, a key (or a token standing for one), or
//! a role. The partial order:
//! - the operator covers everything; nobody else makes an operator;
//! - only a person makes a person (an invitation), so a key never becomes
//!   one; only a person reveals (the service asks for one first);
//! - account permissions (`keys:*`, `members:*`, …, and `*`, `admin`,
//!   `accountAdministrator`, `readOnly` which reach them) pass only from
//!   someone who holds them;
//! - the API's own permissions pass from a person who may manage keys or
//!   roles (administering them is that person's job), and from a key or a
//!   token only if it holds them;
//! - a role the caller holds itself is covered whole (tags included);
//! - a restricted caller hands out only what is restricted at least as
//!   much: resources ⊆, expiry ≤, addresses and origins ⊆; a publishable key
//!   only publishable keys. Roles carry no restrictions of their own (their
//!   holders do), so none are asked of them; a member holds roles given to
//!   them without any, so a restricted key cannot give a member roles.

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::Code;
use crate::Error;
use crate::key::{KeyGrant, KeyType};
use crate::member::{Role, builtin_role, permission_scopes};
use crate::origin::OriginPattern;
use crate::scope::{Flags, Grants, Scope};

/// Who holds an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The operator acting on the database (`keyward bootstrap`, `keyward
    /// workspace …`): everything.
    Operator,
    /// A signed-in member (session, bearer JWT or a token of their own).
    Person,
    /// A key of this type, or a token standing for one.
    Key(KeyType),
    /// A role, which members and keys may come to hold (its holders carry
    /// their own restrictions, so none are asked of it).
    Role,
    /// Roles given to a member: held everywhere and for as long as they
    /// are a member, so a restricted giver (a key limited to resources,
    /// addresses or a lifetime) cannot give them.
    MemberRoles,
}

/// A role held, with what it grants.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldRole {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Grants only on objects of the API carrying one of its tags.
    pub tagged: bool,
}

/// Where and until when an authority may be used; empty lists and `None`
/// mean unrestricted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restrictions {
    pub resources: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_ips: Vec<IpNet>,
    pub allowed_origins: Vec<OriginPattern>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Authority {
    pub holder: Holder,
    /// Scopes held directly (a person's are all in `roles`).
    pub scopes: Vec<Scope>,
    pub flags: Flags,
    pub roles: Vec<HeldRole>,
    pub restrictions: Restrictions,
}

/// The first part of a grant that exceeds the caller's authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A scope, flag or role permission, as written.
    Permission(String),
    /// A restriction of the caller's that the grant lacks or widens, by
    /// field name: `resources`, `expiresAt`, `allowedIps`, `allowedOrigins`.
    Restriction(&'static str),
    /// The grant is a person's (an invitation) and the caller is not one.
    Person,
    /// A publishable key hands out only publishable keys.
    KeyType,
    /// Only the operator is the operator.
    Operator,
}

impl Refusal {
    /// 403 `cannot_grant`, naming what exceeds (never a submitted value
    /// beyond the permission's own name).
    pub fn into_error(self) -> Error {
        let message = match self {
            Refusal::Permission(what) => {
                format!("You cannot give {what}: only someone who holds it may hand it out")
            }
            Refusal::Restriction("resources") => "You cannot give resources beyond your own: you are limited to \
                some resources, so what you give must be limited to resources among yours"
                .to_owned(),
            Refusal::Restriction("expiresAt") => "You cannot give a later expiresAt than your own: you expire, so \
                what you give must expire no later than you do"
                .to_owned(),
            Refusal::Restriction(field) => format!(
                "You cannot give {field} beyond your own: you are limited, so what you give must be limited \
                 within yours"
            ),
            Refusal::Person => "You cannot give a person's access: only a signed-in member invites people or \
                reveals secrets; a key never acts as a person"
                .to_owned(),
            Refusal::KeyType => "You cannot give type beyond your own: a publishable key hands out only \
                publishable keys"
                .to_owned(),
            Refusal::Operator => "You cannot give the operator's access".to_owned(),
        };
        Error::forbidden(Code::CannotGrant, message)
    }
}

/// The roles `names` name (built-in or the workspace's `custom` ones),
/// with what each grants; unknown names grant nothing.
pub fn held_roles(names: &[String], custom: &[Role]) -> Vec<HeldRole> {
    names
        .iter()
        .filter_map(|name| {
            let (patterns, tagged): (Vec<&str>, bool) = match builtin_role(name) {
                Some(b) => (b.permissions.to_vec(), false),
                None => {
                    let r = custom.iter().find(|r| &r.name == name)?;
                    (r.permissions.iter().map(String::as_str).collect(), !r.tags.is_empty())
                }
            };
            Some(HeldRole { name: name.clone(), scopes: permission_scopes(patterns), tagged })
        })
        .collect()
}

impl Authority {
    pub fn operator() -> Self {
        Authority {
            holder: Holder::Operator,
            scopes: Vec::new(),
            flags: Flags::default(),
            roles: Vec::new(),
            restrictions: Restrictions::default(),
        }
    }

    /// A person holding `roles` of the workspace (whose own are `custom`).
    pub fn person(roles: &[String], custom: &[Role]) -> Self {
        Authority { holder: Holder::Person, roles: held_roles(roles, custom), ..Self::operator() }
    }

    /// Roles given to someone who already is a member (their new roles).
    pub fn member_roles(roles: &[String], custom: &[Role]) -> Self {
        Authority { holder: Holder::MemberRoles, roles: held_roles(roles, custom), ..Self::operator() }
    }

    /// A key as it is (or would be): its scopes, flags, roles and
    /// restrictions.
    pub fn of_key(key: &(impl KeyGrant + ?Sized), custom: &[Role]) -> Self {
        Authority {
            holder: Holder::Key(key.key_type()),
            scopes: key.scopes().to_vec(),
            flags: key.flags(),
            roles: held_roles(key.roles(), custom),
            restrictions: Restrictions {
                resources: key.resources().to_vec(),
                expires_at: key.expires_at(),
                allowed_ips: key.allowed_ips().to_vec(),
                allowed_origins: key.allowed_origins().to_vec(),
            },
        }
    }

    /// A role as it is (or would be).
    pub fn of_role(role: &Role) -> Self {
        let scopes = permission_scopes(role.permissions.iter().map(String::as_str));
        Authority { holder: Holder::Role, scopes, ..Self::operator() }
    }

    /// A token standing for this key: with `scopes`, those alone (the
    /// key's flags and roles no longer count), else the key's whole grant;
    /// the key's restrictions either way.
    pub fn narrowed(mut self, scopes: Option<&[Scope]>) -> Self {
        if let Some(scopes) = scopes {
            self.scopes = scopes.to_vec();
            self.flags = Flags::default();
            self.roles.clear();
        }
        self
    }

    /// Everything held everywhere: the scopes and the untagged roles'.
    pub fn granted(&self) -> Vec<Scope> {
        let mut all = self.scopes.clone();
        for role in self.roles.iter().filter(|r| !r.tagged) {
            for s in &role.scopes {
                if !all.contains(s) {
                    all.push(s.clone());
                }
            }
        }
        all
    }

    /// Whether `other` carries nothing beyond this authority; else the
    /// first part that exceeds it.
    pub fn covers(&self, other: &Authority) -> Result<(), Refusal> {
        match (self.holder, other.holder) {
            (Holder::Operator, _) => return Ok(()),
            (_, Holder::Operator) => return Err(Refusal::Operator),
            (Holder::Person, _) => {}
            (_, Holder::Person) => return Err(Refusal::Person),
            (Holder::Key(KeyType::Publishable), Holder::Key(KeyType::Publishable)) => {}
            (Holder::Key(KeyType::Publishable), _) => return Err(Refusal::KeyType),
            _ => {}
        }
        // A person administers the API's own permissions; a key or a role
        // hands out only what it holds.
        let api_too = self.holder != Holder::Person;
        let granted = self.granted();
        let grants = Grants { scopes: &granted, flags: self.flags };
        if let Some(s) = other.scopes.iter().find(|s| !grants.covers_scope(s, api_too)) {
            return Err(Refusal::Permission(s.to_string()));
        }
        if let Some(flag) = grants.uncovered_flag(other.flags, api_too) {
            return Err(Refusal::Permission(flag.to_owned()));
        }
        for role in &other.roles {
            if self.roles.iter().any(|r| r.name == role.name) {
                continue;
            }
            if let Some(s) = role.scopes.iter().find(|s| !grants.covers_scope(s, api_too)) {
                return Err(Refusal::Permission(format!("the role {} ({s})", role.name)));
            }
        }
        if other.holder == Holder::Role {
            return Ok(());
        }
        self.restrictions.cover(&other.restrictions)
    }
}

impl Restrictions {
    fn cover(&self, other: &Restrictions) -> Result<(), Refusal> {
        if !self.resources.is_empty()
            && (other.resources.is_empty() || !other.resources.iter().all(|r| self.resources.contains(r)))
        {
            return Err(Refusal::Restriction("resources"));
        }
        if let Some(mine) = self.expires_at
            && other.expires_at.is_none_or(|theirs| theirs > mine)
        {
            return Err(Refusal::Restriction("expiresAt"));
        }
        if !self.allowed_ips.is_empty()
            && (other.allowed_ips.is_empty()
                || !other.allowed_ips.iter().all(|n| self.allowed_ips.iter().any(|m| m.contains(n))))
        {
            return Err(Refusal::Restriction("allowedIps"));
        }
        if !self.allowed_origins.is_empty()
            && (other.allowed_origins.is_empty()
                || !other.allowed_origins.iter().all(|o| self.allowed_origins.iter().any(|m| m.covers(o))))
        {
            return Err(Refusal::Restriction("allowedOrigins"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &[&str]) -> Vec<Scope> {
        Scope::parse_list(s).unwrap()
    }
    fn key(s: &[&str]) -> Authority {
        Authority { holder: Holder::Key(KeyType::Secret), scopes: scopes(s), ..Authority::operator() }
    }
    fn person(roles: &[&str]) -> Authority {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        Authority::person(&roles, &[])
    }
    fn refused(by: &Authority, other: &Authority) -> Option<Refusal> {
        by.covers(other).err()
    }
    fn perm(s: &str) -> Option<Refusal> {
        Some(Refusal::Permission(s.to_owned()))
    }

    /// What a holder may hand out, as a table: (holder, grant, refusal).
    #[test]
    fn permissions_table() {
        let cases: Vec<(Authority, Authority, Option<Refusal>)> = vec![
            // The operator covers everything; a person covers any API
            // permission but only the account permissions it holds.
            (Authority::operator(), key(&["*"]), None),
            (person(&["developer"]), key(&["write", "campaigns:*"]), None),
            (person(&["developer"]), key(&["keys:read", "keys:manage"]), None),
            (person(&["developer"]), key(&["*"]), perm("*")),
            (person(&["developer"]), key(&["admin"]), perm("admin")),
            (person(&["developer"]), key(&["*:read"]), perm("*:read")),
            (person(&["developer"]), key(&["keys:*"]), perm("keys:*")),
            (person(&["developer"]), key(&["members:manage"]), perm("members:manage")),
            (person(&["viewer"]), key(&["keys:read"]), None),
            (person(&["admin"]), key(&["*"]), None),
            // A key hands out only what it holds, the API's permissions too.
            (key(&["keys:manage", "campaigns:read"]), key(&["campaigns:read"]), None),
            (key(&["keys:manage", "campaigns:read"]), key(&["campaigns:get"]), None),
            (key(&["keys:manage", "campaigns:read"]), key(&["campaigns:write"]), perm("campaigns:write")),
            (key(&["keys:manage", "campaigns:read"]), key(&["write"]), perm("write")),
            (key(&["keys:manage", "write"]), key(&["read", "campaigns:post", "campaigns:write"]), None),
            (key(&["keys:manage", "write"]), key(&["campaigns:publish"]), perm("campaigns:publish")),
            (key(&["keys:manage", "write"]), key(&["keys:read"]), None),
            (key(&["keys:manage", "write"]), key(&["members:read"]), perm("members:read")),
            (key(&["keys:manage", "campaigns:*"]), key(&["campaigns:publish", "campaigns:manage"]), None),
            (key(&["keys:manage", "*:read"]), key(&["read", "keys:read", "*:get"]), None),
            (key(&["keys:manage", "*:read"]), key(&["*:write"]), perm("*:write")),
            (key(&["admin"]), key(&["*", "admin", "anything:at_all"]), None),
        ];
        for (by, other, want) in cases {
            assert_eq!(refused(&by, &other), want, "{by:?} giving {other:?}");
        }
    }

    #[test]
    fn flags_reach_what_they_grant() {
        let flags = |read_only, administrator, account_administrator| Authority {
            flags: Flags { read_only, administrator, account_administrator },
            ..key(&[])
        };
        let dev = person(&["developer"]);
        assert_eq!(refused(&dev, &flags(false, true, false)), None, "administrator: the API only");
        assert_eq!(refused(&dev, &flags(true, false, false)), perm("readOnly (it reads account settings and members)"));
        assert_eq!(refused(&dev, &flags(false, false, true)), perm("accountAdministrator"));
        let writer = key(&["keys:manage", "write"]);
        assert_eq!(refused(&writer, &flags(false, true, false)), perm("administrator"));
        let administrator = flags(false, true, false);
        assert_eq!(refused(&administrator, &key(&["write", "campaigns:publish"])), None);
        assert_eq!(refused(&administrator, &key(&["keys:read"])), perm("keys:read"));
        let read_only = flags(true, false, false);
        assert_eq!(refused(&read_only, &key(&["*:read", "keys:read"])), None);
        assert_eq!(refused(&read_only, &key(&["campaigns:post"])), perm("campaigns:post"));
        assert_eq!(refused(&flags(false, false, true), &flags(true, true, true)), None);
    }

    #[test]
    fn roles_count_as_what_they_grant_or_whole_when_shared() {
        let now = chrono::DateTime::UNIX_EPOCH;
        let role = |name: &str, permissions: &[&str], tags: &[&str]| Role {
            id: format!("rol_{name}"),
            workspace_id: "ws".into(),
            name: name.into(),
            description: None,
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_at: now,
            updated_at: now,
        };
        let custom = vec![role("people", &["members:manage"], &[]), role("eu", &["sources:edit"], &["eu"])];
        let with_roles = |scopes: &[&str], roles: &[&str]| Authority {
            roles: held_roles(&roles.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>(), &custom),
            ..key(scopes)
        };
        // A role manager gains nothing by writing roles: the role's new
        // permissions must be its own.
        let manager = Authority::person(&["people".into()], &custom);
        let widened = Authority::of_role(&role("people", &["members:manage", "keys:reveal"], &[]));
        assert_eq!(refused(&manager, &widened), perm("keys:reveal"));
        assert_eq!(refused(&manager, &Authority::of_role(&role("x", &["members:read"], &[]))), None);
        // Roles given to a key: covered by holding them, or what they grant.
        let by = with_roles(&["keys:manage"], &["eu"]);
        assert_eq!(refused(&by, &with_roles(&[], &["eu"])), None, "the same role, tags and all");
        assert_eq!(refused(&by, &with_roles(&[], &["people"])), perm("the role people (members:manage)"));
        assert_eq!(refused(&by, &with_roles(&["sources:edit"], &[])), perm("sources:edit"), "tagged is not everywhere");
        assert_eq!(refused(&by, &with_roles(&[], &["admin"])), perm("the role admin (*)"));
        assert_eq!(refused(&with_roles(&["keys:manage"], &["people"]), &with_roles(&["members:read"], &[])), None);
    }

    #[test]
    fn restrictions_are_inherited() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let limited = Authority {
            restrictions: Restrictions {
                resources: vec!["site_a".into(), "site_b".into()],
                expires_at: Some(t("2030-01-02T00:00:00Z")),
                allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
                allowed_origins: vec![OriginPattern::parse("https://*.example.com").unwrap()],
            },
            ..key(&["*"])
        };
        let inside = Restrictions {
            resources: vec!["site_a".into()],
            expires_at: Some(t("2030-01-01T00:00:00Z")),
            allowed_ips: vec!["10.1.0.0/16".parse().unwrap(), "10.2.3.4/32".parse().unwrap()],
            allowed_origins: vec![
                OriginPattern::parse("https://app.example.com").unwrap(),
                OriginPattern::parse("https://*.eu.example.com").unwrap(),
            ],
        };
        let grant = |r: Restrictions| Authority { restrictions: r, ..key(&["campaigns:read"]) };
        assert_eq!(refused(&limited, &grant(inside.clone())), None);
        let cases: Vec<(Restrictions, &str)> = vec![
            (Restrictions { resources: vec![], ..inside.clone() }, "resources"),
            (Restrictions { resources: vec!["site_c".into()], ..inside.clone() }, "resources"),
            (Restrictions { expires_at: None, ..inside.clone() }, "expiresAt"),
            (Restrictions { expires_at: Some(t("2030-01-03T00:00:00Z")), ..inside.clone() }, "expiresAt"),
            (Restrictions { allowed_ips: vec![], ..inside.clone() }, "allowedIps"),
            (Restrictions { allowed_ips: vec!["0.0.0.0/0".parse().unwrap()], ..inside.clone() }, "allowedIps"),
            (Restrictions { allowed_origins: vec![], ..inside.clone() }, "allowedOrigins"),
            (
                Restrictions {
                    allowed_origins: vec![OriginPattern::parse("https://example.com").unwrap()],
                    ..inside.clone()
                },
                "allowedOrigins",
            ),
            (
                Restrictions {
                    allowed_origins: vec![OriginPattern::parse("http://app.example.com").unwrap()],
                    ..inside.clone()
                },
                "allowedOrigins",
            ),
        ];
        for (r, field) in cases {
            assert_eq!(refused(&limited, &grant(r)), Some(Refusal::Restriction(field)));
        }
        // Roles carry no restrictions of their own; a member given roles
        // holds them without any.
        let role = Authority { holder: Holder::Role, ..key(&["campaigns:read"]) };
        assert_eq!(refused(&limited, &role), None);
        let given = Authority { holder: Holder::MemberRoles, ..key(&["campaigns:read"]) };
        assert_eq!(refused(&limited, &given), Some(Refusal::Restriction("resources")));
    }

    #[test]
    fn only_people_make_people_and_publishable_keys_stay_publishable() {
        let admin_key = key(&["*"]);
        assert_eq!(refused(&admin_key, &person(&["viewer"])), Some(Refusal::Person));
        assert_eq!(refused(&person(&["admin"]), &person(&["admin"])), None);
        assert_eq!(refused(&person(&["viewer"]), &person(&["developer"])), perm("the role developer (keys:manage)"));
        let publishable = Authority { holder: Holder::Key(KeyType::Publishable), ..key(&["*"]) };
        assert_eq!(refused(&publishable, &key(&["campaigns:read"])), Some(Refusal::KeyType));
        let other_publishable = Authority { holder: Holder::Key(KeyType::Publishable), ..key(&["campaigns:read"]) };
        assert_eq!(refused(&publishable, &other_publishable), None);
        assert_eq!(refused(&key(&["*"]), &Authority::operator()), Some(Refusal::Operator));
        let err = Refusal::Person.into_error();
        assert_eq!((err.kind, err.code.as_str()), (crate::ErrorKind::Forbidden, "cannot_grant"));
    }
}
