//! keyward's storage: one [`Store`] trait, one implementation per backend.
//!
//! Only this crate speaks SQL. Callers see domain types from
//! `keyward-core` and [`StoreError`]; driver errors are mapped here.
//!
//! - [`sqlite`]: the embedded default (WAL, foreign keys, one writer
//!   connection and a pool of readers).
//! - [`postgres`]: for several nodes on one database.
//!
//! Both are one body of code (`backend.rs`), instantiated per driver; only
//! opening, error classification and a few dialect details differ.
//!
//! **The write seam.** Every mutation is a [`Change`]: a list of
//! [`Write`]s that commit together or not at all ([`Store::commit`]).
//! Concurrent changes are grouped into one transaction (group commit), each
//! under its own savepoint, so one fsync serves many acknowledged writes.

use std::sync::Arc;

pub use access::{Access, AccessWrite, SealedKind};
use async_trait::async_trait;
pub use audit::{Audit, AuditFilter, AuditWrite, Rollup};
use chrono::{DateTime, Utc};
pub use idempotency::{Idempotency, IdempotencyWrite};
pub use integrations::{Integrations, IntegrationsWrite};
use keyward_core::credits::{CreditOp, Credits};
use keyward_core::identity::Identity;
use keyward_core::key::{ApiKey, KeyState};
use keyward_core::workspace::Workspace;
pub use oauth::{OAuth, OAuthWrite};
pub use people::{People, PeopleWrite};
pub use pgp::{Pgp, PgpWrite};
/// What a write tells every node's caches (sent to the other nodes; the
/// committing node applies it itself).
pub use sql::invalidations;
pub use webhooks::{Webhooks, WebhooksWrite};

pub mod access;
pub mod audit;
mod backend;
mod group;
pub mod idempotency;
pub mod integrations;
pub mod oauth;
pub mod people;
pub mod pgp;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod testing;
pub mod webhooks;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// A live key of the workspace already has this name.
    KeyName,
    /// A key with this id already exists.
    KeyId,
    /// A key with this (imported) secret already exists.
    ImportedSecret,
    /// An identity of the workspace already has this external id.
    IdentityExternalId,
    /// A member with this email already exists.
    MemberEmail,
    /// The member already belongs to the workspace.
    Membership,
    /// The workspace has a role of this name.
    RoleName,
    /// The workspace has a PGP key of this name.
    PgpKeyName,
    /// Another workspace has this site id.
    SiteId,
    /// The workspace's integration credentials exist already.
    Integrations,
    /// Another request's change holds this `Idempotency-Key`.
    IdempotencyKey,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("record not found")]
    NotFound,
    #[error("unique constraint violated: {0:?}")]
    Conflict(Unique),
    #[error("the record changed since it was read")]
    VersionMismatch,
    #[error("the workspace key limit is reached")]
    LimitReached,
    /// The record is still referenced (an identity with live keys).
    #[error("the record is still in use")]
    InUse,
    /// The change would leave a workspace without an owner.
    #[error("the workspace would have no owner")]
    LastOwner,
    #[error("storage failure: {0}")]
    Backend(String),
    /// The database cannot be reached (connection refused or lost, pool
    /// exhausted): retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database gave up on the transaction to resolve a conflict with
    /// another (deadlock, serialization): nothing was written; the
    /// committer tries such changes again before reporting this.
    #[error("transaction conflict: {0}")]
    Contention(String),
}

/// What another node changed, as pushed to this node (PostgreSQL
/// LISTEN/NOTIFY) so it can drop what it holds in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A key was inserted or changed.
    Key(String),
    /// A key was deleted (its workspace said: nothing of it is left to read).
    KeyDeleted { workspace_id: String, id: String },
    /// A workspace's settings changed.
    Workspace(String),
    /// An identity was inserted, changed or deleted.
    Identity(String),
    /// A key with an import prefix was inserted: reload the prefixes.
    ImportPrefixes,
    /// An access token was revoked (by its `jti`).
    AccessTokenRevoked(String),
    /// A signing key was added or retired: reload them.
    SigningKeys,
    /// The channel dropped and came back: notices may have been lost, so
    /// everything held in memory is suspect.
    Resync,
}

