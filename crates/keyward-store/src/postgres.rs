//! The PostgreSQL store: several keyward nodes on one database.
//!
//! One pool per node (its size a setting); writes go through the group
//! committer like SQLite's. Migrations run under sqlx's advisory lock, so
//! nodes starting at once apply them once. Concurrent key inserts of one
//! workspace are ordered by a row lock on the workspace, which keeps the key
//! limit exact across nodes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Postgres};

use crate::backend::{Pools, migration_error, store_impl};
use crate::group::Committer;
use crate::sql::{Dialect, Statements, unique_by_constraint};
use crate::{Result, StoreError, StoreOptions};

pub struct PostgresStore {
    pools: Arc<Pools<Postgres>>,
    committer: Committer,
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &StoreOptions) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?
            .application_name("keyward");
        // One direct connection first, so that a wrong URL or an absent
        // server is reported with its cause (a pool only times out).
        sqlx::PgConnection::connect_with(&options).await.map_err(classify)?.close().await.map_err(classify)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await.map_err(migration_error)?;
        let pools =
            Arc::new(Pools { reader: pool.clone(), writer: pool, sql: Statements::new(Dialect::Postgres), classify });
        let committer = Committer::start(pools.clone());
        Ok(Self { pools, committer })
    }

    /// The pool, for LISTEN/NOTIFY and tests.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pools.writer
    }
}

/// SQLSTATE classes that mean "the server is not there right now".
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(unique_by_constraint(db.constraint().unwrap_or_default()))
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| is_unavailable_state(&c)) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

store_impl!(PostgresStore, Postgres);
