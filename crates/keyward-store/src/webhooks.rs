//! Webhook endpoints, their signing secrets (sealed) and the outbox of
//! deliveries: statements, rows and writes, expanded per driver by
//! [`webhooks_impl!`]. An event is written by [`WebhooksWrite::Emit`] in
//! the transaction of the change it tells of, one delivery row per
//! subscribed endpoint, so a crash loses none and an undone change sends
//! none. Workers on any node claim due rows ([`Webhooks::claim_deliveries`]:
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL, the one writer on SQLite).

use chrono::{DateTime, Utc};
use keyward_core::sealed::SealedSecret;
use keyward_core::webhook::{Endpoint, Subscription};

use crate::Result;
use crate::sql::{Dialect, from_ms};

/// An event to deliver.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub workspace_id: String,
    /// `msg_…`: the `webhook-id` of every attempt.
    pub id: String,
    pub event_type: String,
    /// `{"type", "timestamp", "data"}`, as sent.
    pub payload: String,
    pub at: DateTime<Utc>,
}

/// A signing secret of an endpoint, sealed under the master key.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    pub id: String,
    pub endpoint_id: String,
    pub sealed: SealedSecret,
    pub created_at: DateTime<Utc>,
    /// After a rotation, when this (older) secret stops signing.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint_id: String,
    pub event_id: String,
    pub workspace_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub response_status: Option<i64>,
    pub latency_ms: Option<i64>,
    /// The start of the answer's body (at most 1 KiB).
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// What an attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub endpoint_id: String,
    pub event_id: String,
    pub at: DateTime<Utc>,
    /// `Pending` with `next_attempt_at`: retry then.
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub response_status: Option<i64>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// The latest report that a key leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLeak {
    pub key_id: String,
    pub workspace_id: String,
    pub reported_at: DateTime<Utc>,
    /// `github`, `gitlab`, `member` or `self` (its holder).
    pub source: String,
    /// Where it was found, when the report says.
    pub url: Option<String>,
    /// What the workspace's policy did: `revoked`, `rolled` or `notified`.
    pub action: String,
}