/// One write of a [`Change`].
#[derive(Debug, Clone)]
pub enum Write {
    InsertWorkspace(Workspace),
    UpdateWorkspace(Workspace),
    /// With `max_live_keys`, refused with [`StoreError::LimitReached`] when
    /// the workspace already holds that many live keys (atomic with the
    /// insert, across nodes).
    InsertKey {
        key: ApiKey,
        max_live_keys: Option<u32>,
    },
    /// Refused with [`StoreError::VersionMismatch`] unless the stored
    /// version is still `expected_version`.
    UpdateKey {
        key: ApiKey,
        expected_version: i64,
    },
    DeleteKey {
        workspace_id: String,
        id: String,
        expected_version: i64,
    },
    /// Sets a key's credits (remaining and refill; `None`: unlimited), as of
    /// `at` (the refill schedule counts from there).
    SetCredits {
        workspace_id: String,
        key_id: String,
        credits: Option<Credits>,
        at: DateTime<Utc>,
    },
    /// Changes the remaining credits of a key that has credits
    /// ([`StoreError::NotFound`] otherwise).
    ChangeCredits {
        workspace_id: String,
        key_id: String,
        op: CreditOp,
        value: i64,
    },
    /// Locks an active key (too many wrong secrets); [`StoreError::NotFound`]
    /// when it is not (or no longer) active, so the change (and its audit
    /// entry) is undone.
    LockKey {
        key_id: String,
        at: DateTime<Utc>,
    },
    /// Refused with [`StoreError::Conflict`] when the external id is taken.
    InsertIdentity(Identity),
    /// Refused with [`StoreError::VersionMismatch`] unless the stored
    /// version is still `expected_version`.
    UpdateIdentity {
        identity: Identity,
        expected_version: i64,
    },
    /// Refused with [`StoreError::InUse`] while a live (not revoked) key
    /// belongs to it; revoked keys are detached.
    DeleteIdentity {
        workspace_id: String,
        id: String,
    },
    /// Claims a one-time marker: [`StoreError::Conflict`] when `name` is
    /// already set (bootstrap runs once, however many nodes start at once).
    InsertMeta {
        name: String,
        value: String,
    },
    /// Members, memberships, sessions, invitations.
    People(people::PeopleWrite),
    /// Custom roles and sealed secrets.
    Access(access::AccessWrite),
    /// Appends an entry to its workspace's audit chain.
    Audit(audit::AuditWrite),
    /// Signing keys, refresh tokens, revoked access tokens.
    OAuth(oauth::OAuthWrite),
    /// OpenPGP keys for file encryption.
    Pgp(pgp::PgpWrite),
    /// A workspace's integration credentials.
    Integrations(integrations::IntegrationsWrite),
    /// Webhook endpoints, their secrets, and the outbox.
    Webhooks(webhooks::WebhooksWrite),
    /// Marks a request's idempotency key committed with its change.
    Idempotency(idempotency::IdempotencyWrite),
}

/// Writes that commit together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub writes: Vec<Write>,
}

impl Change {
    pub fn new() -> Self {
        Change::default()
    }

    pub fn of(write: Write) -> Self {
        Change { writes: vec![write] }
    }

    pub fn push(&mut self, write: Write) -> &mut Self {
        self.writes.push(write);
        self
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Filters for listing keys; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub state: Option<KeyState>,
    pub key_type: Option<keyward_core::key::KeyType>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
}

/// Newest first. `after` is the cursor of the previous page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub after: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct KeyPage {
    pub keys: Vec<ApiKey>,
    pub next_cursor: Option<i64>,
}

/// What spending credits did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditSpend {
    /// Spent; this many are left.
    Spent { remaining: i64 },
    /// Not enough left (nothing spent).
    Exhausted { remaining: i64 },
    /// The key has no credits (or no longer exists).
    Unlimited,
}

