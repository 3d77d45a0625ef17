//! The people who manage keys: members (a person with an email and a
//! password, in one or more workspaces), their roles in each workspace,
//! their sign-in sessions and the invitations that bring them in.
//!
//! Passwords are hashed elsewhere (argon2id, off the async workers); this
//! module holds the rules: what an email, a name, a password and a role
//! list may be, and what each built-in role grants.

use chrono::{DateTime, Duration, Utc};

use crate::Code;
use crate::Error;
use crate::scope::{Permission, Scope};

pub const MIN_PASSWORD_LEN: usize = 10;
/// Long enough for any passphrase, short enough that hashing stays cheap.
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_NAME_LEN: usize = 100;
/// How long an invitation can be redeemed.
pub const INVITATION_LIFETIME: Duration = Duration::days(7);
/// How long a re-authentication keeps a session fresh (reveal needs it).
pub const FRESH_FOR: Duration = Duration::minutes(5);
/// A session's lifetime; one that also asked for a bearer token lasts as
/// long as the token.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);
pub const TOKEN_LIFETIME: Duration = Duration::days(7);

/// The account permissions: what a member (or an admin-tier key) may do to
/// the workspace itself.
pub const ACCOUNT_PERMISSIONS: &[&str] = &[
    "keys:read",
    "keys:manage",
    "keys:reveal",
    "keys:verify",
    "keys:replicate",
    "members:read",
    "members:manage",
    "roles:manage",
    "settings:read",
    "settings:manage",
    "audit:read",
    "pgp:read",
    "pgp:manage",
    "pgp:use",
    "oauth:manage",
    "tokens:manage",
    "integrations:read",
    "integrations:manage",
    "ftp:authenticate",
    "webhooks:manage",
];

/// A built-in role: present in every workspace, not deletable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinRole {
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: &'static [&'static str],
}

pub const OWNER: &str = "owner";

pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: OWNER,
        description: "Everything, including making and removing other owners",
        permissions: &["*"],
    },
    BuiltinRole {
        name: "admin",
        description: "Everything but granting or removing the owner role",
        permissions: &["*"],
    },
    BuiltinRole {
        name: "developer",
        description: "Creates and manages keys; reads members and settings",
        permissions: &["keys:read", "keys:manage", "keys:verify", "members:read", "settings:read"],
    },
    BuiltinRole {
        name: "viewer",
        description: "Reads keys, members and settings",
        permissions: &["keys:read", "members:read", "settings:read"],
    },
];

pub fn builtin_role(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

/// What a list of roles (built-in, or the workspace's `custom` ones)
/// grants together, tags aside: roles are cumulative.
pub fn role_scopes(roles: &[String], custom: &[Role]) -> Vec<Scope> {
    let patterns = roles.iter().flat_map(|name| -> Vec<&str> {
        match builtin_role(name) {
            Some(role) => role.permissions.to_vec(),
            None => custom
                .iter()
                .find(|r| &r.name == name)
                .map_or_else(Vec::new, |r| r.permissions.iter().map(String::as_str).collect()),
        }
    });
    permission_scopes(patterns)
}

/// What a role's permission patterns grant (`*` is Full Access), without
/// repeats, in order.
pub fn permission_scopes<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    let mut scopes = Vec::new();
    for p in patterns {
        let scope = if p == "*" { Some(Scope::Full) } else { Permission::parse_pattern(p).map(Scope::Permission) };
        if let Some(scope) = scope
            && !scopes.contains(&scope)
        {
            scopes.push(scope);
        }
    }
    scopes
}

/// The roles as a publishable key holds them: each with only those of
/// its permissions the workspace made public.
pub fn public_roles(roles: &[Role], public: &[Permission]) -> Vec<Role> {
    roles
        .iter()
        .map(|r| Role {
            permissions: r
                .permissions
                .iter()
                .filter(|p| Permission::parse_required(p).is_some_and(|p| public.contains(&p)))
                .cloned()
                .collect(),
            ..r.clone()
        })
        .collect()
}

/// A role defined by a workspace (built-in roles are not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Permission patterns: account permissions, or `section:action` of
    /// the workspace's catalogue (`section:*` for all its actions).
    pub permissions: Vec<String>,
    /// When not empty, the role grants only on objects carrying one of
    /// these tags.
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A person who can sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Lowercase; unique across the deployment.
    pub email: String,
    pub name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A member's place in one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub workspace_id: String,
    pub member_id: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl Membership {
    pub fn is_owner(&self) -> bool {
        self.roles.iter().any(|r| r == OWNER)
    }
}

