//! What both backends share: the statements (written once with `$n`
//! placeholders; SQLite reads them as `?n`), the rows as read, and the
//! values as bound. Times are integer milliseconds since the epoch, JSON is
//! text, on both backends.

use chrono::{DateTime, TimeZone, Utc};
use keyward_core::credits::{Credits, Refill, RefillInterval};
use keyward_core::hash::{HashScheme, SecretHash};
use keyward_core::identity::Identity;
use keyward_core::key::{ApiKey, GraceSecret, KeyState, KeyType};
use keyward_core::origin::{OriginPattern, parse_ip_range};
use keyward_core::ratelimit::RateLimit;
use keyward_core::route::RouteScope;
use keyward_core::scope::{Flags, Permission, Scope};
use keyward_core::token::Environment;
use keyward_core::workspace::{KeyPolicy, LockoutPolicy, Workspace};

use crate::{Result, StoreError, Unique};

/// Which SQL dialect a statement is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The position of `needle` in `haystack` (1-based, 0 when absent),
    /// case-sensitive on both backends.
    pub fn find_text(self, haystack: &str, needle: &str) -> String {
        match self {
            Dialect::Postgres => format!("strpos({haystack}, {needle})"),
            Dialect::Sqlite => format!("instr({haystack}, {needle})"),
        }
    }

    /// `$1` → `?1` for SQLite (both mean "the first bound value").
    pub fn render(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => sql.replace('$', "?"),
        }
    }
}

/// Every column of `api_keys` but `seq`, in bind order.
pub const KEY_COLUMNS: &str = "id, workspace_id, name, description, key_type, environment, masked, scopes, \
     read_only, administrator, account_administrator, resources, metadata, state, legacy, lookup_prefix, \
     lookup_hash, hash_scheme, secret_hash, grace_hash_scheme, grace_hash, grace_until, expires_at, \
     created_at, updated_at, last_used_at, revoked_at, version, allowed_origins, allowed_ips, \
     ratelimits, identity_id, external_id, roles, recoverable, client_id, grace_client_id, replica_hash, \
     grace_replica_hash";
pub const KEY_COLUMN_COUNT: usize = 39;

/// The credit columns: written on insert and by the credit statements only
/// (an edit of other settings never overwrites a concurrent spend).
const CREDIT_COLUMNS: &str = "credits_remaining, credits_refill, credits_refilled_at";
/// What a key is read with.
pub(crate) const SELECT_KEY: &str = "seq, id, workspace_id, name, description, key_type, environment, masked, scopes, \
     read_only, administrator, account_administrator, resources, metadata, state, legacy, lookup_prefix, \
     lookup_hash, hash_scheme, secret_hash, grace_hash_scheme, grace_hash, grace_until, expires_at, \
     created_at, updated_at, last_used_at, revoked_at, version, allowed_origins, allowed_ips, \
     ratelimits, identity_id, external_id, roles, recoverable, client_id, grace_client_id, replica_hash, \
     grace_replica_hash, credits_remaining, credits_refill";

const IDENTITY_COLUMNS: &str = "id, workspace_id, external_id, meta, ratelimits, created_at, updated_at, version";

const WORKSPACE_COLUMNS: &str = "id, name, token_prefix, max_keys, default_key_lifetime_days, \
     max_key_lifetime_days, created_at, updated_at, routes, public_permissions, identity_metadata, lockout, \
     require_expiry, permission_catalogue, allow_recoverable, site_id, notices";

