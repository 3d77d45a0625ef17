//! Idempotency keys: what a client's `Idempotency-Key` was first used for,
//! and the answer it got. The change a request makes claims its key in
//! the change's own transaction ([`IdempotencyWrite::Claim`]), so a change
//! is never made without its key knowing, and of two requests with one key
//! only one change commits; the answer is kept (sealed) afterwards
//! ([`IdempotencyWrite::Answer`]). A request that changes nothing writes
//! nothing. Both are writes of a [`crate::Change`], so they share the group
//! commit with every other change. Expanded per driver by
//! [`idempotency_impl!`].

use chrono::{DateTime, Utc};
use keyward_core::sealed::SealedSecret;

use crate::Result;
use crate::sql::{Dialect, from_ms};

/// Whose key it is: a workspace, a credential of it (an API key, a
/// member's session), and the key (its SHA-256, hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    pub workspace_id: String,
    pub credential: String,
    pub key_hash: String,
}

/// A request's claim on its key, made with its change.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub scope: IdempotencyScope,
    /// Method, path and body, hashed: a retry must match.
    pub fingerprint: String,
    pub now: DateTime<Utc>,
    /// Until then a retry waits for the answer; after it, a claim without
    /// one is an answer lost.
    pub locked_until: DateTime<Utc>,
    /// When the record (and its answer) is forgotten.
    pub expires_at: DateTime<Utc>,
}

/// The answer to replay: status, the headers that matter (JSON pairs),
/// and the body sealed under the master key.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: String,
    pub body: SealedSecret,
}

/// A key some request claimed already.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub locked_until: DateTime<Utc>,
    /// The request made its change.
    pub committed: bool,
    pub answer: Option<StoredAnswer>,
}

#[derive(Debug, Clone)]
pub enum IdempotencyWrite {
    /// Goes first in the change a request with a key makes: claims the key
    /// (free, or its record expired), or refuses the whole change with
    /// [`crate::StoreError::Conflict`]`(`[`crate::Unique::IdempotencyKey`]`)`
    /// when another request's change holds it.
    Claim(IdempotencyClaim),
    /// Keeps the claimed request's answer.
    Answer { scope: IdempotencyScope, answer: StoredAnswer },
}

#[async_trait::async_trait]
pub trait Idempotency: Send + Sync {
    /// The record of a key, unless it expired by `now`.
    async fn idempotency_record(
        &self,
        scope: &IdempotencyScope,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>>;
    /// Forgets records expired at `now`; how many.
    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64>;
}

pub struct IdempotencyStatements {
    pub claim: String,
    pub get: String,
    pub finish: String,
    pub prune: String,
}

const KEY: &str = "workspace_id = $1 AND credential = $2 AND key_hash = $3";

impl IdempotencyStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        IdempotencyStatements {
            // Free or expired: one statement claims it.
            claim: r("INSERT INTO idempotency_keys (workspace_id, credential, key_hash, fingerprint, created_at, \
                 expires_at, locked_until, committed) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE) \
                 ON CONFLICT (workspace_id, credential, key_hash) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at, \
                 locked_until = excluded.locked_until, committed = TRUE, status = NULL, headers = NULL, \
                 master_key_id = NULL, body = NULL WHERE idempotency_keys.expires_at <= $5"),
            get: r(&format!(
                "SELECT fingerprint, locked_until, committed, status, headers, master_key_id, body \
                 FROM idempotency_keys WHERE {KEY} AND expires_at > $4"
            )),
            finish: r(&format!(
                "UPDATE idempotency_keys SET status = $4, headers = $5, master_key_id = $6, body = $7 WHERE {KEY}"
            )),
            prune: r("DELETE FROM idempotency_keys WHERE expires_at <= $1"),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct RecordRow {
    fingerprint: String,
    locked_until: i64,
    committed: bool,
    status: Option<i64>,
    headers: Option<String>,
    master_key_id: Option<String>,
    body: Option<Vec<u8>>,
}

impl RecordRow {
    pub fn into_record(self) -> Result<IdempotencyRecord> {
        let answer = match (self.status, self.headers, self.master_key_id, self.body) {
            (Some(status), Some(headers), Some(key_id), Some(blob)) => Some(StoredAnswer {
                status: u16::try_from(status).map_err(|_| crate::sql::corrupt("idempotent answer status"))?,
                headers,
                body: SealedSecret { key_id, blob },
            }),
            _ => None,
        };
        Ok(IdempotencyRecord {
            fingerprint: self.fingerprint,
            locked_until: from_ms(self.locked_until)?,
            committed: self.committed,
            answer,
        })
    }
}

/// `idempotency_impl!(Store, Driver)`.
macro_rules! idempotency_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn apply_idempotency(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::idempotency::IdempotencyWrite,
            ) -> $crate::Result<()> {
                use $crate::idempotency::IdempotencyWrite as W;
                use $crate::sql::ms;
                let sql = &self.sql.idempotency;
                match write {
                    W::Claim(c) => {
                        let s = &c.scope;
                        let held = $crate::StoreError::Conflict($crate::Unique::IdempotencyKey);
                        if $crate::sql::unstorable(&s.workspace_id) || $crate::sql::unstorable(&s.credential) {
                            return Err(held);
                        }
                        let q = sqlx::query(&sql.claim)
                            .bind(&s.workspace_id)
                            .bind(&s.credential)
                            .bind(&s.key_hash)
                            .bind(&c.fingerprint)
                            .bind(ms(c.now))
                            .bind(ms(c.expires_at))
                            .bind(ms(c.locked_until));
                        let done = q.execute(&mut *conn).await.map_err(self.classify)?;
                        return match done.rows_affected() {
                            0 => Err(held),
                            _ => Ok(()),
                        };
                    }
                    W::Answer { scope, answer } => {
                        let q = sqlx::query(&sql.finish)
                            .bind(&scope.workspace_id)
                            .bind(&scope.credential)
                            .bind(&scope.key_hash)
                            .bind(i64::from(answer.status))
                            .bind(&answer.headers)
                            .bind(&answer.body.key_id)
                            .bind(&answer.body.blob);
                        q.execute(&mut *conn).await.map_err(self.classify)?;
                        Ok(())
                    }
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::idempotency::Idempotency for $store {
            async fn idempotency_record(
                &self,
                s: &$crate::idempotency::IdempotencyScope,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<$crate::idempotency::IdempotencyRecord>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.idempotency.get,
                    $crate::idempotency::RecordRow::into_record,
                    &s.workspace_id,
                    &s.credential,
                    &s.key_hash,
                    $crate::sql::ms(now)
                )
            }

            async fn prune_idempotency(&self, now: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let p = &self.pools;
                let done = p
                    .guarded(async {
                        sqlx::query(&p.sql.idempotency.prune)
                            .bind($crate::sql::ms(now))
                            .execute(&p.writer)
                            .await
                            .map_err(p.classify)
                    })
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use idempotency_impl;
