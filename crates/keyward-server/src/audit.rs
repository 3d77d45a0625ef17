//! The audit log, once for all interfaces: the entry every service commits
//! with its action ([`AuditLog::write`]), failures recorded on their own,
//! reading with filters, signed checkpoints and the chain check.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use keyward_core::Code;
use keyward_core::Error;
use keyward_core::audit::{
    ACTIONS, Actor, AuditKey, Break, ChainCheck, Checkpoint, CheckpointSigner, Entry, Event, Outcome, TARGET_TYPES,
    Target,
};
use keyward_core::hash::SecretHasher;
use keyward_core::key::ApiKey;
use keyward_store::{AuditFilter, AuditWrite, Page, Store, Write};

use crate::work::Change;
use serde_json::{Map, Value, json};

use crate::clock::Clock;
use crate::keys::store_error;
use crate::principal::Principal;

/// Read the audit log (and the activity log built on it).
pub const READ: &str = "audit:read";

pub struct AuditLog {
    store: Arc<dyn Store>,
    /// Where every change commits, with its entry.
    work: Arc<crate::work::UnitOfWork>,
    key: Arc<AuditKey>,
    signer: CheckpointSigner,
    clock: Arc<dyn Clock>,
    /// How far back usage rollups are kept, and the longest `period` a
    /// query may ask for.
    pub retention: Duration,
}

/// A query of the log as a client gives it; checked by [`AuditLog::list`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub target_type: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<String>,
    pub period: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A time window: from (inclusive), to (exclusive); `None`: open.
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `7d`, `24h`, `30m`, `2w` → a duration (1 minute to 10 years).
pub fn parse_period(s: &str) -> Option<Duration> {
    if !s.is_ascii() {
        return None;
    }
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = n.parse().ok().filter(|n| (1..=5000).contains(n))?;
    match unit {
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        "w" => Some(Duration::weeks(n)),
        _ => None,
    }
}

impl AuditLog {
    pub fn new(
        work: Arc<crate::work::UnitOfWork>,
        store: Arc<dyn Store>,
        hasher: &SecretHasher,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> Self {
        AuditLog {
            work,
            store,
            key: Arc::new(AuditKey::new(hasher.derive("audit entries"))),
            signer: CheckpointSigner::from_seed(hasher.derive("audit checkpoints")),
            clock,
            retention,
        }
    }

    /// The entry of an action `who` did, to commit with it.
    pub fn write(&self, who: &Principal, action: &str, target: Target, changes: Value) -> Write {
        self.entry(who, action, target, Outcome::Success, changes)
    }

    /// The entry of an action on a key, showing the key as it now stands.
    pub fn key_write(&self, who: &Principal, action: &str, key: &ApiKey) -> Write {
        self.write(who, action, key_target(key), key_summary(key))
    }

    pub fn entry(&self, who: &Principal, action: &str, target: Target, outcome: Outcome, changes: Value) -> Write {
        self.event(Event {
            workspace_id: who.workspace_id().to_owned(),
            at: self.clock.now(),
            actor: who.actor(),
            action: action.to_owned(),
            target,
            ip: who.ip.map(|ip| ip.to_string()),
            user_agent: who.user_agent.clone(),
            outcome,
            changes: changes.to_string(),
        })
    }

    /// The entry of something a person did before any session names them
    /// (signing in, joining), or that was done to them.
    #[allow(clippy::too_many_arguments)]
    pub fn member_entry(
        &self,
        workspace_id: &str,
        member: &keyward_core::member::Member,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
        action: &str,
        outcome: Outcome,
        changes: Value,
    ) -> Write {
        self.event(Event {
            workspace_id: workspace_id.to_owned(),
            at: self.clock.now(),
            actor: Actor {
                kind: keyward_core::audit::ActorKind::Member,
                id: Some(member.id.clone()),
                name: Some(member.email.clone()),
            },
            action: action.to_owned(),
            target: member_target(&member.id, &member.email),
            ip: ip.map(|ip| ip.to_string()),
            user_agent: user_agent.map(crate::principal::clean_user_agent),
            outcome,
            changes: changes.to_string(),
        })
    }

    pub fn event(&self, event: Event) -> Write {
        debug_assert!(ACTIONS.contains(&event.action.as_str()), "unknown audit action {}", event.action);
        Write::Audit(AuditWrite { event, key: self.key.clone() })
    }

    /// Records an entry on its own (a refused attempt: nothing else to
    /// commit). A failure to record is logged, never the caller's error.
    pub async fn record(&self, write: Write) {
        if let Err(e) = self.work.commit(Change::of(write)).await {
            tracing::warn!(error = %e, "recording an audit entry failed");
        }
    }

    /// The unit of work every service commits through.
    pub fn work(&self) -> &Arc<crate::work::UnitOfWork> {
        &self.work
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Checks a query: 400 naming the parameter for anything unknown.
    pub fn filter(&self, q: AuditQuery) -> Result<AuditFilter, Error> {
        fn known(v: Option<String>, allowed: &[&str], name: &'static str) -> Result<Option<String>, Error> {
            match v {
                Some(v) if !allowed.contains(&v.as_str()) => {
                    Err(Error::invalid(Code::InvalidParameter, format!("{name}: not one of {}", allowed.join(", "))))
                }
                v => Ok(v),
            }
        }
        let outcome = match q.outcome.as_deref() {
            None => None,
            Some(o) => Some(
                Outcome::parse(o)
                    .ok_or_else(|| Error::invalid(Code::InvalidParameter, "outcome: not one of success, failure"))?,
            ),
        };
        let (from, to) = self.window(q.period.as_deref(), q.from, q.to)?;
        let short = |v: Option<String>, name: &'static str| match v {
            Some(v) if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) => Err(Error::invalid(
                Code::InvalidParameter,
                format!("{name}: 1 to 128 characters, no control characters"),
            )),
            v => Ok(v),
        };
        Ok(AuditFilter {
            target_type: known(q.target_type, TARGET_TYPES, "type")?,
            action: known(q.action, ACTIONS, "action")?,
            actor: short(q.actor, "actor")?,
            target: short(q.target, "target")?,
            outcome,
            from,
            to,
        })
    }

