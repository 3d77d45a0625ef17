//! The store, written once and instantiated per driver by [`store_impl!`]:
//! sqlx's drivers are distinct types, so the one body is expanded for each
//! (as a test body is generated once per backend). What differs per backend
//! (opening, migrations, error classification) lives in its own module.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Pool;

use crate::sql::Statements;
use crate::{Result, StoreError};

/// While the database is known to be unreachable, calls fail at once
/// instead of each waiting out a connection timeout; a background probe
/// (every [`Breaker::PROBE_INTERVAL`]) closes the breaker when it is back.
#[derive(Default)]
pub struct Breaker {
    down: AtomicBool,
}

impl Breaker {
    pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

    /// `Err` while the database is down.
    pub fn check(&self) -> Result<()> {
        if self.down.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is unreachable".into()));
        }
        Ok(())
    }

    /// Learns from an outcome; `true` when a lost connection just opened
    /// the breaker (the caller then starts the probe).
    pub fn record<T>(&self, outcome: &Result<T>) -> bool {
        let opened = matches!(outcome, Err(StoreError::Unavailable(_))) && !self.down.swap(true, Ordering::AcqRel);
        if opened {
            tracing::warn!("database unreachable: failing fast until it answers again");
        }
        opened
    }

    pub fn close(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("database reachable again");
        }
    }
}

/// A backend's connections and statements.
pub struct Pools<DB: sqlx::Database> {
    pub reader: Pool<DB>,
    pub writer: Pool<DB>,
    pub sql: Statements,
    /// Driver error → [`StoreError`] (unique constraints by name, lost
    /// connections as [`StoreError::Unavailable`]).
    pub classify: fn(sqlx::Error) -> StoreError,
    /// This node's id and the notice channel (PostgreSQL).
    pub node: String,
    pub channel: String,
    pub breaker: Arc<Breaker>,
    /// The newest audit entry this node appended per workspace (sequence
    /// number and hash): the next one is appended in one statement while
    /// the stored head still matches.
    pub audit_heads: crate::audit::HeadCache,
}

/// Runs a read once more when the first attempt lost its connection (a
/// pooled connection that died with a database restart): reads are safe to
/// repeat.
macro_rules! read_retry {
    ($pools:expr, $attempt:expr) => {
        $pools
            .guarded(async {
                match $attempt.await.map_err($pools.classify) {
                    Err($crate::StoreError::Unavailable(_)) => $attempt.await.map_err($pools.classify),
                    other => other,
                }
            })
            .await
    };
}
pub(crate) use read_retry;

/// Reads at most one `$row` with the statement `$sql` and its binds (on the
/// reader pool, retried like [`read_retry!`]) and converts it with `$into`.
macro_rules! optional_row {
    ($p:expr, $sql:expr, $into:path $(, $bind:expr)* $(,)?) => {{
        let row: Option<_> =
            $crate::backend::read_retry!($p, sqlx::query_as($sql)$(.bind($bind))*.fetch_optional(&$p.reader))?;
        row.map($into).transpose()
    }};
}
pub(crate) use optional_row;

/// Like [`optional_row!`], every row.
macro_rules! all_rows {
    ($p:expr, $sql:expr, $into:path $(, $bind:expr)* $(,)?) => {{
        let rows: Vec<_> =
            $crate::backend::read_retry!($p, sqlx::query_as($sql)$(.bind($bind))*.fetch_all(&$p.reader))?;
        rows.into_iter().map($into).collect()
    }};
}
pub(crate) use all_rows;

