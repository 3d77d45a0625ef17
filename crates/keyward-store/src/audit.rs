//! The audit log and usage rollups: statements, rows and reads, expanded
//! per driver by [`audit_impl!`]. An entry is appended by
//! [`crate::Write::Audit`] inside the transaction of the action it records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use keyward_core::audit::{Actor, ActorKind, AuditKey, Entry, Event, Outcome, Target};

use crate::sql::{Dialect, corrupt};
use crate::{Page, Result};

/// An event to append to its workspace's chain, and the key that
/// authenticates it (held by the server, never stored).
#[derive(Debug, Clone)]
pub struct AuditWrite {
    pub event: Event,
    pub key: Arc<AuditKey>,
}

/// Filters for reading the log; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target_type: Option<String>,
    pub action: Option<String>,
    /// An actor id, or `system`.
    pub actor: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Verifications of one key in one UTC hour with one outcome code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    pub code: String,
    pub count: u64,
}

#[async_trait::async_trait]
pub trait Audit: Send + Sync {
    /// Newest first; the cursor is the last entry's sequence number.
    async fn list_audit(
        &self,
        workspace_id: &str,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<(Vec<Entry>, Option<i64>)>;
    /// Up to `limit` entries after `after_seq`, oldest first (walking the chain).
    async fn audit_chain(&self, workspace_id: &str, after_seq: i64, limit: u32) -> Result<Vec<Entry>>;
    /// The chain's newest sequence number and hash, as the head row says.
    async fn audit_head(&self, workspace_id: &str) -> Result<Option<(i64, [u8; 32])>>;
    /// Every workspace with a chain.
    async fn audit_workspaces(&self) -> Result<Vec<String>>;
    /// A key's rollups from `since` on, oldest first.
    async fn key_rollups(&self, key_id: &str, since: DateTime<Utc>) -> Result<Vec<Rollup>>;
    /// Per key of the workspace: successful verifications per UTC day
    /// (its start) since `since`, oldest first.
    async fn key_days(&self, workspace_id: &str, since: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>, u64)>>;
    /// Per key of the workspace: successful verifications per UTC hour of
    /// the day (0–23) since `since`.
    async fn key_hours(&self, workspace_id: &str, since: DateTime<Utc>) -> Result<Vec<(String, u32, u64)>>;
    /// Drops rollups older than `before`; how many.
    async fn prune_rollups(&self, before: DateTime<Utc>) -> Result<u64>;
}

const ENTRY_COLUMNS: &str = "workspace_id, seq, at, actor_type, actor_id, actor_name, action, target_type, \
     target_id, target_name, ip, user_agent, outcome, changes, prev_hash, hash, mac";

/// Per workspace, the sequence number and hash of the newest entry this
/// node appended (bounded by the number of workspaces).
pub type HeadCache = std::sync::Mutex<std::collections::HashMap<String, (i64, [u8; 32])>>;

pub struct AuditStatements {
    /// SQLite: a write that claims the write lock before the head is read
    /// (a transaction that reads first could not upgrade later).
    pub head_claim: Option<String>,
    /// Reads the head and holds it until the transaction ends (PostgreSQL:
    /// a row lock; SQLite: the write lock, claimed first).
    pub head_lock: String,
    pub head_init: String,
    pub insert: String,
    /// The insert, only while the head is still the entry it follows
    /// (PostgreSQL: waiting on, then rechecking, a concurrent append).
    pub insert_after: String,
    pub list: String,
    pub chain: String,
    pub head: String,
    pub workspaces: String,
    pub add_rollup: String,
    pub key_rollups: String,
    pub key_days: String,
    pub key_hours: String,
    pub prune: String,
}

impl AuditStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        let hour_of_day = match dialect {
            Dialect::Sqlite => "((hour / 3600) % 24)",
            Dialect::Postgres => "CAST((hour / 3600) % 24 AS BIGINT)",
        };
        AuditStatements {
            head_claim: (dialect == Dialect::Sqlite)
                .then(|| "UPDATE audit_heads SET seq = seq WHERE workspace_id = ?1".to_owned()),
            head_lock: r(&format!(
                "SELECT seq, hash FROM audit_heads WHERE workspace_id = $1{}",
                if dialect == Dialect::Postgres { " FOR UPDATE" } else { "" }
            )),
            head_init: r("INSERT INTO audit_heads (workspace_id, seq, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (workspace_id) DO NOTHING"),
            insert: r(&format!(
                "INSERT INTO audit_log ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17)"
            )),
            insert_after: {
                // PostgreSQL infers no types from a SELECT list: name them.
                let types = [
                    "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT",
                    "TEXT", "TEXT", "BYTEA", "BYTEA", "BYTEA",
                ];
                let values: Vec<String> = (1..=17)
                    .map(|n| match dialect {
                        Dialect::Postgres => format!("CAST(${n} AS {})", types[n - 1]),
                        Dialect::Sqlite => format!("?{n}"),
                    })
                    .collect();
                let lock = if dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
                r(&format!(
                    "INSERT INTO audit_log ({ENTRY_COLUMNS}) SELECT {} WHERE EXISTS (SELECT 1 FROM audit_heads \
                     WHERE workspace_id = $1 AND seq = $2 - 1 AND hash = $15{lock})",
                    values.join(", ")
                ))
            },
            list: r(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE workspace_id = $1 \
                 AND (CAST($2 AS TEXT) IS NULL OR target_type = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR action = $3) \
                 AND (CAST($4 AS TEXT) IS NULL OR actor_id = $4 OR actor_type = $4) \
                 AND (CAST($5 AS TEXT) IS NULL OR target_id = $5) \
                 AND (CAST($6 AS TEXT) IS NULL OR outcome = $6) \
                 AND at >= $7 AND at < $8 AND seq < $9 ORDER BY seq DESC LIMIT $10"
            )),
            chain: r(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_log WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            )),
            head: r("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1"),
            workspaces: "SELECT workspace_id FROM audit_heads ORDER BY workspace_id".to_owned(),
            add_rollup: r("INSERT INTO usage_rollups (workspace_id, key_id, hour, code, count) \
                 SELECT workspace_id, id, $2, $3, $4 FROM api_keys WHERE id = $1 \
                 ON CONFLICT (key_id, hour, code) DO UPDATE SET count = usage_rollups.count + excluded.count"),
            key_rollups: r("SELECT hour, code, count FROM usage_rollups WHERE key_id = $1 AND hour >= $2 \
                 ORDER BY hour, code"),
            key_days: r("SELECT key_id, CAST(hour / 86400 * 86400 AS BIGINT) AS day, CAST(SUM(count) AS BIGINT) \
                 FROM usage_rollups WHERE workspace_id = $1 AND hour >= $2 AND code = 'VALID' \
                 GROUP BY key_id, hour / 86400 ORDER BY day, key_id"),
            key_hours: r(&format!(
                "SELECT key_id, {hour_of_day}, CAST(SUM(count) AS BIGINT) FROM usage_rollups \
                 WHERE workspace_id = $1 AND hour >= $2 AND code = 'VALID' GROUP BY key_id, {hour_of_day}"
            )),
            prune: r("DELETE FROM usage_rollups WHERE hour < $1"),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct EntryRow {
    workspace_id: String,
    seq: i64,
    at: i64,
    actor_type: String,
    actor_id: Option<String>,
    actor_name: Option<String>,
    action: String,
    target_type: String,
    target_id: Option<String>,
    target_name: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    changes: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    mac: Vec<u8>,
}