    /// `period` (back from now, at most the retention) or `from`/`to`.
    pub fn window(
        &self,
        period: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Window, Error> {
        let days = self.retention.num_days();
        match (period, from, to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err(Error::invalid(Code::InvalidParameter, "period: give either period or from/to, not both"))
            }
            (Some(p), None, None) => {
                let d = parse_period(p).ok_or_else(|| {
                    Error::invalid(Code::InvalidParameter, "period: a number and a unit: m, h, d or w (such as 7d)")
                })?;
                if d > self.retention {
                    return Err(Error::invalid(
                        Code::InvalidParameter,
                        format!("period: longer than the {days} days of history kept"),
                    ));
                }
                Ok((Some(self.clock.now() - d), None))
            }
            (None, Some(f), Some(t)) if f > t => Err(Error::invalid(Code::InvalidParameter, "from: after to")),
            (None, from, to) => Ok((from, to)),
        }
    }

    /// `days` days back, or the whole retention when shorter (a default
    /// `period`).
    pub fn default_period(&self, days: i64) -> String {
        format!("{}d", days.min(self.retention.num_days()).max(1))
    }

    /// Newest first, in pages.
    pub async fn list(
        &self,
        who: &Principal,
        filter: &AuditFilter,
        page: Page,
    ) -> Result<(Vec<Entry>, Option<i64>), Error> {
        who.require(READ)?;
        self.store.list_audit(who.workspace_id(), filter, page).await.map_err(store_error)
    }

    /// The Ed25519 public key checkpoints are signed with.
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// A signed statement of where a workspace's chain stands now.
    pub async fn checkpoint(&self, workspace_id: &str) -> Result<Checkpoint, Error> {
        let (seq, hash) = self
            .store
            .audit_head(workspace_id)
            .await
            .map_err(store_error)?
            .unwrap_or((0, keyward_core::audit::GENESIS));
        Ok(self.signer.sign(workspace_id, seq, &hash, self.clock.now()))
    }

