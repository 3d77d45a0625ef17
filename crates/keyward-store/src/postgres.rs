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
use crate::sql::{Dialect, Statements, notice_channel, parse_notice, unique_by_constraint};
use crate::{Invalidation, Result, StoreError, StoreOptions};

pub struct PostgresStore {
    pools: Arc<Pools<Postgres>>,
    committer: Committer,
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &StoreOptions) -> Result<Self> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        // `keyward` in pg_stat_activity, unless the URL names it otherwise.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name("keyward"),
        };
        // One direct connection first, so that a wrong URL or an absent
        // server is reported with its cause (a pool only times out).
        sqlx::PgConnection::connect_with(&options).await.map_err(classify)?.close().await.map_err(classify)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(2))
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(classify)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await.map_err(migration_error)?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool).await.map_err(classify)?;
        let pools = Arc::new(Pools {
            reader: pool.clone(),
            writer: pool,
            sql: Statements::new(Dialect::Postgres),
            classify,
            breaker: Default::default(),
            node: keyward_core::ids::random_base62(12),
            channel: notice_channel(&schema),
            audit_heads: Default::default(),
        });
        let committer = Committer::start(pools.clone());
        Ok(Self { pools, committer })
    }

    /// The pool, for tests.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pools.writer
    }

    /// Listens for other nodes' notices until the receiver is dropped. A
    /// dropped connection is re-established (retrying every second while
    /// the database is away) and then reported as [`Invalidation::Resync`].
    fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<Invalidation> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (pool, node, channel) = (self.pools.writer.clone(), self.pools.node.clone(), self.pools.channel.clone());
        let breaker = self.pools.breaker.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let listener = async {
                    let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    l.listen(&channel).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                let mut listener = match listener.await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "notice listener cannot connect; retrying");
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // Connected: the database answers again.
                breaker.close();
                if !first && tx.send(Invalidation::Resync).is_err() {
                    return;
                }
                first = false;
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        received = listener.try_recv() => match received {
                            Ok(Some(notice)) => {
                                if let Some(inv) = parse_notice(&node, notice.payload())
                                    && tx.send(inv).is_err()
                                {
                                    return;
                                }
                            }
                            // The connection dropped (and may have lost notices).
                            Ok(None) | Err(_) => {
                                tracing::warn!("notice listener lost its connection; resynchronising");
                                break;
                            }
                        },
                    }
                }
            }
        });
        rx
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
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001") => {
            StoreError::Contention(e.to_string())
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

crate::people::people_impl!(PostgresStore, Postgres);
crate::access::access_impl!(PostgresStore, Postgres);
crate::audit::audit_impl!(PostgresStore, Postgres);
crate::oauth::oauth_impl!(PostgresStore, Postgres);
crate::pgp::pgp_impl!(PostgresStore, Postgres);
crate::integrations::integrations_impl!(PostgresStore, Postgres);
crate::webhooks::webhooks_impl!(PostgresStore, Postgres);
crate::idempotency::idempotency_impl!(PostgresStore, Postgres);

store_impl!(PostgresStore, Postgres, {
    async fn watch(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Invalidation>> {
        Some(self.listen())
    }

    async fn backup_to(&self, _path: &std::path::Path) -> Result<()> {
        Err(StoreError::Backend(
            "keyward backup copies SQLite databases; for PostgreSQL run pg_dump --format=custom --file FILE 'URL' \
             (and pg_restore --clean --dbname 'URL' FILE to restore)"
                .into(),
        ))
    }
});
