//! The key record and every rule about what may be set on it.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use ipnet::IpNet;

use crate::Code;
use crate::Error;
use crate::hash::SecretHash;
use crate::origin::{OriginPattern, parse_ip_range};
use crate::scope::{Flags, Grants, Scope};
use crate::token::Environment;
use crate::workspace::{KeyPolicy, MAX_LIFETIME_DAYS, Workspace};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 500;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MAX_RESOURCES: usize = 100;
/// Most origins or IP ranges one key may list.
pub const MAX_ALLOWLIST: usize = 100;
/// Longest grace period a roll may give the old secret (30 days).
pub const MAX_GRACE_SECONDS: u32 = 30 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// A server-side REST key.
    Secret,
    /// The browser ("JavaScript API") key: only public permissions, only
    /// from allowed origins.
    Publishable,
    /// An OAuth 2.0 client: a public consumer key (`clientId`) and the
    /// consumer secret (its token), exchanged at `/oauth/token` for access
    /// tokens.
    Client,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Secret => "secret",
            KeyType::Publishable => "publishable",
            KeyType::Client => "client",
        }
    }
    /// A key type a client named, or why it is none.
    pub fn parse_required(s: &str) -> Result<Self, Error> {
        Self::parse(s).ok_or_else(|| Error::invalid(Code::InvalidType, "type must be: secret, publishable or client"))
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "secret" => Some(KeyType::Secret),
            "publishable" => Some(KeyType::Publishable),
            "client" => Some(KeyType::Client),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    /// Reversibly switched off; rejected whatever its scopes.
    Inactive,
    /// Permanently dead; the record stays for audit until deleted.
    Revoked,
    /// Switched off by too many wrong secrets ("Disabled"), until a member
    /// re-activates it.
    Locked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Inactive => "inactive",
            KeyState::Revoked => "revoked",
            KeyState::Locked => "locked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyState::Active),
            "inactive" => Some(KeyState::Inactive),
            "revoked" => Some(KeyState::Revoked),
            "locked" => Some(KeyState::Locked),
            _ => None,
        }
    }
}

/// The previous secret of a rolled key, valid until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceSecret {
    pub hash: SecretHash,
    pub until: DateTime<Utc>,
    /// Its replica digest (see [`ApiKey::replica`]), if it had one.
    pub replica: Option<[u8; 32]>,
}

/// A stored key. Holds no secret, only its keyed hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Public id: `key_` + the 16 id characters of its token (native keys),
    /// or the id it had in the system it was imported from.
    pub id: Arc<str>,
    pub workspace_id: String,
    pub name: String,
    pub description: Option<String>,
    pub key_type: KeyType,
    pub environment: Environment,
    /// Masked display form, e.g. `kw_live_3fH9…1a2B`.
    pub masked: String,
    pub scopes: Vec<Scope>,
    pub flags: Flags,
    /// Resource ids (site ids) the key is limited to; empty = all.
    pub resources: Vec<String>,
    /// Browser origins the key may be used from; empty = any.
    pub allowed_origins: Vec<OriginPattern>,
    /// Client addresses the key may be used from; empty = any.
    pub allowed_ips: Vec<IpNet>,
    /// A JSON object, at most 8 KiB serialized.
    pub metadata: Value,
    pub state: KeyState,
    /// Imported from a legacy system: verifies, but cannot be edited or deleted.
    pub legacy: bool,
    /// Import prefix (`zta_live_`) for keys whose token is not keyward's own
    /// format and is therefore looked up by hash.
    pub lookup_prefix: Option<String>,
    pub secret: SecretHash,
    /// The secret's digest in the same scheme under the workspace's replica
    /// key ([`crate::hash::SecretHasher::replica`]): what an embedded
    /// verifier checks, holding no key of the server's. Made wherever the
    /// plaintext is seen (creation, roll, import, a verification); `None`
    /// for a key none of those has reached since, or imported as a foreign
    /// hash.
    pub replica: Option<[u8; 32]>,
    pub grace: Option<GraceSecret>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Bumped on every change: the ETag, and the optimistic-lock token.
    pub version: i64,
    /// Uses left and their refill, for keys sold by the request.
    pub credits: Option<crate::credits::Credits>,
    /// Named rate limits of this key alone.
    pub ratelimits: Vec<crate::ratelimit::RateLimit>,
    /// The identity (customer) whose shared limits also apply.
    pub identity: Option<KeyIdentity>,
    /// Roles of the workspace the key holds (cumulative with its scopes;
    /// the flags take precedence).
    pub roles: Vec<String>,
    /// Its secret is also kept sealed under the master key, so an
    /// authorised member can reveal it.
    pub recoverable: bool,
    /// The consumer key of a `client` key (public; new on every roll).
    pub client_id: Option<String>,
    /// The consumer key rolled away from, valid with the grace secret
    /// while the grace period lasts.
    pub grace_client_id: Option<String>,
}

