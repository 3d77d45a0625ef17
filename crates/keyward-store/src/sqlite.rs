//! The SQLite store: the embedded default.
//!
//! WAL journal, foreign keys on, `synchronous=FULL` (an acknowledged write
//! survives power loss), one writer connection (SQLite allows one writer at
//! a time; a single connection avoids busy retries) and a pool of readers.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::backend::{Pools, migration_error, store_impl};
use crate::group::Committer;
use crate::sql::{Dialect, Statements, unique_by_constraint};
use crate::{Result, StoreError, StoreOptions};

pub struct SqliteStore {
    pools: Arc<Pools<Sqlite>>,
    committer: Committer,
}

impl SqliteStore {
    pub async fn open(url: &str, settings: &StoreOptions) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await.map_err(migration_error)?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(settings.pool_size.max(1))
                .connect_with(options.read_only(true))
                .await
                .map_err(classify)?
        };
        let pools = Arc::new(Pools {
            reader,
            writer,
            sql: Statements::new(Dialect::Sqlite),
            classify,
            breaker: Default::default(),
            node: String::new(),
            channel: String::new(),
        });
        let committer = Committer::start(pools.clone());
        Ok(Self { pools, committer })
    }
}

/// SQLite names the columns of a violated unique index, not the index:
/// map them to the index names the schema gives.
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let msg = db.message();
            let constraint = if msg.contains("api_keys.workspace_id, api_keys.name") {
                "api_keys_live_name"
            } else if msg.contains("api_keys.lookup_hash") {
                "api_keys_lookup_hash"
            } else if msg.contains("api_keys.id") {
                "api_keys_id_unique"
            } else {
                ""
            };
            StoreError::Conflict(unique_by_constraint(constraint))
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

store_impl!(SqliteStore, Sqlite);
