//! The compact verification record: what a decision about a key needs,
//! and what a verify answer reports, and nothing else.
//!
//! A stored [`ApiKey`] carries its description, masked form, timestamps and
//! parsed metadata; a verifier holding a million keys cannot afford them.
//! The record keeps the secret's hash, state, scopes, flags and expiry
//! inline, its metadata as JSON text, and everything most keys do not have
//! (roles, limits, credits, allowlists, a grace secret, an identity, a
//! client id) behind one optional box: a plain key costs one pointer for
//! all of it. Workspace ids and scope lists are shared between the records
//! that have the same ([`Interner`]): keys of a workspace mostly hold a few
//! distinct sets of scopes.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use ipnet::IpNet;
use keyward_core::credits::Credits;
use keyward_core::hash::SecretHash;
use keyward_core::key::{ApiKey, GraceSecret, KeyGrant, KeyIdentity, KeyState, KeyType};
use keyward_core::origin::OriginPattern;
use keyward_core::ratelimit::RateLimit;
use keyward_core::scope::{Flags, Scope};
use keyward_core::token::Environment;
use serde_json::value::RawValue;

/// A key as a verifier holds it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Inline (no allocation) up to 24 bytes, as keyward's key ids are.
    pub id: CompactString,
    pub workspace_id: Arc<str>,
    /// Inline up to 24 bytes.
    pub name: CompactString,
    pub key_type: KeyType,
    pub environment: Environment,
    pub state: KeyState,
    pub flags: Flags,
    pub legacy: bool,
    pub recoverable: bool,
    /// The stored key has a replica digest (embedded verifiers can check
    /// it); a server verifying one that has not makes it.
    pub replicated: bool,
    pub secret: SecretHash,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub scopes: Arc<[Scope]>,
    rare: Option<Box<Rare>>,
}

/// What few keys have.
#[derive(Debug, Clone, Default)]
struct Rare {
    /// The metadata object as JSON text; `None` when it is empty.
    metadata: Option<Box<RawValue>>,
    grace: Option<GraceSecret>,
    resources: Box<[String]>,
    allowed_origins: Box<[OriginPattern]>,
    allowed_ips: Box<[IpNet]>,
    credits: Option<Credits>,
    ratelimits: Box<[RateLimit]>,
    identity: Option<KeyIdentity>,
    roles: Box<[String]>,
    lookup_prefix: Option<Box<str>>,
    client_id: Option<Box<str>>,
    grace_client_id: Option<Box<str>>,
}

static EMPTY_OBJECT: LazyLock<Box<RawValue>> =
    LazyLock::new(|| RawValue::from_string("{}".to_owned()).expect("an empty object is JSON"));

impl KeyRecord {
    /// The record of `key`, its workspace id shared through `interner`.
    pub fn new(key: &ApiKey, interner: &Interner) -> Self {
        let metadata = match &key.metadata {
            serde_json::Value::Object(m) if m.is_empty() => None,
            v => serde_json::value::to_raw_value(v).ok(),
        };
        let rare = Rare {
            metadata,
            grace: key.grace,
            resources: key.resources.clone().into_boxed_slice(),
            allowed_origins: key.allowed_origins.clone().into_boxed_slice(),
            allowed_ips: key.allowed_ips.clone().into_boxed_slice(),
            credits: key.credits,
            ratelimits: key.ratelimits.clone().into_boxed_slice(),
            identity: key.identity.clone(),
            roles: key.roles.clone().into_boxed_slice(),
            lookup_prefix: key.lookup_prefix.as_deref().map(Box::from),
            client_id: key.client_id.as_deref().map(Box::from),
            grace_client_id: key.grace_client_id.as_deref().map(Box::from),
        };
        let is_plain = rare.metadata.is_none()
            && rare.grace.is_none()
            && rare.resources.is_empty()
            && rare.allowed_origins.is_empty()
            && rare.allowed_ips.is_empty()
            && rare.credits.is_none()
            && rare.ratelimits.is_empty()
            && rare.identity.is_none()
            && rare.roles.is_empty()
            && rare.lookup_prefix.is_none()
            && rare.client_id.is_none()
            && rare.grace_client_id.is_none();
        KeyRecord {
            id: CompactString::new(&key.id),
            workspace_id: interner.workspaces.share(&key.workspace_id),
            name: CompactString::new(&key.name),
            key_type: key.key_type,
            environment: key.environment,
            state: key.state,
            flags: key.flags,
            legacy: key.legacy,
            recoverable: key.recoverable,
            replicated: key.replica.is_some(),
            secret: key.secret,
            expires_at: key.expires_at,
            version: key.version,
            scopes: interner.scopes.share(&key.scopes),
            rare: (!is_plain).then(|| Box::new(rare)),
        }
    }