/// What a key holds and where it may be used: read from a stored
/// [`ApiKey`] or from a verifier's compact record alike.
pub trait KeyGrant {
    fn key_type(&self) -> KeyType;
    fn scopes(&self) -> &[Scope];
    fn flags(&self) -> Flags;
    /// Roles of the workspace the key holds.
    fn roles(&self) -> &[String];
    fn resources(&self) -> &[String];
    fn expires_at(&self) -> Option<DateTime<Utc>>;
    fn allowed_ips(&self) -> &[IpNet];
    fn allowed_origins(&self) -> &[OriginPattern];

    fn grants(&self) -> Grants<'_> {
        Grants { scopes: self.scopes(), flags: self.flags() }
    }
}

impl KeyGrant for ApiKey {
    fn key_type(&self) -> KeyType {
        self.key_type
    }
    fn scopes(&self) -> &[Scope] {
        &self.scopes
    }
    fn flags(&self) -> Flags {
        self.flags
    }
    fn roles(&self) -> &[String] {
        &self.roles
    }
    fn resources(&self) -> &[String] {
        &self.resources
    }
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
    fn allowed_ips(&self) -> &[IpNet] {
        &self.allowed_ips
    }
    fn allowed_origins(&self) -> &[OriginPattern] {
        &self.allowed_origins
    }
}

/// The identity a key belongs to: its id and the caller's external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: String,
    pub external_id: String,
}

impl ApiKey {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Live keys count against the limit and hold their name.
    pub fn is_live(&self) -> bool {
        self.state != KeyState::Revoked
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
        self.version += 1;
    }

    pub fn ensure_editable(&self) -> Result<(), Error> {
        if self.legacy {
            return Err(Error::conflict(Code::LegacyKey, "Legacy API keys cannot be edited"));
        }
        if self.state == KeyState::Revoked {
            return Err(Error::conflict(Code::KeyRevoked, "A revoked API key cannot be changed"));
        }
        Ok(())
    }

    pub fn ensure_deletable(&self) -> Result<(), Error> {
        if self.legacy {
            return Err(Error::conflict(Code::LegacyKey, "Legacy API keys cannot be deleted"));
        }
        if self.state == KeyState::Active {
            return Err(Error::conflict(Code::KeyActive, "API key is active. Deactivate it before deleting it."));
        }
        Ok(())
    }

    /// Returns whether anything changed (deactivating twice is not an error).
    pub fn deactivate(&mut self, now: DateTime<Utc>) -> Result<bool, Error> {
        match self.state {
            KeyState::Revoked => Err(Error::conflict(Code::KeyRevoked, "API key has been revoked")),
            KeyState::Inactive => Ok(false),
            KeyState::Active | KeyState::Locked => {
                self.state = KeyState::Inactive;
                self.touch(now);
                Ok(true)
            }
        }
    }

    pub fn activate(&mut self, now: DateTime<Utc>) -> Result<bool, Error> {
        match self.state {
            KeyState::Revoked => {
                Err(Error::conflict(Code::KeyRevoked, "API key has been revoked and cannot be activated"))
            }
            KeyState::Active => Ok(false),
            KeyState::Inactive | KeyState::Locked => {
                self.state = KeyState::Active;
                self.touch(now);
                Ok(true)
            }
        }
    }

    pub fn revoke(&mut self, now: DateTime<Utc>) -> bool {
        if self.state == KeyState::Revoked {
            return false;
        }
        self.state = KeyState::Revoked;
        self.revoked_at = Some(now);
        self.grace = None;
        self.touch(now);
        true
    }

