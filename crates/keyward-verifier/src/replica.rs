//! The replication stream's wire format (`GET /v1/replication/stream`):
//! JSON lines, each an [`Event`]. The server writes them from its keys; an
//! embedded verifier reads them into [`KeyRecord`]s. Records carry replica
//! digests ([`keyward_core::key::ApiKey::replica`]), never a secret or a
//! key of the server's.

use chrono::{DateTime, Utc};
use keyward_core::credits::Credits;
use keyward_core::hash::{HashScheme, SecretHash, hex, parse_hex32};
use keyward_core::key::{ApiKey, GraceSecret, KeyState, KeyType};
use keyward_core::member::Role;
use keyward_core::origin::{OriginPattern, parse_ip_range};
use keyward_core::route::RouteScope;
use keyward_core::scope::{Flags, Scope};
use keyward_core::token::Environment;
use serde::{Deserialize, Serialize};

use crate::record::{Interner, KeyRecord};

/// One line of the stream. Every event carries the sequence number it
/// brings the subscriber to; a subscriber resumes with `?after=` the last
/// one it applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A snapshot begins: forget everything held; the workspaces and keys
    /// up to [`Event::SnapshotEnd`] are the whole state as of `seq`.
    Snapshot { seq: u64 },
    /// A workspace's replica key, route scopes and roles (in a snapshot, or
    /// after they changed).
    Workspace { seq: u64, workspace: ReplicaWorkspace },
    /// A key's state: its record, or `"state": "deleted"` without one.
    Key {
        seq: u64,
        id: String,
        workspace_id: String,
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<Box<ReplicaKey>>,
    },
    /// The snapshot is complete.
    SnapshotEnd { seq: u64 },
    /// Nothing changed; the stream is alive (sent every second).
    Heartbeat { seq: u64 },
}

impl Event {
    pub fn seq(&self) -> u64 {
        match self {
            Event::Snapshot { seq }
            | Event::Workspace { seq, .. }
            | Event::Key { seq, .. }
            | Event::SnapshotEnd { seq }
            | Event::Heartbeat { seq } => *seq,
        }
    }

    /// The event telling that `key` is now as given (`None`: deleted).
    pub fn key(seq: u64, id: &str, workspace_id: &str, key: Option<&ApiKey>) -> Self {
        Event::Key {
            seq,
            id: id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            state: key.map_or("deleted", |k| k.state.as_str()).to_owned(),
            record: key.map(|k| Box::new(ReplicaKey::of(k))),
        }
    }
}