fn placeholders(from: usize, count: usize) -> String {
    (from..from + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Keys per statement of a bulk insert (rows × columns stays under both
/// backends' limits on parameters).
pub const BULK_ROWS: usize = 200;

/// The statements, rendered once per store for its dialect.
pub struct Statements {
    /// Opens a write transaction. On SQLite `BEGIN IMMEDIATE` takes the
    /// write lock first, waiting out the busy timeout: a deferred
    /// transaction that reads and then writes while another process
    /// (an operator command beside the server) has committed fails at once
    /// with `database is locked`, whatever the timeout.
    pub begin_write: &'static str,
    pub insert_key: String,
    /// [`BULK_ROWS`] keys at once.
    pub insert_keys_bulk: String,
    pub insert_key_within_limit: String,
    /// Serialises key inserts of one workspace across nodes (PostgreSQL).
    pub lock_workspace: Option<String>,
    pub update_key: String,
    pub delete_key: String,
    pub insert_workspace: String,
    pub update_workspace: String,
    pub get_workspace: String,
    pub list_workspaces: String,
    pub get_key: String,
    pub find_key: String,
    pub find_key_by_lookup_hash: String,
    pub find_key_by_client_id: String,
    pub list_keys: String,
    pub touch_last_used: String,
    pub count_live_keys: String,
    pub meta_insert: String,
    pub meta_claim: String,
    pub meta_get: String,
    pub set_credits: String,
    pub credits_set: String,
    pub credits_increment: String,
    pub credits_decrement: String,
    pub credits_refill: String,
    pub credits_spend: String,
    pub credits_read: String,
    pub count_failure: String,
    pub lock_key: String,
    pub insert_identity: String,
    pub update_identity: String,
    pub identity_live_keys: String,
    pub detach_identity: String,
    pub delete_identity: String,
    pub get_identity: String,
    pub find_identity: String,
    pub identity_by_external_id: String,
    pub list_identities: String,
    /// Tells other nodes what a write changed, delivered at commit
    /// (PostgreSQL): `SELECT pg_notify(channel, payload)`.
    pub notify: Option<String>,
    pub people: crate::people::PeopleStatements,
    pub access: crate::access::AccessStatements,
    pub audit: crate::audit::AuditStatements,
    pub oauth: crate::oauth::OAuthStatements,
    pub pgp: crate::pgp::PgpStatements,
    pub integrations: crate::integrations::IntegrationsStatements,
    pub webhooks: crate::webhooks::WebhooksStatements,
    pub idempotency: crate::idempotency::IdempotencyStatements,
}

impl Statements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        let n = KEY_COLUMN_COUNT;
        let assignments = KEY_COLUMNS
            .split(", ")
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        Statements {
            begin_write: if dialect == Dialect::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" },
            insert_key: r(&format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}, {CREDIT_COLUMNS}) VALUES ({})",
                placeholders(1, n + 3)
            )),
            // On SQLite, anonymous parameters: the driver looks each
            // numbered one up by name, in time that grows with their number.
            insert_keys_bulk: format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}, {CREDIT_COLUMNS}) VALUES {}",
                (0..BULK_ROWS)
                    .map(|i| match dialect {
                        Dialect::Sqlite => format!("({})", vec!["?"; n + 3].join(", ")),
                        Dialect::Postgres => format!("({})", placeholders(1 + i * (n + 3), n + 3)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // The count and the insert are one statement; on PostgreSQL the
            // workspace row lock taken first orders concurrent inserts.
            insert_key_within_limit: r(&format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}, {CREDIT_COLUMNS}) SELECT {} \
                 WHERE (SELECT COUNT(*) FROM api_keys WHERE workspace_id = ${} AND state <> 'revoked') < ${}",
                placeholders(1, n + 3),
                n + 4,
                n + 5
            )),
            lock_workspace: (dialect == Dialect::Postgres)
                .then(|| "SELECT id FROM workspaces WHERE id = $1 FOR UPDATE".to_owned()),
            update_key: r(&format!(
                "UPDATE api_keys SET {assignments} WHERE id = ${} AND workspace_id = ${} AND version = ${}",
                n + 1,
                n + 2,
                n + 3
            )),
            delete_key: r("DELETE FROM api_keys WHERE id = $1 AND workspace_id = $2 AND version = $3"),
            insert_workspace: r(&format!(
                "INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES ({})",
                placeholders(1, 17)
            )),
            update_workspace: r("UPDATE workspaces SET name = $2, token_prefix = $3, max_keys = $4, \
                 default_key_lifetime_days = $5, max_key_lifetime_days = $6, created_at = $7, updated_at = $8, \
                 routes = $9, public_permissions = $10, identity_metadata = $11, lockout = $12, \
                 require_expiry = $13, permission_catalogue = $14, allow_recoverable = $15, site_id = $16, notices = $17 \
                 WHERE id = $1"),
            get_workspace: r(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1")),
            list_workspaces: format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id"),
            get_key: r(&format!("SELECT {SELECT_KEY} FROM api_keys WHERE id = $1 AND workspace_id = $2")),
            find_key: r(&format!("SELECT {SELECT_KEY} FROM api_keys WHERE id = $1")),
            find_key_by_lookup_hash: r(&format!("SELECT {SELECT_KEY} FROM api_keys WHERE lookup_hash = $1")),
            find_key_by_client_id: r(&format!(
                "SELECT {SELECT_KEY} FROM api_keys WHERE client_id = $1 OR grace_client_id = $1 \
                 ORDER BY (client_id = $1) DESC LIMIT 1"
            )),
            list_keys: r(&format!(
                "SELECT {SELECT_KEY} FROM api_keys WHERE workspace_id = $1 \
                 AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR key_type = $3) \
                 AND ($4 IS NULL OR LOWER(name) LIKE $4 ESCAPE '\\') AND ($5 IS NULL OR seq < $5) \
                 ORDER BY seq DESC LIMIT $6"
            )),
            touch_last_used: r("UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)"),
            count_live_keys: r("SELECT COUNT(*) FROM api_keys WHERE workspace_id = $1 AND state <> 'revoked'"),
            meta_insert: r("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"),
            meta_get: r("SELECT value FROM meta WHERE name = $1"),
            set_credits: r(
                "UPDATE api_keys SET credits_remaining = $1, credits_refill = $2, credits_refilled_at = $3 \
                 WHERE id = $4 AND workspace_id = $5",
            ),
            credits_set: r("UPDATE api_keys SET credits_remaining = $1 \
                 WHERE id = $2 AND workspace_id = $3 AND credits_remaining IS NOT NULL"),
            credits_increment: r("UPDATE api_keys SET credits_remaining = CASE WHEN credits_remaining + $1 > $4 \
                 THEN $4 ELSE credits_remaining + $1 END \
                 WHERE id = $2 AND workspace_id = $3 AND credits_remaining IS NOT NULL"),
            credits_decrement: r("UPDATE api_keys SET credits_remaining = CASE WHEN credits_remaining < $1 \
                 THEN 0 ELSE credits_remaining - $1 END \
                 WHERE id = $2 AND workspace_id = $3 AND credits_remaining IS NOT NULL"),
            // Once per period, whichever node comes first.
            credits_refill: r("UPDATE api_keys SET credits_remaining = $1, credits_refilled_at = $2 \
                 WHERE id = $3 AND credits_remaining IS NOT NULL \
                 AND (credits_refilled_at IS NULL OR credits_refilled_at < $2)"),
            credits_spend: r("UPDATE api_keys SET credits_remaining = credits_remaining - $1 \
                 WHERE id = $2 AND credits_remaining >= $1 RETURNING credits_remaining"),
            credits_read: r("SELECT credits_remaining FROM api_keys WHERE id = $1"),
            // A wrong secret for an active key: counted in the window that
            // began with the first failure still inside it.
            count_failure: r("UPDATE api_keys SET \
                 failed_attempts = CASE WHEN failures_since IS NULL OR failures_since < $1 THEN 1 \
                 ELSE failed_attempts + 1 END, \
                 failures_since = CASE WHEN failures_since IS NULL OR failures_since < $1 THEN $2 \
                 ELSE failures_since END \
                 WHERE id = $3 AND state = 'active' RETURNING failed_attempts"),
            lock_key: r("UPDATE api_keys SET state = 'locked', version = version + 1, updated_at = $1, \
                 failed_attempts = 0, failures_since = NULL WHERE id = $2 AND state = 'active'"),
            meta_claim: r("INSERT INTO meta (name, value) VALUES ($1, $2)"),
            insert_identity: r(&format!("INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES ({})", placeholders(1, 8))),
            update_identity: r("UPDATE identities SET external_id = $3, meta = $4, ratelimits = $5, created_at = $6, \
                 updated_at = $7, version = $8 WHERE id = $1 AND workspace_id = $2 AND version = $9"),
            identity_live_keys: r("SELECT COUNT(*) FROM api_keys \
                 WHERE identity_id = $1 AND workspace_id = $2 AND state <> 'revoked'"),
            detach_identity: r("UPDATE api_keys SET identity_id = NULL, external_id = NULL, version = version + 1 \
                 WHERE identity_id = $1 AND workspace_id = $2"),
            delete_identity: r("DELETE FROM identities WHERE id = $1 AND workspace_id = $2"),
            get_identity: r(&format!(
                "SELECT seq, {IDENTITY_COLUMNS} FROM identities WHERE id = $1 AND workspace_id = $2"
            )),
            find_identity: r(&format!("SELECT seq, {IDENTITY_COLUMNS} FROM identities WHERE id = $1")),
            identity_by_external_id: r(&format!(
                "SELECT seq, {IDENTITY_COLUMNS} FROM identities WHERE workspace_id = $1 AND external_id = $2"
            )),
            list_identities: r(&format!(
                "SELECT seq, {IDENTITY_COLUMNS} FROM identities WHERE workspace_id = $1 \
                 AND ($2 IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3"
            )),
            notify: (dialect == Dialect::Postgres).then(|| "SELECT pg_notify($1, $2)".to_owned()),
            people: crate::people::PeopleStatements::new(dialect),
            access: crate::access::AccessStatements::new(dialect),
            audit: crate::audit::AuditStatements::new(dialect),
            oauth: crate::oauth::OAuthStatements::new(dialect),
            pgp: crate::pgp::PgpStatements::new(dialect),
            integrations: crate::integrations::IntegrationsStatements::new(dialect),
            webhooks: crate::webhooks::WebhooksStatements::new(dialect),
            idempotency: crate::idempotency::IdempotencyStatements::new(dialect),
        }
    }
}

