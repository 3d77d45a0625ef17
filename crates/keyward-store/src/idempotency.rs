//! Idempotency keys: what a client's `Idempotency-Key` was first used for,
//! and the answer it got. A request claims its key
//! ([`IdempotencyWrite::Claim`]); the change it makes marks the claim
//! committed in the change's own transaction ([`IdempotencyWrite::Committed`]),
//! so a change is never made without its key knowing; the answer is kept
//! (sealed) afterwards ([`IdempotencyWrite::Answer`]), or the claim
//! released when nothing changed. All are writes of a [`crate::Change`], so
//! they share the group commit with every other change. Expanded per
//! driver by [`idempotency_impl!`].

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

/// A request's claim on its key.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub scope: IdempotencyScope,
    /// Method, path and body, hashed: a retry must match.
    pub fingerprint: String,
    pub now: DateTime<Utc>,
    /// While the request runs, a retry waits; a claim whose request died
    /// before changing anything is free again after this.
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
    /// Claims the key for a request: it was free, its record expired, or a
    /// claim whose request died before changing anything lapsed. Else
    /// [`crate::StoreError::InUse`] (read the record that holds it).
    Claim(IdempotencyClaim),
    /// The claimed request's change commits with this (when the claim is
    /// gone, nothing is marked and the change still commits).
    Committed(IdempotencyScope),
    /// Keeps the claimed request's answer.
    Answer { scope: IdempotencyScope, answer: StoredAnswer },
    /// Lets go of a claim whose request changed nothing.
    Release(IdempotencyScope),
}

#[async_trait::async_trait]
pub trait Idempotency: Send + Sync {
    /// The record of a claimed key.
    async fn idempotency_record(&self, scope: &IdempotencyScope) -> Result<Option<IdempotencyRecord>>;
    /// Forgets records expired at `now`; how many.
    async fn prune_idempotency(&self, now: DateTime<Utc>) -> Result<u64>;
}

pub struct IdempotencyStatements {
    pub claim: String,
    pub get: String,
    pub committed: String,
    pub finish: String,
    pub release: String,
    pub prune: String,
}

const KEY: &str = "workspace_id = $1 AND credential = $2 AND key_hash = $3";

impl IdempotencyStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        IdempotencyStatements {
            // Free, expired, or claimed by a request that died before
            // changing anything: one statement claims it.
            claim: r("INSERT INTO idempotency_keys (workspace_id, credential, key_hash, fingerprint, created_at, \
                 expires_at, locked_until) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (workspace_id, credential, key_hash) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at, \
                 locked_until = excluded.locked_until, committed = FALSE, status = NULL, headers = NULL, \
                 master_key_id = NULL, body = NULL \
                 WHERE idempotency_keys.expires_at <= $5 OR (NOT idempotency_keys.committed \
                 AND idempotency_keys.status IS NULL AND idempotency_keys.locked_until <= $5)"),
            get: r(&format!(
                "SELECT fingerprint, locked_until, committed, status, headers, master_key_id, body \
                 FROM idempotency_keys WHERE {KEY}"
            )),
            committed: r(&format!("UPDATE idempotency_keys SET committed = TRUE WHERE {KEY}")),
            finish: r(&format!(
                "UPDATE idempotency_keys SET status = $4, headers = $5, master_key_id = $6, body = $7 WHERE {KEY}"
            )),
            release: r(&format!("DELETE FROM idempotency_keys WHERE {KEY} AND NOT committed")),
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
                let (s, done) = match write {
                    W::Claim(c) => {
                        let s = &c.scope;
                        if $crate::sql::unstorable(&s.workspace_id) || $crate::sql::unstorable(&s.credential) {
                            return Err($crate::StoreError::InUse);
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
                            0 => Err($crate::StoreError::InUse),
                            _ => Ok(()),
                        };
                    }
                    W::Committed(s) => (s, sqlx::query(&sql.committed)),
                    W::Release(s) => (s, sqlx::query(&sql.release)),
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
                        return Ok(());
                    }
                };
                done.bind(&s.workspace_id)
                    .bind(&s.credential)
                    .bind(&s.key_hash)
                    .execute(&mut *conn)
                    .await
                    .map_err(self.classify)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::idempotency::Idempotency for $store {
            async fn idempotency_record(
                &self,
                s: &$crate::idempotency::IdempotencyScope,
            ) -> $crate::Result<Option<$crate::idempotency::IdempotencyRecord>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.idempotency.get,
                    $crate::idempotency::RecordRow::into_record,
                    &s.workspace_id,
                    &s.credential,
                    &s.key_hash
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