    /// Replaces the secret; the old one keeps verifying for `grace_seconds`.
    pub fn roll(
        &mut self,
        new_secret: SecretHash,
        new_replica: Option<[u8; 32]>,
        grace_seconds: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if self.state == KeyState::Revoked {
            return Err(Error::conflict(Code::KeyRevoked, "A revoked API key cannot be rolled"));
        }
        if self.lookup_prefix.is_some() {
            return Err(Error::conflict(
                Code::ImportedKey,
                "Imported keys in a foreign format cannot be rolled; clone them instead",
            ));
        }
        validate_grace(grace_seconds)?;
        self.grace = (grace_seconds > 0).then(|| GraceSecret {
            hash: self.secret,
            until: now + Duration::seconds(i64::from(grace_seconds)),
            replica: self.replica,
        });
        self.secret = new_secret;
        self.replica = new_replica;
        // A client gets a new consumer key with its new secret; the old
        // pair works together while the grace period lasts.
        if self.key_type == KeyType::Client {
            let old = self.client_id.replace(crate::oauth::new_client_id());
            self.grace_client_id = if grace_seconds > 0 { old } else { None };
        }
        self.touch(now);
        Ok(())
    }

    /// Brings the key in line with its workspace's expiry policy (a key
    /// without expiry where one is required, or one living longer than the
    /// maximum); `false` when it already complies or is revoked.
    pub fn enforce_expiry(&mut self, policy: &KeyPolicy, now: DateTime<Utc>) -> bool {
        if self.state == KeyState::Revoked {
            return false;
        }
        match policy.enforced_expiry(self.expires_at, now) {
            Some(at) => {
                self.expires_at = Some(at);
                self.touch(now);
                true
            }
            None => false,
        }
    }

    pub fn apply(&mut self, patch: KeyPatch, workspace: &Workspace, now: DateTime<Utc>) -> Result<(), Error> {
        self.ensure_editable()?;
        let mut next = self.clone();
        if let Some(name) = patch.name {
            next.name = validate_name(Some(&name))?;
        }
        if let Some(description) = patch.description {
            next.description = validate_description(description)?;
        }
        if let Some(scopes) = patch.scopes {
            next.scopes = Scope::parse_list(&scopes)?;
        }
        if let Some(v) = patch.read_only {
            next.flags.read_only = v;
        }
        if let Some(v) = patch.administrator {
            next.flags.administrator = v;
        }
        if let Some(v) = patch.account_administrator {
            next.flags.account_administrator = v;
        }
        if let Some(resources) = patch.resources {
            next.resources = validate_resources(resources)?;
        }
        if let Some(origins) = patch.allowed_origins {
            next.allowed_origins = validate_origins(&origins)?;
        }
        if let Some(ips) = patch.allowed_ips {
            next.allowed_ips = validate_ips(&ips)?;
        }
        if let Some(metadata) = patch.metadata {
            next.metadata = validate_metadata(metadata)?;
        }
        if let Some(credits) = patch.credits {
            next.credits = credits;
        }
        if let Some(limits) = patch.ratelimits {
            crate::ratelimit::validate("ratelimits", &limits)?;
            next.ratelimits = limits;
        }
        if let Some(identity) = patch.identity {
            next.identity = identity;
        }
        if let Some(roles) = patch.roles {
            next.roles = validate_role_names(roles)?;
        }
        if let Some(expires_at) = patch.expires_at {
            next.expires_at = shorten_expiry(self.expires_at, expires_at, &workspace.policy, now)?;
        }
        check_publishable(next.key_type, &next.scopes, next.flags, &next.allowed_origins, workspace)?;
        next.touch(now);
        *self = next;
        Ok(())
    }
}

/// A partial edit. `None` leaves a field alone; `description: Some(None)`
/// clears it.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub read_only: Option<bool>,
    pub administrator: Option<bool>,
    pub account_administrator: Option<bool>,
    pub resources: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub metadata: Option<Value>,
    /// `Some(None)` asks for "never expires", which is never a shortening.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// `Some(None)` removes the key's credits (unlimited uses). Checked.
    pub credits: Option<Option<crate::credits::Credits>>,
    /// Replaces the key's own rate limits. Checked.
    pub ratelimits: Option<Vec<crate::ratelimit::RateLimit>>,
    /// `Some(None)` detaches the key from its identity (set by the service
    /// from `external_id`).
    pub identity: Option<Option<KeyIdentity>>,
    /// `Some(None)` leaves the identity; resolved by the service.
    pub external_id: Option<Option<String>>,
    /// Replaces the key's roles (checked against the workspace's roles by
    /// the service).
    pub roles: Option<Vec<String>>,
}