impl EntryRow {
    /// The row as stored: a field edited in the database comes back as it
    /// now stands (the chain check names it); only unreadable values fail.
    pub fn into_entry(self) -> Result<Entry> {
        let bytes = |v: Vec<u8>| <[u8; 32]>::try_from(v).map_err(|_| corrupt("audit hash"));
        Ok(Entry {
            seq: self.seq,
            event: Event {
                workspace_id: self.workspace_id,
                at: DateTime::from_timestamp_millis(self.at).ok_or_else(|| corrupt("audit time"))?,
                actor: Actor {
                    kind: ActorKind::parse(&self.actor_type).ok_or_else(|| corrupt("audit actor"))?,
                    id: self.actor_id,
                    name: self.actor_name,
                },
                action: self.action,
                target: Target { kind: self.target_type, id: self.target_id, name: self.target_name },
                ip: self.ip,
                user_agent: self.user_agent,
                outcome: Outcome::parse(&self.outcome).ok_or_else(|| corrupt("audit outcome"))?,
                changes: self.changes,
            },
            prev_hash: bytes(self.prev_hash)?,
            hash: bytes(self.hash)?,
            mac: bytes(self.mac)?,
        })
    }
}

pub fn hash32(v: Vec<u8>) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(v).map_err(|_| corrupt("audit head"))
}

