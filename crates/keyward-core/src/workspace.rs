//! The tenant: a workspace and its key policy.

use chrono::{DateTime, Utc};

use crate::Code;
use crate::key::KeyType;
use crate::route::RouteScope;
use crate::scope::Permission;
use crate::{Error, ids, token};

/// Upper bound for any lifetime in days (100 years).
pub const MAX_LIFETIME_DAYS: u32 = 36_500;

/// Limits and lifetimes that apply to every key of a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPolicy {
    /// Maximum number of live (not revoked) keys; `None` = unlimited.
    pub max_keys: Option<u32>,
    /// Lifetime given to a key created without an expiry.
    pub default_key_lifetime_days: Option<u32>,
    /// No key may live longer than this; when set, every key must expire.
    pub max_key_lifetime_days: Option<u32>,
    /// Every key must expire (created without an expiry, it gets the
    /// default lifetime; with no default, it is refused).
    pub require_expiry: bool,
}

impl KeyPolicy {
    /// The expiry the policy gives a key at `now` (the default lifetime,
    /// else the maximum); `None` when it sets neither.
    pub fn policy_expiry(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let days = self.default_key_lifetime_days.or(self.max_key_lifetime_days)?;
        Some(now + chrono::Duration::days(i64::from(days)))
    }

    /// The expiry `current` must become under this policy at `now`, when
    /// it breaks it: none while expiry is required, or later than the
    /// maximum lifetime allows.
    pub fn enforced_expiry(&self, current: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let latest = self.max_key_lifetime_days.map(|m| now + chrono::Duration::days(i64::from(m)));
        match current {
            None if self.require_expiry || latest.is_some() => self.policy_expiry(now),
            Some(at) if latest.is_some_and(|l| at > l) => latest,
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("defaultKeyLifetimeDays", self.default_key_lifetime_days),
            ("maxKeyLifetimeDays", self.max_key_lifetime_days),
        ] {
            if let Some(d) = v
                && !(1..=MAX_LIFETIME_DAYS).contains(&d)
            {
                return Err(Error::invalid(
                    Code::InvalidPolicy,
                    format!("{name} must be between 1 and {MAX_LIFETIME_DAYS} days"),
                ));
            }
        }
        if let Some(m) = self.max_keys
            && m > 1_000_000_000
        {
            return Err(Error::invalid(Code::InvalidPolicy, "maxKeys must be at most 1000000000"));
        }
        if self.require_expiry && self.default_key_lifetime_days.is_none() && self.max_key_lifetime_days.is_none() {
            return Err(Error::invalid(
                Code::InvalidPolicy,
                "requireExpiry needs defaultKeyLifetimeDays or maxKeyLifetimeDays (the date keys get)",
            ));
        }
        if let (Some(d), Some(m)) = (self.default_key_lifetime_days, self.max_key_lifetime_days)
            && d > m
        {
            return Err(Error::invalid(Code::InvalidPolicy, "defaultKeyLifetimeDays cannot exceed maxKeyLifetimeDays"));
        }
        Ok(())
    }
}

/// When wrong secrets lock a key: `threshold` wrong secrets for one key
/// within `window_minutes` (counted across nodes) lock it until a member
/// re-activates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub window_minutes: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy { threshold: 10, window_minutes: 15 }
    }
}

impl LockoutPolicy {
    pub fn validate(self) -> Result<Self, Error> {
        if !(1..=1000).contains(&self.threshold) {
            return Err(Error::invalid(Code::InvalidLockout, "lockout.threshold must be from 1 to 1000"));
        }
        if !(1..=1440).contains(&self.window_minutes) {
            return Err(Error::invalid(Code::InvalidLockout, "lockout.windowMinutes must be from 1 to 1440 (a day)"));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    /// First part of every token of this workspace (`kw` → `kw_live_…`).
    pub token_prefix: String,
    pub policy: KeyPolicy,
    /// Which permission each route of the protected API needs (forward-auth).
    pub routes: Vec<RouteScope>,
    /// Permissions a publishable (browser) key may hold.
    pub public_permissions: Vec<Permission>,
    /// Metadata fields sent to the gateway as `X-Keyward-Meta-<Field>`.
    pub identity_metadata: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub lockout: LockoutPolicy,
    /// The permissions of the protected API, by section, for roles and the
    /// console's permission panel.
    pub catalogue: Vec<CatalogueSection>,
    /// Keys may be created recoverable (needs a master key).
    pub allow_recoverable: bool,
    /// The site id (unique; the FTP username). `None`: the workspace id
    /// stands for it.
    pub site_id: Option<String>,
    /// What a leaked key's report does, and when time-driven events are sent.
    pub notices: Notices,
}

/// What a leaked key's report does (a code host's alert, a member's
/// report, anyone holding the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakPolicy {
    /// The key stops working at once.
    #[default]
    Revoke,
    /// A new secret replaces it at once (sealed for reveal when the key is
    /// recoverable); the leaked one stops.
    Roll,
    /// Nothing but the `key.leaked` event, the audit entry and the banner.
    Notify,
}

impl LeakPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakPolicy::Revoke => "revoke",
            LeakPolicy::Roll => "roll",
            LeakPolicy::Notify => "notify",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "revoke" => Ok(LeakPolicy::Revoke),
            "roll" => Ok(LeakPolicy::Roll),
            "notify" => Ok(LeakPolicy::Notify),
            _ => Err(Error::invalid(Code::InvalidLeakPolicy, "leakPolicy: one of revoke, roll, notify")),
        }
    }
}