/// Everything a caller may set when creating (or importing) a key.
#[derive(Debug, Clone, Default)]
pub struct KeyDraft {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default: [`KeyType::Secret`].
    pub key_type: Option<KeyType>,
    pub environment: Option<Environment>,
    pub scopes: Vec<String>,
    pub flags: Flags,
    pub resources: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub expires_in_days: Option<i64>,
    pub metadata: Option<Value>,
    /// Checked ([`crate::credits::Credits::validate`]).
    pub credits: Option<crate::credits::Credits>,
    pub ratelimits: Vec<crate::ratelimit::RateLimit>,
    /// The identity (customer) the key belongs to, by the caller's id;
    /// resolved by the service (which may create the identity).
    pub external_id: Option<String>,
    /// Role names (checked against the workspace's roles by the service).
    pub roles: Vec<String>,
    /// Keep the secret sealed under the master key so it can be revealed.
    pub recoverable: bool,
}

/// A draft that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidDraft {
    pub name: String,
    pub description: Option<String>,
    pub key_type: KeyType,
    pub environment: Environment,
    pub scopes: Vec<Scope>,
    pub flags: Flags,
    pub resources: Vec<String>,
    pub allowed_origins: Vec<OriginPattern>,
    pub allowed_ips: Vec<IpNet>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub credits: Option<crate::credits::Credits>,
    pub ratelimits: Vec<crate::ratelimit::RateLimit>,
    pub identity: Option<KeyIdentity>,
    pub roles: Vec<String>,
    pub recoverable: bool,
}

impl KeyDraft {
    pub fn validate(self, workspace: &Workspace, now: DateTime<Utc>) -> Result<ValidDraft, Error> {
        let draft = ValidDraft {
            name: validate_name(self.name.as_deref())?,
            description: validate_description(self.description)?,
            key_type: self.key_type.unwrap_or(KeyType::Secret),
            environment: self.environment.unwrap_or(Environment::Live),
            scopes: Scope::parse_list(&self.scopes)?,
            flags: self.flags,
            resources: validate_resources(self.resources)?,
            allowed_origins: validate_origins(&self.allowed_origins)?,
            allowed_ips: validate_ips(&self.allowed_ips)?,
            expires_at: resolve_expiry(self.expires_at, self.expires_in_days, &workspace.policy, now)?,
            metadata: validate_metadata(self.metadata.unwrap_or_else(|| Value::Object(Default::default())))?,
            credits: self.credits,
            ratelimits: {
                crate::ratelimit::validate("ratelimits", &self.ratelimits)?;
                self.ratelimits
            },
            identity: None,
            roles: validate_role_names(self.roles)?,
            recoverable: self.recoverable,
        };
        check_publishable(draft.key_type, &draft.scopes, draft.flags, &draft.allowed_origins, workspace)?;
        Ok(draft)
    }
}

impl ValidDraft {
    /// The record for a new key whose token hashes to `secret`.
    pub fn into_key(
        self,
        id: String,
        workspace_id: &str,
        masked: String,
        secret: SecretHash,
        now: DateTime<Utc>,
    ) -> ApiKey {
        ApiKey {
            id: id.into(),
            workspace_id: workspace_id.to_owned(),
            name: self.name,
            description: self.description,
            key_type: self.key_type,
            environment: self.environment,
            masked,
            scopes: self.scopes,
            flags: self.flags,
            resources: self.resources,
            allowed_origins: self.allowed_origins,
            allowed_ips: self.allowed_ips,
            metadata: self.metadata,
            state: KeyState::Active,
            legacy: false,
            lookup_prefix: None,
            secret,
            replica: None,
            grace: None,
            expires_at: self.expires_at,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            revoked_at: None,
            version: 1,
            credits: self.credits,
            ratelimits: self.ratelimits,
            identity: self.identity,
            roles: self.roles,
            recoverable: self.recoverable,
            client_id: (self.key_type == KeyType::Client).then(crate::oauth::new_client_id),
            grace_client_id: None,
        }
    }
}