/// A string no stored text can contain (PostgreSQL text cannot hold NUL):
/// a lookup by it finds nothing, on both backends alike.
pub fn unstorable(s: &str) -> bool {
    s.contains('\0')
}

/// The notice channel of a database (one per schema, so that databases
/// sharing a server never see each other's notices).
pub fn notice_channel(schema: &str) -> String {
    format!("keyward_{schema}")
}

/// A notice's payload: `node|k|id`, `node|d|workspace|id`, `node|w|id` or `node|p|`.
pub fn notice_payload(node: &str, invalidation: &crate::Invalidation) -> String {
    use crate::Invalidation::*;
    match invalidation {
        Key(id) => format!("{node}|k|{id}"),
        KeyDeleted { workspace_id, id } => format!("{node}|d|{workspace_id}|{id}"),
        Workspace(id) => format!("{node}|w|{id}"),
        Identity(id) => format!("{node}|i|{id}"),
        AccessTokenRevoked(jti) => format!("{node}|t|{jti}"),
        SigningKeys => format!("{node}|s|"),
        ImportPrefixes | Resync => format!("{node}|p|"),
    }
}

/// Reads a payload; `None` for this node's own notices and unknown ones.
pub fn parse_notice(own_node: &str, payload: &str) -> Option<crate::Invalidation> {
    let mut parts = payload.splitn(3, '|');
    let (node, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    if node == own_node {
        return None;
    }
    match kind {
        "k" => Some(crate::Invalidation::Key(id.to_owned())),
        "d" => {
            let (workspace_id, id) = id.split_once('|')?;
            Some(crate::Invalidation::KeyDeleted { workspace_id: workspace_id.to_owned(), id: id.to_owned() })
        }
        "w" => Some(crate::Invalidation::Workspace(id.to_owned())),
        "i" => Some(crate::Invalidation::Identity(id.to_owned())),
        "p" => Some(crate::Invalidation::ImportPrefixes),
        "t" => Some(crate::Invalidation::AccessTokenRevoked(id.to_owned())),
        "s" => Some(crate::Invalidation::SigningKeys),
        _ => None,
    }
}

/// The notices a write sends.
pub fn invalidations(write: &crate::Write) -> Vec<crate::Invalidation> {
    use crate::{Invalidation, Write};
    match write {
        Write::InsertWorkspace(ws) | Write::UpdateWorkspace(ws) => vec![Invalidation::Workspace(ws.id.clone())],
        Write::InsertKey { key, .. } => {
            let mut v = vec![Invalidation::Key(key.id.to_string())];
            if key.lookup_prefix.is_some() {
                v.push(Invalidation::ImportPrefixes);
            }
            v
        }
        Write::UpdateKey { key, .. } => vec![Invalidation::Key(key.id.to_string())],
        Write::DeleteKey { workspace_id, id, .. } => {
            vec![Invalidation::KeyDeleted { workspace_id: workspace_id.clone(), id: id.clone() }]
        }
        Write::SetCredits { key_id, .. } | Write::ChangeCredits { key_id, .. } => {
            vec![Invalidation::Key(key_id.clone())]
        }
        Write::LockKey { key_id, .. } => vec![Invalidation::Key(key_id.clone())],
        // Sessions and memberships are read from the database on every
        // use: nothing is held in memory to drop.
        Write::InsertMeta { .. } | Write::People(_) | Write::Audit(_) => Vec::new(),
        // A workspace's roles are part of what its keys verify against.
        Write::Access(crate::AccessWrite::InsertRole(role) | crate::AccessWrite::UpdateRole { role, .. }) => {
            vec![Invalidation::Workspace(role.workspace_id.clone())]
        }
        Write::Access(crate::AccessWrite::DeleteRole { workspace_id, .. }) => {
            vec![Invalidation::Workspace(workspace_id.clone())]
        }
        Write::Access(_) => Vec::new(),
        Write::InsertIdentity(i) | Write::UpdateIdentity { identity: i, .. } => {
            vec![Invalidation::Identity(i.id.clone())]
        }
        // Its keys lose it too (each key's cache entry is dropped by id on
        // the other nodes as it ages; the identity's own notice is enough
        // for the limits).
        Write::DeleteIdentity { id, .. } => vec![Invalidation::Identity(id.clone())],
        Write::OAuth(crate::OAuthWrite::RevokeAccessToken { jti, .. }) => {
            vec![Invalidation::AccessTokenRevoked(jti.clone())]
        }
        Write::OAuth(crate::OAuthWrite::InsertSigningKey(_) | crate::OAuthWrite::RetireSigningKeys { .. }) => {
            vec![Invalidation::SigningKeys]
        }
        // Refresh tokens are read from the database on every use.
        Write::OAuth(_) => Vec::new(),
        // PGP keys are read from the database on every use.
        Write::Pgp(_) => Vec::new(),
        // Integration credentials are read from the database on every use.
        Write::Integrations(_) => Vec::new(),
        // Endpoints are read from the database by every delivery.
        Write::Webhooks(_) => Vec::new(),
        // Read from the database by every retry.
        Write::Idempotency(_) => Vec::new(),
    }
}

/// The `LIKE` pattern for a case-insensitive substring match.
pub fn name_pattern(needle: &str) -> String {
    let escaped = needle.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// Unique constraints by name; both backends' schemas use these names.
pub fn unique_by_constraint(name: &str) -> Unique {
    match name {
        "api_keys_live_name" => Unique::KeyName,
        "api_keys_lookup_hash" => Unique::ImportedSecret,
        "api_keys_id_unique" => Unique::KeyId,
        "identities_external_id" => Unique::IdentityExternalId,
        "members_email_unique" => Unique::MemberEmail,
        "memberships_pk" => Unique::Membership,
        "roles_name" => Unique::RoleName,
        "pgp_keys_name" => Unique::PgpKeyName,
        "workspaces_site_id" => Unique::SiteId,
        "integrations_pkey" => Unique::Integrations,
        _ => Unique::Other,
    }
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v).single().ok_or_else(|| StoreError::Backend(format!("stored time {v} is out of range")))
}

pub(crate) fn opt_from_ms(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_ms).transpose()
}