/// A signed-in member in one workspace. The cookie's token is stored only
/// as a keyed hash; a bearer JWT names the session by `id`, so ending the
/// session ends the token too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub token_hash: [u8; 32],
    pub member_id: String,
    pub workspace_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Until when the member counts as freshly re-authenticated.
    pub fresh_until: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        self.fresh_until.is_some_and(|f| now < f)
    }
}

/// An invitation to join a workspace; the token is shown once and stored
/// only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub workspace_id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub token_hash: [u8; 32],
    pub invited_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

impl Invitation {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.accepted_at.is_none() && now < self.expires_at
    }
}

/// A lowercase email, or 400 naming the rule. Deliberately plain: one `@`
/// with something on each side, no spaces or control characters.
pub fn validate_email(email: &str) -> Result<String, Error> {
    let email = email.trim().to_lowercase();
    let bad = || {
        Error::invalid(
            Code::InvalidEmail,
            format!("email must be an address such as name@example.com (at most {MAX_EMAIL_LEN} characters)"),
        )
    };
    if email.len() > MAX_EMAIL_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.') =>
        {
            Ok(email)
        }
        _ => Err(bad()),
    }
}

pub fn validate_member_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            Code::InvalidName,
            format!("name must be 1 to {MAX_NAME_LEN} characters, without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A password good enough to set: 10 to 1024 characters, and not the
/// member's email.
pub fn validate_password(password: &str, email: &str) -> Result<(), Error> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(Error::invalid(
            Code::WeakPassword,
            format!("password must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid(
            Code::InvalidPassword,
            format!("password must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    if password.trim().eq_ignore_ascii_case(email.trim()) {
        return Err(Error::invalid(Code::WeakPassword, "password must not be the email address"));
    }
    Ok(())
}

pub const MAX_ROLE_TAGS: usize = 50;
pub const MAX_ROLE_DESCRIPTION: usize = 500;

/// A tag: 1–64 letters, digits, `_`, `-`, `.` or `:` (as role names).
pub fn validate_tags(tags: Vec<String>, field: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !is_role_name(&tag) {
            return Err(Error::invalid(
                Code::InvalidTags,
                format!("{field}: each tag is 1 to 64 letters, digits, '_', '-', '.' or ':'"),
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > MAX_ROLE_TAGS {
        return Err(Error::invalid(Code::InvalidTags, format!("{field}: at most {MAX_ROLE_TAGS} tags")));
    }
    Ok(out)
}

/// A role's name: 1–64 ASCII letters, digits, `_`, `-`, `.` or `:`.
pub fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// A non-empty list of known roles (built-in or the workspace's
/// `custom` ones), without repeats.
pub fn validate_roles(roles: &[String], custom: &[Role]) -> Result<Vec<String>, Error> {
    if roles.is_empty() {
        return Err(Error::invalid(Code::InvalidRoles, "roles must name at least one role"));
    }
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if builtin_role(role).is_none() && !custom.iter().any(|r| &r.name == role) {
            let known: Vec<&str> = BUILTIN_ROLES.iter().map(|r| r.name).collect();
            return Err(Error::invalid(
                Code::UnknownRole,
                format!(
                    "roles: unknown role; the built-in roles are {}, besides the workspace's own",
                    known.join(", ")
                ),
            ));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(validate_email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        assert_eq!(validate_email("owner@localhost").unwrap(), "owner@localhost");
        for bad in ["", "ann", "@x", "ann@", "a b@x", "a@b@c", "a@.x"] {
            assert_eq!(validate_email(bad).unwrap_err().code, Code::InvalidEmail, "{bad}");
        }
    }

    #[test]
    fn passwords_need_length_and_must_not_be_the_email() {
        assert_eq!(validate_password("short", "a@b").unwrap_err().code, Code::WeakPassword);
        assert_eq!(validate_password("ann@example.com", "ann@example.com").unwrap_err().code, Code::WeakPassword);
        assert_eq!(validate_password(&"x".repeat(2000), "a@b").unwrap_err().code, Code::InvalidPassword);
        validate_password("correct horse battery", "ann@example.com").unwrap();
    }

    #[test]
    fn roles_are_cumulative_and_known() {
        let dev = role_scopes(&["developer".into(), "viewer".into()], &[]);
        assert!(dev.contains(&Scope::Permission(Permission::new("keys", "manage"))));
        assert_eq!(dev.len(), 5, "repeats are dropped");
        assert_eq!(role_scopes(&["owner".into()], &[]), vec![Scope::Full]);
        assert_eq!(validate_roles(&["boss".into()], &[]).unwrap_err().code, Code::UnknownRole);
        assert_eq!(validate_roles(&[], &[]).unwrap_err().code, Code::InvalidRoles);
        assert_eq!(validate_roles(&["viewer".into(), "viewer".into()], &[]).unwrap(), vec!["viewer".to_owned()]);
    }
}