/// Keys a time-driven notice is due for, that no notice of `kind` has
/// been sent for yet (with the same mark: the expiry, or the last use).
#[derive(Debug, Clone, Copy)]
pub enum NoticeDue<'a> {
    /// Not revoked, expiring after `after` and by `until` (mark: the expiry).
    Expiring { kind: &'a str, after: DateTime<Utc>, until: DateTime<Utc> },
    /// Active, not used (or made, if never used) since `before` (mark:
    /// that time).
    Unused { kind: &'a str, before: DateTime<Utc> },
}

#[derive(Debug, Clone)]
pub enum WebhooksWrite {
    InsertEndpoint {
        endpoint: Endpoint,
        secret: StoredSecret,
    },
    /// Its url, description, events, state and failure time;
    /// [`crate::StoreError::NotFound`] when it is gone. Disabled, its
    /// pending deliveries fail (they can be resent from the log).
    UpdateEndpoint(Endpoint),
    DeleteEndpoint {
        workspace_id: String,
        id: String,
    },
    /// A new secret; the ones still signing stop at `retire_at` (or when
    /// they were to stop, if sooner). [`crate::StoreError::NotFound`] when
    /// the endpoint is gone.
    AddSecret {
        secret: StoredSecret,
        retire_at: DateTime<Utc>,
    },
    /// The event, to every enabled endpoint of its workspace subscribed to it.
    Emit(OutboxEvent),
    /// The event, to one endpoint of its workspace, whatever it subscribes
    /// to ([`crate::StoreError::NotFound`] when it is not there).
    EmitTo {
        endpoint_id: String,
        event: OutboxEvent,
    },
    /// The event, once: only the first change to claim `(subject, kind,
    /// mark)` emits it (however many nodes try).
    Notice {
        subject: String,
        kind: String,
        mark: String,
        event: OutboxEvent,
    },
    /// Sends a delivery again, from now ([`crate::StoreError::NotFound`]
    /// when there is none).
    Resend {
        workspace_id: String,
        endpoint_id: String,
        event_id: String,
        at: DateTime<Utc>,
    },
    /// A key was reported leaked (replacing an earlier report of it).
    RecordLeak(KeyLeak),
}

#[async_trait::async_trait]
pub trait Webhooks: Send + Sync {
    async fn list_endpoints(&self, workspace_id: &str) -> Result<Vec<Endpoint>>;
    async fn get_endpoint(&self, workspace_id: &str, id: &str) -> Result<Option<Endpoint>>;
    /// The secrets of an endpoint, newest first (expired ones too, until pruned).
    async fn endpoint_secrets(&self, endpoint_id: &str) -> Result<Vec<StoredSecret>>;
    /// Newest first; `before`: the `created_at` (ms) and event id of the
    /// last row of the previous page.
    async fn list_deliveries(
        &self,
        workspace_id: &str,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn get_delivery(&self, workspace_id: &str, endpoint_id: &str, event_id: &str) -> Result<Option<Delivery>>;
    /// Claims up to `limit` pending deliveries due at `now`, that no other
    /// worker holds, until `lease_until`; counts the attempt.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// Records an attempt; returns since when the endpoint has been
    /// failing (`None` after a success, or when it is gone).
    async fn finish_delivery(&self, attempt: &Attempt) -> Result<Option<DateTime<Utc>>>;
    /// Drops deliveries made before `before` that are no longer pending,
    /// and secrets that stopped before it; how many deliveries. (Notices
    /// sent are kept: they stop a notice from being sent twice.)
    async fn prune_webhooks(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Pending deliveries, across workspaces (for metrics and tests).
    async fn pending_deliveries(&self) -> Result<i64>;
    /// Claims the lease `name` for `holder` until `until`: granted when it
    /// is free, expired at `now`, or `holder`'s already (a renewal).
    async fn claim_lease(&self, name: &str, holder: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> Result<bool>;
    /// Whether any workspace has an enabled endpoint (else the outbox
    /// stays empty and the deliverers rest).
    async fn any_enabled_endpoint(&self) -> Result<bool>;
    /// Up to `limit` keys of the workspace a notice is due for.
    async fn keys_for_notice(
        &self,
        workspace_id: &str,
        due: NoticeDue<'_>,
        limit: u32,
    ) -> Result<Vec<keyward_core::key::ApiKey>>;
    /// The latest leak report of a key.
    async fn key_leak(&self, workspace_id: &str, key_id: &str) -> Result<Option<KeyLeak>>;
}

const ENDPOINT_COLUMNS: &str =
    "id, workspace_id, url, description, events, enabled, disabled_reason, failing_since, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "endpoint_id, event_id, workspace_id, event_type, payload, created_at, status, \
     attempts, next_attempt_at, last_attempt_at, response_status, latency_ms, response_body, error";

pub struct WebhooksStatements {
    pub insert_endpoint: String,
    pub update_endpoint: String,
    pub delete_endpoint: String,
    pub insert_secret: String,
    pub retire_secrets: String,
    pub emit: String,
    pub emit_to: String,
    pub notice: String,
    pub resend: String,
    pub list_endpoints: String,
    pub get_endpoint: String,
    pub secrets: String,
    pub list_deliveries: String,
    pub list_deliveries_before: String,
    pub get_delivery: String,
    pub claim: String,
    pub finish: String,
    pub endpoint_succeeded: String,
    pub endpoint_failed: String,
    pub prune_deliveries: String,
    pub prune_secrets: String,
    pub pending: String,
    pub record_leak: String,
    pub any_enabled: String,
    pub claim_lease: String,
    pub fail_pending: String,
    pub keys_expiring: String,
    pub keys_unused: String,
    pub key_leak: String,
}

impl WebhooksStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        let matches = format!(
            "(e.events = '*' OR {} > 0 OR {} > 0)",
            dialect.find_text("e.events", "$6"),
            dialect.find_text("e.events", "$7")
        );
        let skip_locked = match dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let filter = "d.workspace_id = $1 AND d.endpoint_id = $2 AND ($3 IS NULL OR d.status = $3)";
        WebhooksStatements {
            insert_endpoint: r(&format!(
                "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )),
            update_endpoint: r("UPDATE webhook_endpoints SET url = $3, description = $4, events = $5, enabled = $6, \
                 disabled_reason = $7, failing_since = $8, updated_at = $9 WHERE id = $1 AND workspace_id = $2"),
            delete_endpoint: r("DELETE FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2"),
            insert_secret: r("INSERT INTO webhook_secrets (id, endpoint_id, master_key_id, sealed, created_at, \
                 expires_at) SELECT $1, id, $3, $4, $5, $6 FROM webhook_endpoints WHERE id = $2"),
            retire_secrets: r("UPDATE webhook_secrets SET expires_at = $2 \
                 WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)"),
            emit: r(&format!(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, workspace_id, event_type, payload, \
                 created_at, status, attempts, next_attempt_at) \
                 SELECT e.id, $1, e.workspace_id, $3, $4, $5, 'pending', 0, $5 FROM webhook_endpoints e \
                 WHERE e.workspace_id = $2 AND e.enabled AND {matches}"
            )),
            emit_to: r("INSERT INTO webhook_deliveries (endpoint_id, event_id, workspace_id, event_type, payload, \
                 created_at, status, attempts, next_attempt_at) \
                 SELECT e.id, $1, e.workspace_id, $3, $4, $5, 'pending', 0, $5 FROM webhook_endpoints e \
                 WHERE e.workspace_id = $2 AND e.id = $6"),
            notice: r("INSERT INTO webhook_notices (subject, kind, mark, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"),
            resend: r("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, claimed_until = NULL \
                 WHERE workspace_id = $1 AND endpoint_id = $2 AND event_id = $3"),
            list_endpoints: r(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = $1 ORDER BY created_at, id"
            )),
            get_endpoint: r(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = $1 AND id = $2"
            )),
            secrets: r("SELECT id, endpoint_id, master_key_id, sealed, created_at, expires_at FROM webhook_secrets \
                 WHERE endpoint_id = $1 ORDER BY created_at DESC, id"),
            list_deliveries: r(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE {filter} \
                 ORDER BY d.created_at DESC, d.event_id DESC LIMIT $4"
            )),
            list_deliveries_before: r(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE {filter} \
                 AND (d.created_at < $5 OR (d.created_at = $5 AND d.event_id < $6)) \
                 ORDER BY d.created_at DESC, d.event_id DESC LIMIT $4"
            )),
            get_delivery: r(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 WHERE d.workspace_id = $1 AND d.endpoint_id = $2 AND d.event_id = $3"
            )),
            claim: r(&format!(
                "UPDATE webhook_deliveries SET claimed_until = $2, attempts = attempts + 1 \
                 WHERE (endpoint_id, event_id) IN (SELECT endpoint_id, event_id FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $1 \
                 AND (claimed_until IS NULL OR claimed_until <= $1) \
                 ORDER BY next_attempt_at LIMIT $3{skip_locked}) RETURNING {DELIVERY_COLUMNS}"
            )),
            finish: r("UPDATE webhook_deliveries SET status = $3, next_attempt_at = $4, last_attempt_at = $5, \
                 response_status = $6, latency_ms = $7, response_body = $8, error = $9, claimed_until = NULL \
                 WHERE endpoint_id = $1 AND event_id = $2"),
            endpoint_succeeded: r("UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id = $1 AND failing_since IS NOT NULL"),
            endpoint_failed: r("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) \
                 WHERE id = $1 RETURNING failing_since"),
            prune_deliveries: r("DELETE FROM webhook_deliveries WHERE created_at < $1 AND status <> 'pending'"),
            prune_secrets: r("DELETE FROM webhook_secrets WHERE expires_at < $1"),
            pending: r("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'"),
            keys_expiring: r(&format!(
                "SELECT {select} FROM api_keys k WHERE k.workspace_id = $1 AND k.state <> 'revoked' \
                 AND k.expires_at > $3 AND k.expires_at <= $4 AND NOT EXISTS (SELECT 1 FROM webhook_notices n \
                 WHERE n.subject = k.id AND n.kind = $2 AND n.mark = CAST(k.expires_at AS TEXT)) \
                 ORDER BY k.expires_at LIMIT $5",
                select = crate::sql::SELECT_KEY
            )),
            keys_unused: r(&format!(
                "SELECT {select} FROM api_keys k WHERE k.workspace_id = $1 AND k.state = 'active' \
                 AND COALESCE(k.last_used_at, k.created_at) < $3 AND NOT EXISTS (SELECT 1 FROM webhook_notices n \
                 WHERE n.subject = k.id AND n.kind = $2 \
                 AND n.mark = CAST(COALESCE(k.last_used_at, k.created_at) AS TEXT)) LIMIT $4",
                select = crate::sql::SELECT_KEY
            )),
            fail_pending: r("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
                 claimed_until = NULL, error = 'the endpoint was disabled' \
                 WHERE endpoint_id = $1 AND status = 'pending'"),
            claim_lease: r("INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4) ON CONFLICT (name) \
                 DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE leases.until <= $3 OR leases.holder = excluded.holder"),
            any_enabled: "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled)".to_owned(),
            record_leak: r("INSERT INTO key_leaks (key_id, workspace_id, reported_at, source, url, action) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO UPDATE SET \
                 reported_at = excluded.reported_at, source = excluded.source, url = excluded.url, \
                 action = excluded.action"),
            key_leak: r("SELECT key_id, workspace_id, reported_at, source, url, action FROM key_leaks \
                 WHERE workspace_id = $1 AND key_id = $2"),
        }
    }
}