/// When time-driven events are sent, and what a leak report does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notices {
    pub leak_policy: LeakPolicy,
    /// `key.expiring` this many days before a key expires (each once).
    pub expiry_notice_days: Vec<u32>,
    /// `key.credits_low` when a key's remaining credits fall to this many
    /// or fewer; `None`: never (a key's own `creditsLowThreshold` metadata wins).
    pub credits_low_threshold: Option<i64>,
    /// `key.unused` after this many days without a use; 0: never.
    pub unused_days: u32,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            leak_policy: LeakPolicy::Revoke,
            expiry_notice_days: vec![14, 1],
            credits_low_threshold: Some(10),
            unused_days: 90,
        }
    }
}

impl Notices {
    pub fn validate(mut self) -> Result<Self, Error> {
        if self.expiry_notice_days.len() > 5 || self.expiry_notice_days.iter().any(|d| !(1..=365).contains(d)) {
            return Err(Error::invalid(
                Code::InvalidNotices,
                "expiryNoticeDays: at most 5 numbers of days, each from 1 to 365",
            ));
        }
        self.expiry_notice_days.sort_unstable_by(|a, b| b.cmp(a));
        self.expiry_notice_days.dedup();
        if self.credits_low_threshold.is_some_and(|t| !(0..=1_000_000_000_000).contains(&t)) {
            return Err(Error::invalid(Code::InvalidNotices, "creditsLowThreshold: from 0 to 1000000000000, or null"));
        }
        if self.unused_days > 3650 {
            return Err(Error::invalid(Code::InvalidNotices, "unusedDays: from 0 (never) to 3650"));
        }
        Ok(self)
    }
}

impl Workspace {
    /// The site id, else the workspace id: the FTP username.
    pub fn site_id(&self) -> &str {
        self.site_id.as_deref().unwrap_or(&self.id)
    }
}

/// One section of the permission catalogue: `campaigns` with `get`,
/// `post`, `put` declares `campaigns:get`, `campaigns:post`, `campaigns:put`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogueSection {
    pub name: String,
    pub actions: Vec<String>,
}

pub const MAX_CATALOGUE_SECTIONS: usize = 200;
pub const MAX_SECTION_ACTIONS: usize = 50;

/// A catalogue as declared: sections and actions are permission names
/// (lowercase letters, digits, `_`, `-`, `.`), none repeated, none an
/// account resource.
pub fn validate_catalogue(sections: Vec<CatalogueSection>) -> Result<Vec<CatalogueSection>, Error> {
    if sections.len() > MAX_CATALOGUE_SECTIONS {
        return Err(Error::invalid(Code::InvalidCatalogue, format!("at most {MAX_CATALOGUE_SECTIONS} sections")));
    }
    let mut seen = std::collections::HashSet::new();
    for section in &sections {
        let ok_name = |n: &str| Permission::parse_required(&format!("{n}:x")).is_some();
        if !ok_name(&section.name) || crate::scope::is_account_resource(&section.name) {
            return Err(Error::invalid(
                Code::InvalidCatalogue,
                "sections[].name must be 1-64 lowercase letters, digits, '_', '-' or '.', and not an account \
                 resource (keys, members, roles, settings, …)",
            ));
        }
        if !seen.insert(section.name.clone()) {
            return Err(Error::invalid(Code::InvalidCatalogue, "each section is named once"));
        }
        if section.actions.is_empty() || section.actions.len() > MAX_SECTION_ACTIONS {
            return Err(Error::invalid(
                Code::InvalidCatalogue,
                format!("sections[].actions must list 1 to {MAX_SECTION_ACTIONS} actions"),
            ));
        }
        let mut actions = std::collections::HashSet::new();
        for a in &section.actions {
            if Permission::parse_required(&format!("x:{a}")).is_none() || !actions.insert(a) {
                return Err(Error::invalid(
                    Code::InvalidCatalogue,
                    "sections[].actions are distinct names of 1-64 lowercase letters, digits, '_', '-' or '.'",
                ));
            }
        }
    }
    Ok(sections)
}

