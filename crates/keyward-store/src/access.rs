//! Custom roles and sealed (recoverable) secrets: statements, rows and
//! writes, expanded per driver by [`access_impl!`].

use keyward_core::member::Role;
use keyward_core::sealed::SealedSecret;

use crate::sql::Dialect;
use crate::{Result, StoreError};

#[derive(Debug, Clone)]
pub enum AccessWrite {
    /// [`StoreError::Conflict`] with [`crate::Unique::RoleName`] when the
    /// workspace has a role of that name.
    InsertRole(Role),
    /// Renaming a role that members or live keys hold is refused with
    /// [`StoreError::InUse`].
    UpdateRole {
        role: Role,
        old_name: String,
    },
    /// Refused with [`StoreError::InUse`] while members or live keys hold it.
    DeleteRole {
        workspace_id: String,
        id: String,
        name: String,
    },
    /// Stores (or replaces) a key's sealed secret.
    SealSecret {
        key_id: String,
        sealed: SealedSecret,
    },
    DropSealed {
        key_id: String,
    },
    /// Replaces a sealed secret (a key's, or a PGP key's private part:
    /// `kind` says which, so no id of one can name the other) re-wrapped
    /// under another master key, unless it changed meanwhile (then nothing
    /// happens).
    RewrapSealed {
        kind: SealedKind,
        key_id: String,
        from_master: String,
        sealed: SealedSecret,
    },
}

/// What a sealed record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// A recoverable key's secret (`sealed_secrets`, by key id).
    KeySecret,
    /// A PGP key's private part (`pgp_keys`, by PGP key id).
    PgpKey,
    /// A workspace's FTP password (`integrations`, by workspace id).
    FtpPassword,
    /// A webhook endpoint's signing secret (`webhook_secrets`, by its id).
    WebhookSecret,
    /// The answer kept for an `Idempotency-Key` (`idempotency_keys`, by
    /// workspace, credential and key hash, space-separated).
    IdempotentAnswer,
}

#[async_trait::async_trait]
pub trait Access: Send + Sync {
    /// A workspace's custom roles, by name.
    async fn list_roles(&self, workspace_id: &str) -> Result<Vec<Role>>;
    async fn sealed_secret(&self, key_id: &str) -> Result<Option<SealedSecret>>;
    /// The master keys that sealed secrets are wrapped with.
    async fn master_keys_in_use(&self) -> Result<Vec<String>>;
    /// Up to `limit` sealed records not wrapped by `master_key_id`, with
    /// what each belongs to.
    async fn sealed_not_under(
        &self,
        master_key_id: &str,
        limit: u32,
    ) -> Result<Vec<(SealedKind, String, SealedSecret)>>;
}

const ROLE_COLUMNS: &str = "id, workspace_id, name, description, permissions, tags, created_at, updated_at";

pub struct AccessStatements {
    pub insert_role: String,
    pub update_role: String,
    pub delete_role: String,
    pub role_members: String,
    pub role_keys: String,
    pub list_roles: String,
    pub seal: String,
    pub drop_sealed: String,
    pub rewrap: String,
    pub rewrap_pgp: String,
    pub rewrap_ftp: String,
    pub rewrap_webhook: String,
    pub rewrap_idempotent: String,
    pub sealed: String,
    pub masters: String,
    pub not_under: String,
}

