//! Time-driven events: `key.expiring` (the workspace's days before),
//! `key.expired`, `key.unused`, `pgp_key.expiring`, found at the time the
//! `Clock` gives; and `key.credits_low`, sent as a verification spends a
//! key's credits down to the threshold. One node at a time runs the
//! scheduler (a lease it renews each pass; another takes over when it
//! lapses), and each notice is sent once even so: a notice commits only if
//! no node has sent it yet (`webhook_notices`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::key::ApiKey;
use keyward_core::workspace::Workspace;
use keyward_store::webhooks::{NoticeDue, WebhooksWrite};
use keyward_store::{Store, Write};
use serde_json::{Value, json};

use super::events::{key_data, outbox_event};
use crate::clock::Clock;
use crate::keys::store_error;
use crate::work::{Change, UnitOfWork};

/// Keys examined per workspace and kind in one pass.
const BATCH: u32 = 500;
/// `key.expired` is sent for keys that expired at most this long ago (a
/// key that expired long before the notices began is not news).
const EXPIRED_WINDOW: chrono::Duration = chrono::Duration::days(7);

pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    work: Arc<UnitOfWork>,
    /// This node, as the lease names it.
    node: String,
    /// How often a pass runs (real time; what is due is read from the clock).
    pub interval: Duration,
}

/// A notice: sent once for `(subject, kind, mark)`.
pub fn notice(
    subject: &str,
    kind: &str,
    mark: String,
    ws: &str,
    event_type: &str,
    at: DateTime<Utc>,
    data: Value,
) -> Write {
    Write::Webhooks(WebhooksWrite::Notice {
        subject: subject.to_owned(),
        kind: kind.to_owned(),
        mark,
        event: outbox_event(ws, event_type, at, data),
    })
}

fn with(mut data: Value, extra: Value) -> Value {
    if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
        d.extend(e);
    }
    data
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, work: Arc<UnitOfWork>, interval: Duration) -> Self {
        Scheduler { store, clock, work, node: keyward_core::ids::new_id("node"), interval }
    }

    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e.message, "sending time-driven notices failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One pass over every workspace, when this node holds the lease (for
    /// three intervals, at least a minute); how many notices were committed.
    pub async fn pass(&self) -> Result<usize, keyward_core::Error> {
        let now = self.clock.now();
        let hold = chrono::Duration::from_std(self.interval * 3).unwrap_or(chrono::Duration::minutes(3));
        let until = now + hold.max(chrono::Duration::minutes(1));
        if !self.store.claim_lease("notices", &self.node, now, until).await.map_err(store_error)? {
            return Ok(0);
        }
        let mut sent = 0;
        for ws in self.store.list_workspaces().await.map_err(store_error)? {
            sent += self.workspace(&ws, now).await?;
        }
        Ok(sent)
    }

    async fn workspace(&self, ws: &Workspace, now: DateTime<Utc>) -> Result<usize, keyward_core::Error> {
        // Notices wait, unsent, until the workspace has somewhere to send them.
        let endpoints = self.store.list_endpoints(&ws.id).await.map_err(store_error)?;
        if !endpoints.iter().any(|e| e.enabled) {
            return Ok(0);
        }
        let mut writes = Vec::new();
        for &days in &ws.notices.expiry_notice_days {
            let kind = format!("expiring_{days}");
            let until = now + chrono::Duration::days(i64::from(days));
            let due = NoticeDue::Expiring { kind: &kind, after: now, until };
            for key in self.due(ws, due).await? {
                let expires = key.expires_at.unwrap_or(until);
                let data = with(key_data(&key), json!({"daysBefore": days}));
                writes.push(notice(&key.id, &kind, mark(expires), &ws.id, "key.expiring", now, data));
            }
        }
        let due = NoticeDue::Expiring { kind: "expired", after: now - EXPIRED_WINDOW, until: now };
        for key in self.due(ws, due).await? {
            let at = key.expires_at.unwrap_or(now);
            writes.push(notice(&key.id, "expired", mark(at), &ws.id, "key.expired", now, key_data(&key)));
        }
        if ws.notices.unused_days > 0 {
            let days = ws.notices.unused_days;
            let due = NoticeDue::Unused { kind: "unused", before: now - chrono::Duration::days(i64::from(days)) };
            for key in self.due(ws, due).await? {
                let since = key.last_used_at.unwrap_or(key.created_at);
                let data = with(key_data(&key), json!({"unusedDays": days}));
                writes.push(notice(&key.id, "unused", mark(since), &ws.id, "key.unused", now, data));
            }
        }
        if !ws.notices.expiry_notice_days.is_empty() {
            for pgp in self.store.list_pgp_keys(&ws.id).await.map_err(store_error)? {
                let Some(expires) = pgp.info.expires_at.filter(|e| *e > now) else { continue };
                for &days in &ws.notices.expiry_notice_days {
                    if expires <= now + chrono::Duration::days(i64::from(days)) {
                        let data = json!({
                            "id": pgp.id, "workspaceId": ws.id, "name": pgp.name,
                            "fingerprint": pgp.info.fingerprint,
                            "expiresAt": crate::api::views::format_time(&expires), "daysBefore": days,
                        });
                        let kind = format!("pgp_expiring_{days}");
                        writes.push(notice(&pgp.id, &kind, mark(expires), &ws.id, "pgp_key.expiring", now, data));
                    }
                }
            }
        }
        let n = writes.len();
        // In batches: one transaction need not hold a thousand notices.
        for chunk in writes.chunks(100) {
            let mut change = Change::unaudited("a notice records no action: it tells of one, or of time passing");
            change.extend(chunk.iter().cloned());
            self.work.commit(change).await.map_err(store_error)?;
        }
        Ok(n)
    }

    async fn due(&self, ws: &Workspace, due: NoticeDue<'_>) -> Result<Vec<ApiKey>, keyward_core::Error> {
        self.store.keys_for_notice(&ws.id, due, BATCH).await.map_err(store_error)
    }
}

/// A time as notices mark it (the store compares its own column, cast to text).
pub fn mark(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}
