//! OAuth 2.0 state: signing keys, refresh tokens, revoked access tokens and
//! spent `jti` values. Statements, rows and writes, expanded per driver by
//! [`oauth_impl!`].

use chrono::{DateTime, TimeZone, Utc};
use keyward_core::oauth::{RefreshToken, SigningAlgorithm, SigningKey};
use keyward_core::sealed::SealedSecret;

use crate::sql::Dialect;
use crate::{Result, StoreError};

#[derive(Debug, Clone)]
pub enum OAuthWrite {
    InsertSigningKey(SigningKey),
    /// Every signing key but `keep` that still signs stops signing at `at`
    /// and leaves the JWKS after `drop_after`.
    RetireSigningKeys {
        keep: String,
        at: DateTime<Utc>,
        drop_after: DateTime<Utc>,
    },
    /// Forgets retired signing keys whose tokens have all expired.
    DropSigningKeys {
        before: DateTime<Utc>,
    },
    InsertRefreshToken(RefreshToken),
    /// Marks a rotating refresh token exchanged; [`StoreError::NotFound`]
    /// when it already was (or was revoked), so that of two concurrent
    /// uses only one gets a successor.
    UseRefreshToken {
        id: String,
        at: DateTime<Utc>,
    },
    /// Records the use of a member's refresh token (which does not rotate).
    TouchRefreshToken {
        id: String,
        at: DateTime<Utc>,
    },
    RevokeRefreshFamily {
        family_id: String,
        at: DateTime<Utc>,
    },
    /// [`StoreError::NotFound`] unless a live token of the workspace has `id`.
    RevokeRefreshToken {
        workspace_id: String,
        id: String,
        at: DateTime<Utc>,
    },
    /// Revokes the client's refresh-token families beyond its newest
    /// `keep` live ones (each client_credentials grant starts a family).
    TrimClientFamilies {
        client_key_id: String,
        keep: u32,
        at: DateTime<Utc>,
    },
    /// Revokes a member's refresh tokens: in one workspace (removed from
    /// it), or everywhere (`None`: a new password).
    RevokeMemberTokens {
        member_id: String,
        workspace_id: Option<String>,
        at: DateTime<Utc>,
    },
    /// Refuses the access token `jti` until it expires anyway.
    RevokeAccessToken {
        jti: String,
        expires_at: DateTime<Utc>,
    },
}