impl ApiKey {
    /// The settings of this key as a draft, for cloning.
    pub fn to_valid_draft(&self, name: String) -> ValidDraft {
        ValidDraft {
            name,
            description: self.description.clone(),
            key_type: self.key_type,
            environment: self.environment,
            scopes: self.scopes.clone(),
            flags: self.flags,
            resources: self.resources.clone(),
            allowed_origins: self.allowed_origins.clone(),
            allowed_ips: self.allowed_ips.clone(),
            expires_at: self.expires_at,
            metadata: self.metadata.clone(),
            // A clone starts with the source's credits as they stand.
            credits: self.credits,
            ratelimits: self.ratelimits.clone(),
            identity: self.identity.clone(),
            roles: self.roles.clone(),
            recoverable: self.recoverable,
        }
    }
}

/// At most this many roles on a key.
pub const MAX_KEY_ROLES: usize = 32;

/// Role names as given, without repeats: 1–64 characters of letters,
/// digits, `_`, `-`, `.`, `:` (whether each exists is the service's
/// question).
pub fn validate_role_names(roles: Vec<String>) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if !crate::member::is_role_name(&role) {
            return Err(Error::invalid(
                Code::InvalidRoles,
                "roles: each role name is 1 to 64 letters, digits, '_', '-', '.' or ':'",
            ));
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    if out.len() > MAX_KEY_ROLES {
        return Err(Error::invalid(Code::InvalidRoles, format!("roles: at most {MAX_KEY_ROLES} roles")));
    }
    Ok(out)
}

/// Characters that change how text looks without being seen: zero-width
/// characters and bidirectional controls. Two names that differ only by
/// them would look the same, so names may not contain them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// A display name as stored and compared: trimmed and in Unicode NFC, so
/// that `é` typed as one or as two code points is the same name.
pub fn normalize_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.trim().nfc().collect()
}

