//! The events a committed change sends, derived once from its writes and
//! its audit entry: no service composes an event by hand.

use chrono::{DateTime, Utc};
use keyward_core::audit::{Event, Outcome};
use keyward_core::key::ApiKey;
use keyward_core::webhook::{event_of_action, new_event_id};
use keyward_store::webhooks::{OutboxEvent, WebhooksWrite};
use keyward_store::{AuditWrite, Write};
use serde_json::{Map, Value, json};

use crate::api::views::{KeyView, format_time};

/// `{"type", "timestamp", "data"}`, as sent.
pub fn payload(event_type: &str, at: DateTime<Utc>, data: Value) -> String {
    json!({"type": event_type, "timestamp": format_time(&at), "data": data}).to_string()
}

/// An event of `workspace_id`, made now.
pub fn outbox_event(workspace_id: &str, event_type: &str, at: DateTime<Utc>, data: Value) -> OutboxEvent {
    OutboxEvent {
        workspace_id: workspace_id.to_owned(),
        id: new_event_id(),
        event_type: event_type.to_owned(),
        payload: payload(event_type, at, data),
        at,
    }
}

/// A key's public view, as events carry it (never a secret or a hash).
pub fn key_data(key: &ApiKey) -> Value {
    serde_json::to_value(KeyView::from(key)).unwrap_or(Value::Null)
}

/// The events the audited actions of a change send, one per entry whose
/// action has an event: the key as the change leaves it when the change
/// writes it, else the entry's target and what it recorded.
pub fn of_change(writes: &[Write], entries: &[Write]) -> Vec<Write> {
    let mut out = Vec::new();
    for entry in entries {
        let Write::Audit(AuditWrite { event, .. }) = entry else { continue };
        // A refused attempt's entry tells of nothing that happened.
        if event.outcome != Outcome::Success {
            continue;
        }
        let Some(event_type) = event_of_action(&event.action) else { continue };
        let data = data_of(writes, event);
        out.push(Write::Webhooks(WebhooksWrite::Emit(outbox_event(&event.workspace_id, event_type, event.at, data))));
    }
    out
}

fn data_of(writes: &[Write], event: &Event) -> Value {
    let target = event.target.id.as_deref();
    let key = writes.iter().rev().find_map(|w| match w {
        Write::InsertKey { key, .. } | Write::UpdateKey { key, .. } if Some(&*key.id) == target => Some(key),
        _ => None,
    });
    if let Some(key) = key {
        return key_data(key);
    }
    let mut data = Map::new();
    data.insert("id".into(), target.map_or(Value::Null, Value::from));
    data.insert("workspaceId".into(), Value::from(event.workspace_id.as_str()));
    if let Some(name) = &event.target.name {
        data.insert("name".into(), Value::from(name.as_str()));
    }
    if let Ok(Value::Object(recorded)) = serde_json::from_str::<Value>(&event.changes) {
        for (k, v) in recorded {
            data.entry(k).or_insert(v);
        }
    }
    Value::Object(data)
}
