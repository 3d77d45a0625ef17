//! The SQLite store: the embedded default.
//!
//! WAL journal, foreign keys on, `synchronous=FULL` (an acknowledged write
//! survives power loss), one writer connection (SQLite allows one writer at
//! a time; a single connection avoids busy retries) and a pool of readers.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use keyward_core::hash::{HashScheme, SecretHash};
use keyward_core::key::{ApiKey, GraceSecret, KeyState, KeyType};
use keyward_core::origin::{OriginPattern, parse_ip_range};
use keyward_core::route::RouteScope;
use keyward_core::scope::{Flags, Permission, Scope};
use keyward_core::token::Environment;
use keyward_core::workspace::{KeyPolicy, Workspace};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use crate::{KeyFilter, KeyPage, Page, Result, Store, StoreError, Unique, UsageDelta};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend(format!("migration failed: {e}")))?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new().max_connections(8).connect_with(options.read_only(true)).await.map_err(backend)?
        };
        Ok(Self { writer, reader })
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn map_write(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        let msg = db.message();
        let which = if msg.contains("api_keys.name") {
            Unique::KeyName
        } else if msg.contains("api_keys.lookup_hash") {
            Unique::ImportedSecret
        } else if msg.contains("api_keys.id") {
            Unique::KeyId
        } else {
            Unique::Other
        };
        return StoreError::Conflict(which);
    }
    backend(e)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v).single().ok_or_else(|| StoreError::Backend(format!("stored time {v} is out of range")))
}

fn opt_from_ms(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_ms).transpose()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} cannot be read"))
}

fn digest(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt("hash"))
}

fn secret_hash(scheme: &str, bytes: Vec<u8>) -> Result<SecretHash> {
    Ok(SecretHash { scheme: HashScheme::parse(scheme).ok_or_else(|| corrupt("hash scheme"))?, digest: digest(bytes)? })
}

const KEY_COLUMNS: &str = "seq, id, workspace_id, name, description, key_type, environment, masked, scopes, \
     read_only, administrator, account_administrator, resources, metadata, state, legacy, lookup_prefix, \
     lookup_hash, hash_scheme, secret_hash, grace_hash_scheme, grace_hash, grace_until, expires_at, \
     created_at, updated_at, last_used_at, revoked_at, version, allowed_origins, allowed_ips";

fn key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    let get_err = |e: sqlx::Error| StoreError::Backend(e.to_string());
    let scopes: Vec<String> =
        serde_json::from_str(&row.try_get::<String, _>("scopes").map_err(get_err)?).map_err(|_| corrupt("scopes"))?;
    let scopes = scopes.iter().map(|s| Scope::parse(s).ok_or_else(|| corrupt("scope"))).collect::<Result<Vec<_>>>()?;
    let grace = match (
        row.try_get::<Option<String>, _>("grace_hash_scheme").map_err(get_err)?,
        row.try_get::<Option<Vec<u8>>, _>("grace_hash").map_err(get_err)?,
        row.try_get::<Option<i64>, _>("grace_until").map_err(get_err)?,
    ) {
        (Some(scheme), Some(hash), Some(until)) => {
            Some(GraceSecret { hash: secret_hash(&scheme, hash)?, until: from_ms(until)? })
        }
        _ => None,
    };
    Ok(ApiKey {
        id: row.try_get::<String, _>("id").map_err(get_err)?.into(),
        workspace_id: row.try_get("workspace_id").map_err(get_err)?,
        name: row.try_get("name").map_err(get_err)?,
        description: row.try_get("description").map_err(get_err)?,
        key_type: KeyType::parse(&row.try_get::<String, _>("key_type").map_err(get_err)?)
            .ok_or_else(|| corrupt("key type"))?,
        environment: Environment::parse(&row.try_get::<String, _>("environment").map_err(get_err)?)
            .ok_or_else(|| corrupt("environment"))?,
        masked: row.try_get("masked").map_err(get_err)?,
        scopes,
        flags: Flags {
            read_only: row.try_get("read_only").map_err(get_err)?,
            administrator: row.try_get("administrator").map_err(get_err)?,
            account_administrator: row.try_get("account_administrator").map_err(get_err)?,
        },
        resources: serde_json::from_str(&row.try_get::<String, _>("resources").map_err(get_err)?)
            .map_err(|_| corrupt("resources"))?,
        metadata: serde_json::from_str(&row.try_get::<String, _>("metadata").map_err(get_err)?)
            .map_err(|_| corrupt("metadata"))?,
        state: KeyState::parse(&row.try_get::<String, _>("state").map_err(get_err)?).ok_or_else(|| corrupt("state"))?,
        legacy: row.try_get("legacy").map_err(get_err)?,
        lookup_prefix: row.try_get("lookup_prefix").map_err(get_err)?,
        secret: secret_hash(
            &row.try_get::<String, _>("hash_scheme").map_err(get_err)?,
            row.try_get("secret_hash").map_err(get_err)?,
        )?,
        grace,
        expires_at: opt_from_ms(row.try_get("expires_at").map_err(get_err)?)?,
        created_at: from_ms(row.try_get("created_at").map_err(get_err)?)?,
        updated_at: from_ms(row.try_get("updated_at").map_err(get_err)?)?,
        last_used_at: opt_from_ms(row.try_get("last_used_at").map_err(get_err)?)?,
        revoked_at: opt_from_ms(row.try_get("revoked_at").map_err(get_err)?)?,
        version: row.try_get("version").map_err(get_err)?,
        allowed_origins: strings_column(row, "allowed_origins")?
            .iter()
            .map(|o| OriginPattern::parse(o).map_err(|_| corrupt("origin")))
            .collect::<Result<_>>()?,
        allowed_ips: strings_column(row, "allowed_ips")?
            .iter()
            .map(|r| parse_ip_range(r).map_err(|_| corrupt("IP range")))
            .collect::<Result<_>>()?,
    })
}