pub fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("stored {what} cannot be read"))
}

fn digest(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt("hash"))
}

fn secret_hash(scheme: &str, bytes: Vec<u8>) -> Result<SecretHash> {
    Ok(SecretHash { scheme: HashScheme::parse(scheme).ok_or_else(|| corrupt("hash scheme"))?, digest: digest(bytes)? })
}

fn strings(text: &str, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

fn json_strings(items: impl Iterator<Item = String>) -> String {
    serde_json::to_string(&items.collect::<Vec<_>>()).expect("strings serialize")
}

/// A row of `api_keys` as both drivers decode it.
#[derive(sqlx::FromRow)]
pub struct KeyRow {
    pub seq: i64,
    id: String,
    workspace_id: String,
    name: String,
    description: Option<String>,
    key_type: String,
    environment: String,
    masked: String,
    scopes: String,
    read_only: bool,
    administrator: bool,
    account_administrator: bool,
    resources: String,
    metadata: String,
    state: String,
    legacy: bool,
    lookup_prefix: Option<String>,
    hash_scheme: String,
    secret_hash: Vec<u8>,
    grace_hash_scheme: Option<String>,
    grace_hash: Option<Vec<u8>>,
    grace_until: Option<i64>,
    expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    version: i64,
    allowed_origins: String,
    allowed_ips: String,
    ratelimits: String,
    identity_id: Option<String>,
    external_id: Option<String>,
    roles: String,
    recoverable: bool,
    client_id: Option<String>,
    grace_client_id: Option<String>,
    replica_hash: Option<Vec<u8>>,
    grace_replica_hash: Option<Vec<u8>>,
    credits_remaining: Option<i64>,
    credits_refill: Option<String>,
}

impl KeyRow {
    pub fn into_key(self) -> Result<ApiKey> {
        let scopes = strings(&self.scopes, "scopes")?
            .iter()
            .map(|s| Scope::parse(s).ok_or_else(|| corrupt("scope")))
            .collect::<Result<Vec<_>>>()?;
        let grace = match (self.grace_hash_scheme, self.grace_hash, self.grace_until) {
            (Some(scheme), Some(hash), Some(until)) => Some(GraceSecret {
                hash: secret_hash(&scheme, hash)?,
                until: from_ms(until)?,
                replica: self.grace_replica_hash.map(digest).transpose()?,
            }),
            _ => None,
        };
        Ok(ApiKey {
            id: self.id.into(),
            workspace_id: self.workspace_id,
            name: self.name,
            description: self.description,
            key_type: KeyType::parse(&self.key_type).ok_or_else(|| corrupt("key type"))?,
            environment: Environment::parse(&self.environment).ok_or_else(|| corrupt("environment"))?,
            masked: self.masked,
            scopes,
            flags: Flags {
                read_only: self.read_only,
                administrator: self.administrator,
                account_administrator: self.account_administrator,
            },
            resources: strings(&self.resources, "resources")?,
            metadata: serde_json::from_str(&self.metadata).map_err(|_| corrupt("metadata"))?,
            state: KeyState::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            legacy: self.legacy,
            lookup_prefix: self.lookup_prefix,
            secret: secret_hash(&self.hash_scheme, self.secret_hash)?,
            replica: self.replica_hash.map(digest).transpose()?,
            grace,
            expires_at: opt_from_ms(self.expires_at)?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            last_used_at: opt_from_ms(self.last_used_at)?,
            revoked_at: opt_from_ms(self.revoked_at)?,
            version: self.version,
            allowed_origins: strings(&self.allowed_origins, "allowed_origins")?
                .iter()
                .map(|o| OriginPattern::parse(o).map_err(|_| corrupt("origin")))
                .collect::<Result<_>>()?,
            allowed_ips: strings(&self.allowed_ips, "allowed_ips")?
                .iter()
                .map(|r| parse_ip_range(r).map_err(|_| corrupt("IP range")))
                .collect::<Result<_>>()?,
            ratelimits: ratelimits_from_json(&self.ratelimits)?,
            identity: match (self.identity_id, self.external_id) {
                (Some(id), Some(external_id)) => Some(keyward_core::key::KeyIdentity { id, external_id }),
                _ => None,
            },
            roles: strings(&self.roles, "roles")?,
            recoverable: self.recoverable,
            client_id: self.client_id,
            grace_client_id: self.grace_client_id,
            credits: match self.credits_remaining {
                None => None,
                Some(remaining) => Some(Credits {
                    remaining,
                    refill: self.credits_refill.as_deref().map(refill_from_json).transpose()?,
                }),
            },
        })
    }
}

/// A rate limit as stored: `{"name", "limit", "durationMs", "autoApply"}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLimit {
    name: String,
    limit: i64,
    duration_ms: i64,
    auto_apply: bool,
}