    /// Walks a workspace's chain: the number of entries when whole, else
    /// the first break. With a checkpoint (signed by this server), the
    /// chain must still reach it.
    pub async fn verify(
        &self,
        workspace_id: &str,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Result<i64, Break>, Error> {
        let signed = match checkpoint {
            Some(c) if c.workspace != workspace_id => {
                return Err(Error::invalid(Code::InvalidCheckpoint, "The checkpoint is of another workspace"));
            }
            Some(c) => Some((c.seq, c.verify(&self.public_key())?)),
            None => None,
        };
        // The head as it stands before the walk: entries appended meanwhile
        // are walked too, never mistaken for a cut.
        let head = self.store.audit_head(workspace_id).await.map_err(store_error)?.map_or(0, |(seq, _)| seq);
        let mut check = ChainCheck::new((*self.key).clone());
        let mut at_checkpoint = None;
        // From the very start: a row numbered 0 or below is read (and refused) too.
        let mut after = i64::MIN;
        loop {
            let batch = self.store.audit_chain(workspace_id, after, 1000).await.map_err(store_error)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            for entry in &batch {
                if let Err(b) = check.next(entry) {
                    return Ok(Err(b));
                }
                if signed.is_some_and(|(seq, _)| seq == entry.seq) {
                    at_checkpoint = Some(entry.hash);
                }
            }
        }
        if let Err(b) = check.reaches(head, None, None) {
            return Ok(Err(b));
        }
        if let Some((seq, hash)) = signed
            && let Err(b) = check.reaches(seq, Some(&hash), at_checkpoint.or((seq == 0).then_some(hash)))
        {
            return Ok(Err(b));
        }
        Ok(Ok(check.head().0))
    }

    /// Every workspace with a chain.
    pub async fn workspaces(&self) -> Result<Vec<String>, Error> {
        self.store.audit_workspaces().await.map_err(store_error)
    }
}

/// An audit target naming a key.
pub fn key_target(key: &ApiKey) -> Target {
    Target::new("api_key", key.id.to_string(), Some(&key.name))
}

/// An audit target naming a member.
pub fn member_target(id: &str, email: &str) -> Target {
    Target::new("member", id, Some(email))
}

/// What an audit entry shows of a key (never its secret or hash).
pub fn key_summary(k: &ApiKey) -> Value {
    let strings = |v: &[String]| Value::from(v.to_vec());
    json!({
        "name": k.name,
        "description": k.description,
        "type": k.key_type.as_str(),
        "environment": k.environment.as_str(),
        "state": k.state.as_str(),
        "scopes": k.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "roles": strings(&k.roles),
        "readOnly": k.flags.read_only,
        "administrator": k.flags.administrator,
        "accountAdministrator": k.flags.account_administrator,
        "resources": strings(&k.resources),
        "allowedOrigins": k.allowed_origins.iter().map(|o| o.as_str().to_owned()).collect::<Vec<_>>(),
        "allowedIps": k.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "metadata": k.metadata,
        "expiresAt": k.expires_at.map(|t| t.to_rfc3339()),
        "recoverable": k.recoverable,
        "ratelimits": k.ratelimits.iter().map(|r| json!({"name": r.name, "limit": r.limit, "durationMs": r.duration_ms})).collect::<Vec<_>>(),
        "externalId": k.identity.as_ref().map(|i| i.external_id.clone()),
        "credits": k.credits.map(|c| json!({
            "remaining": c.remaining,
            "refill": c.refill.map(|r| json!({"interval": r.interval.as_str(), "amount": r.amount, "refillDay": r.refill_day})),
        })),
    })
}

/// The fields that differ: `{field: {"from", "to"}}`.
pub fn diff(before: &Value, after: &Value) -> Value {
    let empty = Map::new();
    let (b, a) = (before.as_object().unwrap_or(&empty), after.as_object().unwrap_or(&empty));
    let mut out = Map::new();
    for (field, to) in a {
        let from = b.get(field).unwrap_or(&Value::Null);
        if from != to {
            out.insert(field.clone(), json!({"from": from, "to": to}));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::parse_period;
    use chrono::Duration;

    #[test]
    fn periods_parse_and_anything_else_is_none() {
        assert_eq!(parse_period("7d"), Some(Duration::days(7)));
        assert_eq!(parse_period("24h"), Some(Duration::hours(24)));
        assert_eq!(parse_period("30m"), Some(Duration::minutes(30)));
        assert_eq!(parse_period("2w"), Some(Duration::weeks(2)));
        for bad in ["", "d", "7", "7x", "0d", "-1d", "+1d", "7é", "é", "1.5d", "99999999999d"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }
}