/// `store_impl!(Store, Driver, { trait methods only this backend has })`.
macro_rules! store_impl {
    ($store:ty, $db:ty, { $($extra:item)* }) => {
        impl $crate::backend::Pools<$db> {
            async fn apply(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::Write,
            ) -> $crate::Result<()> {
                use $crate::sql::{KeyValues, WorkspaceValues, bind_key, bind_workspace};
                use $crate::{StoreError, Write};
                let sql = &self.sql;
                // Each write, and what it means when it touches no row.
                let (done, if_none) = match write {
                    Write::InsertWorkspace(ws) => {
                        let v = WorkspaceValues::of(ws);
                        (bind_workspace!(sqlx::query(&sql.insert_workspace), ws, &v).execute(&mut *conn).await, None)
                    }
                    Write::UpdateWorkspace(ws) => {
                        let v = WorkspaceValues::of(ws);
                        let done =
                            bind_workspace!(sqlx::query(&sql.update_workspace), ws, &v).execute(&mut *conn).await;
                        (done, Some(StoreError::NotFound))
                    }
                    Write::InsertKey { key, max_live_keys: None } => {
                        let v = KeyValues::of(key);
                        let (remaining, refill, at) = $crate::sql::credit_values(key.credits.as_ref(), key.created_at);
                        let q = bind_key!(sqlx::query(&sql.insert_key), key, &v).bind(remaining).bind(refill).bind(at);
                        (q.execute(&mut *conn).await, None)
                    }
                    Write::InsertKey { key, max_live_keys: Some(limit) } => {
                        if let Some(lock) = &sql.lock_workspace {
                            sqlx::query(lock).bind(&key.workspace_id).execute(&mut *conn).await.map_err(self.classify)?;
                        }
                        let v = KeyValues::of(key);
                        let (remaining, refill, at) = $crate::sql::credit_values(key.credits.as_ref(), key.created_at);
                        let q = bind_key!(sqlx::query(&sql.insert_key_within_limit), key, &v)
                            .bind(remaining)
                            .bind(refill)
                            .bind(at);
                        let done = q.bind(&key.workspace_id).bind(i64::from(*limit)).execute(&mut *conn).await;
                        (done, Some(StoreError::LimitReached))
                    }
                    Write::UpdateKey { key, expected_version } => {
                        let v = KeyValues::of(key);
                        let q = bind_key!(sqlx::query(&sql.update_key), key, &v);
                        let done = q.bind(&*key.id).bind(&key.workspace_id).bind(*expected_version).execute(&mut *conn).await;
                        (done, Some(StoreError::VersionMismatch))
                    }
                    Write::SetCredits { workspace_id, key_id, credits, at } => {
                        let (remaining, refill, at) = $crate::sql::credit_values(credits.as_ref(), *at);
                        let q = sqlx::query(&sql.set_credits).bind(remaining).bind(refill).bind(at);
                        (q.bind(key_id).bind(workspace_id).execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    Write::ChangeCredits { workspace_id, key_id, op, value } => {
                        use keyward_core::credits::CreditOp;
                        let statement = match op {
                            CreditOp::Set => &sql.credits_set,
                            CreditOp::Increment => &sql.credits_increment,
                            CreditOp::Decrement => &sql.credits_decrement,
                        };
                        let q = sqlx::query(statement).bind(*value).bind(key_id).bind(workspace_id);
                        let q = q.bind(keyward_core::credits::MAX_CREDITS);
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    Write::LockKey { key_id, at } => {
                        let q = sqlx::query(&sql.lock_key).bind($crate::sql::ms(*at)).bind(key_id);
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    Write::InsertIdentity(i) => {
                        let q = $crate::sql::bind_identity(sqlx::query(&sql.insert_identity), i);
                        (q.execute(&mut *conn).await, None)
                    }
                    Write::UpdateIdentity { identity, expected_version } => {
                        let q = $crate::sql::bind_identity(sqlx::query(&sql.update_identity), identity);
                        (q.bind(*expected_version).execute(&mut *conn).await, Some(StoreError::VersionMismatch))
                    }
                    Write::DeleteIdentity { workspace_id, id } => {
                        // All within the caller's workspace: another's ids are
                        // not found, never "in use".
                        let live: i64 = sqlx::query_scalar(&sql.identity_live_keys)
                            .bind(id)
                            .bind(workspace_id)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(self.classify)?;
                        if live > 0 {
                            return Err(StoreError::InUse);
                        }
                        // Revoked keys let go of it first (their external id too).
                        let detach = sqlx::query(&sql.detach_identity).bind(id).bind(workspace_id);
                        detach.execute(&mut *conn).await.map_err(self.classify)?;
                        let done = sqlx::query(&sql.delete_identity).bind(id).bind(workspace_id).execute(&mut *conn).await;
                        (done, Some(StoreError::NotFound))
                    }
                    Write::People(w) => return self.apply_people(conn, w).await,
                    Write::Access(w) => return self.apply_access(conn, w).await,
                    Write::Audit(w) => return self.apply_audit(conn, w).await,
                    Write::OAuth(w) => return self.apply_oauth(conn, w).await,
                    Write::Pgp(w) => return self.apply_pgp(conn, w).await,
                    Write::Integrations(w) => return self.apply_integrations(conn, w).await,
                    Write::Webhooks(w) => return self.apply_webhooks(conn, w).await,
                    Write::Idempotency(w) => return self.apply_idempotency(conn, w).await,
                    Write::InsertMeta { name, value } => {
                        (sqlx::query(&sql.meta_claim).bind(name).bind(value).execute(&mut *conn).await, None)
                    }
                    Write::DeleteKey { workspace_id, id, expected_version } => {
                        let q = sqlx::query(&sql.delete_key).bind(id).bind(workspace_id).bind(*expected_version);
                        (q.execute(&mut *conn).await, Some(StoreError::VersionMismatch))
                    }
                };
                match (done.map_err(self.classify)?.rows_affected(), if_none) {
                    (0, Some(e)) => Err(e),
                    _ => Ok(()),
                }
            }

            async fn apply_change(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                change: &$crate::Change,
            ) -> $crate::Result<()> {
                for write in &change.writes {
                    self.apply(conn, write).await?;
                    if let Some(notify) = &self.sql.notify {
                        for inv in $crate::sql::invalidations(write) {
                            sqlx::query(notify)
                                .bind(&self.channel)
                                .bind($crate::sql::notice_payload(&self.node, &inv))
                                .execute(&mut *conn)
                                .await
                                .map_err(self.classify)?;
                        }
                    }
                }
                Ok(())
            }

            /// One transaction for the group. On failure, whether it failed
            /// before COMMIT was sent (nothing written: safe to try again).
            async fn try_group(
                &self,
                changes: &[$crate::Change],
            ) -> $crate::Result<Vec<$crate::Result<()>>, ($crate::StoreError, bool)> {
                let early = |e: sqlx::Error| ((self.classify)(e), true);
                let mut tx = self.writer.begin_with(self.sql.begin_write).await.map_err(early)?;
                let mut results = Vec::with_capacity(changes.len());
                if let [change] = changes {
                    // Alone: the transaction is the change's boundary.
                    let result = self.apply_change(&mut tx, change).await;
                    if result.is_err() {
                        tx.rollback().await.map_err(early)?;
                        return Ok(vec![result]);
                    }
                    results.push(result);
                } else {
                    for change in changes {
                        sqlx::query("SAVEPOINT change").execute(&mut *tx).await.map_err(early)?;
                        let result = self.apply_change(&mut tx, change).await;
                        let end = if result.is_ok() { "RELEASE SAVEPOINT change" } else { "ROLLBACK TO SAVEPOINT change" };
                        sqlx::query(end).execute(&mut *tx).await.map_err(early)?;
                        results.push(result);
                    }
                }
                tx.commit().await.map_err(|e| ((self.classify)(e), false))?;
                Ok(results)
            }
        }

        #[async_trait::async_trait]
        impl $crate::group::CommitGroup for $crate::backend::Pools<$db> {
            async fn commit_group(&self, changes: &[$crate::Change]) -> $crate::Result<Vec<$crate::Result<()>>> {
                self.guarded(self.commit_group_once_more(changes)).await
            }
        }

        impl $crate::backend::Pools<$db> {
            async fn commit_group_once_more(
                &self,
                changes: &[$crate::Change],
            ) -> $crate::Result<Vec<$crate::Result<()>>> {
                match self.try_group(changes).await {
                    Ok(results) => Ok(results),
                    // A connection lost before COMMIT: nothing was written, try once more.
                    Err(($crate::StoreError::Unavailable(_), true)) => {
                        self.try_group(changes).await.map_err(|(e, _)| e)
                    }
                    Err((e, _)) => Err(e),
                }
            }
        }

        impl $crate::backend::Pools<$db> {
            /// Runs `work` behind the breaker: at once refused while the
            /// database is known to be down; a lost connection opens it.
            async fn guarded<T>(
                &self,
                work: impl std::future::Future<Output = $crate::Result<T>>,
            ) -> $crate::Result<T> {
                self.breaker.check()?;
                let outcome = work.await;
                if self.breaker.record(&outcome) {
                    self.start_probe();
                }
                outcome
            }

            /// Probes in the background until the database answers, then
            /// closes the breaker.
            fn start_probe(&self) {
                let (pool, breaker) = (self.reader.clone(), self.breaker.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep($crate::backend::Breaker::PROBE_INTERVAL).await;
                        if sqlx::query("SELECT 1").execute(&pool).await.is_ok() {
                            breaker.close();
                            return;
                        }
                    }
                });
            }

            /// Refill when due, then spend: each one atomic statement.
            async fn spend(
                &self,
                key_id: &str,
                cost: i64,
                refill: Option<(i64, chrono::DateTime<chrono::Utc>)>,
            ) -> $crate::Result<$crate::CreditSpend> {
                let sql = &self.sql;
                if let Some((amount, start)) = refill {
                    sqlx::query(&sql.credits_refill)
                        .bind(amount)
                        .bind($crate::sql::ms(start))
                        .bind(key_id)
                        .execute(&self.writer)
                        .await
                        .map_err(self.classify)?;
                }
                if cost > 0 {
                    let spent: Option<i64> = sqlx::query_scalar(&sql.credits_spend)
                        .bind(cost)
                        .bind(key_id)
                        .fetch_optional(&self.writer)
                        .await
                        .map_err(self.classify)?;
                    if let Some(remaining) = spent {
                        return Ok($crate::CreditSpend::Spent { remaining });
                    }
                }
                let left: Option<Option<i64>> =
                    sqlx::query_scalar(&sql.credits_read).bind(key_id).fetch_optional(&self.writer).await.map_err(self.classify)?;
                Ok(match left.flatten() {
                    None => $crate::CreditSpend::Unlimited,
                    Some(remaining) if cost == 0 => $crate::CreditSpend::Spent { remaining },
                    Some(remaining) => $crate::CreditSpend::Exhausted { remaining },
                })
            }

            async fn flush_usage(&self, deltas: &[$crate::UsageDelta]) -> $crate::Result<()> {
                let p = self;
                let mut tx = p.writer.begin_with(p.sql.begin_write).await.map_err(p.classify)?;
                for d in deltas {
                    if let Some(last) = d.last_used_at {
                        sqlx::query(&p.sql.touch_last_used)
                            .bind($crate::sql::ms(last))
                            .bind(&*d.key_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(p.classify)?;
                    }
                    let hour = d.hour.timestamp().div_euclid(3600) * 3600;
                    for (code, count) in &d.counts {
                        sqlx::query(&p.sql.audit.add_rollup)
                            .bind(&*d.key_id)
                            .bind(hour)
                            .bind(*code)
                            .bind(i64::try_from(*count).unwrap_or(i64::MAX))
                            .execute(&mut *tx)
                            .await
                            .map_err(p.classify)?;
                    }
                }
                tx.commit().await.map_err(p.classify)
            }

        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            $($extra)*

            async fn ping(&self) -> $crate::Result<()> {
                let p = &self.pools;
                $crate::backend::read_retry!(p, sqlx::query("SELECT 1").execute(&p.reader)).map(|_| ())
            }

            async fn meta_get_or_set(&self, name: &str, value: &str) -> $crate::Result<String> {
                let p = &self.pools;
                sqlx::query(&p.sql.meta_insert).bind(name).bind(value).execute(&p.writer).await.map_err(p.classify)?;
                sqlx::query_scalar(&p.sql.meta_get).bind(name).fetch_one(&p.writer).await.map_err(p.classify)
            }

            async fn commit(&self, change: $crate::Change) -> $crate::Result<()> {
                self.committer.commit(change).await
            }

            async fn schema_version(&self) -> $crate::Result<i64> {
                let p = &self.pools;
                let v: Option<i64> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&p.reader)
                )?;
                Ok(v.unwrap_or(0))
            }

            async fn count_workspaces(&self) -> $crate::Result<u64> {
                let p = &self.pools;
                let n: i64 = $crate::backend::read_retry!(p, sqlx::query_scalar("SELECT COUNT(*) FROM workspaces").fetch_one(&p.reader))?;
                Ok(n.max(0) as u64)
            }

            async fn count_keys(&self) -> $crate::Result<u64> {
                let p = &self.pools;
                let n: i64 = $crate::backend::read_retry!(p, sqlx::query_scalar("SELECT COUNT(*) FROM api_keys").fetch_one(&p.reader))?;
                Ok(n.max(0) as u64)
            }

            async fn count_live_keys(&self, workspace_id: &str) -> $crate::Result<u64> {
                let p = &self.pools;
                let n: i64 = $crate::backend::read_retry!(
                    p,
                    sqlx::query_scalar(&p.sql.count_live_keys).bind(workspace_id).fetch_one(&p.reader)
                )?;
                Ok(n.max(0) as u64)
            }

            async fn list_workspaces(&self) -> $crate::Result<Vec<keyward_core::workspace::Workspace>> {
                let p = &self.pools;
                let rows: Vec<$crate::sql::WorkspaceRow> =
                    $crate::backend::read_retry!(p, sqlx::query_as(&p.sql.list_workspaces).fetch_all(&p.reader))?;
                rows.into_iter().map($crate::sql::WorkspaceRow::into_workspace).collect()
            }

            async fn get_workspace(&self, id: &str) -> $crate::Result<Option<keyward_core::workspace::Workspace>> {
                let p = &self.pools;
                let row: Option<$crate::sql::WorkspaceRow> =
                    $crate::backend::read_retry!(p, sqlx::query_as(&p.sql.get_workspace).bind(id).fetch_optional(&p.reader))?;
                row.map($crate::sql::WorkspaceRow::into_workspace).transpose()
            }

            async fn insert_keys_bulk(&self, keys: &[keyward_core::key::ApiKey]) -> $crate::Result<()> {
                use $crate::sql::{KeyValues, bind_key};
                let p = &self.pools;
                for chunk in keys.chunks(10_000) {
                    let mut tx = p.writer.begin_with(p.sql.begin_write).await.map_err(p.classify)?;
                    // Many rows a statement: a statement is a round trip.
                    // A last, shorter run of rows goes one by one.
                    for rows in chunk.chunks($crate::sql::BULK_ROWS) {
                        let values: Vec<KeyValues> = rows.iter().map(KeyValues::of).collect();
                        let (sql, per) = match rows.len() == $crate::sql::BULK_ROWS {
                            true => (&p.sql.insert_keys_bulk, rows.len()),
                            false => (&p.sql.insert_key, 1),
                        };
                        for (rows, values) in rows.chunks(per).zip(values.chunks(per)) {
                            let mut q = sqlx::query(sql);
                            for (key, v) in rows.iter().zip(values) {
                                let (remaining, refill, at) = $crate::sql::credit_values(key.credits.as_ref(), key.created_at);
                                q = bind_key!(q, key, v).bind(remaining).bind(refill).bind(at);
                            }
                            q.execute(&mut *tx).await.map_err(p.classify)?;
                        }
                    }
                    tx.commit().await.map_err(p.classify)?;
                }
                Ok(())
            }

            async fn get_key(&self, workspace_id: &str, id: &str) -> $crate::Result<Option<keyward_core::key::ApiKey>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<$crate::sql::KeyRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.get_key).bind(id).bind(workspace_id).fetch_optional(&p.reader)
                )?;
                row.map($crate::sql::KeyRow::into_key).transpose()
            }

            async fn find_key(&self, id: &str) -> $crate::Result<Option<keyward_core::key::ApiKey>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<$crate::sql::KeyRow> =
                    $crate::backend::read_retry!(p, sqlx::query_as(&p.sql.find_key).bind(id).fetch_optional(&p.reader))?;
                row.map($crate::sql::KeyRow::into_key).transpose()
            }

            async fn find_key_by_client_id(&self, client_id: &str) -> $crate::Result<Option<keyward_core::key::ApiKey>> {
                if $crate::sql::unstorable(client_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(p, &p.sql.find_key_by_client_id, $crate::sql::KeyRow::into_key, client_id)
            }

            async fn find_key_by_lookup_hash(
                &self,
                digests: &[[u8; 32]],
            ) -> $crate::Result<Option<keyward_core::key::ApiKey>> {
                let p = &self.pools;
                for d in digests {
                    let row: Option<$crate::sql::KeyRow> = $crate::backend::read_retry!(
                        p,
                        sqlx::query_as(&p.sql.find_key_by_lookup_hash).bind(&d[..]).fetch_optional(&p.reader)
                    )?;
                    if let Some(row) = row {
                        return row.into_key().map(Some);
                    }
                }
                Ok(None)
            }

            async fn list_lookup_prefixes(&self) -> $crate::Result<Vec<String>> {
                let p = &self.pools;
                $crate::backend::read_retry!(
                    p,
                    sqlx::query_scalar(
                        "SELECT DISTINCT lookup_prefix FROM api_keys WHERE lookup_prefix IS NOT NULL"
                    )
                    .fetch_all(&p.reader)
                )
            }

            async fn list_keys(
                &self,
                workspace_id: &str,
                filter: &$crate::KeyFilter,
                page: $crate::Page,
            ) -> $crate::Result<$crate::KeyPage> {
                if filter.name_contains.as_deref().is_some_and($crate::sql::unstorable) {
                    return Ok($crate::KeyPage { keys: Vec::new(), next_cursor: None });
                }
                let p = &self.pools;
                let pattern = filter.name_contains.as_deref().map($crate::sql::name_pattern);
                let rows: Vec<$crate::sql::KeyRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.list_keys)
                        .bind(workspace_id)
                        .bind(filter.state.map(keyward_core::key::KeyState::as_str))
                        .bind(filter.key_type.map(keyward_core::key::KeyType::as_str))
                        .bind(&pattern)
                        .bind(page.after)
                        .bind(i64::from(page.limit) + 1)
                        .fetch_all(&p.reader)
                )?;
                let more = rows.len() > page.limit as usize;
                let mut keys = Vec::with_capacity(rows.len().min(page.limit as usize));
                let mut last_seq = None;
                for row in rows.into_iter().take(page.limit as usize) {
                    last_seq = Some(row.seq);
                    keys.push(row.into_key()?);
                }
                Ok($crate::KeyPage { keys, next_cursor: if more { last_seq } else { None } })
            }

            async fn get_identity(&self, workspace_id: &str, id: &str) -> $crate::Result<Option<keyward_core::identity::Identity>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<$crate::sql::IdentityRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.get_identity).bind(id).bind(workspace_id).fetch_optional(&p.reader)
                )?;
                row.map($crate::sql::IdentityRow::into_identity).transpose()
            }

            async fn find_identity(&self, id: &str) -> $crate::Result<Option<keyward_core::identity::Identity>> {
                let p = &self.pools;
                let row: Option<$crate::sql::IdentityRow> =
                    $crate::backend::read_retry!(p, sqlx::query_as(&p.sql.find_identity).bind(id).fetch_optional(&p.reader))?;
                row.map($crate::sql::IdentityRow::into_identity).transpose()
            }

            async fn identity_by_external_id(
                &self,
                workspace_id: &str,
                external_id: &str,
            ) -> $crate::Result<Option<keyward_core::identity::Identity>> {
                if $crate::sql::unstorable(external_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<$crate::sql::IdentityRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.identity_by_external_id).bind(workspace_id).bind(external_id).fetch_optional(&p.reader)
                )?;
                row.map($crate::sql::IdentityRow::into_identity).transpose()
            }

            async fn list_identities(
                &self,
                workspace_id: &str,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<keyward_core::identity::Identity>, Option<i64>)> {
                let p = &self.pools;
                let rows: Vec<$crate::sql::IdentityRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.list_identities)
                        .bind(workspace_id)
                        .bind(page.after)
                        .bind(i64::from(page.limit) + 1)
                        .fetch_all(&p.reader)
                )?;
                let more = rows.len() > page.limit as usize;
                let mut out = Vec::with_capacity(rows.len().min(page.limit as usize));
                let mut last_seq = None;
                for row in rows.into_iter().take(page.limit as usize) {
                    last_seq = Some(row.seq);
                    out.push(row.into_identity()?);
                }
                Ok((out, if more { last_seq } else { None }))
            }

            async fn spend_credits(
                &self,
                key_id: &str,
                cost: i64,
                refill: Option<(i64, chrono::DateTime<chrono::Utc>)>,
            ) -> $crate::Result<$crate::CreditSpend> {
                self.pools.guarded(self.pools.spend(key_id, cost, refill)).await
            }

            async fn count_failed_attempt(
                &self,
                key_id: &str,
                window_start: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<i64>> {
                let p = &self.pools;
                let count = sqlx::query_scalar(&p.sql.count_failure)
                    .bind($crate::sql::ms(window_start))
                    .bind($crate::sql::ms(now))
                    .bind(key_id)
                    .fetch_optional(&p.writer);
                p.guarded(async { count.await.map_err(p.classify) }).await
            }

            async fn record_usage(&self, deltas: &[$crate::UsageDelta]) -> $crate::Result<()> {
                if deltas.is_empty() {
                    return Ok(());
                }
                self.pools.guarded(self.pools.flush_usage(deltas)).await
            }
        }
    };
}
pub(crate) use store_impl;

/// Migration failures in words an operator can act on.
pub fn migration_error(e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::VersionMissing(v) => StoreError::Backend(format!(
            "the database has migration {v}, which this keyward does not know: it was migrated by a newer \
             keyward; run that version (or newer)"
        )),
        MigrateError::VersionMismatch(v) => {
            StoreError::Backend(format!("migration {v} applied to the database differs from this keyward's"))
        }
        MigrateError::Execute(sqlx::Error::Io(e)) => StoreError::Unavailable(format!("migration failed: {e}")),
        other => StoreError::Backend(format!("migration failed: {other}")),
    }
}