impl AccessStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        AccessStatements {
            insert_role: r(&format!("INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")),
            update_role: r("UPDATE roles SET name = $3, description = $4, permissions = $5, tags = $6, \
                 updated_at = $7 WHERE id = $1 AND workspace_id = $2"),
            delete_role: r("DELETE FROM roles WHERE id = $1 AND workspace_id = $2"),
            role_members: r(&format!(
                "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND {} > 0",
                dialect.find_text("roles", "$2")
            )),
            role_keys: r(&format!(
                "SELECT COUNT(*) FROM api_keys WHERE workspace_id = $1 AND state <> 'revoked' AND {} > 0",
                dialect.find_text("roles", "$2")
            )),
            list_roles: r(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE workspace_id = $1 ORDER BY name")),
            seal: match dialect {
                Dialect::Sqlite => "INSERT INTO sealed_secrets (key_id, master_key_id, sealed) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key_id) DO UPDATE SET master_key_id = excluded.master_key_id, sealed = excluded.sealed"
                    .to_owned(),
                Dialect::Postgres => "INSERT INTO sealed_secrets (key_id, master_key_id, sealed) VALUES ($1, $2, $3) \
                     ON CONFLICT (key_id) DO UPDATE SET master_key_id = excluded.master_key_id, sealed = excluded.sealed"
                    .to_owned(),
            },
            drop_sealed: r("DELETE FROM sealed_secrets WHERE key_id = $1"),
            rewrap: r("UPDATE sealed_secrets SET master_key_id = $3, sealed = $4 WHERE key_id = $1 AND master_key_id = $2"),
            sealed: r("SELECT master_key_id, sealed FROM sealed_secrets WHERE key_id = $1"),
            // Signing keys and PGP private keys are sealed under a master key too.
            masters: "SELECT master_key_id FROM sealed_secrets UNION SELECT master_key_id FROM signing_keys \
                 UNION SELECT master_key_id FROM pgp_keys WHERE master_key_id IS NOT NULL \
                 UNION SELECT ftp_master_key_id FROM integrations WHERE ftp_master_key_id IS NOT NULL \
                 UNION SELECT master_key_id FROM webhook_secrets \
                 UNION SELECT master_key_id FROM idempotency_keys WHERE master_key_id IS NOT NULL"
                .to_owned(),
            rewrap_pgp: r("UPDATE pgp_keys SET master_key_id = $3, sealed = $4 WHERE id = $1 AND master_key_id = $2"),
            rewrap_ftp: r("UPDATE integrations SET ftp_master_key_id = $3, ftp_sealed = $4 \
                 WHERE workspace_id = $1 AND ftp_master_key_id = $2"),
            rewrap_webhook: r("UPDATE webhook_secrets SET master_key_id = $3, sealed = $4 \
                 WHERE id = $1 AND master_key_id = $2"),
            rewrap_idempotent: r("UPDATE idempotency_keys SET master_key_id = $3, body = $4 \
                 WHERE workspace_id || ' ' || credential || ' ' || key_hash = $1 AND master_key_id = $2"),
            not_under: r("SELECT 'key' AS kind, key_id, master_key_id, sealed FROM sealed_secrets \
                 WHERE master_key_id <> $1 \
                 UNION ALL SELECT 'pgp', id, master_key_id, sealed FROM pgp_keys WHERE master_key_id <> $1 \
                 UNION ALL SELECT 'ftp', workspace_id, ftp_master_key_id, ftp_sealed FROM integrations \
                 WHERE ftp_master_key_id <> $1 \
                 UNION ALL SELECT 'webhook', id, master_key_id, sealed FROM webhook_secrets WHERE master_key_id <> $1 \
                 UNION ALL SELECT 'idempotency', workspace_id || ' ' || credential || ' ' || key_hash, \
                 master_key_id, body FROM idempotency_keys WHERE master_key_id <> $1 \
                 ORDER BY 1, 2 LIMIT $2"),
        }
    }
}

/// What a JSON list holding `name` contains: the quoted name (role names
/// have no characters JSON escapes, so this is exact).
pub fn holds_role(name: &str) -> String {
    serde_json::to_string(name).expect("strings serialize")
}

pub fn strings_json(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

#[derive(sqlx::FromRow)]
pub struct RoleRow {
    id: String,
    workspace_id: String,
    name: String,
    description: Option<String>,
    permissions: String,
    tags: String,
    created_at: i64,
    updated_at: i64,
}

impl RoleRow {
    pub fn into_role(self) -> Result<Role> {
        let list = |t: &str| serde_json::from_str::<Vec<String>>(t).map_err(|_| crate::sql::corrupt("role"));
        let time = |v: i64| {
            chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, v)
                .single()
                .ok_or_else(|| StoreError::Backend(format!("stored time {v} is out of range")))
        };
        Ok(Role {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            description: self.description,
            permissions: list(&self.permissions)?,
            tags: list(&self.tags)?,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
        })
    }
}