impl Workspace {
    /// Whether a permission pattern names something the workspace knows:
    /// an account permission, or a section (and action, or `*`) of its
    /// catalogue.
    pub fn knows_permission(&self, pattern: &str) -> bool {
        if crate::member::ACCOUNT_PERMISSIONS.contains(&pattern) {
            return true;
        }
        let Some((section, action)) = pattern.split_once(':') else { return false };
        self.catalogue.iter().any(|s| s.name == section && (action == "*" || s.actions.iter().any(|a| a == action)))
    }
}

pub const DEFAULT_TOKEN_PREFIX: &str = "kw";

impl Workspace {
    pub fn new(name: &str, now: DateTime<Utc>) -> Result<Self, Error> {
        Ok(Workspace {
            id: ids::new_id("ws"),
            name: validate_workspace_name(name)?,
            token_prefix: DEFAULT_TOKEN_PREFIX.to_owned(),
            policy: KeyPolicy::default(),
            routes: Vec::new(),
            public_permissions: Vec::new(),
            identity_metadata: Vec::new(),
            created_at: now,
            updated_at: now,
            lockout: LockoutPolicy::default(),
            catalogue: Vec::new(),
            allow_recoverable: false,
            site_id: None,
            notices: Notices::default(),
        })
    }
}

pub fn validate_workspace_name(name: &str) -> Result<String, Error> {
    let name = crate::key::normalize_name(name);
    if name.is_empty()
        || name.chars().count() > 100
        || name.chars().any(|c| c.is_control() || crate::key::is_invisible_format(c))
    {
        return Err(Error::invalid(
            Code::InvalidWorkspaceName,
            "Workspace name must be 1 to 100 printable characters, without zero-width or bidirectional controls",
        ));
    }
    Ok(name)
}

impl Workspace {
    /// The token prefix of a key type: publishable keys get `pk` appended
    /// (`kwpk_live_…`) so that they are told apart at a glance.
    pub fn token_prefix_for(&self, key_type: KeyType) -> String {
        match key_type {
            KeyType::Secret => self.token_prefix.clone(),
            KeyType::Publishable => format!("{}pk", self.token_prefix),
            KeyType::Client => format!("{}cs", self.token_prefix),
        }
    }
}

/// Leaves room for the `pk` suffix of publishable keys.
pub const MAX_WORKSPACE_PREFIX_LEN: usize = token::MAX_PREFIX_LEN - 2;

pub fn validate_token_prefix(prefix: &str) -> Result<String, Error> {
    if !token::is_valid_prefix(prefix) || prefix.len() > MAX_WORKSPACE_PREFIX_LEN {
        return Err(Error::invalid(
            Code::InvalidTokenPrefix,
            "tokenPrefix must be 1 to 14 lowercase letters or digits, starting with a letter",
        ));
    }
    Ok(prefix.to_owned())
}

pub fn validate_routes(routes: Vec<RouteScope>) -> Result<Vec<RouteScope>, Error> {
    if routes.len() > crate::route::MAX_ROUTES {
        return Err(Error::invalid(
            Code::TooManyRoutes,
            format!("A workspace may map at most {} routes", crate::route::MAX_ROUTES),
        ));
    }
    Ok(routes)
}

pub fn validate_public_permissions(items: &[String]) -> Result<Vec<Permission>, Error> {
    items
        .iter()
        .map(|p| {
            Permission::parse_required(p).ok_or_else(|| {
                Error::invalid(Code::InvalidPermission, "Invalid permission in publicPermissions: use resource:action")
            })
        })
        .collect()
}

pub fn validate_identity_metadata(fields: Vec<String>) -> Result<Vec<String>, Error> {
    for f in &fields {
        if f.is_empty() || f.len() > 64 || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::invalid(
                Code::InvalidIdentityMetadata,
                "Invalid field in identityMetadata: use 1 to 64 letters, digits, '-' or '_'",
            ));
        }
    }
    Ok(fields)
}