/// What a verifier needs of a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaWorkspace {
    pub id: String,
    /// The key of this workspace's replica digests, hexadecimal.
    pub replica_key: String,
    pub routes: Vec<ReplicaRoute>,
    pub roles: Vec<ReplicaRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaRoute {
    pub method: String,
    pub path: String,
    pub permission: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaRole {
    pub name: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ReplicaWorkspace {
    pub fn new(id: &str, replica_key: &[u8; 32], routes: &[RouteScope], roles: &[Role]) -> Self {
        ReplicaWorkspace {
            id: id.to_owned(),
            replica_key: hex(replica_key),
            routes: routes
                .iter()
                .map(|r| ReplicaRoute {
                    method: r.method.clone(),
                    path: r.path.clone(),
                    permission: r.permission.to_string(),
                })
                .collect(),
            roles: roles
                .iter()
                .map(|r| ReplicaRole { name: r.name.clone(), permissions: r.permissions.clone(), tags: r.tags.clone() })
                .collect(),
        }
    }

    pub fn key(&self) -> Result<[u8; 32], Malformed> {
        parse_hex32(&self.replica_key).ok_or(Malformed("replica_key"))
    }

    pub fn route_scopes(&self) -> Result<Vec<RouteScope>, Malformed> {
        self.routes
            .iter()
            .map(|r| RouteScope::parse(&r.method, &r.path, &r.permission).map_err(|_| Malformed("routes")))
            .collect()
    }

    pub fn roles(&self) -> Vec<Role> {
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        self.roles
            .iter()
            .map(|r| Role {
                id: String::new(),
                workspace_id: self.id.clone(),
                name: r.name.clone(),
                description: None,
                permissions: r.permissions.clone(),
                tags: r.tags.clone(),
                created_at: epoch,
                updated_at: epoch,
            })
            .collect()
    }
}

/// A key as replicated: what [`crate::decide`] needs, with its replica
/// digests in place of the server's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaKey {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: String,
    pub environment: String,
    pub state: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub administrator: bool,
    #[serde(default)]
    pub account_administrator: bool,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub hash_scheme: String,
    /// The replica digest of its secret, hexadecimal; `None`: the key can
    /// be checked only by the server.
    pub digest: Option<String>,
    pub grace: Option<ReplicaGrace>,
    /// Credits, rate limits, an identity's shared limits or a foreign
    /// token: only the server decides exactly.
    pub remote: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaGrace {
    pub digest: String,
    pub until: DateTime<Utc>,
}

/// A field of an event that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed replication event: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

impl ReplicaKey {
    pub fn of(key: &ApiKey) -> Self {
        let remote = key.credits.is_some()
            || !key.ratelimits.is_empty()
            || key.identity.is_some()
            || key.lookup_prefix.is_some()
            || key.replica.is_none();
        ReplicaKey {
            id: key.id.to_string(),
            workspace_id: key.workspace_id.clone(),
            name: key.name.clone(),
            key_type: key.key_type.as_str().to_owned(),
            environment: key.environment.as_str().to_owned(),
            state: key.state.as_str().to_owned(),
            scopes: key.scopes.iter().map(ToString::to_string).collect(),
            read_only: key.flags.read_only,
            administrator: key.flags.administrator,
            account_administrator: key.flags.account_administrator,
            resources: key.resources.clone(),
            allowed_origins: key.allowed_origins.iter().map(|o| o.as_str().to_owned()).collect(),
            allowed_ips: key.allowed_ips.iter().map(ToString::to_string).collect(),
            roles: key.roles.clone(),
            metadata: key.metadata.clone(),
            expires_at: key.expires_at,
            version: key.version,
            hash_scheme: key.secret.scheme.as_str().to_owned(),
            digest: key.replica.map(|d| hex(&d)),
            grace: key.grace.and_then(|g| Some(ReplicaGrace { digest: hex(&g.replica?), until: g.until })),
            remote,
        }
    }

    /// The verifier's record of this key (its secret the replica digest),
    /// or why the event cannot be used.
    pub fn record(&self, interner: &Interner) -> Result<KeyRecord, Malformed> {
        let digest = |hex: &str| parse_hex32(hex).ok_or(Malformed("digest"));
        let scheme = HashScheme::parse(&self.hash_scheme).ok_or(Malformed("hash_scheme"))?;
        let secret = SecretHash { scheme, digest: self.digest.as_deref().map_or(Ok([0; 32]), digest)? };
        let key = ApiKey {
            id: self.id.as_str().into(),
            workspace_id: self.workspace_id.clone(),
            name: self.name.clone(),
            description: None,
            key_type: KeyType::parse(&self.key_type).ok_or(Malformed("type"))?,
            environment: Environment::parse(&self.environment).ok_or(Malformed("environment"))?,
            masked: String::new(),
            scopes: self.scopes.iter().map(|s| Scope::parse(s).ok_or(Malformed("scopes"))).collect::<Result<_, _>>()?,
            flags: Flags {
                read_only: self.read_only,
                administrator: self.administrator,
                account_administrator: self.account_administrator,
            },
            resources: self.resources.clone(),
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| OriginPattern::parse(o).map_err(|_| Malformed("allowed_origins")))
                .collect::<Result<_, _>>()?,
            allowed_ips: self
                .allowed_ips
                .iter()
                .map(|r| parse_ip_range(r).map_err(|_| Malformed("allowed_ips")))
                .collect::<Result<_, _>>()?,
            metadata: match &self.metadata {
                serde_json::Value::Null => serde_json::Value::Object(Default::default()),
                v @ serde_json::Value::Object(_) => v.clone(),
                _ => return Err(Malformed("metadata")),
            },
            state: KeyState::parse(&self.state).ok_or(Malformed("state"))?,
            legacy: false,
            lookup_prefix: None,
            secret,
            replica: self.digest.as_ref().map(|_| secret.digest),
            grace: match &self.grace {
                Some(g) => Some(GraceSecret {
                    hash: SecretHash { scheme, digest: digest(&g.digest)? },
                    until: g.until,
                    replica: None,
                }),
                None => None,
            },
            expires_at: self.expires_at,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            last_used_at: None,
            revoked_at: None,
            version: self.version,
            credits: None::<Credits>,
            ratelimits: Vec::new(),
            identity: None,
            roles: self.roles.clone(),
            recoverable: false,
            client_id: None,
            grace_client_id: None,
        };
        Ok(KeyRecord::new(&key, interner))
    }
}