/// `access_impl!(Store, Driver)`.
macro_rules! access_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn apply_access(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::access::AccessWrite,
            ) -> $crate::Result<()> {
                use $crate::StoreError;
                use $crate::access::{AccessWrite, strings_json};
                use $crate::sql::ms;
                let sql = &self.sql.access;
                let (done, if_none) = match write {
                    AccessWrite::InsertRole(role) => {
                        let q = sqlx::query(&sql.insert_role)
                            .bind(&role.id)
                            .bind(&role.workspace_id)
                            .bind(&role.name)
                            .bind(&role.description)
                            .bind(strings_json(&role.permissions))
                            .bind(strings_json(&role.tags))
                            .bind(ms(role.created_at))
                            .bind(ms(role.updated_at));
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::UpdateRole { role, old_name } => {
                        if *old_name != role.name {
                            self.role_unused(conn, &role.workspace_id, old_name).await?;
                        }
                        let q = sqlx::query(&sql.update_role)
                            .bind(&role.id)
                            .bind(&role.workspace_id)
                            .bind(&role.name)
                            .bind(&role.description)
                            .bind(strings_json(&role.permissions))
                            .bind(strings_json(&role.tags))
                            .bind(ms(role.updated_at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    AccessWrite::DeleteRole { workspace_id, id, name } => {
                        self.role_unused(conn, workspace_id, name).await?;
                        let q = sqlx::query(&sql.delete_role).bind(id).bind(workspace_id);
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    AccessWrite::SealSecret { key_id, sealed } => {
                        let q = sqlx::query(&sql.seal).bind(key_id).bind(&sealed.key_id).bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::DropSealed { key_id } => {
                        (sqlx::query(&sql.drop_sealed).bind(key_id).execute(&mut *conn).await, None)
                    }
                    AccessWrite::RewrapSealed { kind: $crate::SealedKind::PgpKey, key_id, from_master, sealed } => {
                        let q = sqlx::query(&sql.rewrap_pgp)
                            .bind(key_id)
                            .bind(from_master)
                            .bind(&sealed.key_id)
                            .bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::RewrapSealed {
                        kind: $crate::SealedKind::FtpPassword,
                        key_id,
                        from_master,
                        sealed,
                    } => {
                        let q = sqlx::query(&sql.rewrap_ftp)
                            .bind(key_id)
                            .bind(from_master)
                            .bind(&sealed.key_id)
                            .bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::RewrapSealed {
                        kind: $crate::SealedKind::WebhookSecret,
                        key_id,
                        from_master,
                        sealed,
                    } => {
                        let q = sqlx::query(&sql.rewrap_webhook)
                            .bind(key_id)
                            .bind(from_master)
                            .bind(&sealed.key_id)
                            .bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::RewrapSealed {
                        kind: $crate::SealedKind::IdempotentAnswer,
                        key_id,
                        from_master,
                        sealed,
                    } => {
                        let q = sqlx::query(&sql.rewrap_idempotent)
                            .bind(key_id)
                            .bind(from_master)
                            .bind(&sealed.key_id)
                            .bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                    AccessWrite::RewrapSealed { kind: $crate::SealedKind::KeySecret, key_id, from_master, sealed } => {
                        let q = sqlx::query(&sql.rewrap)
                            .bind(key_id)
                            .bind(from_master)
                            .bind(&sealed.key_id)
                            .bind(&sealed.blob);
                        (q.execute(&mut *conn).await, None)
                    }
                };
                match (done.map_err(self.classify)?.rows_affected(), if_none) {
                    (0, Some(e)) => Err(e),
                    _ => Ok(()),
                }
            }

            async fn role_unused(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                workspace_id: &str,
                name: &str,
            ) -> $crate::Result<()> {
                let pattern = $crate::access::holds_role(name);
                for statement in [&self.sql.access.role_members, &self.sql.access.role_keys] {
                    let n: i64 = sqlx::query_scalar(statement)
                        .bind(workspace_id)
                        .bind(&pattern)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(self.classify)?;
                    if n > 0 {
                        return Err($crate::StoreError::InUse);
                    }
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::access::Access for $store {
            async fn list_roles(&self, workspace_id: &str) -> $crate::Result<Vec<keyward_core::member::Role>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.access.list_roles,
                    $crate::access::RoleRow::into_role,
                    workspace_id
                )
            }

            async fn sealed_secret(&self, key_id: &str) -> $crate::Result<Option<keyward_core::sealed::SealedSecret>> {
                if $crate::sql::unstorable(key_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                let row: Option<(String, Vec<u8>)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.access.sealed).bind(key_id).fetch_optional(&p.reader)
                )?;
                Ok(row.map(|(key_id, blob)| keyward_core::sealed::SealedSecret { key_id, blob }))
            }

            async fn master_keys_in_use(&self) -> $crate::Result<Vec<String>> {
                let p = &self.pools;
                $crate::backend::read_retry!(p, sqlx::query_scalar(&p.sql.access.masters).fetch_all(&p.reader))
            }

            async fn sealed_not_under(
                &self,
                master_key_id: &str,
                limit: u32,
            ) -> $crate::Result<Vec<($crate::SealedKind, String, keyward_core::sealed::SealedSecret)>> {
                let p = &self.pools;
                let rows: Vec<(String, String, String, Vec<u8>)> = $crate::backend::read_retry!(
                    p,
                    sqlx::query_as(&p.sql.access.not_under)
                        .bind(master_key_id)
                        .bind(i64::from(limit))
                        .fetch_all(&p.writer)
                )?;
                Ok(rows
                    .into_iter()
                    .map(|(kind, id, master, blob)| {
                        let kind = match kind.as_str() {
                            "pgp" => $crate::SealedKind::PgpKey,
                            "ftp" => $crate::SealedKind::FtpPassword,
                            "webhook" => $crate::SealedKind::WebhookSecret,
                            "idempotency" => $crate::SealedKind::IdempotentAnswer,
                            _ => $crate::SealedKind::KeySecret,
                        };
                        (kind, id, keyward_core::sealed::SealedSecret { key_id: master, blob })
                    })
                    .collect())
            }
        }
    };
}
pub(crate) use access_impl;
