//! The Audit log page (filters by type, action, actor and period; pages;
//! export through the API's export endpoint) and a key's own entries.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use keyward_core::Error;
use keyward_core::audit::{ACTIONS, ActorKind, Entry, Outcome, TARGET_TYPES};
use keyward_store::Page;

use super::form::{Params, encode};
use super::view::{Shell, inert, when};
use super::{Member, error_page, render, render_status};
use crate::app::AppState;
use crate::audit::AuditQuery;
use crate::principal::Principal;

/// An entry as a row of the log.
pub struct EntryRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: &'static str,
    pub ip: String,
}

impl EntryRow {
    fn of(e: &Entry) -> Self {
        let ev = &e.event;
        let actor = match ev.actor.kind {
            ActorKind::System => "System".to_owned(),
            _ => ev.actor.name.clone().or_else(|| ev.actor.id.clone()).unwrap_or_default(),
        };
        let target = match (&ev.target.name, &ev.target.id) {
            (Some(n), _) => format!("{} {n}", ev.target.kind),
            (None, Some(id)) => format!("{} {id}", ev.target.kind),
            _ => ev.target.kind.clone(),
        };
        EntryRow {
            seq: e.seq,
            time: when(&ev.at),
            actor: inert(&actor),
            action: ev.action.clone(),
            target: inert(&target),
            outcome: match ev.outcome {
                Outcome::Success => "Success",
                Outcome::Failure => "Failure",
            },
            ip: ev.ip.clone().unwrap_or_default(),
        }
    }
}

/// The newest entries about one key.
pub async fn key_entries(state: &AppState, who: &Principal, id: &str) -> Result<Vec<EntryRow>, Error> {
    let q =
        AuditQuery { target: Some(id.to_owned()), period: Some(state.audit.default_period(90)), ..Default::default() };
    let filter = state.audit.filter(q)?;
    let (entries, _) = state.audit.list(who, &filter, Page { after: None, limit: 20 }).await?;
    Ok(entries.iter().map(EntryRow::of).collect())
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    shell: Option<Shell>,
    rows: Vec<EntryRow>,
    types: &'static [&'static str],
    actions: &'static [&'static str],
    periods: &'static [(&'static str, &'static str)],
    kind: String,
    action: String,
    actor: String,
    period: String,
    error: Option<String>,
    next_page: Option<String>,
    export_csv: String,
    export_jsonl: String,
}

const PERIODS: &[(&str, &str)] =
    &[("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("90d", "Last 90 days")];

pub async fn page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let kind = p.text("type").unwrap_or_default();
    let action = p.text("action").unwrap_or_default();
    let actor = p.text("actor").unwrap_or_default();
    let period = p.text("period").unwrap_or_else(|| "7d".to_owned());
    let cursor = p.text("cursor").and_then(|c| c.parse::<i64>().ok()).filter(|c| *c > 0);
    let shell = match Shell::load(&state, &who, "audit").await {
        Ok(s) => s,
        Err(e) => return error_page(&state, &who, &e).await,
    };
    if let Err(e) = who.require(crate::audit::READ) {
        return error_page(&state, &who, &e).await;
    }
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let q = AuditQuery {
        target_type: some(&kind),
        action: some(&action),
        actor: some(&actor),
        period: some(&period),
        ..Default::default()
    };
    let mut query: Vec<String> = Vec::new();
    for (k, v) in [("type", &kind), ("action", &action), ("actor", &actor), ("period", &period)] {
        if !v.is_empty() {
            query.push(format!("{k}={}", encode(v)));
        }
    }
    let export = |format: &str| {
        let mut q = query.clone();
        q.push(format!("format={format}"));
        format!("/v1/audit/export?{}", q.join("&"))
    };
    let mut page = AuditPage {
        shell: Some(shell),
        rows: Vec::new(),
        types: TARGET_TYPES,
        actions: ACTIONS,
        periods: PERIODS,
        export_csv: export("csv"),
        export_jsonl: export("jsonl"),
        kind,
        action,
        actor,
        period,
        error: None,
        next_page: None,
    };
    let listed = match state.audit.filter(q) {
        Ok(filter) => state.audit.list(&who, &filter, Page { after: cursor, limit: 50 }).await,
        Err(e) => Err(e),
    };
    match listed {
        Ok((entries, next)) => {
            page.rows = entries.iter().map(EntryRow::of).collect();
            page.next_page = next.map(|c| {
                let mut q = query.clone();
                q.push(format!("cursor={c}"));
                format!("/audit?{}", q.join("&"))
            });
            render(&page)
        }
        Err(e) => {
            page.error = Some(e.message.clone());
            render_status(super::status_of(&e), &page)
        }
    }
}