/// The binds an event type is matched with: `,type,` and `,noun.*,`.
pub fn match_binds(event_type: &str) -> (String, String) {
    let noun = event_type.split('.').next().unwrap_or(event_type);
    (format!(",{event_type},"), format!(",{noun}.*,"))
}

#[derive(sqlx::FromRow)]
pub struct LeakRow {
    key_id: String,
    workspace_id: String,
    reported_at: i64,
    source: String,
    url: Option<String>,
    action: String,
}

impl LeakRow {
    pub fn into_leak(self) -> Result<KeyLeak> {
        Ok(KeyLeak {
            key_id: self.key_id,
            workspace_id: self.workspace_id,
            reported_at: from_ms(self.reported_at)?,
            source: self.source,
            url: self.url,
            action: self.action,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct EndpointRow {
    id: String,
    workspace_id: String,
    url: String,
    description: Option<String>,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl EndpointRow {
    pub fn into_endpoint(self) -> Result<Endpoint> {
        Ok(Endpoint {
            id: self.id,
            workspace_id: self.workspace_id,
            url: self.url,
            description: self.description,
            events: Subscription::from_stored(&self.events),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            failing_since: self.failing_since.map(from_ms).transpose()?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct SecretRow {
    id: String,
    endpoint_id: String,
    master_key_id: String,
    sealed: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
}

impl SecretRow {
    pub fn into_secret(self) -> Result<StoredSecret> {
        Ok(StoredSecret {
            id: self.id,
            endpoint_id: self.endpoint_id,
            sealed: SealedSecret { key_id: self.master_key_id, blob: self.sealed },
            created_at: from_ms(self.created_at)?,
            expires_at: self.expires_at.map(from_ms).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    endpoint_id: String,
    event_id: String,
    workspace_id: String,
    event_type: String,
    payload: String,
    created_at: i64,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    response_status: Option<i64>,
    latency_ms: Option<i64>,
    response_body: Option<String>,
    error: Option<String>,
}

impl DeliveryRow {
    pub fn into_delivery(self) -> Result<Delivery> {
        Ok(Delivery {
            status: DeliveryStatus::parse(&self.status).ok_or_else(|| crate::sql::corrupt("delivery status"))?,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            workspace_id: self.workspace_id,
            event_type: self.event_type,
            payload: self.payload,
            created_at: from_ms(self.created_at)?,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at.map(from_ms).transpose()?,
            last_attempt_at: self.last_attempt_at.map(from_ms).transpose()?,
            response_status: self.response_status,
            latency_ms: self.latency_ms,
            response_body: self.response_body,
            error: self.error,
        })
    }
}

/// `webhooks_impl!(Store, Driver)`.
macro_rules! webhooks_impl {
    ($store:ty, $db:ty) => {
        impl $crate::backend::Pools<$db> {
            async fn emit_event(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                event: &$crate::webhooks::OutboxEvent,
            ) -> $crate::Result<()> {
                let (name, group) = $crate::webhooks::match_binds(&event.event_type);
                sqlx::query(&self.sql.webhooks.emit)
                    .bind(&event.id)
                    .bind(&event.workspace_id)
                    .bind(&event.event_type)
                    .bind(&event.payload)
                    .bind($crate::sql::ms(event.at))
                    .bind(name)
                    .bind(group)
                    .execute(&mut *conn)
                    .await
                    .map_err(self.classify)?;
                Ok(())
            }

            async fn apply_webhooks(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &$crate::webhooks::WebhooksWrite,
            ) -> $crate::Result<()> {
                use $crate::sql::ms;
                use $crate::webhooks::WebhooksWrite;
                let sql = &self.sql.webhooks;
                let done = match write {
                    WebhooksWrite::InsertEndpoint { endpoint: e, secret } => {
                        sqlx::query(&sql.insert_endpoint)
                            .bind(&e.id)
                            .bind(&e.workspace_id)
                            .bind(&e.url)
                            .bind(&e.description)
                            .bind(e.events.to_stored())
                            .bind(e.enabled)
                            .bind(&e.disabled_reason)
                            .bind(e.failing_since.map(ms))
                            .bind(ms(e.created_at))
                            .bind(ms(e.updated_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(self.classify)?;
                        self.insert_secret(conn, secret).await?;
                        return Ok(());
                    }
                    WebhooksWrite::UpdateEndpoint(e) => {
                        if !e.enabled {
                            sqlx::query(&sql.fail_pending)
                                .bind(&e.id)
                                .execute(&mut *conn)
                                .await
                                .map_err(self.classify)?;
                        }
                        sqlx::query(&sql.update_endpoint)
                            .bind(&e.id)
                            .bind(&e.workspace_id)
                            .bind(&e.url)
                            .bind(&e.description)
                            .bind(e.events.to_stored())
                            .bind(e.enabled)
                            .bind(&e.disabled_reason)
                            .bind(e.failing_since.map(ms))
                            .bind(ms(e.updated_at))
                            .execute(&mut *conn)
                            .await
                    }
                    WebhooksWrite::DeleteEndpoint { workspace_id, id } => {
                        sqlx::query(&sql.delete_endpoint).bind(id).bind(workspace_id).execute(&mut *conn).await
                    }
                    WebhooksWrite::AddSecret { secret, retire_at } => {
                        sqlx::query(&sql.retire_secrets)
                            .bind(&secret.endpoint_id)
                            .bind(ms(*retire_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(self.classify)?;
                        return self.insert_secret(conn, secret).await;
                    }
                    WebhooksWrite::Emit(event) => return self.emit_event(conn, event).await,
                    WebhooksWrite::EmitTo { endpoint_id, event } => {
                        sqlx::query(&sql.emit_to)
                            .bind(&event.id)
                            .bind(&event.workspace_id)
                            .bind(&event.event_type)
                            .bind(&event.payload)
                            .bind(ms(event.at))
                            .bind(endpoint_id)
                            .execute(&mut *conn)
                            .await
                    }
                    WebhooksWrite::Notice { subject, kind, mark, event } => {
                        let claimed = sqlx::query(&sql.notice)
                            .bind(subject)
                            .bind(kind)
                            .bind(mark)
                            .bind(ms(event.at))
                            .execute(&mut *conn)
                            .await
                            .map_err(self.classify)?;
                        if claimed.rows_affected() == 1 {
                            self.emit_event(conn, event).await?;
                        }
                        return Ok(());
                    }
                    WebhooksWrite::RecordLeak(l) => {
                        sqlx::query(&sql.record_leak)
                            .bind(&l.key_id)
                            .bind(&l.workspace_id)
                            .bind(ms(l.reported_at))
                            .bind(&l.source)
                            .bind(&l.url)
                            .bind(&l.action)
                            .execute(&mut *conn)
                            .await
                    }
                    WebhooksWrite::Resend { workspace_id, endpoint_id, event_id, at } => {
                        sqlx::query(&sql.resend)
                            .bind(workspace_id)
                            .bind(endpoint_id)
                            .bind(event_id)
                            .bind(ms(*at))
                            .execute(&mut *conn)
                            .await
                    }
                };
                match done.map_err(self.classify)?.rows_affected() {
                    0 => Err($crate::StoreError::NotFound),
                    _ => Ok(()),
                }
            }

            async fn insert_secret(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                s: &$crate::webhooks::StoredSecret,
            ) -> $crate::Result<()> {
                let done = sqlx::query(&self.sql.webhooks.insert_secret)
                    .bind(&s.id)
                    .bind(&s.endpoint_id)
                    .bind(&s.sealed.key_id)
                    .bind(&s.sealed.blob)
                    .bind($crate::sql::ms(s.created_at))
                    .bind(s.expires_at.map($crate::sql::ms))
                    .execute(&mut *conn)
                    .await
                    .map_err(self.classify)?;
                match done.rows_affected() {
                    0 => Err($crate::StoreError::NotFound),
                    _ => Ok(()),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::webhooks::Webhooks for $store {
            async fn list_endpoints(&self, workspace_id: &str) -> $crate::Result<Vec<keyward_core::webhook::Endpoint>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.webhooks.list_endpoints,
                    $crate::webhooks::EndpointRow::into_endpoint,
                    workspace_id
                )
            }

            async fn get_endpoint(
                &self,
                workspace_id: &str,
                id: &str,
            ) -> $crate::Result<Option<keyward_core::webhook::Endpoint>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.webhooks.get_endpoint,
                    $crate::webhooks::EndpointRow::into_endpoint,
                    workspace_id,
                    id
                )
            }

            async fn endpoint_secrets(&self, endpoint_id: &str) -> $crate::Result<Vec<$crate::webhooks::StoredSecret>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.webhooks.secrets,
                    $crate::webhooks::SecretRow::into_secret,
                    endpoint_id
                )
            }

            async fn list_deliveries(
                &self,
                workspace_id: &str,
                endpoint_id: &str,
                status: Option<$crate::webhooks::DeliveryStatus>,
                before: Option<(i64, String)>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::webhooks::Delivery>> {
                if $crate::sql::unstorable(endpoint_id) {
                    return Ok(Vec::new());
                }
                let p = &self.pools;
                let status = status.map(|s| s.as_str());
                let limit = i64::from(limit);
                match before {
                    None => $crate::backend::all_rows!(
                        p,
                        &p.sql.webhooks.list_deliveries,
                        $crate::webhooks::DeliveryRow::into_delivery,
                        workspace_id,
                        endpoint_id,
                        status,
                        limit
                    ),
                    Some((at, id)) => $crate::backend::all_rows!(
                        p,
                        &p.sql.webhooks.list_deliveries_before,
                        $crate::webhooks::DeliveryRow::into_delivery,
                        workspace_id,
                        endpoint_id,
                        status,
                        limit,
                        at,
                        &id
                    ),
                }
            }

            async fn get_delivery(
                &self,
                workspace_id: &str,
                endpoint_id: &str,
                event_id: &str,
            ) -> $crate::Result<Option<$crate::webhooks::Delivery>> {
                if $crate::sql::unstorable(endpoint_id) || $crate::sql::unstorable(event_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.webhooks.get_delivery,
                    $crate::webhooks::DeliveryRow::into_delivery,
                    workspace_id,
                    endpoint_id,
                    event_id
                )
            }

            async fn claim_deliveries(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::webhooks::Delivery>> {
                let p = &self.pools;
                let rows: Vec<$crate::webhooks::DeliveryRow> = p
                    .guarded(async {
                        sqlx::query_as(&p.sql.webhooks.claim)
                            .bind($crate::sql::ms(now))
                            .bind($crate::sql::ms(lease_until))
                            .bind(i64::from(limit))
                            .fetch_all(&p.writer)
                            .await
                            .map_err(p.classify)
                    })
                    .await?;
                rows.into_iter().map($crate::webhooks::DeliveryRow::into_delivery).collect()
            }

            async fn finish_delivery(
                &self,
                a: &$crate::webhooks::Attempt,
            ) -> $crate::Result<Option<chrono::DateTime<chrono::Utc>>> {
                use $crate::sql::ms;
                let p = &self.pools;
                let sql = &p.sql.webhooks;
                p.guarded(async {
                    sqlx::query(&sql.finish)
                        .bind(&a.endpoint_id)
                        .bind(&a.event_id)
                        .bind(a.status.as_str())
                        .bind(a.next_attempt_at.map(ms))
                        .bind(ms(a.at))
                        .bind(a.response_status)
                        .bind(a.latency_ms)
                        .bind(&a.response_body)
                        .bind(&a.error)
                        .execute(&p.writer)
                        .await
                        .map_err(p.classify)?;
                    if a.status == $crate::webhooks::DeliveryStatus::Delivered {
                        sqlx::query(&sql.endpoint_succeeded)
                            .bind(&a.endpoint_id)
                            .execute(&p.writer)
                            .await
                            .map_err(p.classify)?;
                        return Ok(None);
                    }
                    let since: Option<Option<i64>> = sqlx::query_scalar(&sql.endpoint_failed)
                        .bind(&a.endpoint_id)
                        .bind(ms(a.at))
                        .fetch_optional(&p.writer)
                        .await
                        .map_err(p.classify)?;
                    since.flatten().map($crate::sql::from_ms).transpose()
                })
                .await
            }

            async fn prune_webhooks(&self, before: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let p = &self.pools;
                let sql = &p.sql.webhooks;
                let before = $crate::sql::ms(before);
                p.guarded(async {
                    let n = sqlx::query(&sql.prune_deliveries)
                        .bind(before)
                        .execute(&p.writer)
                        .await
                        .map_err(p.classify)?
                        .rows_affected();
                    sqlx::query(&sql.prune_secrets).bind(before).execute(&p.writer).await.map_err(p.classify)?;
                    Ok(n)
                })
                .await
            }

            async fn keys_for_notice(
                &self,
                workspace_id: &str,
                due: $crate::webhooks::NoticeDue<'_>,
                limit: u32,
            ) -> $crate::Result<Vec<keyward_core::key::ApiKey>> {
                use $crate::sql::ms;
                use $crate::webhooks::NoticeDue;
                let p = &self.pools;
                let sql = &p.sql.webhooks;
                let limit = i64::from(limit);
                match due {
                    NoticeDue::Expiring { kind, after, until } => $crate::backend::all_rows!(
                        p,
                        &sql.keys_expiring,
                        $crate::sql::KeyRow::into_key,
                        workspace_id,
                        kind,
                        ms(after),
                        ms(until),
                        limit
                    ),
                    NoticeDue::Unused { kind, before } => $crate::backend::all_rows!(
                        p,
                        &sql.keys_unused,
                        $crate::sql::KeyRow::into_key,
                        workspace_id,
                        kind,
                        ms(before),
                        limit
                    ),
                }
            }

            async fn key_leak(
                &self,
                workspace_id: &str,
                key_id: &str,
            ) -> $crate::Result<Option<$crate::webhooks::KeyLeak>> {
                if $crate::sql::unstorable(key_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.webhooks.key_leak,
                    $crate::webhooks::LeakRow::into_leak,
                    workspace_id,
                    key_id
                )
            }

            async fn claim_lease(
                &self,
                name: &str,
                holder: &str,
                now: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                let p = &self.pools;
                let done = p
                    .guarded(async {
                        sqlx::query(&p.sql.webhooks.claim_lease)
                            .bind(name)
                            .bind(holder)
                            .bind($crate::sql::ms(now))
                            .bind($crate::sql::ms(until))
                            .execute(&p.writer)
                            .await
                            .map_err(p.classify)
                    })
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn any_enabled_endpoint(&self) -> $crate::Result<bool> {
                let p = &self.pools;
                $crate::backend::read_retry!(p, sqlx::query_scalar(&p.sql.webhooks.any_enabled).fetch_one(&p.reader))
            }

            async fn pending_deliveries(&self) -> $crate::Result<i64> {
                let p = &self.pools;
                $crate::backend::read_retry!(p, sqlx::query_scalar(&p.sql.webhooks.pending).fetch_one(&p.reader))
            }
        }
    };
}
pub(crate) use webhooks_impl;