fn workspace_from_row(row: &SqliteRow) -> Result<Workspace> {
    let get_err = |e: sqlx::Error| StoreError::Backend(e.to_string());
    let days = |col: &str| -> Result<Option<u32>> {
        Ok(row.try_get::<Option<i64>, _>(col).map_err(get_err)?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    };
    Ok(Workspace {
        id: row.try_get("id").map_err(get_err)?,
        name: row.try_get("name").map_err(get_err)?,
        token_prefix: row.try_get("token_prefix").map_err(get_err)?,
        policy: KeyPolicy {
            max_keys: days("max_keys")?,
            default_key_lifetime_days: days("default_key_lifetime_days")?,
            max_key_lifetime_days: days("max_key_lifetime_days")?,
        },
        routes: serde_json::from_str::<Vec<StoredRoute>>(&row.try_get::<String, _>("routes").map_err(get_err)?)
            .map_err(|_| corrupt("routes"))?
            .iter()
            .map(|r| RouteScope::parse(&r.method, &r.path, &r.permission).map_err(|_| corrupt("route")))
            .collect::<Result<_>>()?,
        public_permissions: strings_column(row, "public_permissions")?
            .iter()
            .map(|p| Permission::parse_required(p).ok_or_else(|| corrupt("permission")))
            .collect::<Result<_>>()?,
        identity_metadata: strings_column(row, "identity_metadata")?,
        created_at: from_ms(row.try_get("created_at").map_err(get_err)?)?,
        updated_at: from_ms(row.try_get("updated_at").map_err(get_err)?)?,
    })
}

/// The values of a key in [`KEY_COLUMNS`] order, minus `seq`.
struct KeyValues {
    scopes: String,
    resources: String,
    metadata: String,
    lookup_hash: Option<Vec<u8>>,
    allowed_origins: String,
    allowed_ips: String,
}

impl KeyValues {
    fn of(key: &ApiKey) -> Self {
        let scopes: Vec<String> = key.scopes.iter().map(ToString::to_string).collect();
        KeyValues {
            scopes: serde_json::to_string(&scopes).expect("strings serialize"),
            resources: serde_json::to_string(&key.resources).expect("strings serialize"),
            metadata: serde_json::to_string(&key.metadata).expect("JSON values serialize"),
            lookup_hash: key.lookup_prefix.as_ref().map(|_| key.secret.digest.to_vec()),
            allowed_origins: json_strings(key.allowed_origins.iter().map(|o| o.as_str().to_owned())),
            allowed_ips: json_strings(key.allowed_ips.iter().map(ToString::to_string)),
        }
    }
}

fn json_strings(items: impl Iterator<Item = String>) -> String {
    serde_json::to_string(&items.collect::<Vec<_>>()).expect("strings serialize")
}

fn strings_column(row: &SqliteRow, column: &str) -> Result<Vec<String>> {
    let text: String = row.try_get(column).map_err(backend)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

/// Route scopes as stored: `[{"method", "path", "permission"}]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRoute {
    method: String,
    path: String,
    permission: String,
}

fn routes_json(routes: &[RouteScope]) -> String {
    let stored: Vec<StoredRoute> = routes
        .iter()
        .map(|r| StoredRoute { method: r.method.clone(), path: r.path.clone(), permission: r.permission.to_string() })
        .collect();
    serde_json::to_string(&stored).expect("routes serialize")
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds every column but `seq`, in [`KEY_COLUMNS`] order.
fn bind_key<'q>(q: Query<'q>, key: &'q ApiKey, v: &'q KeyValues) -> Query<'q> {
    q.bind(&*key.id)
        .bind(&key.workspace_id)
        .bind(&key.name)
        .bind(&key.description)
        .bind(key.key_type.as_str())
        .bind(key.environment.as_str())
        .bind(&key.masked)
        .bind(&v.scopes)
        .bind(key.flags.read_only)
        .bind(key.flags.administrator)
        .bind(key.flags.account_administrator)
        .bind(&v.resources)
        .bind(&v.metadata)
        .bind(key.state.as_str())
        .bind(key.legacy)
        .bind(&key.lookup_prefix)
        .bind(&v.lookup_hash)
        .bind(key.secret.scheme.as_str())
        .bind(&key.secret.digest[..])
        .bind(key.grace.map(|g| g.hash.scheme.as_str()))
        .bind(key.grace.as_ref().map(|g| g.hash.digest.to_vec()))
        .bind(key.grace.map(|g| ms(g.until)))
        .bind(key.expires_at.map(ms))
        .bind(ms(key.created_at))
        .bind(ms(key.updated_at))
        .bind(key.last_used_at.map(ms))
        .bind(key.revoked_at.map(ms))
        .bind(key.version)
        .bind(&v.allowed_origins)
        .bind(&v.allowed_ips)
}

