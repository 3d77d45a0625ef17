//! OpenPGP keys for file encryption: statements, rows and writes, expanded
//! per driver by [`pgp_impl!`]. A private key travels sealed: the store
//! never sees it in the clear.

use keyward_core::pgp::{KeyInfo, PgpKey};
use keyward_core::sealed::SealedSecret;

use crate::Result;
use crate::sql::Dialect;

#[derive(Debug, Clone)]
pub enum PgpWrite {
    /// [`crate::StoreError::Conflict`] with [`crate::Unique::PgpKeyName`]
    /// when the workspace has a key of that name.
    InsertKey { key: PgpKey, sealed: Option<SealedSecret> },
    /// Name and description; [`crate::StoreError::NotFound`] when gone.
    UpdateKey(PgpKey),
    /// [`crate::StoreError::NotFound`] when gone.
    DeleteKey { workspace_id: String, id: String },
}

#[async_trait::async_trait]
pub trait Pgp: Send + Sync {
    /// A workspace's keys, by name.
    async fn list_pgp_keys(&self, workspace_id: &str) -> Result<Vec<PgpKey>>;
    async fn get_pgp_key(&self, workspace_id: &str, id: &str) -> Result<Option<PgpKey>>;
    /// The sealed private part of a key uploaded with it.
    async fn pgp_sealed(&self, workspace_id: &str, id: &str) -> Result<Option<SealedSecret>>;
}

const COLUMNS: &str = "id, workspace_id, name, description, fingerprint, key_id, algorithm, user_ids, \
     key_created_at, expires_at, revoked, has_passphrase, public_key, master_key_id, sealed, uploaded_at, updated_at";
/// What a listing reads: everything but the sealed part.
const VIEW_COLUMNS: &str = "id, workspace_id, name, description, fingerprint, key_id, algorithm, user_ids, \
     key_created_at, expires_at, revoked, has_passphrase, public_key, master_key_id IS NOT NULL AS private, \
     uploaded_at, updated_at";

pub struct PgpStatements {
    pub insert: String,
    pub update: String,
    pub delete: String,
    pub list: String,
    pub get: String,
    pub sealed: String,
}

impl PgpStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        let placeholders = (1..=17).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        PgpStatements {
            insert: r(&format!("INSERT INTO pgp_keys ({COLUMNS}) VALUES ({placeholders})")),
            update: r("UPDATE pgp_keys SET name = $3, description = $4, updated_at = $5 \
                 WHERE id = $1 AND workspace_id = $2"),
            delete: r("DELETE FROM pgp_keys WHERE id = $1 AND workspace_id = $2"),
            list: r(&format!("SELECT {VIEW_COLUMNS} FROM pgp_keys WHERE workspace_id = $1 ORDER BY name")),
            get: r(&format!("SELECT {VIEW_COLUMNS} FROM pgp_keys WHERE workspace_id = $1 AND id = $2")),
            sealed: r("SELECT master_key_id, sealed FROM pgp_keys \
                 WHERE workspace_id = $1 AND id = $2 AND master_key_id IS NOT NULL"),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct PgpKeyRow {
    id: String,
    workspace_id: String,
    name: String,
    description: Option<String>,
    fingerprint: String,
    key_id: String,
    algorithm: String,
    user_ids: String,
    key_created_at: i64,
    expires_at: Option<i64>,
    revoked: bool,
    has_passphrase: bool,
    public_key: String,
    private: bool,
    uploaded_at: i64,
    updated_at: i64,
}

impl PgpKeyRow {
    pub fn into_key(self) -> Result<PgpKey> {
        use crate::sql::{from_ms, opt_from_ms};
        let user_ids = serde_json::from_str(&self.user_ids).map_err(|_| crate::sql::corrupt("PGP key"))?;
        Ok(PgpKey {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            description: self.description,
            info: KeyInfo {
                fingerprint: self.fingerprint,
                key_id: self.key_id,
                algorithm: self.algorithm,
                user_ids,
                created_at: from_ms(self.key_created_at)?,
                expires_at: opt_from_ms(self.expires_at)?,
                revoked: self.revoked,
                private: self.private,
                has_passphrase: self.has_passphrase,
            },
            public_key: self.public_key,
            uploaded_at: from_ms(self.uploaded_at)?,
            updated_at: from_ms(self.updated_at)?,
        })
    }
}

/// `pgp_impl!(Store, Driver)`.
macro_rules! pgp_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn apply_pgp(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::pgp::PgpWrite,
            ) -> $crate::Result<()> {
                use $crate::pgp::PgpWrite;
                use $crate::sql::ms;
                let sql = &self.sql.pgp;
                let done = match write {
                    PgpWrite::InsertKey { key, sealed } => {
                        let i = &key.info;
                        let q = sqlx::query(&sql.insert)
                            .bind(&key.id)
                            .bind(&key.workspace_id)
                            .bind(&key.name)
                            .bind(&key.description)
                            .bind(&i.fingerprint)
                            .bind(&i.key_id)
                            .bind(&i.algorithm)
                            .bind($crate::access::strings_json(&i.user_ids))
                            .bind(ms(i.created_at))
                            .bind(i.expires_at.map(ms))
                            .bind(i.revoked)
                            .bind(i.has_passphrase)
                            .bind(&key.public_key)
                            .bind(sealed.as_ref().map(|s| s.key_id.clone()))
                            .bind(sealed.as_ref().map(|s| s.blob.clone()))
                            .bind(ms(key.uploaded_at))
                            .bind(ms(key.updated_at));
                        q.execute(&mut *conn).await.map_err(self.classify)?;
                        return Ok(());
                    }
                    PgpWrite::UpdateKey(key) => {
                        sqlx::query(&sql.update)
                            .bind(&key.id)
                            .bind(&key.workspace_id)
                            .bind(&key.name)
                            .bind(&key.description)
                            .bind(ms(key.updated_at))
                            .execute(&mut *conn)
                            .await
                    }
                    PgpWrite::DeleteKey { workspace_id, id } => {
                        sqlx::query(&sql.delete).bind(id).bind(workspace_id).execute(&mut *conn).await
                    }
                };
                match done.map_err(self.classify)?.rows_affected() {
                    0 => Err($crate::StoreError::NotFound),
                    _ => Ok(()),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::pgp::Pgp for $store {
            async fn list_pgp_keys(&self, workspace_id: &str) -> $crate::Result<Vec<keyward_core::pgp::PgpKey>> {
                let p = &self.pools;
                $crate::backend::all_rows!(p, &p.sql.pgp.list, $crate::pgp::PgpKeyRow::into_key, workspace_id)
            }

            async fn get_pgp_key(
                &self,
                workspace_id: &str,
                id: &str,
            ) -> $crate::Result<Option<keyward_core::pgp::PgpKey>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<$crate::pgp::PgpKeyRow> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.pgp.get).bind(workspace_id).bind(id).fetch_optional(&p.reader)
                )?;
                row.map($crate::pgp::PgpKeyRow::into_key).transpose()
            }

            async fn pgp_sealed(
                &self,
                workspace_id: &str,
                id: &str,
            ) -> $crate::Result<Option<keyward_core::sealed::SealedSecret>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<(String, Vec<u8>)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.pgp.sealed).bind(workspace_id).bind(id).fetch_optional(&p.reader)
                )?;
                Ok(row.map(|(key_id, blob)| keyward_core::sealed::SealedSecret { key_id, blob }))
            }
        }
    };
}
pub(crate) use pgp_impl;
