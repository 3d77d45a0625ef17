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
        // A connection to a file does not go stale: no ping before each
        // use (a round trip to the connection's thread, as long as the query).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await.map_err(migration_error)?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(settings.pool_size.max(1))
                .test_before_acquire(false)
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
            audit_heads: Default::default(),
        });
        let committer = Committer::start(pools.clone());
        Ok(Self { pools, committer })
    }
}

/// The database file a `sqlite:` URL names.
pub fn database_path(url: &str) -> Result<std::path::PathBuf> {
    let options =
        SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Backend(format!("invalid SQLite URL: {e}")))?;
    Ok(options.get_filename().to_path_buf())
}

/// Reads a `meta` value from a keyward SQLite backup, checking on the way
/// that the file is one (its tables and migrations).
pub async fn backup_meta(backup: &std::path::Path, name: &str) -> Result<Option<String>> {
    if !backup.is_file() {
        return Err(StoreError::Backend(format!("{} is not a file", backup.display())));
    }
    let options = SqliteConnectOptions::new().filename(backup).read_only(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(classify)?;
    let not_keyward = |_| StoreError::Backend(format!("{} is not a keyward SQLite database", backup.display()));
    sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.map_err(not_keyward)?;
    let value = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?1")
        .bind(name)
        .fetch_optional(&pool)
        .await
        .map_err(not_keyward)?;
    pool.close().await;
    Ok(value)
}

/// Replaces the database `url` names with the backup file: copied beside
/// it, synced, then renamed over it (its old write-ahead log removed), so a
/// crash leaves the old database or the new one. keyward must be stopped.
pub fn replace_database(url: &str, backup: &std::path::Path) -> Result<std::path::PathBuf> {
    let target = database_path(url)?;
    let io = |what: &str, e: std::io::Error| StoreError::Backend(format!("{what}: {e}"));
    let tmp = target.with_extension("db.restoring");
    std::fs::copy(backup, &tmp).map_err(|e| io("copying the backup", e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io("syncing the copy", e))?;
    for suffix in ["-wal", "-shm"] {
        let side = std::path::PathBuf::from(format!("{}{suffix}", target.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(|e| io("removing the old write-ahead log", e))?;
        }
    }
    std::fs::rename(&tmp, &target).map_err(|e| io("putting the copy in place", e))?;
    Ok(target)
}

/// SQLite names the columns of a violated unique index, not the index:
/// map them to the index names the schema gives.
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let msg = db.message();
            let constraint = if msg.contains("api_keys.workspace_id, api_keys.name") {
                "api_keys_live_name"
            } else if msg.contains("identities.workspace_id, identities.external_id") {
                "identities_external_id"
            } else if msg.contains("roles.workspace_id, roles.name") {
                "roles_name"
            } else if msg.contains("pgp_keys.workspace_id, pgp_keys.name") {
                "pgp_keys_name"
            } else if msg.contains("members.email") {
                "members_email_unique"
            } else if msg.contains("memberships.workspace_id, memberships.member_id") {
                "memberships_pk"
            } else if msg.contains("workspaces.site_id") {
                "workspaces_site_id"
            } else if msg.contains("integrations.workspace_id") {
                "integrations_pkey"
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

crate::people::people_impl!(SqliteStore, Sqlite);
crate::access::access_impl!(SqliteStore, Sqlite);
crate::audit::audit_impl!(SqliteStore, Sqlite);
crate::oauth::oauth_impl!(SqliteStore, Sqlite);
crate::pgp::pgp_impl!(SqliteStore, Sqlite);
crate::integrations::integrations_impl!(SqliteStore, Sqlite);
crate::webhooks::webhooks_impl!(SqliteStore, Sqlite);
crate::idempotency::idempotency_impl!(SqliteStore, Sqlite);

store_impl!(SqliteStore, Sqlite, {
    async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        if path.exists() {
            return Err(StoreError::Backend(format!("{} already exists; name a new file", path.display())));
        }
        let target = path.to_str().ok_or_else(|| StoreError::Backend("the backup path is not UTF-8".into()))?;
        // A read transaction of its own: a consistent snapshot while the
        // server goes on writing.
        sqlx::query("VACUUM INTO ?1").bind(target).execute(&self.pools.reader).await.map_err(classify)?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pools.writer).await.map_err(classify)?;
        Ok(())
    }
});