fn ratelimits_from_json(text: &str) -> Result<Vec<RateLimit>> {
    let stored: Vec<StoredLimit> = serde_json::from_str(text).map_err(|_| corrupt("rate limits"))?;
    Ok(stored
        .into_iter()
        .map(|l| RateLimit { name: l.name, limit: l.limit, duration_ms: l.duration_ms, auto_apply: l.auto_apply })
        .collect())
}

pub fn ratelimits_json(limits: &[RateLimit]) -> String {
    let stored: Vec<StoredLimit> = limits
        .iter()
        .map(|l| StoredLimit {
            name: l.name.clone(),
            limit: l.limit,
            duration_ms: l.duration_ms,
            auto_apply: l.auto_apply,
        })
        .collect();
    serde_json::to_string(&stored).expect("rate limits serialize")
}

/// A row of `identities` as both drivers decode it.
#[derive(sqlx::FromRow)]
pub struct IdentityRow {
    pub seq: i64,
    id: String,
    workspace_id: String,
    external_id: String,
    meta: String,
    ratelimits: String,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl IdentityRow {
    pub fn into_identity(self) -> Result<Identity> {
        Ok(Identity {
            id: self.id,
            workspace_id: self.workspace_id,
            external_id: self.external_id,
            meta: serde_json::from_str(&self.meta).map_err(|_| corrupt("identity meta"))?,
            ratelimits: ratelimits_from_json(&self.ratelimits)?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            version: self.version,
        })
    }
}

/// A refill as stored: `{"interval", "amount", "refillDay"}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRefill {
    interval: String,
    amount: i64,
    refill_day: Option<u32>,
}

