//! A workspace's integration credentials (its JavaScript key, default REST
//! key and FTP access): statements, rows and writes, expanded per driver
//! by [`integrations_impl!`]. The FTP password is kept as an argon2id hash
//! and, when recoverable, sealed: the store never sees it in the clear.

use chrono::{DateTime, Utc};
use keyward_core::integrations::{FtpAccess, Integrations as Stored};
use keyward_core::sealed::SealedSecret;

use crate::Result;
use crate::sql::Dialect;

#[derive(Debug, Clone)]
pub enum IntegrationsWrite {
    /// [`crate::StoreError::Conflict`] with [`crate::Unique::Integrations`]
    /// when the workspace has them already (made by another request or node).
    Insert { integrations: Stored, sealed: Option<SealedSecret> },
    /// The default REST key is now `key_id`; [`crate::StoreError::NotFound`]
    /// unless the workspace's is still `was`.
    SetRestKey { workspace_id: String, was: Option<String>, key_id: String },
    /// A new JavaScript key in place of `was` (deleted);
    /// [`crate::StoreError::NotFound`] unless it is still `was`.
    ReplaceJavascriptKey { workspace_id: String, was: String, key_id: String, token: String },
    /// A publishable key was rolled: if it is a workspace's JavaScript key,
    /// its new value (else nothing happens).
    JavascriptRolled { key_id: String, token: String },
    /// A new FTP password (its hash, and sealed when recoverable), which
    /// also lifts a lock; [`crate::StoreError::NotFound`] when the
    /// workspace has no integrations.
    SetFtpPassword { workspace_id: String, hash: String, sealed: Option<SealedSecret>, at: DateTime<Utc> },
    /// Enables or disables FTP access (enabling also lifts a lock);
    /// [`crate::StoreError::NotFound`] when the workspace has no integrations.
    SetFtpEnabled { workspace_id: String, enabled: bool },
    /// Locks FTP access (too many wrong passwords);
    /// [`crate::StoreError::NotFound`] when it is locked already, so the
    /// change (and its audit entry) is undone.
    LockFtp { workspace_id: String, at: DateTime<Utc> },
}