    /// The record of `key` on its own (no workspace id shared).
    pub fn of(key: &ApiKey) -> Self {
        Self::new(key, &Interner::default())
    }

    fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    /// The key's metadata object, as JSON text (`{}` when empty).
    pub fn metadata(&self) -> &RawValue {
        self.rare().and_then(|r| r.metadata.as_deref()).unwrap_or(&EMPTY_OBJECT)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// The previous secret of a rolled key, while its grace period lasts.
    pub fn grace(&self) -> Option<&GraceSecret> {
        self.rare()?.grace.as_ref()
    }

    /// Resource ids the key is limited to; empty = all.
    pub fn resources(&self) -> &[String] {
        self.rare().map_or(&[], |r| &r.resources)
    }

    pub fn allowed_origins(&self) -> &[OriginPattern] {
        self.rare().map_or(&[], |r| &r.allowed_origins)
    }

    pub fn allowed_ips(&self) -> &[IpNet] {
        self.rare().map_or(&[], |r| &r.allowed_ips)
    }

    pub fn credits(&self) -> Option<Credits> {
        self.rare()?.credits
    }

    pub fn ratelimits(&self) -> &[RateLimit] {
        self.rare().map_or(&[], |r| &r.ratelimits)
    }

    pub fn identity(&self) -> Option<&KeyIdentity> {
        self.rare()?.identity.as_ref()
    }

    /// Roles of the workspace the key holds.
    pub fn roles(&self) -> &[String] {
        self.rare().map_or(&[], |r| &r.roles)
    }

    /// The import prefix of a key whose token is not keyward's own format.
    pub fn lookup_prefix(&self) -> Option<&str> {
        self.rare()?.lookup_prefix.as_deref()
    }

    /// The consumer key of a `client` key.
    pub fn client_id(&self) -> Option<&str> {
        self.rare()?.client_id.as_deref()
    }

    /// The consumer key rolled away from, valid during the grace period.
    pub fn grace_client_id(&self) -> Option<&str> {
        self.rare()?.grace_client_id.as_deref()
    }

    /// The same key holding only `scopes`: no flags, no roles (what an
    /// access token narrowed to fewer permissions grants).
    pub fn narrowed(&self, scopes: Vec<Scope>) -> Self {
        let mut limited = self.clone();
        limited.scopes = scopes.into();
        limited.flags = Flags::default();
        if let Some(rare) = &mut limited.rare {
            rare.roles = Box::default();
        }
        limited
    }
}

impl KeyGrant for KeyRecord {
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
        KeyRecord::roles(self)
    }
    fn resources(&self) -> &[String] {
        KeyRecord::resources(self)
    }
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
    fn allowed_ips(&self) -> &[IpNet] {
        KeyRecord::allowed_ips(self)
    }
    fn allowed_origins(&self) -> &[OriginPattern] {
        KeyRecord::allowed_origins(self)
    }
}

/// One shared copy of each workspace id and each scope list.
#[derive(Debug, Default)]
pub struct Interner {
    workspaces: Shared<str>,
    scopes: Shared<[Scope]>,
}

/// Values shared by whoever holds an equal one. Bounded: when full, values
/// no record holds any more are dropped, and past that new values are not
/// shared (each record then holds its own copy).
#[derive(Debug)]
struct Shared<T: ?Sized> {
    values: Mutex<HashSet<Arc<T>>>,
}

impl<T: ?Sized> Default for Shared<T> {
    fn default() -> Self {
        Shared { values: Mutex::default() }
    }
}

/// Distinct values held at most (workspaces, or scope lists).
const MAX_SHARED: usize = 4096;

impl<T: ?Sized + Hash + Eq> Shared<T>
where
    Arc<T>: for<'a> From<&'a T>,
{
    fn share(&self, value: &T) -> Arc<T> {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = values.get(value) {
            return shared.clone();
        }
        let shared: Arc<T> = Arc::from(value);
        if values.len() >= MAX_SHARED {
            values.retain(|v| Arc::strong_count(v) > 1);
        }
        if values.len() < MAX_SHARED {
            values.insert(shared.clone());
        }
        shared
    }
}