fn refill_from_json(text: &str) -> Result<Refill> {
    let r: StoredRefill = serde_json::from_str(text).map_err(|_| corrupt("credit refill"))?;
    Ok(Refill {
        interval: RefillInterval::parse(&r.interval).ok_or_else(|| corrupt("credit refill"))?,
        amount: r.amount,
        refill_day: r.refill_day,
    })
}

pub fn refill_json(refill: &Refill) -> String {
    let stored = StoredRefill {
        interval: refill.interval.as_str().to_owned(),
        amount: refill.amount,
        refill_day: refill.refill_day,
    };
    serde_json::to_string(&stored).expect("a refill serializes")
}

/// The credit column values of a key: remaining, refill, refilled at.
pub fn credit_values(credits: Option<&Credits>, at: DateTime<Utc>) -> (Option<i64>, Option<String>, Option<i64>) {
    match credits {
        None => (None, None, None),
        Some(c) => (Some(c.remaining), c.refill.as_ref().map(refill_json), Some(ms(at))),
    }
}

/// A row of `workspaces` as both drivers decode it.
#[derive(sqlx::FromRow)]
pub struct WorkspaceRow {
    id: String,
    name: String,
    token_prefix: String,
    max_keys: Option<i64>,
    default_key_lifetime_days: Option<i64>,
    max_key_lifetime_days: Option<i64>,
    created_at: i64,
    updated_at: i64,
    routes: String,
    public_permissions: String,
    identity_metadata: String,
    lockout: Option<String>,
    require_expiry: bool,
    permission_catalogue: String,
    allow_recoverable: bool,
    site_id: Option<String>,
    notices: Option<String>,
}