pub fn validate_name(name: Option<&str>) -> Result<String, Error> {
    let name = normalize_name(name.unwrap_or_default());
    let name = name.as_str();
    if name.is_empty() {
        return Err(Error::invalid(Code::NameRequired, "API key name is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            Code::NameTooLong,
            format!("API key name must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(Code::InvalidName, "API key name must not contain control characters"));
    }
    if name.chars().any(is_invisible_format) {
        return Err(Error::invalid(
            Code::InvalidName,
            "API key name must not contain zero-width or bidirectional control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn validate_description(description: Option<String>) -> Result<Option<String>, Error> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(Error::invalid(
            Code::DescriptionTooLong,
            format!("Description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(d) if d.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) => Err(Error::invalid(
            Code::InvalidDescription,
            "Description must not contain control characters other than line breaks and tabs",
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

pub fn validate_metadata(metadata: Value) -> Result<Value, Error> {
    match &metadata {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => {
            let size = serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(Error::invalid(Code::MetadataTooLarge, "metadata must be at most 8 KiB of JSON"));
            }
            Ok(metadata)
        }
        _ => Err(Error::invalid(Code::InvalidMetadata, "metadata must be a JSON object")),
    }
}

pub fn is_valid_resource_id(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 128
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

pub fn validate_resources(resources: Vec<String>) -> Result<Vec<String>, Error> {
    if resources.len() > MAX_RESOURCES {
        return Err(Error::invalid(
            Code::TooManyResources,
            format!("A key may be limited to at most {MAX_RESOURCES} resources"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(resources.len());
    for r in resources {
        if !is_valid_resource_id(&r) {
            return Err(Error::invalid(
                Code::InvalidResource,
                "Resource ids are 1 to 128 letters, digits, '_', '-', '.' or ':'",
            ));
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

pub fn validate_origins(origins: &[String]) -> Result<Vec<OriginPattern>, Error> {
    if origins.len() > MAX_ALLOWLIST {
        return Err(Error::invalid(Code::TooManyOrigins, format!("A key may list at most {MAX_ALLOWLIST} origins")));
    }
    let mut out: Vec<OriginPattern> = Vec::with_capacity(origins.len());
    for o in origins {
        let p = OriginPattern::parse(o)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

pub fn validate_ips(ranges: &[String]) -> Result<Vec<IpNet>, Error> {
    if ranges.len() > MAX_ALLOWLIST {
        return Err(Error::invalid(Code::TooManyIpRanges, format!("A key may list at most {MAX_ALLOWLIST} IP ranges")));
    }
    let mut out: Vec<IpNet> = Vec::with_capacity(ranges.len());
    for r in ranges {
        let n = parse_ip_range(r)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Publishable keys live in browsers: only permissions the workspace marks
/// public, no tiers or flags, and at least one allowed origin.
fn check_publishable(
    key_type: KeyType,
    scopes: &[Scope],
    flags: Flags,
    origins: &[OriginPattern],
    workspace: &Workspace,
) -> Result<(), Error> {
    if key_type != KeyType::Publishable {
        return Ok(());
    }
    for scope in scopes {
        let public = matches!(scope, Scope::Permission(p) if workspace.public_permissions.contains(p));
        if !public {
            return Err(Error::invalid(
                Code::NotPublic,
                format!("Publishable keys may hold only the workspace's public permissions; {scope} is not public"),
            ));
        }
    }
    if flags != Flags::default() {
        return Err(Error::invalid(
            Code::NotPublic,
            "Publishable keys cannot be read-only, administrator or account administrator",
        ));
    }
    if origins.is_empty() {
        return Err(Error::invalid(Code::OriginsRequired, "Publishable keys need at least one allowed origin"));
    }
    Ok(())
}

/// A publishable key's roles grant only what its scopes may: the
/// workspace's public permissions (400 `not_public` naming the role).
pub fn check_public_roles(key: &ApiKey, custom: &[crate::member::Role], workspace: &Workspace) -> Result<(), Error> {
    if key.key_type != KeyType::Publishable {
        return Ok(());
    }
    for role in crate::authority::held_roles(&key.roles, custom) {
        let public = |s: &Scope| matches!(s, Scope::Permission(p) if workspace.public_permissions.contains(p));
        if !role.scopes.iter().all(public) {
            return Err(Error::invalid(
                Code::NotPublic,
                format!(
                    "Publishable keys may hold only the workspace's public permissions; the role {} grants others",
                    role.name
                ),
            ));
        }
    }
    Ok(())
}

pub fn validate_grace(grace_seconds: u32) -> Result<(), Error> {
    if grace_seconds > MAX_GRACE_SECONDS {
        return Err(Error::invalid(
            Code::InvalidGracePeriod,
            format!("gracePeriodSeconds must be at most {MAX_GRACE_SECONDS} (30 days)"),
        ));
    }
    Ok(())
}

/// Decides a new key's expiry from what the caller gave and the policy.
pub fn resolve_expiry(
    expires_at: Option<DateTime<Utc>>,
    expires_in_days: Option<i64>,
    policy: &KeyPolicy,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let expiry = match (expires_at, expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(Code::InvalidExpiry, "Give either expiresAt or expiresIn, not both"));
        }
        (None, Some(days)) => {
            if !(1..=i64::from(MAX_LIFETIME_DAYS)).contains(&days) {
                return Err(Error::invalid(
                    Code::InvalidExpiry,
                    format!("expiresIn must be between 1 and {MAX_LIFETIME_DAYS} days"),
                ));
            }
            Some(now + Duration::days(days))
        }
        (Some(at), None) => Some(at),
        (None, None) => policy.default_key_lifetime_days.map(|d| now + Duration::days(i64::from(d))),
    };
    check_expiry(expiry, policy, now)?;
    Ok(expiry)
}

fn check_expiry(expiry: Option<DateTime<Utc>>, policy: &KeyPolicy, now: DateTime<Utc>) -> Result<(), Error> {
    if let Some(at) = expiry
        && at <= now
    {
        return Err(Error::invalid(Code::InvalidExpiry, "expiresAt must be in the future"));
    }
    if policy.require_expiry && expiry.is_none() {
        return Err(Error::invalid(Code::ExpiryRequired, "This workspace requires every key to expire"));
    }
    if let Some(max) = policy.max_key_lifetime_days {
        let limit = now + Duration::days(i64::from(max));
        match expiry {
            None => {
                return Err(Error::invalid(
                    Code::ExpiryRequired,
                    format!("This workspace requires every key to expire within {max} days"),
                ));
            }
            Some(at) if at > limit => {
                return Err(Error::invalid(
                    Code::ExpiryTooLate,
                    format!("Key lifetime exceeds the workspace maximum of {max} days"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// An edit may only bring the expiry closer.
fn shorten_expiry(
    current: Option<DateTime<Utc>>,
    wanted: Option<DateTime<Utc>>,
    policy: &KeyPolicy,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let shortens = match (current, wanted) {
        (_, None) => current.is_none(),
        (None, Some(_)) => true,
        (Some(c), Some(w)) => w <= c,
    };
    if !shortens {
        return Err(Error::invalid(
            Code::ExpiryExtension,
            "An API key's expiry can only be brought forward; create a new key for a longer lifetime",
        ));
    }
    if wanted == current {
        return Ok(current);
    }
    check_expiry(wanted, policy, now)?;
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn publishable_keys_hold_only_public_permissions() {
        let mut ws = Workspace::new("w", now()).unwrap();
        ws.public_permissions = vec![crate::scope::Permission::new("events", "create")];
        let draft = |scopes: &[&str], origins: &[&str]| KeyDraft {
            name: Some("pk".into()),
            key_type: Some(KeyType::Publishable),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(draft(&["events:create"], &["https://shop.example.com"]).validate(&ws, now()).is_ok());
        assert_eq!(draft(&["read"], &["https://a.com"]).validate(&ws, now()).unwrap_err().code, Code::NotPublic);
        assert_eq!(
            draft(&["events:delete"], &["https://a.com"]).validate(&ws, now()).unwrap_err().code,
            Code::NotPublic
        );
        assert_eq!(draft(&["events:create"], &[]).validate(&ws, now()).unwrap_err().code, Code::OriginsRequired);
        assert_eq!(draft(&[], &["not an origin"]).validate(&ws, now()).unwrap_err().code, Code::InvalidOrigin);
    }

    #[test]
    fn names() {
        assert_eq!(validate_name(None).unwrap_err().message, "API key name is required");
        assert_eq!(validate_name(Some("  ")).unwrap_err().message, "API key name is required");
        assert_eq!(validate_name(Some(&"x".repeat(101))).unwrap_err().code, Code::NameTooLong);
        assert_eq!(validate_name(Some(" ok ")).unwrap(), "ok");
        assert_eq!(validate_name(Some(&"é".repeat(100))).unwrap().chars().count(), 100);
    }

    #[test]
    fn expiry_rules() {
        let p = KeyPolicy::default();
        assert_eq!(resolve_expiry(None, None, &p, now()).unwrap(), None);
        assert_eq!(resolve_expiry(None, Some(30), &p, now()).unwrap(), Some(now() + Duration::days(30)));
        assert!(resolve_expiry(Some(now()), None, &p, now()).is_err());
        assert!(resolve_expiry(None, Some(0), &p, now()).is_err());
        assert!(resolve_expiry(Some(now() + Duration::days(1)), Some(1), &p, now()).is_err());
        let strict = KeyPolicy { default_key_lifetime_days: Some(365), max_key_lifetime_days: Some(400), ..p };
        assert_eq!(resolve_expiry(None, None, &strict, now()).unwrap(), Some(now() + Duration::days(365)));
        assert_eq!(resolve_expiry(None, Some(401), &strict, now()).unwrap_err().code, Code::ExpiryTooLate);
        let no_default = KeyPolicy { max_key_lifetime_days: Some(10), ..p };
        assert_eq!(resolve_expiry(None, None, &no_default, now()).unwrap_err().code, Code::ExpiryRequired);
    }

    #[test]
    fn expiry_can_only_shorten() {
        let p = KeyPolicy::default();
        let d = |n| Some(now() + Duration::days(n));
        assert_eq!(shorten_expiry(None, d(5), &p, now()).unwrap(), d(5));
        assert_eq!(shorten_expiry(d(5), d(3), &p, now()).unwrap(), d(3));
        assert!(shorten_expiry(d(5), d(6), &p, now()).is_err());
        assert!(shorten_expiry(d(5), None, &p, now()).is_err());
        assert!(shorten_expiry(d(5), Some(now()), &p, now()).is_err());
    }

    #[test]
    fn metadata_and_resources() {
        assert!(validate_metadata(serde_json::json!({"email": "a@b.c"})).is_ok());
        assert!(validate_metadata(serde_json::json!([1])).is_err());
        let big = serde_json::json!({"x": "y".repeat(MAX_METADATA_BYTES)});
        assert_eq!(validate_metadata(big).unwrap_err().code, Code::MetadataTooLarge);
        assert_eq!(validate_resources(vec!["site_a".into(), "site_a".into()]).unwrap().len(), 1);
        assert!(validate_resources(vec!["bad site".into()]).is_err());
    }
}