const INSERT_COLUMNS: &str = "id, workspace_id, name, description, key_type, environment, masked, scopes, \
     read_only, administrator, account_administrator, resources, metadata, state, legacy, lookup_prefix, \
     lookup_hash, hash_scheme, secret_hash, grace_hash_scheme, grace_hash, grace_until, expires_at, \
     created_at, updated_at, last_used_at, revoked_at, version, allowed_origins, allowed_ips";
const INSERT_PLACEHOLDERS: &str =
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(backend)?;
        Ok(())
    }

    async fn meta_get_or_set(&self, name: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_one(&self.writer)
            .await
            .map_err(backend)
    }

    async fn count_workspaces(&self) -> Result<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workspaces").fetch_one(&self.writer).await.map_err(backend)?;
        Ok(n as u64)
    }

    async fn insert_workspace(&self, ws: &Workspace) -> Result<()> {
        sqlx::query(
            "INSERT INTO workspaces (id, name, token_prefix, max_keys, default_key_lifetime_days, \
             max_key_lifetime_days, created_at, updated_at, routes, public_permissions, identity_metadata) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&ws.id)
        .bind(&ws.name)
        .bind(&ws.token_prefix)
        .bind(ws.policy.max_keys)
        .bind(ws.policy.default_key_lifetime_days)
        .bind(ws.policy.max_key_lifetime_days)
        .bind(ms(ws.created_at))
        .bind(ms(ws.updated_at))
        .bind(routes_json(&ws.routes))
        .bind(json_strings(ws.public_permissions.iter().map(ToString::to_string)))
        .bind(json_strings(ws.identity_metadata.iter().cloned()))
        .execute(&self.writer)
        .await
        .map_err(map_write)?;
        Ok(())
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>> {
        sqlx::query("SELECT * FROM workspaces WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(workspace_from_row)
            .transpose()
    }

    async fn update_workspace(&self, ws: &Workspace) -> Result<()> {
        let done = sqlx::query(
            "UPDATE workspaces SET name = ?, token_prefix = ?, max_keys = ?, default_key_lifetime_days = ?, \
             max_key_lifetime_days = ?, updated_at = ?, routes = ?, public_permissions = ?, identity_metadata = ? \
             WHERE id = ?",
        )
        .bind(&ws.name)
        .bind(&ws.token_prefix)
        .bind(ws.policy.max_keys)
        .bind(ws.policy.default_key_lifetime_days)
        .bind(ws.policy.max_key_lifetime_days)
        .bind(ms(ws.updated_at))
        .bind(routes_json(&ws.routes))
        .bind(json_strings(ws.public_permissions.iter().map(ToString::to_string)))
        .bind(json_strings(ws.identity_metadata.iter().cloned()))
        .bind(&ws.id)
        .execute(&self.writer)
        .await
        .map_err(map_write)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_key(&self, key: &ApiKey, max_live_keys: Option<u32>) -> Result<()> {
        let values = KeyValues::of(key);
        let done = match max_live_keys {
            None => {
                let sql = format!("INSERT INTO api_keys ({INSERT_COLUMNS}) VALUES ({INSERT_PLACEHOLDERS})");
                bind_key(sqlx::query(&sql), key, &values).execute(&self.writer).await
            }
            Some(limit) => {
                // One statement: the count and the insert cannot interleave
                // with another writer.
                let sql = format!(
                    "INSERT INTO api_keys ({INSERT_COLUMNS}) SELECT {INSERT_PLACEHOLDERS} \
                     WHERE (SELECT COUNT(*) FROM api_keys WHERE workspace_id = ? AND state <> 'revoked') < ?"
                );
                bind_key(sqlx::query(&sql), key, &values)
                    .bind(&key.workspace_id)
                    .bind(limit)
                    .execute(&self.writer)
                    .await
            }
        }
        .map_err(map_write)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LimitReached);
        }
        Ok(())
    }

    async fn insert_keys_bulk(&self, keys: &[ApiKey]) -> Result<()> {
        let sql = format!("INSERT INTO api_keys ({INSERT_COLUMNS}) VALUES ({INSERT_PLACEHOLDERS})");
        for chunk in keys.chunks(10_000) {
            let mut tx = self.writer.begin().await.map_err(backend)?;
            for key in chunk {
                let values = KeyValues::of(key);
                bind_key(sqlx::query(&sql), key, &values).execute(&mut *tx).await.map_err(map_write)?;
            }
            tx.commit().await.map_err(backend)?;
        }
        Ok(())
    }

    async fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ? AND workspace_id = ?");
        sqlx::query(&sql)
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn find_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn find_key_by_lookup_hash(&self, digests: &[[u8; 32]]) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE lookup_hash = ?");
        for d in digests {
            let row = sqlx::query(&sql).bind(&d[..]).fetch_optional(&self.reader).await.map_err(backend)?;
            if let Some(row) = row {
                return key_from_row(&row).map(Some);
            }
        }
        Ok(None)
    }

    async fn list_lookup_prefixes(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT lookup_prefix FROM api_keys WHERE lookup_prefix IS NOT NULL")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)
    }

    async fn list_keys(&self, workspace_id: &str, filter: &KeyFilter, page: Page) -> Result<KeyPage> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ? \
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR key_type = ?3) \
             AND (?4 IS NULL OR name LIKE ?4 ESCAPE '\\') AND (?5 IS NULL OR seq < ?5) \
             ORDER BY seq DESC LIMIT ?6"
        );
        let pattern = filter.name_contains.as_ref().map(|n| {
            let escaped = n.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows = sqlx::query(&sql)
            .bind(workspace_id)
            .bind(filter.state.map(KeyState::as_str))
            .bind(filter.key_type.map(KeyType::as_str))
            .bind(pattern)
            .bind(page.after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        let more = rows.len() > page.limit as usize;
        let mut keys = Vec::with_capacity(rows.len().min(page.limit as usize));
        let mut last_seq = None;
        for row in rows.iter().take(page.limit as usize) {
            last_seq = Some(row.try_get::<i64, _>("seq").map_err(backend)?);
            keys.push(key_from_row(row)?);
        }
        Ok(KeyPage { keys, next_cursor: if more { last_seq } else { None } })
    }

    async fn update_key(&self, key: &ApiKey, expected_version: i64) -> Result<()> {
        let values = KeyValues::of(key);
        let assignments = INSERT_COLUMNS.split(", ").map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", ");
        let sql = format!("UPDATE api_keys SET {assignments} WHERE id = ? AND workspace_id = ? AND version = ?");
        let done = bind_key(sqlx::query(&sql), key, &values)
            .bind(&*key.id)
            .bind(&key.workspace_id)
            .bind(expected_version)
            .execute(&self.writer)
            .await
            .map_err(map_write)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::VersionMismatch);
        }
        Ok(())
    }

    async fn delete_key(&self, workspace_id: &str, id: &str, expected_version: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = ? AND workspace_id = ? AND version = ?")
            .bind(id)
            .bind(workspace_id)
            .bind(expected_version)
            .execute(&self.writer)
            .await
            .map_err(map_write)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::VersionMismatch);
        }
        Ok(())
    }

    async fn record_usage(&self, deltas: &[UsageDelta]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await.map_err(backend)?;
        for d in deltas {
            sqlx::query("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?")
                .bind(ms(d.last_used_at))
                .bind(&*d.key_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            sqlx::query(
                "INSERT INTO key_usage (key_id, day, count) \
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1) \
                 ON CONFLICT (key_id, day) DO UPDATE SET count = key_usage.count + excluded.count",
            )
            .bind(&*d.key_id)
            .bind(d.day.format("%Y-%m-%d").to_string())
            .bind(i64::try_from(d.count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn key_usage(&self, key_id: &str, since: NaiveDate) -> Result<Vec<(NaiveDate, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT day, count FROM key_usage WHERE key_id = ? AND day >= ? ORDER BY day")
                .bind(key_id)
                .bind(since.format("%Y-%m-%d").to_string())
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        rows.into_iter()
            .map(|(day, count)| {
                let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d").map_err(|_| corrupt("usage day"))?;
                Ok((day, count.max(0) as u64))
            })
            .collect()
    }
}