#[async_trait::async_trait]
pub trait Integrations: Send + Sync {
    async fn get_integrations(&self, workspace_id: &str) -> Result<Option<Stored>>;
    /// The integrations whose FTP username is `username`: a workspace's
    /// site id, or its id when it has none.
    async fn ftp_login(&self, username: &str) -> Result<Option<Stored>>;
    /// The FTP password, sealed (when it was kept).
    async fn ftp_sealed(&self, workspace_id: &str) -> Result<Option<SealedSecret>>;
    /// Counts a wrong FTP password in the window starting at
    /// `window_start` (an older count starts again); the count, `None` when
    /// the workspace has no integrations.
    async fn count_ftp_failure(
        &self,
        workspace_id: &str,
        window_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>>;
}

const COLUMNS: &str = "workspace_id, javascript_key_id, javascript_key, rest_key_id, ftp_password_hash, \
     ftp_master_key_id, ftp_sealed, ftp_enabled, ftp_password_set_at, created_at";
/// What a read takes: everything but the sealed password.
const VIEW_COLUMNS: &str = "i.workspace_id, i.javascript_key_id, i.javascript_key, i.rest_key_id, \
     i.ftp_password_hash, i.ftp_enabled, i.ftp_password_set_at, i.ftp_locked_at IS NOT NULL AS ftp_locked, \
     i.ftp_master_key_id IS NOT NULL AS ftp_sealed, i.created_at";

pub struct IntegrationsStatements {
    pub insert: String,
    pub set_rest_key: String,
    pub set_rest_key_from_none: String,
    pub replace_javascript: String,
    pub javascript_rolled: String,
    pub set_password: String,
    pub set_enabled: String,
    pub lock: String,
    pub get: String,
    pub by_site_id: String,
    pub by_workspace_id: String,
    pub sealed: String,
    pub count_failure: String,
}

impl IntegrationsStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        IntegrationsStatements {
            insert: r(&format!(
                "INSERT INTO integrations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )),
            set_rest_key: r("UPDATE integrations SET rest_key_id = $3 WHERE workspace_id = $1 AND rest_key_id = $2"),
            set_rest_key_from_none: r(
                "UPDATE integrations SET rest_key_id = $2 WHERE workspace_id = $1 AND rest_key_id IS NULL",
            ),
            replace_javascript: r("UPDATE integrations SET javascript_key_id = $3, javascript_key = $4 \
                 WHERE workspace_id = $1 AND javascript_key_id = $2"),
            javascript_rolled: r("UPDATE integrations SET javascript_key = $2 WHERE javascript_key_id = $1"),
            set_password: r("UPDATE integrations SET ftp_password_hash = $2, ftp_master_key_id = $3, \
                 ftp_sealed = $4, ftp_password_set_at = $5, ftp_failures = 0, ftp_failures_since = NULL, \
                 ftp_locked_at = NULL WHERE workspace_id = $1"),
            set_enabled: r("UPDATE integrations SET ftp_enabled = $2, \
                 ftp_failures = CASE WHEN $2 THEN 0 ELSE ftp_failures END, \
                 ftp_failures_since = CASE WHEN $2 THEN NULL ELSE ftp_failures_since END, \
                 ftp_locked_at = CASE WHEN $2 THEN NULL ELSE ftp_locked_at END WHERE workspace_id = $1"),
            lock: r("UPDATE integrations SET ftp_locked_at = $2, ftp_failures = 0, ftp_failures_since = NULL \
                 WHERE workspace_id = $1 AND ftp_locked_at IS NULL"),
            get: r(&format!("SELECT {VIEW_COLUMNS} FROM integrations i WHERE i.workspace_id = $1")),
            by_site_id: r(&format!(
                "SELECT {VIEW_COLUMNS} FROM integrations i JOIN workspaces w ON w.id = i.workspace_id \
                 WHERE w.site_id = $1"
            )),
            by_workspace_id: r(&format!(
                "SELECT {VIEW_COLUMNS} FROM integrations i JOIN workspaces w ON w.id = i.workspace_id \
                 WHERE w.id = $1 AND w.site_id IS NULL"
            )),
            sealed: r("SELECT ftp_master_key_id, ftp_sealed FROM integrations \
                 WHERE workspace_id = $1 AND ftp_master_key_id IS NOT NULL"),
            count_failure: r("UPDATE integrations SET \
                 ftp_failures = CASE WHEN ftp_failures_since IS NULL OR ftp_failures_since < $1 THEN 1 \
                 ELSE ftp_failures + 1 END, \
                 ftp_failures_since = CASE WHEN ftp_failures_since IS NULL OR ftp_failures_since < $1 THEN $2 \
                 ELSE ftp_failures_since END \
                 WHERE workspace_id = $3 RETURNING ftp_failures"),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct IntegrationsRow {
    workspace_id: String,
    javascript_key_id: String,
    javascript_key: String,
    rest_key_id: Option<String>,
    ftp_password_hash: String,
    ftp_enabled: bool,
    ftp_password_set_at: i64,
    ftp_locked: bool,
    ftp_sealed: bool,
    created_at: i64,
}

impl IntegrationsRow {
    pub fn into_integrations(self) -> Result<Stored> {
        use crate::sql::from_ms;
        Ok(Stored {
            workspace_id: self.workspace_id,
            javascript_key_id: self.javascript_key_id,
            javascript_key: self.javascript_key,
            rest_key_id: self.rest_key_id,
            ftp: FtpAccess {
                password_hash: self.ftp_password_hash,
                enabled: self.ftp_enabled,
                password_set_at: from_ms(self.ftp_password_set_at)?,
                locked: self.ftp_locked,
                sealed: self.ftp_sealed,
            },
            created_at: from_ms(self.created_at)?,
        })
    }
}

/// `integrations_impl!(Store, Driver)`.
macro_rules! integrations_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn apply_integrations(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::integrations::IntegrationsWrite,
            ) -> $crate::Result<()> {
                use $crate::integrations::IntegrationsWrite;
                use $crate::sql::ms;
                let sql = &self.sql.integrations;
                let (done, must_change) = match write {
                    IntegrationsWrite::Insert { integrations: i, sealed } => {
                        let q = sqlx::query(&sql.insert)
                            .bind(&i.workspace_id)
                            .bind(&i.javascript_key_id)
                            .bind(&i.javascript_key)
                            .bind(&i.rest_key_id)
                            .bind(&i.ftp.password_hash)
                            .bind(sealed.as_ref().map(|s| s.key_id.clone()))
                            .bind(sealed.as_ref().map(|s| s.blob.clone()))
                            .bind(i.ftp.enabled)
                            .bind(ms(i.ftp.password_set_at))
                            .bind(ms(i.created_at));
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::SetRestKey { workspace_id, was: Some(was), key_id } => {
                        let q = sqlx::query(&sql.set_rest_key).bind(workspace_id).bind(was).bind(key_id);
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::SetRestKey { workspace_id, was: None, key_id } => {
                        let q = sqlx::query(&sql.set_rest_key_from_none).bind(workspace_id).bind(key_id);
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::ReplaceJavascriptKey { workspace_id, was, key_id, token } => {
                        let q =
                            sqlx::query(&sql.replace_javascript).bind(workspace_id).bind(was).bind(key_id).bind(token);
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::JavascriptRolled { key_id, token } => {
                        let q = sqlx::query(&sql.javascript_rolled).bind(key_id).bind(token);
                        (q.execute(&mut *conn).await, false)
                    }
                    IntegrationsWrite::SetFtpPassword { workspace_id, hash, sealed, at } => {
                        let q = sqlx::query(&sql.set_password)
                            .bind(workspace_id)
                            .bind(hash)
                            .bind(sealed.as_ref().map(|s| s.key_id.clone()))
                            .bind(sealed.as_ref().map(|s| s.blob.clone()))
                            .bind(ms(*at));
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::SetFtpEnabled { workspace_id, enabled } => {
                        let q = sqlx::query(&sql.set_enabled).bind(workspace_id).bind(*enabled);
                        (q.execute(&mut *conn).await, true)
                    }
                    IntegrationsWrite::LockFtp { workspace_id, at } => {
                        let q = sqlx::query(&sql.lock).bind(workspace_id).bind(ms(*at));
                        (q.execute(&mut *conn).await, true)
                    }
                };
                match (done.map_err(self.classify)?.rows_affected(), must_change) {
                    (0, true) => Err($crate::StoreError::NotFound),
                    _ => Ok(()),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::integrations::Integrations for $store {
            async fn get_integrations(
                &self,
                workspace_id: &str,
            ) -> $crate::Result<Option<keyward_core::integrations::Integrations>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.integrations.get,
                    $crate::integrations::IntegrationsRow::into_integrations,
                    workspace_id
                )
            }

            async fn ftp_login(
                &self,
                username: &str,
            ) -> $crate::Result<Option<keyward_core::integrations::Integrations>> {
                if $crate::sql::unstorable(username) {
                    return Ok(None);
                }
                let p = &self.pools;
                let by_site: Option<keyward_core::integrations::Integrations> = $crate::backend::optional_row!(
                    p,
                    &p.sql.integrations.by_site_id,
                    $crate::integrations::IntegrationsRow::into_integrations,
                    username
                )?;
                if by_site.is_some() {
                    return Ok(by_site);
                }
                $crate::backend::optional_row!(
                    p,
                    &p.sql.integrations.by_workspace_id,
                    $crate::integrations::IntegrationsRow::into_integrations,
                    username
                )
            }

            async fn ftp_sealed(
                &self,
                workspace_id: &str,
            ) -> $crate::Result<Option<keyward_core::sealed::SealedSecret>> {
                let p = &self.pools;
                let row: Option<(String, Vec<u8>)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.integrations.sealed).bind(workspace_id).fetch_optional(&p.reader)
                )?;
                Ok(row.map(|(key_id, blob)| keyward_core::sealed::SealedSecret { key_id, blob }))
            }

            async fn count_ftp_failure(
                &self,
                workspace_id: &str,
                window_start: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<i64>> {
                let p = &self.pools;
                let count = sqlx::query_scalar(&p.sql.integrations.count_failure)
                    .bind($crate::sql::ms(window_start))
                    .bind($crate::sql::ms(now))
                    .bind(workspace_id)
                    .fetch_optional(&p.writer);
                p.guarded(async { count.await.map_err(p.classify) }).await
            }
        }
    };
}
pub(crate) use integrations_impl;