/// Notices as stored: `{"leakPolicy", "expiryNoticeDays", "creditsLowThreshold", "unusedDays"}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredNotices {
    leak_policy: String,
    expiry_notice_days: Vec<u32>,
    credits_low_threshold: Option<i64>,
    unused_days: u32,
}

pub(crate) fn notices_json(n: &keyward_core::workspace::Notices) -> String {
    serde_json::to_string(&StoredNotices {
        leak_policy: n.leak_policy.as_str().to_owned(),
        expiry_notice_days: n.expiry_notice_days.clone(),
        credits_low_threshold: n.credits_low_threshold,
        unused_days: n.unused_days,
    })
    .expect("notices serialize")
}

/// A lockout policy as stored: `{"threshold", "windowMinutes"}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLockout {
    threshold: u32,
    window_minutes: u32,
}

impl WorkspaceRow {
    pub fn into_workspace(self) -> Result<Workspace> {
        let days = |v: Option<i64>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        Ok(Workspace {
            id: self.id,
            name: self.name,
            token_prefix: self.token_prefix,
            policy: KeyPolicy {
                max_keys: days(self.max_keys),
                default_key_lifetime_days: days(self.default_key_lifetime_days),
                max_key_lifetime_days: days(self.max_key_lifetime_days),
                require_expiry: self.require_expiry,
            },
            routes: serde_json::from_str::<Vec<StoredRoute>>(&self.routes)
                .map_err(|_| corrupt("routes"))?
                .iter()
                .map(|r| RouteScope::parse(&r.method, &r.path, &r.permission).map_err(|_| corrupt("route")))
                .collect::<Result<_>>()?,
            public_permissions: strings(&self.public_permissions, "public_permissions")?
                .iter()
                .map(|p| Permission::parse_required(p).ok_or_else(|| corrupt("permission")))
                .collect::<Result<_>>()?,
            identity_metadata: strings(&self.identity_metadata, "identity_metadata")?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            lockout: match self.lockout {
                None => LockoutPolicy::default(),
                Some(text) => {
                    let l: StoredLockout = serde_json::from_str(&text).map_err(|_| corrupt("lockout"))?;
                    LockoutPolicy { threshold: l.threshold, window_minutes: l.window_minutes }
                }
            },
            catalogue: serde_json::from_str(&self.permission_catalogue).map_err(|_| corrupt("permission catalogue"))?,
            allow_recoverable: self.allow_recoverable,
            site_id: self.site_id,
            notices: match self.notices {
                None => keyward_core::workspace::Notices::default(),
                Some(text) => {
                    let n: StoredNotices = serde_json::from_str(&text).map_err(|_| corrupt("notices"))?;
                    keyward_core::workspace::Notices {
                        leak_policy: keyward_core::workspace::LeakPolicy::parse(&n.leak_policy)
                            .map_err(|_| corrupt("leak policy"))?,
                        expiry_notice_days: n.expiry_notice_days,
                        credits_low_threshold: n.credits_low_threshold,
                        unused_days: n.unused_days,
                    }
                }
            },
        })
    }
}

/// Route scopes as stored: `[{"method", "path", "permission"}]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRoute {
    method: String,
    path: String,
    permission: String,
}

/// The text and blob values of a key that are not plain fields.
pub struct KeyValues {
    pub scopes: String,
    pub resources: String,
    pub metadata: String,
    pub lookup_hash: Option<Vec<u8>>,
    pub allowed_origins: String,
    pub allowed_ips: String,
    pub ratelimits: String,
    pub roles: String,
}

impl KeyValues {
    pub fn of(key: &ApiKey) -> Self {
        let scopes: Vec<String> = key.scopes.iter().map(ToString::to_string).collect();
        KeyValues {
            scopes: serde_json::to_string(&scopes).expect("strings serialize"),
            resources: serde_json::to_string(&key.resources).expect("strings serialize"),
            metadata: serde_json::to_string(&key.metadata).expect("JSON values serialize"),
            lookup_hash: key.lookup_prefix.as_ref().map(|_| key.secret.digest.to_vec()),
            allowed_origins: json_strings(key.allowed_origins.iter().map(|o| o.as_str().to_owned())),
            allowed_ips: json_strings(key.allowed_ips.iter().map(ToString::to_string)),
            ratelimits: ratelimits_json(&key.ratelimits),
            roles: json_strings(key.roles.iter().cloned()),
        }
    }
}

/// The text values of a workspace that are not plain fields.
pub struct WorkspaceValues {
    pub routes: String,
    pub public_permissions: String,
    pub identity_metadata: String,
    pub lockout: String,
    pub catalogue: String,
}

