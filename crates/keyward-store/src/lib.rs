//! keyward's storage: one [`Store`] trait, one implementation per backend.
//!
//! Only this crate speaks SQL. Callers see domain types from
//! `keyward-core` and [`StoreError`]; driver errors are mapped here.
//!
//! - [`sqlite`]: the embedded default (WAL, foreign keys, one writer
//!   connection and a pool of readers).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use keyward_core::key::{ApiKey, KeyState};
use keyward_core::workspace::Workspace;

pub mod sqlite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// A live key of the workspace already has this name.
    KeyName,
    /// A key with this id already exists.
    KeyId,
    /// A key with this (imported) secret already exists.
    ImportedSecret,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record not found")]
    NotFound,
    #[error("unique constraint violated: {0:?}")]
    Conflict(Unique),
    #[error("the record changed since it was read")]
    VersionMismatch,
    #[error("the workspace key limit is reached")]
    LimitReached,
    #[error("storage failure: {0}")]
    Backend(String),
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

/// Verifications of one key, accumulated in memory and flushed in batches.
#[derive(Debug, Clone)]
pub struct UsageDelta {
    pub key_id: Arc<str>,
    pub day: NaiveDate,
    pub count: u64,
    pub last_used_at: DateTime<Utc>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// Stores `value` under `name` unless a value is there; returns the
    /// value that is stored afterwards.
    async fn meta_get_or_set(&self, name: &str, value: &str) -> Result<String>;

    async fn count_workspaces(&self) -> Result<u64>;
    async fn insert_workspace(&self, workspace: &Workspace) -> Result<()>;
    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>>;
    async fn update_workspace(&self, workspace: &Workspace) -> Result<()>;

    /// Inserts a key. With `max_live_keys`, refuses with
    /// [`StoreError::LimitReached`] when the workspace already holds that
    /// many live keys, atomically with the insert.
    async fn insert_key(&self, key: &ApiKey, max_live_keys: Option<u32>) -> Result<()>;
    /// Inserts many keys in few transactions, without limit checks (seeding).
    async fn insert_keys_bulk(&self, keys: &[ApiKey]) -> Result<()>;
    /// A key of one workspace.
    async fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<ApiKey>>;
    /// A key by id alone: verification does not know the workspace yet.
    async fn find_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// An imported key whose stored lookup hash is one of `digests`.
    async fn find_key_by_lookup_hash(&self, digests: &[[u8; 32]]) -> Result<Option<ApiKey>>;
    /// Every distinct import prefix, so unknown formats are refused early.
    async fn list_lookup_prefixes(&self) -> Result<Vec<String>>;
    async fn list_keys(&self, workspace_id: &str, filter: &KeyFilter, page: Page) -> Result<KeyPage>;
    /// Writes `key` if the stored version is still `expected_version`.
    async fn update_key(&self, key: &ApiKey, expected_version: i64) -> Result<()>;
    /// Deletes a key of a workspace if its version is still `expected_version`.
    async fn delete_key(&self, workspace_id: &str, id: &str, expected_version: i64) -> Result<()>;

    /// Adds usage counts and moves `last_used_at` forward; deltas of keys
    /// deleted meanwhile are dropped.
    async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<()>;
    /// Per-day counts of a key since `since` (inclusive), oldest first.
    async fn key_usage(&self, key_id: &str, since: NaiveDate) -> Result<Vec<(NaiveDate, u64)>>;
}

/// Opens the store a URL names. `sqlite:` URLs (and bare paths ending in
/// `.db`) open SQLite; anything else is refused with a clear message.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Err(StoreError::Backend("PostgreSQL support is not built into this keyward yet; use a sqlite: URL".into()))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database URL scheme in {:?}: expected sqlite:",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