/// Binds an entry's 17 columns, in [`ENTRY_COLUMNS`] order.
macro_rules! bind_entry {
    ($q:expr, $entry:expr) => {{
        let entry: &keyward_core::audit::Entry = $entry;
        let e = &entry.event;
        $q.bind(&e.workspace_id)
            .bind(entry.seq)
            .bind(e.at_ms())
            .bind(e.actor.kind.as_str())
            .bind(&e.actor.id)
            .bind(&e.actor.name)
            .bind(&e.action)
            .bind(&e.target.kind)
            .bind(&e.target.id)
            .bind(&e.target.name)
            .bind(&e.ip)
            .bind(&e.user_agent)
            .bind(e.outcome.as_str())
            .bind(&e.changes)
            .bind(entry.prev_hash.to_vec())
            .bind(entry.hash.to_vec())
            .bind(entry.mac.to_vec())
    }};
}
pub(crate) use bind_entry;

/// `audit_impl!(Store, Driver)`.
macro_rules! audit_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            /// Appends an entry after its workspace's head, held until the
            /// transaction ends: one chain, in order. (The head follows the
            /// insert by trigger.)
            async fn apply_audit(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::audit::AuditWrite,
            ) -> $crate::Result<()> {
                let sql = &self.sql.audit;
                let ws = &write.event.workspace_id;
                let cached = self.audit_heads.lock().unwrap_or_else(|p| p.into_inner()).get(ws).copied();
                // Common case: this node appended the newest entry; one
                // statement appends the next while the head still says so.
                if let Some((seq, hash)) = cached {
                    let entry = keyward_core::audit::Entry::chain(seq, hash, write.event.clone(), &write.key);
                    let done = $crate::audit::bind_entry!(sqlx::query(&sql.insert_after), &entry)
                        .execute(&mut *conn)
                        .await
                        .map_err(self.classify)?;
                    if done.rows_affected() == 1 {
                        self.remember_head(ws, &entry);
                        return Ok(());
                    }
                }
                let genesis = keyward_core::audit::GENESIS.to_vec();
                if let Some(claim) = &sql.head_claim {
                    sqlx::query(claim).bind(ws).execute(&mut *conn).await.map_err(self.classify)?;
                }
                let mut head: Option<(i64, Vec<u8>)> =
                    sqlx::query_as(&sql.head_lock).bind(ws).fetch_optional(&mut *conn).await.map_err(self.classify)?;
                if head.is_none() {
                    sqlx::query(&sql.head_init)
                        .bind(ws)
                        .bind(&genesis)
                        .execute(&mut *conn)
                        .await
                        .map_err(self.classify)?;
                    head = sqlx::query_as(&sql.head_lock)
                        .bind(ws)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(self.classify)?;
                }
                let (seq, hash) = head.ok_or_else(|| $crate::sql::corrupt("audit head"))?;
                let entry = keyward_core::audit::Entry::chain(
                    seq,
                    $crate::audit::hash32(hash)?,
                    write.event.clone(),
                    &write.key,
                );
                $crate::audit::bind_entry!(sqlx::query(&sql.insert), &entry)
                    .execute(&mut *conn)
                    .await
                    .map_err(self.classify)?;
                self.remember_head(ws, &entry);
                Ok(())
            }
        }

        impl $crate::backend::Pools<$db> {
            /// Notes the entry just appended (if its transaction rolls back,
            /// the next append finds the head moved and reads it).
            fn remember_head(&self, ws: &str, entry: &keyward_core::audit::Entry) {
                let mut heads = self.audit_heads.lock().unwrap_or_else(|p| p.into_inner());
                heads.insert(ws.to_owned(), (entry.seq, entry.hash));
            }
        }

        #[async_trait::async_trait]
        impl $crate::audit::Audit for $store {
            async fn list_audit(
                &self,
                workspace_id: &str,
                filter: &$crate::audit::AuditFilter,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<keyward_core::audit::Entry>, Option<i64>)> {
                let p = &self.pools;
                let ms = |t: Option<chrono::DateTime<chrono::Utc>>, default: i64| t.map_or(default, $crate::sql::ms);
                let limit = i64::from(page.limit.max(1));
                let entries: $crate::Result<Vec<keyward_core::audit::Entry>> = $crate::backend::all_rows!(
                    p,
                    &p.sql.audit.list,
                    $crate::audit::EntryRow::into_entry,
                    workspace_id,
                    &filter.target_type,
                    &filter.action,
                    &filter.actor,
                    &filter.target,
                    filter.outcome.map(|o| o.as_str()),
                    ms(filter.from, i64::MIN),
                    ms(filter.to, i64::MAX),
                    page.after.unwrap_or(i64::MAX),
                    limit + 1,
                );
                Ok($crate::audit::paged(entries?, page.limit.max(1) as usize))
            }

            async fn audit_chain(
                &self,
                workspace_id: &str,
                after_seq: i64,
                limit: u32,
            ) -> $crate::Result<Vec<keyward_core::audit::Entry>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.audit.chain,
                    $crate::audit::EntryRow::into_entry,
                    workspace_id,
                    after_seq,
                    i64::from(limit)
                )
            }

            async fn audit_head(&self, workspace_id: &str) -> $crate::Result<Option<(i64, [u8; 32])>> {
                let p = &self.pools;
                let row: Option<(i64, Vec<u8>)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.audit.head).bind(workspace_id).fetch_optional(&p.reader)
                )?;
                row.map(|(seq, hash)| Ok((seq, $crate::audit::hash32(hash)?))).transpose()
            }

            async fn audit_workspaces(&self) -> $crate::Result<Vec<String>> {
                let p = &self.pools;
                $crate::backend::read_retry!(p, sqlx::query_scalar(&p.sql.audit.workspaces).fetch_all(&p.reader))
            }

            async fn key_rollups(
                &self,
                key_id: &str,
                since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<$crate::audit::Rollup>> {
                let p = &self.pools;
                let rows: Vec<(i64, String, i64)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.audit.key_rollups).bind(key_id).bind(since.timestamp()).fetch_all(&p.reader)
                )?;
                rows.into_iter()
                    .map(|(hour, code, count)| {
                        Ok($crate::audit::Rollup {
                            hour: $crate::audit::hour_time(hour)?,
                            code,
                            count: count.max(0) as u64,
                        })
                    })
                    .collect()
            }

            async fn key_days(
                &self,
                workspace_id: &str,
                since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<(String, chrono::DateTime<chrono::Utc>, u64)>> {
                let p = &self.pools;
                let rows: Vec<(String, i64, i64)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.audit.key_days)
                        .bind(workspace_id)
                        .bind(since.timestamp())
                        .fetch_all(&p.reader)
                )?;
                rows.into_iter().map(|(k, d, c)| Ok((k, $crate::audit::hour_time(d)?, c.max(0) as u64))).collect()
            }

            async fn key_hours(
                &self,
                workspace_id: &str,
                since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<(String, u32, u64)>> {
                let p = &self.pools;
                let rows: Vec<(String, i64, i64)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.audit.key_hours)
                        .bind(workspace_id)
                        .bind(since.timestamp())
                        .fetch_all(&p.reader)
                )?;
                Ok(rows.into_iter().map(|(k, h, c)| (k, h.clamp(0, 23) as u32, c.max(0) as u64)).collect())
            }

            async fn prune_rollups(&self, before: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let p = &self.pools;
                let q = sqlx::query(&p.sql.audit.prune).bind(before.timestamp()).execute(&p.writer);
                p.guarded(async { q.await.map_err(p.classify) }).await.map(|r| r.rows_affected())
            }
        }
    };
}
pub(crate) use audit_impl;

/// Splits one extra row off a page read with `limit + 1`: its presence
/// means there is a next page, starting after the last row kept.
pub fn paged(mut entries: Vec<Entry>, limit: usize) -> (Vec<Entry>, Option<i64>) {
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next = if more { entries.last().map(|e| e.seq) } else { None };
    (entries, next)
}

pub fn hour_time(secs: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0).ok_or_else(|| corrupt("usage hour"))
}