#[async_trait::async_trait]
pub trait OAuth: Send + Sync {
    /// Every stored signing key, retired ones included.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    async fn refresh_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<RefreshToken>>;
    async fn get_refresh_token(&self, workspace_id: &str, id: &str) -> Result<Option<RefreshToken>>;
    /// A workspace's member tokens that are not revoked, newest first.
    async fn member_tokens(&self, workspace_id: &str) -> Result<Vec<RefreshToken>>;
    /// Revoked access tokens not yet expired at `now`: `(jti, expires_at)`.
    async fn revoked_access_tokens(&self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool>;
    /// Records `jti` as used until `expires_at`; `false` when it already
    /// was (a replay). Across nodes; expired records are swept now and then.
    async fn spend_jti(&self, jti: &str, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<bool>;
    /// Deletes refresh tokens that expired before `before` (their grants
    /// are over: reuse of them is no longer worth detecting); how many.
    async fn prune_refresh_tokens(&self, before: DateTime<Utc>) -> Result<u64>;
}

const SIGNING_COLUMNS: &str = "kid, algorithm, public_jwk, master_key_id, sealed, created_at, retired_at, drop_after";
const REFRESH_COLUMNS: &str = "id, workspace_id, family_id, token_hash, client_key_id, member_id, name, scope, \
     masked, created_at, expires_at, used_at, revoked_at, last_used_at";

pub struct OAuthStatements {
    pub insert_signing: String,
    pub retire_signing: String,
    pub drop_signing: String,
    pub signing_keys: String,
    pub insert_refresh: String,
    pub use_refresh: String,
    pub touch_refresh: String,
    pub revoke_family: String,
    pub revoke_refresh: String,
    pub trim_families: String,
    pub revoke_member_all: String,
    pub revoke_member_in: String,
    pub prune_refresh: String,
    pub refresh_by_hash: String,
    pub get_refresh: String,
    pub member_tokens: String,
    pub revoke_access: String,
    pub revoked_access: String,
    pub is_revoked: String,
    pub spend_jti: String,
    pub sweep_jtis: String,
    pub sweep_revoked: String,
}

impl OAuthStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        OAuthStatements {
            insert_signing: r(&format!(
                "INSERT INTO signing_keys ({SIGNING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            )),
            retire_signing: r("UPDATE signing_keys SET retired_at = $2, drop_after = $3 \
                 WHERE kid <> $1 AND retired_at IS NULL"),
            drop_signing: r("DELETE FROM signing_keys WHERE drop_after IS NOT NULL AND drop_after < $1"),
            signing_keys: format!("SELECT {SIGNING_COLUMNS} FROM signing_keys ORDER BY created_at, kid"),
            insert_refresh: r(&format!(
                "INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            )),
            use_refresh: r("UPDATE refresh_tokens SET used_at = $2, last_used_at = $2 \
                 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL"),
            touch_refresh: r("UPDATE refresh_tokens SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"),
            revoke_family: r("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL"),
            revoke_refresh: r("UPDATE refresh_tokens SET revoked_at = $3 \
                 WHERE id = $1 AND workspace_id = $2 AND revoked_at IS NULL"),
            // A family's current token is its one unused, unrevoked token:
            // the families past the newest `keep` are revoked whole.
            trim_families: r(&format!(
                "UPDATE refresh_tokens SET revoked_at = $3 WHERE revoked_at IS NULL AND family_id IN \
                 (SELECT family_id FROM refresh_tokens WHERE client_key_id = $1 AND revoked_at IS NULL \
                 AND used_at IS NULL ORDER BY created_at DESC, id DESC {} OFFSET $2)",
                match dialect {
                    Dialect::Sqlite => "LIMIT -1",
                    Dialect::Postgres => "LIMIT ALL",
                }
            )),
            revoke_member_all: r(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL",
            ),
            revoke_member_in: r("UPDATE refresh_tokens SET revoked_at = $3 \
                 WHERE member_id = $1 AND workspace_id = $2 AND revoked_at IS NULL"),
            prune_refresh: r("DELETE FROM refresh_tokens WHERE expires_at IS NOT NULL AND expires_at < $1"),
            refresh_by_hash: r(&format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1")),
            get_refresh: r(&format!(
                "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE id = $1 AND workspace_id = $2"
            )),
            member_tokens: r(&format!(
                "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE workspace_id = $1 \
                 AND member_id IS NOT NULL AND revoked_at IS NULL ORDER BY created_at DESC, id"
            )),
            revoke_access: r(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
            ),
            revoked_access: r("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1"),
            is_revoked: r("SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1"),
            spend_jti: r("INSERT INTO spent_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING"),
            sweep_jtis: r("DELETE FROM spent_jtis WHERE expires_at < $1"),
            sweep_revoked: r("DELETE FROM revoked_tokens WHERE expires_at < $1"),
        }
    }
}

fn time(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v).single().ok_or_else(|| StoreError::Backend(format!("stored time {v} is out of range")))
}

fn opt_time(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(time).transpose()
}

#[derive(sqlx::FromRow)]
pub struct SigningRow {
    kid: String,
    algorithm: String,
    public_jwk: String,
    master_key_id: String,
    sealed: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
    drop_after: Option<i64>,
}

impl SigningRow {
    pub fn into_key(self) -> Result<SigningKey> {
        Ok(SigningKey {
            kid: self.kid,
            algorithm: SigningAlgorithm::parse(&self.algorithm).ok_or_else(|| crate::sql::corrupt("signing key"))?,
            public_jwk: self.public_jwk,
            sealed: SealedSecret { key_id: self.master_key_id, blob: self.sealed },
            created_at: time(self.created_at)?,
            retired_at: opt_time(self.retired_at)?,
            drop_after: opt_time(self.drop_after)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct RefreshRow {
    id: String,
    workspace_id: String,
    family_id: String,
    token_hash: Vec<u8>,
    client_key_id: Option<String>,
    member_id: Option<String>,
    name: Option<String>,
    scope: Option<String>,
    masked: String,
    created_at: i64,
    expires_at: Option<i64>,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl RefreshRow {
    pub fn into_token(self) -> Result<RefreshToken> {
        Ok(RefreshToken {
            id: self.id,
            workspace_id: self.workspace_id,
            family_id: self.family_id,
            token_hash: self.token_hash.try_into().map_err(|_| crate::sql::corrupt("refresh token hash"))?,
            client_key_id: self.client_key_id,
            member_id: self.member_id,
            name: self.name,
            scope: self.scope,
            masked: self.masked,
            created_at: time(self.created_at)?,
            expires_at: opt_time(self.expires_at)?,
            used_at: opt_time(self.used_at)?,
            revoked_at: opt_time(self.revoked_at)?,
            last_used_at: opt_time(self.last_used_at)?,
        })
    }
}

/// `oauth_impl!(Store, Driver)`.
macro_rules! oauth_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn apply_oauth(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::oauth::OAuthWrite,
            ) -> $crate::Result<()> {
                use $crate::StoreError;
                use $crate::oauth::OAuthWrite;
                use $crate::sql::ms;
                let sql = &self.sql.oauth;
                let (done, if_none) = match write {
                    OAuthWrite::InsertSigningKey(k) => {
                        let q = sqlx::query(&sql.insert_signing)
                            .bind(&k.kid)
                            .bind(k.algorithm.as_str())
                            .bind(&k.public_jwk)
                            .bind(&k.sealed.key_id)
                            .bind(&k.sealed.blob)
                            .bind(ms(k.created_at))
                            .bind(k.retired_at.map(ms))
                            .bind(k.drop_after.map(ms));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::RetireSigningKeys { keep, at, drop_after } => {
                        let q = sqlx::query(&sql.retire_signing).bind(keep).bind(ms(*at)).bind(ms(*drop_after));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::DropSigningKeys { before } => {
                        (sqlx::query(&sql.drop_signing).bind(ms(*before)).execute(&mut *conn).await, None)
                    }
                    OAuthWrite::InsertRefreshToken(t) => {
                        let q = sqlx::query(&sql.insert_refresh)
                            .bind(&t.id)
                            .bind(&t.workspace_id)
                            .bind(&t.family_id)
                            .bind(&t.token_hash[..])
                            .bind(&t.client_key_id)
                            .bind(&t.member_id)
                            .bind(&t.name)
                            .bind(&t.scope)
                            .bind(&t.masked)
                            .bind(ms(t.created_at))
                            .bind(t.expires_at.map(ms))
                            .bind(t.used_at.map(ms))
                            .bind(t.revoked_at.map(ms))
                            .bind(t.last_used_at.map(ms));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::UseRefreshToken { id, at } => {
                        let q = sqlx::query(&sql.use_refresh).bind(id).bind(ms(*at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    OAuthWrite::TouchRefreshToken { id, at } => {
                        (sqlx::query(&sql.touch_refresh).bind(id).bind(ms(*at)).execute(&mut *conn).await, None)
                    }
                    OAuthWrite::RevokeRefreshFamily { family_id, at } => {
                        let q = sqlx::query(&sql.revoke_family).bind(family_id).bind(ms(*at));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::RevokeRefreshToken { workspace_id, id, at } => {
                        let q = sqlx::query(&sql.revoke_refresh).bind(id).bind(workspace_id).bind(ms(*at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    OAuthWrite::TrimClientFamilies { client_key_id, keep, at } => {
                        let q =
                            sqlx::query(&sql.trim_families).bind(client_key_id).bind(i64::from(*keep)).bind(ms(*at));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::RevokeMemberTokens { member_id, workspace_id: None, at } => (
                        sqlx::query(&sql.revoke_member_all).bind(member_id).bind(ms(*at)).execute(&mut *conn).await,
                        None,
                    ),
                    OAuthWrite::RevokeMemberTokens { member_id, workspace_id: Some(ws), at } => {
                        let q = sqlx::query(&sql.revoke_member_in).bind(member_id).bind(ws).bind(ms(*at));
                        (q.execute(&mut *conn).await, None)
                    }
                    OAuthWrite::RevokeAccessToken { jti, expires_at } => {
                        let q = sqlx::query(&sql.revoke_access).bind(jti).bind(ms(*expires_at));
                        (q.execute(&mut *conn).await, None)
                    }
                };
                match (done.map_err(self.classify)?.rows_affected(), if_none) {
                    (0, Some(e)) => Err(e),
                    _ => Ok(()),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::oauth::OAuth for $store {
            async fn signing_keys(&self) -> $crate::Result<Vec<keyward_core::oauth::SigningKey>> {
                let p = &self.pools;
                $crate::backend::all_rows!(p, &p.sql.oauth.signing_keys, $crate::oauth::SigningRow::into_key)
            }

            async fn refresh_token_by_hash(
                &self,
                hash: &[u8; 32],
            ) -> $crate::Result<Option<keyward_core::oauth::RefreshToken>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.oauth.refresh_by_hash,
                    $crate::oauth::RefreshRow::into_token,
                    &hash[..]
                )
            }

            async fn get_refresh_token(
                &self,
                workspace_id: &str,
                id: &str,
            ) -> $crate::Result<Option<keyward_core::oauth::RefreshToken>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.oauth.get_refresh,
                    $crate::oauth::RefreshRow::into_token,
                    id,
                    workspace_id
                )
            }

            async fn member_tokens(
                &self,
                workspace_id: &str,
            ) -> $crate::Result<Vec<keyward_core::oauth::RefreshToken>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.oauth.member_tokens,
                    $crate::oauth::RefreshRow::into_token,
                    workspace_id
                )
            }

            async fn revoked_access_tokens(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
                let p = &self.pools;
                let rows: Vec<(String, i64)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.oauth.revoked_access).bind($crate::sql::ms(now)).fetch_all(&p.reader)
                )?;
                rows.into_iter()
                    .map(|(jti, at)| {
                        let at = chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, at)
                            .single()
                            .ok_or_else(|| $crate::sql::corrupt("revoked token"))?;
                        Ok((jti, at))
                    })
                    .collect()
            }

            async fn is_access_token_revoked(&self, jti: &str) -> $crate::Result<bool> {
                if $crate::sql::unstorable(jti) {
                    return Ok(false);
                }
                let p = &self.pools;
                let n: i64 = $crate::backend::read_retry!(
                    p,
                    sqlx::query_scalar(&p.sql.oauth.is_revoked).bind(jti).fetch_one(&p.reader)
                )?;
                Ok(n > 0)
            }

            async fn prune_refresh_tokens(&self, before: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let p = &self.pools;
                let sql = &p.sql.oauth.prune_refresh;
                p.guarded(async {
                    let done =
                        sqlx::query(sql).bind($crate::sql::ms(before)).execute(&p.writer).await.map_err(p.classify)?;
                    Ok(done.rows_affected())
                })
                .await
            }

            async fn spend_jti(
                &self,
                jti: &str,
                expires_at: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                if $crate::sql::unstorable(jti) {
                    return Ok(false);
                }
                let p = &self.pools;
                let sql = &p.sql.oauth;
                p.guarded(async {
                    // Now and then, forget what can no longer be replayed.
                    if keyward_core::ids::random_bytes::<1>()[0] == 0 {
                        let now = $crate::sql::ms(now);
                        for sweep in [&sql.sweep_jtis, &sql.sweep_revoked] {
                            sqlx::query(sweep).bind(now).execute(&p.writer).await.map_err(p.classify)?;
                        }
                    }
                    let done = sqlx::query(&sql.spend_jti)
                        .bind(jti)
                        .bind($crate::sql::ms(expires_at))
                        .execute(&p.writer)
                        .await
                        .map_err(p.classify)?;
                    Ok(done.rows_affected() == 1)
                })
                .await
            }
        }
    };
}
pub(crate) use oauth_impl;