/// Verifications of one key in one UTC hour, by outcome code, accumulated
/// in memory and flushed in batches.
#[derive(Debug, Clone)]
pub struct UsageDelta {
    pub key_id: Arc<str>,
    /// Any time within the hour.
    pub hour: DateTime<Utc>,
    pub counts: Vec<(&'static str, u64)>,
    /// The latest authenticated use, if any.
    pub last_used_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Store:
    people::People
    + access::Access
    + audit::Audit
    + oauth::OAuth
    + pgp::Pgp
    + integrations::Integrations
    + webhooks::Webhooks
    + idempotency::Idempotency
    + Send
    + Sync
    + 'static
{
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// Changes made by other nodes sharing the database, as they commit.
    /// `None` for a store no other node can write (SQLite).
    async fn watch(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Invalidation>> {
        None
    }

    /// Stores `value` under `name` unless a value is there; returns the
    /// value that is stored afterwards.
    async fn meta_get_or_set(&self, name: &str, value: &str) -> Result<String>;

    /// Commits every write of `change` in one transaction, or none of them.
    /// Acknowledged means durable.
    async fn commit(&self, change: Change) -> Result<()>;

    /// Writes a consistent copy of the whole database to the new file
    /// `path`, online (SQLite; PostgreSQL answers with the pg_dump to run).
    async fn backup_to(&self, path: &std::path::Path) -> Result<()>;

    /// Folds the write-ahead log into the database file, so that the file
    /// alone holds everything (SQLite, at a clean shutdown).
    async fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    /// The newest migration applied to the database.
    async fn schema_version(&self) -> Result<i64>;

    async fn count_workspaces(&self) -> Result<u64>;
    async fn count_keys(&self) -> Result<u64>;
    /// Live (not revoked) keys of one workspace.
    async fn count_live_keys(&self, workspace_id: &str) -> Result<u64>;
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>>;

    /// Inserts many keys in few transactions, without limit checks (seeding).
    async fn insert_keys_bulk(&self, keys: &[ApiKey]) -> Result<()>;
    /// A key of one workspace.
    async fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<ApiKey>>;
    /// A key by id alone: verification does not know the workspace yet.
    async fn find_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// The `client` key whose consumer key (or, during a grace period, the
    /// one before it) is `client_id`.
    async fn find_key_by_client_id(&self, client_id: &str) -> Result<Option<ApiKey>>;
    /// An imported key whose stored lookup hash is one of `digests`.
    async fn find_key_by_lookup_hash(&self, digests: &[[u8; 32]]) -> Result<Option<ApiKey>>;
    /// Every distinct import prefix, so unknown formats are refused early.
    async fn list_lookup_prefixes(&self) -> Result<Vec<String>>;
    async fn list_keys(&self, workspace_id: &str, filter: &KeyFilter, page: Page) -> Result<KeyPage>;

    async fn get_identity(&self, workspace_id: &str, id: &str) -> Result<Option<Identity>>;
    /// An identity by id alone (verification).
    async fn find_identity(&self, id: &str) -> Result<Option<Identity>>;
    async fn identity_by_external_id(&self, workspace_id: &str, external_id: &str) -> Result<Option<Identity>>;
    /// Newest first; the cursor is the last row's sequence number.
    async fn list_identities(&self, workspace_id: &str, page: Page) -> Result<(Vec<Identity>, Option<i64>)>;

    /// Spends `cost` credits of a key, atomically (exact across nodes);
    /// first, when `refill` = (amount, start of the current period) and the
    /// last refill was before that start, sets the credits to the amount.
    async fn spend_credits(&self, key_id: &str, cost: i64, refill: Option<(i64, DateTime<Utc>)>)
    -> Result<CreditSpend>;

    /// Counts a wrong secret presented for an active key, in the window
    /// that began after `window_start`; the failures counted so far
    /// (`None`: the key is not active or does not exist). Across nodes.
    async fn count_failed_attempt(
        &self,
        key_id: &str,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>>;

    /// Adds usage counts to the hourly rollups and moves `last_used_at`
    /// forward; deltas of keys deleted meanwhile are dropped.
    async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<()>;
}

/// Settings for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections per node (PostgreSQL; SQLite's reader pool).
    pub pool_size: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { pool_size: 10 }
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Opens the store a URL names and applies its pending migrations:
/// `sqlite:` URLs open SQLite, `postgres://` and `postgresql://` PostgreSQL;
/// anything else is refused with a message naming the supported schemes.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, &StoreOptions::default()).await
}

pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url, options).await?))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database URL scheme {:?}: use sqlite: (the default), postgres:// or postgresql://",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn masks_passwords_only() {
        assert_eq!(mask_url("postgres://kw:s3cret@db:5432/kw"), "postgres://kw:***@db:5432/kw");
        assert_eq!(mask_url("postgres://kw@db/kw?sslmode=off"), "postgres://kw@db/kw?sslmode=off");
        assert_eq!(mask_url("sqlite:///tmp/k.db"), "sqlite:///tmp/k.db");
    }
}