impl WorkspaceValues {
    pub fn of(ws: &Workspace) -> Self {
        let routes: Vec<StoredRoute> = ws
            .routes
            .iter()
            .map(|r| StoredRoute {
                method: r.method.clone(),
                path: r.path.clone(),
                permission: r.permission.to_string(),
            })
            .collect();
        WorkspaceValues {
            routes: serde_json::to_string(&routes).expect("routes serialize"),
            public_permissions: json_strings(ws.public_permissions.iter().map(ToString::to_string)),
            identity_metadata: json_strings(ws.identity_metadata.iter().cloned()),
            lockout: serde_json::to_string(&StoredLockout {
                threshold: ws.lockout.threshold,
                window_minutes: ws.lockout.window_minutes,
            })
            .expect("a lockout policy serializes"),
            catalogue: serde_json::to_string(&ws.catalogue).expect("a catalogue serializes"),
        }
    }
}

/// Binds every key column in [`KEY_COLUMNS`] order (any driver).
macro_rules! bind_key {
    ($q:expr, $key:expr, $v:expr) => {{
        let (key, v) = ($key, $v);
        $q.bind(&*key.id)
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
            .bind(key.grace.map(|g| $crate::sql::ms(g.until)))
            .bind(key.expires_at.map($crate::sql::ms))
            .bind($crate::sql::ms(key.created_at))
            .bind($crate::sql::ms(key.updated_at))
            .bind(key.last_used_at.map($crate::sql::ms))
            .bind(key.revoked_at.map($crate::sql::ms))
            .bind(key.version)
            .bind(&v.allowed_origins)
            .bind(&v.allowed_ips)
            .bind(&v.ratelimits)
            .bind(key.identity.as_ref().map(|i| i.id.as_str()))
            .bind(key.identity.as_ref().map(|i| i.external_id.as_str()))
            .bind(&v.roles)
            .bind(key.recoverable)
            .bind(&key.client_id)
            .bind(&key.grace_client_id)
            .bind(key.replica.map(|d| d.to_vec()))
            .bind(key.grace.and_then(|g| g.replica).map(|d| d.to_vec()))
    }};
}
pub(crate) use bind_key;

/// Binds every identity column in `IDENTITY_COLUMNS` order (any driver).
pub fn bind_identity<'q, DB: sqlx::Database>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    i: &'q Identity,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let meta = serde_json::to_string(&i.meta).expect("JSON values serialize");
    q.bind(i.id.as_str())
        .bind(i.workspace_id.as_str())
        .bind(i.external_id.as_str())
        .bind(meta)
        .bind(ratelimits_json(&i.ratelimits))
        .bind(ms(i.created_at))
        .bind(ms(i.updated_at))
        .bind(i.version)
}

/// Binds every workspace column in `WORKSPACE_COLUMNS` order (any driver).
macro_rules! bind_workspace {
    ($q:expr, $ws:expr, $v:expr) => {{
        let (ws, v) = ($ws, $v);
        $q.bind(&ws.id)
            .bind(&ws.name)
            .bind(&ws.token_prefix)
            .bind(ws.policy.max_keys.map(i64::from))
            .bind(ws.policy.default_key_lifetime_days.map(i64::from))
            .bind(ws.policy.max_key_lifetime_days.map(i64::from))
            .bind($crate::sql::ms(ws.created_at))
            .bind($crate::sql::ms(ws.updated_at))
            .bind(&v.routes)
            .bind(&v.public_permissions)
            .bind(&v.identity_metadata)
            .bind(&v.lockout)
            .bind(ws.policy.require_expiry)
            .bind(&v.catalogue)
            .bind(ws.allow_recoverable)
            .bind(&ws.site_id)
            .bind($crate::sql::notices_json(&ws.notices))
    }};
}
pub(crate) use bind_workspace;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_reads_numbered_placeholders() {
        assert_eq!(Dialect::Sqlite.render("a = $1 AND b = $12"), "a = ?1 AND b = ?12");
        assert_eq!(Dialect::Postgres.render("a = $1"), "a = $1");
    }

    #[test]
    fn notices_round_trip_and_skip_their_own_node() {
        use crate::Invalidation;
        for inv in [
            Invalidation::Key("key_a|b".into()),
            Invalidation::KeyDeleted { workspace_id: "ws_1".into(), id: "key_a|b".into() },
            Invalidation::Workspace("ws_1".into()),
            Invalidation::Identity("id_1".into()),
            Invalidation::AccessTokenRevoked("jti_1".into()),
            Invalidation::SigningKeys,
            Invalidation::ImportPrefixes,
        ] {
            let payload = notice_payload("n1", &inv);
            assert_eq!(parse_notice("n2", &payload), Some(inv));
            assert_eq!(parse_notice("n1", &payload), None);
        }
    }

    #[test]
    fn name_pattern_escapes_wildcards() {
        assert_eq!(name_pattern("A_b%"), "%a\\_b\\%%");
    }
}
